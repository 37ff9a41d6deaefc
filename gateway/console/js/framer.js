// Capture side, sans-I/O: cuts a stream of mono samples (in blocks of any
// size, 128 from an AudioWorklet) into 960-sample frames (20 ms at 48 kHz).
// Used by capture-worklet.js; pure so it can be tested in node.

export const FRAME_SAMPLES = 960;

export class SampleFramer {
  constructor(frameSamples = FRAME_SAMPLES) {
    this.n = frameSamples;
    this.buf = new Float32Array(frameSamples);
    this.fill = 0;
  }
  /** Adds samples; returns the frames completed (each a new Float32Array). */
  push(samples) {
    const out = [];
    let i = 0;
    while (i < samples.length) {
      const take = Math.min(this.n - this.fill, samples.length - i);
      this.buf.set(samples.subarray(i, i + take), this.fill);
      this.fill += take;
      i += take;
      if (this.fill === this.n) {
        out.push(this.buf);
        this.buf = new Float32Array(this.n);
        this.fill = 0;
      }
    }
    return out;
  }
  /** Drops a partial frame (when capture stops). */
  clear() { this.fill = 0; }
}

/** Root mean square of samples in -1..1 (0 for silence, ~0.707 for a full-scale sine). */
export function rms(samples) {
  if (!samples || samples.length === 0) return 0;
  let s = 0;
  for (let i = 0; i < samples.length; i++) s += samples[i] * samples[i];
  return Math.sqrt(s / samples.length);
}
