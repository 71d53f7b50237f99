"""The tools every character has: the time, chance, a face, a scene, memory, its eyes."""

import random
import re
from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from contracts.control import SceneSwitch
from services.memory.items import MemoryItem
from services.policy.tools.declared import Tool, ToolContext, ToolError

Short = Annotated[str, StringConstraints(min_length=1, max_length=200)]
VIEW_FRESH_S = 300
LOCAL_ZONE_NAMES = ("local", "none", "default", "here")
"""What small models write when they mean no zone in particular."""
"""An observation older than this is not described as what the character sees now."""


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


_A_PLACE = re.compile(
    r"\b(in|for|at)\s+(?!your\b|you\b|the\b|here\b|my\b)[a-z]|\b(utc|gmt|time ?zone)\b", re.I
)


def names_a_place(said: str) -> bool:
    """Whether the line asks for the time somewhere ("in Tokyo", "UTC"). Small models put a
    zone in every call; one the line did not ask for is not used."""
    return not said or _A_PLACE.search(said) is not None


class TimeArgs(_Args):
    timezone: str | None = Field(
        default=None,
        description="An IANA time zone, only if the user names a place; else leave it out.",
    )


async def tell_time(args: TimeArgs, ctx: ToolContext) -> str:
    now = ctx.now()
    if args.timezone and args.timezone.lower() not in LOCAL_ZONE_NAMES and names_a_place(ctx.said):
        try:
            now = now.astimezone(ZoneInfo(args.timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(f"unknown time zone {args.timezone!r}") from None
    zone = now.tzname() or "local time"
    return f"It is {now:%H:%M} on {now:%A, %d %B %Y} ({zone})."


class DiceArgs(_Args):
    sides: int = Field(default=6, ge=2, le=1000, description="Sides of each die.")
    count: int = Field(default=1, ge=1, le=20, description="How many dice.")


async def roll_dice(args: DiceArgs, ctx: ToolContext) -> str:
    chance = random.Random(f"{ctx.seed}:dice:{args.sides}:{args.count}")
    rolls = [chance.randint(1, args.sides) for _ in range(args.count)]
    if len(rolls) == 1:
        return f"Rolled a d{args.sides}: {rolls[0]}."
    return f"Rolled {args.count}d{args.sides}: {', '.join(map(str, rolls))} (total {sum(rolls)})."


class ChooseArgs(_Args):
    options: list[Short] = Field(min_length=2, max_length=20, description="What to pick from.")


async def choose(args: ChooseArgs, ctx: ToolContext) -> str:
    chance = random.Random(f"{ctx.seed}:choose:{'|'.join(args.options)}")
    return f"Picked: {chance.choice(args.options)}."


class ExpressionArgs(_Args):
    expression: Annotated[str, StringConstraints(min_length=1, max_length=32)] = Field(
        description="One of the character's expressions, e.g. happy, surprised."
    )


async def set_expression(args: ExpressionArgs, ctx: ToolContext) -> str:
    wanted = args.expression.strip().lower()
    if wanted not in ctx.expressions:
        raise ToolError(f"no expression {wanted!r}; there are: {', '.join(ctx.expressions)}")
    ctx.express(wanted)
    return f"Now showing: {wanted}."


class SceneArgs(_Args):
    scene: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="The OBS scene to show."
    )


async def switch_scene(args: SceneArgs, ctx: ToolContext) -> str:
    await ctx.control(SceneSwitch(scene=args.scene))
    return f"Asked OBS to show the scene {args.scene!r}."


class RememberArgs(_Args):
    fact: Annotated[str, StringConstraints(min_length=1, max_length=500)] = Field(
        description="What to remember, in a short sentence."
    )


async def remember(args: RememberArgs, ctx: ToolContext) -> str:
    if ctx.long_term is None or not ctx.scopes:
        raise ToolError("long-term memory is off")
    who = f"{ctx.author} asked to remember: " if ctx.author else ""
    text = who + args.fact
    item = MemoryItem(
        id=MemoryItem.make_id(ctx.scopes[0], "note", text, ctx.turn_id), scope=ctx.scopes[0],
        kind="note", text=text, author=ctx.author, session_id=ctx.session_id,
        turn_id=ctx.turn_id,
    )  # fmt: skip
    await ctx.long_term.remember([item])
    return f"Remembered: {args.fact}"


class RecallArgs(_Args):
    query: Short = Field(description="What to look for in memory.")


async def recall(args: RecallArgs, ctx: ToolContext) -> str:
    if ctx.long_term is None or not ctx.scopes:
        raise ToolError("long-term memory is off")
    found = await ctx.long_term.recall(ctx.scopes, args.query, author=ctx.author, limit=5)
    if not found.hits:
        return "Nothing in memory about that."
    return "\n".join(f"- {hit.item.text}" for hit in found.hits)


class ViewArgs(_Args):
    pass


async def describe_view(args: ViewArgs, ctx: ToolContext) -> str:
    seen = await ctx.latest_view()
    if seen is None:
        return "No camera or picture: nothing to see right now."
    age_s = (ctx.now().astimezone(UTC) - seen.created_at).total_seconds()
    if age_s > VIEW_FRESH_S:
        return f"Nothing recent: the last picture is {age_s / 60:.0f} minutes old."
    return seen.description


BUILTIN_TOOLS: tuple[Tool, ...] = (
    Tool("time", "The current time and date.", TimeArgs, tell_time, says_result=True,
         examples=(
        "what time is it?", "what's the date today?", "what day is it", "is it late where "
        "you are?", "what time is it in Tokyo?")),
    Tool("dice", "Roll dice: sides and count.", DiceArgs, roll_dice, says_result=True,
         examples=(
        "roll a die", "roll a d20", "throw two dice for me", "roll 3d6", "give me a dice "
        "roll")),
    Tool("choose", "Pick one of several options at random.", ChooseArgs, choose,
         says_result=True, examples=(
        "pick one at random: red or blue", "randomly choose between chess and poker",
        "flip a coin: heads or tails", "decide for me: stay or go", "spin the wheel: "
        "Mario, Zelda or Kirby")),
    Tool("set_expression", "Show an expression on the avatar.", ExpressionArgs,
         set_expression, examples=(
        "make a happy face", "look sad", "show me your angry face", "can you look "
        "surprised?", "smile for the camera")),
    Tool("switch_scene", "Switch the stream's OBS scene.", SceneArgs, switch_scene,
         acts_on_stream=True, examples=(
        "switch to the gaming scene", "change the scene to just chatting", "go to the BRB "
        "screen", "show the starting soon scene")),
    Tool("remember", "Keep a fact in long-term memory.", RememberArgs, remember, examples=(
        "remember that my birthday is in May", "please don't forget my name is Sam",
        "keep in mind that I'm vegetarian", "note that I play the drums")),
    Tool("recall", "Search long-term memory.", RecallArgs, recall, examples=(
        "what do you remember about me?", "do you remember my name?", "what did I tell you "
        "last time?", "what do you know about me?")),
    Tool("describe_view", "Describe what the camera sees now.", ViewArgs, describe_view,
         says_result=True, examples=(
        "what do you see?", "look at the camera", "what's in front of you right now?",
        "describe what you see", "can you see me?")),
)  # fmt: skip


def now_local() -> datetime:
    return datetime.now().astimezone()
