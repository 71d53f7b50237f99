// Show the character a picture: a file from this computer, or a snapshot from its camera,
// sent to POST /api/vision. The gateway looks at it and publishes what it saw (faces, a
// cat, the light, the main colours) as vision.observation; the card shows that answer.
//
// The picture is shrunk here first (at most SIDE pixels, JPEG): the detector looks at no
// more than that, the upload stays small enough for the gateway's body limit, and the
// file's metadata (where a phone photo was taken) never leaves the browser.

import { key } from "../lib/gateway.mjs";
import { problem } from "./alerts.mjs";
import { busy, clock, h, note } from "./dom.mjs";

const SIDE = 640;
const UPLOAD_BYTES = 60_000; // under the gateway's default 64 KB body limit
const QUALITIES = [0.85, 0.7, 0.55, 0.4];

/** A drawable (image bitmap, video) as a JPEG blob of at most SIDE pixels and, where a
 * lower quality gets it there, UPLOAD_BYTES. */
async function shrunk(source, width, height) {
  const scale = Math.min(1, SIDE / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  canvas.getContext("2d").drawImage(source, 0, 0, canvas.width, canvas.height);
  let blob = null;
  for (const quality of QUALITIES) {
    blob = await new Promise((done) => canvas.toBlob(done, "image/jpeg", quality));
    if (!blob) throw new Error("this browser could not encode the picture");
    if (blob.size <= UPLOAD_BYTES) break;
  }
  return blob;
}

async function send(blob, session) {
  const headers = { "Content-Type": blob.type, Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(`/api/vision?${new URLSearchParams({ session })}`, {
    method: "POST", headers, body: blob,
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(answer.error || `POST /api/vision: HTTP ${response.status}`);
    error.status = response.status;
    error.fields = answer.fields || [];
    throw error;
  }
  return answer;
}

/** "2 faces", "a cat", as chips; how sure, on hover and for screen readers. */
function labelChips(objects) {
  return objects.map(({ label, count, confidence }) => {
    const sure = `${Math.round(confidence * 100)}% sure`;
    return h("li", { class: "vision-label", title: sure, "data-label": label },
      h("b", {}, String(count)), ` ${label}${count === 1 ? "" : "s"}`,
      h("span", { class: "visually-hidden" }, ` (${sure})`));
  });
}

export function setupVision({ session }) {
  const card = document.getElementById("vision");
  const file = document.getElementById("vision-file");
  const cameraButton = document.getElementById("vision-camera");
  const live = document.getElementById("vision-live");
  const video = document.getElementById("vision-video");
  const snap = document.getElementById("vision-snap");
  const stop = document.getElementById("vision-stop");
  const seen = document.getElementById("vision-seen");
  const thumb = document.getElementById("vision-thumb");
  const message = document.getElementById("vision-note");
  let stream = null;
  let thumbUrl = "";

  function show(answer, blob) {
    const observation = answer.message;
    URL.revokeObjectURL(thumbUrl);
    thumbUrl = URL.createObjectURL(blob);
    thumb.src = thumbUrl;
    document.getElementById("vision-description").textContent = observation.description;
    const labels = document.getElementById("vision-labels");
    labels.replaceChildren(...labelChips(observation.objects));
    labels.hidden = observation.objects.length === 0;
    const when = document.getElementById("vision-when");
    when.dateTime = observation.created_at;
    when.textContent = clock(observation.created_at);
    document.getElementById("vision-size").textContent =
      `${observation.width}×${observation.height} · ${Math.round(answer.look_ms)} ms`;
    seen.hidden = false;
    card.dataset.seen = observation.message_id;
  }

  async function look(blob) {
    note(message, "Looking…");
    try {
      const answer = await send(blob, session);
      show(answer, blob);
      note(message, "The character has been told what the picture shows.", "ok");
    } catch (error) {
      note(message, problem(error), "error");
    }
  }

  file.addEventListener("change", async () => {
    const chosen = file.files?.[0];
    file.value = ""; // the same file chosen again is a new look
    if (!chosen) return;
    let bitmap;
    try {
      bitmap = await createImageBitmap(chosen);
    } catch {
      note(message, `${chosen.name} is not a picture this browser can open.`, "error");
      return;
    }
    const blob = await shrunk(bitmap, bitmap.width, bitmap.height);
    bitmap.close();
    await look(blob);
  });

  function closeCamera() {
    for (const track of stream?.getTracks() || []) track.stop();
    stream = null;
    video.srcObject = null;
    live.hidden = true;
    cameraButton.hidden = false;
  }

  // Only where a camera can be asked for at all (a secure page: https or localhost).
  if (navigator.mediaDevices?.getUserMedia) {
    cameraButton.hidden = false;
    cameraButton.addEventListener("click", () => busy(cameraButton, async () => {
      try {
        stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
      } catch (error) {
        note(message, `No camera: ${error.message || error.name}.`, "error");
        return;
      }
      video.srcObject = stream;
      live.hidden = false;
      cameraButton.hidden = true;
      note(message, "");
      snap.focus();
    }));
    snap.addEventListener("click", () => busy(snap, async () => {
      if (!video.videoWidth) return; // no frame yet
      const blob = await shrunk(video, video.videoWidth, video.videoHeight);
      await look(blob);
    }));
    stop.addEventListener("click", closeCamera);
  }
}
