"""The detector on real photos (scikit-image's bundled ones, tests/vision_photos.py) and on
synthetic pictures for what it must not see; the limits on what it will decode."""

from dataclasses import replace

import cv2
import numpy as np
import pytest

from contracts.vision import VisionObservation
from services.vision.detector import CASCADES, Box, Detector, count_phrase, describe
from services.vision.images import (
    MAX_IMAGE_BYTES,
    ImageError,
    ImageTooLarge,
    decode,
    from_array,
    read_header,
)
from services.vision.scene import scene_facts
from tests.vision_photos import encoded, photo, photo_bytes, png_header_only

ASTRONAUT_FACE = Box("face", 177, 65, 97, 97, 0, 0)  # measured by hand on astronaut.png


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(threads=1)


def centre_inside(box: Box, x0: float, y0: float, x1: float, y1: float) -> bool:
    cx, cy = box.x + box.width / 2, box.y + box.height / 2
    return x0 <= cx <= x1 and y0 <= cy <= y1


def test_the_astronaut_is_one_face_where_her_face_is(detector: Detector) -> None:
    sighting = detector.look(photo_bytes("astronaut.png"))
    assert sighting.counts == {"face": 1}
    (face,) = sighting.boxes
    assert face.overlap(ASTRONAUT_FACE) > 0.7
    assert 0.8 < face.width / ASTRONAUT_FACE.width < 1.25
    assert sighting.description.startswith("I see a face; the picture is bright")
    assert (sighting.width, sighting.height) == (512, 512)
    assert sighting.objects[0].label == "face"
    assert sighting.objects[0].count == 1
    assert 0.5 < sighting.objects[0].confidence <= 1


def test_two_astronauts_side_by_side_are_two_faces(detector: Detector) -> None:
    pair = np.hstack([photo("astronaut.png"), photo("astronaut.png")])
    sighting = detector.look(pair)
    assert sighting.counts == {"face": 2}
    assert sighting.description.startswith("I see two faces;")
    left, right = sorted(sighting.boxes, key=lambda b: b.x)
    assert left.overlap(ASTRONAUT_FACE) > 0.7
    shifted = Box("face", ASTRONAUT_FACE.x + 512, ASTRONAUT_FACE.y, 97, 97, 0, 0)
    assert right.overlap(shifted) > 0.7


def test_a_face_that_fills_the_frame_is_found_by_the_close_up_pass(detector: Detector) -> None:
    # Her face cut by the frame on every side, at 340x360: someone leaning into a webcam.
    close_up = cv2.resize(photo("astronaut.png")[70:160, 185:270], None, fx=4, fy=4)
    sighting = detector.look(close_up)
    assert sighting.counts == {"face": 1}
    assert centre_inside(sighting.boxes[0], 120, 130, 220, 230)
    assert sighting.boxes[0].width > 300
    wide_only = tuple(replace(c, close_neighbours=10**6) for c in CASCADES)
    assert Detector(wide_only, threads=1).look(close_up).counts == {}


def test_the_cat_close_up_is_a_cat_and_no_person(detector: Detector) -> None:
    sighting = detector.look(photo_bytes("chelsea.png"))
    assert sighting.counts == {"cat": 1}
    (cat,) = sighting.boxes
    # Her face spans most of the picture, between the eyes at about (170, 115) and (320, 135).
    assert centre_inside(cat, 180, 100, 300, 200)
    assert cat.width > 250
    assert sighting.description.startswith("I see a cat; the picture is bright, mostly brown")
    # Her ears are cut off: only the close-up pass, with its border, finds her.
    wide_only = tuple(replace(c, close_neighbours=10**6) for c in CASCADES)
    assert Detector(wide_only, threads=1).look(photo_bytes("chelsea.png")).counts == {}


@pytest.mark.parametrize("photo_name", ["astronaut.png", "chelsea.png"])
def test_what_is_found_survives_lossy_copies(detector: Detector, photo_name: str) -> None:
    """The close-up pass is the fragile one: a cat found in the PNG must be found in the
    JPEG the panel sends, a WebP, a larger, smaller, mirrored or darker copy."""
    original = photo(photo_name)
    expected = detector.look(photo_bytes(photo_name)).counts
    copies: dict[str, bytes | np.ndarray] = {
        "jpeg 60": encoded(original, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 60),
        "webp 80": encoded(original, ".webp", cv2.IMWRITE_WEBP_QUALITY, 80),
        "x1.4": cv2.resize(original, None, fx=1.42, fy=1.42),
        "x0.7": cv2.resize(original, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA),
        "mirrored": cv2.flip(original, 1),
        "darker": cv2.convertScaleAbs(original, alpha=0.6),
    }
    assert expected in ({"face": 1}, {"cat": 1})
    assert {name: detector.look(copy).counts for name, copy in copies.items()} == dict.fromkeys(
        copies, expected
    )


def test_a_photo_without_faces_and_synthetic_pictures_show_nothing(detector: Detector) -> None:
    gradient = np.tile(np.linspace(0, 255, 640, dtype=np.uint8), (480, 1))
    noise = np.random.default_rng(7).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for picture in (photo_bytes("coffee.png"), np.zeros((480, 640, 3), np.uint8), gradient,
                    noise):  # fmt: skip
        sighting = detector.look(picture)
        assert sighting.objects == []
        assert sighting.description.startswith("I don't see anyone; the picture is ")


