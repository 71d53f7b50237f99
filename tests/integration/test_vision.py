"""Vision on a real Redis: the camera stage looking at picture files (and at a video file
through the camera's own code path), and the gateway's POST /api/vision with every way a
picture is refused. The photos are scikit-image's (tests/vision_photos.py)."""

import shutil
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from redis.asyncio import Redis

from contracts.topics import VISION_OBSERVATION
from contracts.vision import VisionObservation
from services.bus import BusSettings, StageRuntime
from services.errors import StageStartError
from services.settings import load_settings
from services.vision.detector import Detector
from services.vision.images import MAX_IMAGE_BYTES
from services.vision.settings import VisionSettings
from services.vision.sources import CameraError, CameraSource
from services.vision.stage import CameraStage
from tests.helpers import read_topic, wait_until
from tests.integration.gateway_fixtures import (
    OPERATOR_KEY,
    READ_KEY,
    RunningGateway,
    running_gateway,
)
from tests.vision_photos import encoded, photo, photo_path, png_header_only

pytestmark = pytest.mark.timeout(60)


async def observations(client: Redis, bus: BusSettings) -> list[VisionObservation]:
    found = await read_topic(client, VISION_OBSERVATION, bus.partitions)
    return [m for m in found if isinstance(m, VisionObservation)]


@pytest.fixture
def slideshow(tmp_path: Path) -> Path:
    """Four pictures looked at in turn: the astronaut twice, then the cat twice."""
    for name, source in (("1.png", "astronaut.png"), ("2.png", "astronaut.png"),
                         ("3.png", "chelsea.png"), ("4.png", "chelsea.png")):  # fmt: skip
        shutil.copy(photo_path(source), tmp_path / name)
    return tmp_path


def vision_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(f"MARIONETTE_VISION_{name.upper()}", value)


# --- the camera stage -------------------------------------------------------------------------


