"""Every publish names the entry its handler was handling, for hop timing."""

import time

import pytest
from redis.asyncio import Redis

from contracts import ChatMessage, PolicyToken
from contracts.topics import CHAT_MESSAGE, POLICY_TOKEN
from services.bus import BusSettings, Producer, Publishes, Stage, StageRuntime, consumes
from services.bus.causes import cause_from_headers
from services.bus.partitions import stream_for
from services.bus.wire import StreamEntry, decode_entry
from tests.helpers import viewer_chat, wait_until

pytestmark = pytest.mark.integration


class Replier(Stage):
    name = "replier"
    replies = Publishes(POLICY_TOKEN)

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, chat: ChatMessage) -> None:
        await self.replies.publish(
            PolicyToken(session_id=chat.session_id, turn_id=chat.turn_id, seq=0, text="hi", index=0)
        )


async def test_a_reply_names_the_message_it_answers(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    reply_stream = stream_for(POLICY_TOKEN, "s1", bus_settings.partitions)
    async with (
        StageRuntime(Replier, bus_settings),
        Producer(bus_settings, "outside", [CHAT_MESSAGE]) as outside,
    ):
        before = time.time()
        chat_id = await outside.publish(viewer_chat("s1", 0))
        assert chat_id is not None

        async def replied() -> bool:
            return await redis_client.xlen(reply_stream) == 1

        await wait_until(replied, what="the reply")

    chat_stream = stream_for(CHAT_MESSAGE, "s1", bus_settings.partitions)
    chat_entry = (await redis_client.xrange(chat_stream))[0]
    reply_id, fields = (await redis_client.xrange(reply_stream))[0]
    reply = decode_entry(StreamEntry(reply_stream, reply_id, fields), POLICY_TOKEN, 10**6)
    cause = cause_from_headers(reply.headers)
    assert cause is not None
    assert cause.stream == chat_stream
    assert cause.entry_id == chat_id.decode() == chat_entry[0].decode()
    # Read after it was added (entry ids have millisecond resolution), before the reply.
    assert cause.added_at - 0.001 <= cause.read_at <= int(reply_id.split(b"-")[0]) / 1000 + 0.001
    assert cause.read_at >= before - 0.001
    # A message published from outside any handler names no cause.
    chat_fields = chat_entry[1]
    chat = decode_entry(StreamEntry("x", chat_entry[0], chat_fields), CHAT_MESSAGE, 10**6)
    assert cause_from_headers(chat.headers) is None
