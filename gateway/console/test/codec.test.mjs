// Codec tests: every test vector of docs/PROTOCOL.md section 6 round-trips
// byte-exactly, and malformed or hostile input is rejected with Malformed.
// Run: node --test gateway/console/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as C from '../js/codec.js';

const protocolPath = fileURLToPath(new URL('../../../docs/PROTOCOL.md', import.meta.url));

/** The vector table of section 6, read from the document itself so the two cannot drift. */
function vectors() {
  const text = readFileSync(protocolPath, 'utf8');
  const out = new Map();
  const re = /^\| `([a-z0-9-]+)` \| `([0-9a-f ]+)` \|/gm;
  let m;
  while ((m = re.exec(text))) {
    out.set(m[1], Uint8Array.from(m[2].trim().split(/\s+/), (h) => parseInt(h, 16)));
  }
  return out;
}

const hex = (s) => Uint8Array.from(s.trim().split(/\s+/), (h) => parseInt(h, 16));
const fire = { lat_e7: 290800000, lon_e7: 1196400000 };

// Expected values, in the codec's JS shape (field names of PROTOCOL.md).
const CLIENT = {
  hello: { type: 'Hello', version: 1, terminal: 1001, credential: hex('a1 b2 c3 d4') },
  join: { type: 'Join', group: 42 },
  leave: { type: 'Leave', group: 42 },
  'floor-request-emergency': { type: 'FloorRequest', group: 42, class: 2 },
  'floor-release': { type: 'FloorRelease', group: 42 },
  ping: { type: 'Ping', nonce: 7 },
  logout: { type: 'Logout' },
  'hello-provisioned': {
    type: 'Hello', version: 1, terminal: 1,
    credential: hex('b1 11 58 3f d8 af 92 5e 7e 68 86 da 08 21 59 33 4e 6c 5f 49 c5 8d ac 5e dc f3 2b c6 04 fd 33 c0'),
  },
  'alert-send-group': {
    type: 'AlertSend', request: 7, target: { type: 'Group', group: 5 },
    body: { kind: 1, priority: 3, ttl_s: 600, title: '拉车门', text: '', location: { ...fire, address: '城南路165号' }, attachments: [] },
  },
  'alert-receipt-rejected': { type: 'AlertReceipt', alert: 12, status: 4, reason: '走不开' },
  'attachment-put': { type: 'AttachmentPut', request: 8, mime: 'image/jpeg', size: 1048576 },
  'alert-send-terminals': {
    type: 'AlertSend', request: 9, target: { type: 'Terminals', terminals: [1001, 1002] },
    body: { kind: 2, priority: 1, ttl_s: 3600, title: '例会', text: '9:00', location: null, attachments: [] },
  },
  'alert-send-subtree-police': {
    type: 'AlertSend', request: 10, target: { type: 'Subtree', node: 4, roles: 3 },
    body: { kind: 3, priority: 2, ttl_s: 1800, title: '大风', text: '', location: null, attachments: [] },
  },
  'alert-send-nearest': {
    type: 'AlertSend', request: 11, target: { type: 'Nearest', k: 3, radius_m: 2000 },
    body: { kind: 1, priority: 3, ttl_s: 600, title: '拉车门', text: '', location: { ...fire, address: '' }, attachments: [] },
  },
  'alert-send-station-report-with-attachment': {
    type: 'AlertSend', request: 12, target: { type: 'Station' },
    body: { kind: 6, priority: 0, ttl_s: 86400, title: '巡查', text: '', location: null, attachments: [{ id: 3, size: 0, mime: '' }] },
  },
  'alert-query': { type: 'AlertQuery', alert: 12 },
  position: { type: 'Position', ...fire, accuracy_m: 15 },
  'watch-positions': { type: 'WatchPositions', node: 4 },
  sos: { type: 'Sos' },
  'sos-cancel': { type: 'SosCancel', terminal: 1001 },
  'attachment-fetch': { type: 'AttachmentFetch', attachment: 3 },
  'drill-report-query': { type: 'DrillReportQuery', alert: 12 },
  'hello-srtp': { type: 'Hello', version: 1, terminal: 1001, credential: hex('a1 b2 c3 d4'), media: 1 },
  'media-mode-datagram': { type: 'MediaMode', srtp: false },
  'link-report': { type: 'LinkReport', received: 250, lost: 3, late: 1, jitter_us: 4200 },
};

