"""The far end for the echo canceller: what the speakers played at a given capture time.

asr hears the character's audio (tts.chunk, resampled to 16 kHz) and where playback is
in it (playback.progress). A "playing" report says: at `created_at`, chunk `chunk_index`
had `remaining_s` left, so its audio from there on sounds from that moment (plus the
output delay), and the chunks after it follow back to back, each no sooner than it was
made (playback cannot play a chunk it has not got). "paused" and "flushed" end the sound
at their moment; "finished" changes nothing (the last chunk simply ends). Before any
report, between turns and past the audio known, the far end is silence.

Capture times and report times are both Unix seconds, so the two stages' clocks must
agree (one host, or NTP). The reference may run ahead of the real echo (AEC3 finds delays
up to ~400 ms), never behind it (an echo that comes before its reference cannot be
cancelled): output_delay_s is the least delay from a report to the speakers, 0 when
unsure.

Reports of a turn can reach asr before its chunks (separate streams): a report whose
chunk is not here yet is kept, and sounds once the chunk comes.
"""

import bisect
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import soxr

from contracts import PlaybackProgress, TtsChunk
from contracts.limits import AUDIO_SAMPLE_RATE

RATE = AUDIO_SAMPLE_RATE
HISTORY_S = 10.0
"""Reports kept behind the newest: frames reach asr late (a backlog) but not this late."""
MAX_ANCHORS = 256
MAX_TURNS = 3
"""Turns whose audio is kept: the one playing, the one before (its echo may still be
being captured) and the next (its chunks come ahead of its first report)."""


@dataclass(frozen=True)
class _Audio:
    pcm: np.ndarray  # int16 at 16 kHz
    ready_at: float  # the earliest it can sound (it was made then)


@dataclass(frozen=True)
class _Anchor:
    """One report: from `at` on, what sounds."""

    at: float
    turn: str
    playing: bool
    chunk_index: int
    remaining_s: float | None
    played_s: float


class EchoReference:
    """One session's far end. Pure logic: nothing here reads a clock."""

    def __init__(self, output_delay_s: float = 0.0) -> None:
        self.output_delay_s = output_delay_s
        self._turns: OrderedDict[str, dict[int, _Audio]] = OrderedDict()
        self._anchors: list[_Anchor] = []

    def add_chunk(self, chunk: TtsChunk) -> None:
        turn = self._turns.setdefault(chunk.turn_id or "", {})
        samples = np.frombuffer(chunk.pcm, dtype="<i2")
        if chunk.sample_rate != RATE and len(samples):
            samples = soxr.resample(samples, chunk.sample_rate, RATE)
        turn[chunk.index] = _Audio(
            np.asarray(samples, dtype=np.int16),
            chunk.created_at.timestamp() + self.output_delay_s,
        )
        while len(self._turns) > MAX_TURNS:
            self._turns.popitem(last=False)

    def on_progress(self, progress: PlaybackProgress) -> None:
        if progress.state == "finished":
            return  # the last chunk ends by itself; cutting here could clip its tail
        anchor = _Anchor(
            at=progress.created_at.timestamp() + self.output_delay_s,
            turn=progress.turn_id or "",
            playing=progress.state == "playing",
            chunk_index=progress.chunk_index,
            remaining_s=progress.remaining_s,
            played_s=progress.played_s,
        )
        bisect.insort(self._anchors, anchor, key=lambda a: a.at)
        newest = self._anchors[-1].at
        while len(self._anchors) > 1 and (
            len(self._anchors) > MAX_ANCHORS or self._anchors[1].at < newest - HISTORY_S
        ):
            self._anchors.pop(0)

    def far_end(self, captured_at: float, samples: int) -> bytes:
        """The s16le that sounds over [captured_at, captured_at + samples / 16 kHz)."""
        return self.far_end_samples(captured_at, samples).astype("<i2").tobytes()

    def far_end_samples(self, captured_at: float, samples: int) -> np.ndarray:
        out = np.zeros(samples, dtype=np.int16)
        end = captured_at + samples / RATE
        first = max(0, bisect.bisect_right(self._anchors, captured_at, key=lambda a: a.at) - 1)
        for n in range(first, len(self._anchors)):
            anchor = self._anchors[n]
            if anchor.at >= end:
                break
            until = self._anchors[n + 1].at if n + 1 < len(self._anchors) else end
            if anchor.playing and until > captured_at:
                self._fill(out, captured_at, anchor, max(anchor.at, captured_at), min(until, end))
        return out

    def lacks_audio(self, captured_at: float) -> bool:
        """Does playback say something plays then whose audio never came here (a replica
        that took the session over mid-reply)? That echo cannot be cancelled."""
        n = bisect.bisect_right(self._anchors, captured_at, key=lambda a: a.at) - 1
        if n < 0 or not self._anchors[n].playing:
            return False
        anchor = self._anchors[n]
        return anchor.chunk_index not in self._turns.get(anchor.turn, {})

    def _fill(self, out: np.ndarray, t0: float, anchor: _Anchor, u: float, v: float) -> None:
        """Write into out (whose sample 0 sounds at t0) what anchor plays over [u, v)."""
        chunks = self._turns.get(anchor.turn)
        if chunks is None or anchor.chunk_index not in chunks:
            return
        index = anchor.chunk_index
        start = anchor.at - self._offset_s(anchor, chunks)  # when its sample 0 sounds
        lo, hi = round((u - t0) * RATE), round((v - t0) * RATE)
        while index in chunks and lo < hi:
            audio = chunks[index]
            start = max(start, audio.ready_at) if index != anchor.chunk_index else start
            first = round((start - t0) * RATE)  # the chunk's sample 0, in out's samples
            if first >= hi:
                break
            a, b = max(lo, first), min(hi, first + len(audio.pcm))
            if b > a:
                out[a:b] = audio.pcm[a - first : b - first]
            start += len(audio.pcm) / RATE
            index += 1

    @staticmethod
    def _offset_s(anchor: _Anchor, chunks: dict[int, _Audio]) -> float:
        """How far into its chunk the report was."""
        duration = len(chunks[anchor.chunk_index].pcm) / RATE
        if anchor.remaining_s is not None:
            return max(0.0, duration - anchor.remaining_s)
        before = [chunks.get(i) for i in range(anchor.chunk_index)]
        if all(audio is not None for audio in before):
            earlier = sum(len(audio.pcm) for audio in before if audio is not None) / RATE
            return min(duration, max(0.0, anchor.played_s - earlier))
        return 0.0
