"""Twitch chat commands: who may give them and what each one means."""

import pytest

from contracts.control import ModuleToggle, Panic, PersonaChange
from services.twitch.commands import (
    MUTE_MODULE,
    BadCommand,
    Say,
    SendControl,
    Skip,
    is_command,
    may_command,
    parse_command,
)


def control_of(text: str) -> object:
    action = parse_command(text, "!")
    assert isinstance(action, SendControl)
    return action.command


@pytest.mark.parametrize(
    ("badges", "chatter", "allowed"),
    [
        (["moderator"], "7", True),
        (["lead_moderator", "subscriber"], "7", True),
        (["broadcaster"], "1", True),
        ([], "1", True),  # the broadcaster's own id, whatever the badges say
        (["vip", "subscriber", "founder"], "7", False),
        ([], "7", False),
    ],
)
def test_only_the_broadcaster_and_moderators_command(
    badges: list[str], chatter: str, allowed: bool
) -> None:
    assert may_command(badges, chatter, broadcaster_id="1") is allowed


def test_a_command_starts_with_the_prefix() -> None:
    assert is_command("!panic", "!")
    assert is_command("  !panic", "!")
    assert not is_command("panic!", "!")
    assert is_command("?skip", "?")


def test_panic_on_and_off() -> None:
    assert control_of("!panic") == Panic(engaged=True)
    assert control_of("!panic on") == Panic(engaged=True)
    assert control_of("!PANIC off") == Panic(engaged=False)
    with pytest.raises(BadCommand):
        parse_command("!panic maybe", "!")


def test_mute_switches_the_voice_module() -> None:
    assert MUTE_MODULE == "tts"
    assert control_of("!mute") == ModuleToggle(module="tts", enabled=False)
    assert control_of("!unmute") == ModuleToggle(module="tts", enabled=True)


def test_persona_by_name() -> None:
    assert control_of("!persona grumpy_wizard") == PersonaChange(persona="grumpy_wizard")


def test_persona_edits_take_each_fields_type() -> None:
    change = control_of('!persona energy=0.9 family_friendly=off style="very calm" '
                        "expressions=happy,sad")  # fmt: skip
    assert change == PersonaChange(
        edits={
            "energy": 0.9,
            "family_friendly": False,
            "style": "very calm",
            "expressions": ["happy", "sad"],
        }
    )


def test_persona_name_and_edits_together() -> None:
    change = control_of("!persona kitsu chaos=0.8")
    assert change == PersonaChange(persona="kitsu", edits={"chaos": 0.8})


@pytest.mark.parametrize(
    "text",
    [
        "!persona",
        "!persona a b",  # two names
        "!persona ../etc",
        "!persona nonsense_field=1",
        "!persona energy=lots",
        "!persona family_friendly=perhaps",
        '!persona style="unclosed',
    ],
)
def test_bad_persona_commands_are_refused(text: str) -> None:
    with pytest.raises(BadCommand):
        parse_command(text, "!")


def test_say_keeps_the_words() -> None:
    assert parse_command("!say  Hello there, chat!  ", "!") == Say("Hello there, chat!")
    with pytest.raises(BadCommand):
        parse_command("!say", "!")


def test_skip_and_unknown() -> None:
    assert parse_command("!skip", "!") == Skip()
    with pytest.raises(BadCommand, match="unknown command !uptime"):
        parse_command("!uptime", "!")


def test_another_prefix() -> None:
    assert parse_command("~~mute", "~~") == SendControl(
        ModuleToggle(module="tts", enabled=False), "voice muted"
    )
