// Voice in the browser (CONSOLE.md "Voice in the browser"): microphone
// capture through an AudioWorklet into a WebCodecs Opus encoder (48 kHz mono,
// 20 ms, 24 kbit/s), and per group an Opus AudioDecoder behind a 60 ms jitter
// buffer into a GainNode (volume, mute, scan-priority ducking).
// Browser only; the timing logic is in jitter.js and framer.js.

import { decodeVoice } from './codec.js';
import { JitterBuffer } from './jitter.js';
import { rms } from './framer.js';
import { mark, wallMs } from './timing.js';

export const DUCK_GAIN = 0.15;
const ACTIVE_MS = 400;

export class Voice {
  /**
   * @param {object} stats the hook stats object (framesReceived, framesDecoded, decodeErrors, lastRms, captureRms)
   * @param {function} onEncoded called with each encoded Opus packet (Uint8Array) while capturing
   * @param {function} timing returns the latency marks to record into (timing.js), or null when off
   */
  constructor(stats, onEncoded, timing = () => null) {
    this.stats = stats;
    this.onEncoded = onEncoded;
    this.timing = timing;
    this.ctx = null;
    this.channels = new Map();
    this.capturing = false;
    this.mic = null;
    this.encoder = null;
    this.timer = null;
    this.captureTs = 0;
    this.listeners = new Set();
  }

  /** Creates or resumes the AudioContext; call from a user gesture (sign-in click, PTT press). */
  ensureContext() {
    if (!this.ctx) {
      this.ctx = new AudioContext({ sampleRate: 48000, latencyHint: 'interactive' });
      this.master = this.ctx.createGain();
      this.master.connect(this.ctx.destination);
      this.timer = setInterval(() => this.tick(), 10);
    }
    if (this.ctx.state === 'suspended') this.ctx.resume().catch(() => {});
    return this.ctx;
  }

  /** Settings of a group's channel: {volume 0..1, muted, priority (lower number = higher), emergency}. */
  channel(group) {
    let ch = this.channels.get(group);
    if (!ch) {
      ch = {
        group, volume: 1, muted: false, priority: 50, emergency: false, cls: 0,
        jitter: new JitterBuffer({ delayMs: 60 }), decoder: null, gain: null, nextTime: 0,
        lastVoice: 0, ducked: false, burst: null, ts: 0,
        // Decoder timestamp in ms -> timing mark of the frame being decoded (only while timing is on).
        decoding: new Map(),
      };
      this.channels.set(group, ch);
    }
    return ch;
  }

  setChannel(group, settings) {
    Object.assign(this.channel(group), settings);
    this.applyGains();
  }

  /** A voice datagram from the gateway. */
  onDatagram(bytes) {
    let v;
    try {
      v = decodeVoice(bytes);
    } catch {
      this.stats.decodeErrors++;
      return;
    }
    this.stats.framesReceived++;
    const { group, speaker, burst, seq } = v.header;
    mark(this.timing(), 'received', { group, speaker, burst, seq, at: wallMs() });
    const ch = this.channel(v.header.group);
    ch.jitter.push(v.header, v.opus.slice(), performance.now());
  }

  makeDecoder(ch) {
    if (typeof AudioDecoder === 'undefined') return null;
    const dec = new AudioDecoder({
      output: (data) => this.play(ch, data),
      error: (e) => { this.stats.decodeErrors++; console.warn('decoder', e); ch.decoder = null; },
    });
    dec.configure({ codec: 'opus', sampleRate: 48000, numberOfChannels: 1 });
    return dec;
  }

