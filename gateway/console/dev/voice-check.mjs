// Runs dev/voice-loopback.html in headless Chromium with a fake microphone and
// prints its result (frames encoded, decoded, RMS). Needs a server for the
// folder: node gateway/console/dev/mock-server.mjs 47091 &
// Run: node --experimental-websocket gateway/console/dev/voice-check.mjs [http://127.0.0.1:47091/console/dev/voice-loopback.html]
import { spawn } from 'node:child_process';

const url = process.argv[2] ?? 'http://127.0.0.1:47091/console/dev/voice-loopback.html';
const port = 9800 + Math.floor(Math.random() * 100);
const chrome = spawn('/usr/bin/chromium', ['--headless=new', '--no-sandbox', '--disable-gpu', `--remote-debugging-port=${port}`,
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--autoplay-policy=no-user-gesture-required', 'about:blank'], { stdio: 'ignore' });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let ws;
for (let i = 0; i < 100 && !ws; i++) {
  await sleep(200);
  try {
    const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
    const u = list.find((t) => t.type === 'page')?.webSocketDebuggerUrl;
    if (u) ws = new WebSocket(u);
  } catch { /* starting */ }
}
await new Promise((r) => ws.addEventListener('open', r));
let id = 0;
const pending = new Map();
ws.addEventListener('message', (e) => { const m = JSON.parse(e.data); if (m.id) pending.get(m.id)?.(m); });
const cdp = (method, params = {}) => new Promise((r) => { const i = ++id; pending.set(i, r); ws.send(JSON.stringify({ id: i, method, params })); });
await cdp('Page.enable');
await cdp('Page.navigate', { url });
let result = null;
for (let i = 0; i < 40 && !result; i++) {
  await sleep(250);
  const r = await cdp('Runtime.evaluate', { expression: 'window.result', returnByValue: true });
  result = r.result?.result?.value ?? null;
}
console.log(JSON.stringify(result));
ws.close();
chrome.kill();
process.exit(result && !result.error && result.framesDecoded > 50 && result.maxRms > 0.01 ? 0 : 1);
