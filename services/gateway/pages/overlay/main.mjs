// /overlay: the character drawn, for OBS (a browser source, transparent). Follows the
// session's avatar.expr, playback.progress, tts.chunk and chat.message and draws each
// animation frame from them (timeline.mjs says what, face.mjs draws it). Query options
// are in docs/overlay.md.

import { follow, option } from "../lib/gateway.mjs";
import { ChatLines } from "./chat.mjs";
import { Face } from "./face.mjs";
import { SkinError, expressionOf, loadSkin } from "./skin.mjs";
import { Speaker } from "./speaker.mjs";
import { FrameStats } from "./stats.mjs";
import { Timeline } from "./timeline.mjs";

const BLINK_MS = 150; // eyes closed per blink
const OFFLINE_NOTICE_MS = 4000; // a lost connection is shown after this long

const stage = document.getElementById("stage");
const svg = document.getElementById("face");
const captionBox = document.getElementById("caption");
const problemBox = document.getElementById("problem");
const linkNotice = document.getElementById("link");
const soundButton = document.getElementById("sound");
const body = document.body;

const stats = new FrameStats();
window.overlayStats = stats;

let hideProblem = null; // a pending hide of a passing notice

/** Shows what stops the overlay (or one of its options) from working, as text. */
function showProblem(title, details = []) {
  clearTimeout(hideProblem);
  problemBox.replaceChildren();
  const heading = document.createElement("p");
  heading.className = "problem-title";
  heading.textContent = title;
  problemBox.append(heading);
  if (details.length) {
    const list = document.createElement("ul");
    for (const detail of details) {
      const item = document.createElement("li");
      item.textContent = detail;
      list.append(item);
    }
    problemBox.append(list);
  }
  problemBox.hidden = false;
  body.dataset.error = [title, ...details].join(" | ");
}

function flag(name, fallback) {
  const value = option(name, fallback ? "1" : "0");
  return !["0", "false", "no", "off"].includes(value.toLowerCase());
}

/** A colour option: any CSS colour, or hex without its # (a # cannot go in a query). */
function colorOption(name, problems) {
  const value = option(name, "");
  if (!value) return null;
  for (const candidate of [value, `#${value}`]) if (CSS.supports("color", candidate)) return candidate;
  problems.push(`${name}=${value} is not a colour (try ${name}=1e1e2e or ${name}=black)`);
  return null;
}

function readOptions() {
  const problems = [];
  const options = {
    session: option("session", "local"),
    skin: option("skin", "puppet"),
    captions: flag("captions", true),
    chat: flag("chat", true),
    audio: flag("audio", false),
    draw: flag("draw", true), // draw=0: everything but the drawing (a benchmark baseline)
    bg: colorOption("bg", problems),
    accent: colorOption("accent", problems),
    text: colorOption("text", problems),
    chatMs: 9000,
    size: null,
    problems,
  };
  const chatSeconds = option("chat_s", "");
  if (chatSeconds) {
    const seconds = Number(chatSeconds);
    if (Number.isFinite(seconds) && seconds >= 1 && seconds <= 600) options.chatMs = seconds * 1000;
    else problems.push(`chat_s=${chatSeconds}: give the seconds a chat line stays, 1 to 600`);
  }
  const size = option("size", "");
  if (size) {
    const match = /^(\d{2,5})x(\d{2,5})$/.exec(size);
    if (match) options.size = [Number(match[1]), Number(match[2])];
    else problems.push(`size=${size}: give WIDTHxHEIGHT in pixels (size=1920x1080), or none to fit the window`);
  }
  return options;
}

function applyLook(options) {
  if (options.bg) stage.style.setProperty("--bg", options.bg);
  if (options.accent) stage.style.setProperty("--accent", options.accent);
  if (options.text) stage.style.setProperty("--text", options.text);
  if (options.size) {
    const [width, height] = options.size;
    stage.style.width = `${width}px`;
    stage.style.height = `${height}px`;
    stage.style.setProperty("--u", `${Math.min(width / 100, height / 56.25)}px`);
  }
  captionBox.hidden = !options.captions;
  document.getElementById("chat").hidden = !options.chat;
}

