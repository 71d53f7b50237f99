// Small helpers the panel's cards share: build elements, say how a call went, draw
// bursts of events once, order messages.

/** An element: h("li", {class: "x", "data-ok": true}, "text", child...). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Sets a note's text; kind "error" or "ok" colours it (and screen readers hear it: the
 * notes are aria-live). */
export function note(element, text, kind = "") {
  element.textContent = text;
  if (kind) element.dataset.kind = kind;
  else delete element.dataset.kind;
}

/** "12:03:04" for a Unix time in seconds (or an ISO string). */
export function clock(when) {
  const date = typeof when === "number" ? new Date(when * 1000) : new Date(when);
  return Number.isNaN(date.getTime()) ? String(when) : date.toLocaleTimeString();
}

/** Runs an async action from a button: disabled meanwhile, so a double click sends once. */
export async function busy(button, action) {
  button.disabled = true;
  try {
    return await action();
  } finally {
    button.disabled = false;
  }
}

/** A function that asks for draw() at the next frame, once however often it is called:
 * events come in bursts (a read-back, a busy chat), the card is drawn once a frame. */
export function drawOncePerFrame(draw) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      draw();
    });
  };
}

/** A created_at as microseconds: Date.parse stops at milliseconds, and a burst of messages
 * shares one millisecond. */
function micros(createdAt) {
  const fraction = /\.(\d+)/.exec(createdAt)?.[1] ?? "";
  return Date.parse(createdAt) * 1000 + (Number(fraction.padEnd(6, "0").slice(3, 6)) || 0);
}

/** The newest `count` messages, newest first (by their created_at; of two made in the same
 * microsecond, the one that came later). */
export function newestFirst(messages, count) {
  return [...messages]
    .reverse()
    .sort((a, b) => micros(b.created_at) - micros(a.created_at))
    .slice(0, count);
}
