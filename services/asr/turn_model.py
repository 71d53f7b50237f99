"""Has the speaker finished? Smart Turn v3.2 on the audio, with a look at the words.

A pause after "because" or "and so" is not the end of a turn; a pause after a question
usually is. Smart Turn (pipecat's open model, a Whisper-tiny encoder with a classifier
head, trained on real and synthetic turns) hears that from the last 8 s of audio:
intonation, a word cut off, a trailing "um". Its weak spot, measured here, is flat
synthetic speech, where a finished question can sound unfinished; so the transcript,
which asr has by then anyway, breaks a near tie (see `TurnJudge`).

The features replicate transformers' WhisperFeatureExtractor(chunk_length=8) as pipecat's
vendored `_whisper_features` does (Apache-2.0 / BSD-2); tests check they match it.
"""

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from contracts.limits import AUDIO_SAMPLE_RATE

WINDOW_S = 8
N_FFT = 400
HOP = 160
N_MELS = 80


def _mel_filters() -> np.ndarray:
    """Slaney-scale, area-normalized triangular filters: (N_FFT // 2 + 1, N_MELS)."""

    def to_mel(hz: np.ndarray) -> np.ndarray:
        mel = 3.0 * hz / 200.0
        log = hz >= 1000.0
        mel[log] = 15.0 + np.log(hz[log] / 1000.0) * (27.0 / np.log(6.4))
        return mel

    def to_hz(mel: np.ndarray) -> np.ndarray:
        hz = 200.0 * mel / 3.0
        log = mel >= 15.0
        hz[log] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel[log] - 15.0))
        return hz

    edges = to_hz(
        np.linspace(
            to_mel(np.array([0.0]))[0], to_mel(np.array([AUDIO_SAMPLE_RATE / 2]))[0], N_MELS + 2
        )
    )
    bins = np.linspace(0, AUDIO_SAMPLE_RATE // 2, N_FFT // 2 + 1)
    slopes = edges[None, :] - bins[:, None]
    down = -slopes[:, :-2] / np.diff(edges)[:-1]
    up = slopes[:, 2:] / np.diff(edges)[1:]
    filters: np.ndarray = np.maximum(0.0, np.minimum(down, up))
    filters *= (2.0 / (edges[2 : N_MELS + 2] - edges[:N_MELS]))[None, :]
    return filters


_WINDOW = np.hanning(N_FFT + 1)[:-1]  # periodic, as torch.hann_window
_FILTERS = _mel_filters()


def log_mel_features(samples: np.ndarray) -> np.ndarray:
    """(N_MELS, 800) Whisper log-mel features of the last 8 s (zero-padded in front)."""
    size = WINDOW_S * AUDIO_SAMPLE_RATE
    x = np.asarray(samples, dtype=np.float32)[-size:]
    x = np.pad(x, (size - x.size, 0))
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), (N_FFT // 2, N_FFT // 2), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2
    log_spec = np.log10(np.maximum(1e-10, _FILTERS.T @ power.T))[:, :-1]
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    features: np.ndarray = ((log_spec + 4.0) / 4.0).astype(np.float32)
    return features


class TurnModel(Protocol):
    def probability(self, pcm: bytes) -> float:
        """How likely the speaker has finished, from 16 kHz s16le audio that ends at the
        pause. Blocking: call it from a worker thread."""
        ...


class SmartTurn:
    """Smart Turn v3.2 under onnxruntime, one thread (it is small; asr's recognizer has
    the other core)."""

    def __init__(self, model_path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._lock = threading.Lock()

    def probability(self, pcm: bytes) -> float:
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        features = log_mel_features(samples)[None, :, :]
        with self._lock:
            outputs = self._session.run(None, {"input_features": features})
        return float(np.asarray(outputs[0]).reshape(-1)[0])


TRAILING_WORDS = frozenset(
    # articles, conjunctions, fillers, possessives: a sentence does not end on them.
    ["a", "an", "the", "and", "or", "but", "so", "because", "cause", "since", "if", "when",
     "though", "although", "unless", "until", "whether", "nor", "than", "um", "uh", "er",
     "erm", "my", "your", "his", "her", "their", "our", "i", "i'm", "let's"]
)  # fmt: skip
"""Words a finished English sentence rarely ends on: a pause after one means more is coming."""
TRAILING_PREPOSITIONS = frozenset(
    ["to", "of", "in", "on", "at", "for", "from", "with", "about", "into", "onto", "by", "like"]
)
"""Unfinished too, unless the words end in a question mark ("Where are you from?")."""

_LAST_WORD = re.compile(r"([A-Za-z']+)\W*$")


@dataclass(frozen=True)
class TurnVerdict:
    complete: bool
    probability: float  # the model's
    reason: str  # in words, for logs and traces


@dataclass(frozen=True)
class TurnJudge:
    """The decision from the model's probability and the transcript's last word.

    - the transcript ends on a word like "because" or "the", or on "...": not finished;
      on a preposition ("tell me more about"), unless it asks ("Where are you from?");
    - the model is sure (>= threshold): finished;
    - the model is unsure (>= lean) and the words end in "?" or "!": finished, since a
      flat voice is what makes it unsure (not on ".": tiny.en puts one after fragments);
    - otherwise not finished.

    Measured on benchmarks/end_of_turn (docs/benchmarks.md): the word rules mend the
    model's misses on fragments that end on a preposition and on flat questions.
    """

    threshold: float = 0.5
    lean: float = 0.05

    def judge(self, probability: float, text: str | None) -> TurnVerdict:
        if text is not None:
            stripped = text.strip()
            if stripped.endswith(("...", "…", ",", "-", "—")):
                return TurnVerdict(False, probability, f"the words trail off: {stripped[-12:]!r}")
            match = _LAST_WORD.search(stripped)
            last = match.group(1) if match else ""
            if last.lower() in TRAILING_WORDS or (
                last.lower() in TRAILING_PREPOSITIONS and not stripped.endswith("?")
            ):
                return TurnVerdict(False, probability, f"ends on {last!r}")
        if probability >= self.threshold:
            return TurnVerdict(True, probability, f"model: {probability:.2f}")
        if text is not None and probability >= self.lean and text.strip().endswith(("?", "!")):
            return TurnVerdict(True, probability, f"model unsure ({probability:.2f}), words end")
        return TurnVerdict(False, probability, f"model: {probability:.2f}")
