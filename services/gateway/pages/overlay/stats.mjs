// window.overlayStats: a small read-only record of what the page drew, for the tests and
// the frame benchmark (benchmarks/overlay_frames.py). Bounded, so a page left running in
// OBS for days does not grow.

const KEEP = 3600; // about a minute of frames at 60 fps

function push(list, value) {
  list.push(value);
  if (list.length > KEEP) list.splice(0, list.length - KEEP);
}

export class FrameStats {
  constructor() {
    this.reset();
  }

  /** Starts afresh (the benchmark calls it when the reply it measures begins). */
  reset() {
    this.frames = 0; // animation frames so far
    this.intervals = []; // ms between frames (requestAnimationFrame timestamps)
    this.work = []; // ms spent in each frame's callback
    this.trackDelays = []; // ms from a mouth-track frame's due time to the frame showing it
    this.log = []; // per frame: {n, t, clock, mouth, eyes, expression, caption}
    this.events = []; // per event: {topic, state, at, frame (frames drawn before it came)}
    this.lastTime = null;
    this.lastTrack = "";
  }

  event(topic, state, at) {
    push(this.events, { topic, state, at, frame: this.frames });
  }

  frame(time, now, workMs, state, eyes, expression) {
    this.frames += 1;
    if (this.lastTime !== null) push(this.intervals, time - this.lastTime);
    this.lastTime = time;
    push(this.work, workMs);
    if (state.track) {
      const key = `${state.track.order}:${state.track.frame}`;
      if (key !== this.lastTrack) push(this.trackDelays, (state.clock - state.track.due) * 1000);
      this.lastTrack = key;
    }
    push(this.log, {
      n: this.frames,
      t: now,
      clock: state.clock,
      mouth: state.mouth,
      eyes,
      expression,
      caption: state.caption,
    });
  }
}
