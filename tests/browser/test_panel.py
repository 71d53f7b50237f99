"""The control panel (`/`) in a real Chromium, on a real gateway and a real Redis.

Each control is used as a person would (click, type, keys) and checked where it matters:
on the bus (control, chat.message, policy.token, the dead-letter stream), not only on the
page. Stages behind the gateway: a tts with a fake voice, playback to WAV files and a
picky chat reader (so dead letters happen), all in this process; and, for the browser
microphone conversation, asr, policy and tts with the real models under `marionette up`,
on a Redis of their own.

Screenshots go to tests/browser/screenshots/ (their paths are printed).
"""

import asyncio
import base64
import re
import time
import wave
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import pytest
import redis
import soxr
from redis.asyncio import Redis

from contracts import ChatMessage, Control, ModuleToggle, Panic, PersonaChange, PolicyToken
from contracts.speech import AsrFinal
from contracts.topics import ASR_FINAL, CHAT_MESSAGE, CONTROL, POLICY_TOKEN, TTS_CHUNK
from contracts.tts import TtsChunk
from services.asr.recognizer import FasterWhisperRecognizer
from services.asr.settings import AsrSettings
from services.bus import (
    Bus,
    BusSettings,
    Producer,
    StageRuntime,
    load_bus_settings,
)
from services.bus.dead_letters import list_dead_letters
from services.bus.partitions import stream_for
from services.bus.redis_server import EmbeddedRedis
from services.bus.wire import REDRIVEN_FIELD
from services.capture.stage import SAMPLE_CONVERSATION
from services.playback.settings import PlaybackSettings
from services.playback.sinks import WavSink
from services.playback.stage import PlaybackStage
from services.tts.normalize import normalize_for_speech
from services.tts.settings import TtsSettings
from services.tts.stage import TtsStage
from services.tts.synthesizer import Speech
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, page_errors, screenshot_path
from tests.helpers import read_topic, wait_until, word_error_rate
from tests.integration.gateway_fixtures import (
    OPERATOR_KEY,
    READ_KEY,
    RunningGateway,
    running_gateway,
)
from tests.integration.test_gateway_dead_letters import Picky
from tests.regression.pipeline import replay_stages

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect

RATE = 16_000
QUESTION = "Hello Marionette, how are you today?"
"""The sample's first line, 0.5 to 2.5 s into it."""
REPLY_WER = 0.3
REPLY_TIMEOUT_S = 300.0
"""asr, the LLM and Piper share two cores with the browser: minutes, not seconds."""
UI_TIMEOUT_MS = 10_000


# --- stand-in stages ------------------------------------------------------------------------