/** Frames whose last field is optional (the media offer and answer): a
 * cut there is the frame without it. */
const OPTIONAL_TAIL = { 'hello-srtp': 1, 'welcome-srtp': 5 };

const SERVER = {
  'welcome-resumed': {
    type: 'Welcome', terminal: 1001, name: '张伟', resumed: true,
    groups: [{ group: 42, talk: true }, { group: 40, talk: false }],
  },
  joined: { type: 'Joined', group: 42, talk: true, name: '共治单元1', online: [1001, 1002] },
  left: { type: 'Left', group: 42 },
  'floor-granted': { type: 'FloorGranted', group: 42, burst: 5, limit_ms: 30000 },
  'floor-denied-receive-only': { type: 'FloorDenied', group: 40, cause: 5 },
  'floor-queued': { type: 'FloorQueued', group: 42, position: 2 },
  'floor-taken': { type: 'FloorTaken', group: 42, speaker: 1001, burst: 5, class: 0, name: '张伟' },
  'floor-idle': { type: 'FloorIdle', group: 42 },
  'floor-revoked-too-long': { type: 'FloorRevoked', group: 42, burst: 5, cause: 2 },
  'presence-online': { type: 'Presence', group: 42, terminal: 1002, online: true },
  'error-join-denied': { type: 'Error', code: 11, frame: 2, group: 99, message: 'denied' },
  pong: { type: 'Pong', nonce: 7 },
  'alert-accepted': { type: 'AlertAccepted', request: 7, alert: 12, recipients: 4 },
  'receipt-saved': { type: 'ReceiptSaved', alert: 12, status: 3 },
  'alert-with-attachment': {
    type: 'Alert', alert: 12, issuer: 300, created_ms: 1700000000000, expires_ms: 1700000600000,
    body: {
      kind: 1, priority: 3, ttl_s: 600, title: '拉车门', text: '', location: null,
      attachments: [{ id: 3, size: 1048576, mime: 'image/jpeg' }],
    },
  },
  'receipt-update-rejected': { type: 'ReceiptUpdate', alert: 12, terminal: 1001, status: 4, at_ms: 1700000042000, reason: '走不开' },
  'alert-status': { type: 'AlertStatus', alert: 12, recipients: 4, counts: { by_status: [0, 1, 0, 1, 1, 1, 0], expired: 0 } },
  'alert-refused-target': { type: 'AlertRefused', request: 7, code: 21, message: 'outside' },
  'position-update': { type: 'PositionUpdate', terminal: 1001, ...fire, accuracy_m: 15, at_ms: 1700000000000 },
  'alert-cancelled': { type: 'AlertCancelled', alert: 13, by: 1001 },
  'attachment-stored': { type: 'AttachmentStored', request: 8, attachment: 3, size: 1048576 },
  attachment: { type: 'Attachment', attachment: 3, alert: 12, mime: 'image/jpeg', size: 1048576 },
  'drill-report': { type: 'DrillReport', alert: 12, size: 2048 },
  'welcome-srtp': { type: 'Welcome', terminal: 1001, name: '张伟', resumed: false, groups: [], media: { ssrc: 0xdeadbeef } },
};

const VOICE = {
  'voice-from-terminal': { header: { group: 42, speaker: 0, burst: 5, seq: 17, flags: 0 }, opus: hex('f8 ff fe') },
  'voice-relayed-end': { header: { group: 42, speaker: 1001, burst: 5, seq: 18, flags: 1 }, opus: hex('f8 ff fe') },
};

