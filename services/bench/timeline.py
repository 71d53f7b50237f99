"""One turn's voice-to-voice latency, taken apart from what the streams hold.

Every message a stage publishes names the entry it was handling (services.bus.causes).
Following those links back from the reply's first tts.chunk gives, for each stage, when
its input was added to Redis, when the stage read it, and when its output was added:

    end of speech -> frame that closed the utterance added   endpointing wait
    -> asr read it                                           bus hop
    -> asr.final added                                       ASR final
    -> policy read it                                        bus hop
    -> first policy.token added                              LLM first token
    -> the token that completed the first unit added         first speakable unit
    -> tts read it                                           bus hop
    -> first tts.chunk added                                 TTS first audio
    -> the end of turn (asr.speech "end") added, if later    held for end of turn

The first audio is ready to play once both it and the end of turn are there: a
preemptive reply (asr.final sent at the first pause that sounded final) is held by
playback until the end of turn. The parts add up to the total exactly, because each ends
where the next begins; "endpointing wait" is then the pause before the transcript began.
"""

from dataclasses import dataclass

from services.bus.causes import Cause

PARTS = (
    "endpointing wait",
    "hop audio.frame -> asr",
    "ASR final",
    "hop asr.final -> policy",
    "LLM first token",
    "first speakable unit",
    "hop policy.token -> tts",
    "TTS first audio",
    "held for end of turn",
)


@dataclass(frozen=True)
class Published:
    """A message as the bench saw it on its stream."""

    added_at: float  # from its entry id
    cause: Cause | None


class BrokenChain(ValueError):
    """A message lacks the cause headers (published outside a handler, or by an old build)."""


def _cause(message: Published, what: str) -> Cause:
    if message.cause is None:
        raise BrokenChain(f"{what} carries no cause headers")
    return message.cause


def breakdown(
    speech_end_at: float,
    final: Published,
    first_token: Published,
    first_chunk: Published,
    end_of_turn: Published,
) -> dict[str, float]:
    """Seconds per part, and 'voice-to-voice' (their sum), for one turn."""
    heard = _cause(final, "asr.final")
    asked = _cause(first_token, "the first policy.token")
    spoken = _cause(first_chunk, "the first tts.chunk")
    parts = dict(
        zip(
            PARTS,
            (
                heard.added_at - speech_end_at,
                heard.read_at - heard.added_at,
                final.added_at - heard.read_at,
                asked.read_at - final.added_at,
                first_token.added_at - asked.read_at,
                spoken.added_at - first_token.added_at,
                spoken.read_at - spoken.added_at,
                first_chunk.added_at - spoken.read_at,
                max(0.0, end_of_turn.added_at - first_chunk.added_at),
            ),
            strict=True,
        )
    )
    parts["bus hops"] = sum(v for k, v in parts.items() if k.startswith("hop "))
    ready_at = max(first_chunk.added_at, end_of_turn.added_at)
    parts["voice-to-voice"] = ready_at - speech_end_at
    return parts


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]
