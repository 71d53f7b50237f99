"""The labelled end-of-turn set: audio that ends at a pause, and whether the turn was done.

    python -m benchmarks.end_of_turn.cases [--write DIR]   # build, count, optionally save WAVs

Each case is what asr hands the end-of-turn model at a pause: the utterance's audio up to
the end of speech plus TRAIL_S of what follows (the endpointer keeps its last voiced chunk
and 0.1 s more, and webrtcvad's last voiced chunk lags the end of speech by about 0.1 s).

- piper: the bundled voice saying COMPLETE and INCOMPLETE lines (synthetic.py); what
  follows is Piper's own trailing silence, then digital silence.
- human: real recordings (sources.py) cut where real_cases.json says, labelled by hand
  from the recording's own transcript and the words after the cut:
  - "natural": a pause in the recording (>= 0.2 s): mid-sentence (incomplete, e.g. "And so,
    my fellow Americans") or at a sentence end the speaker went on from (complete); what
    follows is the recording's own pause;
  - "end": where the speaker stopped (a whole prompt, the end of a recording); Asterisk's
    fragments recorded to be followed by a number are incomplete ("There are currently");
  - "cut": fluent read speech cut at a word boundary with no pause ("The navy attacked
    the"), then silence: incomplete.

Labels are about the sentence: a pause mid-sentence is incomplete even where the words so
far could stand alone (those are marked `stands_alone`: "You may quit voicemail at any
time | by pressing the pound key"); cut points that were unclear were left out.
"""

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from benchmarks.end_of_turn import sources, synthetic
from contracts.limits import AUDIO_SAMPLE_RATE

CACHE = Path(".marionette/cache/end_of_turn")
LABELS = Path(__file__).with_name("real_cases.json")
TRAIL_S = 0.2
LEAD_S = 0.3  # silence before a Piper line or a file's first word: the endpointer's pre-roll
FADE_S = 0.01  # at a "cut", so the cut is no click
FRAME = AUDIO_SAMPLE_RATE // 100  # 10 ms

Source = Literal["piper", "human"]
Pause = Literal["synthetic", "natural", "end", "cut"]


@dataclass(frozen=True)
class Case:
    id: str
    source: Source
    origin: str  # where the audio comes from, in words
    complete: bool
    words: str  # what was said up to the pause
    pause: Pause
    pause_s: float | None  # the recording's own pause there, when it has one
    pcm: bytes  # 16 kHz mono s16le, ending TRAIL_S after the end of speech
    stands_alone: bool = False  # incomplete, though the words so far make a sentence

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / AUDIO_SAMPLE_RATE


def to_pcm(samples: np.ndarray) -> bytes:
    return bytes((np.clip(samples, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes())


def speech_end(samples: np.ndarray) -> int:
    """The sample after the last 10 ms frame of speech: louder than both the noise floor
    + 12 dB and the loudest frame - 40 dB."""
    n = len(samples) // FRAME
    rms = np.sqrt((samples[: n * FRAME].reshape(n, FRAME) ** 2).mean(axis=1))
    db = 20 * np.log10(np.maximum(rms, 1e-5))
    threshold = max(float(np.percentile(db, 10)) + 12.0, float(db.max()) - 40.0)
    loud = np.flatnonzero(db > threshold)
    return int(loud[-1] + 1) * FRAME if loud.size else 0


def with_pause(speech: np.ndarray, after: np.ndarray) -> np.ndarray:
    """The speech, then TRAIL_S: as much of `after` as there is, then silence."""
    trail = int(TRAIL_S * AUDIO_SAMPLE_RATE)
    after = after[:trail]
    silence = np.zeros(trail - after.size, dtype=np.float32)
    return np.concatenate([speech, after, silence]).astype(np.float32)


def piper_cases(cache: Path) -> list[Case]:
    wanted = synthetic.lines()
    audio = synthetic.speak(wanted, cache)
    made = []
    for line in wanted:
        samples = audio[line.key]
        end = speech_end(samples)
        lead = np.zeros(int(LEAD_S * AUDIO_SAMPLE_RATE), dtype=np.float32)
        pcm = to_pcm(with_pause(np.concatenate([lead, samples[:end]]), samples[end:]))
        origin = (
            f"piper {synthetic.VOICE} noise {line.noise_scale} length {line.length_scale} "
            f"seed {line.seed}"
        )
        made.append(
            Case(
                f"piper-{line.seed:02d}", "piper", origin, line.complete, line.text,
                "synthetic", None, pcm,
            )
        )  # fmt: skip
    return made


def human_cases(cache: Path) -> list[Case]:
    labels = json.loads(LABELS.read_text())["cases"]
    recordings = {name: sources.recording(name) for name in {c["recording"] for c in labels}}
    paths = sources.extract(list(recordings.values()), cache)
    decoded = {name: sources.decode(r, paths[name]) for name, r in recordings.items()}
    made = []
    for label in labels:
        samples = decoded[label["recording"]]
        start = round(label["start_s"] * AUDIO_SAMPLE_RATE)
        pause_s = label["pause_s"]
        if label["end_s"] is None:  # where the speaker stopped
            end = speech_end(samples[start:]) + start
            pause_s = round((len(samples) - end) / AUDIO_SAMPLE_RATE, 2)
        else:
            end = round(label["end_s"] * AUDIO_SAMPLE_RATE)
        speech = samples[start:end].copy()
        if start == 0:  # the file starts with the speech: asr would have had its pre-roll
            speech = np.concatenate([np.zeros(int(LEAD_S * AUDIO_SAMPLE_RATE), np.float32), speech])
        if label["pause"] == "cut":
            fade = int(FADE_S * AUDIO_SAMPLE_RATE)
            speech[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
            after = samples[:0]
        else:
            after = samples[end : end + round(pause_s * AUDIO_SAMPLE_RATE)]
        made.append(
            Case(
                label["id"], "human", recordings[label["recording"]].describe(),
                label["complete"], label["words"], label["pause"], pause_s,
                to_pcm(with_pause(speech, after)), label["stands_alone"],
            )
        )  # fmt: skip
    return made


def build_set(cache: Path = CACHE, *, piper: bool = True, human: bool = True) -> list[Case]:
    """The whole set, Piper lines first; fetches and synthesizes what cache lacks."""
    return (piper_cases(cache) if piper else []) + (human_cases(cache) if human else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--write", type=Path, help="also save each case as DIR/ID.wav")
    args = parser.parse_args()
    cases = build_set(args.cache)
    for source in ("piper", "human"):
        mine = [c for c in cases if c.source == source]
        done = sum(c.complete for c in mine)
        print(f"{source}: {len(mine)} cases, {done} complete, {len(mine) - done} incomplete")
    if args.write:
        import soundfile

        args.write.mkdir(parents=True, exist_ok=True)
        for case in cases:
            samples = np.frombuffer(case.pcm, dtype="<i2")
            soundfile.write(str(args.write / f"{case.id.replace('/', '-')}.wav"), samples, 16000)


if __name__ == "__main__":
    main()
