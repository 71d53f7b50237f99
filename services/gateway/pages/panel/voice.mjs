// Talking to the character from this browser: the microphone goes to /ws/audio as mono
// s16le at the audio context's rate (capture.worklet.mjs makes the 20 ms blocks), and the
// socket's replies (a chunk header, then its PCM in 20 ms blocks, paced by the gateway)
// are played here with the Web Audio API, behind a small lead against network jitter.
//
// Push-to-talk sends while the button is held, then {"type": "end"} (asr ends the
// utterance at once); open mic sends all the time and asr finds the pauses. While the
// socket is open it is the session's speaker (local playback leaves the session alone),
// so "Hang up" closes it and gives the session back to the local speakers.

import { socketUrl } from "../lib/gateway.mjs";

const RATES = [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000]; // /ws/audio's
const LEAD_S = 0.1;
const KEEP_TURNS = 3; // replies whose audio stays readable (window.marionettePanel, tests)
const KEEP_BYTES = 8 * 1024 * 1024;

export function setupVoice({ session }) {
  const card = document.getElementById("voice");
  const ptt = document.getElementById("ptt");
  const openMic = document.getElementById("open-mic");
  const hangUp = document.getElementById("hang-up");
  const stateText = document.getElementById("voice-state");
  const heard = document.getElementById("voice-heard");
  const reply = document.getElementById("voice-reply");
  const meter = document.getElementById("mic-level");

  let audio = null; // {context, stream} once the microphone is ours
  let audioStarting = null;
  let socket = null;
  let connecting = null;
  let holding = false; // push-to-talk held
  let sending = false;
  let current = null; // the turn whose blocks are coming
  let nextTime = 0; // where the next block starts, in the audio context's time
  const scheduled = new Set(); // blocks scheduled or playing (stopped on a flush)
  const turns = new Map(); // turn -> {rate, bytes, blocks, texts}

  function say(text, state) {
    stateText.textContent = text;
    if (state) card.dataset.state = state;
  }

  function show(element, text) {
    element.textContent = text || "…";
    element.classList.toggle("muted", !text);
  }

  // --- the microphone ------------------------------------------------------------------

  async function startAudio() {
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
      throw new Error(
        "The browser gives the microphone only to pages on https:// or http://localhost: " +
          "open the panel that way (e.g. through an HTTPS proxy) to talk from this machine.",
      );
    }
    let context = new AudioContext({ latencyHint: "interactive" });
    if (!RATES.includes(context.sampleRate)) {
      await context.close();
      context = new AudioContext({ latencyHint: "interactive", sampleRate: 48000 });
    }
    await context.audioWorklet.addModule(new URL("./capture.worklet.mjs", import.meta.url));
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    const node = new AudioWorkletNode(context, "mic-capture", {
      processorOptions: { blockSamples: Math.round(context.sampleRate / 50) },
    });
    node.port.onmessage = ({ data }) => {
      meter.style.width = `${Math.min(100, Math.round(Math.sqrt(data.peak) * 100))}%`;
      if (sending && socket?.readyState === WebSocket.OPEN) socket.send(data.pcm);
    };
    context.createMediaStreamSource(stream).connect(node);
    node.connect(context.destination); // keeps the node pulled; it outputs silence
    await context.resume();
    audio = { context, stream };
    return audio;
  }

  function ensureAudio() {
    audioStarting ??= startAudio().catch((error) => {
      audioStarting = null;
      throw error;
    });
    return audioStarting;
  }

  // --- the socket ------------------------------------------------------------------------

  function connect(rate) {
    connecting ??= new Promise((resolve, reject) => {
      const ws = new WebSocket(socketUrl("/ws/audio", { session, rate }));
      ws.binaryType = "arraybuffer";
      let ready = false;
      let refusal = "";
      ws.onmessage = (message) => {
        if (typeof message.data !== "string") return block(message.data);
        const event = JSON.parse(message.data);
        if (event.type === "ready") {
          ready = true;
          socket = ws;
          hangUp.hidden = false;
          resolve(ws);
        } else if (event.error) {
          refusal = event.error;
        } else {
          progress(event);
        }
      };
      ws.onclose = (closed) => {
        connecting = null;
        if (socket === ws) socket = null;
        sending = false;
        hangUp.hidden = true;
        showTalking();
        const why = refusal || closed.reason;
        if (!ready) {
          // A refused handshake says nothing to the page: the key is the usual cause.
          reject(new Error(why || "The gateway refused the audio connection: the microphone needs the operator key (open this page with ?key=OPERATOR_KEY)."));
        } else if (ws.hungUp) {
          say("Hung up: this session plays on the local speakers again.", "idle");
        } else {
          say(`Disconnected${why ? `: ${why}` : " from the gateway"}. Press to talk again.`, "idle");
        }
      };
    });
    return connecting;
  }

  // --- the speaker -----------------------------------------------------------------------

  function turnOf(id, rate) {
    let turn = turns.get(id);
    if (!turn) {
      turn = { rate, bytes: 0, blocks: [], texts: [], playedS: 0 };
      turns.set(id, turn);
      while (turns.size > KEEP_TURNS) turns.delete(turns.keys().next().value);
    }
    return turn;
  }

  function block(buffer) {
    const id = current;
    const turn = id && turns.get(id);
    if (!turn) return;
    turn.bytes += buffer.byteLength;
    if (turn.bytes <= KEEP_BYTES) turn.blocks.push(buffer);
    card.dataset.receivedBytes = String(turn.bytes);
    const context = audio?.context;
    if (!context) return;
    const samples = new Int16Array(buffer);
    const floats = new Float32Array(samples.length);
    for (let i = 0; i < samples.length; i++) floats[i] = samples[i] / 32768;
    const sound = context.createBuffer(1, floats.length, turn.rate);
    sound.copyToChannel(floats, 0);
    const source = context.createBufferSource();
    source.buffer = sound;
    source.connect(context.destination);
    const at = Math.max(nextTime, context.currentTime + LEAD_S);
    source.start(at);
    nextTime = at + sound.duration;
    scheduled.add(source);
    source.onended = () => {
      scheduled.delete(source);
      if (source.cut) return;
      // What the audio clock really played (a test can tell the reply was heard).
      turn.playedS += sound.duration;
      if (card.dataset.turn === id) card.dataset.playedS = turn.playedS.toFixed(3);
    };
  }

  function silence() {
    for (const source of scheduled) {
      source.cut = true;
      source.stop();
    }
    scheduled.clear();
    nextTime = 0;
  }

  function progress(event) {
    if (event.type === "chunk") {
      current = event.turn_id;
      const turn = turnOf(current, event.sample_rate);
      turn.rate = event.sample_rate;
      turn.texts[event.index] = event.text;
      const text = turn.texts.filter(Boolean).join(" ");
      card.dataset.turn = current;
      card.dataset.replyText = text;
      card.dataset.receivedBytes = String(turn.bytes);
      card.dataset.playedS = turn.playedS.toFixed(3);
      show(reply, text);
      say("Replying…", "replying");
    } else if (event.type === "playing") {
      say("Playing the reply.", "replying");
    } else if (event.type === "paused") {
      say("Paused: someone is talking over it.", "paused");
    } else if (event.type === "flushed") {
      silence();
      say(`Interrupted after “${event.heard_text || ""}”.`, "interrupted");
    } else if (event.type === "finished") {
      card.dataset.finished = event.turn_id;
      say(openMic.checked ? "Listening (open mic)." : "Your turn: hold the button to answer.", "finished");
    }
  }

  // --- talking ---------------------------------------------------------------------------

  function showTalking() {
    ptt.setAttribute("aria-pressed", String(holding));
    ptt.querySelector(".ptt-label").textContent = holding ? "Talking… let go to send" : "Hold to talk";
  }

  async function begin() {
    showTalking();
    try {
      const { context } = await ensureAudio();
      await connect(context.sampleRate);
    } catch (error) {
      holding = false;
      openMic.checked = false;
      showTalking();
      say(error.message, "error");
      return;
    }
    if (!(holding || openMic.checked)) {
      // Let go while connecting (or while answering the browser's question).
      say("Microphone ready: hold the button and talk.", "idle");
      return;
    }
    sending = true;
    say(openMic.checked ? "Listening (open mic)." : "Listening… let go when you are done.", "listening");
  }

  function end() {
    showTalking();
    if (holding || openMic.checked || !sending) return;
    sending = false;
    // asr ends the utterance now, instead of waiting for silence.
    if (socket?.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "end" }));
    say("Thinking…", "waiting");
  }

  ptt.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    ptt.setPointerCapture(event.pointerId);
    holding = true;
    begin();
  });
  for (const name of ["pointerup", "pointercancel", "lostpointercapture"]) {
    ptt.addEventListener(name, () => {
      if (!holding) return;
      holding = false;
      end();
    });
  }
  ptt.addEventListener("contextmenu", (event) => event.preventDefault()); // long press
  ptt.addEventListener("keydown", (event) => {
    if (event.key !== " " && event.key !== "Enter") return;
    event.preventDefault();
    if (event.repeat || holding) return;
    holding = true;
    begin();
  });
  ptt.addEventListener("keyup", (event) => {
    if (event.key !== " " && event.key !== "Enter") return;
    event.preventDefault();
    holding = false;
    end();
  });
  openMic.addEventListener("change", () => (openMic.checked ? begin() : end()));
  hangUp.addEventListener("click", () => {
    openMic.checked = false;
    holding = false;
    sending = false;
    silence();
    if (socket) {
      socket.hungUp = true;
      socket.close();
    }
    for (const track of audio?.stream.getTracks() || []) track.stop();
    audio?.context.close();
    audio = null;
    audioStarting = null;
    meter.style.width = "0%";
    showTalking();
  });

  // For tests and debugging: the audio of the last replies as the page received it.
  window.marionettePanel ??= {};
  window.marionettePanel.voice = {
    reply(turnId) {
      const turn = turns.get(turnId);
      if (!turn) return null;
      const bytes = new Uint8Array(turn.bytes);
      let offset = 0;
      for (const piece of turn.blocks) {
        bytes.set(new Uint8Array(piece), offset);
        offset += piece.byteLength;
      }
      let binary = "";
      for (let i = 0; i < offset; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, Math.min(i + 0x8000, offset)));
      return { rate: turn.rate, bytes: turn.bytes, text: turn.texts.filter(Boolean).join(" "), pcm: btoa(binary) };
    },
    contextTime: () => audio?.context.currentTime ?? null,
  };

  return {
    /** Live events of every session: what was heard in this one. */
    event({ topic, message }) {
      if (message.session_id !== session) return;
      if (topic === "asr.partial") show(heard, message.text);
      else if (topic === "asr.final") {
        show(heard, message.text);
        if (card.dataset.state === "waiting" || card.dataset.state === "listening") say("Thinking…", "waiting");
      }
    },
  };
}
