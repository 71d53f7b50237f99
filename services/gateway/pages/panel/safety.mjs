// The panic button and the module switches. Each click publishes one control message
// (POST /api/panic, /api/modules/{name}); the status poll then shows what the stages
// applied. What was just sent is shown meanwhile, so a switch does not flick back while
// the change is on its way.

import { api } from "../lib/gateway.mjs";
import { problem } from "./alerts.mjs";
import { h, note } from "./dom.mjs";

const SETTLE_MS = 6000; // how long a sent switch wins over an older status
const PANIC_EXEMPT = new Set(["gateway", "monitor"]); // as services/bus/switches.py: they still watch

export function setupSafety({ refresh }) {
  const box = document.getElementById("panic-box");
  const panicButton = document.getElementById("panic");
  const liftButton = document.getElementById("lift-panic");
  const engagedPanel = box.querySelector(".panic-engaged");
  const pill = document.getElementById("panic-pill");
  const list = document.getElementById("modules");
  const message = document.getElementById("safety-note");
  const switches = new Map(); // module -> {input, state, item}
  const sent = new Map(); // module or "panic" -> {value, until}
  let panic = false;
  let modules = {};

  function wanted(name, reported) {
    const pending = sent.get(name);
    if (!pending) return reported;
    if (pending.value === reported || Date.now() > pending.until) {
      sent.delete(name);
      return reported;
    }
    return pending.value;
  }

  function showPanic(engaged, moveFocus = document.activeElement === (engaged ? panicButton : liftButton)) {
    panic = engaged;
    box.dataset.engaged = String(engaged);
    engagedPanel.hidden = !engaged;
    pill.hidden = !engaged;
    if (moveFocus) (engaged ? liftButton : panicButton).focus();
    showModules();
  }

  function showModules() {
    for (const [name, { input, state, item }] of switches) {
      const on = wanted(name, modules[name] !== false);
      const silenced = panic && !PANIC_EXEMPT.has(name);
      input.checked = on;
      item.dataset.off = String(!on || silenced);
      state.textContent = !on ? "off" : silenced ? "off (panic)" : "on";
    }
  }

  function addSwitch(name) {
    const input = h("input", { type: "checkbox", role: "switch", id: `module-${name}`, "data-module": name });
    const state = h("span", { class: "state", "aria-hidden": "true" });
    const item = h(
      "li",
      {},
      h("label", { class: "switch", for: `module-${name}` }, input, h("span", {}, name)),
      state,
    );
    input.addEventListener("change", async () => {
      const enabled = input.checked;
      sent.set(name, { value: enabled, until: Date.now() + SETTLE_MS });
      showModules();
      try {
        await api(`/api/modules/${encodeURIComponent(name)}`, { method: "POST", body: { enabled } });
        note(message, `${name} switched ${enabled ? "on" : "off"}.`, "ok");
        refresh();
      } catch (error) {
        sent.delete(name);
        showModules();
        note(message, `${name}: ${problem(error)}`, "error");
      }
    });
    switches.set(name, { input, state, item });
    list.append(item);
  }

  // Not disabled while sending (a panic must never wait, and twice is harmless); the focus
  // moves to the button that takes its place, so the keyboard can undo it at once.
  async function setPanic(engaged, button) {
    const hadFocus = document.activeElement === button;
    try {
      await api("/api/panic", { method: "POST", body: { engaged } });
      sent.set("panic", { value: engaged, until: Date.now() + SETTLE_MS });
      showPanic(engaged, hadFocus);
      note(message, engaged ? "Panic engaged." : "Panic lifted.", "ok");
      refresh();
    } catch (error) {
      note(message, problem(error), "error");
    }
  }

  panicButton.addEventListener("click", () => setPanic(true, panicButton));
  liftButton.addEventListener("click", () => setPanic(false, liftButton));

  return {
    update(status) {
      modules = status.modules || {};
      for (const name of Object.keys(modules)) if (!switches.has(name)) addSwitch(name);
      showPanic(wanted("panic", Boolean(status.panic)));
    },
  };
}
