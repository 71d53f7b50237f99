"""Limits every message is validated against. Producers and consumers share these numbers."""

from typing import Final

SCHEMA_VERSION: Final = 3
"""Bumped on any change that an older consumer would misread.

2: control takes Pause; playback.progress adds "paused", level_dbfs and heard_text.
3: every message has a message_id; audio frames carry their capture run there instead of in
   turn_id, and the last frame of an input says so (end_of_input); playback.progress says
   how much of the chunk is left to play (remaining_s).
   Later, still 3 (optional additions, absent means as before): chat.message may name a
   persona file to answer as (persona) and come from platform "gateway"; control takes
   MemoryClear and MemoryRestore; chat.message carries platform fields (author_id,
   platform_message_id, reply_to, channel, emotes, mentions_character, read_aloud); new
   topics chat.incoming, arbiter.decision and moderation; asr.final may be preemptive
   (a reply prepared before the end of turn is certain; Interrupt reason "superseded");
   control takes MemoryForget; new topics tool.event and vision.observation.
   A consumer older than these rejects such a message (extra fields are forbidden), so
   upgrade policy before the gateway or a platform stage sends them.
"""
PREVIOUS_SCHEMA_VERSION: Final = SCHEMA_VERSION - 1
"""Readers accept this version too (upgrading it in memory), so stages upgrade one at a time."""

# audio.frame: 16 kHz mono s16le, 10/20/30 ms per frame (what webrtcvad accepts).
AUDIO_SAMPLE_RATE: Final = 16_000
AUDIO_CHANNELS: Final = 1
AUDIO_SAMPLE_WIDTH: Final = 2
AUDIO_FRAME_MS: Final = (10, 20, 30)
AUDIO_FRAME_BYTES: Final = tuple(
    AUDIO_SAMPLE_RATE * AUDIO_SAMPLE_WIDTH * ms // 1000 for ms in AUDIO_FRAME_MS
)
MAX_AUDIO_FRAME_BYTES: Final = max(AUDIO_FRAME_BYTES)

# tts.chunk: one sentence or clause of synthesized speech.
TTS_SAMPLE_RATES: Final = (8_000, 16_000, 22_050, 24_000, 44_100, 48_000)
MAX_TTS_CHUNK_SECONDS: Final = 30
MAX_TTS_CHUNK_BYTES: Final = 48_000 * AUDIO_SAMPLE_WIDTH * MAX_TTS_CHUNK_SECONDS
MAX_ALIGNMENTS: Final = 4_000

# Text caps, in characters.
MAX_ID_CHARS: Final = 64
MAX_MESSAGE_ID_CHARS: Final = 160
MAX_TRANSCRIPT_CHARS: Final = 4_000
MAX_CHAT_CHARS: Final = 2_000
MAX_AUTHOR_CHARS: Final = 64
MAX_BADGES: Final = 16
MAX_EMOTES: Final = 32
MAX_REASON_CHARS: Final = 200
MAX_QUEUE_SHOWN: Final = 20
MAX_TOKEN_CHARS: Final = 256
MAX_REPLY_CHARS: Final = 8_000
MAX_EXPRESSIONS: Final = 16
MAX_TAG_CHARS: Final = 32

# avatar.expr: one mouth-open value per video frame.
AVATAR_FPS: Final = (30, 60)
MAX_MOUTH_FRAMES: Final = 60 * MAX_TTS_CHUNK_SECONDS

# Default stream lengths (MAXLEN ~), overridable per topic in settings.
DEFAULT_MAXLEN: Final = 10_000
AUDIO_FRAME_MAXLEN: Final = 50 * 60 * 10  # ten minutes of 20 ms frames
