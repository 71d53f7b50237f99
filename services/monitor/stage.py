"""Consume every topic, print a line per message (audio frames summed per second)."""

import time
from collections import defaultdict

from rich.console import Console

from contracts import (
    AsrFinal,
    AsrPartial,
    AudioFrame,
    AvatarExpr,
    ChatMessage,
    Control,
    Envelope,
    PlaybackProgress,
    PolicyToken,
    SpeechEvent,
    TtsChunk,
)
from contracts import topics as t
from services.bus import Stage

stage = Stage("monitor")
console = Console(highlight=False)
_frames: dict[str, int] = defaultdict(int)
_last_frame_report = time.monotonic()


def show(topic: str, msg: Envelope, detail: str) -> None:
    turn = msg.turn_id or "-"
    console.print(f"[cyan]{topic:<12}[/] {msg.session_id}/{turn} #{msg.seq} {detail}")


@stage.consumer(t.AUDIO_FRAME)
async def on_audio(frame: AudioFrame) -> None:
    global _last_frame_report
    _frames[frame.session_id] += 1
    if time.monotonic() - _last_frame_report >= 1.0:
        for session, count in sorted(_frames.items()):
            console.print(f"[cyan]{'audio.frame':<12}[/] {session} {count} frames")
        _frames.clear()
        _last_frame_report = time.monotonic()


@stage.consumer(t.ASR_SPEECH)
async def on_speech(msg: SpeechEvent) -> None:
    show("asr.speech", msg, f"speech {msg.state} at {msg.at_s:.2f} s")


@stage.consumer(t.ASR_PARTIAL)
async def on_partial(msg: AsrPartial) -> None:
    show("asr.partial", msg, f"… {msg.text}")


@stage.consumer(t.ASR_FINAL)
async def on_final(msg: AsrFinal) -> None:
    show("asr.final", msg, f"{msg.text!r} ({msg.language}, {msg.confidence:.2f})")


@stage.consumer(t.CHAT_MESSAGE)
async def on_chat(msg: ChatMessage) -> None:
    show("chat", msg, f"{msg.platform}:{msg.author}: {msg.text}")


@stage.consumer(t.POLICY_TOKEN)
async def on_token(msg: PolicyToken) -> None:
    detail = f"final {msg.status}: {msg.reply_text!r}" if msg.final else repr(msg.text)
    show("policy.token", msg, detail)


@stage.consumer(t.TTS_CHUNK)
async def on_chunk(msg: TtsChunk) -> None:
    show("tts.chunk", msg, f"#{msg.index} {msg.duration_s:.2f} s {msg.text!r}")


@stage.consumer(t.PLAYBACK_PROGRESS)
async def on_progress(msg: PlaybackProgress) -> None:
    show("playback", msg, f"{msg.state} chunk {msg.chunk_index} at {msg.played_s:.2f} s")


@stage.consumer(t.AVATAR_EXPR)
async def on_expr(msg: AvatarExpr) -> None:
    show("avatar.expr", msg, f"{msg.state} {msg.expression} {len(msg.mouth_open)} frames")


@stage.consumer(t.CONTROL)
async def on_control(msg: Control) -> None:
    show("control", msg, msg.command.model_dump_json())
