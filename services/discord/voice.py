"""The character's voice in a Discord voice channel.

tts.chunk carries mono s16le at the voice's own rate; Discord wants 48 kHz stereo in
20 ms frames (3840 bytes), which discord.py's player encodes to Opus and sends. The
player is a thread that calls `read()` every 20 ms and stops for good on an empty frame,
so when there is nothing to say `SpeechSource` pauses it instead (one frame of silence,
then nothing: no silence streamed while idle), and new speech resumes it.
"""

import logging
import threading
from collections import deque
from collections.abc import Callable

import discord
import numpy as np
import soxr

log = logging.getLogger("marionette.discord")

DISCORD_RATE = 48_000
DISCORD_CHANNELS = 2
FRAME_MS = 20
FRAME_BYTES = DISCORD_RATE * FRAME_MS // 1000 * DISCORD_CHANNELS * 2  # 3840
SILENCE = bytes(FRAME_BYTES)


def to_discord_pcm(pcm: bytes, sample_rate: int) -> bytes:
    """Mono s16le at `sample_rate` as 48 kHz stereo s16le (the same sound on both sides)."""
    mono = np.frombuffer(pcm, dtype="<i2")
    if sample_rate != DISCORD_RATE and mono.size:
        mono = soxr.resample(mono, sample_rate, DISCORD_RATE, quality="HQ")
    return np.repeat(mono.astype("<i2"), DISCORD_CHANNELS).tobytes()


def frames_of(pcm48: bytes) -> list[bytes]:
    """20 ms frames; the last one padded with silence."""
    frames = [pcm48[i : i + FRAME_BYTES] for i in range(0, len(pcm48), FRAME_BYTES)]
    if frames and len(frames[-1]) < FRAME_BYTES:
        frames[-1] = frames[-1].ljust(FRAME_BYTES, b"\0")
    return frames


class SpeechSource(discord.AudioSource):
    """Frames queued per turn, read by discord.py's player thread.

    on_idle is called (in the player's thread) when the queue runs dry, on_speech when
    frames arrive after that: the voice client's pause and resume. Both are called under
    the queue's lock, so a frame fed while the player goes idle is never stranded."""

    def __init__(
        self,
        on_idle: Callable[[], object] = lambda: None,
        on_speech: Callable[[], object] = lambda: None,
    ) -> None:
        self._on_idle = on_idle
        self._on_speech = on_speech
        self._frames: deque[tuple[str, bytes]] = deque()
        self._lock = threading.Lock()
        self._idle = False

    @property
    def idle(self) -> bool:
        return self._idle

    def queued(self) -> int:
        """Frames waiting to be played."""
        with self._lock:
            return len(self._frames)

    def feed(self, turn_id: str, pcm: bytes, sample_rate: int) -> int:
        """Queue a tts chunk's audio; returns the frames queued."""
        frames = frames_of(to_discord_pcm(pcm, sample_rate))
        with self._lock:
            self._frames.extend((turn_id, frame) for frame in frames)
            if self._idle and self._frames:
                self._idle = False
                self._on_speech()
        return len(frames)

    def flush(self, turn_id: str | None = None) -> int:
        """Drop what is queued of a turn (every turn: None); returns the frames dropped."""
        with self._lock:
            before = len(self._frames)
            if turn_id is None:
                self._frames.clear()
            else:
                self._frames = deque(f for f in self._frames if f[0] != turn_id)
            return before - len(self._frames)

    def read(self) -> bytes:
        with self._lock:
            if self._frames:
                return self._frames.popleft()[1]
            if not self._idle:
                self._idle = True
                self._on_idle()
        return SILENCE  # never b"": that would end the player for good

    def is_opus(self) -> bool:
        return False  # PCM: discord.py's encoder makes the Opus packets


class VoiceSeat:
    """The bot in one voice channel at a time (the character has one voice), speaking what
    is fed while it is there."""

    def __init__(self, connect_timeout_s: float) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.client: discord.VoiceClient | None = None
        self.speech: SpeechSource | None = None

    @property
    def channel_id(self) -> int | None:
        if self.client is None or not self.client.is_connected():
            return None
        return self.client.channel.id

    async def join(self, channel: discord.VoiceChannel | discord.StageChannel) -> None:
        """Join (or move to) the channel; asyncio.TimeoutError when the handshake is not
        done within connect_timeout_s."""
        current = self.client
        if current is not None and current.is_connected():
            if current.guild.id == channel.guild.id:
                await current.move_to(channel, timeout=self.connect_timeout_s)
                return
            await self.leave()
        voice: discord.VoiceClient = await channel.connect(
            timeout=self.connect_timeout_s, self_deaf=True
        )
        speech = SpeechSource(on_idle=voice.pause, on_speech=voice.resume)
        voice.play(speech, after=self._player_ended)
        self.client, self.speech = voice, speech
        log.info("speaking in voice channel %s (%s)", channel.name, channel.id)

    async def leave(self) -> bool:
        """Leave the voice channel; False when not in one."""
        voice, self.client, self.speech = self.client, None, None
        if voice is None:
            return False
        voice.stop()
        await voice.disconnect(force=True)
        return True

    def feed(self, turn_id: str, pcm: bytes, sample_rate: int) -> None:
        if self.speech is not None:
            self.speech.feed(turn_id, pcm, sample_rate)

    def flush(self, turn_id: str | None = None) -> None:
        if self.speech is not None:
            self.speech.flush(turn_id)

    @staticmethod
    def _player_ended(error: Exception | None) -> None:
        if error is not None:
            log.error("the voice player stopped: %s", error)
