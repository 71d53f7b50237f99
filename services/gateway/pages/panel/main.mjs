// The control panel: every card, the status they share (GET /api/status every 2 s) and
// the live events (asr, chat, replies) they follow over /ws/events.

import { api, follow, option } from "../lib/gateway.mjs";
import { alertFor, clearAlert } from "./alerts.mjs";
import { setupDeadLetters } from "./dead_letters.mjs";
import { LIVE_TOPICS, setupLive } from "./live.mjs";
import { setupMemory } from "./memory.mjs";
import { setupModeration } from "./moderation.mjs";
import { setupPersona } from "./persona.mjs";
import { setupPreview } from "./preview.mjs";
import { setupQueue } from "./queue.mjs";
import { setupSafety } from "./safety.mjs";
import { setupStages } from "./stages.mjs";
import { setupStreamTools } from "./stream_tools.mjs";
import { setupToolCalls } from "./tool_calls.mjs";
import { setupTurns } from "./turns.mjs";
import { setupVision } from "./vision.mjs";
import { setupVoice } from "./voice.mjs";
import { setupWords } from "./words.mjs";

const POLL_MS = 2000;
const session = option("session", "local");
document.getElementById("session-name").textContent = session;

let timer = 0;
let polling = null;
let again = false; // a change came while a poll was on its way: ask once more after it

/** Asks for the status now (after a change), and then every POLL_MS again. */
function refresh() {
  clearTimeout(timer);
  if (polling) {
    again = true;
    return;
  }
  polling = poll().finally(() => {
    polling = null;
    if (again) {
      again = false;
      refresh();
    } else {
      timer = setTimeout(refresh, POLL_MS);
    }
  });
}

// toolCalls: the reply's tool chips, shown under a turn by both the transcript and the turns.
const context = { session, refresh, toolCalls: setupToolCalls() };
const live = setupLive(context);
const voice = setupVoice(context);
const cards = [setupStages(), setupSafety(context), setupPersona(context), setupTurns(context),
  setupDeadLetters(context), setupStreamTools(context)];
setupWords(context);
setupVision(context);
setupPreview(context);
setupQueue(context);
setupModeration(context);
setupMemory();

async function poll() {
  try {
    const status = await api("/api/status");
    clearAlert("key");
    clearAlert("offline");
    live.seed(status);
    for (const card of cards) card.update(status);
    document.body.dataset.statusAt = String(Date.now()); // when the cards were last right
  } catch (error) {
    if (!alertFor(error)) console.error("status:", error);
  }
}

const linkState = document.getElementById("link-state");
follow({
  topics: LIVE_TOPICS,
  onEvent(event) {
    live.event(event);
    voice.event(event);
  },
  onState(state) {
    const kind = state.startsWith("error") ? "error" : state;
    linkState.dataset.state = kind;
    linkState.textContent = kind === "open" ? "live" : kind === "closed" ? "reconnecting…" : state;
  },
});
refresh();
