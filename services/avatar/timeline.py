"""What the character is doing at a given moment, from the events: the overlay's
timeline.mjs in Python, for the stages that drive OBS (captions, the talking scene) and
VTube Studio (the mouth, expressions).

A turn's mouth tracks come on avatar.expr, its chunks' texts on tts.chunk, and where its
audio is on playback.progress. The turn's audio clock is the played_s of the latest
"playing" report plus the time since it arrived, and advances only while playing, up to
the end of the chunk that report announced (remaining_s): past it the character is silent
until a report says it plays on. "paused", "flushed" and "finished" stop it at once; so
does an "idle" avatar.expr from its offset_s on (0 for an interrupt: at once), and so does
`hold()` (a pause on control, which comes before playback's own "paused" report).
"""

import math
from collections import OrderedDict
from dataclasses import dataclass, field

from contracts import AvatarExpr, PlaybackProgress, TtsChunk

KEEP_TURNS = 16
"""Turns remembered (a late event of an older one is ignored)."""
CAPTION_LINGER_S = 2.5
"""Captions stay this long after a turn ends."""


@dataclass
class Track:
    offset: float  # where it starts in the turn's audio (s)
    fps: int
    values: list[float]  # mouth open per video frame; none for an idle
    expression: str
    order: int  # arrival order of expressions


@dataclass
class Chunk:
    words: list[str]
    starts: list[float]  # each word's share of the chunk's characters before it
    duration: float


@dataclass
class Turn:
    id: str
    tracks: list[Track] = field(default_factory=list)
    chunks: dict[int, Chunk] = field(default_factory=dict)
    idle_at: float = math.inf  # turn audio (s) from which the mouth stays shut
    state: str = "waiting"  # "playing" | "paused" | "over" once playback reports
    base: float = 0.0  # played_s of the latest report
    since: float = 0.0  # when it arrived (monotonic s)
    limit: float = math.inf  # the clock stops here (the announced chunk's end)
    ended_at: float | None = None  # when the turn stopped for good
    stopped_at: float | None = None  # turn audio (s) where an idle stopped it

    def clock(self, now: float) -> float:
        """Where the turn's audio is at `now` (s), by the reports."""
        if self.state != "playing":
            return self.base
        return min(self.base + max(0.0, now - self.since), self.limit)

    def placed_chunks(self) -> list[tuple[float, Chunk]]:
        """The chunks in order, each with where it starts in the turn's audio."""
        placed, start = [], 0.0
        for index in sorted(self.chunks):
            chunk = self.chunks[index]
            placed.append((start, chunk))
            start += chunk.duration
        return placed


@dataclass(frozen=True)
class Frame:
    """What to show at one moment."""

    mouth: float = 0.0  # 0..1
    expression: str | None = None  # a tag that became current now; None: unchanged
    caption: str = ""
    clock: float | None = None  # the turn's audio position (s), None with no turn
    speaking: bool = False
    turn_id: str | None = None
    due: float | None = None  # the shown mouth frame's place in the turn's audio (s)
    next_in: float | None = None  # while speaking: seconds until the next mouth frame is due


def words_of(text: str, duration: float) -> Chunk:
    words = text.split()
    total = sum(map(len, words)) + max(0, len(words) - 1)
    starts, at = [], 0
    for word in words:
        starts.append(at / total if total else 0.0)
        at += len(word) + 1
    return Chunk(words, starts, duration)


def revealed(chunk: Chunk, fraction: float) -> str:
    """The words shown once `fraction` of the chunk has played: revealed by characters."""
    if fraction <= 0:
        return ""
    count = sum(1 for start in chunk.starts if start <= fraction)
    return " ".join(chunk.words[:count])


