// Sans-I/O modules: jitter buffer, sample framer, floor view, talk session,
// receipt board, drill table, tree. Run: node --test gateway/console/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JitterBuffer, seqDiff } from '../js/jitter.js';
import { SampleFramer, rms } from '../js/framer.js';
import { FloorView, TalkSession, SILENCE_FRAME } from '../js/floor.js';
import { ReceiptBoard, receiptAdvances, expectedRecipients } from '../js/receipts.js';
import { parseDrillReport, drillTable } from '../js/drill.js';
import { Tree, linkQuality, distanceM } from '../js/tree.js';
import { encodeVoice, decodeVoice } from '../js/codec.js';

const h = (seq, flags = 0, burst = 5) => ({ group: 42, speaker: 1001, burst, seq, flags });
const pkt = (n) => Uint8Array.of(n & 0xff);

test('seqDiff wraps around u16', () => {
  assert.equal(seqDiff(1, 0), 1);
  assert.equal(seqDiff(0, 65535), 1);
  assert.equal(seqDiff(65535, 0), -1);
  assert.equal(seqDiff(100, 65500), 136);
});

test('jitter buffer plays in order 60 ms behind the first arrival, reordering fixed', () => {
  const j = new JitterBuffer();
  j.push(h(0), pkt(0), 1000);
  assert.deepEqual(j.pull(1059), []);
  j.push(h(2), pkt(2), 1045);
  j.push(h(1), pkt(1), 1050);
  const out = j.pull(1060);
  assert.deepEqual(out.map((f) => f.seq), [0]);
  assert.deepEqual(j.pull(1100).map((f) => f.seq), [1, 2]);
  j.push(h(3, 1), pkt(3), 1090);
  const last = j.pull(1120);
  assert.equal(last.length, 1);
  assert.equal(last[0].end, true);
  assert.equal(j.active, false);
  // A straggler of the finished burst is dropped.
  assert.equal(j.push(h(2), pkt(2), 1130), false);
  assert.equal(j.active, false);
});

test('jitter buffer conceals a lost frame and drops late ones', () => {
  const j = new JitterBuffer();
  j.push(h(10), pkt(10), 0);
  j.push(h(12), pkt(12), 40);
  const out = j.pull(100);
  assert.deepEqual(out.map((f) => [f.seq, f.data === null]), [[10, false], [11, true], [12, false]]);
  assert.equal(j.stats.lost, 1);
  assert.equal(j.push(h(11), pkt(11), 105), false);
  assert.equal(j.stats.late, 1);
  assert.equal(j.push(h(13), pkt(13), 106), true);
  assert.equal(j.push(h(13), pkt(13), 107), false);
  assert.equal(j.stats.duplicate, 1);
});

test('jitter buffer wraps seq, starts a new burst, ends a stalled one', () => {
  const j = new JitterBuffer();
  j.push(h(65535), pkt(1), 0);
  j.push(h(0), pkt(2), 20);
  assert.deepEqual(j.pull(90).map((f) => f.seq), [65535, 0]);
  // A new burst replaces the old one.
  j.push(h(0, 0, 6), pkt(3), 100);
  assert.equal(j.burst, 6);
  assert.deepEqual(j.pull(160).map((f) => [f.burst, f.seq]), [[6, 0]]);
  // Nothing more: starved, then stalled after 600 ms.
  assert.deepEqual(j.pull(300), []);
  const end = j.pull(800);
  assert.equal(end.length, 1);
  assert.equal(end[0].stalled, true);
  assert.equal(j.active, false);
});

test('jitter buffer bounds its latency', () => {
  const j = new JitterBuffer({ maxFrames: 10 });
  for (let s = 0; s < 40; s++) j.push(h(s), pkt(s), 0);
  assert.ok(j.frames.size <= 10, `${j.frames.size}`);
  const out = j.pull(60);
  assert.equal(out[0].seq, 30);
  assert.ok(j.stats.skipped >= 30);
});