async function start() {
  const options = readOptions();
  applyLook(options);
  body.dataset.session = options.session;
  let skin;
  try {
    skin = await loadSkin(options.skin);
  } catch (error) {
    body.dataset.state = "error";
    const problems = error instanceof SkinError ? error.problems : [String(error)];
    showProblem(`The overlay cannot draw the skin "${options.skin}":`, problems);
    return;
  }
  if (options.problems.length) {
    // Not fatal: shown long enough to be read while setting the source up, then hidden.
    showProblem("Some options of this overlay were ignored:", options.problems);
    hideProblem = setTimeout(() => (problemBox.hidden = true), 15000);
  }
  body.dataset.skin = skin.file;
  const face = new Face(svg, skin);
  const chat = new ChatLines(document.getElementById("chat"), options.chatMs);

  let speaker = null;
  const timeline = new Timeline({ audioClock: options.audio ? (turn) => speaker.clock(turn) : null });
  let blinkUntil = 0;

  const handle = (event) => {
    const now = performance.now();
    const message = event.message;
    stats.event(event.topic, message.state ?? "", now);
    if (event.topic === "playback.progress") timeline.onProgress(message, now);
    else if (event.topic === "avatar.expr") {
      if (timeline.onExpression(message, now) === "blink") blinkUntil = now + BLINK_MS;
    } else if (event.topic === "tts.chunk") timeline.onChunk(message);
    else if (event.topic === "chat.message" && options.chat) chat.add(message, now);
  };

  if (options.audio) {
    speaker = new Speaker({
      session: options.session,
      onReport: (report) => handle({ topic: "playback.progress", message: report }),
      onState: (state) => {
        body.dataset.speaker = state;
        soundButton.hidden = state !== "audio suspended";
        if (state.startsWith("refused")) {
          showProblem("The overlay cannot play the character's voice:", [state.slice(9)]);
        }
      },
    });
    soundButton.addEventListener("click", () => speaker.resume());
    speaker.start();
    stats.speaker = speaker.stats;
  }

  let closedSince = null;
  follow({
    topics: ["avatar.expr", "playback.progress", "tts.chunk", "chat.message"],
    session: options.session,
    onEvent: handle,
    onState: (state) => {
      body.dataset.link = state.startsWith("error") ? "error" : state;
      if (state === "open") closedSince = null;
      else closedSince ??= performance.now();
      if (state.startsWith("error")) {
        showProblem("The gateway refused the overlay's live events:", [state.slice(7)]);
      }
    },
  });

  // The state tests and the benchmark read, written only when it changes.
  const shown = { mouth: "", expression: "", eyes: "", caption: null, speaking: "" };
  const setData = (name, value) => {
    if (shown[name] === value) return;
    shown[name] = value;
    body.dataset[name] = value;
  };
  let expression = "neutral";
  let caption = "";

  function frame(time) {
    const now = performance.now();
    const state = timeline.frame(now);
    if (state.expression) {
      expression = options.draw ? face.setExpression(state.expression) : expressionOf(skin, state.expression);
      svg.setAttribute("aria-label", `${skin.name}, looking ${expression}`);
    }
    const blinking = now < blinkUntil;
    let eyes = blinking ? "closed" : "open";
    if (options.draw) {
      eyes = face.draw(now, state.mouth, blinking);
      if (options.captions && state.caption !== caption) {
        caption = state.caption;
        captionBox.textContent = caption;
        captionBox.classList.toggle("empty", caption === "");
      }
      chat.expire(now);
      setData("mouth", state.mouth.toFixed(2));
      setData("expression", expression);
      setData("eyes", eyes);
      setData("caption", state.caption);
      setData("speaking", state.speaking ? "1" : "0");
      linkNotice.hidden = closedSince === null || now - closedSince < OFFLINE_NOTICE_MS;
    }
    stats.frame(time, now, performance.now() - now, state, eyes, expression);
    requestAnimationFrame(frame);
  }

  body.dataset.state = "ready";
  requestAnimationFrame(frame);
}

start();
