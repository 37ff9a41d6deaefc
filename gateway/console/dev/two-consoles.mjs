// Smoke test against a real gateway with two console operators at the same
// station (two headless Chromium instances, fake microphones): A talks, B
// hears it; A dispatches to B, B accepts, A's board shows it; A runs a drill;
// history lists the burst. Exit code 0 = pass.
// Run: node --experimental-websocket gateway/console/dev/two-consoles.mjs http://127.0.0.1:HTTP/console/ nameA passA terminalB nameB passB [shots-dir] [photo.png]
import assert from 'node:assert/strict';
import { launch, sleep } from './cdp.mjs';

const [url, nameA, passA, termB, nameB, passB, shots, photo] = process.argv.slice(2);
const T = (id) => `document.querySelector('[data-testid="${id}"]')`;
async function signIn(b, name, pass) {
  await b.navigate(url);
  await b.until(`window.pttConsole && ${T('signin-name')}`, 10000);
  await b.evaluate(`(() => { ${T('signin-name')}.value = ${JSON.stringify(name)}; ${T('signin-password')}.value = ${JSON.stringify(pass)}; ${T('signin-submit')}.click(); })()`);
  await b.until(`pttConsole.state === 'online'`, 20000);
}
const step = (s) => console.log(`- ${s}`);
const A = await launch();
const B = await launch();
let ok = true;
try {
  await signIn(A, nameA, passA);
  await signIn(B, nameB, passB);
  step('both consoles online over WebTransport');
  await A.until(`${T('monitor-' + 4)} && ${T('monitor-4')}.checked && !${T('monitor-4')}.indeterminate`, 10000);
  await B.until(`${T('monitor-4')}.checked && !${T('monitor-4')}.indeterminate`, 10000);
  step('joined default groups');

  // A talks on group 4 for 2.5 s; B hears it.
  await A.evaluate(`${T('group-4')}.click()`);
  await A.evaluate(`${T('ptt-button')}.dispatchEvent(new PointerEvent('pointerdown', {bubbles: true, pointerId: 1}))`);
  await A.until(`pttConsole.floor[4] && pttConsole.floor[4].state === 'granted'`, 10000);
  await B.until(`pttConsole.floor[4] && pttConsole.floor[4].state === 'taken' && pttConsole.floor[4].speaker != null`, 10000);
  let maxRms = 0;
  let maxCapture = 0;
  for (let i = 0; i < 25; i++) {
    await sleep(100);
    maxRms = Math.max(maxRms, await B.evaluate('pttConsole.stats.lastRms'));
    maxCapture = Math.max(maxCapture, await A.evaluate('pttConsole.stats.captureRms'));
  }
  await A.evaluate(`${T('ptt-button')}.dispatchEvent(new PointerEvent('pointerup', {bubbles: true, pointerId: 1}))`);
  await B.until(`pttConsole.floor[4].state === 'idle'`, 10000);
  const sa = await A.evaluate('pttConsole.stats');
  const sb = await B.evaluate('pttConsole.stats');
  step(`A sent ${sa.framesSent} frames (max capture RMS ${maxCapture.toFixed(3)}); B received ${sb.framesReceived}, decoded ${sb.framesDecoded}, errors ${sb.decodeErrors}, max RMS heard ${maxRms.toFixed(3)}`);
  assert.ok(maxRms > 0.01, 'B heard sound, not silence');
  assert.ok(sa.framesSent > 50, 'A sent voice');
  assert.ok(sb.framesDecoded > 50, 'B decoded voice');
  assert.ok(sb.framesReceived >= sa.framesSent - 5, 'B got (nearly) every frame');
  const ev = await B.evaluate(`pttConsole.events.filter(e => e.type === 'FloorTaken' && e.group === 4).length`);
  assert.ok(ev >= 1);

  // A dispatches a notice to B's console; B accepts; A's board shows it.
  await A.evaluate(`${T('tab-dispatch')}.click()`);
  await A.evaluate(`(() => { const set = (id, v) => { const e = document.querySelector('[data-testid="' + id + '"]'); e.value = v; e.dispatchEvent(new Event('change')); }; set('dispatch-kind', '2'); set('dispatch-title', '例会'); set('dispatch-text', '9:00'); set('dispatch-target-type', 'terminals'); set('dispatch-member-ids', '${termB}'); ${T('dispatch-send')}.click(); })()`);
  const alertId = await A.until(`(() => { const e = Object.entries(pttConsole.alerts).find(([k, v]) => v.title === '例会'); return e && e[0]; })()`, 10000);
  await B.until(`pttConsole.alerts[${alertId}] && pttConsole.alerts[${alertId}].kind === 2`, 10000);
  await A.until(`pttConsole.alerts[${alertId}].receipts[${termB}] >= 1`, 10000);
  await B.evaluate(`${T('tab-inbox')}.click()`);
  await B.until(`${T('inbox-accept-' + alertId)}`, 5000);
  await B.evaluate(`${T('inbox-accept-' + alertId)}.click()`);
  await A.until(`pttConsole.alerts[${alertId}].receipts[${termB}] === 3`, 10000);
  await A.evaluate(`${T('tab-receipts')}.click()`);
  await A.until(`${T(`receipt-${alertId}-${termB}`)}`, 5000);
  step(`alert ${alertId}: B delivered, read, accepted; A's board shows it`);

  // With a photo (when a file is given): upload, AttachmentStored, alert with the id; B's console gets it pushed.
  if (photo) {
    await A.evaluate(`${T('tab-dispatch')}.click()`);
    const doc = await A.cdp('DOM.getDocument');
    const q = await A.cdp('DOM.querySelector', { nodeId: doc.result.root.nodeId, selector: '[data-testid="dispatch-photos"]' });
    await A.cdp('DOM.setFileInputFiles', { nodeId: q.result.nodeId, files: [photo] });
    await A.evaluate(`(() => { const set = (id, v) => { const e = document.querySelector('[data-testid="' + id + '"]'); e.value = v; e.dispatchEvent(new Event('change')); }; set('dispatch-kind', '1'); set('dispatch-title', '带照片'); set('dispatch-target-type', 'terminals'); set('dispatch-member-ids', '${termB}'); ${T('dispatch-send')}.click(); })()`);
    const pid = await A.until(`(() => { const e = Object.entries(pttConsole.alerts).find(([k, v]) => v.title === '带照片'); return e && e[0]; })()`, 15000);
    await B.until(`pttConsole.alerts[${pid}]`, 10000);
    await B.until(`(() => { const i = document.querySelector('[data-testid="inbox-${pid}"] img'); return i && i.naturalWidth > 0 && i.naturalWidth; })()`, 10000);
    step(`alert ${pid} with a photo: uploaded, pushed to B, shown (${await B.evaluate(`document.querySelector('[data-testid="inbox-${pid}"] img').naturalWidth`)} px wide)`);
  }

  // Drill on A's subtree: the report arrives.
  await A.evaluate(`${T('tab-drills')}.click()`);
  await A.evaluate(`(() => { ${T('drill-title')}.value = '拉动演练'; ${T('drill-launch')}.click(); })()`);
  await A.until(`document.querySelector('[data-testid^="drill-row-"]') || /\\S/.test((document.querySelector('#drills .error') || {}).textContent || '')`, 15000);
  step(`drill report: ${await A.evaluate(`document.querySelectorAll('[data-testid^="drill-row-"]').length`)} rows; error: ${JSON.stringify(await A.evaluate(`(document.querySelector('#drills .error') || {}).textContent || ''`))}`);
  if (shots) await A.shot(`${shots}/real-drill.png`);
  // Export CSV: the same fetch the button makes (Bearer header), checked here for its content.
  const csv = await A.evaluate(`(async () => { const id = document.querySelector('[data-testid^="drill-export-"]').dataset.testid.slice(13); const r = await fetch('./api/drills/' + id + '/report.csv', { headers: { Authorization: 'Bearer ' + sessionStorage.getItem('pttConsole:token') } }); return r.status + ' ' + (await r.text()).split('\\n')[0]; })()`);
  assert.ok(csv.startsWith('200 '), csv);
  await A.evaluate(`document.querySelector('[data-testid^="drill-export-"]').click()`);
  await sleep(800);
  assert.ok(!(await A.evaluate(`[...document.querySelectorAll('.toast.bad')].some(t => t.textContent.startsWith('CSV'))`)), 'CSV export without error');
  step(`CSV export: ${csv.slice(0, 80)}`);

  // History of group 4 lists the burst.
  await A.evaluate(`${T('tab-history')}.click(); ${T('history-group')}.value = '4'; ${T('history-load')}.click()`);
  await sleep(1500);
  step(`history: ${await A.evaluate(`document.querySelectorAll('[data-testid^="burst-"]').length`)} bursts, ${await A.evaluate(`document.querySelectorAll('[data-testid^="play-"]').length`)} recordings`);
  if (await A.evaluate(`!!document.querySelector('[data-testid^="play-"]')`)) {
    await A.evaluate(`document.querySelector('[data-testid^="play-"]').click()`);
    await sleep(1500);
    step(`playing: src ${await A.evaluate(`${T('history-audio')}.src.slice(0, 12)`)} duration ${await A.evaluate(`${T('history-audio')}.duration`)}`);
  }
  if (shots) await A.shot(`${shots}/real-a.png`);
  if (shots) await B.shot(`${shots}/real-b.png`);
  const errs = [...A.errors, ...B.errors].filter((e) => !/Failed to load resource/.test(e));
  console.log('page errors:', errs.length ? errs : 'none');
  console.log('PASS');
} catch (e) {
  ok = false;
  console.log('FAIL', e.message);
  console.log('A errors', A.errors.slice(0, 5), 'B errors', B.errors.slice(0, 5));
  for (const [n, b] of [['A', A], ['B', B]]) {
    try { console.log(n, 'log:', await b.evaluate(`JSON.stringify(document.getElementById('log') ? [...document.querySelectorAll('#log li')].slice(0, 10).map(l => l.textContent) : [])`)); } catch { /* gone */ }
  }
}
A.close();
B.close();
process.exit(ok ? 0 : 1);