test('jitter buffer never loops forever on hostile seq numbers', () => {
  const j = new JitterBuffer();
  let seed = 7;
  const rnd = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed; };
  let t = 0;
  for (let i = 0; i < 5000; i++) {
    t += rnd() % 30;
    j.push(h(rnd() & 0xffff, rnd() & 1, rnd() % 4), pkt(i), t);
    const out = j.pull(t);
    assert.ok(out.length < 100);
    assert.ok(j.frames.size <= 25);
  }
});

test('framer cuts 128-sample blocks into 960-sample frames; rms', () => {
  const f = new SampleFramer();
  let frames = [];
  for (let i = 0; i < 15; i++) frames = frames.concat(f.push(new Float32Array(128).fill(0.5)));
  assert.equal(frames.length, 2); // 1920 samples
  assert.equal(frames[0].length, 960);
  assert.equal(f.fill, 0);
  assert.ok(Math.abs(rms(frames[0]) - 0.5) < 1e-6);
  assert.equal(rms(new Float32Array(960)), 0);
  const sine = Float32Array.from({ length: 960 }, (_, i) => Math.sin((2 * Math.PI * 440 * i) / 48000));
  assert.ok(Math.abs(rms(sine) - Math.SQRT1_2) < 0.01);
});

test('floor view follows the handset states', () => {
  const v = new FloorView();
  v.apply({ type: 'FloorTaken', group: 42, speaker: 1001, burst: 5, class: 0, name: '张伟' }, 0);
  assert.deepEqual(v.snapshot()[42], { state: 'taken', speaker: 1001, position: null, cause: null });
  v.apply({ type: 'FloorQueued', group: 42, position: 2 }, 10);
  assert.equal(v.get(42).state, 'queued');
  v.apply({ type: 'FloorTaken', group: 42, speaker: 1002, burst: 6, class: 0, name: 'x' }, 20);
  assert.equal(v.get(42).state, 'queued', 'still queued when the talker changes');
  assert.equal(v.get(42).speaker, 1002);
  v.apply({ type: 'FloorGranted', group: 42, burst: 7, limit_ms: 30000 }, 1000);
  assert.equal(v.get(42).state, 'granted');
  assert.equal(v.remainingMs(42, 26000), 5000);
  v.apply({ type: 'FloorRevoked', group: 42, burst: 7, cause: 4 }, 2000);
  assert.deepEqual(v.snapshot()[42], { state: 'revoked', speaker: null, position: null, cause: 4 });
  assert.equal(v.get(42).notice.text, 'PRE_EMPTED');
  v.apply({ type: 'FloorDenied', group: 40, cause: 5 }, 0);
  assert.equal(v.get(40).notice.text, 'RECEIVE_ONLY');
  v.apply({ type: 'FloorIdle', group: 42 }, 0);
  assert.equal(v.get(42).state, 'idle');
  v.apply({ type: 'Left', group: 42 }, 0);
  assert.equal(v.snapshot()[42], undefined);
  assert.equal(v.apply({ type: 'Pong', nonce: 1 }, 0), null);
});

test('talk session: nothing sent before the grant, pre-roll after it, END then release', () => {
  const s = new TalkSession(42, { preRoll: 2 });
  assert.deepEqual(s.request(), { type: 'FloorRequest', group: 42, class: 0 });
  assert.equal(s.onEncoded(pkt(1)), null);
  assert.equal(s.onEncoded(pkt(2)), null);
  assert.equal(s.onEncoded(pkt(3)), null);
  const g = s.onFloor({ type: 'FloorGranted', group: 42, burst: 9, limit_ms: 30000 });
  assert.deepEqual(g.datagrams.map((d) => [d.header.seq, d.opus[0]]), [[0, 2], [1, 3]]);
  const d = s.onEncoded(pkt(4));
  assert.equal(d.header.seq, 2);
  assert.equal(d.header.burst, 9);
  const dg = decodeVoice(encodeVoice(d.header, d.opus));
  assert.equal(dg.header.group, 42);
  const r = s.release();
  assert.equal(r.datagram.header.flags, 1);
  assert.equal(r.datagram.header.seq, 3);
  assert.deepEqual(r.datagram.opus, SILENCE_FRAME);
  assert.equal(r.release, true);
  assert.equal(r.delayMs, 20);
  assert.equal(s.onEncoded(pkt(5)), null, 'nothing after the END frame');
  assert.equal(s.release().release, false, 'released once');
});

