"""twitch: the character's face in a Twitch channel's chat.

In: each chat line (EventSub channel.chat.message) goes out on chat.incoming, where the
arbiter chooses what the character answers. Lines that start with the command prefix are
commands, never chat: the broadcaster's and moderators' are carried out (control, or
scripted tokens for !say), anyone else's are ignored.
Out (reply_in_chat): the answer to a Twitch line (its chat.message turn, then the final
policy.token of that turn) is posted back as a reply to it, shortened for chat, within
the chat rate limit.

While the stage is switched off (a module toggle, a panic) chat is neither read in nor
answered, but commands still work, so a moderator can lift the panic they engaged.
"""

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from contracts import AsrFinal, ChatMessage, Control, Interrupt, PolicyToken
from contracts.envelope import Envelope
from contracts.policy import scripted_reply
from contracts.topics import ASR_FINAL, CHAT_INCOMING, CHAT_MESSAGE, CONTROL, POLICY_TOKEN
from services.bus import Bus, Checkpointed, Publishes, Stage, consumes
from services.bus.fencing import Fenced
from services.bus.stage import Publisher
from services.settings import load_settings
from services.twitch.chat_in import TwitchLine, derived_id, to_incoming
from services.twitch.chat_out import ChatRateLimit, shorten_for_chat
from services.twitch.commands import (
    BadCommand,
    Say,
    SendControl,
    Skip,
    is_command,
    may_command,
    parse_command,
)
from services.twitch.link import TwitchLink
from services.twitch.settings import TwitchSettings

log = logging.getLogger("marionette.twitch")

LINE_QUEUE = 1000
"""Chat lines waiting to be published; past this (Redis away for long) new ones are dropped."""
OWNER_WAIT_S = 5.0
"""How long after start a line waits for this replica to own its session's partition."""


class ChatLink(Protocol):
    """What the stage needs of Twitch (TwitchLink; a fake in unit tests)."""

    bot_id: str
    bot_login: str
    broadcaster_id: str
    can_write: bool

    async def run(self) -> None: ...
    async def send(self, text: str, reply_to: str | None) -> bool: ...


class ReplyTarget(BaseModel):
    """Where the answer to a turn goes: the Twitch line it answers."""

    platform_message_id: str
    channel: str | None = None


@dataclass
class _Newest:
    turn: str | None = None  # the session's newest turn seen (asr, chat, reply tokens)


def queue_line(lines: "asyncio.Queue[TwitchLine]", line: TwitchLine) -> None:
    try:
        lines.put_nowait(line)
    except asyncio.QueueFull:
        log.warning("twitch: %d lines wait already; dropped %s", lines.qsize(), line.message_id)


