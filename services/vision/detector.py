"""What is in a picture, in labels and one plain sentence: OpenCV's Haar cascades for faces
and cats' faces, and the picture's brightness and main colours.

    sighting = Detector().look(jpeg_bytes)   # or a BGR array from a camera
    sighting.description  # "I see a face; the picture is bright, mostly white and grey."

The cascades ship inside opencv-python-headless 4.x (`cv2.data.haarcascades`; OpenCV 5
dropped them). Each runs twice:

- a wide pass over the picture at WIDE_SIDE pixels, for things at least MIN_OBJECT_SHARE of
  its shorter side: a face across the room, two people on a sofa;
- a close-up pass over a thumbnail with a border of repeated edge pixels, for a face that
  fills the frame (someone leaning into a webcam, a cat sniffing it): a cascade's window
  must fit inside the picture, so a face cut by the frame's edges is otherwise missed.

A look costs about 65 ms of one core at 640x480 and 48 ms at 1920x1080 (the wide pass
sees that one smaller), on the project's 2-core machine; a second thread takes up to a third
off when the other core is free.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from cv2.data import haarcascades

from contracts.vision import SeenObject, VisionObservation
from services.vision.images import decode, from_array, shrink
from services.vision.scene import SceneFacts, scene_facts

WIDE_SIDE = 320
"""The wide pass's picture size (longer side). Smaller is faster; a face then needs
MIN_OBJECT_SHARE of the shorter side to be found (24 px of a 320x240 picture)."""
MIN_OBJECT_SHARE = 0.1
WIDE_SCALE_STEP = 1.15
CLOSE_SIDE = 80
CLOSE_BORDER = 0.25
"""The close-up pass's border, as a share of the thumbnail's shorter side."""
CLOSE_MIN_SHARE = 0.5
CLOSE_SCALE_STEP = 1.05
SAME_THING_OVERLAP = 0.5
"""Two boxes of one label that share this much of the smaller one are one thing."""


@dataclass(frozen=True)
class Cascade:
    label: str
    file: str
    wide_neighbours: int
    """Overlapping hits needed to believe one: fewer finds more, and more things that aren't."""
    close_neighbours: int
    """The same in the close-up pass, whose fine scale steps give more hits per thing. On the
    test photos (and their JPEG, WebP, scaled, mirrored, darkened copies) a person's face
    close up gets 48-56, a cat's face as a cat's 7-11, a cat's face taken for a person's
    at most 3."""
    wide_step: float = WIDE_SCALE_STEP
    """How much larger each size tried in the wide pass is: larger steps cost less and may
    step over a thing's size."""


CASCADES = (
    Cascade("face", "haarcascade_frontalface_alt2.xml", wide_neighbours=4, close_neighbours=20),
    # Coarser steps for cats: the cat cascade is the slower one, and a cat is the lesser news.
    Cascade("cat", "haarcascade_frontalcatface_extended.xml", wide_neighbours=4,
            close_neighbours=4, wide_step=1.2),
)  # fmt: skip


@dataclass(frozen=True)
class Box:
    """One thing found, in the original picture's pixels."""

    label: str
    x: int
    y: int
    width: int
    height: int
    neighbours: int
    confidence: float

    def overlap(self, other: "Box") -> float:
        """The share of the smaller box that the two have in common."""
        across = min(self.x + self.width, other.x + other.width) - max(self.x, other.x)
        down = min(self.y + self.height, other.y + other.height) - max(self.y, other.y)
        if across <= 0 or down <= 0:
            return 0.0
        smaller = min(self.width * self.height, other.width * other.height)
        return across * down / smaller


@dataclass(frozen=True)
class Sighting:
    """One look at one picture."""

    objects: list[SeenObject]
    description: str
    width: int
    height: int
    detector: str
    scene: SceneFacts
    boxes: tuple[Box, ...] = ()
    elapsed_ms: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    def same_as(self, other: "Sighting | None") -> bool:
        """Nothing a listener would notice changed: the same things, the same sentence."""
        return other is not None and (self.counts, self.description) == (
            other.counts,
            other.description,
        )

    def observation(
        self, *, session_id: str, origin: str, seq: int, source: str
    ) -> VisionObservation:
        return VisionObservation(
            session_id=session_id, message_id=f"{origin}:{seq}", seq=seq, source=source,
            description=self.description, objects=self.objects, width=self.width,
            height=self.height, detector=self.detector,
        )  # fmt: skip


