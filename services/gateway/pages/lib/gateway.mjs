// The pages' way to the gateway: its API (with the page's key) and live events that
// resume where they left off after a disconnect. Plain ES module, no build step.

const params = new URLSearchParams(location.search);

/** The key the page was opened with (`?key=`): sent with every call. */
export const key = params.get("key") || "";

/** A query option of the page, with a default. */
export function option(name, fallback) {
  const value = params.get(name);
  return value === null || value === "" ? fallback : value;
}

function withKey(url) {
  if (!key) return url;
  const full = new URL(url, location.href);
  full.searchParams.set("key", key);
  return full.toString();
}

/** Calls the API; resolves to the JSON answer, or throws an Error with the gateway's message. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(answer.error || `${method} ${path}: HTTP ${response.status}`);
    error.status = response.status;
    error.fields = answer.fields || [];
    throw error;
  }
  return answer;
}

/** The WebSocket URL of a gateway path (ws: or wss: as the page), with the key. */
export function socketUrl(path, query = {}) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  return withKey(url.toString());
}

/**
 * Follows topics live: onEvent({topic, position, message}) for each message, in order.
 * Reconnects by itself (1 s, doubling to 10 s) and resumes after the last position seen,
 * so nothing is missed. onState("open" | "closed" | "error: ...") says how it goes.
 * Returns a function that stops it.
 */
export function follow({ topics, session, audio = false, onEvent, onState = () => {} }) {
  // From the moment it is asked, not from when the socket opens: what is published
  // meanwhile (a page's first click, on a busy machine) is not missed.
  let since = `${Date.now()}-0`;
  let socket = null;
  let stopped = false;
  let delay = 1000;
  const seen = new Set(); // positions of the last moments: a resume may repeat a few

  function connect() {
    socket = new WebSocket(
      socketUrl("/ws/events", {
        topics: topics.join(","),
        session,
        since,
        audio: audio ? "1" : "",
      }),
    );
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.ready) {
        delay = 1000;
        onState("open");
        return;
      }
      if (event.error) {
        onState(`error: ${event.error}`);
        return;
      }
      if (seen.has(event.position)) return;
      seen.add(event.position);
      if (seen.size > 2000) seen.delete(seen.values().next().value);
      since = event.position;
      onEvent(event);
    };
    socket.onclose = () => {
      onState("closed");
      if (stopped) return;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }

  connect();
  return () => {
    stopped = true;
    if (socket) socket.close();
  };
}

/**
 * Reads back the last `backMs` of topics, then follows them live (as follow(), and returns
 * its stop function): how a card opened mid-show shows what happened before it. The
 * read-back has a socket of its own, closed once nothing came for `quietMs`; until then a
 * message may come both ways, so onEvent must keep messages by their message_id.
 */
export function readBackThenFollow({ topics, session, backMs, quietMs = 400, onEvent, onState }) {
  const since = `${Date.now() - backMs}-0`;
  const back = new WebSocket(socketUrl("/ws/events", { topics: topics.join(","), session, since }));
  let quiet = 0;
  back.onmessage = (message) => {
    const event = JSON.parse(message.data);
    clearTimeout(quiet);
    quiet = setTimeout(() => back.close(), quietMs);
    if (event.ready || event.error) return;
    onEvent(event);
  };
  const stop = follow({ topics, session, onEvent, onState });
  return () => {
    clearTimeout(quiet);
    back.close();
    stop();
  };
}
