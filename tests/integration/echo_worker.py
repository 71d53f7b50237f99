"""A stage process for the crash tests: echoes each input as a policy.token.

It records "<replica> <session> <seq>" in the Redis list `echo:started` before handling, so
a test knows when a message is in flight; --delay-s makes handling slow, and --crash-on SEQ
kills the process (SIGKILL) right after publishing that seq's output, before the ack.
"""

import argparse
import asyncio
import logging
import os
import signal

from redis.asyncio import Redis

from contracts import ChatMessage, Control, Envelope, PolicyToken
from contracts.topics import CHAT_MESSAGE, CONTROL, POLICY_TOKEN
from services.bus import Stage, StageRuntime, load_bus_settings

STARTED_LIST = "echo:started"


def build_stage(replica: str, delay_s: float, crash_on: int | None, client: Redis) -> Stage:
    stage = Stage("echo")
    replies = stage.publisher(POLICY_TOKEN)

    async def echo(msg: Envelope) -> None:
        await client.rpush(STARTED_LIST, f"{replica} {msg.session_id} {msg.seq}")
        await asyncio.sleep(delay_s)
        await replies.publish(
            PolicyToken(
                session_id=msg.session_id, turn_id=msg.turn_id or "t", seq=msg.seq,
                text=replica, index=msg.seq,
            )
        )  # fmt: skip
        if crash_on == msg.seq:
            os.kill(os.getpid(), signal.SIGKILL)

    @stage.consumer(CHAT_MESSAGE)
    async def on_chat(msg: ChatMessage) -> None:
        await echo(msg)

    @stage.consumer(CONTROL)
    async def on_control(msg: Control) -> None:
        await echo(msg)

    return stage


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replica", required=True)
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--crash-on", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("faststream").setLevel(logging.WARNING)
    settings = load_bus_settings()
    client: Redis = Redis.from_url(settings.redis_url or "")
    stage = build_stage(args.replica, args.delay_s, args.crash_on, client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await StageRuntime(stage, settings, replica_id=args.replica).run(stop)


if __name__ == "__main__":
    asyncio.run(main())
