// Browser integration test of app.js against the scripted fake gateway
// (dev/fake-gateway.js): sign-in state, default joins, floor display, PTT
// (no voice before the grant, END then FloorRelease), incoming voice decoded,
// reports and the delivered receipt, SOS banner / auto-join / cancel,
// dispatch + receipt board, drills, malformed frames. Exit code 0 = pass.
// Needs: node gateway/console/dev/mock-server.mjs 47091 &
// Run: node --experimental-websocket gateway/console/dev/integration.mjs [base] [shots-dir]
import assert from 'node:assert/strict';
import { launch, sleep } from './cdp.mjs';

const base = process.argv[2] ?? 'http://127.0.0.1:47091/console/';
const shots = process.argv[3] ?? null;
const b = await launch();
const { evaluate: ev, until } = b;
const step = (s) => console.log(`- ${s}`);
const got = (type) => ev(`JSON.stringify(fakeGateway.received.filter(m => m.type === '${type}'))`).then(JSON.parse);
const testid = (id) => `document.querySelector('[data-testid="${id}"]')`;
let failed = false;
try {
  await b.navigate(`${base}?dev-signed-in&fake-gateway`);
  await until(`window.pttConsole && window.pttConsole.state === 'online'`, 10000);
  step('online after Hello/Welcome');
  const hello = (await got('Hello'))[0];
  assert.equal(hello.terminal, 300);
  assert.equal(Object.keys(hello.credential).length, 32, 'credential: 32 raw bytes of the token');

  await until(`fakeGateway.received.filter(m => m.type === 'Join').length >= 3`);
  const joins = (await got('Join')).map((m) => m.group).sort((x, y) => x - y);
  assert.deepEqual(joins, [4, 40, 50], 'own node + direct children');
  assert.ok((await got('WatchPositions')).some((m) => m.node === 4));
  await until(`${testid('monitor-40')}.checked && !${testid('monitor-40')}.indeterminate`);
  step(`default groups joined: ${joins}`);

  // Someone talks in 40: floor display + voice decoded.
  await ev(`fakeGateway.send({type: 'FloorTaken', group: 40, speaker: 1001, burst: 9, class: 0, name: '张伟'})`);
  await until(`pttConsole.floor[40] && pttConsole.floor[40].state === 'taken' && pttConsole.floor[40].speaker === 1001`);
  await until(`${testid('talker-40')}.textContent.includes('张伟')`);
  step('FloorTaken shown on the row and in pttConsole.floor');
  // A real Opus packet: encode 200 ms of tone with WebCodecs in the page, send as voice.
  const frames = await ev(`(async () => {
    const out = [];
    const enc = new AudioEncoder({ output: (c) => { const b = new Uint8Array(c.byteLength); c.copyTo(b); out.push(Array.from(b)); }, error: (e) => { throw e; } });
    enc.configure({ codec: 'opus', sampleRate: 48000, numberOfChannels: 1, bitrate: 24000, opus: { frameDuration: 20000 } });
    for (let i = 0; i < 15; i++) {
      const pcm = Float32Array.from({ length: 960 }, (_, k) => 0.5 * Math.sin(2 * Math.PI * 440 * (i * 960 + k) / 48000));
      enc.encode(new AudioData({ format: 'f32-planar', sampleRate: 48000, numberOfFrames: 960, numberOfChannels: 1, timestamp: i * 20000, data: pcm }));
    }
    await enc.flush();
    return out;
  })()`);
  for (const [i, f] of frames.entries()) {
    await ev(`fakeGateway.voice({group: 40, speaker: 1001, burst: 9, seq: ${i}, flags: ${i === frames.length - 1 ? 1 : 0}}, Uint8Array.from(${JSON.stringify(f)}))`);
    await sleep(20);
  }
  await until(`pttConsole.stats.framesDecoded >= ${frames.length - 2} && pttConsole.stats.lastRms > 0.05`);
  step(`voice decoded: ${JSON.stringify(await ev('pttConsole.stats'))}`);
  await ev(`fakeGateway.send({type: 'FloorIdle', group: 40})`);
  await until(`pttConsole.floor[40].state === 'idle'`);

  // PTT on the selected group (own node 4).
  await ev(`${testid('group-4')}.click()`);
  await until(`${testid('ptt-group')}.textContent.length > 1`);
  await ev(`fakeGateway.auto = false`);
  await ev(`${testid('ptt-button')}.dispatchEvent(new PointerEvent('pointerdown', {bubbles: true, pointerId: 1}))`);
  await until(`fakeGateway.received.some(m => m.type === 'FloorRequest' && m.group === 4)`);
  await sleep(400);
  assert.equal(await ev('fakeGateway.datagrams.length'), 0, 'no voice before FloorGranted');
  await ev(`fakeGateway.send({type: 'FloorGranted', group: 4, burst: 77, limit_ms: 30000})`);
  await until(`pttConsole.floor[4].state === 'granted'`);
  await until(`fakeGateway.datagrams.length > 20`, 5000);
  await until(`${testid('floor-status')}.className.includes('granted')`);
  step(`granted, voice flowing: ${await ev('fakeGateway.datagrams.length')} datagrams, captureRms ${await ev('pttConsole.stats.captureRms.toFixed(3)')}`);
  await ev(`${testid('ptt-button')}.dispatchEvent(new PointerEvent('pointerup', {bubbles: true, pointerId: 1}))`);
  await until(`fakeGateway.received.some(m => m.type === 'FloorRelease' && m.group === 4)`);
  const dgs = await ev('fakeGateway.datagrams');
  const last = dgs[dgs.length - 1];
  assert.equal(last.flags, 1, 'last datagram has END');
  assert.ok(dgs.every((d) => d.group === 4 && d.burst === 77 && d.speaker === 0));
  assert.deepEqual(dgs.map((d) => d.seq), dgs.map((_, i) => i), 'seq from 0, no gaps');
  assert.equal(await ev('pttConsole.stats.framesSent'), dgs.length);
  const afterRelease = dgs.length;
  await sleep(300);
  assert.equal(await ev('fakeGateway.datagrams.length'), afterRelease, 'nothing after END');
  step(`released: END on seq ${last.seq}, then FloorRelease`);
  await ev(`fakeGateway.auto = true`);

  // Space bar is the talk key when focus is not in a text field.
  await ev(`document.activeElement && document.activeElement.blur()`);
  const relBefore = (await got('FloorRelease')).length;
  await ev(`document.dispatchEvent(new KeyboardEvent('keydown', {code: 'Space', key: ' ', bubbles: true}))`);
  await until(`pttConsole.floor[4].state === 'granted'`);
  await ev(`document.dispatchEvent(new KeyboardEvent('keyup', {code: 'Space', key: ' ', bubbles: true}))`);
  await until(`fakeGateway.received.filter(m => m.type === 'FloorRelease').length > ${relBefore}`);
  // ... but not while typing in a text field.
  const reqBefore = (await got('FloorRequest')).length;
  await ev(`(() => { const i = ${testid('dispatch-title')}; i.focus(); i.dispatchEvent(new KeyboardEvent('keydown', {code: 'Space', key: ' ', bubbles: true})); i.blur(); })()`);
  await sleep(300);
  assert.equal((await got('FloorRequest')).length, reqBefore, 'no talk while typing');
  step('Space talks (press/release), not while typing in a text field');
  await ev(`${testid('ptt-emergency')}.click()`);
  await ev(`document.dispatchEvent(new KeyboardEvent('keydown', {code: 'Space', key: ' ', bubbles: true}))`);
  await until(`fakeGateway.received.some(m => m.type === 'FloorRequest' && m.class === 2)`);
  await ev(`document.dispatchEvent(new KeyboardEvent('keyup', {code: 'Space', key: ' ', bubbles: true})); ${testid('ptt-emergency')}.click()`);
  await sleep(300);
  await until(`pttConsole.floor[4].state === 'idle'`);
  step('emergency call requests class 2');

  // Denied / queued / revoked display.
  await ev(`fakeGateway.send({type: 'FloorDenied', group: 50, cause: 5})`);
  await until(`pttConsole.floor[50].state === 'denied' && pttConsole.floor[50].cause === 5`);
  await ev(`fakeGateway.send({type: 'FloorQueued', group: 40, position: 2})`);
  await until(`pttConsole.floor[40].state === 'queued' && pttConsole.floor[40].position === 2`);
  step('denied with cause, queued with position');
  await ev(`fakeGateway.send({type: 'FloorGranted', group: 4, burst: 78, limit_ms: 4000})`);
  await until(`${testid('floor-status')}.className.includes('t2') && /\\d s/.test(${testid('floor-status')}.textContent)`);
  await ev(`fakeGateway.send({type: 'FloorRevoked', group: 4, burst: 78, cause: 2})`);
  await until(`pttConsole.floor[4].state === 'revoked' && pttConsole.floor[4].cause === 2 && ${testid('floor-status')}.className.includes('revoked')`);
  await ev(`fakeGateway.send({type: 'FloorIdle', group: 4})`);
  step('granted with seconds left and the T2 warning in the last 5 s; revoked with cause');

  // A work report with a photo: delivered receipt at once, shown once, photo from the Attachment stream.
  const png = await ev(`(async () => { const c = new OffscreenCanvas(8, 8); const g = c.getContext('2d'); g.fillStyle = 'red'; g.fillRect(0, 0, 8, 8); const b = await c.convertToBlob({type: 'image/png'}); return Array.from(new Uint8Array(await b.arrayBuffer())); })()`);
  const report = { type: 'Alert', alert: 12, issuer: 1001, created_ms: Date.now(), expires_ms: Date.now() + 86400000,
    body: { kind: 6, priority: 0, ttl_s: 86400, title: '巡查', text: '门口有可疑车辆', location: { lat_e7: 290800000, lon_e7: 1196400000, address: '城南路165号' }, attachments: [{ id: 3, size: png.length, mime: 'image/png' }] } };
  await ev(`fakeGateway.stream(${JSON.stringify(report)})`);
  await ev(`fakeGateway.stream(${JSON.stringify(report)})`);
  await ev(`fakeGateway.stream({type: 'Attachment', attachment: 3, alert: 12, mime: 'image/png', size: ${png.length}}, Uint8Array.from(${JSON.stringify(png)}))`);
  await until(`fakeGateway.received.filter(m => m.type === 'AlertReceipt' && m.alert === 12 && m.status === 1).length === 2`);
  await ev(`${testid('tab-inbox')}.click()`);
  await until(`document.querySelectorAll('[data-testid="inbox-12"]').length === 1`);
  await until(`${testid('inbox-photo-3')} && ${testid('inbox-photo-3')}.naturalWidth === 8`);
  await until(`fakeGateway.received.some(m => m.type === 'AlertReceipt' && m.alert === 12 && m.status === 2)`);
  await ev(`${testid('inbox-accept-12')}.click()`);
  await until(`fakeGateway.received.some(m => m.type === 'AlertReceipt' && m.alert === 12 && m.status === 3)`);
  await ev(`(() => { const i = ${testid('inbox-answer-text-12')}; i.value = '收到，马上到'; i.dispatchEvent(new Event('input')); ${testid('inbox-answer-12')}.click(); })()`);
  await until(`fakeGateway.received.some(m => m.type === 'AlertSend' && m.target.type === 'Terminals' && m.target.terminals[0] === 1001 && m.body.kind === 2)`);
  assert.equal((await ev('pttConsole.alerts[12]')).kind, 6);
  step('report: delivered x2 (shown once), photo shown, read, accepted, answered');

  // SOS from 1002 (unit 41): banner, auto-join 41 at emergency priority, cancel.
  await ev(`fakeGateway.lastSos = 13`);
  await ev(`fakeGateway.stream({type: 'Alert', alert: 13, issuer: 1002, created_ms: Date.now(), expires_ms: Date.now() + 3600000, body: {kind: 5, priority: 3, ttl_s: 3600, title: 'SOS 紧急求助: 李娜', text: '', location: {lat_e7: 290812000, lon_e7: 1196405000, address: ''}, attachments: []}})`);
  await until(`${testid('sos-banner-13')}`);
  await until(`fakeGateway.received.some(m => m.type === 'Join' && m.group === 41)`);
  assert.deepEqual(await ev('pttConsole.sos'), [{ alert: 13, terminal: 1002, cancelled_by: null }]);
  if (shots) await b.shot(`${shots}/sos.png`);
  await ev(`${testid('sos-cancel-13')}.click()`);
  await until(`fakeGateway.received.some(m => m.type === 'SosCancel' && m.terminal === 1002)`);
  await until(`pttConsole.sos[0].cancelled_by === 300`);
  await until(`${testid('sos-cancelled-by-13')}`);
  step('SOS: banner, joined unit 41, cancelled (by 300)');

  // Dispatch to a subtree with police + auxiliary police, location from the map.
  await ev(`${testid('tab-dispatch')}.click()`);
  await ev(`(() => {
    const set = (id, v) => { const e = document.querySelector('[data-testid="' + id + '"]'); e.value = v; e.dispatchEvent(new Event('change')); e.dispatchEvent(new Event('input')); };
    set('dispatch-title', '拉车门'); set('dispatch-kind', '1'); set('dispatch-priority', '3'); set('dispatch-ttl', '600');
    set('dispatch-target-type', 'subtree'); set('dispatch-node', '40');
    ${testid('dispatch-role-police')}.checked = true; ${testid('dispatch-role-auxiliary_police')}.checked = true;
    ${testid('dispatch-use-location')}.checked = true; set('dispatch-lat', '29.08'); set('dispatch-lon', '119.64'); set('dispatch-address', '城南路165号');
    ${testid('dispatch-send')}.click();
  })()`);
  await until(`fakeGateway.received.some(m => m.type === 'AlertSend' && m.body.title === '拉车门')`);
  const send = (await got('AlertSend')).find((m) => m.body.title === '拉车门');
  assert.deepEqual(send.target, { type: 'Subtree', node: 40, roles: 3 });
  assert.deepEqual(send.body.location, { lat_e7: 290800000, lon_e7: 1196400000, address: '城南路165号' });
  assert.equal(send.body.kind, 1);
  const alertId = await until(`(() => { const e = Object.entries(pttConsole.alerts).find(([k, v]) => v.title === '拉车门'); return e && Number(e[0]); })()`);
  await until(`fakeGateway.received.some(m => m.type === 'AlertQuery' && m.alert === ${alertId})`);
  await ev(`fakeGateway.send({type: 'ReceiptUpdate', alert: ${alertId}, terminal: 1001, status: 4, at_ms: Date.now(), reason: '走不开'})`);
  await until(`pttConsole.alerts[${alertId}].receipts[1001] === 4`);
  await until(`${testid(`receipt-${alertId}-1001`)} && ${testid(`receipt-${alertId}-1001`)}.textContent.includes('走不开')`);
  await until(`${testid(`board-count-${alertId}-accepted`)}.textContent.includes('1')`);
  step(`dispatch: subtree 40 roles 3 with location; board ${alertId} shows rejection and AlertStatus counts`);

  // Nearest needs a point: click the map.
  await ev(`(() => { const c = ${testid('map')}; const r = c.getBoundingClientRect(); c.dispatchEvent(new MouseEvent('click', {clientX: r.left + r.width / 2, clientY: r.top + r.height / 2, bubbles: true})); })()`);
  await until(`${testid('dispatch-lat')}.value !== ''`);
  await ev(`(() => { const set = (id, v) => { const e = document.querySelector('[data-testid="' + id + '"]'); e.value = v; e.dispatchEvent(new Event('change')); }; set('dispatch-title', '就近'); set('dispatch-target-type', 'nearest'); set('dispatch-k', '3'); set('dispatch-radius', '2000'); ${testid('dispatch-send')}.click(); })()`);
  await until(`fakeGateway.received.some(m => m.type === 'AlertSend' && m.target.type === 'Nearest')`);
  const near = (await got('AlertSend')).find((m) => m.target.type === 'Nearest');
  assert.deepEqual(near.target, { type: 'Nearest', k: 3, radius_m: 2000 });
  assert.ok(near.body.location, 'nearest carries the map point');
  step('nearest dispatch from a map click');

  // Drill to chosen units; report table.
  await ev(`${testid('tab-drills')}.click()`);
  await ev(`(() => { const s = ${testid('drill-target-type')}; s.value = 'units'; s.dispatchEvent(new Event('change')); ${testid('drill-unit-41')}.checked = true; ${testid('drill-launch')}.click(); })()`);
  await until(`fakeGateway.received.some(m => m.type === 'AlertSend' && m.body.kind === 4)`);
  const drill = (await got('AlertSend')).find((m) => m.body.kind === 4);
  assert.equal(drill.target.type, 'Terminals');
  assert.deepEqual([...drill.target.terminals].sort(), [1001, 1002, 1003, 1004]);
  await until(`document.querySelector('[data-testid^="drill-row-"][data-testid$="-41"]')`);
  step('drill: members of unit 41, report row shown');
  if (shots) await b.shot(`${shots}/drill.png`);

  // Monitor checkbox: Leave and Join.
  await ev(`${testid('monitor-50')}.click()`);
  await until(`fakeGateway.received.some(m => m.type === 'Leave' && m.group === 50)`);
  await ev(`${testid('monitor-51')}.click()`);
  await until(`fakeGateway.received.some(m => m.type === 'Join' && m.group === 51)`);
  // A refused join unticks the box with the error on the row.
  await ev(`fakeGateway.auto = false; ${testid('monitor-42')}.click()`);
  await until(`fakeGateway.received.some(m => m.type === 'Join' && m.group === 42)`);
  await ev(`fakeGateway.send({type: 'Error', code: 13, frame: 2, group: 42, message: 'too many groups'}); fakeGateway.auto = true`);
  await until(`!${testid('monitor-42')}.checked && ${testid('group-error-42')}.textContent.length > 0`);
  step('monitor: Leave, Join, refused Join unticked with error');

  // Hostile control stream input: malformed frames are skipped, the stream stays usable.
  const before = await ev('pttConsole.events.length');
  await ev(`fakeGateway.sendRaw([0x7f, 0, 2, 1, 2]); fakeGateway.sendRaw([0x48, 0, 4, 0, 0, 0, 0]); fakeGateway.sendRaw([0x42, 0, 7, 0, 0, 0, 42, 1, 0, 1]); fakeGateway.send({type: 'FloorIdle', group: 40})`);
  await until(`pttConsole.floor[40].state === 'idle'`);
  assert.equal(await ev('pttConsole.state'), 'online');
  assert.ok((await ev('pttConsole.events.length')) >= Math.min(200, before));
  step('malformed frames skipped, stream in sync');

  // A header over 16384 bytes closes the session (then it reconnects).
  await ev(`fakeGateway.sendRaw([0x41, 0x40, 0x01])`);
  await until(`pttConsole.state !== 'online'`, 3000).catch(() => {});
  await until(`pttConsole.state === 'online'`, 15000);
  step('oversized header: closed and reconnected');

  if (shots) { await ev(`${testid('tab-receipts')}.click()`); await b.shot(`${shots}/receipts.png`); }
  // Sign out: Logout on the control stream, back to the sign-in form.
  await ev(`window.lastGateway = fakeGateway; ${testid('signout')}.click()`);
  await until(`pttConsole.state === 'signed-out' && !document.getElementById('signin').hidden`);
  assert.ok(await ev(`lastGateway.received.some(m => m.type === 'Logout')`), 'Logout sent');
  step('signed out: Logout sent, sign-in form shown');
  const errs = b.errors.filter((e) => !/Failed to load resource/.test(e));
  assert.deepEqual(errs, [], 'no page errors');
  console.log('PASS');
} catch (e) {
  failed = true;
  console.log('FAIL', e.message);
  console.log('page errors:', b.errors);
  try { console.log('log:', await ev(`JSON.stringify([...document.querySelectorAll('#log li')].slice(0, 15).map(l => l.textContent))`)); } catch { /* gone */ }
}
b.close();
process.exit(failed ? 1 : 0);
