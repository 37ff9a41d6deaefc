// Floor state per talk group as the console shows it, sans-I/O.
//
// `FloorView.apply(msg, now)` folds every floor frame from the gateway into
// the per-group state the UI and `window.pttConsole.floor` show:
// {state: idle|taken|granted|queued|denied|revoked, speaker, speakerName,
//  position, cause, burst, class, limitMs, grantedAt, notice}.
// `TalkSession` is the operator's own push-to-talk for one press: it decides
// when voice may be sent and what to send on release.

import { DENY_CAUSE_NAMES, REVOKE_CAUSE_NAMES, FLAG_END } from './codec.js';

/** Opus packet of 20 ms of silence (CELT, fullband): the END frame after a release. */
export const SILENCE_FRAME = Uint8Array.of(0xf8, 0xff, 0xfe);

function blank() {
  return {
    state: 'idle', speaker: null, speakerName: '', position: null, cause: null,
    burst: null, class: 0, limitMs: null, grantedAt: null, notice: null,
  };
}

export class FloorView {
  constructor() {
    this.groups = new Map();
  }

  get(group) {
    let g = this.groups.get(group);
    if (!g) { g = blank(); this.groups.set(group, g); }
    return g;
  }

  /** Folds one decoded gateway frame in. Returns the group touched, or null. */
  apply(msg, now, self = null) {
    if (!('group' in msg) || msg.group == null) return null;
    const g = this.get(msg.group);
    switch (msg.type) {
      case 'FloorGranted':
        Object.assign(g, {
          state: 'granted', speaker: self, speakerName: '', position: null, cause: null,
          burst: msg.burst, limitMs: msg.limit_ms, grantedAt: now, notice: null,
        });
        break;
      case 'FloorTaken':
        Object.assign(g, {
          state: 'taken', speaker: msg.speaker, speakerName: msg.name, position: g.state === 'queued' ? g.position : null,
          cause: null, burst: msg.burst, class: msg.class, limitMs: null, grantedAt: now,
        });
        if (g.state === 'taken' && g.position != null) g.state = 'queued';
        break;
      case 'FloorIdle':
        Object.assign(g, { state: 'idle', speaker: null, speakerName: '', position: null, cause: null, burst: null, limitMs: null, grantedAt: null });
        break;
      case 'FloorQueued':
        Object.assign(g, { state: 'queued', position: msg.position, cause: null });
        break;
      case 'FloorDenied':
        Object.assign(g, { state: 'denied', position: null, cause: msg.cause });
        g.notice = { kind: 'denied', cause: msg.cause, text: DENY_CAUSE_NAMES[msg.cause], at: now };
        break;
      case 'FloorRevoked':
        Object.assign(g, { state: 'revoked', cause: msg.cause, limitMs: null });
        g.notice = { kind: 'revoked', cause: msg.cause, text: REVOKE_CAUSE_NAMES[msg.cause], at: now };
        break;
      case 'Left':
        this.groups.delete(msg.group);
        return msg.group;
      default:
        return null;
    }
    return msg.group;
  }

  /** The operator released or withdrew: the floor is idle for us until the gateway says otherwise. */
  released(group) {
    const g = this.get(group);
    if (g.state === 'granted' || g.state === 'queued') {
      Object.assign(g, { state: 'idle', speaker: null, position: null, burst: null, limitMs: null, grantedAt: null });
    }
  }

  /** Milliseconds of talk time left for a granted floor (null otherwise). */
  remainingMs(group, now) {
    const g = this.groups.get(group);
    if (!g || g.state !== 'granted' || g.limitMs == null) return null;
    return Math.max(0, g.limitMs - (now - g.grantedAt));
  }

  /** The hook view: {[group]: {state, speaker, position, cause}}. */
  snapshot() {
    const out = {};
    for (const [id, g] of this.groups) {
      out[id] = { state: g.state, speaker: g.speaker, position: g.position, cause: g.cause };
    }
    return out;
  }
}

/**
 * One press of the talk key on one group.
 * press -> FloorRequest; frames from the encoder are sent only once granted
 * (up to `preRoll` frames captured while waiting are sent first so the first
 * syllable survives a fast grant); release -> a last frame flagged END, then
 * FloorRelease one frame time later (or FloorRelease at once when not granted,
 * which withdraws a queued request).
 */
export class TalkSession {
  constructor(group, { preRoll = 5 } = {}) {
    this.group = group;
    this.state = 'requesting'; // requesting | queued | granted | ended
    this.burst = null;
    this.seq = 0;
    this.preRoll = preRoll;
    this.waiting = [];
    this.released = false;
  }

  /** The first frame to send for the press. */
  request(cls = 0) {
    return { type: 'FloorRequest', group: this.group, class: cls };
  }

  /**
   * A floor frame for this group. Returns datagram headers+payloads to send now.
   * @returns {{datagrams: Array<{header, opus}>, release: boolean}}
   */
  onFloor(msg) {
    const out = { datagrams: [], release: false };
    if (msg.group !== this.group || this.state === 'ended') return out;
    if (msg.type === 'FloorGranted') {
      this.burst = msg.burst;
      this.seq = 0;
      if (this.released) {
        // Granted after the key came up: close the burst at once.
        out.datagrams.push(this.endFrame());
        out.release = true;
        this.state = 'ended';
        return out;
      }
      this.state = 'granted';
      for (const opus of this.waiting) out.datagrams.push(this.frame(opus, 0));
      this.waiting = [];
    } else if (msg.type === 'FloorQueued') {
      this.state = 'queued';
    } else if (msg.type === 'FloorDenied' || msg.type === 'FloorRevoked' || msg.type === 'Left') {
      this.state = 'ended';
      this.waiting = [];
    }
    return out;
  }

  /** An encoded Opus frame from the microphone. Returns a datagram to send, or null. */
  onEncoded(opus) {
    if (this.released || this.state === 'ended') return null;
    if (this.state !== 'granted') {
      this.waiting.push(opus);
      if (this.waiting.length > this.preRoll) this.waiting.shift();
      return null;
    }
    return this.frame(opus, 0);
  }

  /**
   * Key released. Returns {datagram: END frame or null, releaseNow, releaseAfterMs}.
   */
  release() {
    if (this.released) return { datagram: null, release: false, delayMs: 0 };
    this.released = true;
    this.waiting = [];
    if (this.state === 'granted') {
      this.state = 'ended';
      return { datagram: this.endFrame(), release: true, delayMs: 20 };
    }
    if (this.state === 'requesting' || this.state === 'queued') {
      // Withdraw; if the grant crosses this, onFloor closes the burst.
      const wasQueued = this.state === 'queued';
      if (wasQueued) this.state = 'ended';
      return { datagram: null, release: true, delayMs: 0 };
    }
    return { datagram: null, release: false, delayMs: 0 };
  }

  frame(opus, flags) {
    const header = { group: this.group, speaker: 0, burst: this.burst, seq: this.seq, flags };
    this.seq = (this.seq + 1) & 0xffff;
    return { header, opus };
  }

  endFrame() {
    return this.frame(SILENCE_FRAME, FLAG_END);
  }
}