class Detector:
    """Loads the cascades once; `look` is then safe to call from one thread at a time."""

    def __init__(self, cascades: tuple[Cascade, ...] = CASCADES, threads: int | None = 2) -> None:
        if threads is not None:
            # Process-wide: OpenCV would otherwise start a worker per core for every look.
            cv2.setNumThreads(threads)
        self.cascades = cascades
        self._classifiers = {c.label: _load(c.file) for c in cascades}
        names = ", ".join(Path(c.file).stem.removeprefix("haarcascade_") for c in cascades)
        self.name = f"opencv-haar {cv2.__version__} ({names})"

    def look(self, image: bytes | np.ndarray) -> Sighting:
        """What is in a JPEG/PNG/WebP file's bytes or a BGR array. ImageError (a ValueError)
        for something that is not a picture, or one over the limits."""
        started = time.perf_counter()
        if isinstance(image, bytes | bytearray | memoryview):
            pixels, width, height = decode(bytes(image))
        else:
            pixels, width, height = from_array(image)
        boxes = self.find(pixels, width / pixels.shape[1])
        scene = scene_facts(pixels)
        counts = {c.label: sum(b.label == c.label for b in boxes) for c in self.cascades}
        counts = {label: n for label, n in counts.items() if n}
        objects = [
            SeenObject(label=label, count=n, confidence=round(
                sum(b.confidence for b in boxes if b.label == label) / n, 2))
            for label, n in counts.items()
        ]  # fmt: skip
        return Sighting(
            objects=objects, description=describe(counts, scene), width=width, height=height,
            detector=self.name, scene=scene, boxes=tuple(boxes),
            elapsed_ms=(time.perf_counter() - started) * 1000, counts=counts,
        )  # fmt: skip

    def find(self, pixels: np.ndarray, to_original: float) -> list[Box]:
        """Every cascade's finds in a BGR picture; `to_original` scales its pixels back."""
        grey = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
        wide = shrink(grey, WIDE_SIDE)
        wide_scale = to_original * grey.shape[1] / wide.shape[1]
        close = shrink(grey, CLOSE_SIDE)
        close_scale = to_original * grey.shape[1] / close.shape[1]
        border = round(CLOSE_BORDER * min(close.shape))
        framed = cv2.copyMakeBorder(close, border, border, border, border, cv2.BORDER_REPLICATE)
        found: list[Box] = []
        for cascade in self.cascades:
            classifier = self._classifiers[cascade.label]
            smallest = max(20, round(MIN_OBJECT_SHARE * min(wide.shape)))
            needed = cascade.wide_neighbours
            hits = _detect(classifier, wide, cascade.wide_step, needed, smallest)
            boxes = [_box(cascade.label, hit, needed, wide_scale, 0) for hit in hits]
            smallest = round(CLOSE_MIN_SHARE * min(close.shape))
            needed = cascade.close_neighbours
            hits = _detect(classifier, framed, CLOSE_SCALE_STEP, needed, smallest)
            boxes += [_box(cascade.label, hit, needed, close_scale, border) for hit in hits]
            found += _merge(boxes)
        return found


def _load(file: str) -> cv2.CascadeClassifier:
    path = Path(haarcascades) / file
    classifier = cv2.CascadeClassifier(str(path))
    if classifier.empty():
        raise RuntimeError(
            f"OpenCV's {file} is missing from {path.parent}: install opencv-python-headless "
            "4.x (5.0 no longer ships the Haar cascades)"
        )
    return classifier


def _detect(
    classifier: cv2.CascadeClassifier, grey: np.ndarray, step: float, neighbours: int,
    smallest: int,
) -> list[tuple[int, int, int, int, int]]:  # fmt: skip
    if min(grey.shape) < smallest:
        return []
    rects, hits = classifier.detectMultiScale2(
        grey, scaleFactor=step, minNeighbors=neighbours, minSize=(smallest, smallest)
    )
    return [
        (int(x), int(y), int(w), int(h), int(n))
        for (x, y, w, h), n in zip(rects, hits, strict=True)
    ]


def _box(
    label: str, hit: tuple[int, int, int, int, int], needed: int, scale: float, border: int
) -> Box:
    x, y, width, height, neighbours = hit
    # A rough certainty from how many overlapping windows agreed, against the least believed
    # (which scores 1/3).
    confidence = round(neighbours / (neighbours + 2 * needed), 2)
    return Box(
        label, round((x - border) * scale), round((y - border) * scale),
        round(width * scale), round(height * scale), neighbours, confidence,
    )  # fmt: skip


def _merge(boxes: list[Box]) -> list[Box]:
    """One box per thing: the best believed of those that overlap."""
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: b.confidence, reverse=True):
        if all(box.overlap(k) < SAME_THING_OVERLAP for k in kept):
            kept.append(box)
    return kept


_NUMBERS = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_NOUNS = {"face": ("face", "faces"), "cat": ("cat", "cats")}


def count_phrase(label: str, count: int) -> str:
    """'a face', 'two cats', '12 faces'."""
    singular, plural = _NOUNS.get(label, (label, label + "s"))
    number = _NUMBERS[count] if count < len(_NUMBERS) else str(count)
    return f"{number} {singular if count == 1 else plural}"


def describe(counts: dict[str, int], scene: SceneFacts) -> str:
    """One sentence the character can say: 'I see two faces and a cat; the picture is
    bright, mostly blue and white.'"""
    things = [count_phrase(label, n) for label, n in counts.items() if n]
    if not things:
        seen = "I don't see anyone"
    elif len(things) == 1:
        seen = f"I see {things[0]}"
    else:
        seen = f"I see {', '.join(things[:-1])} and {things[-1]}"
    return f"{seen}; the picture is {scene.phrase()}."