class TwitchStage(Stage):
    name = "twitch"
    incoming = Publishes(CHAT_INCOMING)
    control = Publishes(CONTROL)
    tokens = Publishes(POLICY_TOKEN)  # !say: the moderator's words, spoken as they are
    reply_targets = Checkpointed(ReplyTarget)  # per (session, turn) until its final token

    def __init__(
        self,
        settings: TwitchSettings,
        link: ChatLink,
        bus: Bus,
        lines: "asyncio.Queue[TwitchLine] | None" = None,
    ) -> None:
        super().__init__(bus)
        self.settings = settings
        self.link = link
        self.lines: asyncio.Queue[TwitchLine] = (
            lines if lines is not None else asyncio.Queue(LINE_QUEUE)
        )
        self.rate = ChatRateLimit(settings.chat_rate_messages, settings.chat_rate_window_s)
        self.newest = bus.memory(lambda session: _Newest())  # for !skip
        self._owner_wait_until = 0.0  # set when the background starts

    @classmethod
    async def build(cls, bus: Bus) -> "TwitchStage":
        settings = load_settings(TwitchSettings)
        lines: asyncio.Queue[TwitchLine] = asyncio.Queue(LINE_QUEUE)
        link = await TwitchLink.connect(settings, lambda line: queue_line(lines, line))
        return cls(settings, link, bus, lines)

    async def background(self) -> None:
        """The EventSub connection, and the lines it brings, until the stage stops."""
        self._owner_wait_until = asyncio.get_running_loop().time() + OWNER_WAIT_S
        async with asyncio.TaskGroup() as group:
            group.create_task(self.link.run(), name="twitch eventsub")
            group.create_task(self._read_lines(), name="twitch lines")

    async def _read_lines(self) -> None:
        while True:
            line = await self.lines.get()
            try:
                await self.handle_line(line)
            except Exception:
                log.exception("twitch: line %s failed", line.message_id)

    # --- chat in ------------------------------------------------------------------------

    async def handle_line(self, line: TwitchLine) -> None:
        if line.chatter_id == self.link.bot_id:
            return  # the character's own answers come back through EventSub too
        if is_command(line.text, self.settings.command_prefix):
            await self._command(line)
            return
        if self.bus.switched_off():
            log.debug("twitch: switched off; not reading %s", line.message_id)
            return
        message = to_incoming(
            line, session_id=self.settings.session_id, bot_id=self.link.bot_id,
            bot_login=self.link.bot_login,
        )  # fmt: skip
        if message is not None:
            await self._publish(self.incoming, message)

    async def _command(self, line: TwitchLine) -> None:
        if not may_command(line.badges, line.chatter_id, self.link.broadcaster_id):
            log.debug("twitch: %s is not a moderator; ignored %r", line.chatter_login, line.text)
            return
        try:
            action = parse_command(line.text, self.settings.command_prefix)
        except BadCommand as exc:
            log.info("twitch: %s: %s", line.chatter_login, exc)
            await self._post(str(exc), line.message_id)
            return
        session = self.settings.session_id
        origin = derived_id("cmd", line.message_id)  # a redelivered command is a duplicate
        if isinstance(action, SendControl):
            await self._publish(self.control, _control(session, origin, action.command))
        elif isinstance(action, Say):
            turn = derived_id("say", line.message_id)
            for token in scripted_reply(session, turn, action.text):
                await self._publish(self.tokens, token)
        elif isinstance(action, Skip):
            current = self.newest[session].turn
            if current is None:
                log.info("twitch: %s: nothing to skip", line.chatter_login)
                return
            command = Interrupt(target_turn_id=current, reason="twitch_skip")
            await self._publish(self.control, _control(session, origin, command))
        log.info("twitch: %s: %s", line.chatter_login, action.ack)
        await self._post(action.ack, line.message_id)

    async def _publish(self, publisher: Publisher[Any], message: Envelope) -> bool:
        """Publish from outside a handler. Only the owner of the session's partition may: a
        replica waits for it while it starts; later, one that does not own the session
        leaves the line to the replica that does (it reads the same chat)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await publisher.publish(message)
                return True
            except Fenced:
                if loop.time() > self._owner_wait_until:
                    log.debug("twitch: another replica owns session %s; %s left to it",
                              message.session_id, message.message_id)  # fmt: skip
                    return False
                await asyncio.sleep(0.1)

    # --- what the character is doing, and its answers ------------------------------------

    def _saw_turn(self, message: Envelope) -> None:
        if message.turn_id is not None:
            self.newest[message.session_id].turn = message.turn_id

    @consumes(ASR_FINAL, while_off=True)
    async def on_speech(self, final: AsrFinal) -> None:
        self._saw_turn(final)

    @consumes(CHAT_MESSAGE, while_off=True)
    async def on_chat(self, message: ChatMessage) -> None:
        self._saw_turn(message)
        ours = message.channel is None or message.channel == self.link.broadcaster_id
        if (
            self.settings.reply_in_chat and ours and message.platform == "twitch"
            and message.platform_message_id and message.turn_id
        ):  # fmt: skip
            target = ReplyTarget(platform_message_id=message.platform_message_id,
                                 channel=message.channel)  # fmt: skip
            self.reply_targets.save(message.session_id, message.turn_id, target)

    @consumes(POLICY_TOKEN, while_off=True)
    async def on_token(self, token: PolicyToken) -> None:
        self._saw_turn(token)
        if not token.final or token.turn_id is None:
            return
        target = await self.reply_targets.load(token.session_id, token.turn_id)
        if target is None:
            return
        self.reply_targets.forget(token.session_id, token.turn_id)
        text = (token.reply_text or "").strip()
        if token.status != "ok" or not text:
            log.debug("twitch: turn %s ended %s; nothing posted", token.turn_id, token.status)
            return
        if self.bus.switched_off():
            return
        await self._post(shorten_for_chat(text, self.settings.reply_max_chars),
                         target.platform_message_id)  # fmt: skip

    async def _post(self, text: str, reply_to: str | None) -> None:
        """Into chat, if answering in chat is on and the rate limit has room (else dropped)."""
        if not (self.settings.reply_in_chat and self.link.can_write):
            return
        if not self.rate.try_send():
            log.warning("twitch: chat rate limit (%d per %.0f s) reached, room again in "
                        "%.1f s; not posted: %r", self.settings.chat_rate_messages,
                        self.settings.chat_rate_window_s, self.rate.wait_s(), text)  # fmt: skip
            return
        await self.link.send(text, reply_to)


def _control(session: str, origin: str, command: Any) -> Control:
    return Control(session_id=session, message_id=f"{origin}:0", seq=0, command=command)
