// Receive side of voice, sans-I/O: a per-group jitter buffer that turns
// datagrams arriving at uneven times into one Opus frame (or a gap) every
// 20 ms, 60 ms behind the first arrival of a burst (PROTOCOL.md section 4).
//
// When to call: `push` for every voice datagram of the group, `pull(now)`
// from a timer (every 10 ms or so); pull returns the frames due by `now`, in
// order, each `{burst, seq, data, end}` where `data` null means lost (the
// decoder conceals it). No clock of its own: every time comes in as `now`.

export const FRAME_MS = 20;

/** Signed distance from seq `b` to seq `a` on the u16 circle. */
export function seqDiff(a, b) {
  return ((((a - b) & 0xffff) + 0x8000) & 0xffff) - 0x8000;
}

export class JitterBuffer {
  /**
   * @param {object} o
   * @param {number} [o.delayMs=60] playout delay behind the first frame
   * @param {number} [o.maxFrames=25] frames held at most (500 ms); over it the oldest are skipped
   * @param {number} [o.stallMs=600] a burst with no frame for this long ends (its END was lost)
   */
  constructor({ delayMs = 60, maxFrames = 25, stallMs = 600 } = {}) {
    this.delayMs = delayMs;
    this.maxFrames = maxFrames;
    this.stallMs = stallMs;
    this.stats = { pushed: 0, late: 0, duplicate: 0, lost: 0, skipped: 0, stale: 0 };
    this.ended = new Set(); // recent finished bursts, so their stragglers are dropped
    this.reset();
  }

  reset() {
    this.burst = null;
    this.frames = new Map();
    this.nextSeq = 0;
    this.playAt = 0;
    this.started = false;
    this.lastArrival = 0;
  }

  /** Whether a burst is being played out. */
  get active() { return this.burst !== null; }

  /** Adds one frame. Returns false when it was dropped (late, duplicate, stale). */
  push(header, data, now) {
    this.stats.pushed++;
    const { burst, seq } = header;
    const end = (header.flags & 1) !== 0;
    if (this.burst !== burst) {
      if (this.ended.has(burst)) { this.stats.stale++; return false; }
      if (this.burst !== null) this.finish();
      this.burst = burst;
      this.nextSeq = seq;
      this.playAt = now + this.delayMs;
    }
    this.lastArrival = now;
    const d = seqDiff(seq, this.nextSeq);
    if (d < 0) {
      // Before playout began an early-numbered frame may still be placed (reordering at the start).
      if (!this.started && d >= -3) {
        this.nextSeq = seq;
      } else {
        this.stats.late++;
        return false;
      }
    }
    if (this.frames.has(seq)) { this.stats.duplicate++; return false; }
    this.frames.set(seq, { data, end });
    // Bound the latency: past maxFrames ahead, skip to the newest frames.
    const span = seqDiff(seq, this.nextSeq);
    if (span >= this.maxFrames) {
      const newStart = (seq - this.maxFrames + 1 + 0x10000) & 0xffff;
      for (const s of [...this.frames.keys()]) {
        if (seqDiff(s, newStart) < 0) { this.frames.delete(s); this.stats.skipped++; }
      }
      this.nextSeq = newStart;
      if (this.playAt > now) this.playAt = now;
    }
    return true;
  }

  /** The frames due by `now`, oldest first. */
  pull(now) {
    const out = [];
    while (this.burst !== null && this.playAt <= now) {
      const f = this.frames.get(this.nextSeq);
      if (f) {
        this.frames.delete(this.nextSeq);
        out.push({ burst: this.burst, seq: this.nextSeq, data: f.data, end: f.end });
        this.started = true;
        this.nextSeq = (this.nextSeq + 1) & 0xffff;
        this.playAt += FRAME_MS;
        if (f.end) { this.finish(); break; }
        continue;
      }
      if (this.frames.size === 0) {
        // Starved: wait for the next frame, or give the burst up when it stalled.
        if (now - this.lastArrival >= this.stallMs) {
          out.push({ burst: this.burst, seq: this.nextSeq, data: null, end: true, stalled: true });
          this.finish();
        } else {
          this.playAt = now + 1;
        }
        break;
      }
      // A gap with later frames waiting: the frame is lost, conceal it.
      this.stats.lost++;
      out.push({ burst: this.burst, seq: this.nextSeq, data: null, end: false });
      this.started = true;
      this.nextSeq = (this.nextSeq + 1) & 0xffff;
      this.playAt += FRAME_MS;
    }
    return out;
  }

  /** Ends the current burst (END played, stalled, or a new burst began). */
  finish() {
    if (this.burst !== null) {
      this.ended.add(this.burst);
      if (this.ended.size > 8) this.ended.delete(this.ended.values().next().value);
    }
    this.reset();
  }
}