test('talk session: denied sends nothing; release while queued withdraws; grant after release closes', () => {
  const a = new TalkSession(42);
  a.onFloor({ type: 'FloorDenied', group: 42, cause: 5 });
  assert.equal(a.onEncoded(pkt(1)), null);
  assert.equal(a.release().release, false);
  const b = new TalkSession(42);
  b.onFloor({ type: 'FloorQueued', group: 42, position: 1 });
  assert.deepEqual(b.release(), { datagram: null, release: true, delayMs: 0 });
  const c = new TalkSession(42);
  c.release();
  const g = c.onFloor({ type: 'FloorGranted', group: 42, burst: 3, limit_ms: 30000 });
  assert.equal(g.datagrams.length, 1);
  assert.equal(g.datagrams[0].header.flags, 1);
  assert.equal(g.release, true);
  // Frames of another group are not this session's.
  assert.deepEqual(new TalkSession(42).onFloor({ type: 'FloorGranted', group: 40, burst: 1, limit_ms: 1 }).datagrams, []);
});

test('receipts move forward only, rejected is final', () => {
  assert.equal(receiptAdvances(0, 1), true);
  assert.equal(receiptAdvances(1, 5), true);
  assert.equal(receiptAdvances(5, 2), false);
  assert.equal(receiptAdvances(2, 4), true);
  assert.equal(receiptAdvances(3, 4), false);
  assert.equal(receiptAdvances(4, 6), false);
  assert.equal(receiptAdvances(5, 6), true);
  const tree = sampleTree();
  const b = new ReceiptBoard({ alert: 12 }, expectedRecipients({ type: 'Group', group: 5 }, tree, 300));
  assert.deepEqual(b.snapshot(), { 1001: 0, 1002: 0, 1003: 0 });
  assert.equal(b.update(1001, 3, 10), true);
  assert.equal(b.update(1001, 1, 11), false);
  assert.equal(b.update(1002, 4, 12, '走不开'), true);
  assert.equal(b.update(1002, 6, 13), false);
  const view = b.view(tree);
  assert.equal(view.length, 1);
  assert.equal(view[0].name, '共治单元1');
  const r1003 = view[0].rows.find((r) => r.terminal === 1003);
  assert.equal(r1003.stored, true, 'pending and offline: stored, delivered when online');
  assert.equal(view[0].rows.find((r) => r.terminal === 1002).reason, '走不开');
  assert.deepEqual(b.tally().by_status, [1, 0, 0, 1, 1, 0, 0]);
  // A summary older than the rows: the rows (one per recipient) win.
  b.setCounts({ recipients: 3, counts: { by_status: [1, 1, 0, 1, 0, 0, 0], expired: 1 } });
  assert.deepEqual(b.tally().by_status, [1, 0, 0, 1, 1, 0, 0]);
  assert.equal(b.tally().expired, 1);
  assert.equal(b.tally().live, true);
  // More recipients than rows (a subtree the tree could not predict): the summary.
  b.setCounts({ recipients: 5, counts: { by_status: [2, 1, 0, 1, 1, 0, 0], expired: 0 } });
  assert.equal(b.tally().live, false);
  assert.deepEqual(b.tally().by_status, [2, 1, 0, 1, 1, 0, 0]);
});

