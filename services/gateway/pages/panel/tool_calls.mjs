// The character's tool calls (a dice roll, the time, a memory, a scene switch), as chips
// under their turn: "🎲 dice → Rolled a d20: 17. · 3 ms". Policy publishes each call and
// its result on tool.event (contracts/tools.py: ToolEvent, turn_id = the turn); this module
// keeps them by turn, and fills every slot made for that turn (the Latest turns card and
// the transcript's reply line ask for one with slot()). A page opened mid-show first reads
// back the last minutes, as the turns it shows go back that far.
//
// Results and arguments come from the LLM and the viewers it answers: text only (h()).

import { readBackThenFollow } from "../lib/gateway.mjs";
import { h } from "./dom.mjs";

const TOPICS = ["tool.event"];
const SEED_MS = 10 * 60 * 1000;
const TURNS_KEPT = 300;
const ICONS = {
  time: "🕒", dice: "🎲", choose: "🔀", set_expression: "🎭", switch_scene: "🎬",
  remember: "📝", recall: "🧠", describe_view: "👁️",
};

function took(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1) return "<1 ms";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** What a result says, without the "error: " or "refused: " the LLM reads first. */
function said(call) {
  const text = call.error || call.result.replace(/^(error|refused): /, "");
  return text.split("\n")[0];
}

function chip(call) {
  const outcome = call.outcome || "pending";
  const args = Object.entries(call.arguments || {}).map(([name, value]) => `${name}=${JSON.stringify(value)}`);
  const result = call.outcome === "ok" ? said(call) : call.outcome ? `${call.outcome}: ${said(call)}` : "…";
  const full = `${call.tool}(${args.join(", ")})${call.outcome ? ` → ${call.result}` : ", waiting"}`;
  return h(
    "li",
    { class: "tool-call", "data-outcome": outcome, "data-tool": call.tool, "data-call": call.call_id, title: full },
    h("span", { class: "call-icon", "aria-hidden": "true" }, ICONS[call.tool] || "🔧"),
    h("span", { class: "call-name" }, call.tool),
    h("span", { class: "call-result" }, call.outcome ? ` → ${result}` : " …"),
    call.elapsed_ms === null || call.elapsed_ms === undefined ? null
      : h("span", { class: "call-took" }, ` · ${took(call.elapsed_ms)}`),
  );
}

export function setupToolCalls() {
  const turns = new Map(); // "<session>/<turn>" -> Map(call_id -> the call, its result merged in)

  function fill(slot, key) {
    const calls = turns.get(key);
    slot.replaceChildren(...(calls ? [...calls.values()].map(chip) : []));
  }

  function take({ message }) {
    if (!message.turn_id) return;
    const key = `${message.session_id}/${message.turn_id}`;
    let calls = turns.get(key);
    if (!calls) {
      calls = new Map();
      turns.set(key, calls);
      if (turns.size > TURNS_KEPT) turns.delete(turns.keys().next().value);
    }
    // The result wins over its call, in whatever order they come (a read-back may repeat
    // either); the arguments are the call's (a result carries none).
    const known = calls.get(message.call_id);
    if (!known) calls.set(message.call_id, message);
    else if (message.phase === "result") calls.set(message.call_id, { ...message, arguments: known.arguments });
    else if (known.phase === "result") known.arguments = message.arguments;
    for (const slot of document.querySelectorAll(`.tool-calls[data-tool-turn="${CSS.escape(key)}"]`)) {
      fill(slot, key);
    }
  }

  readBackThenFollow({ topics: TOPICS, backMs: SEED_MS, onEvent: take });

  return {
    /** A list that shows this turn's tool calls now and as they come (empty: no space). */
    slot(sessionId, turnId) {
      const key = `${sessionId}/${turnId}`;
      const slot = h("ul", { class: "tool-calls", "data-tool-turn": key, "aria-label": "Tools used" });
      fill(slot, key);
      return slot;
    },
  };
}
