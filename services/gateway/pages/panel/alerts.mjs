// The banner at the top for what the operator must fix before anything works: a missing
// or read-only key, or a gateway that does not answer. Other errors stay in their card.

import { h } from "./dom.mjs";

const shown = new Map(); // what -> element

function show(what, ...content) {
  const area = document.getElementById("alerts");
  let element = shown.get(what);
  if (!element) {
    element = h("p", { class: "alert", "data-alert": what });
    shown.set(what, element);
    area.append(element);
  }
  element.replaceChildren(...content);
}

export function clearAlert(what) {
  shown.get(what)?.remove();
  shown.delete(what);
}

/** The alert an API error calls for (401/403/unreachable); true when it was one of those. */
export function alertFor(error) {
  if (error.status === 401) {
    show(
      "key",
      h("strong", {}, "This gateway needs a key. "),
      "Open this page with ",
      h("code", {}, "?key=YOUR_KEY"),
      " at the end of its address (the operator key controls the character; the read key only watches).",
    );
    return true;
  }
  if (error.status === 403) {
    show(
      "read-only",
      h("strong", {}, "This key may only watch. "),
      "To control the character, open this page with ",
      h("code", {}, "?key=OPERATOR_KEY"),
      ".",
    );
    return true;
  }
  if (error.status === undefined && error instanceof TypeError) { // fetch itself failed
    show("offline", h("strong", {}, "The gateway does not answer. "), "Is Marionette running?");
    return true;
  }
  return false;
}

/** What to write in a card's note about a failed call (the banner covers keys). */
export function problem(error) {
  alertFor(error);
  if (error.status === 401 || error.status === 403) return "Not allowed with this key (see above).";
  const fields = (error.fields || []).map((f) => `${f.field}: ${f.problem}`).join("; ");
  return fields ? `${error.message} (${fields})` : error.message;
}
