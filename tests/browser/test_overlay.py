"""/overlay in a real Chromium, against a real gateway on a real Redis.

No stages run: the tests publish avatar.expr, playback.progress, tts.chunk and chat.message
themselves (as avatar, playback, tts and the chat bridge would), so the timeline is known.
The page records each animation frame (window.overlayStats.log: when, the turn's audio
clock, the mouth, the eyes, the caption) and when each event arrived and how many frames
it had drawn by then, so "the next frame" is checked frame by frame, not with wall-clock
thresholds.
"""

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import numpy as np
import pytest
from redis.asyncio import Redis
from rich.console import Console

from benchmarks import overlay_frames
from contracts import AvatarExpr, ChatMessage, PlaybackProgress, TtsChunk
from contracts.topics import AVATAR_EXPR, CHAT_MESSAGE, PLAYBACK_PROGRESS, TTS_CHUNK, Topic
from services.bus import BusSettings, Producer
from tests.browser.conftest import page_errors, screenshot_path
from tests.helpers import read_topic, wait_until
from tests.integration.gateway_fixtures import RunningGateway

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FPS = 30
RATE = 16_000
EDGE_S = 0.05  # frames this close to a change in the track are not judged (one frame late is fine)


# --- the page and the script ------------------------------------------------------------


@dataclass
class Overlay:
    page: "Page"
    errors: list[str]

    async def data(self, name: str) -> str | None:
        value: str | None = await self.page.evaluate(f"document.body.dataset.{name}")
        return value

    async def frames(self) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = await self.page.evaluate("overlayStats.log.slice()")
        return frames

    async def events(self, topic: str, state: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = await self.page.evaluate(
            "([topic, state]) => overlayStats.events.filter("
            "e => e.topic === topic && e.state === state)",
            [topic, state],
        )
        return events

    async def wait_event(self, topic: str, state: str, count: int = 1) -> dict[str, Any]:
        await self.page.wait_for_function(
            "([topic, state, count]) => overlayStats.events.filter("
            "e => e.topic === topic && e.state === state).length >= count",
            arg=[topic, state, count], timeout=10_000,
        )  # fmt: skip
        return (await self.events(topic, state))[count - 1]

    async def wait_frames(self, count: int = 3) -> None:
        """A few more frames drawn (so what came last is on the page)."""
        await self.page.evaluate(
            "(count) => new Promise(done => { let left = count; const tick = () => "
            "(--left <= 0 ? done() : requestAnimationFrame(tick)); requestAnimationFrame(tick); })",
            count,
        )

    def real_errors(self) -> list[str]:
        return [e for e in self.errors if "Failed to load resource" not in e]


@asynccontextmanager
async def overlay(
    browser: "Browser", gateway: RunningGateway, size: tuple[int, int] = (1280, 720),
    ready: bool = True, **options: str,
) -> AsyncIterator[Overlay]:  # fmt: skip
    context = await browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = await context.new_page()
    errors = page_errors(page)
    try:
        await page.goto(f"{gateway.url}/overlay?{urlencode(options)}")
        if ready:
            # Live events follow from when the socket opened: publish only after that.
            await page.wait_for_function("document.body.dataset.link === 'open'", timeout=15_000)
        yield Overlay(page, errors)
    finally:
        await context.close()


@dataclass
class Reply:
    """One turn of a session, published as the stages would publish it."""

    out: Producer
    session: str
    turn: str
    seqs: dict[str, int] = field(default_factory=dict)

    def seq(self, topic: str) -> int:
        self.seqs[topic] = self.seqs.get(topic, -1) + 1
        return self.seqs[topic]

    async def chunk(self, index: int, text: str, seconds: float, final: bool = False,
                    pcm: bytes | None = None, rate: int = RATE) -> None:  # fmt: skip
        await self.out.publish(TtsChunk(
            session_id=self.session, turn_id=self.turn, seq=self.seq("chunk"), index=index,
            final=final, text=text, sample_rate=rate,
            pcm=pcm if pcm is not None else bytes(round(seconds * rate) * 2),
        ))  # fmt: skip

    async def track(self, values: list[float], offset: float = 0.0, expression: str = "neutral",
                    state: str = "speaking") -> None:  # fmt: skip
        await self.out.publish(AvatarExpr(
            session_id=self.session, turn_id=self.turn, seq=self.seq("expr"), fps=FPS,
            mouth_open=values, offset_s=offset, expression=expression, state=state,
        ))  # fmt: skip

    async def progress(self, state: str, played: float, chunk: int = 0,
                       remaining: float | None = None) -> None:  # fmt: skip
        await self.out.publish(PlaybackProgress(
            session_id=self.session, turn_id=self.turn, seq=self.seq("progress"),
            chunk_index=chunk, played_s=played, state=state,
            remaining_s=remaining,
        ))  # fmt: skip


@pytest.fixture(scope="module")
async def out(pages_bus: BusSettings) -> AsyncIterator[Producer]:
    topics: list[Topic[Any]] = [AVATAR_EXPR, PLAYBACK_PROGRESS, TTS_CHUNK, CHAT_MESSAGE]
    async with Producer(pages_bus, "overlay-test", topics) as producer:
        yield producer


def track_value(values: list[float], offset: float, clock: float) -> float | None:
    frame = math.floor((clock - offset) * FPS + 1e-9)
    return values[frame] if 0 <= frame < len(values) else None


def near_change(values: list[float], offset: float, clock: float) -> bool:
    """Within EDGE_S of a frame where the track's value changes (or of its ends)."""
    edges = [offset, offset + len(values) / FPS]
    edges += [offset + k / FPS for k in range(1, len(values)) if values[k] != values[k - 1]]
    return any(abs(clock - edge) < EDGE_S for edge in edges)


def revealed(text: str, fraction: float) -> str:
    """The caption's rule (timeline.mjs): a word shows once the share of the chunk's
    characters before it has played."""
    if fraction <= 0:
        return ""
    words = text.split()
    total = sum(map(len, words)) + len(words) - 1
    shown, at = [], 0
    for word in words:
        if at / total > fraction:
            break
        shown.append(word)
        at += len(word) + 1
    return " ".join(shown)


def next_frame(frames: list[dict[str, Any]], event: dict[str, Any]) -> dict[str, Any]:
    """The first animation frame drawn after the event arrived."""
    return next(f for f in frames if f["n"] == event["frame"] + 1)


def frame_before(frames: list[dict[str, Any]], event: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in frames if f["n"] == event["frame"])


# --- the mouth and the captions -----------------------------------------------------------


async def test_the_mouth_follows_its_track_in_step_with_playback_and_captions_follow_the_words(
    browser: "Browser", pages_gateway: RunningGateway, out: Producer
) -> None:
    first, second = "Hello there, my old friend!", "Good to see you again."
    track0 = [0.0] * 15 + [0.8] * 30 + [0.0] * 15  # 2.0 s: voiced from 0.5 s to 1.5 s
    track1 = [0.5] * 36  # 1.2 s, all voiced
    async with overlay(browser, pages_gateway, session="mouth") as page:
        reply = Reply(out, "mouth", "t-mouth")
        await reply.chunk(0, first, 2.0)
        await reply.chunk(1, second, 1.2, final=True)
        await reply.track(track0, 0.0, "happy")
        await reply.track(track1, 2.0, "happy")
        await reply.track([], 3.2, "happy", state="idle")  # as avatar ends a reply
        await reply.progress("playing", 0.0, 0, remaining=2.0)
        await asyncio.sleep(2.0)
        await reply.progress("playing", 2.0, 1, remaining=1.2)
        await asyncio.sleep(1.3)
        await reply.progress("finished", 3.2, 1)
        finished = await page.wait_event("playback.progress", "finished")
        await page.wait_frames()
        frames = await page.frames()
        starts = await page.events("playback.progress", "playing")

        # The clock: played_s of the latest "playing" plus the time since it came, held
        # at the end of the chunk it announced until the next report.
        for frame in frames:
            if frame["n"] <= starts[0]["frame"] or frame["n"] > finished["frame"]:
                continue
            report, played, length = ((starts[1], 2.0, 1.2) if frame["n"] > starts[1]["frame"]
                                      else (starts[0], 0.0, 2.0))  # fmt: skip
            expected = min(played + (frame["t"] - report["at"]) / 1000, played + length)
            assert frame["clock"] == pytest.approx(expected, abs=2e-3), frame

        judged = 0
        for frame in frames:
            if frame["n"] <= starts[0]["frame"] or frame["n"] > finished["frame"]:
                continue
            clock = frame["clock"]
            if frame["n"] <= starts[1]["frame"]:
                if clock >= 2.0:  # the first chunk is over; the second not yet announced
                    assert frame["mouth"] == 0
                    assert frame["caption"] == first  # no flicker between the sentences
                    continue
                if not near_change(track0, 0.0, clock):
                    assert frame["mouth"] == track_value(track0, 0.0, clock), frame
                    judged += 1
                assert frame["caption"] == revealed(first, clock / 2.0), frame
            else:
                if clock < 3.2 and not near_change(track1, 2.0, clock):
                    assert frame["mouth"] == 0.5, frame
                    judged += 1
                # (The first sentence stays until the second's first word shows.)
                caption = revealed(second, (clock - 2.0) / 1.2) if clock < 3.2 else second
                assert frame["caption"] == (caption or first), frame
        assert judged > 60  # about 3 s of frames at 30 to 60 fps
        # Shut where the track is 0, open where it is voiced, both seen.
        during = [f for f in frames if starts[0]["frame"] < f["n"] <= finished["frame"]]
        assert {f["mouth"] for f in during} >= {0, 0.8, 0.5}

        # Word by word: each caption change adds words to the same chunk's text.
        captions = [f["caption"] for f in frames if f["n"] > starts[0]["frame"]]
        changes = [c for k, c in enumerate(captions) if k == 0 or c != captions[k - 1]]
        first_words = [c for c in changes if c and first.startswith(c)]
        assert first_words == [" ".join(first.split()[:k]) for k in range(1, 6)]
        second_words = [c for c in changes if c and second.startswith(c)]
        assert second_words == [" ".join(second.split()[:k]) for k in range(1, 6)]

        # "finished" shuts the mouth on the next frame; the caption stays a moment, then goes.
        assert next_frame(frames, finished)["mouth"] == 0
        assert await page.data("expression") == "happy"
        await page.page.wait_for_function("document.body.dataset.caption === ''", timeout=6000)
        gone = await page.page.evaluate("performance.now()")
        # CAPTION_LINGER_MS (2.5 s) from the reply's end: the clock reached the end-of-reply
        # idle a moment before "finished" came.
        assert gone - finished["at"] >= 2000
        assert page.real_errors() == []


async def test_pause_flush_and_idle_shut_the_mouth_on_the_very_next_frame(
    browser: "Browser", pages_gateway: RunningGateway, out: Producer
) -> None:
    voiced = [0.9] * (FPS * 4)
    async with overlay(browser, pages_gateway, session="stops") as page:
        reply = Reply(out, "stops", "t-pause")
        await reply.chunk(0, "This sentence is cut off halfway through by somebody.", 4.0)
        await reply.track(voiced)
        await reply.progress("playing", 0.0, remaining=4.0)
        await asyncio.sleep(0.5)
        await reply.progress("paused", 0.5)
        paused = await page.wait_event("playback.progress", "paused")
        await asyncio.sleep(0.3)
        await reply.progress("playing", 0.5, remaining=3.5)
        resumed = await page.wait_event("playback.progress", "playing", 2)
        await asyncio.sleep(0.4)
        await reply.progress("flushed", 0.9)
        flushed = await page.wait_event("playback.progress", "flushed")
        await page.wait_frames()
        frames = await page.frames()
        for event in (paused, flushed):
            assert frame_before(frames, event)["mouth"] == 0.9
            assert next_frame(frames, event)["mouth"] == 0
        # Shut all through the pause, the caption held where it was; open again at once.
        held = [f for f in frames if paused["frame"] < f["n"] <= resumed["frame"]]
        assert held
        assert {f["mouth"] for f in held} == {0}
        assert {f["caption"] for f in held} == {held[0]["caption"]}
        assert {f["clock"] for f in held} == {0.5}
        assert next_frame(frames, resumed)["mouth"] == 0.9
        after = [f for f in frames if f["n"] > flushed["frame"]]
        assert {f["mouth"] for f in after} == {0}

        # An interrupt's idle (offset 0) mid-speech: shut on the next frame, and it stays so
        # although playback has not reported yet.
        reply = Reply(out, "stops", "t-idle")
        await reply.chunk(0, "Another long sentence that will be interrupted.", 4.0)
        await reply.track(voiced)
        await reply.progress("playing", 0.0, remaining=4.0)
        await asyncio.sleep(0.5)
        await reply.track([], 0.0, state="idle")
        idle = await page.wait_event("avatar.expr", "idle")
        await asyncio.sleep(0.3)
        frames = await page.frames()
        assert frame_before(frames, idle)["mouth"] == 0.9
        assert next_frame(frames, idle)["mouth"] == 0
        assert {f["mouth"] for f in frames if f["n"] > idle["frame"]} == {0}
        caption = next_frame(frames, idle)["caption"]
        assert {f["caption"] for f in frames if f["n"] > idle["frame"]} == {caption}

        # The avatar's end-of-reply idle comes as soon as the last chunk is out, with the
        # reply's end as its offset: the mouth keeps moving until the audio gets there.
        reply = Reply(out, "stops", "t-end")
        await reply.chunk(0, "Short one.", 1.0, final=True)
        await reply.track([0.7] * FPS)
        await reply.track([], 1.0, state="idle")
        await reply.progress("playing", 0.0, remaining=1.0)
        await page.wait_event("avatar.expr", "idle", 2)
        start = await page.wait_event("playback.progress", "playing", 4)
        await asyncio.sleep(1.3)
        frames = [f for f in await page.frames() if f["n"] > start["frame"]]
        assert {f["mouth"] for f in frames if 0.05 < f["clock"] < 0.95} == {0.7}
        assert {f["mouth"] for f in frames if f["clock"] >= 1.0} == {0}
        assert max(f["clock"] for f in frames) == pytest.approx(1.0)
        assert page.real_errors() == []


# --- the face -----------------------------------------------------------------------------


FACE_STATE = """() => {
  const head = document.querySelector('[data-part="head"]');
  const brow = document.querySelector('.brow[data-side="left"]');
  const cheek = document.querySelector('.cheek');
  const mouth = document.querySelector('.mouth');
  return {
    expression: document.body.dataset.expression,
    svg: document.getElementById('face').dataset.expression,
    brow: brow.getAttribute('transform'),
    head: getComputedStyle(head).fill,
    cheeks: cheek.getAttribute('opacity'),
    mouth: mouth.getAttribute('d'),
  };
}"""


async def test_expressions_change_the_brows_and_colours_and_unknown_ones_fall_back(
    browser: "Browser", pages_gateway: RunningGateway, out: Producer
) -> None:
    async with overlay(browser, pages_gateway, session="faces") as page:
        reply = Reply(out, "faces", "t-faces")
        await reply.chunk(0, "Let me show you all my faces.", 30.0)
        await reply.progress("playing", 0.0, remaining=30.0)
        seen: dict[str, dict[str, str]] = {}
        for expression in ("happy", "sad", "angry", "surprised", "neutral", "confused", "joy"):
            await reply.track([0.0] * FPS, 0.0, expression)
            await page.page.wait_for_function(
                "(want) => document.body.dataset.expression === want",
                arg={"confused": "neutral", "joy": "happy"}.get(expression, expression),
            )
            await page.page.wait_for_timeout(1000)  # colours ease over 0.25 s, shapes faster
            seen[expression] = await page.page.evaluate(FACE_STATE)
        await reply.progress("flushed", 1.0)
        named = ("happy", "sad", "angry", "surprised", "neutral")
        for aspect in ("brow", "mouth"):
            assert len({seen[e][aspect] for e in named}) == 5, (aspect, seen)
        # Colours: the head is tinted when sad and when angry; the cheeks glow when happy.
        assert seen["sad"]["head"] != seen["neutral"]["head"] != seen["angry"]["head"]
        assert float(seen["happy"]["cheeks"]) > float(seen["neutral"]["cheeks"])
        assert all(seen[e]["svg"] == seen[e]["expression"] for e in seen)
        # A tag the skin does not know is drawn as neutral; one of its aliases as its own.
        assert seen["confused"] == seen["neutral"]
        assert seen["joy"] == seen["happy"]
        assert page.real_errors() == []


async def test_a_blink_closes_the_eyes_briefly(
    browser: "Browser", pages_gateway: RunningGateway, out: Producer
) -> None:
    async with overlay(browser, pages_gateway, session="blinks") as page:
        assert await page.data("eyes") == "open"
        await out.publish(AvatarExpr(session_id="blinks", message_id="blink-test:0", seq=0,
                                     state="blink"))  # fmt: skip
        blink = await page.wait_event("avatar.expr", "blink")
        await page.page.wait_for_timeout(400)
        frames = [f for f in await page.frames() if f["n"] > blink["frame"]]
        closed = [f for f in frames if f["eyes"] == "closed"]
        assert frames[0]["eyes"] == "closed"  # the next frame
        reopened = next(f for f in frames if f["eyes"] == "open")
        assert 100 <= reopened["t"] - blink["at"] <= 250
        assert closed == frames[: len(closed)]  # one blink: closed, then open
        assert await page.data("eyes") == "open"
        eye = await page.page.evaluate(
            "document.querySelector('.eye .open').getAttribute('display')"
        )
        assert eye == "inline"


# --- chat -----------------------------------------------------------------------------------


async def test_chat_lines_show_briefly_as_text_never_as_html(
    browser: "Browser", pages_gateway: RunningGateway, out: Producer
) -> None:
    lines = [
        ("<b>mod</b>", '<img src=x onerror="window.pwned = 1"> hi & <i>bye</i>'),
        ("alice", "first!"),
        ("bob", "what game is this?"),
        ("carol", "hello from Lisbon"),
    ]
    async with overlay(browser, pages_gateway, session="chatty", chat_s="2") as page:
        for seq, (author, text) in enumerate(lines):
            await out.publish(ChatMessage(session_id="chatty", turn_id=f"c{seq}", seq=0,
                                          platform="twitch", author=author, text=text))  # fmt: skip
            if seq == 0:
                await page.page.wait_for_selector("#chat li")
                shown = await page.page.inner_text("#chat li")
                assert shown == f"{author}: {text}"
                assert (
                    await page.page.evaluate(
                        "document.querySelectorAll('#chat img, #chat b, #chat i').length"
                    )
                    == 0
                )
                assert await page.page.evaluate("window.pwned") is None
        await page.page.wait_for_function(
            "document.querySelector('#chat').textContent.includes('Lisbon')"
        )
        shown_lines = await page.page.eval_on_selector_all(
            "#chat li", "items => items.map(i => i.textContent)"
        )
        assert shown_lines == [f"{a}: {t}" for a, t in lines[1:]]  # the latest three
        added = await page.page.evaluate("performance.now()")
        await page.page.wait_for_function("document.querySelectorAll('#chat li').length === 0",
                                          timeout=5_000)  # fmt: skip
        assert await page.page.evaluate("performance.now()") - added >= 1500  # chat_s=2

    async with overlay(browser, pages_gateway, session="quiet", chat="0") as page:
        await out.publish(ChatMessage(session_id="quiet", turn_id="c0", seq=0,
                                      platform="twitch", author="dave", text="hidden"))  # fmt: skip
        await page.wait_event("chat.message", "")
        await page.wait_frames()
        assert await page.page.is_hidden("#chat")
        assert await page.page.evaluate("document.querySelectorAll('#chat li').length") == 0


# --- skins --------------------------------------------------------------------------------


async def test_a_missing_or_broken_skin_is_explained_on_the_page(
    browser: "Browser", pages_gateway: RunningGateway
) -> None:
    async with overlay(browser, pages_gateway, ready=False, skin="nope") as page:
        await page.page.wait_for_function("document.body.dataset.state === 'error'")
        text = await page.page.inner_text("#problem")
        assert 'cannot draw the skin "nope"' in text
        assert "/static/skins/nope.json" in text
        assert "404" in text
        assert "skin=puppet" in text
        assert await page.page.is_visible("#problem")
        assert await page.page.get_attribute("#problem", "role") == "alert"

    async with overlay(browser, pages_gateway, ready=False, skin="../gateway") as page:
        await page.page.wait_for_function("document.body.dataset.state === 'error'")
        assert "a skin name is letters" in await page.page.inner_text("#problem")

    broken = {
        "format": "marionette-skin/1",
        "size": [400, 400],
        "colors": {"skin": "not-a-colour", "ink": "#123"},
        "parts": [{"path": "M 0 0 L 10 10 <script>", "fill": "ink"}],
        "eyes": {"left": [1, 2], "right": [3], "rx": 10, "ry": 10, "iris": {"r": 4, "color": "ink"},
                 "pupil": {"rx": 2, "ry": 2, "color": "ink"}},
        "mouth": {"center": [200, 300], "width": 80, "open": 40, "lip": "ink", "inside": "ink"},
        "expressions": {"neutral": {}, "happy": {"eyes": {"shape": "wink"}}},
    }  # fmt: skip
    context = await browser.new_context(viewport={"width": 800, "height": 450})
    try:
        raw = await context.new_page()
        await raw.route("**/static/skins/broken.json", lambda route: route.fulfill(json=broken))
        await raw.goto(f"{pages_gateway.url}/overlay?skin=broken")
        await raw.wait_for_function("document.body.dataset.state === 'error'")
        problems = await raw.eval_on_selector_all(
            "#problem li", "items => items.map(i => i.textContent)"
        )
        assert any(p.startswith("colors.skin: not a CSS colour") for p in problems), problems
        assert any(p.startswith("parts[0].path") for p in problems), problems
        assert any(p.startswith("eyes.right") for p in problems), problems
        assert any(p.startswith("expressions.happy.eyes.shape") for p in problems), problems
        await raw.screenshot(path=screenshot_path("overlay-broken-skin-800x450.png"))
    finally:
        await context.close()


SCENE = """html { background: radial-gradient(circle at 30% 20%, #3d4a7a, #161a2e 70%); }"""
"""What OBS would put behind the transparent page (for the screenshots only)."""


async def show_mid_speech(page: Overlay, out: Producer, session: str) -> None:
    reply = Reply(out, session, f"t-shot-{session}")
    text = "Hi chat! Welcome back, today we are building a tiny cardboard robot together."
    await out.publish(ChatMessage(session_id=session, turn_id="c1", seq=0, platform="twitch",
                                  author="pixel_fox", text="the robot needs a name!"))  # fmt: skip
    await out.publish(ChatMessage(session_id=session, turn_id="c2", seq=0, platform="twitch",
                                  author="mod_sam", text="<3 welcome back"))  # fmt: skip
    await reply.chunk(0, text, 6.0)
    await reply.track([0.3] * 45 + [0.65] * 135, 0.0, "happy")
    await reply.progress("playing", 0.0, remaining=6.0)
    await page.page.wait_for_function("Number(document.body.dataset.mouth) > 0.6", timeout=10_000)
    await page.page.wait_for_timeout(1300)  # half the sentence captioned


async def test_screenshots_of_each_skin_mid_speech(
    browser: "Browser", pages_gateway: RunningGateway, out: Producer
) -> None:
    shots = [("puppet", (1920, 1080)), ("cat", (1920, 1080)), ("puppet", (640, 360)),
             ("cat", (360, 640))]  # fmt: skip
    for number, (skin, size) in enumerate(shots):
        session = f"shot-{number}"
        async with overlay(browser, pages_gateway, size, session=session, skin=skin) as page:
            # The page itself is transparent, for OBS to lay over the scene.
            assert (
                await page.page.evaluate("getComputedStyle(document.body).backgroundColor")
                == "rgba(0, 0, 0, 0)"
            )
            assert (
                await page.page.evaluate(
                    "getComputedStyle(document.getElementById('stage')).backgroundColor"
                )
                == "rgba(0, 0, 0, 0)"
            )
            await page.page.add_style_tag(content=SCENE)
            await show_mid_speech(page, out, session)
            assert await page.data("expression") == "happy"
            # Everything stays inside the page, at any size.
            for selector in ("#caption", "#chat", "#face"):
                box = await page.page.locator(selector).bounding_box()
                assert box is not None
                assert box["x"] >= 0
                assert box["x"] + box["width"] <= size[0] + 0.5
                assert box["y"] + box["height"] <= size[1] + 0.5
            path = screenshot_path(f"overlay-{skin}-{size[0]}x{size[1]}.png")
            await page.page.screenshot(path=path)
            print(f"screenshot: {path}")
            assert page.real_errors() == []


# --- audio=1 ------------------------------------------------------------------------------


def tone(seconds: float, rate: int) -> bytes:
    """A vowel-like tone with syllable-shaped loudness, as s16le."""
    t = np.arange(round(seconds * rate)) / rate
    voice = np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 440 * t)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t - np.pi / 2)
    return (voice * envelope * 0.3 * 32767).astype("<i2").tobytes()


