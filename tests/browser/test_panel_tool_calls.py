"""The character's tool calls in the panel, in a real Chromium on a real gateway and Redis:
tool.event messages published as policy publishes them (services/policy/tools/runner.py:
a "call" event, then its "result"), beside the chat line and the reply of their turn.

What it proves: each call shows as a chip under its turn in Latest turns and in the
reply's line of the live transcript ("🎲 dice → Rolled a d20: 17. · 3 ms"), read back when
the page opens and followed live; a call waiting for its result shows as waiting and then
takes its result; refused, error and timeout are in the warning colour, ok is not; a turn
without tools has no chips; the result is text, never HTML. Screenshots go to
tests/browser/screenshots/.
"""

from collections.abc import AsyncIterator
from itertools import count
from typing import Any

import pytest

from contracts import ChatMessage
from contracts.policy import scripted_reply
from contracts.tools import ToolEvent, ToolOutcome
from contracts.topics import CHAT_MESSAGE, POLICY_TOKEN, TOOL_EVENT, Topic
from services.bus import BusSettings, Producer
from tests.browser.conftest import page_errors, screenshot_path
from tests.integration.gateway_fixtures import RunningGateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect

SESSION = "tools-show"
UI_TIMEOUT_MS = 10_000
_calls = count()


@pytest.fixture
async def policy(pages_bus: BusSettings) -> AsyncIterator[Producer]:
    """Speaks for the arbiter (chat lines) and policy (tool events, the reply)."""
    topics: list[Topic[Any]] = [CHAT_MESSAGE, TOOL_EVENT, POLICY_TOKEN]
    async with Producer(pages_bus, "policy", topics) as out:
        yield out


def chat(turn: str, text: str) -> ChatMessage:
    return ChatMessage(session_id=SESSION, turn_id=turn, seq=0, platform="twitch",
                       author="mia", text=text)  # fmt: skip


def tool_call(turn: str, tool: str, **arguments: Any) -> ToolEvent:
    call_id = f"c{next(_calls)}"
    return ToolEvent(
        session_id=SESSION, turn_id=turn, message_id=f"{turn}.tool-{call_id}:0", seq=0,
        call_id=call_id, tool=tool, phase="call", arguments=arguments,
    )  # fmt: skip


def result(call: ToolEvent, outcome: ToolOutcome, text: str, elapsed_ms: float) -> ToolEvent:
    error = text.removeprefix("error: ") if text.startswith("error: ") else ""
    return ToolEvent(
        session_id=SESSION, turn_id=call.turn_id, seq=1, call_id=call.call_id, tool=call.tool,
        message_id=f"{call.turn_id}.tool-{call.call_id}:1", phase="result", outcome=outcome,
        result=text, error=error, elapsed_ms=elapsed_ms,
    )  # fmt: skip


async def reply(out: Producer, turn: str, text: str) -> None:
    for token in scripted_reply(SESSION, turn, text):
        await out.publish(token)


async def colour(locator: Any) -> str:
    return str(await locator.evaluate("element => getComputedStyle(element).color"))