test('the document has every vector this test expects, and this test covers every vector', () => {
  const v = vectors();
  const known = new Set([...Object.keys(CLIENT), ...Object.keys(SERVER), ...Object.keys(VOICE)]);
  for (const name of known) assert.ok(v.has(name), `vector ${name} missing from PROTOCOL.md`);
  // Every section-6 vector is a frame the console sends, receives, or a voice datagram.
  for (const name of v.keys()) {
    if (name === 'key') continue;
    assert.ok(known.has(name), `vector ${name} not covered`);
  }
  assert.ok(v.size >= 47, `only ${v.size} vectors parsed`);
});

for (const [name, value] of Object.entries(CLIENT)) {
  test(`client vector ${name} round-trips byte-exactly`, () => {
    const bytes = vectors().get(name);
    assert.deepEqual(C.decodeClientFrame(bytes), value);
    assert.deepEqual(C.encodeClient(value), bytes);
  });
}

for (const [name, value] of Object.entries(SERVER)) {
  test(`gateway vector ${name} round-trips byte-exactly`, () => {
    const bytes = vectors().get(name);
    assert.deepEqual(C.decodeServerFrame(bytes), value);
    assert.deepEqual(C.encodeServer(value), bytes);
  });
}

for (const [name, value] of Object.entries(VOICE)) {
  test(`voice vector ${name} round-trips byte-exactly`, () => {
    const bytes = vectors().get(name);
    const d = C.decodeVoice(bytes);
    assert.deepEqual(d.header, value.header);
    assert.deepEqual(Uint8Array.from(d.opus), value.opus);
    assert.deepEqual(C.encodeVoice(value.header, value.opus), bytes);
  });
}

// ------------------------------------------------------------ hostile input

test('every truncation of every gateway vector is rejected, never accepted or crashing', () => {
  const v = vectors();
  for (const name of Object.keys(SERVER)) {
    const bytes = v.get(name);
    const f = C.splitFrame(bytes);
    for (let cut = 0; cut < f.body.length; cut++) {
      if (cut === f.body.length - (OPTIONAL_TAIL[name] ?? -1)) {
        const { media, ...without } = SERVER[name];
        assert.deepEqual(C.decodeServer(f.kind, f.body.subarray(0, cut)), without, `${name} without its answer`);
        continue;
      }
      assert.throws(() => C.decodeServer(f.kind, f.body.subarray(0, cut)), C.Malformed, `${name} cut at ${cut}`);
    }
    // One byte too many is trailing garbage.
    const longer = C.concat(f.body, new Uint8Array([0]));
    assert.throws(() => C.decodeServer(f.kind, longer), C.Malformed, `${name} + 1 byte`);
  }
});

test('every truncation of every client vector is rejected', () => {
  const v = vectors();
  for (const name of Object.keys(CLIENT)) {
    const f = C.splitFrame(v.get(name));
    for (let cut = 0; cut < f.body.length; cut++) {
      if (name === 'logout' || name === 'sos') continue;
      if (cut === f.body.length - (OPTIONAL_TAIL[name] ?? -1)) {
        const { media, ...without } = CLIENT[name];
        assert.deepEqual(C.decodeClient(f.kind, f.body.subarray(0, cut)), without, `${name} without its offer`);
        continue;
      }
      assert.throws(() => C.decodeClient(f.kind, f.body.subarray(0, cut)), C.Malformed, `${name} cut at ${cut}`);
    }
    // A byte more: trailing garbage, except after a Hello without an offer,
    // where a non-zero byte is an offer (and a zero byte is refused).
    const extra = f.kind === C.KIND.Hello && !('media' in CLIENT[name]) ? 0 : 1;
    assert.throws(() => C.decodeClient(f.kind, C.concat(f.body, new Uint8Array([extra]))), C.Malformed);
  }
});