  tick() {
    if (!this.ctx) return;
    const now = performance.now();
    let changed = false;
    for (const ch of this.channels.values()) {
      if (!ch.jitter.active && ch.jitter.frames.size === 0) continue;
      for (const f of ch.jitter.pull(now)) {
        if (f.burst !== ch.burst) {
          // A new burst: a fresh decoder state.
          ch.burst = f.burst;
          try { ch.decoder?.reset(); ch.decoder?.configure({ codec: 'opus', sampleRate: 48000, numberOfChannels: 1 }); } catch { ch.decoder = null; }
          ch.ts = 0;
          ch.decoding.clear();
        }
        if (!ch.decoder || ch.decoder.state === 'closed') ch.decoder = this.makeDecoder(ch);
        ch.lastVoice = now;
        changed = true;
        ch.ts += 20000;
        if (!f.data) {
          // Lost: leave 20 ms of silence in the schedule (the decoder has no concealment input).
          ch.nextTime = Math.max(ch.nextTime, this.ctx.currentTime) + 0.02;
          continue;
        }
        if (!ch.decoder) continue;
        const m = mark(this.timing(), 'decoded', { group: ch.group, burst: f.burst, seq: f.seq, pulled: wallMs(), at: null });
        if (m) ch.decoding.set(Math.round(ch.ts / 1000), m);
        try {
          ch.decoder.decode(new EncodedAudioChunk({ type: 'key', timestamp: ch.ts, data: f.data }));
        } catch (e) {
          this.stats.decodeErrors++;
        }
      }
    }
    if (changed || this.duckDirty) this.applyGains();
  }

  play(ch, data) {
    // The decoder's output time stamp can be a microsecond off its input's (sample-count rounding).
    const key = Math.round(data.timestamp / 1000);
    const m = ch.decoding.get(key);
    if (m) { m.at = wallMs(); ch.decoding.delete(key); }
    try {
      const n = data.numberOfFrames;
      const pcm = new Float32Array(n);
      data.copyTo(pcm, { planeIndex: 0, format: 'f32-planar' });
      this.stats.framesDecoded++;
      this.stats.lastRms = rms(pcm);
      const buf = this.ctx.createBuffer(1, n, data.sampleRate);
      buf.copyToChannel(pcm, 0);
      const src = this.ctx.createBufferSource();
      src.buffer = buf;
      if (!ch.gain) {
        ch.gain = this.ctx.createGain();
        ch.gain.connect(this.master);
        this.applyGains();
      }
      src.connect(ch.gain);
      const t = Math.max(ch.nextTime, this.ctx.currentTime + 0.01);
      src.start(t);
      ch.nextTime = t + n / data.sampleRate;
    } catch (e) {
      this.stats.decodeErrors++;
    } finally {
      data.close();
    }
  }

  /** Groups with voice right now, loudest-priority first: emergency first, then priority order. */
  activeGroups(now = performance.now()) {
    return [...this.channels.values()]
      .filter((c) => now - c.lastVoice < ACTIVE_MS || c.jitter.active)
      .sort((a, b) => (b.emergency || b.cls === 2) - (a.emergency || a.cls === 2) || a.priority - b.priority || a.group - b.group);
  }

  /** Sets each channel's `ducked` flag and `level` (0..1) by scan priority; pure. */
  duck(now = performance.now()) {
    const active = this.activeGroups(now);
    const top = active[0]?.group;
    for (const ch of this.channels.values()) {
      ch.ducked = active.length > 1 && ch.group !== top && active.includes(ch);
      ch.level = ch.muted ? 0 : ch.volume * (ch.ducked ? DUCK_GAIN : 1);
    }
  }

  applyGains() {
    this.duckDirty = false;
    this.duck();
    if (!this.ctx) return;
    for (const ch of this.channels.values()) {
      if (ch.gain) ch.gain.gain.setTargetAtTime(ch.level, this.ctx.currentTime, 0.03);
    }
  }

  // ------------------------------------------------------------ capture