function sampleTree() {
  return new Tree({
    root: 4,
    nodes: [
      { id: 4, parent: 1, kind: 'police_station', name: '城南派出所' },
      { id: 40, parent: 4, kind: 'station', name: '共治站' },
      { id: 5, parent: 40, kind: 'unit', name: '共治单元1' },
      { id: 6, parent: 40, kind: 'unit', name: '共治单元2' },
    ],
    terminals: [
      { id: 300, name: '指挥室', role: 'dispatcher', kind: 'console', node: 4, online: true, position: null, link: null },
      { id: 1001, name: '张伟', role: 'police', kind: 'handheld', node: 5, online: true, position: { lat: 29.08, lon: 119.64, accuracy_m: 10, at_ms: 0 }, link: { rtt_ms: 42.5, lost_packets: 3, sent_packets: 200 } },
      { id: 1002, name: '李四', role: 'security_guard', kind: 'phone_app', node: 5, online: true, position: null, link: null },
      { id: 1003, name: '王五', role: 'volunteer', kind: 'handheld', node: 5, online: false, position: null, link: null },
      { id: 1004, name: '赵六', role: 'staff', kind: 'handheld', node: 6, online: false, position: null, link: null },
    ],
  });
}

test('tree: order, subtree, default monitored groups, link quality', () => {
  const t = sampleTree();
  assert.deepEqual(t.ordered().map((n) => [n.id, n.depth]), [[4, 0], [40, 1], [5, 2], [6, 2]]);
  assert.deepEqual(t.subtree(40).sort(), [40, 5, 6].sort());
  assert.deepEqual(t.defaultMonitored(4), [4, 40]);
  assert.deepEqual(t.subtreeTerminals(40, 4, (r) => ({ security_guard: 4 })[r] ?? 0).map((x) => x.id), [1002]);
  assert.deepEqual(linkQuality(t.terminal(1001).link), { rtt_ms: 43, loss_pct: 1.5 });
  assert.equal(t.positions().length, 1);
  assert.ok(Math.abs(distanceM({ lat: 29, lon: 119 }, { lat: 29.01, lon: 119 }) - 1112) < 5);
  assert.throws(() => new Tree({}));
});

test('drill report table: marks per unit', () => {
  const rep = parseDrillReport(JSON.stringify({
    alert: 12, title: '拉动', issuer: 300, started_ms: 1, generated_ms: 2, marks_s: [60, 180, 480],
    rows: [
      { level: 'unit', node: 5, name: '共治单元1', parent: 40, units: 1, members: 4,
        receipt: { reached: 1, within: [1, 1, 1], median_s: 0.4, max_s: 0.4 },
        accept: { reached: 1, within: [1, 1, 1], median_s: 42, max_s: 42 },
        arrive: { reached: 1, within: [0, 1, 1], median_s: 150.2, max_s: 150.2 } },
      { level: 'total', node: null, name: 'total', units: 2, members: 8,
        receipt: { reached: 1, within: [1, 1, 1], median_s: 0.4, max_s: 0.4 },
        accept: { reached: 0, within: [0, 0, 0], median_s: null, max_s: null },
        arrive: { reached: 0, within: [0, 0, 0], median_s: null, max_s: null } },
    ],
  }));
  const t = drillTable(rep);
  assert.equal(t.rows.length, 2);
  assert.deepEqual(t.rows[0].steps.arrive.cells.map((c) => c.ok), ['none', 'all', 'all']);
  assert.deepEqual(t.rows[1].steps.receipt.cells.map((c) => c.ok), ['some', 'some', 'some']);
  assert.equal(t.rows[1].steps.accept.median_s, null);
  assert.throws(() => parseDrillReport('{"rows": 1}'));
  assert.throws(() => parseDrillReport('not json'));
});

test('timing marks: off without arrays, bounded, entries returned to fill in', async () => {
  const { newTiming, mark } = await import('../js/timing.js');
  assert.equal(mark(null, 'sent', { seq: 0 }), null);
  assert.equal(mark({}, 'sent', { seq: 0 }), null);
  const t = newTiming();
  for (let i = 0; i < 10; i++) mark(t, 'sent', { seq: i }, 4);
  assert.deepEqual(t.sent.map((e) => e.seq), [6, 7, 8, 9]);
  const p = mark(t, 'presses', { granted: null }, 4);
  p.granted = 12.5;
  assert.equal(t.presses[0].granted, 12.5);
  assert.deepEqual(Object.keys(t).sort(), ['decoded', 'presses', 'received', 'sent']);
});