async def test_tool_calls_show_as_chips_under_their_turn(
    browser: Any, pages_gateway: RunningGateway, policy: Producer
) -> None:
    out = policy
    # A turn before the page opens: a dice roll, a scene switch a viewer may not make, and a
    # pick whose result holds markup.
    dice = tool_call("t1", "dice", sides=20)
    scene = tool_call("t1", "switch_scene", scene="Just chatting")
    pick = tool_call("t1", "choose", options=["<i>pizza</i>", "pasta"])
    await out.publish(chat("t1", "roll a d20 and show the chat scene"))
    refusal = "refused: a viewer's message may not change the stream"
    for event in (
        dice, scene, pick, result(dice, "ok", "Rolled a d20: 17.", 3.2),
        result(scene, "refused", refusal, 0.1), result(pick, "ok", "Picked: <i>pizza</i>.", 1),
    ):  # fmt: skip
        await out.publish(event)
    await reply(out, "t1", "A 17! Not bad at all.")
    await out.publish(chat("t0", "hello there"))  # a turn without tools
    await reply(out, "t0", "Hi!")

    ctx = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await ctx.new_page()
    errors = page_errors(page)
    await page.goto(f"{pages_gateway.url}/?session={SESSION}")

    # Read back: under the turn in Latest turns, and in the reply's transcript line.
    turn = page.locator("li.turn[data-turn='t1']")
    chips = turn.locator(".tool-call")
    await expect(chips).to_have_count(3, timeout=UI_TIMEOUT_MS)
    await expect(chips.nth(0)).to_have_text("🎲dice → Rolled a d20: 17. · 3 ms")
    await expect(chips.nth(0)).to_have_attribute("data-outcome", "ok")
    await expect(chips.nth(0)).to_have_attribute("title", "dice(sides=20) → Rolled a d20: 17.")
    await expect(chips.nth(1)).to_have_text(
        "🎬switch_scene → refused: a viewer's message may not change the stream · <1 ms"
    )
    await expect(chips.nth(1)).to_have_attribute("data-outcome", "refused")
    await expect(chips.nth(2)).to_have_text("🔀choose → Picked: <i>pizza</i>. · 1 ms")
    assert await page.locator(".tool-calls i").count() == 0  # the result's markup stayed text
    assert await colour(chips.nth(1)) != await colour(chips.nth(0))  # refused: the warning colour
    spoken = page.locator(f"#transcript li.character[data-key='{SESSION}/t1/out']")
    await expect(spoken.locator(".tool-call")).to_have_count(3)
    await expect(spoken.locator(".text")).to_have_text("A 17! Not bad at all.")
    await expect(page.locator("li.turn[data-turn='t0']")).to_be_visible()
    await expect(page.locator("li.turn[data-turn='t0'] .tool-call")).to_have_count(0)
    await expect(page.locator("li.turn[data-turn='t0'] .tool-calls")).to_be_hidden()  # no space

    # Live: a call waits for its result, then times out; another one fails.
    await out.publish(chat("t2", "what time is it, and pick a game"))
    clock = tool_call("t2", "time")
    await out.publish(clock)
    waiting = page.locator("li.turn[data-turn='t2'] .tool-call")
    await expect(waiting).to_have_count(1, timeout=UI_TIMEOUT_MS)
    await expect(waiting).to_have_attribute("data-outcome", "pending")
    await expect(waiting).to_have_text("🕒time …")
    await out.publish(result(clock, "timeout", "error: time did not answer within 2 s", 2001))
    await expect(waiting).to_have_text("🕒time → timeout: time did not answer within 2 s · 2.0 s")
    await expect(waiting).to_have_attribute("data-outcome", "timeout")
    pick = tool_call("t2", "choose", options=[])
    await out.publish(pick)
    await out.publish(result(pick, "error", "error: bad arguments: options: too short", 0.4))
    live = page.locator("li.turn[data-turn='t2'] .tool-call")
    await expect(live).to_have_count(2)
    await expect(live.nth(1)).to_have_text(
        "🔀choose → error: bad arguments: options: too short · <1 ms"
    )
    assert await colour(live.nth(1)) == await colour(live.nth(0)) == await colour(chips.nth(1))
    await reply(out, "t2", "I lost track of time. Let's just play chess.")
    await expect(
        page.locator(f"#transcript li.character[data-key='{SESSION}/t2/out'] .tool-call")
    ).to_have_count(2, timeout=UI_TIMEOUT_MS)

    turns_card = page.locator("section.turns")
    transcript = page.locator("section.live")
    await page.wait_for_timeout(300)
    await turns_card.screenshot(path=str(screenshot_path("panel-tools-turns.png")))
    await transcript.screenshot(path=str(screenshot_path("panel-tools-transcript.png")))
    await page.emulate_media(color_scheme="dark")
    await turns_card.screenshot(path=str(screenshot_path("panel-tools-turns-dark.png")))
    await transcript.screenshot(path=str(screenshot_path("panel-tools-transcript-dark.png")))
    await page.emulate_media(color_scheme="light")
    await page.set_viewport_size({"width": 390, "height": 844})
    await turns_card.screenshot(path=str(screenshot_path("panel-tools-turns-390.png")))
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await ctx.close()
    assert errors == []