  /** Opens the microphone once (kept open so the next press starts at once). */
  async openMic() {
    this.ensureContext();
    if (this.mic) return;
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    await this.ctx.audioWorklet.addModule(new URL('./capture-worklet.js', import.meta.url));
    const src = this.ctx.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(this.ctx, 'ptt-capture', { numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1 });
    const sink = this.ctx.createGain();
    sink.gain.value = 0;
    src.connect(node);
    node.connect(sink);
    sink.connect(this.ctx.destination);
    node.port.onmessage = (e) => this.onCaptured(e.data);
    this.mic = { stream, src, node };
  }

  makeEncoder() {
    const enc = new AudioEncoder({
      output: (chunk) => {
        const b = new Uint8Array(chunk.byteLength);
        chunk.copyTo(b);
        if (this.capturing) this.onEncoded(b);
      },
      error: (e) => { console.warn('encoder', e); this.encoder = null; },
    });
    enc.configure({ codec: 'opus', sampleRate: 48000, numberOfChannels: 1, bitrate: 24000, opus: { frameDuration: 20000 } });
    return enc;
  }

  /** Talk key down: capture starts now (frames are sent only once the floor is granted, see TalkSession). */
  async startCapture() {
    this.capturing = true;
    await this.openMic();
    if (!this.encoder || this.encoder.state === 'closed') this.encoder = this.makeEncoder();
    if (this.capturing) this.mic.node.port.postMessage({ capturing: true });
  }

  stopCapture() {
    this.capturing = false;
    this.mic?.node.port.postMessage({ capturing: false });
  }

  onCaptured(frame) {
    this.stats.captureRms = rms(frame);
    if (!this.capturing || !this.encoder) return;
    try {
      const ad = new AudioData({ format: 'f32-planar', sampleRate: 48000, numberOfFrames: frame.length, numberOfChannels: 1, timestamp: this.captureTs, data: frame });
      this.captureTs += 20000;
      this.encoder.encode(ad);
      ad.close();
    } catch (e) {
      console.warn('encode', e);
    }
  }

  /** A short tone (talk-permit chirp, deny buzz, T2 warning), like a handset's. */
  tone(freq, ms, gain = 0.15) {
    if (!this.ctx || this.ctx.state !== 'running') return;
    const t = this.ctx.currentTime;
    const osc = this.ctx.createOscillator();
    const g = this.ctx.createGain();
    osc.frequency.value = freq;
    g.gain.setValueAtTime(gain, t);
    g.gain.setValueAtTime(gain, t + ms / 1000 - 0.01);
    g.gain.linearRampToValueAtTime(0, t + ms / 1000);
    osc.connect(g).connect(this.ctx.destination);
    osc.start(t);
    osc.stop(t + ms / 1000);
  }

  /** A generated alarm tone (two-tone siren), repeating until stopped. Returns a stop function. */
  alarm() {
    const ctx = this.ensureContext();
    let stopped = false;
    const beep = () => {
      if (stopped) return;
      const t = ctx.currentTime;
      const osc = ctx.createOscillator();
      const g = ctx.createGain();
      osc.type = 'square';
      osc.frequency.setValueAtTime(960, t);
      osc.frequency.setValueAtTime(770, t + 0.25);
      osc.frequency.setValueAtTime(960, t + 0.5);
      osc.frequency.setValueAtTime(770, t + 0.75);
      g.gain.setValueAtTime(0.0001, t);
      g.gain.exponentialRampToValueAtTime(0.25, t + 0.02);
      g.gain.setValueAtTime(0.25, t + 0.95);
      g.gain.exponentialRampToValueAtTime(0.0001, t + 1.0);
      osc.connect(g).connect(ctx.destination);
      osc.start(t);
      osc.stop(t + 1.0);
    };
    beep();
    const iv = setInterval(beep, 1600);
    return () => { stopped = true; clearInterval(iv); };
  }

  /** Drops every channel (sign-out). */
  reset() {
    for (const ch of this.channels.values()) { try { ch.decoder?.close(); } catch { /* closed */ } }
    this.channels.clear();
    this.stopCapture();
  }
}
