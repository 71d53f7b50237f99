"""Turn rules: how turns are named, and which message says a turn is over.

A turn is one user utterance or chat message and the character's reply to it. Every tool
that waits for turns (record, replay, bench, chaos, the tests) asks these functions, so
they agree on when a turn has ended.
"""

from contracts.envelope import Envelope
from contracts.policy import PolicyToken
from contracts.tts import PlaybackProgress, TtsChunk

PLAYBACK_ENDS: frozenset[str] = frozenset({"finished", "flushed"})
"""playback.progress states after which nothing more of the turn is played.

"paused" is not one of them: a paused reply goes on (or is flushed) later."""


SUPERSEDED = "superseded"
"""The reason of an Interrupt that drops a preemptive turn: the user went on talking, so
the utterance continues as a new turn. Nothing of it was played; memory forgets it."""


def utterance_turn_id(capture_run: str, start_ms: int, attempt: int = 0) -> str:
    """The turn of an utterance that starts `start_ms` into a capture run's audio.

    Derived from the audio, so replaying the same frames gives the same turns, and a new
    capture run new ones. `attempt` counts the preemptive turns the utterance superseded
    (the user went on after a pause that sounded final)."""
    return f"{capture_run}.u{start_ms}" + (f"-{attempt}" if attempt else "")


def capture_run_of(turn_id: str) -> str | None:
    """The capture run an utterance's turn came from (None for a turn that is not one)."""
    run, sep, rest = turn_id.rpartition(".u")
    ms, _, attempt = rest.partition("-")
    return run if sep and ms.isdigit() and (not attempt or attempt.isdigit()) else None


def reply_ended(message: Envelope) -> bool:
    """The policy's final token: the reply is complete (whatever its status)."""
    return isinstance(message, PolicyToken) and message.final


def speech_ended(message: Envelope) -> bool:
    """tts's last chunk of the turn."""
    return isinstance(message, TtsChunk) and message.final


def playback_ended(message: Envelope) -> bool:
    """Playback is done with the turn: played to the end, or flushed by an interrupt."""
    return isinstance(message, PlaybackProgress) and message.state in PLAYBACK_ENDS


def ends_turn(message: Envelope, last_stage_topic: str) -> bool:
    """Whether `message` ends its turn for a system whose last stage publishes
    `last_stage_topic` (playback.progress, tts.chunk or policy.token)."""
    rule = {
        "playback.progress": playback_ended,
        "tts.chunk": speech_ended,
        "policy.token": reply_ended,
    }.get(last_stage_topic)
    return rule is not None and rule(message)
