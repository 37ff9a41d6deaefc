// Wire protocol of docs/PROTOCOL.md (sections 3, 4, 5) for the console.
//
// Sans-I/O: every function maps bytes to values or values to bytes. The
// decoders are strict like the Rust reference (`ptt-codec`): a body shorter
// or longer than its fields, a count or string over its limit, invalid
// UTF-8, a zero id, an unknown enumerated value or frame type all throw a
// `Malformed` error. Nothing here can hang or crash on hostile input.
//
// Values use the field names of PROTOCOL.md; enumerated values stay numbers
// (names for display live in the *_NAMES tables). u64 fields decode to a
// Number when it is exact (below 2^53) and to a BigInt otherwise; encoders
// take either.

export const VERSION = 1;
export const HEADER_LEN = 3;
export const MAX_BODY = 16384;
export const MAX_CREDENTIAL = 64;
export const MAX_NAME = 256;
export const MAX_MESSAGE = 1024;
export const MAX_TITLE = 256;
export const MAX_TEXT = 4096;
export const MAX_ADDRESS = 256;
export const MAX_MIME = 64;
export const MAX_ATTACHMENTS = 8;
export const MAX_ATTACHMENT = 4 * 1024 * 1024;
export const MAX_TARGET_TERMINALS = 1024;
export const MAX_NEAREST = 100;
export const MAX_RADIUS_M = 50000;
export const MAX_LIST_GROUPS = 2048;
export const MAX_LIST_TERMINALS = 3072;
export const VOICE_HEADER_LEN = 13;
export const MAX_OPUS_PACKET = 1275;
export const MAX_VOICE_DATAGRAM = VOICE_HEADER_LEN + MAX_OPUS_PACKET;
export const FLAG_END = 1;

/** Frame type numbers by name. */
export const KIND = Object.freeze({
  Hello: 0x01, Join: 0x02, Leave: 0x03, FloorRequest: 0x04, FloorRelease: 0x05,
  Ping: 0x06, Logout: 0x07, AlertSend: 0x08, AlertReceipt: 0x09, AlertQuery: 0x0a,
  Position: 0x0b, WatchPositions: 0x0c, Sos: 0x0d, SosCancel: 0x0e,
  AttachmentPut: 0x0f, AttachmentFetch: 0x10, DrillReportQuery: 0x11,
  MediaMode: 0x12, LinkReport: 0x13,
  Welcome: 0x41, Joined: 0x42, Left: 0x43, FloorGranted: 0x44, FloorDenied: 0x45,
  FloorQueued: 0x46, FloorTaken: 0x47, FloorIdle: 0x48, FloorRevoked: 0x49,
  Presence: 0x4a, Error: 0x4b, Pong: 0x4c, AlertAccepted: 0x4d, Alert: 0x4e,
  ReceiptUpdate: 0x4f, ReceiptSaved: 0x50, AlertStatus: 0x51, AlertRefused: 0x52,
  PositionUpdate: 0x53, AlertCancelled: 0x54, AttachmentStored: 0x55,
  Attachment: 0x56, DrillReport: 0x57,
});
/** Frame names by type number. */
export const KIND_NAME = Object.freeze(
  Object.fromEntries(Object.entries(KIND).map(([k, v]) => [v, k])));

export const CLASS = Object.freeze({ normal: 0, imminentPeril: 1, emergency: 2 });
export const DENY_CAUSE_NAMES = Object.freeze({
  1: 'ANOTHER_HAS_PERMISSION', 2: 'INTERNAL_ERROR', 3: 'ONLY_ONE_PARTICIPANT',
  5: 'RECEIVE_ONLY', 6: 'NO_RESOURCES', 100: 'NOT_JOINED',
  101: 'EMERGENCY_NOT_ALLOWED', 255: 'OTHER',
});
export const REVOKE_CAUSE_NAMES = Object.freeze({
  2: 'BURST_TOO_LONG', 3: 'NO_PERMISSION', 4: 'PRE_EMPTED', 255: 'OTHER',
});
export const ERROR_CODE_NAMES = Object.freeze({
  1: 'MALFORMED', 2: 'UNEXPECTED_FRAME', 10: 'UNKNOWN_GROUP', 11: 'JOIN_DENIED',
  12: 'NOT_JOINED', 13: 'TOO_MANY_GROUPS', 20: 'ALERT_INVALID',
  21: 'TARGET_NOT_ALLOWED', 22: 'UNKNOWN_ALERT', 23: 'NOT_RECIPIENT',
  24: 'INVALID_RECEIPT', 25: 'ATTACHMENT_INVALID', 26: 'UNKNOWN_ATTACHMENT',
  27: 'NOT_A_DRILL', 28: 'BUSY', 29: 'OVER_LIMIT', 500: 'INTERNAL',
  507: 'STORAGE_FULL',
});
export const CLOSE_CODE_NAMES = Object.freeze({
  0: 'NORMAL', 1: 'PROTOCOL_VIOLATION', 2: 'AUTH_FAILED', 3: 'SESSION_REPLACED',
  4: 'SERVER_SHUTDOWN', 5: 'HELLO_TIMEOUT', 6: 'UNSUPPORTED_VERSION', 7: 'TOO_SLOW',
  8: 'RATE_LIMITED', 9: 'REVOKED', 10: 'OPERATOR_DISCONNECT', 11: 'ORG_REMOVED',
  12: 'SIGNED_OUT',
});
export const ALERT_KIND = Object.freeze({
  dispatch: 1, notice: 2, warning: 3, drill: 4, sos: 5, report: 6, clue: 7,
});
export const ALERT_KIND_NAMES = Object.freeze(
  Object.fromEntries(Object.entries(ALERT_KIND).map(([k, v]) => [v, k])));