class Timeline:
    def __init__(self) -> None:
        self.turns: OrderedDict[str, Turn] = OrderedDict()
        self.active: Turn | None = None  # the turn playback reported last
        self.counter = 0  # arrival order of expressions
        self.shown_order = 0  # the order of the expression shown now
        self.immediate: Track | None = None  # an idle's expression, shown at once

    def turn(self, turn_id: str | None) -> Turn:
        key = turn_id or "-"
        turn = self.turns.get(key)
        if turn is None:
            turn = self.turns[key] = Turn(key)
            if len(self.turns) > KEEP_TURNS:
                oldest = next(k for k in self.turns if self.active is None or k != self.active.id)
                del self.turns[oldest]
        return turn

    def on_progress(self, report: PlaybackProgress, now: float) -> None:
        turn = self.turn(report.turn_id)
        self.active = turn
        turn.base, turn.since = report.played_s, now
        if report.state == "playing":
            turn.state, turn.ended_at = "playing", None
            remaining = report.remaining_s
            turn.limit = math.inf if remaining is None else report.played_s + remaining
        elif report.state == "paused":
            turn.state = "paused"
        else:  # finished or flushed
            turn.state = "over"
            if turn.ended_at is None:
                turn.ended_at = now

    def hold(self, turn_id: str, now: float) -> None:
        """A pause on control: the clock stops where it is now, ahead of playback's report."""
        turn = self.turns.get(turn_id)
        if turn is not None and turn.state == "playing":
            turn.base, turn.since, turn.state = turn.clock(now), now, "paused"

    def stop(self, turn_id: str, now: float) -> None:
        """An interrupt or a panic: the turn is over, its mouth shut at once."""
        turn = self.turn(turn_id)
        if turn.stopped_at is None:
            turn.stopped_at = turn.clock(now)
        turn.base, turn.state = turn.stopped_at, "over"
        if turn.ended_at is None:
            turn.ended_at = now

    def on_expression(self, expr: AvatarExpr, now: float) -> None:
        if expr.state == "blink":
            return  # a blink is the model's own business
        turn = self.turn(expr.turn_id)
        self.counter += 1
        idle = expr.state == "idle"
        track = Track(expr.offset_s, expr.fps, [] if idle else list(expr.mouth_open),
                      expr.expression, self.counter)  # fmt: skip
        turn.tracks.append(track)
        if idle:
            turn.idle_at = min(turn.idle_at, expr.offset_s)
            clock = turn.clock(now)
            if turn.stopped_at is None and clock >= turn.idle_at:
                self._stopped(turn, clock, now)  # already past it (an interrupt's idle)
            # Nothing plays (an interrupt, a page opened mid-reply): its expression shows at
            # once. Not for a turn still waiting to play: its own speaking tracks come first;
            # nor for an idle still ahead of a paused reply (the end of the reply, often sent
            # during the pause): the reply goes on from where it stopped.
            active = self.active
            playing = active is not None and active.state == "playing"
            ahead = active is not None and active.state == "paused" and turn.stopped_at is None
            if turn.state != "waiting" and not playing and not ahead:
                self.immediate = track

    def on_chunk(self, chunk: TtsChunk) -> None:
        self.turn(chunk.turn_id).chunks[chunk.index] = words_of(chunk.text, chunk.duration_s)

    def frame(self, now: float) -> Frame:
        """What to show at `now` (monotonic s)."""
        expression = None
        if self.immediate is not None and self.immediate.order > self.shown_order:
            expression, self.shown_order = self.immediate.expression, self.immediate.order
        turn = self.active
        if turn is None or turn.state == "waiting":
            return Frame(expression=expression)
        clock = turn.clock(now)
        audible = turn.state == "playing" and clock < turn.limit
        if turn.stopped_at is None and clock >= turn.idle_at:
            self._stopped(turn, turn.idle_at, now)  # reached the end-of-reply idle
        if turn.stopped_at is not None:
            clock = min(clock, turn.stopped_at)

        # The expression: the latest track (or idle) whose place in the audio has come.
        shown: Track | None = None
        for track in turn.tracks:
            if track.offset > clock + 1e-6:
                continue
            if shown is None or (track.offset, track.order) > (shown.offset, shown.order):
                shown = track
        if shown is not None and shown.order > self.shown_order:
            expression, self.shown_order = shown.expression, shown.order

        mouth, due, speaking, next_in = 0.0, None, False, None
        if audible and turn.stopped_at is None:
            speaking = True
            for track in turn.tracks:
                index = math.floor((clock - track.offset) * track.fps + 1e-9)
                if 0 <= index < len(track.values):
                    mouth, due = track.values[index], track.offset + index / track.fps
                    next_in = max(0.0, due + 1 / track.fps - clock)
        return Frame(mouth, expression, self.caption(turn, clock, now), clock, speaking,
                     turn.id, due, next_in)  # fmt: skip

    def _stopped(self, turn: Turn, clock: float, now: float) -> None:
        turn.stopped_at = clock
        if turn.ended_at is None:
            turn.ended_at = now

    def caption(self, turn: Turn, clock: float, now: float) -> str:
        if turn.ended_at is not None and now - turn.ended_at > CAPTION_LINGER_S:
            return ""
        chunks = turn.placed_chunks()
        for k, (start, chunk) in enumerate(chunks):
            if clock < start + chunk.duration:
                share = (clock - start) / chunk.duration if chunk.duration > 0 else 1.0
                shown = revealed(chunk, share)
                # Between two chunks (the next not begun): the last sentence stays.
                return shown or (" ".join(chunks[k - 1][1].words) if k > 0 else "")
        return " ".join(chunks[-1][1].words) if chunks else ""
