// Smoke test of the console page in headless Chromium through the DevTools
// protocol (no npm packages): loads the page from a running server (the mock
// in this folder, or the real gateway), signs in, reports page errors and the
// pttConsole hooks, and writes screenshots.
// Run: node --experimental-websocket gateway/console/dev/smoke.mjs http://127.0.0.1:47091/console/ wang wang /tmp/shots
import { spawn } from 'node:child_process';
import { writeFileSync, mkdirSync } from 'node:fs';

const [url = 'http://127.0.0.1:47091/console/', name = 'wang', password = 'wang', out = '/tmp/console-shots'] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const port = 9300 + Math.floor(Math.random() * 500);
const chrome = spawn('/usr/bin/chromium', [
  '--headless=new', '--no-sandbox', '--disable-gpu', `--remote-debugging-port=${port}`, '--window-size=1920,1080',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--autoplay-policy=no-user-gesture-required',
  '--ignore-certificate-errors', 'about:blank',
], { stdio: ['ignore', 'ignore', 'pipe'] });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let wsUrl;
for (let i = 0; i < 100 && !wsUrl; i++) {
  await sleep(200);
  try {
    const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
    wsUrl = list.find((t) => t.type === 'page')?.webSocketDebuggerUrl;
  } catch { /* not up yet */ }
}
if (!wsUrl) { console.error('chromium did not start'); chrome.kill(); process.exit(1); }
const ws = new WebSocket(wsUrl);
await new Promise((r) => ws.addEventListener('open', r));
let id = 0;
const pending = new Map();
const errors = [];
ws.addEventListener('message', (e) => {
  const m = JSON.parse(e.data);
  if (m.id && pending.has(m.id)) { pending.get(m.id)(m); pending.delete(m.id); }
  if (m.method === 'Runtime.exceptionThrown') errors.push(m.params.exceptionDetails.exception?.description ?? m.params.exceptionDetails.text);
  if (m.method === 'Runtime.consoleAPICalled' && (m.params.type === 'error')) errors.push(m.params.args.map((a) => a.value ?? a.description).join(' '));
  if (m.method === 'Log.entryAdded' && m.params.entry.level === 'error') errors.push(`${m.params.entry.text} ${m.params.entry.url ?? ''}`);
});
const cdp = (method, params = {}) => new Promise((resolve) => { const i = ++id; pending.set(i, resolve); ws.send(JSON.stringify({ id: i, method, params })); });
const evaluate = async (expr) => {
  const r = await cdp('Runtime.evaluate', { expression: expr, awaitPromise: true, returnByValue: true });
  if (r.result?.exceptionDetails) throw new Error(r.result.exceptionDetails.exception?.description ?? 'eval failed');
  return r.result?.result?.value;
};
const shot = async (file, w = 1920, h = 1080) => {
  await cdp('Emulation.setDeviceMetricsOverride', { width: w, height: h, deviceScaleFactor: 1, mobile: false });
  await sleep(600);
  const r = await cdp('Page.captureScreenshot', { format: 'png' });
  writeFileSync(`${out}/${file}`, Buffer.from(r.result.data, 'base64'));
  console.log(`screenshot ${out}/${file}`);
};

await cdp('Runtime.enable');
await cdp('Log.enable');
await cdp('Page.enable');
await cdp('Page.navigate', { url });
await sleep(1500);
await shot('signin.png', 1366, 768);
console.log('state before sign-in:', await evaluate('window.pttConsole && window.pttConsole.state'));
await evaluate(`(() => { const s = (id, v) => { const e = document.querySelector('[data-testid=' + id + ']'); e.value = v; }; s('signin-name', ${JSON.stringify(name)}); s('signin-password', 'nope'); document.querySelector('[data-testid=signin-submit]').click(); })()`);
await sleep(800);
console.log('wrong password error:', await evaluate(`document.querySelector('[data-testid=signin-error]').textContent`));
await evaluate(`(() => { document.querySelector('[data-testid=signin-password]').value = ${JSON.stringify(password)}; document.querySelector('[data-testid=signin-submit]').click(); })()`);
await sleep(3000);
console.log('state after sign-in:', await evaluate('window.pttConsole.state'));
console.log('operator:', await evaluate(`document.querySelector('[data-testid=operator]').textContent + ' / ' + document.querySelector('[data-testid=station]').textContent`));
console.log('groups:', await evaluate(`[...document.querySelectorAll('[data-testid^=group-]')].filter(e => /^group-\\d+$/.test(e.dataset.testid)).map(e => e.dataset.testid + (e.querySelector('[data-testid^=monitor-]').checked ? '*' : '')).join(' ')`));
console.log('members:', await evaluate(`document.querySelectorAll('[data-testid^=member-]:not([data-testid^=member-select])').length`));
await shot('console-1920.png');
await shot('console-1366.png', 1366, 768);
for (const tab of ['receipts', 'inbox', 'drills', 'history']) {
  await evaluate(`document.querySelector('[data-testid=tab-${tab}]').click()`);
  if (tab === 'history') { await evaluate(`document.querySelector('[data-testid=history-load]').click()`); }
  await sleep(400);
  await shot(`tab-${tab}.png`, 1920, 1080);
}
await evaluate(`document.querySelector('[data-testid=lang-toggle]').click()`);
await shot('console-en.png');
console.log('hooks:', JSON.stringify(await evaluate('window.pttConsole')).slice(0, 600));
console.log('page errors:', errors.length ? errors : 'none');
ws.close();
chrome.kill();
process.exit(0);
