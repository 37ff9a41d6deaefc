// The stream-reading parts of transport.js, driven in node with web streams
// (no WebTransport needed): gateway-opened uni streams (Alert, Attachment,
// DrillReport with exact content), the control-stream reader (reassembly,
// malformed frames skipped, an oversized header closes the session).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Link } from '../js/transport.js';
import { encodeServer, concat } from '../js/codec.js';

function streamOf(chunks, { close = true } = {}) {
  return new ReadableStream({
    start(c) {
      for (const ch of chunks) c.enqueue(ch);
      if (close) c.close();
    },
  });
}

function split(bytes, size) {
  const out = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.slice(i, i + size));
  return out;
}

function harness() {
  const got = { frames: [], streams: [], bad: [] };
  const link = new Link({
    getSession: async () => ({}), onState: () => {}, onFinal: () => {},
    onFrame: (m) => got.frames.push(m),
    onMalformed: (e, kind) => got.bad.push({ message: e.message, kind }),
    onDatagram: () => {},
    onStreamFrame: (m, content) => got.streams.push({ m, content }),
  });
  return { link, got };
}

const alert = {
  type: 'Alert', alert: 12, issuer: 1001, created_ms: 1700000000000, expires_ms: 1700000600000,
  body: { kind: 6, priority: 0, ttl_s: 600, title: '巡查', text: '', location: null, attachments: [{ id: 3, size: 5, mime: 'image/png' }] },
};

test('an Alert stream delivers the alert', async () => {
  const { link, got } = harness();
  await link.readUniStream(streamOf(split(encodeServer(alert), 7)));
  assert.equal(got.streams.length, 1);
  assert.equal(got.streams[0].m.body.title, '巡查');
  assert.equal(got.streams[0].content, null);
  assert.deepEqual(got.bad, []);
});

test('an Attachment stream delivers exactly its content, in any chunking', async () => {
  const content = Uint8Array.from({ length: 100000 }, (_, i) => i & 0xff);
  const bytes = concat(encodeServer({ type: 'Attachment', attachment: 3, alert: 12, mime: 'image/png', size: content.length }), content);
  for (const size of [1, 13, 4096, bytes.length]) {
    const { link, got } = harness();
    await link.readUniStream(streamOf(size === 1 ? split(bytes.subarray(0, 64), 1).concat([bytes.subarray(64)]) : split(bytes, size)));
    assert.equal(got.streams.length, 1, `chunks of ${size}`);
    assert.deepEqual(got.streams[0].content, content);
    assert.deepEqual(got.bad, []);
  }
});

test('a DrillReport stream delivers its JSON', async () => {
  const json = new TextEncoder().encode('{"rows":[],"marks_s":[60,180,480]}');
  const { link, got } = harness();
  await link.readUniStream(streamOf([concat(encodeServer({ type: 'DrillReport', alert: 12, size: json.length }), json)]));
  assert.equal(new TextDecoder().decode(got.streams[0].content), '{"rows":[],"marks_s":[60,180,480]}');
});

test('a stream ending early is a failed transfer, not a delivery', async () => {
  const { link, got } = harness();
  const head = encodeServer({ type: 'Attachment', attachment: 3, alert: 12, mime: 'image/png', size: 1000 });
  await link.readUniStream(streamOf([head, new Uint8Array(10)]));
  assert.equal(got.streams.length, 0);
  assert.match(got.bad[0].message, /ended after/);
  const h2 = harness();
  await h2.link.readUniStream(streamOf([head.subarray(0, 5)]));
  assert.equal(h2.got.streams.length, 0);
  assert.equal(h2.got.bad.length, 1);
});

test('hostile uni streams are refused: oversized header, over 4 MiB, wrong frame, garbage, extra bytes', async () => {
  const cases = [
    [new Uint8Array([0x4e, 0x40, 0x01, 0, 0])],
    [encodeServer({ type: 'Attachment', attachment: 3, alert: 12, mime: 'x', size: 4 * 1024 * 1024 }).map((b, i, a) => (i >= a.length - 4 ? [0, 0x40, 0, 1][i - (a.length - 4)] : b))],
    [encodeServer({ type: 'FloorIdle', group: 4 })],
    [new Uint8Array([0x4e, 0, 3, 1, 2, 3])],
  ];
  for (const chunks of cases) {
    const { link, got } = harness();
    await link.readUniStream(streamOf(chunks));
    assert.equal(got.streams.length, 0);
    assert.equal(got.bad.length, 1, `case ${cases.indexOf(chunks)}: ${JSON.stringify(got.bad)}`);
  }
  // Extra bytes after the content, in the same chunk or a later one: refused whole.
  for (const chunks of [[concat(encodeServer({ type: 'DrillReport', alert: 1, size: 2 }), new Uint8Array([0x7b, 0x7d, 0x20]))],
    [encodeServer({ type: 'DrillReport', alert: 1, size: 2 }), new Uint8Array([0x7b, 0x7d]), new Uint8Array([0x20])]]) {
    const { link, got } = harness();
    await link.readUniStream(streamOf(chunks));
    assert.equal(got.streams.length, 0);
    assert.match(got.bad[0].message, /more bytes than announced/);
  }
});

test('the control reader reassembles frames, skips malformed ones, closes on an oversized header', async () => {
  const { link, got } = harness();
  const stream = concat(concat(encodeServer({ type: 'FloorIdle', group: 4 }), new Uint8Array([0x7f, 0, 1, 0])), encodeServer({ type: 'Presence', group: 4, terminal: 9, online: true }));
  const fakeWt = { close: () => { fakeWt.closed = true; } };
  link.wt = fakeWt;
  await link.readControl(streamOf(split(stream, 2)).getReader(), fakeWt);
  assert.deepEqual(got.frames.map((f) => f.type), ['FloorIdle', 'Presence']);
  assert.equal(got.bad.length, 1);
  assert.equal(got.bad[0].kind, 0x7f);
  assert.equal(fakeWt.closed, undefined);
  const h2 = harness();
  const wt2 = { close: (info) => { wt2.closed = info; } };
  h2.link.wt = wt2;
  await h2.link.readControl(streamOf([encodeServer({ type: 'FloorIdle', group: 4 }), new Uint8Array([0x41, 0xff, 0xff]), encodeServer({ type: 'FloorIdle', group: 5 })]).getReader(), wt2);
  assert.deepEqual(h2.got.frames.map((f) => f.group), [4]);
  assert.equal(wt2.closed.closeCode, 1);
});
