// Dead letters: how many each topic has (from the status), the letters themselves
// (GET /api/dead-letters?topic=) and putting them back to be handled again
// (POST /api/dead-letters/{topic}/redrive, one or all).

import { api } from "../lib/gateway.mjs";
import { problem } from "./alerts.mjs";
import { busy, clock, h, note } from "./dom.mjs";

export function setupDeadLetters({ refresh }) {
  const list = document.getElementById("dead-topics");
  const empty = document.getElementById("dead-empty");
  const message = document.getElementById("dead-note");
  const topics = new Map(); // topic -> {item, count, toggle, letters, open, shownCount}

  async function redrive(topic, id, button) {
    await busy(button, async () => {
      try {
        const answer = await api(`/api/dead-letters/${encodeURIComponent(topic)}/redrive`, {
          method: "POST",
          body: id ? { id } : {},
        });
        note(message, `Re-drove ${answer.count} dead letter${answer.count === 1 ? "" : "s"} of ${topic}: handled again now.`, "ok");
        refresh();
      } catch (error) {
        note(message, problem(error), "error");
      }
    });
  }

  async function load(topic) {
    const entry = topics.get(topic);
    try {
      const answer = await api(`/api/dead-letters?topic=${encodeURIComponent(topic)}&limit=50`);
      entry.letters.replaceChildren(
        ...answer.dead_letters.map((letter) => {
          const button = h("button", { type: "button", class: "secondary", "data-dlq-id": letter.dlq_id,
            "aria-label": `Redrive dead letter ${letter.dlq_id}` }, "Redrive");
          button.addEventListener("click", () => redrive(topic, letter.dlq_id, button));
          return h(
            "li",
            { class: "letter", "data-dlq-id": letter.dlq_id },
            h("div", { class: "row" },
              h("span", { class: "meta" }, `${clock(letter.failed_at)} · ${letter.group} · ${letter.delivery_count} deliver${letter.delivery_count === 1 ? "y" : "ies"}`),
              button),
            h("p", { class: "reason" }, letter.reason),
            h("p", { class: "meta" }, `id ${letter.dlq_id} · ${letter.payload_bytes} bytes`),
          );
        }),
      );
    } catch (error) {
      note(message, problem(error), "error");
    }
  }

  function add(topic) {
    const count = h("span", { class: "count" });
    const toggle = h("button", { type: "button", class: "secondary", "aria-expanded": "false" }, "Show");
    const all = h("button", { type: "button", "data-redrive-all": topic }, "Redrive all");
    const letters = h("ul", { class: "letters", hidden: true, "aria-label": `Dead letters of ${topic}` });
    const item = h("li", { class: "dead-topic", "data-topic": topic },
      h("div", { class: "row" }, h("code", {}, topic), count, h("span", { class: "row" }, toggle, all)),
      letters);
    const entry = { item, count, toggle, letters, open: false, shownCount: -1 };
    toggle.addEventListener("click", () => {
      entry.open = !entry.open;
      toggle.setAttribute("aria-expanded", String(entry.open));
      toggle.textContent = entry.open ? "Hide" : "Show";
      letters.hidden = !entry.open;
      if (entry.open) load(topic);
    });
    all.addEventListener("click", () => redrive(topic, null, all));
    topics.set(topic, entry);
    list.append(item);
    return entry;
  }

  return {
    update(status) {
      const counts = status.dead_letters || {};
      for (const [topic, entry] of topics) {
        if (!(topic in counts)) {
          entry.item.remove();
          topics.delete(topic);
        }
      }
      for (const [topic, number] of Object.entries(counts)) {
        const entry = topics.get(topic) || add(topic);
        entry.count.textContent = String(number);
        if (entry.open && entry.shownCount !== number) load(topic);
        entry.shownCount = number;
      }
      empty.hidden = topics.size > 0;
    },
  };
}