test('a header announcing more than 16384 bytes is fatal', () => {
  const h = new Uint8Array([0x41, 0x40, 0x01]); // 16385
  assert.throws(() => C.splitFrame(h), (e) => e instanceof C.Malformed && e.fatal);
  const a = new C.FrameAssembler();
  assert.throws(() => a.push(h), (e) => e.fatal);
  assert.throws(() => a.push(new Uint8Array([0x48, 0, 4, 0, 0, 0, 1])), (e) => e.fatal, 'stays broken');
  // Exactly 16384 is allowed (and incomplete here).
  assert.equal(C.splitFrame(new Uint8Array([0x41, 0x40, 0x00])), null);
});

test('the assembler reassembles frames split at every byte and joined in one chunk', () => {
  const v = vectors();
  const stream = C.concat(C.concat(v.get('floor-taken'), v.get('welcome-resumed')), v.get('alert-status'));
  for (let step = 1; step <= stream.length; step++) {
    const a = new C.FrameAssembler();
    const got = [];
    for (let i = 0; i < stream.length; i += step) got.push(...a.push(stream.subarray(i, i + step)));
    assert.deepEqual(got.map((f) => C.decodeServer(f.kind, f.body).type), ['FloorTaken', 'Welcome', 'AlertStatus']);
    assert.equal(a.pending, 0);
  }
});

test('a malformed frame is skipped and the stream stays in sync', () => {
  const v = vectors();
  const bad = new Uint8Array([0x7f, 0, 2, 1, 2]); // unknown type
  const a = new C.FrameAssembler();
  const frames = a.push(C.concat(bad, v.get('floor-idle')));
  assert.equal(frames.length, 2);
  assert.throws(() => C.decodeServer(frames[0].kind, frames[0].body), /unknown frame type/);
  assert.deepEqual(C.decodeServer(frames[1].kind, frames[1].body), { type: 'FloorIdle', group: 42 });
});

test('unknown frame types are rejected in both directions', () => {
  for (let k = 0; k < 256; k++) {
    if (!(k in C.KIND_NAME)) {
      assert.throws(() => C.decodeServer(k, new Uint8Array(0)), C.Malformed);
      assert.throws(() => C.decodeClient(k, new Uint8Array(0)), C.Malformed);
    }
  }
  // A client frame type is not a gateway frame.
  assert.throws(() => C.decodeServer(0x02, hex('00 00 00 2a')), C.Malformed);
});

test('zero ids, bad booleans and unknown enumerated values are rejected', () => {
  const bad = [
    [0x48, '00 00 00 00'], // FloorIdle group 0
    [0x4a, '00 00 00 2a 00 00 03 ea 02'], // Presence online 2
    [0x45, '00 00 00 28 00 04'], // FloorDenied cause 4
    [0x49, '00 00 00 2a 00 05 00 01'], // FloorRevoked cause 1
    [0x47, '00 00 00 2a 00 00 03 e9 00 05 03 00 00'], // FloorTaken class 3
    [0x47, '00 00 00 2a 00 00 00 00 00 05 00 00 00'], // FloorTaken speaker 0
    [0x4b, '00 00 00 00 00 00 00 00 00'], // Error code 0
    [0x50, '00 00 00 00 00 00 00 0c 07'], // ReceiptSaved status 7
    [0x52, '00 00 00 07 00 03 00 00'], // AlertRefused code 3
    [0x53, '00 00 03 e9 35 a4 e9 01 00 00 00 00 00 0f 00 00 00 00 00 00 00 00'], // lat 900000001
    [0x53, '00 00 03 e9 00 00 00 00 6b 49 d2 01 00 0f 00 00 00 00 00 00 00 00'], // lon 1800000001
  ];
  for (const [k, body] of bad) assert.throws(() => C.decodeServer(k, hex(body)), C.Malformed, body);
});

function alertFrame(mutate) {
  const v = structuredClone(SERVER['alert-with-attachment']);
  mutate(v.body);
  return C.encodeServer(v);
}

