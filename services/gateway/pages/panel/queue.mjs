// The chat queue: the audience lines waiting to be answered (author, text, why they rank
// where they do) and the arbiter's latest decisions with their reasons, from
// arbiter.decision (services/arbiter). Each decision carries the queue as it stood after
// it, so the newest one is the queue now. A page opened mid-show first reads back the last
// minutes of decisions, then follows them live.

import { readBackThenFollow } from "../lib/gateway.mjs";
import { drawOncePerFrame, h, newestFirst } from "./dom.mjs";

const TOPICS = ["arbiter.decision"];
const SHOWN_DECISIONS = 12;
const SEED_MS = 10 * 60 * 1000; // decisions read back when the page opens
const WHY_KEPT = 2000; // queued reasons remembered, by line

function seconds(ms) {
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

function roles(badges) {
  const known = ["broadcaster", "moderator", "vip", "subscriber", "founder"];
  return (badges || []).map((b) => b.split("/")[0].toLowerCase()).filter((b) => known.includes(b));
}

export function setupQueue({ session }) {
  const list = document.getElementById("queue-lines");
  const empty = document.getElementById("queue-empty");
  const count = document.getElementById("queue-count");
  const log = document.getElementById("queue-decisions");
  const logEmpty = document.getElementById("queue-decisions-empty");
  const why = new Map(); // line message_id -> the reason it was queued with
  const decided = new Map(); // decision message_id -> decision (final ones only)
  let newest = null; // the newest decision: its queue is the queue now

  function line(queued) {
    const reason = why.get(queued.message_id) || `score ${queued.score}`;
    return h(
      "li",
      { class: "queued", "data-message-id": queued.message_id },
      h(
        "div",
        { class: "queued-head" },
        h("span", { class: "author" }, queued.author),
        ...roles(queued.badges).map((role) => h("span", { class: "role", "data-role": role }, role)),
        queued.merged ? h("span", { class: "merged", title: "the same line, merged" }, `×${queued.merged + 1}`) : null,
        h("span", { class: "waited muted" }, `${queued.platform} · waited ${seconds(queued.waited_ms)}`),
      ),
      h("p", { class: "queued-text" }, queued.text),
      h("p", { class: "why" }, reason),
    );
  }

  function showQueue() {
    const queue = newest ? newest.queue : [];
    const total = newest ? newest.queue_length : 0;
    list.replaceChildren(...queue.map(line));
    empty.hidden = total > 0;
    count.textContent = `${total} waiting`;
    count.dataset.count = String(total);
    const more = total - queue.length;
    if (more > 0) list.append(h("li", { class: "more muted" }, `… and ${more} more`));
  }

  function showDecisions() {
    const latest = newestFirst(decided.values(), SHOWN_DECISIONS);
    logEmpty.hidden = latest.length > 0;
    log.replaceChildren(
      ...latest.map((d) =>
        h(
          "li",
          { class: "decision", "data-action": d.action, "data-message-id": d.line.message_id },
          h("span", { class: "action" }, d.action),
          h(
            "div",
            { class: "decision-body" },
            h("span", { class: "author" }, d.line.author),
            " ",
            h("span", { class: "decision-text", title: d.line.text }, d.line.text),
            h("p", { class: "why" }, d.reason),
          ),
        ),
      ),
    );
  }

  function take({ message: d }) {
    if (d.session_id !== session) return;
    if (d.action === "queued") {
      why.set(d.line.message_id, d.reason);
      if (why.size > WHY_KEPT) why.delete(why.keys().next().value);
    } else {
      decided.set(d.message_id, d);
      while (decided.size > WHY_KEPT) decided.delete(decided.keys().next().value);
    }
    if (!newest || Date.parse(d.created_at) >= Date.parse(newest.created_at)) newest = d;
  }

  const changed = drawOncePerFrame(() => {
    showQueue();
    showDecisions();
    document.getElementById("queue").dataset.shownAt = String(Date.now());
  });

  // The last minutes, then live (decisions seen twice are the same decision: kept once).
  readBackThenFollow({
    topics: TOPICS,
    session,
    backMs: SEED_MS,
    onEvent(event) {
      take(event);
      changed();
    },
  });
  showQueue();
  showDecisions();
}
