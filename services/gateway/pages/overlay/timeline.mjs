// What the character is doing, from the events: each turn's mouth tracks (avatar.expr),
// its chunks' texts (tts.chunk) and where its audio is (playback.progress). No DOM here:
// frame(now) answers what to draw at that moment.
//
// The turn's audio clock is the played_s of the latest "playing" report plus the time
// since it arrived, and advances only while playing, up to the end of the chunk that
// report announced (remaining_s): past it the character is silent until a report says
// it plays on. "paused", "flushed", "finished" stop it at once; so does an "idle"
// avatar.expr, from its offset_s in the turn's audio on (0 for an interrupt: at once;
// the avatar's end-of-reply idle carries the reply's end, which comes when it is played).

const KEEP_TURNS = 16; // turns remembered (a late event of an older one is ignored)
export const CAPTION_LINGER_MS = 2500; // captions stay this long after a turn ends

class Turn {
  constructor(id) {
    this.id = id;
    this.tracks = []; // {offset, fps, values, expression, order}
    this.chunks = new Map(); // index -> {text, duration, words, starts}
    this.idleAt = Infinity; // turn audio (s) from which the mouth stays shut
    this.state = "waiting"; // "playing" | "paused" | "over" once playback reports
    this.base = 0; // played_s of the latest report
    this.since = 0; // when it arrived (ms, performance.now())
    this.limit = Infinity; // the clock stops here (the announced chunk's end)
    this.endedAt = null; // ms when the turn stopped for good (over, or idle reached)
    this.stoppedAt = undefined; // turn audio (s) where an idle stopped it
    this.heard = null; // audio=1: the last position heard
  }

  /** Where the turn's audio is at `now` (s), by the reports. */
  clock(now) {
    if (this.state !== "playing") return this.base;
    return Math.min(this.base + Math.max(0, now - this.since) / 1000, this.limit);
  }

  /** The chunks in order, with where each starts in the turn's audio. */
  placedChunks() {
    const placed = [];
    let start = 0;
    for (const index of [...this.chunks.keys()].sort((a, b) => a - b)) {
      const chunk = this.chunks.get(index);
      placed.push({ ...chunk, index, start });
      start += chunk.duration;
    }
    return placed;
  }
}

/** A chunk's words, each with the share of the chunk's characters before it. */
export function wordsOf(text) {
  const words = text.split(/\s+/).filter(Boolean);
  const total = words.reduce((sum, word) => sum + word.length, 0) + Math.max(0, words.length - 1);
  const starts = [];
  let at = 0;
  for (const word of words) {
    starts.push(total ? at / total : 0);
    at += word.length + 1;
  }
  return { words, starts };
}

/** The words shown once `fraction` of the chunk has played: revealed by characters. */
export function revealed(chunk, fraction) {
  if (fraction <= 0) return "";
  let count = 0;
  while (count < chunk.words.length && chunk.starts[count] <= fraction) count += 1;
  return chunk.words.slice(0, count).join(" ");
}

export class Timeline {
  /** `audioClock(turnId)`: the page's own audio position (audio=1): seconds, or null when
   * nothing of that turn is being heard right now. */
  constructor({ audioClock = null } = {}) {
    this.turns = new Map();
    this.active = null; // the turn playback reported last
    this.audioClock = audioClock;
    this.counter = 0; // arrival order of expressions
    this.shownOrder = 0; // the order of the expression shown now
    this.immediate = null; // {expression, order}: shown at once (an idle while none plays)
  }

  turn(id) {
    const key = id || "-";
    let turn = this.turns.get(key);
    if (!turn) {
      turn = new Turn(key);
      this.turns.set(key, turn);
      if (this.turns.size > KEEP_TURNS) {
        for (const [old] of this.turns) {
          if (old === this.active?.id) continue;
          this.turns.delete(old);
          break;
        }
      }
    }
    return turn;
  }

  onProgress(report, now) {
    const turn = this.turn(report.turn_id);
    this.active = turn;
    turn.base = report.played_s;
    turn.since = now;
    if (report.state === "playing") {
      turn.state = "playing";
      turn.endedAt = null;
      turn.limit = report.remaining_s == null ? Infinity : report.played_s + report.remaining_s;
    } else if (report.state === "paused") {
      turn.state = "paused";
    } else {
      turn.state = "over"; // finished or flushed
      turn.endedAt ??= now;
    }
  }

