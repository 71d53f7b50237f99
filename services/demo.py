"""A short sample session for `marionette up --demo`: what the bus carries, end to end.

Until the hear/think/speak stages exist this stands in for them by publishing what they
would: a chat line, the reply's tokens, and one malformed entry that lands in dead letters.
"""

import asyncio

from contracts import ChatMessage, PolicyToken
from contracts.topics import CHAT_MESSAGE, POLICY_TOKEN
from services.bus import BusSettings, Stage, StageRuntime
from services.bus.partitions import stream_for

REPLY = ["Hello", " there", ",", " chat", "!"]


async def publish_sample_session(settings: BusSettings, session_id: str = "demo") -> None:
    stage = Stage("demo")
    chat = stage.publisher(CHAT_MESSAGE)
    tokens = stage.publisher(POLICY_TOKEN)
    async with StageRuntime(stage, settings) as runtime:
        await chat.publish(
            ChatMessage(
                session_id=session_id, turn_id="t1", seq=0,
                platform="cli", author="viewer", text="hi marionette!",
            )
        )  # fmt: skip
        for index, text in enumerate(REPLY):
            await asyncio.sleep(0.05)
            await tokens.publish(
                PolicyToken(session_id=session_id, turn_id="t1", seq=index, text=text, index=index)
            )
        await tokens.publish(
            PolicyToken(
                session_id=session_id, turn_id="t1", seq=len(REPLY), text="", index=len(REPLY),
                final=True, reply_text="".join(REPLY), status="ok", expressions=["happy"],
            )
        )  # fmt: skip
        # Not the envelope: every consumer of chat.message dead-letters it and carries on.
        await runtime.client.xadd(
            stream_for(CHAT_MESSAGE, session_id, settings.partitions),  # type: ignore[arg-type]
            {"text": "no envelope here"},
        )
