// audio=1: the page is the session's speaker. It opens /ws/audio (routes/audio.py), plays
// each 20 ms block with the Web Audio API behind a small buffer, and says which part of
// which turn is being heard at any moment, so the mouth follows the sound itself. The
// gateway runs playback's logic for the socket and reports playback.progress for it.

import { socketUrl } from "../lib/gateway.mjs";

const BUFFER_S = 0.1; // against network jitter, as routes/audio.py advises
const RETRY_MS = [1000, 2000, 4000, 8000];
const POLICY_VIOLATION = 1008; // the gateway refused the socket: retrying would not help

export class Speaker {
  /** onReport(report): playing/paused/flushed/finished; onState(text): how it goes. */
  constructor({ session, onReport, onState }) {
    this.session = session;
    this.onReport = onReport;
    this.onState = onState;
    this.context = null;
    this.socket = null;
    this.turn = null;
    this.rate = 24000;
    this.nextTime = 0; // context time the next block starts
    this.positions = new Map(); // turn -> seconds of its audio received
    this.segments = []; // {start, end, turn, from}: what plays when (context time)
    this.sources = new Set();
    this.retries = 0;
    this.socketReady = false;
    this.stats = { blocks: 0, rebuffers: 0 };
  }

  start() {
    this.context = new AudioContext({ latencyHint: "interactive" });
    this.context.onstatechange = () => this.sayState();
    this.connect();
  }

  /** "ready" once the socket is the session's speaker and sound can play. */
  sayState() {
    if (this.context.state !== "running") this.onState(`audio ${this.context.state}`);
    else this.onState(this.socketReady ? "ready" : "connecting");
  }

  /** A browser that blocks sound until a click: the page's button calls this. */
  resume() {
    return this.context.resume();
  }

  connect() {
    const socket = new WebSocket(socketUrl("/ws/audio", { session: this.session, rate: 16000 }));
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onmessage = (message) => {
      if (typeof message.data === "string") this.onText(JSON.parse(message.data));
      else this.onAudio(message.data);
    };
    socket.onclose = (event) => {
      this.socketReady = false;
      this.silence();
      if (event.code === POLICY_VIOLATION) {
        this.onState(`refused: ${event.reason || "the gateway closed the audio socket"}`);
        return;
      }
      this.onState("connecting");
      setTimeout(() => this.connect(), RETRY_MS[Math.min(this.retries++, RETRY_MS.length - 1)]);
    };
  }

  onText(message) {
    if (message.error) {
      this.onState(`refused: ${message.error}`);
      return;
    }
    if (message.type === "ready") {
      this.retries = 0;
      this.socketReady = true;
      this.sayState();
    } else if (message.type === "chunk") {
      this.turn = message.turn_id;
      this.rate = message.sample_rate;
    } else if (["playing", "paused", "flushed", "finished"].includes(message.type)) {
      // Blocks stop coming on a pause or flush: what is buffered stops too, so the sound
      // and the mouth stop together.
      if (message.type === "paused" || message.type === "flushed") this.silence();
      this.onReport({ ...message, state: message.type });
    }
  }

  onAudio(data) {
    const context = this.context;
    const samples = new Int16Array(data);
    if (!samples.length || this.turn === null) return;
    const buffer = context.createBuffer(1, samples.length, this.rate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i += 1) channel[i] = samples[i] / 32768;
    if (this.nextTime < context.currentTime + 0.005) {
      // The first block, or one that came late: start again behind a fresh buffer.
      if (this.nextTime > 0) this.stats.rebuffers += 1;
      this.nextTime = context.currentTime + BUFFER_S;
    }
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    source.start(this.nextTime);
    source.onended = () => this.sources.delete(source);
    this.sources.add(source);
    const from = this.positions.get(this.turn) ?? 0;
    this.segments.push({ start: this.nextTime, end: this.nextTime + buffer.duration, turn: this.turn, from });
    this.positions.set(this.turn, from + buffer.duration);
    this.nextTime += buffer.duration;
    this.stats.blocks += 1;
  }

  silence() {
    for (const source of this.sources) source.stop();
    this.sources.clear();
    this.segments = [];
    this.nextTime = 0;
  }

  /** The context time being heard now (what left the speakers, not what was scheduled). */
  heardTime() {
    const context = this.context;
    const stamp = context.getOutputTimestamp ? context.getOutputTimestamp() : null;
    if (stamp && stamp.performanceTime > 0) {
      return stamp.contextTime + (performance.now() - stamp.performanceTime) / 1000;
    }
    return context.currentTime - (context.outputLatency || 0);
  }

  /** Seconds into `turn`'s audio being heard now, or null when none of it is. */
  clock(turn) {
    if (!this.context || !this.segments.length) return null;
    const now = this.heardTime();
    while (this.segments.length && this.segments[0].end < now - 1) this.segments.shift();
    for (let i = this.segments.length - 1; i >= 0; i -= 1) {
      const segment = this.segments[i];
      if (segment.start <= now && now < segment.end) {
        return segment.turn === turn ? segment.from + (now - segment.start) : null;
      }
    }
    return null;
  }
}