async def test_the_camera_stage_publishes_once_per_change(
    slideshow: Path, bus_settings: BusSettings, redis_client: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # A long interval: the stage's own loop looks once, and the test drives the rest.
    vision_env(monkeypatch, source="file", path=str(slideshow), interval_s="3600",
               republish_s="0", session_id="stream-1")  # fmt: skip
    async with StageRuntime(CameraStage, bus_settings) as runtime:
        stage = runtime.stage

        async def looked() -> bool:
            return stage.looks == 1

        await wait_until(looked, what="the first look")
        published = [await stage.look_once() for _ in range(4)]  # 2.png, 3, 4, then 1.png
        seen = await observations(redis_client, bus_settings)
    assert published == [False, True, False, True]
    assert [o.seq for o in seen] == [0, 1, 2]
    assert [o.message_id for o in seen] == [f"{stage.origin}:{n}" for n in range(3)]
    assert {(o.session_id, o.turn_id, o.source) for o in seen} == {("stream-1", None, "file")}
    assert [[(s.label, s.count) for s in o.objects] for o in seen] == [
        [("face", 1)], [("cat", 1)], [("face", 1)],
    ]  # fmt: skip
    assert seen[0].description.startswith("I see a face;")
    assert seen[1].description.startswith("I see a cat;")
    assert (seen[1].width, seen[1].height) == (451, 300)
    assert stage.status()["published"] == 3
    assert stage.status()["looks"] == 5


async def test_an_unchanged_view_is_published_again_after_republish_s(
    bus_settings: BusSettings, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    vision_env(monkeypatch, source="file", path=str(photo_path("astronaut.png")),
               interval_s="0.1", republish_s="0.5")  # fmt: skip
    async with StageRuntime(CameraStage, bus_settings) as runtime:

        async def looked_often() -> bool:
            return runtime.stage.looks >= 12  # about 1.2 s of looks

        await wait_until(looked_often, what="a dozen looks")
        seen = await observations(redis_client, bus_settings)
        looks = runtime.stage.looks
    # Every look is the same picture: published at the start, then again once 0.5 s passed.
    assert 2 <= len(seen) < looks
    gaps = [(b.created_at - a.created_at).total_seconds() for a, b in pairwise(seen)]
    assert min(gaps) >= 0.45
    assert len({o.description for o in seen}) == 1
    assert {o.session_id for o in seen} == {"local"}


async def test_the_camera_code_path_reads_frames_and_reports_a_camera_that_stops(
    tmp_path: Path, bus_settings: BusSettings, redis_client: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # VideoCapture opens a video file as it opens a camera: ten frames of the astronaut.
    video = tmp_path / "webcam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10, (512, 512))
    for _ in range(10):
        writer.write(photo("astronaut.png"))
    writer.release()
    vision_env(monkeypatch, interval_s="3600")

    async def build(bus: Any) -> CameraStage:
        settings = load_settings(VisionSettings)
        return CameraStage(settings, CameraSource(str(video)), Detector(threads=1), bus)

    async with StageRuntime(CameraStage, bus_settings, build=build) as runtime:
        stage = runtime.stage

        async def looked() -> bool:
            return stage.looks == 1

        await wait_until(looked, what="the first look")
        assert await stage.look_once() is False  # frames 6-10: the same astronaut
        assert await stage.look_once() is False  # the video is over: the camera "stopped"
        assert "gave no picture" in str(stage.status()["problem"])
        seen = await observations(redis_client, bus_settings)
    assert [(o.source, o.objects[0].label) for o in seen] == [("camera", "face")]


async def test_a_missing_camera_or_picture_stops_the_start_naming_the_setting(
    tmp_path: Path, bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def start() -> StageStartError:
        with pytest.raises(CameraError) as refused:
            async with StageRuntime(CameraStage, bus_settings):
                pass
        assert isinstance(refused.value, StageStartError)  # the CLI exits with code 2
        return refused.value

    vision_env(monkeypatch, source="camera", device="7")  # no camera here, let alone eight
    no_camera = str(await start())
    assert "no camera at MARIONETTE_VISION_DEVICE=7" in no_camera
    assert "MARIONETTE_VISION_SOURCE=file" in no_camera
    vision_env(monkeypatch, source="file", path=str(tmp_path / "nowhere.png"))
    assert "nowhere.png is neither a picture nor a folder" in str(await start())
    vision_env(monkeypatch, path=str(tmp_path))
    assert "holds no .jpg/.jpeg/.png/.webp pictures" in str(await start())


# --- POST /api/vision -------------------------------------------------------------------------


def astronaut_jpeg() -> bytes:
    return encoded(photo("astronaut.png"), ".jpg", cv2.IMWRITE_JPEG_QUALITY, 80)


async def test_a_picture_sent_to_the_gateway_is_looked_at_and_published(
    gateway: RunningGateway, redis_client: Redis, bus_settings: BusSettings
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
        face = await http.post("/api/vision", content=astronaut_jpeg(),
                               headers={"Content-Type": "image/jpeg"})  # fmt: skip
        cat = await http.post(
            "/api/vision?session=s9",
            content=encoded(photo("chelsea.png"), ".webp", cv2.IMWRITE_WEBP_QUALITY, 80),
            headers={"Content-Type": "image/webp"},
        )
    assert face.status_code == 200, face.text
    answer = face.json()
    assert answer["topic"] == "vision.observation"
    assert answer["entry_id"]
    assert answer["message"]["source"] == "panel"
    assert answer["message"]["session_id"] == "local"
    assert answer["message"]["objects"][0]["label"] == "face"
    assert answer["message"]["description"].startswith("I see a face;")
    assert answer["look_ms"] > 0
    assert cat.status_code == 200, cat.text
    assert cat.json()["message"]["description"].startswith("I see a cat;")
    seen = await observations(redis_client, bus_settings)
    assert sorted((o.session_id, o.message_id) for o in seen) == sorted(
        [("local", answer["message"]["message_id"]), ("s9", cat.json()["message"]["message_id"])]
    )


async def test_pictures_the_gateway_refuses_and_why(
    gateway: RunningGateway, redis_client: Redis, bus_settings: BusSettings
) -> None:
    async def send(body: bytes, kind: str | None = "image/png") -> httpx.Response:
        headers = {"Content-Type": kind} if kind else {}
        async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
            return await http.post("/api/vision", content=body, headers=headers)

    refused = {
        "text": await send(b"hello", "text/plain"),
        "no type": await send(astronaut_jpeg(), None),
        "not an image": await send(b"\x00" * 100, "image/png"),
        "damaged": await send(astronaut_jpeg()[:3000], "image/jpeg"),
        "empty": await send(b""),
        "20 MP": await send(png_header_only(5000, 4000)),
        "over the route's limit": await send(np.zeros(9 * 1024 * 1024, np.uint8).tobytes()),
    }
    status = {what: r.status_code for what, r in refused.items()}
    assert status == {"text": 415, "no type": 415, "not an image": 422, "damaged": 422,
                      "empty": 422, "20 MP": 413, "over the route's limit": 413}  # fmt: skip
    error = {what: r.json()["error"] for what, r in refused.items()}
    assert "image/jpeg, image/png, image/webp" in error["text"]
    assert refused["text"].json()["fields"][0]["field"] == "header.content-type"
    assert "not a JPEG, PNG or WebP image" in error["not an image"]
    assert "cannot be decoded" in error["damaged"]
    assert "16 megapixels" in error["20 MP"]
    # The route takes pictures up to 8 MB, over the gateway's 64 KB for other requests.
    assert f"over {8 * 1024 * 1024} bytes" in error["over the route's limit"]
    assert await observations(redis_client, bus_settings) == []


async def test_a_picture_over_8_mb_is_refused_naming_the_limit(
    bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"MARIONETTE_GATEWAY_MAX_BODY_BYTES": str(16 * 1024 * 1024)}
    async with (
        running_gateway(bus_settings, monkeypatch, env) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=20) as http,
    ):
        big = await http.post(
            "/api/vision", content=png_header_only(100, 100) + bytes(MAX_IMAGE_BYTES),
            headers={"Content-Type": "image/png"},
        )  # fmt: skip
    assert big.status_code == 413
    assert "over the limit of 8 MB" in big.json()["error"]


@pytest.fixture
async def keyed_gateway(
    bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningGateway]:
    env = {"MARIONETTE_GATEWAY_OPERATOR_KEY": OPERATOR_KEY,
           "MARIONETTE_GATEWAY_READ_KEY": READ_KEY}  # fmt: skip
    async with running_gateway(bus_settings, monkeypatch, env) as running:
        yield running


async def test_showing_a_picture_needs_the_operator_key(keyed_gateway: RunningGateway) -> None:
    async def send(key: str | None) -> int:
        headers = {"Content-Type": "image/jpeg"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        async with httpx.AsyncClient(base_url=keyed_gateway.url, timeout=20) as http:
            answer = await http.post("/api/vision", content=astronaut_jpeg(), headers=headers)
        return answer.status_code

    assert [await send(None), await send(READ_KEY), await send(OPERATOR_KEY)] == [401, 403, 200]
