// The persona card: switch persona file, energy and chaos sliders, family friendly.
// A change goes out as one PersonaChange (POST /api/persona); policy applies it, and the
// status poll shows the live persona. Until policy has applied it, the card shows what
// was sent, and says so.

import { api } from "../lib/gateway.mjs";
import { problem } from "./alerts.mjs";
import { busy, h, note } from "./dom.mjs";

const APPLY_WAIT_MS = 15000; // after this, a change policy did not apply is reported
const SETTLE_KEYS_MS = 350;

export function setupPersona({ refresh }) {
  const name = document.getElementById("persona-name");
  const style = document.getElementById("persona-style");
  const form = document.getElementById("persona-switch");
  const select = document.getElementById("persona-select");
  const message = document.getElementById("persona-note");
  const family = document.getElementById("family-friendly");
  const sliders = ["energy", "chaos"].map((field) => ({
    field,
    input: document.getElementById(field),
    output: document.getElementById(`${field}-value`),
    dragging: false,
    timer: 0,
  }));
  let pending = null; // {fields: {field: value}, until}
  let live = null;

  function shown(field) {
    if (pending && field in pending.fields) return pending.fields[field];
    return live ? live[field] : undefined;
  }

  function render() {
    if (!live) return;
    name.textContent = pending?.fields.name ?? live.name;
    style.textContent = `· ${pending?.fields.style ?? live.style}`;
    for (const slider of sliders) {
      const value = Number(shown(slider.field));
      if (!slider.dragging) slider.input.value = String(value);
      slider.output.textContent = Number(slider.input.value).toFixed(2);
    }
    family.checked = Boolean(shown("family_friendly"));
  }

  async function change(body, what) {
    // Shown at once (a poll meanwhile must not move a slider back), on top of a change
    // policy has not applied yet; confirmed by the answer.
    const before = pending ? pending.fields : {};
    pending = { fields: { ...before, ...(body.edits || {}) }, until: Date.now() + APPLY_WAIT_MS };
    try {
      const answer = await api("/api/persona", { method: "POST", body });
      // A switch changes every field; edits only theirs (the gateway previews them on the
      // live persona, which may not have the switch sent just before yet).
      const changed = body.persona
        ? ["name", "style", "energy", "chaos", "family_friendly", ...Object.keys(body.edits || {})]
        : Object.keys(body.edits || {});
      const fields = { ...(body.persona ? {} : before) };
      for (const field of changed) fields[field] = answer.persona[field];
      pending = { fields, until: Date.now() + APPLY_WAIT_MS };
      note(message, `Sent: ${what}. Policy applies it before its next reply.`, "ok");
      render();
      refresh();
    } catch (error) {
      pending = Object.keys(before).length ? { fields: before, until: pending.until } : null;
      note(message, problem(error), "error");
      render(); // back to what was shown before
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const persona = select.value;
    if (!persona) {
      note(message, "Choose a persona to switch to first.", "error");
      select.focus();
      return;
    }
    busy(form.querySelector("button"), () => change({ persona }, `switch to ${persona}`));
  });
  for (const slider of sliders) {
    const { field, input, output } = slider;
    input.addEventListener("pointerdown", () => (slider.dragging = true));
    input.addEventListener("input", () => {
      slider.dragging = true; // (keys too) until it is sent
      output.textContent = Number(input.value).toFixed(2);
    });
    // "change" comes once the value is let go (mouse up, or each arrow key press): the
    // message waits a moment, so a few key presses in a row send one change.
    input.addEventListener("change", () => {
      slider.dragging = true; // held until sent: a status meanwhile must not move it back
      clearTimeout(slider.timer);
      slider.timer = setTimeout(() => {
        slider.dragging = false;
        const value = Number(input.value);
        change({ edits: { [field]: value } }, `${field} ${value.toFixed(2)}`);
      }, SETTLE_KEYS_MS);
    });
  }
  family.addEventListener("change", () =>
    change({ edits: { family_friendly: family.checked } }, `family friendly ${family.checked ? "on" : "off"}`),
  );

  return {
    update(status) {
      live = status.persona;
      const names = status.personas || [];
      const have = [...select.options].map((o) => o.value);
      if (names.join() !== have.join()) {
        // A first empty choice: which file the live persona came from is not known, and
        // showing one there would read as "this is the current one".
        const chosen = select.value;
        select.replaceChildren(
          h("option", { value: "" }, "choose a persona…"),
          ...names.map((n) => h("option", { value: n }, n)),
        );
        if (names.includes(chosen)) select.value = chosen;
      }
      if (pending) {
        const applied = Object.entries(pending.fields).every(([field, value]) =>
          JSON.stringify(live[field]) === JSON.stringify(value),
        );
        if (applied) {
          pending = null;
          note(message, "Applied by policy.", "ok");
        } else if (Date.now() > pending.until) {
          pending = null;
          note(message, "Policy has not applied the change: is the policy stage running?", "error");
        }
      }
      render();
    },
  };
}
