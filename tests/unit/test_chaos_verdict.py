"""The chaos verdict: how a turn's streams are judged, as a viewer would see them."""

from contracts import ChatMessage, Envelope, PlaybackProgress, PolicyToken, TtsChunk
from services.chaos.verdict import Published, SentTurn, first_of_each, judge

SENT = [SentTurn("chat", "s1", "t1", "hi", sent_at=0.0)]
REPLY = "Hello there! Nice to see you."


def chat() -> ChatMessage:
    return ChatMessage(session_id="s1", turn_id="t1", seq=0, platform="cli", author="a", text="hi")


def tokens(text: str = REPLY, *, final_seq: int | None = None) -> list[PolicyToken]:
    words = [w + " " for w in text.split()]
    out = [
        PolicyToken(session_id="s1", turn_id="t1", seq=i, index=i, text=w)
        for i, w in enumerate(words)
    ]
    end = len(words) if final_seq is None else final_seq
    out.append(
        PolicyToken(session_id="s1", turn_id="t1", seq=end, index=end, text="", final=True,
                    reply_text=text, status="ok")
    )  # fmt: skip
    return out


def chunks(*texts: str) -> list[TtsChunk]:
    return [
        TtsChunk(session_id="s1", turn_id="t1", seq=i, index=i, final=i == len(texts) - 1,
                 text=t, sample_rate=16_000, pcm=b"\0\0")
        for i, t in enumerate(texts)
    ]  # fmt: skip


def finished(seq: int = 0, state: str = "finished") -> PlaybackProgress:
    return PlaybackProgress(
        session_id="s1", turn_id="t1", seq=seq, chunk_index=0, played_s=1.0, state=state
    )  # type: ignore[arg-type]


def streams(*messages: Envelope) -> dict[str, list[Published]]:
    names = {
        ChatMessage: "chat.message", PolicyToken: "policy.token", TtsChunk: "tts.chunk",
        PlaybackProgress: "playback.progress",
    }  # fmt: skip
    found: dict[str, list[Published]] = {}
    for at, message in enumerate(messages):
        found.setdefault(names[type(message)], []).append(Published(message, float(at)))
    return found


def verdict(*messages: Envelope, playback: bool = True) -> tuple[str, str]:
    [report] = judge(SENT, streams(*messages), playback=playback)
    return report.verdict, report.why


def test_a_reply_spoken_and_played_once_is_answered_once() -> None:
    good = (chat(), *tokens(), *chunks("Hello there!", "Nice to see you."), finished())
    assert verdict(*good) == ("answered once", "")


def test_repeats_of_a_message_id_are_seen_once_as_a_consumer_would() -> None:
    good = (chat(), *tokens(), *chunks("Hello there!", "Nice to see you."), finished())
    again = (*good, *chunks("Hello there!", "Nice to see you."), finished())
    assert verdict(*again) == ("answered once", "")
    assert len(first_of_each(streams(*again)["tts.chunk"])) == 2


def test_nothing_after_the_question_is_lost() -> None:
    assert verdict(chat()) == ("lost", "no final reply")
    assert verdict() == ("lost", "never read")


def test_two_final_replies_are_answered_twice() -> None:
    twice = (chat(), *tokens(), *tokens(final_seq=99), *chunks(REPLY), finished())
    assert verdict(*twice)[0] == "answered twice"


def test_a_gap_a_missing_final_or_other_words_is_truncated() -> None:
    gap = chunks("Hello there!", "Nice to see you.")
    gap[1] = gap[1].model_copy(update={"index": 2, "seq": 2, "message_id": "t1:2"})
    assert verdict(chat(), *tokens(), *gap, finished()) == ("truncated", "chunk indexes [0, 2]")
    no_final = [c.model_copy(update={"final": False}) for c in chunks("Hello there!")]
    assert verdict(chat(), *tokens(), *no_final, finished())[0] == "truncated"
    cut = chunks("Hello there!", "Nice to")
    assert verdict(chat(), *tokens(), *cut, finished())[1].startswith("spoken")


def test_playback_must_finish_the_turn_exactly_once() -> None:
    spoken = (chat(), *tokens(), *chunks(REPLY))
    assert verdict(*spoken)[0] == "truncated"
    assert verdict(*spoken, playback=False) == ("answered once", "")
    flushed = (*spoken, finished(0, "flushed"))
    assert verdict(*flushed) == ("truncated", "playback ended ['flushed']")


def test_a_spoken_question_is_found_by_its_capture_run() -> None:
    sent = [SentTurn("speech", "mic", "chaos3", "how far is the moon?", sent_at=0.0)]
    heard = ChatMessage(
        session_id="mic", turn_id="chaos3.u300", seq=0, platform="cli", author="a", text="x"
    )
    [report] = judge(sent, streams(heard), playback=False)
    assert (report.turn_id, report.verdict) == ("chaos3.u300", "lost")