class FakeVoice:
    """A quiet 220 Hz hum, 30 ms per character: a chunk's length shows its text."""

    sample_rate = RATE

    def synthesize(self, text: str) -> Speech:
        t = np.arange(int(RATE * 0.03 * max(1, len(text)))) / RATE
        hum = (0.1 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes()
        return Speech(hum, RATE, [])


@dataclass
class Stack:
    """A gateway with stand-in stages on the module's Redis."""

    gateway: RunningGateway
    bus: BusSettings
    client: Redis
    picky: StageRuntime[Picky]

    async def messages(self, topic: Any) -> list[Any]:
        return await read_topic(self.client, topic, self.bus.partitions)

    async def controls(self) -> list[Any]:
        return [m.command for m in await self.messages(CONTROL) if isinstance(m, Control)]

    async def status(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.gateway.url) as http:
            answer = await http.get("/api/status")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake microphone: 1 s of silence, the sample's first question, then silence (the
    browser plays it from when the page opens the microphone)."""
    with wave.open(str(SAMPLE_CONVERSATION)) as sample:
        assert sample.getframerate() == RATE
        audio = np.frombuffer(sample.readframes(sample.getnframes()), dtype="<i2")
    question = audio[int(0.5 * RATE) : int(2.5 * RATE)]
    silence = np.zeros(RATE, dtype="<i2")
    path = tmp_path_factory.mktemp("fake-mic") / "question.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(np.concatenate([silence, question, *[silence] * 90]).tobytes())
    return path


@pytest.fixture(scope="module")
async def mic_browser(question_wav: Path) -> AsyncIterator[Any]:
    """A Chromium whose (fake) microphone says the question, granted without asking."""
    if not CHROMIUM.exists():  # the only reason to skip: the tests need a browser
        pytest.skip(f"no Chromium at {CHROMIUM}")
    async with playwright_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                *CHROMIUM_ARGS,
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={question_wav}%noloop",
            ],
        )
        yield launched
        await launched.close()


@pytest.fixture(scope="module")
def bus(redis_server_url: str) -> BusSettings:
    """The module's Redis, emptied once: the stages live for the whole module. Short
    retries, so a failing message is dead-lettered within a second."""
    with redis.Redis.from_url(redis_server_url) as client:
        client.flushall()
    return load_bus_settings(redis_url=redis_server_url, partitions=2, retry_backoff_ms=20)


@pytest.fixture(scope="module")
async def stack(bus: BusSettings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    wav_dir = tmp_path_factory.mktemp("playback")

    async def tts(stage_bus: Bus) -> TtsStage:
        return TtsStage(TtsSettings(), FakeVoice(), stage_bus)

    async def playback(stage_bus: Bus) -> PlaybackStage:
        return PlaybackStage(PlaybackSettings(), WavSink(wav_dir, realtime=True), stage_bus)

    async with AsyncExitStack() as stack:
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.delenv("MARIONETTE_GATEWAY_OPERATOR_KEY", raising=False)
        gateway = await stack.enter_async_context(running_gateway(bus, patch))
        await stack.enter_async_context(StageRuntime(TtsStage, bus, build=tts))
        await stack.enter_async_context(StageRuntime(PlaybackStage, bus, build=playback))
        picky = await stack.enter_async_context(StageRuntime(Picky, bus))
        client: Redis = Redis.from_url(bus.redis_url or "")
        stack.push_async_callback(client.aclose)
        yield Stack(gateway, bus, client, picky)


async def open_panel(browser: Any, url: str, **context: Any) -> tuple[Any, Any, list[str]]:
    """A fresh page on the panel; and its errors (uncaught, and console errors)."""
    ctx = await browser.new_context(**{"viewport": {"width": 1440, "height": 900}, **context})
    page = await ctx.new_page()
    errors = page_errors(page)
    await page.goto(url)
    return ctx, page, errors


@pytest.fixture
async def page(browser: Any, stack: Stack) -> AsyncIterator[Any]:
    ctx, opened, errors = await open_panel(browser, stack.gateway.url + "/")
    await opened.wait_for_selector("body[data-status-at]", timeout=UI_TIMEOUT_MS)
    yield opened
    await ctx.close()
    assert errors == [], "the page had errors"


async def on_bus(condition: Any, what: str, timeout_s: float = 10) -> None:
    """Waits for what a click should have put on the bus."""
    await wait_until(condition, timeout_s, what)


# --- the controls change the system -------------------------------------------------------------


async def test_switching_persona_and_moving_sliders_send_persona_changes(
    page: Any, stack: Stack
) -> None:
    await page.select_option("#persona-select", "grumpy")
    await page.click("#persona-switch button")

    async def switched() -> bool:
        return any(isinstance(c, PersonaChange) and c.persona == "grumpy"
                   for c in await stack.controls())  # fmt: skip

    await on_bus(switched, "the persona switch on the control stream")
    await expect(page.locator("#persona-note")).to_contain_text("Sent: switch to grumpy")
    await expect(page.locator("#persona-name")).to_have_text("Grum")  # as it will be

    # The energy slider, by keyboard: two steps up send one change (of the final value).
    energy = page.locator("#energy")
    before = float(await energy.input_value())
    await energy.focus()
    await page.keyboard.press("ArrowRight")
    await page.keyboard.press("ArrowRight")
    wanted = round(min(1.0, before + 0.1), 2)

    async def edits() -> list[dict[str, Any]]:
        return [dict(c.edits) for c in await stack.controls()
                if isinstance(c, PersonaChange) and c.edits]  # fmt: skip

    async def energy_sent() -> bool:
        return any(e.get("energy") == pytest.approx(wanted) for e in await edits())

    try:
        await on_bus(energy_sent, f"energy {wanted} on the control stream")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; sent {await edits()} from {before}") from None
    assert len([e for e in await edits() if "energy" in e]) == 1, "one change, not one a key"
    await expect(page.locator("#energy-value")).to_have_text(f"{wanted:.2f}")
    await expect(page.locator("#persona-note")).to_contain_text("Sent: energy")
    await expect(page.locator("#persona-name")).to_have_text("Grum")  # both changes shown

    await page.locator("#family-friendly").click()

    async def family_sent() -> bool:
        return any(e == {"family_friendly": False} for e in await edits())

    await on_bus(family_sent, "family_friendly off on the control stream")


async def test_muting_a_module_and_panic_and_lifting_it(page: Any, stack: Stack) -> None:
    tts = page.locator("#module-tts")
    await expect(tts).to_be_checked()
    await tts.click()

    async def toggled(enabled: bool) -> bool:
        return any(isinstance(c, ModuleToggle) and (c.module, c.enabled) == ("tts", enabled)
                   for c in await stack.controls())  # fmt: skip

    await on_bus(lambda: toggled(False), "tts switched off on the control stream")
    await wait_until(
        lambda: _status_says(stack, lambda s: s["modules"]["tts"] is False), 10, "tts off"
    )
    await expect(tts).not_to_be_checked()
    await expect(page.locator("li:has(#module-tts) .state")).to_have_text("off")
    # Back on with the keyboard (a switch toggles on Space).
    await tts.focus()
    await page.keyboard.press("Space")
    await on_bus(lambda: toggled(True), "tts switched on again")

    await page.click("#panic")

    async def panic(engaged: bool) -> bool:
        return any(isinstance(c, Panic) and c.engaged is engaged for c in await stack.controls())

    await on_bus(lambda: panic(True), "panic on the control stream")
    await expect(page.locator("#panic-pill")).to_be_visible()
    await expect(page.locator(".panic-engaged")).to_contain_text("Panic is engaged")
    await expect(page.locator("#lift-panic")).to_be_focused()  # focus follows the button
    await wait_until(lambda: _status_says(stack, lambda s: s["panic"] is True), 10, "panic")
    await expect(page.locator("li:has(#module-tts) .state")).to_have_text("off (panic)")
    await expect(page.locator("li:has(#module-monitor) .state")).to_have_text("on")  # exempt
    engaged = screenshot_path("panel-panic.png")
    await page.locator("section.safety").screenshot(path=str(engaged))
    print(f"\nscreenshot: {engaged}")

    await page.keyboard.press("Enter")  # lifts it
    await on_bus(lambda: panic(False), "panic lifted on the control stream")
    await expect(page.locator("#panic")).to_be_visible()
    await expect(page.locator("#panic-pill")).to_be_hidden()
    await wait_until(lambda: _status_says(stack, lambda s: s["panic"] is False), 10, "lifted")


async def _status_says(stack: Stack, check: Any) -> bool:
    return bool(check(await stack.status()))


async def test_say_and_chat_go_out_and_show_in_the_transcript(page: Any, stack: Stack) -> None:
    await page.fill("#say-text", "Hello from the panel!")
    await page.press("#say-text", "Enter")

    async def said() -> bool:
        return any(isinstance(t, PolicyToken) and t.final and t.session_id == "local"
                   and t.reply_text == "Hello from the panel!"
                   for t in await stack.messages(POLICY_TOKEN))  # fmt: skip

    await on_bus(said, "the said words on policy.token")

    await page.fill("#chat-author", "mod")
    await page.fill("#chat-text", "What game is this?")
    await page.click("#chat-form button[type=submit]")

    async def chatted() -> bool:
        return any(isinstance(c, ChatMessage) and (c.author, c.text, c.platform, c.session_id)
                   == ("mod", "What game is this?", "control_panel", "local")
                   for c in await stack.messages(CHAT_MESSAGE))  # fmt: skip

    await on_bus(chatted, "the chat line on chat.message")
    transcript = page.locator("#transcript")
    await expect(transcript).to_contain_text("Hello from the panel!")
    await expect(transcript).to_contain_text("What game is this?")
    await expect(transcript.locator("li.user", has_text="What game")).to_contain_text("mod")
    await expect(page.locator("#caption-reply")).to_have_text("Hello from the panel!")
    await expect(page.locator("#say-text")).to_have_value("")
    await expect(page.locator("#words-note")).to_contain_text("Sent (turn gw-chat-")


async def test_the_status_cards_show_running_stages_and_a_turns_waterfall(
    page: Any, stack: Stack
) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway.url) as http:
        said = await http.post("/api/say", json={"text": "A waterfall, please."})
    turn = said.json()["turn_id"]

    async def played() -> bool:
        turns = {t["turn_id"]: t for t in (await stack.status())["turns"]}
        return turns.get(turn, {}).get("ended_at") is not None

    await wait_until(played, 20, "the said turn played to its end")
    tts = page.locator("li.stage[data-stage=tts]")
    await expect(tts.locator(".stage-alive")).to_have_text("running")
    await expect(tts).to_contain_text("1/1 replica alive")
    await expect(tts).to_contain_text("policy.token · lag 0 · pending 0")
    await expect(page.locator("li.stage[data-stage=gateway] .stage-alive")).to_have_text("running")
    bar = page.locator(f"li.turn[data-turn='{turn}'] .bar")
    for phase in ("ph-voice", "ph-queue", "ph-play"):
        await expect(bar.locator(f"span.{phase}")).to_have_count(1)
    await expect(bar).to_have_attribute("aria-label", re.compile("first audio \\d+ ms"))
    await expect(page.locator(f"li.turn[data-turn='{turn}'] .turn-numbers")).to_contain_text(
        "played"
    )


async def test_a_dead_letter_is_redriven_from_the_panel(page: Any, stack: Stack) -> None:
    stream = stream_for(CHAT_MESSAGE, "dl", stack.bus.partitions)
    await stack.client.xadd(stream, {b"__data__": b"not a message at all"})
    async with Producer(stack.bus, "viewer", [CHAT_MESSAGE]) as producer:
        await producer.publish(ChatMessage(session_id="dl", turn_id="t1", seq=0,
                               platform="twitch", author="viewer", text="poison"))  # fmt: skip

    async def both_dead() -> bool:
        return len(await list_dead_letters(stack.client, "chat.message")) == 2

    await wait_until(both_dead, 20, "two dead letters")
    topic = page.locator("li.dead-topic[data-topic='chat.message']")
    await expect(topic.locator(".count")).to_have_text("2")
    await topic.get_by_role("button", name="Show").click()
    letters = topic.locator("li.letter")
    await expect(letters).to_have_count(2)
    poison = letters.filter(has_text="cannot stomach poison")
    await expect(poison).to_contain_text("picky")
    poison_id = await poison.get_attribute("data-dlq-id")

    stack.picky.stage.broken = False
    await poison.get_by_role("button").click()

    async def redriven() -> bool:
        left = [letter.dlq_id for letter in await list_dead_letters(stack.client, "chat.message")]
        return poison_id not in left and len(left) == 1

    await on_bus(redriven, "the poison letter gone from the dead-letter stream")
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await stack.client.xrange(stream))
    assert any(f.get(REDRIVEN_FIELD) == b"1" and b"poison" in f.get(b"__data__", b"")
               for _, f in entries), "back on its stream"  # fmt: skip
    await wait_until(_handled(stack, "poison"), 10, "the re-driven message handled")
    await expect(page.locator("#dead-note")).to_contain_text("Re-drove 1 dead letter")
    await expect(topic.locator(".count")).to_have_text("1")
    await expect(letters).to_have_count(1)


def _handled(stack: Stack, text: str) -> Any:
    async def check() -> bool:
        return text in stack.picky.stage.handled

    return check


async def test_without_the_right_key_the_panel_says_how_to_open_it(
    browser: Any, bus: BusSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"MARIONETTE_GATEWAY_OPERATOR_KEY": OPERATOR_KEY,
           "MARIONETTE_GATEWAY_READ_KEY": READ_KEY}  # fmt: skip
    # (A replica id of its own: the module's gateway runs in this process too.)
    async with running_gateway(bus, monkeypatch, env, replica_id="gateway-keyed") as gateway:
        ctx, page, errors = await open_panel(browser, gateway.url + "/")
        alert = page.locator("#alerts")
        await expect(alert).to_contain_text("open this page with ?key=", ignore_case=True)
        await ctx.close()

        ctx, page, errors = await open_panel(browser, f"{gateway.url}/?key={READ_KEY}")
        await page.wait_for_selector("body[data-status-at]", timeout=UI_TIMEOUT_MS)
        await expect(page.locator("#alerts .alert")).to_have_count(0)
        await page.click("#panic")
        await expect(page.locator("#alerts")).to_contain_text("This key may only watch")
        await expect(page.locator("#alerts")).to_contain_text("?key=OPERATOR_KEY")
        await expect(page.locator("#safety-note")).to_contain_text("Not allowed")
        await ctx.close()
    # (The refused calls are console errors of the browser's own; the page's are not.)
    assert [e for e in errors if e.startswith("uncaught")] == []


async def test_screenshots(browser: Any, stack: Stack) -> None:
    """The panel with some history (stages, turns, a dead letter), wide, phone and dark."""
    async with httpx.AsyncClient(base_url=stack.gateway.url) as http:
        await http.post("/api/chat", json={"text": "Can you say hi to chat?", "author": "ana"})
        said = await http.post("/api/say", json={"text": "Hi chat! Lovely to see you all."})
    turn = said.json()["turn_id"]

    async def played() -> bool:
        turns = {t["turn_id"]: t for t in (await stack.status())["turns"]}
        return turns.get(turn, {}).get("ended_at") is not None

    await wait_until(played, 20, "the turn played")
    shots: dict[str, dict[str, Any]] = {
        "panel-1440x900.png": {"viewport": {"width": 1440, "height": 900}},
        "panel-1440x900-dark.png": {
            "viewport": {"width": 1440, "height": 900},
            "color_scheme": "dark",
        },
        "panel-390x844.png": {
            "viewport": {"width": 390, "height": 844},
            "is_mobile": True,
            "device_scale_factor": 2,
        },
    }
    for name, options in shots.items():
        ctx, page, errors = await open_panel(browser, stack.gateway.url + "/", **options)
        await page.wait_for_selector("body[data-status-at]", timeout=UI_TIMEOUT_MS)
        await page.wait_for_selector(f"li.turn[data-turn='{turn}']", timeout=UI_TIMEOUT_MS)
        shown = page.locator("li.dead-topic button", has_text="Show")
        if await shown.count():
            await shown.first.click()
            await page.wait_for_selector("li.letter", timeout=UI_TIMEOUT_MS)
        await page.wait_for_timeout(300)
        path = screenshot_path(name)
        await page.screenshot(path=str(path), full_page=True)
        print(f"\nscreenshot: {path}")
        # The phone: nothing may stick out sideways.
        overflow = await page.evaluate("document.documentElement.scrollWidth - innerWidth")
        assert overflow <= 0, f"{name}: {overflow} px wider than the screen"
        await ctx.close()
        assert errors == [], name


# --- the browser's microphone: a whole conversation with the real models ---------------------


@pytest.fixture(scope="module")
def model_bus() -> Iterator[BusSettings]:
    """A Redis of its own: the real tts must not share its group with the stand-in one."""
    with EmbeddedRedis() as server:
        yield load_bus_settings(redis_url=server.url, partitions=2)


@pytest.fixture(scope="module")
def models(model_bus: BusSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """asr, policy and tts under `marionette up`, listening."""
    with replay_stages(model_bus, tmp_path_factory.mktemp("panel-models")):
        yield


@pytest.mark.timeout(600)
async def test_a_conversation_through_the_browsers_microphone(
    mic_browser: Any, model_bus: BusSettings, models: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = "browser-mic"
    monkeypatch.delenv("MARIONETTE_GATEWAY_OPERATOR_KEY", raising=False)
    async with running_gateway(model_bus, monkeypatch) as gateway:
        ctx, page, errors = await open_panel(mic_browser, f"{gateway.url}/?session={session}")
        await page.wait_for_selector("body[data-status-at]", timeout=UI_TIMEOUT_MS)
        # Push to talk: held while the fake microphone says the question (1 s to 3 s
        # after the page opens it), let go after.
        await page.locator("#ptt").hover()
        await page.mouse.down()
        voice = page.locator("#voice")
        await expect(voice).to_have_attribute("data-state", "listening", timeout=UI_TIMEOUT_MS)
        await expect(page.locator("#ptt")).to_have_attribute("aria-pressed", "true")
        await page.wait_for_timeout(3800)
        await page.mouse.up()
        await expect(voice).to_have_attribute("data-state", re.compile("waiting|replying|finished"))
        started = time.monotonic()
        await expect(voice).to_have_attribute(
            "data-finished", re.compile("."), timeout=int(REPLY_TIMEOUT_S * 1000)
        )
        print(f"\nreply played {time.monotonic() - started:.1f} s after letting go")
        turn = await voice.get_attribute("data-turn")
        received = await page.evaluate("(turn) => window.marionettePanel.voice.reply(turn)", turn)
        # Played, by the page's audio clock: every block's end came.
        total_s = received["bytes"] / 2 / received["rate"]
        await page.wait_for_function(
            f"Number(document.getElementById('voice').dataset.playedS) >= {total_s - 0.01}",
            timeout=UI_TIMEOUT_MS,
        )
        talk = screenshot_path("panel-talk.png")
        await page.locator("#talk").screenshot(path=str(talk))
        print(f"screenshot: {talk}")
        reply_shown = await page.locator("#voice-reply").inner_text()
        heard_shown = await page.locator("#voice-heard").inner_text()
        await ctx.close()
    assert errors == []
    assert turn

    client: Redis = Redis.from_url(model_bus.redis_url or "")
    try:
        chunks = [c for c in await read_topic(client, TTS_CHUNK, model_bus.partitions)
                  if isinstance(c, TtsChunk) and c.turn_id == turn]  # fmt: skip
        tokens = [t for t in await read_topic(client, POLICY_TOKEN, model_bus.partitions)
                  if isinstance(t, PolicyToken) and t.turn_id == turn and t.final]  # fmt: skip
        finals = [f for f in await read_topic(client, ASR_FINAL, model_bus.partitions)
                  if isinstance(f, AsrFinal) and f.session_id == session]  # fmt: skip
    finally:
        await client.aclose()

    # The question was heard from the browser's microphone, and opened this turn.
    assert [f.turn_id for f in finals] == [turn], finals
    print(f"heard {finals[0].text!r} (shown: {heard_shown!r})")
    assert word_error_rate(QUESTION, finals[0].text) <= 0.5, finals[0].text
    assert heard_shown == finals[0].text

    # The page got the reply's audio, sample for sample, and played it.
    pcm = base64.b64decode(received["pcm"])
    assert received["bytes"] == len(pcm) == sum(len(c.pcm) for c in chunks) > 0
    assert pcm == b"".join(c.pcm for c in chunks)

    # It sounds like the reply's text, which the page showed.
    [final] = tokens
    reply = final.reply_text or ""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    at_16k = soxr.resample(samples, received["rate"], RATE)
    whisper = FasterWhisperRecognizer(AsrSettings())
    heard = (await asyncio.to_thread(
        whisper.transcribe, (np.clip(at_16k, -1, 1) * 32767).astype("<i2").tobytes()
    )).text  # fmt: skip
    print(f"replied {reply!r}; its audio in the page heard as {heard!r}")
    assert word_error_rate(normalize_for_speech(reply), heard) <= REPLY_WER, (reply, heard)
    assert received["text"] == " ".join(c.text for c in chunks if c.text)
    assert reply_shown == received["text"]
