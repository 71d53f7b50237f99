// The overlay as OBS shows it (/overlay, 1920x1080), scaled down into its card. The
// "Show" switch removes the frame altogether: a hidden overlay still plays and animates.

import { key } from "../lib/gateway.mjs";
import { h } from "./dom.mjs";

export function setupPreview({ session }) {
  const box = document.getElementById("preview-frame");
  const show = document.getElementById("preview-on");
  const link = document.getElementById("overlay-link");
  const query = new URLSearchParams({ session });
  if (key) query.set("key", key);
  const address = `/overlay?${query}`;
  link.href = address;

  function fit() {
    const frame = box.querySelector("iframe");
    if (frame) frame.style.transform = `scale(${box.clientWidth / 1920})`;
  }

  function render() {
    box.hidden = !show.checked;
    if (!show.checked) {
      box.replaceChildren();
      return;
    }
    // Not focusable: the preview only shows; the link above opens the real one.
    box.replaceChildren(h("iframe", { src: address, title: "Overlay preview", tabindex: "-1", loading: "lazy" }));
    fit();
  }

  new ResizeObserver(fit).observe(box);
  show.addEventListener("change", render);
  render();
}
