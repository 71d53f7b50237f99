// The stages card: each stage's replicas (alive, last heartbeat, restarts) and the backlog
// of each topic it reads, as GET /api/status reports them.

import { h } from "./dom.mjs";

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

// What a stage that talks to an outside program calls it (its replicas' `detail`).
const OUTSIDE = { obs: "OBS", vts: "VTube Studio" };

/** "OBS: connected" from the alive replicas' detail.connection (distinct words), or null. */
function connections(name, replicas) {
  const words = new Set(replicas.filter((r) => r.alive && r.detail?.connection).map((r) => r.detail.connection));
  return words.size ? `${OUTSIDE[name] || name}: ${[...words].join(", ")}` : null;
}

function stageItem(name, stage) {
  const replicas = stage.replicas || [];
  const alive = replicas.filter((r) => r.alive).length;
  const restarts = replicas.reduce((sum, r) => sum + (r.restarts || 0), 0);
  const freshest = replicas.length
    ? Math.min(...replicas.map((r) => r.last_heartbeat_s))
    : null;
  // A consumer group with no replica seen: something reads the topic but is not running.
  const ok = replicas.length > 0 && alive === replicas.length;
  const topics = Object.entries(stage.topics || {}).map(([topic, backlog]) =>
    h(
      "li",
      { "data-busy": backlog.lag + backlog.pending > 0, title: `${topic}: lag ${backlog.lag}, pending ${backlog.pending}` },
      `${topic} · lag ${backlog.lag} · pending ${backlog.pending}`,
    ),
  );
  const details = [
    replicas.length ? `${alive}/${plural(replicas.length, "replica")} alive` : "no replica seen",
    freshest === null ? null : `heartbeat ${freshest.toFixed(1)} s ago`,
    plural(restarts, "restart"),
    connections(name, replicas),
  ].filter(Boolean);
  return h(
    "li",
    { class: "stage", "data-stage": name, "data-alive": alive },
    h(
      "div",
      { class: "stage-head" },
      h("span", { class: "stage-name" }, name),
      h("span", { class: "stage-alive", "data-ok": ok }, ok ? "running" : replicas.length ? "down" : "not running"),
    ),
    h("p", { class: "stage-detail" }, details.join(" · ")),
    topics.length ? h("ul", { class: "stage-topics", "aria-label": `${name}'s topics` }, topics) : null,
  );
}

export function setupStages() {
  const list = document.getElementById("stages");
  const empty = document.getElementById("stages-empty");
  return {
    update(status) {
      const entries = Object.entries(status.stages || {});
      empty.hidden = entries.length > 0;
      list.replaceChildren(...entries.map(([name, stage]) => stageItem(name, stage)));
    },
  };
}
