"""Echo cancellation in a simulated room: can the user interrupt a character as loud as them?

    python -m benchmarks.echo [--trials N] [--quick] [--cold] [--seed S]

The character's reply is real Piper audio, published as tts would (tts.chunk at 22050 Hz)
and played back to back as playback would, which reports each chunk (playback.progress,
"playing", with its remaining_s and level). What the speakers play reaches the microphone
through a synthetic room (exponentially decaying noise, RT60 50-150 ms) 40-120 ms late,
with a -70 dBFS noise floor; the user (the bundled sample's first question, at -26 dBFS
while speaking) starts at a random moment of the reply. The echo at the microphone is 6 dB
louder than the user, as loud, or 6 dB quieter (and 18 dB quieter: a control, where the
level gate is known to work).

Both gates hear the same microphone, 20 ms frames, in the same run:
- level gate: services.asr.barge_in.BargeIn with default AsrSettings on the raw microphone
  (what asr did before the canceller, and does with echo_cancellation off).
- AEC3 + gate: WebRTC's canceller (services.asr.echo_canceller) in front, its far end from
  services.asr.echo_reference fed the same chunks and reports (output delay 0: the
  reference leads the real echo, and AEC3 finds the delay), then the same BargeIn on the
  cleaned audio. The gate keeps its margin (echo_margin_db) over what the canceller leaves,
  which it measures as before, but never takes that for less than a floor
  (--cancelled-coupling-db, -30 dB under the played level): AEC3 leaks while it adapts
  (the first second or two of a session), after the gate has learned a second of it
  working well, and with the floor only from the learned value the character interrupted
  itself there in 3 of 5 trials at +6 dB. As in asr, the canceller and its reference are
  services.asr.echo_path.EchoPath: its output is used only once the microphone is found
  to correlate with what plays (until then the gate hears the raw microphone), and the
  gate learns the echo again when that changes (BargeIn.hear_cancelled).

A barge-in is detected when the gate's Hold comes within 300 ms of the user's speech onset
(the first 20 ms of the question within 40 dB of its loudest); a false hold is one before
the user spoke or over 300 ms after they stopped: the character interrupting itself. ERLE
is the echo's power over what the canceller leaves, over the echo-only part of the reply
(the noise floor limits it when the echo is quiet; the room is linear, so it is an upper
bound of what a real room gives).

By default each session has already played one reply (a barge-in is rarely in the first
second of a stream): --cold starts every trial from a fresh session.
"""

import argparse
import time
import wave
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import soxr
from rich.console import Console
from rich.table import Table

from contracts import PlaybackProgress, TtsChunk
from services.asr.barge_in import BargeIn, Hold
from services.asr.echo_canceller import WebRtcEchoCanceller
from services.asr.echo_path import EchoPath
from services.asr.echo_reference import EchoReference
from services.asr.settings import AsrSettings
from services.asr.vad import make_vad
from services.audio_levels import loudest_dbfs
from services.capture.stage import SAMPLE_CONVERSATION
from services.tts.settings import TtsSettings
from services.tts.synthesizer import make_synthesizer

RATE = 16_000
FRAME = RATE * 20 // 1000
T0 = 1_700_000_000.0  # the simulation's Unix time at 0
WARM_UP = ("Of course, let me tell you a story.",)
REPLY = (
    "Once upon a time, a small dragon lived at the top of a very tall mountain.",
    "Every morning she practised breathing fire at the clouds, and every morning she missed.",
    "The clouds, for their part, found this very funny.",
)
USER_DBFS = -26.0
ECHO_OVER_USER_DB = (6.0, 0.0, -6.0, -18.0)
"""The last is a control: the user clearly louder, where the level gate works."""
NOISE_DBFS = -70.0
DETECT_WITHIN_S = 0.3
BUS_S = 0.005  # from a report or a frame's end to asr


@dataclass(frozen=True)
class Turn:
    chunks: list[TtsChunk]
    audio: np.ndarray  # what the speakers play, at 16 kHz, float

    @property
    def duration_s(self) -> float:
        return len(self.audio) / RATE


@dataclass
class GateResult:
    latency_s: float | None = None  # from the onset to the Hold, if within the window
    false_hold: bool = False


@dataclass
class Trial:
    raw: GateResult = field(default_factory=GateResult)
    cancelled: GateResult = field(default_factory=GateResult)
    erle_db: float = 0.0


def make_turn(synthesizer: object, turn: str, texts: tuple[str, ...]) -> Turn:
    chunks, pcm, rate = [], b"", 0
    for index, text in enumerate(texts):
        speech = synthesizer.synthesize(text)  # type: ignore[attr-defined]
        rate = speech.sample_rate
        chunks.append(
            TtsChunk(
                session_id="bench-echo", turn_id=turn, seq=index, index=index,
                final=index == len(texts) - 1, text=text, sample_rate=rate, pcm=speech.pcm,
            )
        )  # fmt: skip
        pcm += speech.pcm
    # The speakers play the whole turn; the reference resamples chunk by chunk.
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    return Turn(chunks, soxr.resample(samples, rate, RATE).astype(np.float64))