export const RECEIPT = Object.freeze({
  pending: 0, delivered: 1, read: 2, accepted: 3, rejected: 4, arrived: 5, resolved: 6,
});
export const RECEIPT_NAMES = Object.freeze(
  Object.fromEntries(Object.entries(RECEIPT).map(([k, v]) => [v, k])));
/** Role filter bits of a subtree target. */
export const ROLE_BITS = Object.freeze({
  police: 1, auxiliary_police: 2, security_guard: 4, staff: 8, volunteer: 16, dispatcher: 32,
});

/** A frame or datagram that must be rejected. `fatal` means the stream cannot stay in sync. */
export class Malformed extends Error {
  constructor(message, fatal = false) {
    super(message);
    this.name = 'Malformed';
    this.fatal = fatal;
  }
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

// ---------------------------------------------------------------- reader

class Reader {
  constructor(bytes) {
    this.b = bytes;
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.p = 0;
  }
  need(n) {
    if (this.b.length - this.p < n) throw new Malformed('truncated');
  }
  bytes(n) {
    this.need(n);
    const out = this.b.subarray(this.p, this.p + n);
    this.p += n;
    return out;
  }
  u8() { this.need(1); return this.b[this.p++]; }
  u16() { this.need(2); const v = this.dv.getUint16(this.p); this.p += 2; return v; }
  u32() { this.need(4); const v = this.dv.getUint32(this.p); this.p += 4; return v; }
  i32() { this.need(4); const v = this.dv.getInt32(this.p); this.p += 4; return v; }
  u64() {
    this.need(8);
    const v = this.dv.getBigUint64(this.p);
    this.p += 8;
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  bool() {
    const v = this.u8();
    if (v > 1) throw new Malformed('boolean not 0 or 1');
    return v === 1;
  }
  string(max, min = 0) {
    const n = this.u16();
    if (n > max) throw new Malformed(`string of ${n} bytes over ${max}`);
    if (n < min) throw new Malformed(`string of ${n} bytes under ${min}`);
    const raw = this.bytes(n);
    try {
      return utf8Decoder.decode(raw);
    } catch {
      throw new Malformed('string is not UTF-8');
    }
  }
  nonZero32(what) {
    const v = this.u32();
    if (v === 0) throw new Malformed(`${what} 0`);
    return v;
  }
  /** Whether every byte was read: for a frame's optional last field. */
  atEnd() {
    return this.p === this.b.length;
  }
  finish() {
    if (this.p !== this.b.length) throw new Malformed('trailing bytes');
  }
}

// ---------------------------------------------------------------- writer

class Writer {
  constructor() {
    this.buf = new Uint8Array(64);
    this.dv = new DataView(this.buf.buffer);
    this.len = 0;
  }
  grow(n) {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const nb = new Uint8Array(cap);
    nb.set(this.buf.subarray(0, this.len));
    this.buf = nb;
    this.dv = new DataView(nb.buffer);
  }
  u8(v) { this.grow(1); this.buf[this.len++] = checkInt(v, 0, 0xff); }
  u16(v) { this.grow(2); this.dv.setUint16(this.len, checkInt(v, 0, 0xffff)); this.len += 2; }
  u32(v) { this.grow(4); this.dv.setUint32(this.len, checkInt(v, 0, 0xffffffff)); this.len += 4; }
  i32(v) { this.grow(4); this.dv.setInt32(this.len, checkInt(v, -0x80000000, 0x7fffffff)); this.len += 4; }
  u64(v) {
    const big = BigInt(v);
    if (big < 0n || big > 0xffffffffffffffffn) throw new RangeError(`u64 out of range: ${v}`);
    this.grow(8); this.dv.setBigUint64(this.len, big); this.len += 8;
  }
  bool(v) { this.u8(v ? 1 : 0); }
  raw(bytes) { this.grow(bytes.length); this.buf.set(bytes, this.len); this.len += bytes.length; }
  /** A string cut at the last whole UTF-8 character within `max` bytes, like the reference. */
  string(s, max) {
    const bytes = truncateUtf8(utf8Encoder.encode(s ?? ''), max);
    this.u16(bytes.length);
    this.raw(bytes);
  }
  done() { return this.buf.slice(0, this.len); }
}

function checkInt(v, lo, hi) {
  if (!Number.isInteger(v) || v < lo || v > hi) throw new RangeError(`integer out of range: ${v}`);
  return v;
}

/** Cuts UTF-8 bytes to at most `max`, never inside a character. */
export function truncateUtf8(bytes, max) {
  if (bytes.length <= max) return bytes;
  let end = max;
  // Back off continuation bytes (10xxxxxx) so the cut lands on a character start.
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

/** UTF-8 byte length of a string (the limits are in bytes, not characters). */
export function utf8Length(s) {
  return utf8Encoder.encode(s ?? '').length;
}

// ---------------------------------------------------------------- framing

/**
 * Splits one frame off the front of `buf`.
 * Returns null when more bytes are needed; throws a fatal Malformed when the
 * header announces more than 16384 bytes (the stream cannot be resynced).
 */
export function splitFrame(buf) {
  if (buf.length < HEADER_LEN) return null;
  const len = (buf[1] << 8) | buf[2];
  if (len > MAX_BODY) throw new Malformed(`frame body of ${len} bytes over ${MAX_BODY}`, true);
  if (buf.length < HEADER_LEN + len) return null;
  return { kind: buf[0], body: buf.subarray(HEADER_LEN, HEADER_LEN + len), size: HEADER_LEN + len };
}

/**
 * Reassembles frames from stream chunks of any size. `push` returns the raw
 * frames completed by the chunk. The buffer never holds more than one
 * frame's worth (3 + 16384 bytes) plus the unread part of one chunk.
 */
export class FrameAssembler {
  constructor() {
    this.buf = new Uint8Array(0);
    this.broken = false;
  }
  push(chunk) {
    if (this.broken) throw new Malformed('stream out of sync', true);
    let buf = this.buf.length ? concat(this.buf, chunk) : chunk;
    const out = [];
    for (;;) {
      let f;
      try {
        f = splitFrame(buf);
      } catch (e) {
        this.broken = true;
        this.buf = new Uint8Array(0);
        throw e;
      }
      if (!f) break;
      out.push({ kind: f.kind, body: f.body.slice() });
      buf = buf.subarray(f.size);
    }
    this.buf = buf.slice();
    return out;
  }
  /** Bytes of an incomplete frame still waiting. */
  get pending() { return this.buf.length; }
}

export function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function frame(kind, fill) {
  const w = new Writer();
  w.u8(kind);
  w.u16(0);
  fill(w);
  const len = w.len - HEADER_LEN;
  if (len > MAX_BODY) throw new RangeError(`frame body of ${len} bytes`);
  w.dv.setUint16(1, len);
  return w.done();
}

// ---------------------------------------------------------------- shared pieces

function coordinates(r) {
  const lat_e7 = r.i32();
  const lon_e7 = r.i32();
  if (lat_e7 < -900000000 || lat_e7 > 900000000 || lon_e7 < -1800000000 || lon_e7 > 1800000000) {
    throw new Malformed('coordinates out of range');
  }
  return { lat_e7, lon_e7 };
}

function enumValue(v, names, what) {
  if (!(v in names)) throw new Malformed(`unknown ${what} ${v}`);
  return v;
}

function writeBody(w, b) {
  w.u8(b.kind);
  w.u8(b.priority ?? 0);
  w.u32(b.ttl_s);
  w.string(b.title, MAX_TITLE);
  w.string(b.text ?? '', MAX_TEXT);
  if (b.location) {
    w.u8(1);
    w.i32(b.location.lat_e7);
    w.i32(b.location.lon_e7);
    w.string(b.location.address ?? '', MAX_ADDRESS);
  } else {
    w.u8(0);
  }
  const atts = (b.attachments ?? []).slice(0, MAX_ATTACHMENTS);
  w.u8(atts.length);
  for (const a of atts) {
    w.u64(a.id);
    w.u32(a.size ?? 0);
    w.string(a.mime ?? '', MAX_MIME);
  }
}

function readBody(r) {
  const kind = enumValue(r.u8(), ALERT_KIND_NAMES, 'alert kind');
  const priority = r.u8();
  if (priority > 3) throw new Malformed('alert priority over 3');
  const ttl_s = r.u32();
  const title = r.string(MAX_TITLE);
  const text = r.string(MAX_TEXT);
  let location = null;
  const flag = r.u8();
  if (flag === 1) {
    const { lat_e7, lon_e7 } = coordinates(r);
    location = { lat_e7, lon_e7, address: r.string(MAX_ADDRESS) };
  } else if (flag !== 0) {
    throw new Malformed('location flag not 0 or 1');
  }
  const n = r.u8();
  if (n > MAX_ATTACHMENTS) throw new Malformed('attachment count over 8');
  const attachments = [];
  for (let i = 0; i < n; i++) {
    const id = r.u64();
    const size = r.u32();
    if (id === 0 || size > MAX_ATTACHMENT) throw new Malformed('attachment id 0 or over 4 MiB');
    attachments.push({ id, size, mime: r.string(MAX_MIME) });
  }
  return { kind, priority, ttl_s, title, text, location, attachments };
}

function writeTarget(w, t) {
  switch (t.type) {
    case 'Terminals': {
      const ids = t.terminals.slice(0, MAX_TARGET_TERMINALS);
      w.u8(1); w.u16(ids.length);
      for (const id of ids) w.u32(id);
      break;
    }
    case 'Group': w.u8(2); w.u32(t.group); break;
    case 'Subtree': w.u8(3); w.u32(t.node); w.u8(t.roles ?? 0); break;
    case 'Nearest': w.u8(4); w.u16(t.k); w.u32(t.radius_m); break;
    case 'Station': w.u8(5); break;
    default: throw new RangeError(`unknown target ${t.type}`);
  }
}

function readTarget(r) {
  switch (r.u8()) {
    case 1: {
      const n = r.u16();
      if (n === 0 || n > MAX_TARGET_TERMINALS) throw new Malformed('target terminal count');
      const terminals = [];
      for (let i = 0; i < n; i++) terminals.push(r.nonZero32('terminal'));
      return { type: 'Terminals', terminals };
    }
    case 2: return { type: 'Group', group: r.nonZero32('group') };
    case 3: {
      const node = r.u32();
      const roles = r.u8();
      if (node === 0 || (roles & 0xc0) !== 0) throw new Malformed('subtree target');
      return { type: 'Subtree', node, roles };
    }
    case 4: {
      const k = r.u16();
      const radius_m = r.u32();
      if (k === 0 || k > MAX_NEAREST || radius_m === 0 || radius_m > MAX_RADIUS_M) {
        throw new Malformed('nearest target');
      }
      return { type: 'Nearest', k, radius_m };
    }
    case 5: return { type: 'Station' };
    default: throw new Malformed('unknown target type');
  }
}

// ---------------------------------------------------------------- terminal -> gateway

/** Encodes a frame the console sends. `msg.type` is the frame name. */
export function encodeClient(msg) {
  const k = KIND[msg.type];
  switch (msg.type) {
    case 'Hello': {
      const cred = msg.credential;
      if (!(cred instanceof Uint8Array) || cred.length < 1 || cred.length > MAX_CREDENTIAL) {
        throw new RangeError('credential must be 1..64 bytes');
      }
      return frame(k, (w) => {
        w.u8(msg.version ?? VERSION); w.u32(msg.terminal); w.u8(cred.length); w.raw(cred);
        // The media offer (PROTOCOL.md section 8): a browser never offers
        // SRTP; written only when non-zero, as the reference does.
        if (msg.media) w.u8(msg.media);
      });
    }
    case 'MediaMode':
      return frame(k, (w) => w.bool(msg.srtp));
    case 'LinkReport':
      return frame(k, (w) => { w.u32(msg.received); w.u32(msg.lost); w.u32(msg.late); w.u32(msg.jitter_us); });
    case 'Join': case 'Leave': case 'FloorRelease':
      return frame(k, (w) => w.u32(msg.group));
    case 'FloorRequest':
      return frame(k, (w) => { w.u32(msg.group); w.u8(msg.class ?? 0); });
    case 'Ping':
      return frame(k, (w) => w.u64(msg.nonce));
    case 'Logout': case 'Sos':
      return frame(k, () => {});
    case 'AlertSend':
      return frame(k, (w) => { w.u32(msg.request); writeTarget(w, msg.target); writeBody(w, msg.body); });
    case 'AlertReceipt':
      if (!(msg.status >= 1 && msg.status <= 6)) throw new RangeError('receipt status 1..6');
      return frame(k, (w) => { w.u64(msg.alert); w.u8(msg.status); w.string(msg.reason ?? '', MAX_MESSAGE); });
    case 'AlertQuery': case 'DrillReportQuery':
      return frame(k, (w) => w.u64(msg.alert));
    case 'Position':
      return frame(k, (w) => { w.i32(msg.lat_e7); w.i32(msg.lon_e7); w.u16(msg.accuracy_m); });
    case 'WatchPositions':
      return frame(k, (w) => w.u32(msg.node));
    case 'SosCancel':
      return frame(k, (w) => w.u32(msg.terminal));
    case 'AttachmentPut':
      return frame(k, (w) => { w.u32(msg.request); w.string(msg.mime, MAX_MIME); w.u32(msg.size); });
    case 'AttachmentFetch':
      return frame(k, (w) => w.u64(msg.attachment));
    default:
      throw new RangeError(`not a console frame: ${msg.type}`);
  }
}

/** Decodes a terminal-to-gateway frame (for tests and tools; strict like the gateway). */
export function decodeClient(kind, body) {
  const r = new Reader(body);
  let m;
  switch (kind) {
    case KIND.Hello: {
      const version = r.u8();
      const terminal = r.nonZero32('terminal');
      const n = r.u8();
      if (n === 0 || n > MAX_CREDENTIAL) throw new Malformed('credential length');
      m = { type: 'Hello', version, terminal, credential: r.bytes(n).slice() };
      if (!r.atEnd()) {
        const media = r.u8();
        if (media === 0) throw new Malformed('empty media offer');
        m.media = media;
      }
      break;
    }
    case KIND.Join: m = { type: 'Join', group: r.nonZero32('group') }; break;
    case KIND.Leave: m = { type: 'Leave', group: r.nonZero32('group') }; break;
    case KIND.FloorRequest:
      m = { type: 'FloorRequest', group: r.nonZero32('group'), class: enumValue(r.u8(), { 0: 1, 1: 1, 2: 1 }, 'class') };
      break;
    case KIND.FloorRelease: m = { type: 'FloorRelease', group: r.nonZero32('group') }; break;
    case KIND.Ping: m = { type: 'Ping', nonce: r.u64() }; break;
    case KIND.Logout: m = { type: 'Logout' }; break;
    case KIND.AlertSend: {
      const request = r.u32();
      const target = readTarget(r);
      m = { type: 'AlertSend', request, target, body: readBody(r) };
      break;
    }
    case KIND.AlertReceipt: {
      const alert = r.u64();
      const status = r.u8();
      if (status < 1 || status > 6) throw new Malformed('receipt status');
      m = { type: 'AlertReceipt', alert, status, reason: r.string(MAX_MESSAGE) };
      break;
    }
    case KIND.AlertQuery: m = { type: 'AlertQuery', alert: r.u64() }; break;
    case KIND.Position: {
      const { lat_e7, lon_e7 } = coordinates(r);
      m = { type: 'Position', lat_e7, lon_e7, accuracy_m: r.u16() };
      break;
    }
    case KIND.WatchPositions: m = { type: 'WatchPositions', node: r.u32() }; break;
    case KIND.Sos: m = { type: 'Sos' }; break;
    case KIND.SosCancel: m = { type: 'SosCancel', terminal: r.nonZero32('terminal') }; break;
    case KIND.AttachmentPut: {
      const request = r.u32();
      const mime = r.string(MAX_MIME, 1);
      const size = r.u32();
      if (size === 0) throw new Malformed('empty attachment');
      m = { type: 'AttachmentPut', request, mime, size };
      break;
    }
    case KIND.AttachmentFetch: {
      const attachment = r.u64();
      if (attachment === 0) throw new Malformed('attachment 0');
      m = { type: 'AttachmentFetch', attachment };
      break;
    }
    case KIND.DrillReportQuery: m = { type: 'DrillReportQuery', alert: r.u64() }; break;
    case KIND.MediaMode: m = { type: 'MediaMode', srtp: r.bool() }; break;
    case KIND.LinkReport: {
      const received = r.u32();
      const lost = r.u32();
      const late = r.u32();
      const jitter_us = r.u32();
      if (late > received) throw new Malformed('late above received');
      m = { type: 'LinkReport', received, lost, late, jitter_us };
      break;
    }
    default: throw new Malformed(`unknown frame type 0x${kind.toString(16)}`);
  }
  r.finish();
  return m;
}

// ---------------------------------------------------------------- gateway -> terminal

/** Decodes a gateway-to-terminal frame body. Throws Malformed. */
export function decodeServer(kind, body) {
  const r = new Reader(body);
  let m;
  switch (kind) {
    case KIND.Welcome: {
      const terminal = r.nonZero32('terminal');
      const name = r.string(MAX_NAME);
      const resumed = r.bool();
      const n = r.u16();
      if (n > MAX_LIST_GROUPS) throw new Malformed('group list too long');
      const groups = [];
      for (let i = 0; i < n; i++) groups.push({ group: r.nonZero32('group'), talk: r.bool() });
      m = { type: 'Welcome', terminal, name, resumed, groups };
      if (!r.atEnd()) {
        // The SRTP answer (PROTOCOL.md section 8); a browser is never
        // answered one, but the frame is read whole.
        if (r.u8() !== 1) throw new Malformed('media answer form');
        m.media = { ssrc: r.nonZero32('ssrc') };
      }
      break;
    }
    case KIND.Joined: {
      const group = r.nonZero32('group');
      const talk = r.bool();
      const name = r.string(MAX_NAME);
      const n = r.u16();
      if (n > MAX_LIST_TERMINALS) throw new Malformed('member list too long');
      const online = [];
      for (let i = 0; i < n; i++) online.push(r.nonZero32('terminal'));
      m = { type: 'Joined', group, talk, name, online };
      break;
    }
    case KIND.Left: m = { type: 'Left', group: r.nonZero32('group') }; break;
    case KIND.FloorGranted:
      m = { type: 'FloorGranted', group: r.nonZero32('group'), burst: r.u16(), limit_ms: r.u32() };
      break;
    case KIND.FloorDenied:
      m = { type: 'FloorDenied', group: r.nonZero32('group'), cause: enumValue(r.u16(), DENY_CAUSE_NAMES, 'deny cause') };
      break;
    case KIND.FloorQueued:
      m = { type: 'FloorQueued', group: r.nonZero32('group'), position: r.u16() };
      break;
    case KIND.FloorTaken:
      m = {
        type: 'FloorTaken', group: r.nonZero32('group'), speaker: r.nonZero32('terminal'),
        burst: r.u16(), class: enumValue(r.u8(), { 0: 1, 1: 1, 2: 1 }, 'class'), name: r.string(MAX_NAME),
      };
      break;
    case KIND.FloorIdle: m = { type: 'FloorIdle', group: r.nonZero32('group') }; break;
    case KIND.FloorRevoked:
      m = {
        type: 'FloorRevoked', group: r.nonZero32('group'), burst: r.u16(),
        cause: enumValue(r.u16(), REVOKE_CAUSE_NAMES, 'revoke cause'),
      };
      break;
    case KIND.Presence:
      m = { type: 'Presence', group: r.nonZero32('group'), terminal: r.nonZero32('terminal'), online: r.bool() };
      break;
    case KIND.Error: {
      const code = enumValue(r.u16(), ERROR_CODE_NAMES, 'error code');
      const frameType = r.u8();
      const g = r.u32();
      m = { type: 'Error', code, frame: frameType, group: g === 0 ? null : g, message: r.string(MAX_MESSAGE) };
      break;
    }
    case KIND.Pong: m = { type: 'Pong', nonce: r.u64() }; break;
    case KIND.AlertAccepted:
      m = { type: 'AlertAccepted', request: r.u32(), alert: r.u64(), recipients: r.u32() };
      break;
    case KIND.Alert:
      m = {
        type: 'Alert', alert: r.u64(), issuer: r.nonZero32('terminal'), created_ms: r.u64(),
        expires_ms: r.u64(), body: readBody(r),
      };
      break;
    case KIND.ReceiptUpdate:
      m = {
        type: 'ReceiptUpdate', alert: r.u64(), terminal: r.nonZero32('terminal'),
        status: enumValue(r.u8(), RECEIPT_NAMES, 'receipt status'), at_ms: r.u64(),
        reason: r.string(MAX_MESSAGE),
      };
      break;
    case KIND.ReceiptSaved:
      m = { type: 'ReceiptSaved', alert: r.u64(), status: enumValue(r.u8(), RECEIPT_NAMES, 'receipt status') };
      break;
    case KIND.AlertStatus: {
      const alert = r.u64();
      const recipients = r.u32();
      const by_status = [];
      for (let i = 0; i < 7; i++) by_status.push(r.u32());
      m = { type: 'AlertStatus', alert, recipients, counts: { by_status, expired: r.u32() } };
      break;
    }
    case KIND.AlertRefused:
      m = {
        type: 'AlertRefused', request: r.u32(), code: enumValue(r.u16(), ERROR_CODE_NAMES, 'error code'),
        message: r.string(MAX_MESSAGE),
      };
      break;
    case KIND.PositionUpdate: {
      const terminal = r.nonZero32('terminal');
      const { lat_e7, lon_e7 } = coordinates(r);
      m = { type: 'PositionUpdate', terminal, lat_e7, lon_e7, accuracy_m: r.u16(), at_ms: r.u64() };
      break;
    }
    case KIND.AlertCancelled:
      m = { type: 'AlertCancelled', alert: r.u64(), by: r.nonZero32('terminal') };
      break;
    case KIND.AttachmentStored:
      m = { type: 'AttachmentStored', request: r.u32(), attachment: r.u64(), size: r.u32() };
      break;
    case KIND.Attachment: {
      const attachment = r.u64();
      const alert = r.u64();
      const mime = r.string(MAX_MIME);
      const size = r.u32();
      if (size > MAX_ATTACHMENT) throw new Malformed('attachment size over 4 MiB');
      m = { type: 'Attachment', attachment, alert, mime, size };
      break;
    }
    case KIND.DrillReport:
      m = { type: 'DrillReport', alert: r.u64(), size: r.u32() };
      break;
    default: throw new Malformed(`unknown frame type 0x${kind.toString(16)}`);
  }
  r.finish();
  return m;
}

/** Encodes a gateway-to-terminal frame (for tests and a mock gateway). */
export function encodeServer(msg) {
  const k = KIND[msg.type];
  switch (msg.type) {
    case 'Welcome':
      return frame(k, (w) => {
        w.u32(msg.terminal); w.string(msg.name, MAX_NAME); w.bool(msg.resumed);
        w.u16(msg.groups.length);
        for (const g of msg.groups) { w.u32(g.group); w.bool(g.talk); }
        if (msg.media) { w.u8(1); w.u32(msg.media.ssrc); }
      });
    case 'Joined':
      return frame(k, (w) => {
        w.u32(msg.group); w.bool(msg.talk); w.string(msg.name, MAX_NAME);
        w.u16(msg.online.length);
        for (const t of msg.online) w.u32(t);
      });
    case 'Left': case 'FloorIdle': return frame(k, (w) => w.u32(msg.group));
    case 'FloorGranted': return frame(k, (w) => { w.u32(msg.group); w.u16(msg.burst); w.u32(msg.limit_ms); });
    case 'FloorDenied': return frame(k, (w) => { w.u32(msg.group); w.u16(msg.cause); });
    case 'FloorQueued': return frame(k, (w) => { w.u32(msg.group); w.u16(msg.position); });
    case 'FloorTaken':
      return frame(k, (w) => {
        w.u32(msg.group); w.u32(msg.speaker); w.u16(msg.burst); w.u8(msg.class); w.string(msg.name, MAX_NAME);
      });
    case 'FloorRevoked': return frame(k, (w) => { w.u32(msg.group); w.u16(msg.burst); w.u16(msg.cause); });
    case 'Presence': return frame(k, (w) => { w.u32(msg.group); w.u32(msg.terminal); w.bool(msg.online); });
    case 'Error':
      return frame(k, (w) => {
        w.u16(msg.code); w.u8(msg.frame ?? 0); w.u32(msg.group ?? 0); w.string(msg.message, MAX_MESSAGE);
      });
    case 'Pong': return frame(k, (w) => w.u64(msg.nonce));
    case 'AlertAccepted': return frame(k, (w) => { w.u32(msg.request); w.u64(msg.alert); w.u32(msg.recipients); });
    case 'Alert':
      return frame(k, (w) => {
        w.u64(msg.alert); w.u32(msg.issuer); w.u64(msg.created_ms); w.u64(msg.expires_ms); writeBody(w, msg.body);
      });
    case 'ReceiptUpdate':
      return frame(k, (w) => {
        w.u64(msg.alert); w.u32(msg.terminal); w.u8(msg.status); w.u64(msg.at_ms); w.string(msg.reason, MAX_MESSAGE);
      });
    case 'ReceiptSaved': return frame(k, (w) => { w.u64(msg.alert); w.u8(msg.status); });
    case 'AlertStatus':
      return frame(k, (w) => {
        w.u64(msg.alert); w.u32(msg.recipients);
        for (const n of msg.counts.by_status) w.u32(n);
        w.u32(msg.counts.expired);
      });
    case 'AlertRefused': return frame(k, (w) => { w.u32(msg.request); w.u16(msg.code); w.string(msg.message, MAX_MESSAGE); });
    case 'PositionUpdate':
      return frame(k, (w) => {
        w.u32(msg.terminal); w.i32(msg.lat_e7); w.i32(msg.lon_e7); w.u16(msg.accuracy_m); w.u64(msg.at_ms);
      });
    case 'AlertCancelled': return frame(k, (w) => { w.u64(msg.alert); w.u32(msg.by); });
    case 'AttachmentStored': return frame(k, (w) => { w.u32(msg.request); w.u64(msg.attachment); w.u32(msg.size); });
    case 'Attachment':
      return frame(k, (w) => { w.u64(msg.attachment); w.u64(msg.alert); w.string(msg.mime, MAX_MIME); w.u32(msg.size); });
    case 'DrillReport': return frame(k, (w) => { w.u64(msg.alert); w.u32(msg.size); });
    default: throw new RangeError(`not a gateway frame: ${msg.type}`);
  }
}

/** Decodes one complete frame (header included) from the gateway; throws on anything left over. */
export function decodeServerFrame(bytes) {
  const f = splitFrame(bytes);
  if (!f) throw new Malformed('truncated frame');
  if (f.size !== bytes.length) throw new Malformed('trailing bytes after frame');
  return decodeServer(f.kind, f.body);
}

/** Decodes one complete terminal frame (header included). */
export function decodeClientFrame(bytes) {
  const f = splitFrame(bytes);
  if (!f) throw new Malformed('truncated frame');
  if (f.size !== bytes.length) throw new Malformed('trailing bytes after frame');
  return decodeClient(f.kind, f.body);
}

// ---------------------------------------------------------------- voice

/** Builds a voice datagram: 13-byte header + one Opus packet. */
export function encodeVoice(h, opus) {
  if (!(opus instanceof Uint8Array) || opus.length < 1 || opus.length > MAX_OPUS_PACKET) {
    throw new RangeError('opus packet must be 1..1275 bytes');
  }
  const out = new Uint8Array(VOICE_HEADER_LEN + opus.length);
  const dv = new DataView(out.buffer);
  out[0] = (VERSION << 4) | ((h.flags ?? 0) & 0x0f);
  dv.setUint32(1, checkInt(h.group, 1, 0xffffffff));
  dv.setUint32(5, checkInt(h.speaker ?? 0, 0, 0xffffffff));
  dv.setUint16(9, checkInt(h.burst, 0, 0xffff));
  dv.setUint16(11, checkInt(h.seq & 0xffff, 0, 0xffff));
  out.set(opus, VOICE_HEADER_LEN);
  return out;
}

/** Parses a voice datagram into `{header, opus}`; throws Malformed. */
export function decodeVoice(d) {
  if (d.length > MAX_VOICE_DATAGRAM) throw new Malformed('voice datagram too long');
  if (d.length < VOICE_HEADER_LEN + 1) throw new Malformed('voice datagram truncated');
  if (d[0] >> 4 !== VERSION) throw new Malformed('voice version');
  const flags = d[0] & 0x0f;
  if ((flags & ~FLAG_END) !== 0) throw new Malformed('voice flags');
  const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
  const group = dv.getUint32(1);
  if (group === 0) throw new Malformed('group 0');
  return {
    header: { group, speaker: dv.getUint32(5), burst: dv.getUint16(9), seq: dv.getUint16(11), flags },
    opus: d.subarray(VOICE_HEADER_LEN),
  };
}

// ---------------------------------------------------------------- helpers

/** Hex string (64 chars for a session token) to bytes; throws on bad input. */
export function hexToBytes(hex) {
  if (typeof hex !== 'string' || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new RangeError('not a hex string');
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

export function bytesToHex(b) {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** Degrees to 1e-7 degree integers, clamped to the valid range. */
export function toE7(deg, max) {
  const v = Math.round(deg * 1e7);
  return Math.max(-max, Math.min(max, v));
}
export const latE7 = (deg) => toE7(deg, 900000000);
export const lonE7 = (deg) => toE7(deg, 1800000000);
