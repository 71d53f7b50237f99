"""A stage process for the crash tests: EchoStage echoes each input as a policy.token.

Its reply carries the input's session, turn and seq, and the replica's id as its text. It
records "<replica> <session> <seq>" in the Redis list `echo:started` before handling, so a
test knows when a message is in hand. Options:
  --delay-s S         handling takes S seconds (before the reply is published);
  --crash-after SEQ   SIGKILL right after publishing that seq's reply, before the ack;
  --crash-before SEQ  SIGKILL as soon as that seq is in hand, before anything is published
                      (a message that kills its consumer every time: poison).

Every replica reads every control message (broadcast); only the owner of the session's
partition may publish for it, so the others record the message and publish nothing.
"""

import argparse
import asyncio
import logging
import os
import signal

from redis.asyncio import Redis

from contracts import ChatMessage, Control, Envelope, PolicyToken
from contracts.topics import CHAT_MESSAGE, CONTROL, POLICY_TOKEN
from services.bus import Bus, Publishes, Stage, StageRuntime, consumes, load_bus_settings
from services.bus.connect import bus_client

STARTED_LIST = "echo:started"


class EchoStage(Stage):
    name = "echo"
    replies = Publishes(POLICY_TOKEN)

    def __init__(
        self,
        bus: Bus,
        client: Redis,
        *,
        delay_s: float = 0.0,
        crash_after: int | None = None,
        crash_before: int | None = None,
    ) -> None:
        super().__init__(bus)
        self.client = client
        self.delay_s = delay_s
        self.crash_after = crash_after
        self.crash_before = crash_before

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, message: ChatMessage) -> None:
        await self.echo(message)

    @consumes(CONTROL)
    async def on_control(self, message: Control) -> None:
        await self.echo(message)

    async def echo(self, message: Envelope) -> None:
        replica = self.bus.replica_id
        await self.client.rpush(STARTED_LIST, f"{replica} {message.session_id} {message.seq}")
        if self.crash_before == message.seq:
            os.kill(os.getpid(), signal.SIGKILL)
        await asyncio.sleep(self.delay_s)
        await self.replies.publish(
            PolicyToken(
                session_id=message.session_id, turn_id=message.turn_id or "t", seq=message.seq,
                text=replica, index=message.seq,
            )
        )  # fmt: skip
        if self.crash_after == message.seq:
            os.kill(os.getpid(), signal.SIGKILL)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replica", required=True)
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--crash-after", type=int, default=None)
    parser.add_argument("--crash-before", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("faststream").setLevel(logging.WARNING)
    settings = load_bus_settings()
    client: Redis = bus_client(settings)  # a cluster client on a Redis Cluster

    async def build(bus: Bus) -> EchoStage:
        return EchoStage(
            bus, client, delay_s=args.delay_s,
            crash_after=args.crash_after, crash_before=args.crash_before,
        )  # fmt: skip

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    runtime = StageRuntime(EchoStage, settings, replica_id=args.replica, build=build)
    try:
        await runtime.run(stop)
    finally:
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