test('alert bodies over their limits are rejected', () => {
  const ok = C.splitFrame(alertFrame(() => {}));
  assert.equal(C.decodeServer(ok.kind, ok.body).type, 'Alert');
  const body = ok.body;
  // Offsets inside the alert frame body: alert 8, issuer 4, created 8, expires 8 = 28, then kind, priority.
  const kindBad = body.slice(); kindBad[28] = 8;
  assert.throws(() => C.decodeServer(0x4e, kindBad), /alert kind/);
  const kindZero = body.slice(); kindZero[28] = 0;
  assert.throws(() => C.decodeServer(0x4e, kindZero), /alert kind/);
  const prio = body.slice(); prio[29] = 4;
  assert.throws(() => C.decodeServer(0x4e, prio), /priority/);
  // Attachment count 9: rewrite the count byte (after location flag 0).
  const titleLen = (body[34] << 8) | body[35];
  const textAt = 36 + titleLen;
  const textLen = (body[textAt] << 8) | body[textAt + 1];
  const flagAt = textAt + 2 + textLen;
  const countAt = flagAt + 1;
  const nine = body.slice(); nine[countAt] = 9;
  assert.throws(() => C.decodeServer(0x4e, nine), /attachment count/);
  const flag2 = body.slice(); flag2[flagAt] = 2;
  assert.throws(() => C.decodeServer(0x4e, flag2), /location flag/);
  // Attachment id 0.
  const id0 = body.slice(); id0.fill(0, countAt + 1, countAt + 9);
  assert.throws(() => C.decodeServer(0x4e, id0), /attachment/);
  // Attachment size over 4 MiB.
  const big = body.slice(); new DataView(big.buffer).setUint32(countAt + 9, C.MAX_ATTACHMENT + 1);
  assert.throws(() => C.decodeServer(0x4e, big), /attachment/);
});

test('strings: over the limit, wrong length and invalid UTF-8 are rejected', () => {
  // Joined with a name length of 257.
  const name = new Uint8Array(257).fill(0x61);
  const w = [0, 0, 0, 42, 1, 0x01, 0x01, ...name, 0, 0];
  assert.throws(() => C.decodeServer(0x42, Uint8Array.from(w)), /over 256/);
  // Length longer than the bytes that follow.
  assert.throws(() => C.decodeServer(0x42, hex('00 00 00 2a 01 00 05 61 62 00 00')), C.Malformed);
  // Invalid UTF-8: lone continuation byte, overlong encoding, truncated 3-byte char, surrogate.
  for (const s of ['80', 'c0 af', 'e5 bc', 'ed a0 80', 'ff']) {
    const b = hex(s);
    const body = Uint8Array.from([0, 0, 0, 42, 1, 0, b.length, ...b, 0, 0]);
    assert.throws(() => C.decodeServer(0x42, body), /UTF-8/, s);
  }
  // Error message of 1025 bytes.
  const msg = new Uint8Array(1025).fill(0x61);
  assert.throws(() => C.decodeServer(0x4b, Uint8Array.from([0, 1, 0, 0, 0, 0, 0, 0x04, 0x01, ...msg])), /over 1024/);
  // Attachment mime of 65 bytes.
  const mime = new Uint8Array(65).fill(0x61);
  assert.throws(() => C.decodeServer(0x56, Uint8Array.from([...new Uint8Array(7), 3, ...new Uint8Array(7), 12, 0, 65, ...mime, 0, 0, 0, 1])), /over 64/);
});

