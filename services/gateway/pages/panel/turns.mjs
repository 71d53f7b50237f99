// The latest turns, each with a latency waterfall: one bar per turn, from the end of the
// user's speech (or the chat line) to the first word, the first audio, playback, the end.
// All bars share one time scale, fitted to the latency part (what the operator tunes);
// playing runs on to the right edge when it is longer (striped).

import { h } from "./dom.mjs";

const SHOWN = 8;
const NO_REPLY_S = 30; // a turn without a first word by then is not being answered
const PHASES = [
  // [class, label, from, to]
  ["ph-hear", "speech end → heard", "speech_end_at", "started_at"],
  ["ph-think", "→ first word", "started_at", "first_token_at"],
  ["ph-voice", "→ first audio", "first_token_at", "first_audio_at"],
  ["ph-queue", "→ playing", "first_audio_at", "playing_at"],
  ["ph-play", "playing", "playing_at", "ended_at"],
];

function origin(turn) {
  return Math.min(turn.started_at, turn.speech_end_at ?? turn.started_at);
}

/** Seconds from the turn's origin to its last latency mark (not counting playing). */
function latencySpan(turn) {
  const marks = [turn.playing_at, turn.first_audio_at, turn.first_token_at, turn.started_at];
  const last = marks.find((mark) => mark !== null && mark !== undefined);
  return last - origin(turn);
}

function ms(value) {
  return value === null || value === undefined ? null : `${Math.round(value)} ms`;
}

function numbers(turn) {
  const parts = [
    ["voice→voice", ms(turn.voice_to_voice_ms)],
    ["first word", ms(turn.first_token_ms)],
    ["first audio", ms(turn.first_audio_ms)],
    ["playing after", ms(turn.first_played_ms)],
  ].filter(([, value]) => value);
  if (turn.playing_at && turn.ended_at) parts.push(["played", `${(turn.ended_at - turn.playing_at).toFixed(1)} s`]);
  return parts;
}

function bar(turn, scale, now) {
  const start = origin(turn);
  const spans = [];
  for (const [kind, label, from, to] of PHASES) {
    const begin = turn[from];
    if (begin === null || begin === undefined) continue;
    // A phase still going on (e.g. playing) runs to now.
    let end = turn[to];
    const ongoing = end === null || end === undefined;
    if (ongoing) {
      if (kind !== "ph-play" || turn.playback !== "playing") continue;
      end = now;
    }
    const left = ((begin - start) / scale) * 100;
    const width = ((end - begin) / scale) * 100;
    if (left >= 100) continue;
    const clipped = left + width > 100;
    spans.push(
      h("span", {
        class: `${kind}${clipped ? " clipped" : ""}`,
        style: `left:${left.toFixed(2)}%;width:${Math.min(width, 100 - left).toFixed(2)}%`,
        title: `${label}: ${Math.round((end - begin) * 1000)} ms`,
      }),
    );
  }
  return spans;
}

export function setupTurns({ session, toolCalls }) {
  const list = document.getElementById("turns");
  const empty = document.getElementById("turns-empty");
  return {
    update(status) {
      const turns = (status.turns || []).slice(0, SHOWN);
      empty.hidden = turns.length > 0;
      const now = Date.now() / 1000;
      const scale = Math.max(0.5, ...turns.map(latencySpan)) * 1.5;
      list.replaceChildren(
        ...turns.map((turn) => {
          const facts = numbers(turn);
          const summary = facts.map(([name, value]) => `${name} ${value}`).join(", ");
          return h(
            "li",
            { class: "turn", "data-turn": turn.turn_id, "data-session": turn.session_id, "data-source": turn.source },
            h(
              "div",
              { class: "turn-head" },
              h("span", { class: "source" }, turn.source.replace("_", " ")),
              turn.session_id !== session ? h("span", { class: "muted" }, turn.session_id) : null,
              h("span", { class: "text", title: turn.heard || turn.reply || "" }, turn.heard || turn.reply || ""),
              turn.status && turn.status !== "ok" ? h("span", { class: "muted" }, turn.status) : null,
            ),
            toolCalls?.slot(turn.session_id, turn.turn_id), // the tools the reply called, as chips
            h(
              "div",
              { class: "bar", role: "img", "aria-label": `${turn.source} turn: ${summary || "waiting"}` },
              bar(turn, scale, now),
            ),
            h(
              "div",
              { class: "turn-numbers" },
              facts.length
                ? facts.flatMap(([name, value], i) => [i ? " · " : "", `${name} `, h("b", {}, value)])
                : now - turn.started_at > NO_REPLY_S
                  ? "no reply (is policy running, and on?)"
                  : "waiting for the reply…",
            ),
          );
        }),
      );
      list.dataset.scaleS = scale.toFixed(2);
      const axis = document.getElementById("turns-scale");
      axis.hidden = turns.length === 0;
      axis.textContent = `Each bar spans ${scale.toFixed(1)} s.`;
    },
  };
}
