// Stream tools: the obs and vts stages (services/obs, services/vts) as their heartbeats
// describe them in GET /api/status (`stages.obs.replicas[i].detail`: the connection, the
// scene on air, the scenes; `stages.vts...detail`: the connection, model, hotkeys,
// expression), and the operator's OBS calls: a scene on air (POST /api/obs/scene) and the
// character's audio muted or not (POST /api/obs/mute).
//
// Scene names, models and problems come from OBS and VTube Studio: only ever text (h()).

import { api } from "../lib/gateway.mjs";
import { problem } from "./alerts.mjs";
import { busy, h, note } from "./dom.mjs";

// How each connection word is coloured (data-tone): the rest is a problem to fix.
const TONES = { connected: "ok", connecting: "warn" };

/** The replica to show: an alive one that says how it is (connected first), or null. */
function shownReplica(stage) {
  const alive = (stage?.replicas || []).filter((r) => r.alive);
  const said = alive.filter((r) => r.detail);
  return said.find((r) => r.detail.connection === "connected") || said[0] || alive[0] || null;
}

/** The state word and the facts of a tool, or why it is not running. */
function connection(stage, replica) {
  if (!replica) {
    const last = Math.min(...(stage.replicas || []).map((r) => r.last_heartbeat_s));
    const why = Number.isFinite(last) ? `last heartbeat ${last.toFixed(0)} s ago` : "no replica seen";
    return { word: "not running", tone: "bad", problem: `The stage is not running (${why}).` };
  }
  const detail = replica.detail || {};
  const word = detail.connection || "running";
  return { word, tone: TONES[word] || (detail.connection ? "bad" : "warn"), problem: detail.problem || "" };
}

function stateLine(state, ...facts) {
  return [
    h("span", { class: "tool-state", "data-tone": state.tone }, state.word),
    ...facts.filter(Boolean).map((fact) => h("span", { class: "tool-fact muted" }, fact)),
  ];
}

export function setupStreamTools({ refresh }) {
  const empty = document.getElementById("stream-tools-empty");
  const message = document.getElementById("stream-tools-note");
  const obs = {
    box: document.getElementById("obs-tool"),
    state: document.getElementById("obs-state"),
    problem: document.getElementById("obs-problem"),
    onAir: document.getElementById("obs-on-air"),
    scenes: document.getElementById("obs-scenes"),
    mute: document.getElementById("obs-mute"),
  };
  const vts = {
    box: document.getElementById("vts-tool"),
    state: document.getElementById("vts-state"),
    problem: document.getElementById("vts-problem"),
    facts: document.getElementById("vts-facts"),
  };
  const sceneButtons = new Map(); // scene name -> its button, kept while the list is the same
  let sceneList = "";
  let muted = false; // as last sent from this page (the stage does not report it)

  function showMute(connected) {
    obs.mute.hidden = !connected;
    obs.mute.textContent = muted ? "Unmute character" : "Mute character";
    obs.mute.setAttribute("aria-pressed", String(muted));
  }

  function putOnAir(scene, button) {
    return busy(button, async () => {
      try {
        await api("/api/obs/scene", { method: "POST", body: { scene } });
        note(message, `Sent: “${scene}” goes on air.`, "ok");
        refresh();
      } catch (error) {
        note(message, `Scene “${scene}”: ${problem(error)}`, "error");
      }
    });
  }

  /** The scene buttons, rebuilt only when OBS's scenes change (so focus stays put). */
  function showScenes(names, onAir) {
    const key = JSON.stringify(names);
    if (key !== sceneList) {
      sceneList = key;
      sceneButtons.clear();
      obs.scenes.replaceChildren(
        ...names.map((name) => {
          const button = h("button", { type: "button", class: "secondary" }, "Put on air");
          button.addEventListener("click", () => putOnAir(name, button));
          sceneButtons.set(name, button);
          return h("li", { class: "scene", "data-scene": name },
            h("span", { class: "scene-name" }, name), button);
        }),
      );
    }
    for (const [name, button] of sceneButtons) {
      const live = name === onAir;
      button.closest("li").dataset.onAir = String(live);
      button.disabled = live;
      button.textContent = live ? "On air" : "Put on air";
      button.setAttribute("aria-label", live ? `${name} is on air` : `Put ${name} on air`);
    }
  }

  function showObs(stage) {
    obs.box.hidden = !stage;
    if (!stage) return;
    const replica = shownReplica(stage);
    const detail = replica?.detail || {};
    const state = connection(stage, replica);
    const connected = detail.connection === "connected";
    obs.box.dataset.connection = state.word;
    obs.state.replaceChildren(
      ...stateLine(state, connected && detail.obs_version ? `OBS ${detail.obs_version}` : null,
        detail.url),
    );
    obs.problem.hidden = !state.problem;
    obs.problem.textContent = state.problem;
    obs.onAir.hidden = !connected;
    const scene = h("strong", { class: "on-air-scene" }, detail.scene || "—");
    const panicNote = detail.panic ? h("span", { class: "panic-note" }, " · panic: muted, BRB shown") : "";
    obs.onAir.replaceChildren("On air: ", scene, panicNote);
    showScenes(connected ? detail.scenes || [] : [], detail.scene);
    if (typeof detail.muted === "boolean") muted = detail.muted; // if a stage ever says
    showMute(connected);
  }

  function showVts(stage) {
    vts.box.hidden = !stage;
    if (!stage) return;
    const replica = shownReplica(stage);
    const detail = replica?.detail || {};
    const state = connection(stage, replica);
    vts.box.dataset.connection = state.word;
    vts.state.replaceChildren(...stateLine(state, detail.url));
    vts.problem.hidden = !state.problem;
    vts.problem.textContent = state.problem;
    const connected = detail.connection === "connected";
    vts.facts.hidden = !connected;
    vts.facts.replaceChildren(
      ...[
        ["Model", detail.model || "none loaded"],
        ["Hotkeys", String(detail.hotkeys ?? 0)],
        ["Expression", detail.expression || "none"],
      ].map(([term, value]) =>
        h("div", {}, h("dt", {}, term), h("dd", { "data-fact": term.toLowerCase() }, value))),
    );
  }

  obs.mute.addEventListener("click", () =>
    busy(obs.mute, async () => {
      const wanted = !muted;
      try {
        await api("/api/obs/mute", { method: "POST", body: { muted: wanted } });
        muted = wanted;
        const said = wanted ? "the character's audio is muted" : "the character's audio is on";
        note(message, `Sent: ${said}.`, "ok");
      } catch (error) {
        note(message, `Mute: ${problem(error)}`, "error");
      }
      showMute(true);
    }),
  );

  return {
    update(status) {
      const stages = status.stages || {};
      empty.hidden = Boolean(stages.obs || stages.vts);
      showObs(stages.obs);
      showVts(stages.vts);
    },
  };
}
