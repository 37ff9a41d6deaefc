// Development mock of the gateway's HTTP surface (CONSOLE.md "HTTP API"), for
// layout work and smoke tests without the Rust side: serves this folder at
// /console/ and answers /console/api/* with a small sample station. There is
// no WebTransport here, so the console stays "offline"; the real gateway
// serves the same files and the real API.
// Run: node gateway/console/dev/mock-server.mjs [port]   (sign in as wang / wang)
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const port = Number(process.argv[2] ?? 47091);
const TOKEN = 'ab'.repeat(32);
const MIME = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.png': 'image/png', '.json': 'application/json', '.wav': 'audio/wav' };

const now = Date.now();
const session = {
  token: TOKEN, operator: 'wang', terminal: 300, terminal_name: '城南派出所指挥室', node: 4, node_name: '城南派出所',
  expires_ms: now + 8 * 3600 * 1000,
  webtransport: { url: 'https://127.0.0.1:4433/console', cert_hashes: [] },
  map: { tiles: null },
};

function tree() {
  const nodes = [
    { id: 4, parent: 1, kind: 'police_station', name: '城南派出所' },
    { id: 40, parent: 4, kind: 'station', name: '城南医院共治站' },
    { id: 41, parent: 40, kind: 'unit', name: '共治单元1' },
    { id: 42, parent: 40, kind: 'unit', name: '共治单元2' },
    { id: 50, parent: 4, kind: 'station', name: '夜市共治站' },
    { id: 51, parent: 50, kind: 'unit', name: '夜市单元1' },
  ];
  const people = [
    [300, '城南派出所指挥室', 'dispatcher', 'console', 4],
    [1001, '张伟', 'police', 'handheld', 41], [1002, '李娜', 'security_guard', 'handheld', 41],
    [1003, '王强', 'security_guard', 'phone_app', 41], [1004, '刘洋', 'staff', 'handheld', 41],
    [1011, '陈杰', 'auxiliary_police', 'screen_terminal', 42], [1012, '杨帆', 'security_guard', 'handheld', 42],
    [1013, '赵敏', 'volunteer', 'phone_app', 42],
    [1021, '黄磊', 'police', 'handheld', 51], [1022, '周婷', 'security_guard', 'handheld', 51], [1023, '吴刚', 'staff', 'phone_app', 51],
  ];
  const base = { 41: [29.0812, 119.6405], 42: [29.0790, 119.6440], 51: [29.0850, 119.6360] };
  const t = Date.now();
  const terminals = people.map(([id, name, role, kind, node], i) => {
    const b = base[node];
    const online = id % 5 !== 3;
    return {
      id, name, role, kind, node, online,
      position: b ? { lat: b[0] + (i % 3) * 0.0004, lon: b[1] + (i % 4) * 0.0005, accuracy_m: 10, at_ms: t - i * 20000 } : null,
      link: online ? { rtt_ms: 30 + i * 7.5, lost_packets: i, sent_packets: 1000 } : null,
    };
  });
  return { root: 4, nodes, terminals };
}

function json(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(body == null ? '' : JSON.stringify(body));
}

createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  const p = url.pathname;
  if (p.startsWith('/console/api/')) {
    const route = p.slice('/console/api/'.length);
    if (route === 'signin' && req.method === 'POST') {
      let body = '';
      for await (const c of req) body += c;
      let b = {};
      try { b = JSON.parse(body); } catch { /* bad */ }
      return b.name === 'wang' && b.password === 'wang' ? json(res, 200, session) : json(res, 401, { error: 'wrong name or password' });
    }
    if (req.headers.authorization !== `Bearer ${TOKEN}`) return json(res, 401, { error: 'not signed in' });
    if (route === 'signout') { res.writeHead(204); return res.end(); }
    if (route === 'session') return json(res, 200, session);
    if (route === 'tree') return json(res, 200, tree());
    let m;
    if ((m = route.match(/^groups\/(\d+)\/bursts$/))) {
      return json(res, 200, [1, 2, 3].map((i) => ({ burst: 100 - i, speaker: 1001, speaker_name: '张伟', class: 'normal', started_ms: Date.now() - i * 60000, ended_ms: Date.now() - i * 60000 + 4200, recording: i === 3 ? null : 500 + i })));
    }
    if ((m = route.match(/^drills\/(\d+)\/report\.csv$/))) {
      res.writeHead(200, { 'Content-Type': 'text/csv' });
      return res.end('level,node,name\nunit,41,共治单元1\n');
    }
    return json(res, 404, { error: 'no such route' });
  }
  if (p === '/' || p === '/console') { res.writeHead(302, { Location: '/console/' }); return res.end(); }
  if (!p.startsWith('/console/')) { res.writeHead(404); return res.end(); }
  const rel = normalize(decodeURIComponent(p.slice('/console/'.length)) || 'index.html');
  if (rel.startsWith('..')) { res.writeHead(403); return res.end(); }
  try {
    let data = await readFile(join(root, rel));
    if (rel === 'index.html' && url.searchParams.has('dev-signed-in')) {
      // Smoke tests only: arrive signed in.
      data = Buffer.from(data.toString().replace('<head>', `<head><script>sessionStorage.setItem('pttConsole:token','${TOKEN}')</script>`));
    }
    if (rel === 'index.html' && url.searchParams.has('fake-gateway')) {
      // Integration tests only: a scripted gateway behind a fake WebTransport (dev/fake-gateway.js).
      data = Buffer.from(data.toString().replace('<script type="module" src="./js/app.js">', '<script type="module" src="./dev/fake-gateway.js"></script><script type="module" src="./js/app.js">'));
    }
    res.writeHead(200, { 'Content-Type': MIME[extname(rel)] ?? 'application/octet-stream' });
    res.end(data);
  } catch {
    res.writeHead(404);
    res.end();
  }
}).listen(port, '127.0.0.1', () => console.log(`mock console on http://127.0.0.1:${port}/console/`));