async def test_audio_1_plays_the_reply_in_the_page_and_the_gateway_reports_playback(
    browser: "Browser", pages_gateway: RunningGateway, out: Producer, pages_bus: BusSettings
) -> None:
    session = "speaker"
    async with overlay(browser, pages_gateway, session=session, audio="1") as page:
        await page.page.wait_for_function(
            "document.body.dataset.speaker === 'ready'", timeout=10_000
        )
        reply = Reply(out, session, "t-audio")
        await reply.track([0.0] * 6 + [0.7] * 30 + [0.0] * 9, 0.0, "happy")
        await reply.chunk(0, "Can you hear me now?", 1.5, final=True, pcm=tone(1.5, 22_050),
                          rate=22_050)  # fmt: skip
        client = Redis.from_url(pages_bus.redis_url or "")
        try:

            async def reported() -> list[str]:
                found = await read_topic(client, PLAYBACK_PROGRESS, pages_bus.partitions)
                return [m.state for m in found
                        if isinstance(m, PlaybackProgress) and m.session_id == session]  # fmt: skip

            async def finished() -> bool:
                return "finished" in await reported()

            await wait_until(
                finished, timeout_s=15, what="the gateway to report the page's playback"
            )
            assert await reported() == ["playing", "finished"]
        finally:
            await client.aclose()
        await page.page.wait_for_timeout(300)
        frames = await page.frames()
        speaker = await page.page.evaluate("overlayStats.speaker")
        assert speaker["blocks"] == 75  # 1.5 s in 20 ms blocks (routes/audio.py)
        moving = [f for f in frames if f["mouth"] > 0]
        assert moving, "the mouth never moved"
        assert {f["mouth"] for f in moving} == {0.7}
        # The page's own clock: where the audio it plays is, so voiced frames sit in the
        # voiced part of the track.
        assert all(0.2 - EDGE_S <= f["clock"] <= 1.2 + EDGE_S for f in moving)
        assert max(f["clock"] for f in frames if f["clock"] is not None) > 1.0
        assert page.real_errors() == []


# --- the benchmark, tiny ------------------------------------------------------------------


async def test_the_frame_benchmark_runs(
    browser: "Browser", pages_gateway: RunningGateway, pages_bus: BusSettings
) -> None:
    results = await overlay_frames.measure(browser, pages_gateway.url, pages_bus, 2.0, (640, 360))
    figures = overlay_frames.summary(results)
    assert list(figures) == ["empty loop", "drawing off", "overlay"]
    assert all(f["frames"] > 10 for f in figures.values())
    assert figures["overlay"]["lag_p95"] is not None
    overlay_frames.render(results, (640, 360), Console(width=140))
