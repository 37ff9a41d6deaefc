// Minimal Chrome DevTools Protocol driver for headless Chromium (node 20 with
// --experimental-websocket; no npm packages).
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function launch({ width = 1920, height = 1080, extra = [] } = {}) {
  const port = 9400 + Math.floor(Math.random() * 400);
  const chrome = spawn('/usr/bin/chromium', [
    '--headless=new', '--no-sandbox', '--disable-gpu', `--remote-debugging-port=${port}`, `--window-size=${width},${height}`,
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--autoplay-policy=no-user-gesture-required',
    ...extra, 'about:blank',
  ], { stdio: 'ignore' });
  let ws;
  for (let i = 0; i < 150 && !ws; i++) {
    await sleep(200);
    try {
      const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
      const u = list.find((t) => t.type === 'page')?.webSocketDebuggerUrl;
      if (u) ws = new WebSocket(u);
    } catch { /* starting */ }
  }
  if (!ws) { chrome.kill(); throw new Error('chromium did not start'); }
  await new Promise((r) => ws.addEventListener('open', r));
  let id = 0;
  const pending = new Map();
  const errors = [];
  ws.addEventListener('message', (e) => {
    const m = JSON.parse(e.data);
    if (m.id && pending.has(m.id)) { pending.get(m.id)(m); pending.delete(m.id); }
    if (m.method === 'Runtime.exceptionThrown') errors.push(m.params.exceptionDetails.exception?.description ?? m.params.exceptionDetails.text);
    if (m.method === 'Runtime.consoleAPICalled' && m.params.type === 'error') errors.push(m.params.args.map((a) => a.value ?? a.description).join(' '));
  });
  const cdp = (method, params = {}) => new Promise((resolve) => { const i = ++id; pending.set(i, resolve); ws.send(JSON.stringify({ id: i, method, params })); });
  await cdp('Runtime.enable');
  await cdp('Page.enable');
  const evaluate = async (expr) => {
    const r = await cdp('Runtime.evaluate', { expression: expr, awaitPromise: true, returnByValue: true });
    if (r.result?.exceptionDetails) throw new Error(`${expr.slice(0, 80)}: ${r.result.exceptionDetails.exception?.description ?? 'failed'}`);
    return r.result?.result?.value;
  };
  const until = async (expr, ms = 5000) => {
    const t0 = Date.now();
    for (;;) {
      let v = null;
      try { v = await evaluate(expr); } catch { /* not there yet */ }
      if (v) return v;
      if (Date.now() - t0 > ms) throw new Error(`timed out waiting for: ${expr}`);
      await sleep(100);
    }
  };
  const shot = async (file, w = width, h = height) => {
    await cdp('Emulation.setDeviceMetricsOverride', { width: w, height: h, deviceScaleFactor: 1, mobile: false });
    await sleep(500);
    const r = await cdp('Page.captureScreenshot', { format: 'png' });
    writeFileSync(file, Buffer.from(r.result.data, 'base64'));
  };
  const close = () => { ws.close(); chrome.kill(); };
  return { cdp, evaluate, until, shot, errors, close, navigate: (url) => cdp('Page.navigate', { url }) };
}