test('counts over their limits are rejected without allocating them', () => {
  // Welcome claiming 2049 groups, and Joined claiming 3073 members with no bytes behind.
  assert.throws(() => C.decodeServer(0x41, hex('00 00 03 e9 00 00 00 08 01')), /too long/);
  assert.throws(() => C.decodeServer(0x42, hex('00 00 00 2a 01 00 00 0c 01')), /too long/);
  // Claiming 2048 groups with none present is merely truncated.
  assert.throws(() => C.decodeServer(0x41, hex('00 00 03 e9 00 00 00 08 00')), /truncated/);
  // Target with 0 or 1025 terminals.
  assert.throws(() => C.decodeClient(0x08, hex('00 00 00 01 01 00 00')), /count/);
  assert.throws(() => C.decodeClient(0x08, hex('00 00 00 01 01 04 01')), /count/);
  // Nearest k 0, k 101, radius 0, radius 50001.
  for (const t of ['04 00 00 00 00 07 d0', '04 00 65 00 00 07 d0', '04 00 03 00 00 00 00', '04 00 03 00 00 c3 51']) {
    assert.throws(() => C.decodeClient(0x08, hex(`00 00 00 01 ${t}`)), /nearest/);
  }
  // Subtree with bit 64.
  assert.throws(() => C.decodeClient(0x08, hex('00 00 00 01 03 00 00 00 04 40')), /subtree/);
});

test('voice datagrams: bad version, flags, group 0, empty or oversized opus are rejected', () => {
  const good = vectors().get('voice-from-terminal');
  const ver = good.slice(); ver[0] = 0x20;
  assert.throws(() => C.decodeVoice(ver), /version/);
  const flags = good.slice(); flags[0] = 0x12;
  assert.throws(() => C.decodeVoice(flags), /flags/);
  const g0 = good.slice(); g0.fill(0, 1, 5);
  assert.throws(() => C.decodeVoice(g0), /group 0/);
  assert.throws(() => C.decodeVoice(good.subarray(0, 13)), /truncated/);
  assert.throws(() => C.decodeVoice(new Uint8Array(0)), /truncated/);
  assert.throws(() => C.decodeVoice(new Uint8Array(1289).fill(0x10)), /too long/);
  assert.equal(C.decodeVoice(C.concat(good.subarray(0, 13), new Uint8Array(1275))).opus.length, 1275);
});

test('random garbage never crashes a decoder: it decodes or throws Malformed', () => {
  let seed = 12345;
  const rnd = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed; };
  const kinds = Object.keys(C.KIND_NAME).map(Number);
  for (let i = 0; i < 20000; i++) {
    const len = rnd() % 64;
    const body = Uint8Array.from({ length: len }, () => rnd() & 0xff);
    const k = kinds[rnd() % kinds.length];
    for (const dec of [C.decodeServer, C.decodeClient]) {
      try { dec(k, body); } catch (e) { assert.ok(e instanceof C.Malformed, `${e}`); }
    }
    try { C.decodeVoice(body); } catch (e) { assert.ok(e instanceof C.Malformed, `${e}`); }
  }
});

test('encoders cut strings at a whole UTF-8 character within the limit', () => {
  const title = '拉'.repeat(100); // 300 bytes
  const f = C.encodeClient({
    type: 'AlertSend', request: 1, target: { type: 'Group', group: 5 },
    body: { kind: 1, priority: 0, ttl_s: 60, title, text: '', location: null, attachments: [] },
  });
  const d = C.decodeClientFrame(f);
  assert.equal(d.body.title, '拉'.repeat(85)); // 255 bytes, the last whole character within 256
  assert.equal(C.truncateUtf8(new TextEncoder().encode('ab张'), 4).length, 2);
});

test('u64 beyond 2^53 decodes to a BigInt and re-encodes exactly', () => {
  const bytes = hex('4c 00 08 ff ff ff ff ff ff ff ff');
  const m = C.decodeServerFrame(bytes);
  assert.equal(m.nonce, 0xffffffffffffffffn);
  assert.deepEqual(C.encodeServer(m), bytes);
});

test('hex token to credential bytes', () => {
  const tok = 'b111583fd8af925e7e6886da082159334e6c5f49c58dac5edcf32bc604fd33c0';
  const f = C.encodeClient({ type: 'Hello', terminal: 1, credential: C.hexToBytes(tok) });
  assert.deepEqual(f, vectors().get('hello-provisioned'));
  assert.throws(() => C.hexToBytes('abc'));
  assert.throws(() => C.hexToBytes('zz'));
});