  /** Returns the expr's state ("speaking", "idle", "blink"); blinks are the page's to draw. */
  onExpression(expr, now) {
    if (expr.state === "blink") return "blink";
    const turn = this.turn(expr.turn_id);
    const track = {
      offset: expr.offset_s,
      fps: expr.fps,
      values: expr.state === "idle" ? [] : expr.mouth_open,
      expression: expr.expression,
      order: ++this.counter,
    };
    turn.tracks.push(track);
    if (expr.state === "idle") {
      turn.idleAt = Math.min(turn.idleAt, expr.offset_s);
      // Already past it (an interrupt's idle has offset 0): the words stop where they are.
      const { clock } = this.clockOf(turn, now);
      if (turn.stoppedAt === undefined && clock >= turn.idleAt) this.stop(turn, clock, now);
      // With nothing playing (say, the page opened mid-reply) its expression shows at once;
      // not for a turn still waiting to play: its own speaking tracks come first; nor for
      // an idle still ahead of a paused reply: the reply goes on from where it stopped.
      const held = this.active && (this.active.state === "playing" ||
        (this.active.state === "paused" && turn.stoppedAt === undefined));
      if (turn.state !== "waiting" && !held) this.immediate = track;
    }
    return expr.state;
  }

  onChunk(chunk) {
    const turn = this.turn(chunk.turn_id);
    const duration = chunk.duration_s ?? 0; // /ws/events sends it in place of the PCM
    turn.chunks.set(chunk.index, { text: chunk.text, duration, ...wordsOf(chunk.text) });
  }

  /**
   * What to draw at `now` (ms, performance.now()): {mouth 0..1, expression (a tag to show
   * now, or null: unchanged), caption, clock (the turn's audio, s, or null), speaking,
   * track ({order, frame, due}: the mouth-track frame shown, for the frame-lag figures)}.
   */
  frame(now) {
    const result = { mouth: 0, expression: null, caption: "", clock: null, speaking: false, track: null };
    if (this.immediate && this.immediate.order > this.shownOrder) {
      result.expression = this.immediate.expression;
      this.shownOrder = this.immediate.order;
    }
    const turn = this.active;
    if (!turn || turn.state === "waiting") return result;
    let { clock, audible } = this.clockOf(turn, now);
    // Reached the end-of-reply idle while playing: stop right there.
    if (turn.stoppedAt === undefined && clock >= turn.idleAt) this.stop(turn, turn.idleAt, now);
    if (turn.stoppedAt !== undefined) clock = Math.min(clock, turn.stoppedAt);
    result.clock = clock;

    // The expression: the latest track (or idle) whose place in the audio has come.
    let shown = null;
    for (const track of turn.tracks) {
      if (track.offset > clock + 1e-6) continue;
      const later = !shown || track.offset > shown.offset
        || (track.offset === shown.offset && track.order > shown.order);
      if (later) shown = track;
    }
    if (shown && shown.order > this.shownOrder) {
      result.expression = shown.expression;
      this.shownOrder = shown.order;
    }

    if (audible && turn.stoppedAt === undefined) {
      result.speaking = true;
      for (const track of turn.tracks) {
        const frame = Math.floor((clock - track.offset) * track.fps + 1e-9);
        if (frame >= 0 && frame < track.values.length) {
          result.mouth = track.values[frame];
          result.track = { order: track.order, frame, due: track.offset + frame / track.fps };
        }
      }
    }
    result.caption = this.caption(turn, clock, now);
    return result;
  }

  /** The turn's audio position (s) and whether it is being heard now. */
  clockOf(turn, now) {
    if (!this.audioClock) {
      // At the end of the announced chunk it is silent until the next report comes.
      const clock = turn.clock(now);
      return { clock, audible: turn.state === "playing" && clock < turn.limit };
    }
    // The page plays the audio itself: the mouth follows what is heard, not the reports.
    const heard = this.audioClock(turn.id);
    if (heard !== null) turn.heard = heard;
    return { clock: turn.heard ?? turn.base, audible: heard !== null && turn.state === "playing" };
  }

  stop(turn, clock, now) {
    turn.stoppedAt = clock;
    turn.endedAt ??= now;
  }

  caption(turn, clock, now) {
    if (turn.endedAt !== null && now - turn.endedAt > CAPTION_LINGER_MS) return "";
    const chunks = turn.placedChunks();
    for (const [k, chunk] of chunks.entries()) {
      if (clock < chunk.start + chunk.duration) {
        const shown = revealed(chunk, chunk.duration > 0 ? (clock - chunk.start) / chunk.duration : 1);
        // Between two chunks (the next not begun): the last sentence stays, no flicker.
        return shown || (k > 0 ? chunks[k - 1].words.join(" ") : "");
      }
    }
    // Past every chunk known: the last one, whole, until the turn's end clears it.
    return chunks.length ? chunks[chunks.length - 1].words.join(" ") : "";
  }
}