def question() -> tuple[np.ndarray, float]:
    """The sample's first question, and where its speech starts (s)."""
    with wave.open(str(SAMPLE_CONVERSATION)) as sample:
        pcm = np.frombuffer(sample.readframes(sample.getnframes()), dtype="<i2")
    audio = pcm[int(0.5 * RATE) : int(2.5 * RATE)].astype(np.float64) / 32768
    frames = audio[: len(audio) // FRAME * FRAME].reshape(-1, FRAME)
    db = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    return audio, float(np.argmax(db > db.max() - 40)) * FRAME / RATE


def active_dbfs(x: np.ndarray) -> float:
    """The level while it sounds: 20 ms frames within 30 dB of the loudest."""
    frames = x[: len(x) // FRAME * FRAME].reshape(-1, FRAME)
    power = (frames**2).mean(axis=1)
    loud = power[power > power.max() * 1e-3]
    return float(10 * np.log10(loud.mean()))


def room(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A room impulse response (decaying noise, RT60 50-150 ms) and the delay (samples)
    from a report to the echo at the microphone (output buffer + air, 40-120 ms)."""
    rt60 = rng.uniform(0.05, 0.15)
    taps = int(rt60 * RATE)
    rir = rng.standard_normal(taps) * 10 ** (-3 * np.arange(taps) / taps)  # -60 dB at rt60
    rir[0] += 3 * np.sqrt(np.sum(rir**2))  # the direct path dominates
    return rir / np.sqrt(np.sum(rir**2)), int(rng.uniform(0.04, 0.12) * RATE)


def convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x)]


def reports(turn: Turn, start_s: float) -> list[PlaybackProgress]:
    """What playback says while it plays the turn from start_s, chunk after chunk."""
    out: list[PlaybackProgress] = []
    at = start_s
    for chunk in turn.chunks:
        out.append(
            PlaybackProgress(
                session_id="bench-echo", turn_id=chunk.turn_id, seq=len(out),
                chunk_index=chunk.index, played_s=round(at - start_s, 3), state="playing",
                level_dbfs=round(loudest_dbfs(chunk.pcm, chunk.sample_rate), 1),
                remaining_s=round(chunk.duration_s, 3),
                created_at=datetime.fromtimestamp(T0 + at, UTC),
            )
        )  # fmt: skip
        at += chunk.duration_s
    last = turn.chunks[-1]
    out.append(
        PlaybackProgress(
            session_id="bench-echo", turn_id=last.turn_id, seq=len(out),
            chunk_index=last.index, played_s=round(at - start_s, 3), state="finished",
            created_at=datetime.fromtimestamp(T0 + at, UTC),
        )
    )  # fmt: skip
    return out


class Recorded:
    """The canceller, keeping its latest output: ERLE is the canceller's own figure, even
    for frames where asr hears the raw microphone."""

    def __init__(self) -> None:
        self.canceller = WebRtcEchoCanceller()
        self.last = b""

    def cancel(self, near: bytes, far: bytes) -> bytes:
        self.last = self.canceller.cancel(near, far)
        return self.last

    def reset(self) -> None:
        self.canceller.reset()


class SimClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def run_trial(
    warm_up: Turn | None, reply: Turn, user: tuple[np.ndarray, float], echo_over_user_db: float,
    rng: np.random.Generator, cancelled_coupling_db: float,
) -> Trial:  # fmt: skip
    # The timeline: (a warm-up reply, a second of quiet,) the reply, the user within it.
    speaker = np.zeros(0)
    messages: list[PlaybackProgress] = []
    if warm_up is not None:
        messages += reports(warm_up, 0.2)
        speaker = np.concatenate([np.zeros(int(0.2 * RATE)), warm_up.audio, np.zeros(RATE)])
    reply_start = len(speaker) / RATE
    messages += reports(reply, reply_start)
    speaker = np.concatenate([speaker, reply.audio])
    question_audio, onset_in_question = user
    onset = reply_start + rng.uniform(0.3, reply.duration_s - 0.5)
    placed = int((onset - onset_in_question) * RATE)
    total = max(len(speaker), placed + len(question_audio)) + RATE // 2
    user_end = (placed + len(question_audio)) / RATE + DETECT_WITHIN_S  # its audio, and then
    speaker = np.pad(speaker, (0, total - len(speaker)))

    rir, delay = room(rng)
    echo = np.concatenate([np.zeros(delay), convolve(speaker, rir)])[:total]
    voice = np.zeros(total)
    voice[placed : placed + len(question_audio)] = question_audio
    voice *= 10 ** ((USER_DBFS - active_dbfs(question_audio)) / 20)
    echo *= 10 ** ((USER_DBFS + echo_over_user_db - active_dbfs(echo)) / 20)
    noise = rng.standard_normal(total) * 10 ** (NOISE_DBFS / 20)
    mic = np.clip(np.round((echo + voice + noise) * 32768), -32768, 32767).astype("<i2")

    clock = SimClock()
    level_gate = BargeIn(AsrSettings(), make_vad(AsrSettings()), clock)
    after_aec = AsrSettings(echo_cancelled_coupling_db=cancelled_coupling_db)
    aec_gate = BargeIn(after_aec, make_vad(after_aec), clock)
    canceller, reference = Recorded(), EchoReference(output_delay_s=0.0)
    path = EchoPath(reference, canceller, after_aec.echo_tail_ms / 1000)
    for turn in (warm_up, reply):
        for chunk in turn.chunks if turn is not None else []:
            reference.add_chunk(chunk)  # ready long before they play

    # What reaches asr, in order: reports, and each frame once captured.
    arrivals: list[tuple[float, int, PlaybackProgress | None]] = [
        (m.created_at.timestamp() - T0 + BUS_S, n, m) for n, m in enumerate(messages)
    ]
    arrivals += [((i + FRAME) / RATE + BUS_S, i, None) for i in range(0, total - FRAME, FRAME)]
    arrivals.sort(key=lambda a: (a[0], a[2] is None))
    cleaned = np.zeros(total, dtype=np.int16)
    trial = Trial()
    for arrived, at, message in arrivals:
        clock.now = T0 + arrived
        if message is not None:
            level_gate.on_progress(message)
            aec_gate.on_progress(message)
            reference.on_progress(message)
            continue
        near = mic[at : at + FRAME].tobytes()
        clean, cancelling = path.process(near, T0 + at / RATE)
        aec_gate.hear_cancelled(cancelling)
        cleaned[at : at + FRAME] = np.frombuffer(canceller.last, dtype="<i2")
        for gate, audio, result in (
            (level_gate, near, trial.raw), (aec_gate, clean, trial.cancelled),
        ):  # fmt: skip
            gate.is_speech(audio)
            if any(isinstance(event, Hold) for event in gate.drain()):
                if arrived < onset or arrived > user_end:
                    result.false_hold = True
                elif result.latency_s is None and arrived - onset <= DETECT_WITHIN_S:
                    result.latency_s = arrived - onset

    echo_only = slice(int(reply_start * RATE) + delay, int(onset * RATE))
    residual = np.mean((cleaned[echo_only] / 32768) ** 2)
    trial.erle_db = float(10 * np.log10(np.mean(echo[echo_only] ** 2) / max(residual, 1e-12)))
    return trial


def summarize(trials: list[Trial], gate: str) -> tuple[str, str, str, str]:
    results = [t.raw if gate == "raw" else t.cancelled for t in trials]
    latencies = [r.latency_s * 1000 for r in results if r.latency_s is not None]
    detected = f"{len(latencies)}/{len(results)} ({100 * len(latencies) / len(results):.0f} %)"
    p50 = f"{np.median(latencies):.0f}" if latencies else "-"
    false = f"{sum(r.false_hold for r in results)}/{len(results)}"
    erle = "-" if gate == "raw" else f"{np.median([t.erle_db for t in trials]):.1f}"
    return detected, p50, false, erle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="per echo level")
    parser.add_argument("--quick", action="store_true", help="5 trials per level (CI)")
    parser.add_argument("--cold", action="store_true", help="no reply before the trial's")
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument(
        "--cancelled-coupling-db", type=float, default=-30.0,
        help="the least echo coupling the gate assumes after the canceller (dB)",
    )  # fmt: skip
    args = parser.parse_args()
    trials = 5 if args.quick else args.trials
    console = Console(width=110)
    started = time.perf_counter()
    synthesizer = make_synthesizer(TtsSettings(variation=0))
    reply = make_turn(synthesizer, "reply", REPLY)
    warm_up = None if args.cold else make_turn(synthesizer, "warm-up", WARM_UP)
    user = question()
    table = Table(
        title=f"Barge-in over the character's echo, {trials} trials a level "
        f"({'fresh sessions' if args.cold else 'after one reply'}, seed {args.seed})"
    )
    for column in ("echo vs user", "gate", "detected <= 300 ms", "p50 ms", "false holds",
                   "ERLE dB (median)"):  # fmt: skip
        table.add_column(column, justify="left" if column == "gate" else "right")
    for level, over in enumerate(ECHO_OVER_USER_DB):
        draws = [np.random.default_rng([args.seed, level, n]) for n in range(trials)]
        coupling = args.cancelled_coupling_db
        runs = [run_trial(warm_up, reply, user, over, rng, coupling) for rng in draws]
        for gate, name in (("raw", "level gate alone"), ("aec", "AEC3 + gate")):
            table.add_row(f"{over:+.0f} dB" if gate == "raw" else "", name, *summarize(runs, gate))
    console.print(table)
    console.print(
        f"reply {reply.duration_s:.1f} s of Piper; user {USER_DBFS:.0f} dBFS; "
        f"{time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