def test_brightness_and_colours_in_plain_words() -> None:
    black = np.zeros((120, 160, 3), np.uint8)
    assert scene_facts(black).phrase() == "dark, mostly black"
    dim_grey = np.full((120, 160, 3), 90, np.uint8)
    assert scene_facts(dim_grey).phrase() == "dim, mostly grey"
    sky = np.zeros((120, 160, 3), np.uint8)
    sky[:70] = (230, 120, 40)  # BGR: a strong blue over ...
    sky[70:] = (250, 250, 250)  # ... white
    facts = scene_facts(sky)
    assert facts.brightness == "bright"
    assert facts.colours == ("blue", "white")
    red_yellow_green = np.zeros((90, 90, 3), np.uint8)
    red_yellow_green[:30], red_yellow_green[30:60], red_yellow_green[60:] = (
        (0, 0, 220), (0, 230, 230), (0, 200, 0),
    )  # fmt: skip
    # Three equal thirds: all over the 20% share, the two largest are named.
    assert len(scene_facts(red_yellow_green).colours) == 2
    assert set(scene_facts(red_yellow_green).colours) <= {"red", "yellow", "green"}


def test_the_description_counts_in_words() -> None:
    facts = scene_facts(np.full((10, 10, 3), 250, np.uint8))
    assert describe({"face": 2, "cat": 1}, facts) == (
        "I see two faces and a cat; the picture is bright, mostly white."
    )
    assert describe({}, facts) == "I don't see anyone; the picture is bright, mostly white."
    assert count_phrase("face", 12) == "12 faces"
    assert count_phrase("cat", 3) == "three cats"


def test_jpeg_and_webp_are_read_and_a_large_picture_is_looked_at_small(detector: Detector) -> None:
    astronaut = photo("astronaut.png")
    for data in (encoded(astronaut, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90),
                 encoded(astronaut, ".webp", cv2.IMWRITE_WEBP_QUALITY, 90),
                 encoded(astronaut, ".webp", cv2.IMWRITE_WEBP_QUALITY, 101)):  # fmt: skip
        header = read_header(data)
        assert (header.width, header.height) == (512, 512)
        assert detector.look(data).counts == {"face": 1}
    # A 1920x1080 picture with the astronaut at 2x: found, in the original's pixels.
    canvas = np.full((1080, 1920, 3), 60, np.uint8)
    canvas[28:1052, 400:1424] = cv2.resize(astronaut, (1024, 1024))
    data = encoded(canvas, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)
    pixels, width, height = decode(data)
    assert (width, height) == (1920, 1080)
    assert pixels.shape == (360, 640, 3)  # looked at no larger than WORKING_SIDE
    sighting = detector.look(data)
    assert (sighting.width, sighting.height) == (1920, 1080)
    assert sighting.counts == {"face": 1}
    doubled = Box("face", 400 + 2 * 177, 28 + 2 * 65, 194, 194, 0, 0)
    assert sighting.boxes[0].overlap(doubled) > 0.7


def test_arrays_of_grey_and_bgra_are_taken() -> None:
    grey = cv2.cvtColor(photo("astronaut.png"), cv2.COLOR_BGR2GRAY)
    assert from_array(grey)[0].shape == (512, 512, 3)
    bgra = cv2.cvtColor(photo("astronaut.png"), cv2.COLOR_BGR2BGRA)
    assert from_array(bgra)[0].shape == (512, 512, 3)
    with pytest.raises(ImageError, match="uint8"):
        from_array(np.zeros((10, 10), np.float32))


def test_non_pictures_and_damaged_files_are_refused(detector: Detector) -> None:
    with pytest.raises(ImageError, match="not a JPEG, PNG or WebP image"):
        detector.look(b"GIF89a this is not a picture we read")
    with pytest.raises(ImageError, match="not a JPEG, PNG or WebP image"):
        detector.look(b"")
    cut = photo_bytes("astronaut.png")[:2000]
    with pytest.raises(ImageError, match="cannot be decoded"):
        detector.look(cut)
    with pytest.raises(ImageError, match="cannot be decoded"):
        detector.look(png_header_only(640, 480))


def test_oversized_pictures_are_refused_naming_the_limit(detector: Detector) -> None:
    # 5000x4000 = 20 MP, declared in 33 bytes: refused from the header, before any decoding.
    with pytest.raises(ImageTooLarge, match="5000x4000 is over the limit of 16 megapixels"):
        detector.look(png_header_only(5000, 4000))
    with pytest.raises(ImageTooLarge, match="over the limit of 16384 pixels"):
        detector.look(png_header_only(20_000, 100))
    with pytest.raises(ImageTooLarge, match="over the limit of 8 MB"):
        detector.look(png_header_only(100, 100) + bytes(MAX_IMAGE_BYTES))
    with pytest.raises(ImageTooLarge, match="16 megapixels"):
        from_array(np.zeros((4000, 4001), np.uint8))


def test_a_sighting_becomes_an_observation(detector: Detector) -> None:
    sighting = detector.look(photo_bytes("astronaut.png"))
    observation = sighting.observation(session_id="local", origin="v17", seq=3, source="file")
    assert isinstance(observation, VisionObservation)
    assert observation.message_id == "v17:3"
    assert observation.turn_id is None
    assert observation.objects == sighting.objects
    assert observation.detector.startswith("opencv-haar 4.")
    assert sighting.same_as(detector.look(photo_bytes("astronaut.png")))
    assert not sighting.same_as(detector.look(photo_bytes("chelsea.png")))
