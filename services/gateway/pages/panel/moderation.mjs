// Moderation: what moderation refused, renamed or replaced in this session, and why, from
// the moderation topic (contracts/moderation.py; the arbiter judges chat lines, policy
// judges what it is asked and what it answers). Only what moderation changed is
// published, so an empty card means nothing was changed. A page opened mid-show first
// reads back the last minutes, then follows live.
//
// The excerpt is what an attacker wrote: it only ever goes in as text (h() makes text
// nodes), never as HTML.

import { readBackThenFollow } from "../lib/gateway.mjs";
import { clock, drawOncePerFrame, h, newestFirst } from "./dom.mjs";

const TOPICS = ["moderation"];
const SHOWN = 12;
const SEED_MS = 10 * 60 * 1000; // verdicts read back when the page opens

/** What was judged, in the streamer's words. */
function judged({ direction, subject }) {
  if (subject === "author") return "author's name";
  if (subject === "reply") return "the reply";
  return direction === "input" ? "incoming line" : "outgoing text";
}

function verdict(v) {
  return h(
    "li",
    { class: "verdict", "data-action": v.action, "data-message-id": v.message_id },
    h("span", { class: "action" }, v.action),
    h(
      "div",
      { class: "verdict-body" },
      h(
        "p",
        { class: "verdict-head muted" },
        h("span", { class: "subject" }, judged(v)),
        " · by ",
        h("span", { class: "judged-by" }, v.judged_by),
        " · ",
        h("time", { datetime: v.created_at }, clock(v.created_at)),
      ),
      v.excerpt ? h("q", { class: "excerpt" }, v.excerpt) : null,
      h("ul", { class: "reasons" }, v.reasons.map((reason) => h("li", { class: "why" }, reason))),
    ),
  );
}

export function setupModeration({ session }) {
  const list = document.getElementById("moderation-verdicts");
  const empty = document.getElementById("moderation-empty");
  let kept = new Map(); // message_id -> verdict, the newest SHOWN only

  const changed = drawOncePerFrame(() => {
    const latest = newestFirst(kept.values(), SHOWN);
    empty.hidden = latest.length > 0;
    list.replaceChildren(...latest.map(verdict));
  });

  // The last minutes, then live (a verdict seen twice is the same verdict: kept once).
  readBackThenFollow({
    topics: TOPICS,
    session,
    backMs: SEED_MS,
    onEvent({ message }) {
      if (message.session_id !== session) return;
      kept.set(message.message_id, message);
      if (kept.size > SHOWN) {
        // Rebuilt oldest first, so that the Map's order stays the order of arrival.
        kept = new Map(newestFirst(kept.values(), SHOWN).reverse().map((v) => [v.message_id, v]));
      }
      changed();
    },
  });
}
