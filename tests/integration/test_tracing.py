"""How messages join traces, on a real Redis, with spans collected in memory.

Each topic's tracing mode (contracts.topics) decides: chat opens a trace, replies and
chunks continue it with spans, tokens carry it without spans, audio frames carry nothing.
"""

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

from contracts import AudioFrame, ChatMessage, PolicyToken, TtsChunk
from contracts.limits import AUDIO_FRAME_BYTES
from contracts.topics import AUDIO_FRAME, CHAT_MESSAGE, POLICY_TOKEN, TTS_CHUNK
from services.bus import BusSettings, Producer, Publishes, Stage, StageRuntime, consumes
from services.bus.partitions import stream_for
from services.bus.tracing import TURN_ATTRIBUTE
from services.bus.wire import StreamEntry, decode_entry
from tests.helpers import viewer_chat, wait_until

pytestmark = pytest.mark.integration

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans this test's stages make (one tracer provider for the test process)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def names(finished: tuple[ReadableSpan, ...]) -> list[str]:
    return sorted(span.name for span in finished)


async def headers_of(client: Redis, stream: str, topic: object) -> dict[str, object]:
    entry_id, fields = (await client.xrange(stream))[-1]
    return decode_entry(StreamEntry(stream, entry_id, fields), topic, 10**7).headers  # type: ignore[arg-type]


class PolicyLike(Stage):
    name = "policy-like"
    tokens = Publishes(POLICY_TOKEN)

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, chat: ChatMessage) -> None:
        for index in range(5):
            await self.tokens.publish(
                PolicyToken(
                    session_id=chat.session_id, turn_id=chat.turn_id, seq=index, index=index,
                    text="" if index == 4 else "word ", final=index == 4,
                    reply_text="word word word word" if index == 4 else None,
                    status="ok" if index == 4 else None,
                )
            )  # fmt: skip


class TtsLike(Stage):
    name = "tts-like"
    chunks = Publishes(TTS_CHUNK)

    @consumes(POLICY_TOKEN)
    async def on_token(self, token: PolicyToken) -> None:
        if token.final:
            await self.chunks.publish(
                TtsChunk(
                    session_id=token.session_id, turn_id=token.turn_id, seq=0, index=0,
                    final=True, text="word", sample_rate=22050, pcm=b"\0\0" * 100,
                )
            )  # fmt: skip


async def test_a_chat_turn_is_one_trace_and_tokens_make_no_spans(
    bus_settings: BusSettings, redis_client: Redis, spans: InMemorySpanExporter
) -> None:
    chunk_stream = stream_for(TTS_CHUNK, "s1", bus_settings.partitions)
    async with (
        StageRuntime(PolicyLike, bus_settings),
        StageRuntime(TtsLike, bus_settings),
        Producer(bus_settings, "chat-source", [CHAT_MESSAGE]) as outside,
    ):
        await outside.publish(viewer_chat("s1", 0))

        async def chunk_out() -> bool:
            return await redis_client.xlen(chunk_stream) == 1

        await wait_until(chunk_out, what="the chunk")

    finished = spans.get_finished_spans()
    # The chat opened the trace (its publisher was outside one); five tokens made no span.
    chat_stream = stream_for(CHAT_MESSAGE, "s1", bus_settings.partitions)
    token_stream = stream_for(POLICY_TOKEN, "s1", bus_settings.partitions)
    assert names(finished) == sorted(
        [
            f"{chat_stream} create",
            f"{chat_stream} publish",
            f"{chat_stream} process",
            f"{chunk_stream} create",
            f"{chunk_stream} publish",
        ]
    )
    assert not any(token_stream in span.name for span in finished)
    assert len({span.context.trace_id for span in finished}) == 1
    # The chunk, published while handling a token, hangs under the chat's handler span.
    by_id = {span.context.span_id: span for span in finished}
    create = next(s for s in finished if s.name == f"{chunk_stream} create")
    assert create.parent is not None
    assert by_id[create.parent.span_id].name == f"{chat_stream} process"
    handler = by_id[create.parent.span_id]
    assert handler.attributes is not None
    assert handler.attributes[TURN_ATTRIBUTE] == "t1"
    # Tokens carried the trace in their headers all the same.
    token_headers = await headers_of(redis_client, token_stream, POLICY_TOKEN)
    trace_hex = f"{create.context.trace_id:032x}"
    assert trace_hex in str(token_headers["traceparent"])


async def test_frames_and_untraced_messages_stay_out_of_traces(
    bus_settings: BusSettings, redis_client: Redis, spans: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("test")
    async with Producer(bus_settings, "frame-source", [AUDIO_FRAME, TTS_CHUNK]) as source:
        with tracer.start_as_current_span("an utterance"):
            await source.publish(
                AudioFrame(
                    session_id="s1",
                    message_id="run1:0",
                    seq=0,
                    pcm=b"\0" * AUDIO_FRAME_BYTES[1],
                    captured_at=1,
                )
            )
        # A chunk published outside any trace (like an avatar blink) starts none.
        await source.publish(
            TtsChunk(
                session_id="s1",
                turn_id="t",
                seq=0,
                index=0,
                final=True,
                text="",
                sample_rate=22050,
                pcm=b"",
            )
        )
    assert names(spans.get_finished_spans()) == ["an utterance"]
    frame_headers = await headers_of(
        redis_client, stream_for(AUDIO_FRAME, "s1", bus_settings.partitions), AUDIO_FRAME
    )
    chunk_headers = await headers_of(
        redis_client, stream_for(TTS_CHUNK, "s1", bus_settings.partitions), TTS_CHUNK
    )
    assert "traceparent" not in frame_headers
    assert "traceparent" not in chunk_headers
