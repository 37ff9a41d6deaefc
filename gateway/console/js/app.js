// The command-room console (issue 13): sign-in, the station's tree and map,
// talk groups with floor display, PTT, dispatch with a live receipt board,
// SOS, the reports inbox, 1-3-8 drills and burst history.
// State lives here; the wire protocol is codec.js, the link transport.js,
// audio voice.js; the rules (floor, receipts, drills, jitter) are sans-I/O
// modules with node tests.

import {
  ALERT_KIND, RECEIPT, RECEIPT_NAMES, ROLE_BITS, KIND_NAME, ERROR_CODE_NAMES, DENY_CAUSE_NAMES,
  REVOKE_CAUSE_NAMES, CLOSE_CODE_NAMES, encodeVoice, latE7, lonE7, utf8Length, MAX_TITLE, FLAG_END,
} from './codec.js';
import { Link } from './transport.js';
import { Voice } from './voice.js';
import { mark, wallMs, wallOf } from './timing.js';
import { FloorView, TalkSession } from './floor.js';
import { ReceiptBoard, expectedRecipients } from './receipts.js';
import { parseDrillReport, drillTable, DRILL_STEPS, markLabel } from './drill.js';
import { Tree, ageText, linkQuality, MAX_GROUPS } from './tree.js';
import { MapView } from './map.js';
import { t, setLang, lang, applyI18n } from './i18n.js';

// ------------------------------------------------------------------ helpers

const $ = (id) => document.getElementById(id);

/** Builds an element: h('div', {class: 'x', dataset..., onclick}, children...). */
function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'testid') el.dataset.testid = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
    else if (k === 'style') el.style.cssText = v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of kids.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function fmtTime(ms) {
  if (!ms) return '—';
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

const key = (v) => String(v); // alert ids may be BigInt

/** Values the hooks expose must survive WebDriver's JSON: BigInt becomes a string, bytes become lengths. */
function plain(v) {
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Uint8Array) return { bytes: v.length };
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

// ------------------------------------------------------------------ hooks (CONSOLE.md "Test hooks")

const hooks = {
  state: 'signed-out',
  stats: { framesSent: 0, framesReceived: 0, framesDecoded: 0, decodeErrors: 0, lastRms: 0, captureRms: 0 },
  floor: {},
  alerts: {},
  sos: [],
  events: [],
  // Latency marks (timing.js), off until a measurement puts newTiming() here.
  timing: null,
};
window.pttConsole = hooks;

// ------------------------------------------------------------------ state

const S = {
  session: null,
  tree: null,
  link: null,
  voice: null,
  floor: new FloorView(),
  groups: new Map(), // id -> {id, name, monitored, joined, talk, error, online:Set, priority, volume, muted}
  selected: null,
  talk: null,
  talkKey: null, // 'space' | 'pointer'
  pendingRelease: null, // the last press's FloorRelease, waiting its frame time: {group, timer}
  positions: new Map(),
  boards: new Map(), // alert key -> ReceiptBoard
  sends: new Map(), // request -> {resolve, reject}
  uploads: new Map(), // request -> {resolve, reject}
  inbox: new Map(), // alert key -> {msg, status, read}
  seen: new Set(),
  attachments: new Map(), // attachment key -> {url, mime, size}
  sos: new Map(), // alert key -> {alert, terminal, name, at, location, cancelled_by}
  stopAlarm: null,
  drills: new Map(), // alert key -> {alert, title, started, table, error}
  request: 1,
  tab: 'dispatch',
  pick: null,
  memberPicks: new Set(),
  pendingReceipts: new Map(), // "alert:status" -> {alert, status, tries}
  treeTimer: null,
  expiryTimer: null,
  map: null,
  log: [],
  v: { inbox: 1, tree: 1 }, // bumped when what the section shows changed
};

/** Marks a section as changed (it is rebuilt on the next render). */
function bump(...names) { for (const n of names) S.v[n]++; }

function nextRequest() {
  S.request = (S.request % 0xfffffffe) + 1;
  return S.request;
}

// ------------------------------------------------------------------ HTTP API

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body = null, { blob = false, token = S.session?.token } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined, cache: 'no-store' });
  } catch (e) {
    throw new HttpError(0, t('err.network'));
  }
  if (!res.ok) {
    let msg = `${res.status}`;
    try { msg = (await res.json()).error ?? msg; } catch { /* not JSON */ }
    throw new HttpError(res.status, msg);
  }
  if (res.status === 204) return null;
  return blob ? res.blob() : res.json();
}

const API = './api';
/** Attachment types shown inline (raster images only). */
const SAFE_IMAGE = /^image\/(png|jpeg|gif|webp|bmp|avif)$/i;
let DEBUG = false;
try { DEBUG = !!localStorage.getItem('pttConsole:debug'); } catch { /* no storage */ }

// ------------------------------------------------------------------ sign-in / out

function settingsKey() { return `pttConsole:${S.session?.operator}:${S.session?.terminal}`; }

function loadSettings() {
  try { return JSON.parse(localStorage.getItem(settingsKey()) || '{}'); } catch { return {}; }
}

function saveSettings() {
  const groups = {};
  for (const g of S.groups.values()) groups[g.id] = { m: g.monitored, p: g.priority, v: g.volume, u: g.muted };
  try { localStorage.setItem(settingsKey(), JSON.stringify({ groups, selected: S.selected })); } catch { /* full */ }
}

async function signIn(e) {
  e.preventDefault();
  const err = $('signin-error');
  err.textContent = '';
  $('signin-submit').disabled = true;
  try {
    const s = await api('POST', `${API}/signin`, { name: $('signin-name').value.trim(), password: $('signin-password').value }, { token: null });
    $('signin-password').value = '';
    try { S.voice = S.voice ?? new Voice(hooks.stats, onEncoded, () => hooks.timing); S.voice.ensureContext(); } catch { /* no audio */ }
    await start(s);
  } catch (ex) {
    err.textContent = ex.status === 401 ? t('signin.wrong') : ex.status === 429 ? t('signin.throttled') : `${t('signin.failed')}: ${ex.message}`;
  } finally {
    $('signin-submit').disabled = false;
  }
}

async function start(session) {
  S.session = session;
  try { sessionStorage.setItem('pttConsole:token', session.token); } catch { /* private mode */ }
  $('signin').hidden = true;
  $('app').hidden = false;
  $('operator').textContent = session.operator;
  $('station').textContent = `${session.terminal_name} · ${session.node_name}`;
  clearTimeout(S.expiryTimer);
  const left = session.expires_ms - Date.now();
  if (left > 0 && left < 2 ** 31) S.expiryTimer = setTimeout(() => signedOut(t('signin.expired')), left);
  S.voice = S.voice ?? new Voice(hooks.stats, onEncoded, () => hooks.timing);
  try { S.voice.ensureContext(); } catch { /* no Web Audio */ }
  S.map = S.map ?? new MapView($('map'), { onPick, tiles: session.map?.tiles ?? null, labels: { noPositions: t('map.none') } });
  await pollTree();
  clearInterval(S.treeTimer);
  S.treeTimer = setInterval(pollTree, 5000);
  setState('connecting');
  S.link = new Link({
    getSession: () => api('GET', `${API}/session`),
    onState: (st, detail) => {
      if (st === 'closed') return;
      setState(st, detail);
    },
    onFrame,
    onMalformed: (e, kind) => logLine(`malformed ${kind != null ? KIND_NAME[kind] ?? kind : ''}: ${e.message}`),
    onDatagram: (d) => S.voice.onDatagram(d),
    // With localStorage 'pttConsole:debug' set, every frame sent is written to the Log tab.
    onSent: DEBUG ? (m) => { if (m.type !== 'Ping') logLine(`sent ${m.type} ${JSON.stringify(plain({ ...m, type: undefined }))}`); } : null,
    onStreamFrame,
    onFinal: (code, reason) => {
      const why = code === 9 ? t('close.revoked') : code === 3 ? t('close.replaced') : code === 12 ? t('signin.expired') : `${CLOSE_CODE_NAMES[code] ?? code} ${reason}`;
      if (code === 12 || code === 2) signedOut(why);
      else { setState('offline', why); toast(why, 'bad'); }
    },
  });
  S.link.start(session);
  render();
}

/** Back to the sign-in form, with a message. */
function signedOut(message = '') {
  clearInterval(S.treeTimer);
  clearTimeout(S.expiryTimer);
  S.link?.stop(false);
  S.link = null;
  S.voice?.reset();
  stopAlarm();
  try { sessionStorage.removeItem('pttConsole:token'); } catch { /* private mode */ }
  S.session = null;
  S.pendingReceipts.clear();
  S.groups.clear(); S.boards.clear(); S.inbox.clear(); S.seen.clear(); S.sos.clear(); S.drills.clear();
  S.floor = new FloorView();
  for (const a of S.attachments.values()) URL.revokeObjectURL(a.url);
  S.attachments.clear();
  S.talk = null;
  hooks.floor = {}; hooks.alerts = {}; hooks.sos = []; hooks.events = [];
  $('app').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message;
  $('sos-area').replaceChildren();
  setState('signed-out');
  $('signin-name').focus();
}

async function signOut() {
  try { await S.link?.stop(true); } catch { /* closing anyway */ }
  try { await api('POST', `${API}/signout`); } catch { /* expired already */ }
  signedOut('');
}

function setState(st, detail = '') {
  hooks.state = st;
  const el = $('conn-state');
  el.className = `pill ${st}`;
  el.textContent = t(`state.${st}`) + (detail && st !== 'online' ? ` (${detail})` : '');
  el.title = detail;
}

// ------------------------------------------------------------------ tree

async function pollTree() {
  if (!S.session) return;
  try {
    const json = await api('GET', `${API}/tree`);
    S.tree = new Tree(json);
    for (const tm of S.tree.terminals.values()) {
      if (tm.position) {
        const p = S.positions.get(tm.id);
        if (!p || (tm.position.at_ms ?? 0) >= (p.at_ms ?? 0)) S.positions.set(tm.id, { lat: tm.position.lat, lon: tm.position.lon, at_ms: tm.position.at_ms, accuracy_m: tm.position.accuracy_m });
      }
    }
    syncGroups();
    bump('tree', 'inbox');
    render();
  } catch (e) {
    if (e.status === 401) signedOut(t('signin.expired'));
    else logLine(`tree: ${e.message}`);
  }
}

/** Every node is a group; keep settings across polls; default monitoring: own node and its children. */
function syncGroups() {
  const saved = loadSettings();
  const first = S.groups.size === 0;
  const defaults = new Set(S.tree.defaultMonitored(S.session.node));
  for (const { id } of S.tree.ordered()) {
    if (S.groups.has(id)) { S.groups.get(id).name = S.tree.name(id); continue; }
    const sv = saved.groups?.[id];
    S.groups.set(id, {
      id, name: S.tree.name(id), monitored: sv ? !!sv.m : defaults.has(id), joined: false, talk: false, error: '',
      online: new Set(), priority: sv?.p ?? (id === S.session.node ? 1 : 10), volume: sv?.v ?? 0.8, muted: !!sv?.u, emergency: false,
    });
    applyChannel(S.groups.get(id));
  }
  if (first) {
    S.selected = saved.selected && S.groups.has(saved.selected) ? saved.selected : (S.groups.has(S.session.node) ? S.session.node : S.tree.root);
    // Bound: the gateway allows 64 joined groups.
    let n = 0;
    for (const g of S.groups.values()) if (g.monitored && ++n > MAX_GROUPS) g.monitored = false;
  }
  if (hooks.state === 'online') joinMonitored();
  fillNodeSelects();
}

function applyChannel(g) {
  S.voice?.setChannel(g.id, { volume: g.volume, muted: g.muted, priority: g.priority, emergency: g.emergency });
}

function joinMonitored() {
  for (const g of S.groups.values()) {
    if (g.monitored && !g.joined && !g.joinSent) { g.joinSent = true; S.link.send({ type: 'Join', group: g.id }); }
  }
}

// ------------------------------------------------------------------ control frames

function recordEvent(msg) {
  hooks.events.push(plain(msg));
  if (hooks.events.length > 200) hooks.events.splice(0, hooks.events.length - 200);
}

function onFrame(msg) {
  recordEvent(msg);
  const now = performance.now();
  switch (msg.type) {
    case 'Welcome': {
      for (const g of S.groups.values()) { g.joined = false; g.joinSent = false; }
      for (const m of msg.groups) {
        const g = S.groups.get(m.group);
        if (g) { g.joined = true; g.talk = m.talk; g.monitored = true; g.onlineKnown = false; g.online = new Set(); }
      }
      // Resumed groups are joined again anyway: Joined brings the authoritative list of members online.
      for (const m of msg.groups) {
        const g = S.groups.get(m.group);
        if (g) { g.joinSent = true; S.link.send({ type: 'Join', group: g.id }); }
      }
      S.floor = new FloorView();
      if (S.session?.node) S.link.send({ type: 'WatchPositions', node: S.session.node });
      joinMonitored();
      for (const b of S.boards.values()) if (b.alert != null) S.link.send({ type: 'AlertQuery', alert: b.alert });
      resendReceipts();
      logLine(`Welcome ${msg.name}${msg.resumed ? ' (resumed)' : ''}`);
      break;
    }
    case 'Joined': {
      const g = S.groups.get(msg.group) ?? addUnknownGroup(msg.group, msg.name);
      Object.assign(g, { joined: true, joinSent: false, talk: msg.talk, error: '', online: new Set(msg.online), onlineKnown: true });
      if (msg.name && !S.tree?.node(msg.group)) g.name = msg.name; // the tree's name wins
      if (!g.monitored) { g.monitored = true; }
      break;
    }
    case 'Left': {
      const g = S.groups.get(msg.group);
      if (g) {
        if (g.monitored && !g.leaving) g.error = t('groups.removed');
        Object.assign(g, { joined: false, joinSent: false, monitored: false, leaving: false });
      }
      S.floor.apply(msg, now);
      break;
    }
    case 'Presence': {
      const g = S.groups.get(msg.group);
      if (g) { if (msg.online) g.online.add(msg.terminal); else g.online.delete(msg.terminal); }
      break;
    }
    case 'FloorGranted': case 'FloorTaken': case 'FloorIdle': case 'FloorQueued': case 'FloorDenied': case 'FloorRevoked':
      onFloorFrame(msg, now);
      break;
    case 'Error': onError(msg); break;
    case 'AlertAccepted': {
      const p = S.sends.get(msg.request);
      if (p) { S.sends.delete(msg.request); if (p.board) adoptBoard(p.board, msg); p.resolve(msg); }
      break;
    }
    case 'AlertRefused': {
      const p = S.sends.get(msg.request) ?? S.uploads.get(msg.request);
      S.sends.delete(msg.request); S.uploads.delete(msg.request);
      p?.reject(new Error(`${ERROR_CODE_NAMES[msg.code] ?? msg.code}: ${msg.message}`));
      break;
    }
    case 'AttachmentStored': {
      const p = S.uploads.get(msg.request);
      if (p) { S.uploads.delete(msg.request); p.resolve(msg); }
      break;
    }
    case 'ReceiptUpdate': {
      const b = S.boards.get(key(msg.alert));
      if (b) { b.update(msg.terminal, msg.status, msg.at_ms, msg.reason); syncAlertHook(b); }
      break;
    }
    case 'AlertStatus': {
      const b = S.boards.get(key(msg.alert));
      if (b) b.setCounts(msg);
      break;
    }
    case 'ReceiptSaved': {
      bump('inbox');
      receiptSaved(msg);
      const it = S.inbox.get(key(msg.alert));
      if (it && msg.status > it.status) it.status = msg.status;
      const ha = hooks.alerts[key(msg.alert)];
      if (ha && S.session) ha.receipts[S.session.terminal] = msg.status;
      break;
    }
    case 'AlertCancelled': onSosCancelled(msg); break;
    case 'PositionUpdate':
      bump('tree');
      S.positions.set(msg.terminal, { lat: msg.lat_e7 / 1e7, lon: msg.lon_e7 / 1e7, at_ms: msg.at_ms, accuracy_m: msg.accuracy_m });
      break;
    default: break;
  }
  render();
}

function addUnknownGroup(id, name) {
  const g = { id, name: name || `#${id}`, monitored: true, joined: false, talk: false, error: '', online: new Set(), priority: 10, volume: 0.8, muted: false, emergency: false };
  S.groups.set(id, g);
  applyChannel(g);
  return g;
}

function onFloorFrame(msg, now) {
  S.floor.apply(msg, now, S.session?.terminal ?? null);
  hooks.floor = S.floor.snapshot();
  bump('tree');
  if (msg.type === 'FloorTaken') S.voice?.setChannel(msg.group, { cls: msg.class });
  if (msg.type === 'FloorIdle') S.voice?.setChannel(msg.group, { cls: 0 });
  const mine = S.talk && !S.talk.released && S.talk.group === msg.group;
  if (mine && msg.type === 'FloorGranted') S.voice?.tone(1400, 90);
  if (mine && (msg.type === 'FloorDenied' || msg.type === 'FloorRevoked')) S.voice?.tone(300, 350);
  for (const talk of [S.talk, S.lastTalk]) {
    if (!talk || talk.group !== msg.group) continue;
    if (msg.type === 'FloorGranted' && talk.mark && talk.mark.granted == null) talk.mark.granted = wallOf(now);
    const out = talk.onFloor(msg);
    for (const d of out.datagrams) sendVoice(d);
    if (out.release) setTimeout(() => S.link?.send({ type: 'FloorRelease', group: msg.group }), 20);
    if (talk.state === 'ended' && talk === S.talk && (msg.type === 'FloorDenied' || msg.type === 'FloorRevoked')) {
      S.voice?.stopCapture();
    }
  }
  if (msg.type === 'FloorDenied') toast(`${S.groups.get(msg.group)?.name ?? msg.group}: ${t('floor.denied')} — ${causeText('deny', msg.cause)}`, 'warn');
  if (msg.type === 'FloorRevoked') toast(`${S.groups.get(msg.group)?.name ?? msg.group}: ${t('floor.revoked')} — ${causeText('revoke', msg.cause)}`, 'warn');
}

function causeText(kind, code) {
  const name = (kind === 'deny' ? DENY_CAUSE_NAMES : REVOKE_CAUSE_NAMES)[code] ?? code;
  const tr = t(`${kind}.${code}`);
  return tr === `${kind}.${code}` ? String(name) : tr;
}

function onError(msg) {
  const name = ERROR_CODE_NAMES[msg.code] ?? msg.code;
  const tr = t(`err.${msg.code}`);
  const text = `${tr === `err.${msg.code}` ? name : tr}${msg.message ? ` (${msg.message})` : ''}`;
  logLine(`Error ${name} frame ${KIND_NAME[msg.frame] ?? msg.frame} group ${msg.group ?? '-'}: ${msg.message}`);
  if (msg.group != null && (msg.frame === 0x02 || msg.frame === 0x03)) {
    const g = S.groups.get(msg.group);
    if (g) {
      g.error = text;
      g.joinSent = false;
      if (msg.frame === 0x02) g.monitored = g.joined;
    }
    toast(`${g?.name ?? msg.group}: ${text}`, 'bad');
    return;
  }
  if (msg.frame === 0x0a && msg.code === 22) return; // AlertQuery for an alert not ours: stop quietly
  if (msg.frame === 0x11) {
    for (const d of S.drills.values()) if (!d.table) d.error = text;
  }
  if (msg.frame === 0x0e) { toast(`SOS: ${text}`, 'bad'); return; }
  if (msg.frame === 0x10) { toast(`${t('inbox.photo')}: ${text}`, 'bad'); return; }
  toast(text, msg.code === 507 ? 'bad' : 'warn');
}

// ------------------------------------------------------------------ alerts arriving on streams

/**
 * Sends a receipt and keeps it until ReceiptSaved covers it: receipts not
 * confirmed are sent again after a reconnect (PROTOCOL.md section 5), at
 * most 3 times each.
 */
function sendReceipt(alert, status) {
  S.pendingReceipts.set(`${key(alert)}:${status}`, { alert, status, tries: 1 });
  S.link?.send({ type: 'AlertReceipt', alert, status, reason: '' });
}

function receiptSaved(msg) {
  for (const [k, r] of S.pendingReceipts) {
    if (key(r.alert) === key(msg.alert) && (r.status <= msg.status || msg.status === RECEIPT.rejected)) S.pendingReceipts.delete(k);
  }
}

function resendReceipts() {
  for (const [k, r] of S.pendingReceipts) {
    if (r.tries >= 3) { S.pendingReceipts.delete(k); continue; }
    r.tries++;
    S.link?.send({ type: 'AlertReceipt', alert: r.alert, status: r.status, reason: '' });
  }
}

function onStreamFrame(msg, content) {
  recordEvent(msg);
  bump('inbox', 'tree');
  if (msg.type === 'Alert') onAlert(msg);
  else if (msg.type === 'Attachment') {
    const k = key(msg.attachment);
    if (!S.attachments.has(k)) {
      // Only raster images are shown; anything else (SVG and HTML included, which could run
      // script in the console's origin when opened) becomes an opaque download.
      const image = SAFE_IMAGE.test(msg.mime);
      const url = URL.createObjectURL(new Blob([content], { type: image ? msg.mime : 'application/octet-stream' }));
      S.attachments.set(k, { url, mime: msg.mime, size: msg.size, alert: msg.alert, image });
    }
  } else if (msg.type === 'DrillReport') {
    const d = S.drills.get(key(msg.alert)) ?? { alert: msg.alert, title: '', started: Date.now() };
    S.drills.set(key(msg.alert), d);
    try {
      d.table = drillTable(parseDrillReport(new TextDecoder('utf-8', { fatal: true }).decode(content)));
      d.error = '';
      if (!d.title) d.title = d.table.title;
    } catch (e) {
      d.error = `${t('drill.badReport')}: ${e.message}`;
    }
  }
  render();
}

function onAlert(msg) {
  // Every Alert is answered with delivered, even a repeat: the gateway redelivers until it has stored it.
  sendReceipt(msg.alert, RECEIPT.delivered);
  const k = key(msg.alert);
  if (S.seen.has(k)) return;
  S.seen.add(k);
  hooks.alerts[k] = { kind: msg.body.kind, title: msg.body.title, issuer: msg.issuer, receipts: { [S.session.terminal]: RECEIPT.delivered } };
  if (msg.body.kind === ALERT_KIND.sos) { onSos(msg); return; }
  S.inbox.set(k, { msg, status: RECEIPT.delivered, read: false, answer: '' });
  toast(`${t(`kind.${msg.body.kind}`)}: ${msg.body.title}`, msg.body.kind >= 6 ? 'info' : 'warn');
}

// ------------------------------------------------------------------ SOS

function onSos(msg) {
  const k = key(msg.alert);
  const tm = S.tree?.terminal(msg.issuer);
  const loc = msg.body.location
    ? { lat: msg.body.location.lat_e7 / 1e7, lon: msg.body.location.lon_e7 / 1e7, address: msg.body.location.address }
    : S.positions.get(msg.issuer) ?? null;
  const e = { alert: msg.alert, terminal: msg.issuer, name: tm?.name ?? msg.body.title, at: msg.created_ms, location: loc, cancelled_by: null, unit: tm?.node ?? null };
  S.sos.set(k, e);
  hooks.sos.push({ alert: plain(msg.alert), terminal: msg.issuer, cancelled_by: null });
  // Auto-join the raiser's unit group at full priority: the hot mic is heard over everything.
  if (e.unit != null) {
    const g = S.groups.get(e.unit) ?? addUnknownGroup(e.unit, S.tree?.name(e.unit));
    g.emergency = true;
    g.monitored = true;
    g.error = '';
    applyChannel(g);
    if (!g.joined) { g.joinSent = true; S.link?.send({ type: 'Join', group: g.id }); }
  }
  startAlarm();
}

function onSosCancelled(msg) {
  bump('tree');
  const k = key(msg.alert);
  const e = S.sos.get(k);
  if (!e) return;
  e.cancelled_by = msg.by;
  e.cancelledAt = Date.now();
  const hk = hooks.sos.find((x) => String(x.alert) === String(plain(msg.alert)));
  if (hk) hk.cancelled_by = msg.by;
  if (e.unit != null) {
    const g = S.groups.get(e.unit);
    if (g && ![...S.sos.values()].some((x) => x.unit === e.unit && x.cancelled_by == null)) { g.emergency = false; applyChannel(g); }
  }
  if (![...S.sos.values()].some((x) => x.cancelled_by == null)) stopAlarm();
}

function startAlarm() {
  if (S.stopAlarm || !S.voice) return;
  try { S.stopAlarm = S.voice.alarm(); } catch { /* no audio */ }
}

function stopAlarm() {
  S.stopAlarm?.();
  S.stopAlarm = null;
}

// ------------------------------------------------------------------ talk (PTT)

function sendVoice(d) {
  const bytes = encodeVoice(d.header, d.opus);
  // Before the hand-over: the datagram may be on the wire before the call returns.
  const at = hooks.timing ? wallMs() : 0;
  if (!S.link?.sendDatagram(bytes)) return;
  hooks.stats.framesSent++;
  if (!hooks.timing) return;
  const { group, burst, seq, flags } = d.header;
  mark(hooks.timing, 'sent', { group, burst, seq, end: (flags & FLAG_END) !== 0, at });
  for (const talk of [S.talk, S.lastTalk]) {
    if (talk?.group === group && talk.burst === burst && talk.mark && talk.mark.firstFrame == null) talk.mark.firstFrame = at;
  }
}

function onEncoded(opus) {
  const talk = S.talk;
  if (!talk) return;
  const d = talk.onEncoded(opus);
  if (d) sendVoice(d);
}

/** Talk key down; `stamp` is the key event's `timeStamp` (for the timing marks), if any. */
function pttDown(how, stamp = null) {
  const down = wallMs();
  if (S.talk && !S.talk.released) return;
  const g = S.groups.get(S.selected);
  if (!g || !S.link || hooks.state !== 'online') { toast(t('ptt.offline'), 'warn'); return; }
  if (!g.joined) { toast(t('ptt.notJoined'), 'warn'); return; }
  // The last press's FloorRelease, still waiting for its frame time, goes
  // first: sent after this request it would release the new grant.
  if (S.pendingRelease) {
    clearTimeout(S.pendingRelease.timer);
    S.link.send({ type: 'FloorRelease', group: S.pendingRelease.group });
    S.pendingRelease = null;
  }
  S.lastTalk = S.talk;
  S.talk = new TalkSession(g.id);
  S.talkKey = how;
  S.link.send(S.talk.request($('ptt-emergency').checked ? 2 : 0));
  S.talk.mark = mark(hooks.timing, 'presses', { group: g.id, event: stamp == null ? null : wallOf(stamp), down, granted: null, firstFrame: null });
  $('ptt-button').setAttribute('aria-pressed', 'true');
  $('ptt-button').classList.add('down');
  S.voice.ensureContext();
  S.voice.startCapture().catch((e) => { toast(`${t('ptt.noMic')}: ${e.message}`, 'bad'); });
  render();
}

function pttUp() {
  const talk = S.talk;
  if (!talk || talk.released) return;
  const r = talk.release();
  S.voice.stopCapture();
  if (r.datagram) sendVoice(r.datagram);
  if (r.release) {
    const pending = { group: talk.group, timer: null };
    pending.timer = setTimeout(() => {
      if (S.pendingRelease === pending) S.pendingRelease = null;
      S.link?.send({ type: 'FloorRelease', group: pending.group });
    }, r.delayMs);
    S.pendingRelease = pending;
  }
  S.floor.released(talk.group);
  hooks.floor = S.floor.snapshot();
  $('ptt-button').setAttribute('aria-pressed', 'false');
  $('ptt-button').classList.remove('down');
  render();
}

function typingTarget(el) {
  return el && (el.tagName === 'INPUT' && !['checkbox', 'radio', 'range', 'button', 'submit'].includes(el.type) || el.tagName === 'TEXTAREA' || el.tagName === 'SELECT' || el.isContentEditable);
}

function onKeyDown(e) {
  if ($('app').hidden) return;
  if (e.code === 'Space' && !typingTarget(document.activeElement)) {
    e.preventDefault();
    if (!e.repeat) pttDown('space', e.timeStamp);
    return;
  }
  if (e.key === 'Escape') { stopAlarm(); render(); return; }
  if (e.altKey && /^Digit[1-6]$/.test(e.code)) {
    e.preventDefault();
    selectTab(['dispatch', 'receipts', 'inbox', 'drills', 'history', 'log'][Number(e.code.slice(5)) - 1]);
  }
}

function onKeyUp(e) {
  if (e.code === 'Space' && S.talkKey === 'space') { e.preventDefault(); pttUp(); }
}

// ------------------------------------------------------------------ groups UI

function setMonitored(g, on) {
  if (on) {
    const n = [...S.groups.values()].filter((x) => x.monitored).length;
    if (n >= MAX_GROUPS && !g.monitored) { g.error = t('groups.tooMany'); render(); return; }
    g.monitored = true; g.error = '';
    if (!g.joined) { g.joinSent = true; S.link?.send({ type: 'Join', group: g.id }); }
  } else {
    g.monitored = false;
    g.error = '';
    if (g.joined) { g.leaving = true; S.link?.send({ type: 'Leave', group: g.id }); }
  }
  saveSettings();
  render();
}

function selectGroup(id) {
  if (S.talk && !S.talk.released) return; // not while talking
  S.selected = id;
  saveSettings();
  render();
}

function floorText(g, fs, now) {
  switch (fs.state) {
    case 'granted': return t('floor.granted');
    case 'taken': return `${t('floor.taken')}: ${fs.speakerName || S.tree?.terminalName(fs.speaker) || fs.speaker}`;
    case 'queued': return `${t('floor.queued')} #${fs.position}${fs.speaker ? ` · ${fs.speakerName || fs.speaker}` : ''}`;
    case 'denied': return `${t('floor.denied')}: ${causeText('deny', fs.cause)}`;
    case 'revoked': return `${t('floor.revoked')}: ${causeText('revoke', fs.cause)}`;
    default: return t('floor.idle');
  }
}

const rowCache = new Map();

/** The groups shown: all of a small tree; for a big one the monitored, own, its children, the selected and filter matches. */
function visibleGroups() {
  const all = [...S.groups.keys()];
  const q = ($('group-filter').value || '').trim();
  if (!q && all.length <= 300) return all;
  const own = S.session?.node;
  const near = new Set([own, ...(S.tree?.children.get(own) ?? [])]);
  const out = [];
  let matches = 0;
  for (const id of all) {
    const g = S.groups.get(id);
    const hit = q && (g.name.includes(q) || String(id) === q);
    if (hit && matches < 200) { matches++; out.push(id); continue; }
    if (!q || all.length > 300) {
      if (g.monitored || g.emergency || id === S.selected || (!q && near.has(id))) out.push(id);
    }
  }
  return out;
}

function renderGroups() {
  const list = $('group-list');
  const now = performance.now();
  const ids = visibleGroups();
  const depth = new Map((S.tree?.ordered() ?? []).map((n) => [n.id, n.depth]));
  const monitored = [...S.groups.values()].filter((g) => g.monitored).length;
  for (const id of ids) {
    const g = S.groups.get(id);
    let r = rowCache.get(id);
    if (!r) {
      r = buildGroupRow(g);
      rowCache.set(id, r);
    }
    const fs = S.floor.get(id);
    const ch = S.voice?.channels.get(id);
    r.el.classList.toggle('selected', S.selected === id);
    r.el.classList.toggle('joined', g.joined);
    r.el.classList.toggle('talking', fs.state === 'taken' || fs.state === 'granted');
    r.el.classList.toggle('emergency', g.emergency || (fs.state === 'taken' && fs.class === 2));
    r.el.classList.toggle('ducked', !!ch?.ducked);
    r.el.setAttribute('aria-selected', S.selected === id ? 'true' : 'false');
    r.el.style.paddingLeft = `${8 + (depth.get(id) ?? 0) * 14}px`;
    r.name.textContent = g.name;
    r.monitor.checked = g.monitored;
    r.monitor.indeterminate = g.monitored && !g.joined;
    const count = g.onlineKnown === false ? t('groups.joined') : `${g.online.size} ${t('groups.online')}`;
    r.state.textContent = g.monitored ? (g.joined ? `${count}${g.talk ? '' : ` · ${t('groups.listenOnly')}`}` : t('groups.joining')) : '';
    r.talker.textContent = fs.state === 'idle' ? '' : floorText(g, fs, now);
    r.talker.className = `talker ${fs.state}`;
    if (document.activeElement !== r.volume) r.volume.value = String(Math.round(g.volume * 100));
    r.mute.textContent = g.muted ? t('groups.unmute') : t('groups.mute');
    r.mute.setAttribute('aria-pressed', g.muted ? 'true' : 'false');
    r.prio.textContent = String(g.priority);
    r.err.textContent = g.error;
    r.duck.textContent = ch?.ducked ? t('groups.ducked') : '';
  }
  // Order by the tree.
  const want = ids.map((id) => rowCache.get(id).el);
  if (list.children.length !== want.length || [...list.children].some((c, i) => c !== want[i])) list.replaceChildren(...want);
  $('groups-count').textContent = `${monitored}/${MAX_GROUPS}`;
}

function buildGroupRow(g) {
  const id = g.id;
  const monitor = h('input', { type: 'checkbox', testid: `monitor-${id}`, 'aria-label': t('groups.monitor'), onclick: (e) => e.stopPropagation(), onchange: (e) => setMonitored(S.groups.get(id), e.target.checked) });
  const name = h('span', { class: 'gname' });
  const state = h('span', { class: 'gstate', testid: `group-state-${id}` });
  const talker = h('div', { class: 'talker', testid: `talker-${id}` });
  const volume = h('input', {
    type: 'range', min: '0', max: '100', testid: `volume-${id}`, 'aria-label': t('groups.volume'),
    onclick: (e) => e.stopPropagation(),
    oninput: (e) => { const gg = S.groups.get(id); gg.volume = Number(e.target.value) / 100; applyChannel(gg); saveSettings(); },
  });
  const mute = h('button', { type: 'button', class: 'small', testid: `mute-${id}`, onclick: (e) => { e.stopPropagation(); const gg = S.groups.get(id); gg.muted = !gg.muted; applyChannel(gg); saveSettings(); render(); } });
  const prio = h('span', { class: 'prio', testid: `priority-${id}`, title: t('groups.priority') });
  const bump = (d) => (e) => { e.stopPropagation(); const gg = S.groups.get(id); gg.priority = Math.max(1, Math.min(99, gg.priority + d)); applyChannel(gg); saveSettings(); render(); };
  const up = h('button', { type: 'button', class: 'small', testid: `prio-up-${id}`, title: t('groups.prioUp'), 'aria-label': t('groups.prioUp'), onclick: bump(-1) }, '▲');
  const down = h('button', { type: 'button', class: 'small', testid: `prio-down-${id}`, title: t('groups.prioDown'), 'aria-label': t('groups.prioDown'), onclick: bump(1) }, '▼');
  const err = h('div', { class: 'error', testid: `group-error-${id}` });
  const duck = h('span', { class: 'duck', testid: `ducked-${id}` });
  const el = h('div', { class: 'group', role: 'option', testid: `group-${id}`, tabindex: '-1', onclick: () => selectGroup(id) },
    h('div', { class: 'gline' }, monitor, name, state, duck),
    talker,
    h('div', { class: 'gctl' }, h('span', { class: 'lbl' }, t('groups.volShort')), volume, mute, h('span', { class: 'lbl' }, t('groups.prioShort')), up, prio, down),
    err);
  return { el, monitor, name, state, talker, volume, mute, prio, err, duck };
}

function renderPtt() {
  const g = S.groups.get(S.selected);
  $('ptt-group').textContent = g ? g.name : '—';
  const st = $('floor-status');
  const rem = $('floor-remaining');
  const btn = $('ptt-button');
  if (!g) { st.textContent = '—'; return; }
  const fs = S.floor.get(g.id);
  const now = performance.now();
  let text = floorText(g, fs, now);
  let cls = fs.state;
  if (S.talk && !S.talk.released && S.talk.group === g.id && S.talk.state === 'requesting') { text = t('floor.requesting'); cls = 'requesting'; }
  const left = S.floor.remainingMs(g.id, now);
  if (left != null) {
    const s = Math.ceil(left / 1000);
    text = `${t('floor.granted')} · ${s} s`;
    rem.style.width = `${Math.round((left / (fs.limitMs || 1)) * 100)}%`;
    rem.classList.toggle('t2', left <= 5000);
    if (left <= 5000) {
      cls = 'granted t2';
      text += ` · ${t('floor.t2')}`;
      if (S.t2Warned !== fs.burst) { S.t2Warned = fs.burst; S.voice?.tone(880, 120); }
    }
  } else {
    rem.style.width = '0';
    rem.classList.remove('t2');
  }
  if (fs.notice && (fs.state === 'denied' || fs.state === 'revoked')) text = floorText(g, fs, now);
  st.textContent = text;
  st.className = `floor-status ${cls}`;
  btn.disabled = !g.joined || hooks.state !== 'online';
  btn.classList.toggle('granted', fs.state === 'granted');
  $('mic-level').value = hooks.stats.captureRms;
  $('audio-enable').hidden = !S.voice?.ctx || S.voice.ctx.state === 'running';
}

// ------------------------------------------------------------------ tree + map UI

const ROLE_BIT_OF = (r) => ROLE_BITS[r] ?? 0;

function renderTree(force = false) {
  const body = $('tree-table').tBodies[0];
  if (!S.tree) { body.replaceChildren(); return; }
  // Rebuilt when something shown changed, and every 5 s for the ages.
  const sig = `${S.v.tree}:${Math.floor(Date.now() / 5000)}`;
  if (!force && body.dataset.sig === sig) return;
  body.dataset.sig = sig;
  const now = Date.now();
  const rows = [];
  let online = 0; let total = 0;
  if (!S.expanded) {
    // Small trees open fully; a city's (30,000 members) opens at the operator's own node.
    S.expanded = new Set(S.tree.terminals.size <= 400 ? S.tree.nodes.keys() : [S.tree.root]);
  }
  const hiddenUnder = new Set();
  for (const { id, depth } of S.tree.ordered()) {
    const n = S.tree.node(id);
    const members = S.tree.byNode.get(id) ?? [];
    for (const m of members) { total++; if (m.online) online++; }
    if (n.parent != null && (hiddenUnder.has(n.parent) || (!S.expanded.has(n.parent) && S.tree.nodes.has(n.parent)))) { hiddenUnder.add(id); continue; }
    const open = S.expanded.has(id);
    const hasKids = members.length > 0 || (S.tree.children.get(id) ?? []).length > 0;
    rows.push(h('tr', { class: `node ${n.kind}`, testid: `node-${id}` },
      h('td', { colspan: '7', style: `padding-left:${6 + depth * 16}px` },
        hasKids ? h('button', { type: 'button', class: 'small toggle', testid: `node-toggle-${id}`, 'aria-expanded': open ? 'true' : 'false',
          onclick: () => { if (open) S.expanded.delete(id); else S.expanded.add(id); renderTree(true); } }, open ? '▾' : '▸') : null, ' ',
        h('b', {}, n.name), ' ', h('small', {}, t(`nodeKind.${n.kind}`)),
        ' ', h('small', { class: 'muted' }, `${members.filter((m) => m.online).length}/${members.length}`))));
    if (!open) continue;
    for (const m of members) {
      const pos = S.positions.get(m.id);
      const lq = linkQuality(m.link);
      const sos = [...S.sos.values()].some((x) => x.terminal === m.id && x.cancelled_by == null);
      const talking = [...S.floor.groups.values()].some((f) => f.state === 'taken' && f.speaker === m.id);
      rows.push(h('tr', { class: `member ${m.online ? 'on' : 'off'}${sos ? ' sos' : ''}${talking ? ' talking' : ''}`, testid: `member-${m.id}` },
        h('td', { style: `padding-left:${22 + depth * 16}px` }, talking ? h('b', { class: 'talk-mark' }, `${t('tree.talking')} `) : '', m.name, h('small', { class: 'muted' }, ` #${m.id}`)),
        h('td', { class: m.online ? 'ok' : 'muted', testid: `presence-${m.id}` }, m.online ? t('tree.online') : t('tree.offline')),
        h('td', {}, t(`role.${m.role}`)),
        h('td', {}, t(`tkind.${m.kind}`)),
        h('td', { testid: `position-age-${m.id}` }, pos ? ageText(pos.at_ms, now) : '—'),
        h('td', { testid: `link-${m.id}`, class: lq && (lq.loss_pct > 5 || lq.rtt_ms > 400) ? 'warn' : '' }, lq ? `${lq.rtt_ms} ms · ${lq.loss_pct}%` : '—'),
        h('td', {}, h('input', {
          type: 'checkbox', testid: `member-select-${m.id}`, 'aria-label': `${t('tree.select')} ${m.name}`, checked: S.memberPicks.has(m.id),
          onchange: (e) => { if (e.target.checked) S.memberPicks.add(m.id); else S.memberPicks.delete(m.id); syncMemberIds(); },
        }))));
    }
  }
  body.replaceChildren(...rows);
  $('tree-summary').textContent = `${online}/${total} ${t('tree.onlineCount')}`;
}

function renderMap() {
  if (!S.map || !S.tree) return;
  const talking = new Set([...S.floor.groups.values()].filter((f) => f.state === 'taken').map((f) => f.speaker));
  const sos = new Set([...S.sos.values()].filter((x) => x.cancelled_by == null).map((x) => x.terminal));
  const members = [];
  const positions = new Map(S.positions);
  // An SOS raiser without a known position is placed at the alert's location.
  for (const e of S.sos.values()) if (e.location && !positions.has(e.terminal)) positions.set(e.terminal, e.location);
  for (const [id, p] of positions) {
    const m = S.tree.terminal(id);
    if (!m) continue;
    members.push({ id, name: m.name, lat: p.lat, lon: p.lon, online: m.online, talking: talking.has(id), sos: sos.has(id), unit: m.node });
  }
  const units = [...S.tree.nodes.values()].map((n) => ({ id: n.id, name: n.name }));
  const nearest = $('dispatch-target-type').value === 'nearest';
  S.map.labels.noPositions = t('map.none');
  S.map.set({ members, units, pick: S.pick, radius: nearest ? Number($('dispatch-radius').value) || null : null });
  $('map-info').textContent = S.pick ? `${t('map.point')}: ${S.pick.lat.toFixed(5)}, ${S.pick.lon.toFixed(5)}` : t('map.hint');
}

function onPick(p) {
  S.pick = p;
  $('dispatch-lat').value = String(p.lat);
  $('dispatch-lon').value = String(p.lon);
  $('dispatch-use-location').checked = true;
  render();
}

// ------------------------------------------------------------------ dispatch

function fillNodeSelects() {
  if (!S.tree) return;
  for (const sel of [$('dispatch-node'), $('drill-node'), $('history-group')]) {
    const cur = sel.value;
    const opts = S.tree.ordered().map(({ id, depth }) => h('option', { value: String(id) }, `${'　'.repeat(depth)}${S.tree.name(id)}`));
    const sig = opts.map((o) => o.value + o.textContent).join('|');
    if (sel.dataset.sig === sig) continue;
    sel.dataset.sig = sig;
    sel.replaceChildren(...opts);
    sel.value = cur || String(S.session.node);
    if (!sel.value && opts.length) sel.value = opts[0].value;
  }
  const units = [...S.tree.nodes.values()].filter((n) => n.kind === 'unit');
  const box = $('drill-units');
  const sig = units.map((u) => u.id + u.name).join('|');
  if (box.dataset.sig !== sig) {
    box.dataset.sig = sig;
    box.replaceChildren(...units.map((u) => h('label', { class: 'check' }, h('input', { type: 'checkbox', value: String(u.id), testid: `drill-unit-${u.id}` }), ` ${u.name}`)));
  }
}

function buildRoles() {
  const box = $('dispatch-roles');
  box.replaceChildren(h('span', { 'data-i18n': 'd.roles' }, t('d.roles')), ...Object.keys(ROLE_BITS).map((r) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', value: String(ROLE_BITS[r]), testid: `dispatch-role-${r}` }), ` ${t(`role.${r}`)}`)));
}

function syncMemberIds() {
  $('dispatch-member-ids').value = [...S.memberPicks].join(', ');
  if (S.memberPicks.size) $('dispatch-target-type').value = 'terminals';
  updateTargetFields();
}

function updateTargetFields() {
  const tt = $('dispatch-target-type').value;
  document.querySelectorAll('#dispatch-form .t-node').forEach((e) => { e.hidden = !(tt === 'group' || tt === 'subtree'); });
  document.querySelectorAll('#dispatch-form .t-roles').forEach((e) => { e.hidden = tt !== 'subtree'; });
  document.querySelectorAll('#dispatch-form .t-terminals').forEach((e) => { e.hidden = tt !== 'terminals'; });
  document.querySelectorAll('#dispatch-form .t-nearest').forEach((e) => { e.hidden = tt !== 'nearest'; });
  const dt = $('drill-target-type').value;
  document.querySelectorAll('#drill-form .dr-node').forEach((e) => { e.hidden = dt !== 'subtree'; });
  document.querySelectorAll('#drill-form .dr-units').forEach((e) => { e.hidden = dt !== 'units'; });
  renderMap();
}

function parseIds(text) {
  return [...new Set(text.split(/[\s,，;；]+/).filter(Boolean).map(Number))].filter((n) => Number.isInteger(n) && n > 0 && n <= 0xffffffff);
}

/** Sends an AlertSend and waits for AlertAccepted / AlertRefused. */
/**
 * Sends an AlertSend and waits for AlertAccepted / AlertRefused. `board` is
 * registered synchronously when AlertAccepted arrives, so receipt updates
 * read in the same chunk of the control stream find it.
 */
function sendAlert(target, body, board) {
  const request = nextRequest();
  return new Promise((resolve, reject) => {
    S.sends.set(request, { resolve, reject, board });
    if (!S.link?.send({ type: 'AlertSend', request, target, body })) { S.sends.delete(request); reject(new Error(t('ptt.offline'))); }
    setTimeout(() => { if (S.sends.delete(request)) reject(new Error(t('err.timeout'))); }, 30000);
  });
}

async function uploadPhoto(file) {
  if (file.size > 4 * 1024 * 1024) throw new Error(`${file.name}: ${t('d.tooBig')}`);
  if (file.size === 0) throw new Error(`${file.name}: empty`);
  const content = new Uint8Array(await file.arrayBuffer());
  const request = nextRequest();
  const stored = new Promise((resolve, reject) => {
    S.uploads.set(request, { resolve, reject });
    setTimeout(() => { if (S.uploads.delete(request)) reject(new Error(t('err.timeout'))); }, 60000);
  });
  await S.link.upload(request, (file.type || 'application/octet-stream').slice(0, 64), content);
  const r = await stored;
  return { id: r.attachment, size: r.size, mime: file.type || '' };
}

function readLocation() {
  if (!$('dispatch-use-location').checked) return null;
  const lat = Number($('dispatch-lat').value);
  const lon = Number($('dispatch-lon').value);
  if (!Number.isFinite(lat) || !Number.isFinite(lon) || Math.abs(lat) > 90 || Math.abs(lon) > 180 || $('dispatch-lat').value === '') {
    throw new Error(t('d.badLocation'));
  }
  return { lat_e7: latE7(lat), lon_e7: lonE7(lon), address: $('dispatch-address').value.trim() };
}

async function onDispatch(e) {
  e.preventDefault();
  const err = $('dispatch-error');
  const status = $('dispatch-status');
  err.textContent = '';
  try {
    const title = $('dispatch-title').value.trim();
    if (!title) throw new Error(t('d.needTitle'));
    if (utf8Length(title) > MAX_TITLE) throw new Error(t('d.titleLong'));
    const tt = $('dispatch-target-type').value;
    let target;
    let location = readLocation();
    if (tt === 'group') target = { type: 'Group', group: Number($('dispatch-node').value) };
    else if (tt === 'subtree') {
      let roles = 0;
      document.querySelectorAll('#dispatch-roles input:checked').forEach((c) => { roles |= Number(c.value); });
      target = { type: 'Subtree', node: Number($('dispatch-node').value), roles };
    } else if (tt === 'terminals') {
      const ids = parseIds($('dispatch-member-ids').value);
      if (!ids.length) throw new Error(t('d.needMembers'));
      if (ids.length > 1024) throw new Error(t('d.tooManyMembers'));
      target = { type: 'Terminals', terminals: ids };
    } else {
      if (!S.pick && !location) throw new Error(t('d.needPoint'));
      if (!location) location = { lat_e7: latE7(S.pick.lat), lon_e7: lonE7(S.pick.lon), address: $('dispatch-address').value.trim() };
      const k = Number($('dispatch-k').value);
      const radius = Number($('dispatch-radius').value);
      if (!(k >= 1 && k <= 100) || !(radius >= 1 && radius <= 50000)) throw new Error(t('d.badNearest'));
      target = { type: 'Nearest', k: Math.round(k), radius_m: Math.round(radius) };
    }
    const files = [...$('dispatch-photos').files].slice(0, 8);
    $('dispatch-send').disabled = true;
    const attachments = [];
    for (const [i, f] of files.entries()) {
      status.textContent = `${t('d.uploading')} ${i + 1}/${files.length}`;
      attachments.push(await uploadPhoto(f));
    }
    status.textContent = t('d.sending');
    const body = {
      kind: Number($('dispatch-kind').value), priority: Number($('dispatch-priority').value), ttl_s: Number($('dispatch-ttl').value),
      title, text: $('dispatch-text').value, location, attachments,
    };
    const board = new ReceiptBoard({ kind: body.kind, title, target, sentAt: Date.now(), attachments }, expectedRecipients(target, S.tree, S.session.terminal, ROLE_BIT_OF));
    const acc = await sendAlert(target, body, board);
    status.textContent = `${t('d.sent')} · ${acc.recipients} ${t('d.recipients')}`;
    $('dispatch-form').reset();
    $('dispatch-photos').value = '';
    S.memberPicks.clear();
    updateTargetFields();
    selectTab('receipts');
  } catch (ex) {
    err.textContent = ex.message;
    status.textContent = '';
  } finally {
    $('dispatch-send').disabled = false;
  }
}

function adoptBoard(board, acc) {
  board.alert = acc.alert;
  board.accepted = acc.recipients;
  S.boards.set(key(acc.alert), board);
  syncAlertHook(board);
  S.link?.send({ type: 'AlertQuery', alert: acc.alert });
  render();
}

function syncAlertHook(b) {
  hooks.alerts[key(b.alert)] = { kind: b.meta.kind, title: b.meta.title, issuer: S.session?.terminal, receipts: b.snapshot() };
}

// ------------------------------------------------------------------ receipt boards

function renderBoards() {
  const box = $('boards');
  const boards = [...S.boards.values()].sort((a, b) => b.meta.sentAt - a.meta.sentAt);
  if (!boards.length) { box.replaceChildren(h('p', { class: 'muted' }, t('boards.none'))); return; }
  box.replaceChildren(...boards.map((b) => {
    const k = key(b.alert);
    const tally = b.tally();
    const counts = h('div', { class: 'counts' }, ...[0, 1, 2, 3, 5, 6, 4].map((s) => h('span', { class: `cnt s${s}`, testid: `board-count-${k}-${RECEIPT_NAMES[s]}` },
      `${t(`rc.${s}`)} ${tally.by_status[s]}`)),
    tally.expired ? h('span', { class: 'cnt expired' }, `${t('rc.expired')} ${tally.expired}`) : null,
    h('span', { class: 'cnt total' }, `${t('boards.total')} ${tally.recipients}`));
    const view = b.view(S.tree);
    // A city-wide alert has thousands of recipients: the first 100 units in detail, the rest counted.
    const shown = view.slice(0, 100);
    const rest = view.length - shown.length;
    const units = shown.map((u) => h('div', { class: 'unit' },
      h('div', { class: 'uname' }, u.name, ' ', h('small', { class: 'muted' }, `${u.rows.filter((r) => r.status >= 1 && r.status !== 4).length}/${u.rows.length}`)),
      h('ul', {}, ...u.rows.map((r) => h('li', { class: `rc s${r.status}${r.stored ? ' stored' : ''}`, testid: `receipt-${k}-${r.terminal}` },
        h('span', { class: 'who' }, r.name), ' ',
        h('span', { class: 'st' }, r.stored ? t('rc.stored') : t(`rc.${r.status}`)),
        r.status === RECEIPT.rejected && r.reason ? h('span', { class: 'reason' }, ` — ${r.reason}`) : null,
        r.at_ms ? h('small', { class: 'muted' }, ` ${fmtTime(r.at_ms)}`) : null)))));
    return h('article', { class: 'board', testid: `board-${k}` },
      h('header', {}, h('b', {}, `${t(`kind.${b.meta.kind}`)} · ${b.meta.title}`), ' ', h('small', { class: 'muted' }, `#${k} · ${fmtTime(b.meta.sentAt)} · ${targetText(b.meta.target)}`)),
      counts, ...units, rest > 0 ? h('p', { class: 'muted' }, `+ ${rest} ${t('boards.moreUnits')}`) : null);
  }));
}

function targetText(tg) {
  switch (tg.type) {
    case 'Group': return `${t('target.groupShort')} ${S.tree?.name(tg.group) ?? tg.group}`;
    case 'Subtree': return `${t('target.subtreeShort')} ${S.tree?.name(tg.node) ?? tg.node}${tg.roles ? ` (${Object.keys(ROLE_BITS).filter((r) => tg.roles & ROLE_BITS[r]).map((r) => t(`role.${r}`)).join(', ')})` : ''}`;
    case 'Terminals': return `${tg.terminals.length} ${t('target.membersShort')}`;
    case 'Nearest': return `${t('target.nearestShort')} K=${tg.k} · ${tg.radius_m} m`;
    default: return tg.type;
  }
}

// ------------------------------------------------------------------ inbox (reports, clues, orders from above)

function receipt(it, status) {
  bump('inbox');
  sendReceipt(it.msg.alert, status);
  if (status > it.status && !(it.status === RECEIPT.rejected)) it.status = status;
  const ha = hooks.alerts[key(it.msg.alert)];
  if (ha) ha.receipts[S.session.terminal] = it.status;
  render();
}

async function answer(it, text) {
  if (!text.trim()) return;
  const title = `${t('inbox.re')}: ${it.msg.body.title}`.slice(0, 80);
  const target = { type: 'Terminals', terminals: [it.msg.issuer] };
  const body = { kind: ALERT_KIND.notice, priority: 1, ttl_s: 86400, title, text, location: null, attachments: [] };
  try {
    await sendAlert(target, body, new ReceiptBoard({ kind: body.kind, title, target, sentAt: Date.now() }, [it.msg.issuer]));
    bump('inbox');
    it.answered = (it.answered ?? 0) + 1;
    it.answer = '';
    toast(t('inbox.answered'), 'info');
  } catch (e) {
    toast(e.message, 'bad');
  }
  render();
}

function renderInbox() {
  const box = $('inbox');
  const sig = `${S.v.inbox}:${S.tab}`;
  if (box.dataset.sig === sig) return;
  box.dataset.sig = sig;
  const items = [...S.inbox.values()].sort((a, b) => (b.msg.created_ms - a.msg.created_ms));
  const unread = items.filter((i) => i.status < RECEIPT.read).length;
  $('inbox-badge').textContent = unread ? String(unread) : '';
  if (!items.length) { box.replaceChildren(h('p', { class: 'muted' }, t('inbox.none'))); return; }
  // Visible items are read: tell the sender.
  if (S.tab === 'inbox' && !document.hidden) for (const it of items) if (it.status < RECEIPT.read) receipt(it, RECEIPT.read);
  const prevFocus = document.activeElement?.dataset?.testid;
  box.replaceChildren(...items.map((it) => {
    const m = it.msg; const b = m.body; const k = key(m.alert);
    const loc = b.location ? `${(b.location.lat_e7 / 1e7).toFixed(5)}, ${(b.location.lon_e7 / 1e7).toFixed(5)} ${b.location.address}` : '';
    const answerBox = h('input', { testid: `inbox-answer-text-${k}`, value: it.answer, placeholder: t('inbox.answerHint'), oninput: (e) => { it.answer = e.target.value; } });
    return h('article', { class: `inbox-item k${b.kind} s${it.status}`, testid: `inbox-${k}` },
      h('header', {}, h('b', {}, `${t(`kind.${b.kind}`)} · ${b.title}`), ' ',
        h('small', { class: 'muted' }, `${S.tree?.terminalName(m.issuer) ?? m.issuer} · ${fmtTime(m.created_ms)} · #${k}`)),
      b.text ? h('p', { class: 'text' }, b.text) : null,
      loc ? h('p', { class: 'loc' }, `${t('d.location')}: `, loc) : null,
      b.attachments.length ? h('div', { class: 'photos' }, ...b.attachments.map((a) => {
        const got = S.attachments.get(key(a.id));
        if (got && got.image) return h('a', { href: got.url, target: '_blank', rel: 'noopener' }, h('img', { src: got.url, alt: `#${a.id}`, testid: `inbox-photo-${key(a.id)}` }));
        if (got) return h('a', { href: got.url, download: `attachment-${key(a.id)}`, testid: `inbox-photo-${key(a.id)}` }, `${got.mime} ${got.size} B`);
        return h('button', { type: 'button', testid: `inbox-fetch-${key(a.id)}`, onclick: () => S.link?.send({ type: 'AttachmentFetch', attachment: a.id }) }, `${t('inbox.fetch')} (${a.mime || '?'}, ${Math.round(a.size / 1024)} KiB)`);
      })) : null,
      h('div', { class: 'row' },
        h('span', { class: 'st', testid: `inbox-status-${k}` }, t(`rc.${it.status}`)),
        h('button', { type: 'button', testid: `inbox-accept-${k}`, disabled: it.status >= RECEIPT.accepted, onclick: () => receipt(it, RECEIPT.accepted) }, t('inbox.accept')),
        b.kind === ALERT_KIND.dispatch || b.kind === ALERT_KIND.drill
          ? h('button', { type: 'button', testid: `inbox-arrive-${k}`, disabled: it.status >= RECEIPT.arrived || it.status === RECEIPT.rejected, onclick: () => receipt(it, RECEIPT.arrived) }, t('inbox.arrive'))
          : null,
        h('button', { type: 'button', testid: `inbox-resolve-${k}`, disabled: it.status >= RECEIPT.resolved || it.status === RECEIPT.rejected, onclick: () => receipt(it, RECEIPT.resolved) }, t('inbox.resolve'))),
      m.issuer !== S.session?.terminal ? h('div', { class: 'row answer' }, answerBox,
        h('button', { type: 'button', testid: `inbox-answer-${k}`, onclick: () => answer(it, it.answer) }, t('inbox.answer')),
        it.answered ? h('small', { class: 'muted' }, `✓ ${it.answered}`) : null) : null);
  }));
  if (prevFocus) box.querySelector(`[data-testid="${prevFocus}"]`)?.focus();
}

// ------------------------------------------------------------------ SOS banner

function renderSos() {
  const box = $('sos-area');
  const list = [...S.sos.values()].filter((e) => e.cancelled_by == null || Date.now() - e.cancelledAt < 60000);
  document.body.classList.toggle('sos-active', list.some((e) => e.cancelled_by == null));
  box.replaceChildren(...list.map((e) => {
    const k = key(e.alert);
    const active = e.cancelled_by == null;
    const loc = e.location ? `${e.location.lat.toFixed(5)}, ${e.location.lon.toFixed(5)}${e.location.address ? ` ${e.location.address}` : ''}` : t('sos.noPosition');
    return h('div', { class: `sos-banner${active ? '' : ' cancelled'}`, testid: `sos-banner-${k}`, role: 'alert' },
      h('b', { class: 'big' }, active ? 'SOS' : t('sos.cancelled')),
      h('span', {}, `${e.name} #${e.terminal}`),
      h('span', {}, e.unit != null ? S.tree?.name(e.unit) ?? '' : ''),
      h('span', {}, `${t('d.location')}: ${loc}`),
      h('span', {}, `${t('hist.time')}: ${fmtTime(e.at)}`),
      active
        ? [h('button', { type: 'button', class: 'danger', testid: `sos-cancel-${k}`, onclick: () => S.link?.send({ type: 'SosCancel', terminal: e.terminal }) }, t('sos.cancel')),
          S.stopAlarm ? h('button', { type: 'button', testid: 'sos-silence', onclick: () => { stopAlarm(); render(); } }, t('sos.silence')) : null]
        : h('span', { testid: `sos-cancelled-by-${k}` }, `${t('sos.cancelledBy')} ${S.tree?.terminalName(e.cancelled_by) ?? e.cancelled_by}`));
  }));
}

// ------------------------------------------------------------------ drills

async function onDrill(e) {
  e.preventDefault();
  const err = $('drill-error');
  err.textContent = '';
  try {
    const title = $('drill-title').value.trim() || t('drill.defaultTitle');
    let target;
    if ($('drill-target-type').value === 'subtree') target = { type: 'Subtree', node: Number($('drill-node').value), roles: 0 };
    else {
      const units = [...document.querySelectorAll('#drill-units input:checked')].map((c) => Number(c.value));
      if (!units.length) throw new Error(t('drill.needUnits'));
      const ids = units.flatMap((u) => (S.tree.byNode.get(u) ?? []).map((m) => m.id)).filter((id) => id !== S.session.terminal);
      if (!ids.length) throw new Error(t('drill.noMembers'));
      target = { type: 'Terminals', terminals: ids.slice(0, 1024) };
    }
    $('drill-launch').disabled = true;
    const body = { kind: ALERT_KIND.drill, priority: 3, ttl_s: 3600, title, text: '', location: null, attachments: [] };
    const board = new ReceiptBoard({ kind: body.kind, title, target, sentAt: Date.now() }, expectedRecipients(target, S.tree, S.session.terminal, ROLE_BIT_OF));
    const acc = await sendAlert(target, body, board);
    S.drills.set(key(acc.alert), { alert: acc.alert, title, started: Date.now(), table: null, error: '', live: true });
    S.link.send({ type: 'DrillReportQuery', alert: acc.alert });
    $('drill-status').textContent = `${t('d.sent')} · ${acc.recipients} ${t('d.recipients')}`;
  } catch (ex) {
    err.textContent = ex.message;
  } finally {
    $('drill-launch').disabled = false;
  }
  render();
}

async function exportCsv(d) {
  try {
    const blob = await api('GET', `${API}/drills/${key(d.alert)}/report.csv`, null, { blob: true });
    const url = URL.createObjectURL(blob);
    const a = h('a', { href: url, download: `drill-${key(d.alert)}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) {
    if (e.status === 401) signedOut(t('signin.expired'));
    else toast(`CSV: ${e.message}`, 'bad');
  }
}

function renderDrills() {
  const box = $('drills');
  const list = [...S.drills.values()].sort((a, b) => b.started - a.started);
  box.replaceChildren(...list.map((d) => {
    const k = key(d.alert);
    const tb = d.table;
    const head = h('header', {}, h('b', {}, `${t('kind.4')} · ${d.title}`), ' ', h('small', { class: 'muted' }, `#${k} · ${fmtTime(d.started)}`), ' ',
      h('label', { class: 'check' }, h('input', { type: 'checkbox', checked: d.live, testid: `drill-live-${k}`, onchange: (e) => { d.live = e.target.checked; } }), ` ${t('drill.live')}`), ' ',
      h('button', { type: 'button', testid: `drill-export-${k}`, onclick: () => exportCsv(d) }, t('drill.csv')));
    if (!tb) return h('article', { class: 'drill', testid: `drill-${k}` }, head, h('p', { class: d.error ? 'error' : 'muted' }, d.error || t('drill.waiting')));
    const marks = tb.marks_s;
    const table = h('table', { class: 'drill-table' },
      h('thead', {}, h('tr', {}, h('th', { rowspan: '2' }, t('drill.unit')), h('th', { rowspan: '2' }, t('drill.unitsMembers')),
        ...DRILL_STEPS.map((s) => h('th', { colspan: String(marks.length + 1) }, t(`drill.${s}`)))),
      h('tr', {}, ...DRILL_STEPS.flatMap(() => [...marks.map((m) => h('th', {}, `≤${markLabel(m)}`)), h('th', {}, t('drill.median'))]))),
      h('tbody', {}, ...tb.rows.map((r) => h('tr', { class: `lvl-${r.level}`, testid: `drill-row-${k}-${r.node ?? r.level}` },
        h('td', {}, r.level === 'unit' ? r.name : h('b', {}, r.name || t(`drill.level.${r.level}`))),
        h('td', {}, `${r.units}/${r.members}`),
        ...DRILL_STEPS.flatMap((s) => [...r.steps[s].cells.map((c) => h('td', { class: `mk ${c.ok}` }, `${c.n}/${c.of}`)),
          h('td', { class: 'med' }, r.steps[s].median_s == null ? '—' : `${r.steps[s].median_s.toFixed(1)} s`)])))));
    return h('article', { class: 'drill', testid: `drill-${k}` }, head,
      h('small', { class: 'muted' }, `${t('drill.generated')} ${fmtTime(tb.generated_ms)}`), d.error ? h('p', { class: 'error' }, d.error) : null, table);
  }));
}

// ------------------------------------------------------------------ history

async function loadHistory() {
  const id = Number($('history-group').value);
  const box = $('history');
  box.replaceChildren(h('p', { class: 'muted' }, '…'));
  try {
    const bursts = await api('GET', `${API}/groups/${id}/bursts?limit=50`);
    if (!bursts.length) { box.replaceChildren(h('p', { class: 'muted' }, t('hist.none'))); return; }
    box.replaceChildren(h('table', { class: 'hist' },
      h('thead', {}, h('tr', {}, h('th', {}, t('hist.time')), h('th', {}, t('hist.speaker')), h('th', {}, t('hist.class')), h('th', {}, t('hist.length')), h('th', {}, ''))),
      h('tbody', {}, ...bursts.map((b) => h('tr', { testid: `burst-${b.burst}` },
        h('td', {}, `${new Date(b.started_ms).toLocaleDateString()} ${fmtTime(b.started_ms)}`),
        h('td', {}, b.speaker_name || `#${b.speaker}`),
        h('td', {}, t(`class.${b.class}`)),
        h('td', {}, b.ended_ms ? `${((b.ended_ms - b.started_ms) / 1000).toFixed(1)} s` : '…'),
        h('td', {}, b.recording != null ? h('button', { type: 'button', testid: `play-${b.recording}`, onclick: () => play(b.recording) }, `▶ ${t('hist.play')}`) : h('small', { class: 'muted' }, t('hist.noRec'))))))));
  } catch (e) {
    if (e.status === 401) signedOut(t('signin.expired'));
    else box.replaceChildren(h('p', { class: 'error' }, e.message));
  }
}

async function play(recording) {
  try {
    const blob = await api('GET', `${API}/recordings/${recording}/audio`, null, { blob: true });
    const audio = $('history-audio');
    if (audio.dataset.url) URL.revokeObjectURL(audio.dataset.url);
    const url = URL.createObjectURL(blob);
    audio.dataset.url = url;
    audio.dataset.recording = String(recording);
    audio.src = url;
    await audio.play();
  } catch (e) {
    if (e.status === 401) signedOut(t('signin.expired'));
    else toast(`${t('hist.play')}: ${e.message}`, 'bad');
  }
}

// ------------------------------------------------------------------ misc UI

function selectTab(name) {
  if (!name) return;
  S.tab = name;
  document.querySelectorAll('.tabs [data-tab]').forEach((b) => {
    b.setAttribute('aria-selected', b.dataset.tab === name ? 'true' : 'false');
    b.classList.toggle('active', b.dataset.tab === name);
  });
  document.querySelectorAll('.tabpanel').forEach((p) => { p.hidden = p.dataset.panel !== name; });
  // Opening the board asks for fresh summaries (then every 10 s).
  if (name === 'receipts' && hooks.state === 'online') {
    const day = Date.now() - 86400000;
    for (const b of S.boards.values()) if (b.alert != null && b.meta.sentAt > day) S.link.send({ type: 'AlertQuery', alert: b.alert });
  }
  render();
}

function toast(text, kind = 'info') {
  logLine(text);
  const el = h('div', { class: `toast ${kind}`, role: kind === 'bad' ? 'alert' : 'status' }, text);
  $('toasts').append(el);
  setTimeout(() => el.remove(), kind === 'bad' ? 10000 : 5000);
  while ($('toasts').children.length > 5) $('toasts').firstChild.remove();
}

function logLine(text) {
  S.log.push(`${fmtTime(Date.now())} ${text}`);
  if (S.log.length > 300) S.log.splice(0, S.log.length - 300);
  if (S.tab === 'log') renderLog();
}

function renderLog() {
  $('log').replaceChildren(...S.log.slice(-300).reverse().map((l) => h('li', {}, l)));
}

/** Runs `fn` at most every `minMs`, with a trailing run so the last change always shows. */
const throttles = new Map();
function throttled(name, fn, minMs) {
  const now = Date.now();
  const th = throttles.get(name) ?? { last: 0, timer: null };
  throttles.set(name, th);
  if (now - th.last >= minMs) {
    th.last = now;
    fn();
  } else if (!th.timer) {
    th.timer = setTimeout(() => { th.timer = null; th.last = Date.now(); if (S.session) fn(); }, minMs - (now - th.last));
  }
}

let renderQueued = false;
function render() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    if (!S.session) return;
    hooks.floor = S.floor.snapshot();
    renderGroups();
    renderPtt();
    renderSos();
    throttled('tree', renderTree, 500);
    throttled('map', renderMap, 250);
    if (S.tab === 'receipts') throttled('boards', renderBoards, 500);
    throttled('inbox', renderInbox, 250);
    if (S.tab === 'drills') renderDrills();
    if (S.tab === 'log') renderLog();
  });
}

// Periodic work: floor timers and meters (4 Hz), AlertQuery every 10 s, DrillReportQuery every 5 s.
setInterval(() => { if (S.session) { renderPtt(); renderGroups(); } }, 250);
setInterval(() => {
  if (!S.link || hooks.state !== 'online') return;
  const day = Date.now() - 86400000;
  for (const b of S.boards.values()) if (b.alert != null && b.meta.sentAt > day) S.link.send({ type: 'AlertQuery', alert: b.alert });
  if (S.tab === 'receipts') renderBoards();
}, 10000);
setInterval(() => {
  if (!S.link || hooks.state !== 'online') return;
  for (const d of S.drills.values()) if (d.live) S.link.send({ type: 'DrillReportQuery', alert: d.alert });
}, 5000);

function onLang() {
  bump('inbox', 'tree');
  setLang(lang() === 'zh' ? 'en' : 'zh');
  applyI18n(document);
  rowCache.clear();
  $('group-list').replaceChildren();
  buildRoles();
  if (S.session) setState(hooks.state);
  render();
  if (S.tab === 'receipts') renderBoards();
  if (S.tab === 'drills') renderDrills();
}

function wire() {
  applyI18n(document);
  buildRoles();
  $('signin-form').addEventListener('submit', signIn);
  $('signout').addEventListener('click', signOut);
  document.querySelectorAll('.lang-toggle').forEach((b) => b.addEventListener('click', onLang));
  const ptt = $('ptt-button');
  ptt.addEventListener('pointerdown', (e) => { e.preventDefault(); ptt.setPointerCapture?.(e.pointerId); pttDown('pointer'); });
  ptt.addEventListener('pointerup', () => { if (S.talkKey === 'pointer') pttUp(); });
  ptt.addEventListener('pointercancel', () => { if (S.talkKey === 'pointer') pttUp(); });
  ptt.addEventListener('keydown', (e) => { if ((e.key === 'Enter') && !e.repeat) { e.preventDefault(); pttDown('enter'); } });
  ptt.addEventListener('keyup', (e) => { if (e.key === 'Enter' && S.talkKey === 'enter') { e.preventDefault(); pttUp(); } });
  document.addEventListener('keydown', onKeyDown);
  document.addEventListener('keyup', onKeyUp);
  window.addEventListener('blur', () => { if (S.talk && !S.talk.released) pttUp(); });
  $('group-list').addEventListener('keydown', (e) => {
    const ids = visibleGroups();
    const i = ids.indexOf(S.selected);
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const n = ids[Math.max(0, Math.min(ids.length - 1, i + (e.key === 'ArrowDown' ? 1 : -1)))];
      if (n != null) { selectGroup(n); rowCache.get(n)?.el.scrollIntoView({ block: 'nearest' }); }
    } else if (e.key === 'm' || e.key === 'M') {
      const g = S.groups.get(S.selected);
      if (g) setMonitored(g, !g.monitored);
    }
  });
  document.querySelectorAll('.tabs [data-tab]').forEach((b) => b.addEventListener('click', () => selectTab(b.dataset.tab)));
  $('group-filter').addEventListener('input', renderGroups);
  $('dispatch-form').addEventListener('submit', onDispatch);
  $('dispatch-target-type').addEventListener('change', updateTargetFields);
  $('dispatch-radius').addEventListener('input', renderMap);
  $('dispatch-member-ids').addEventListener('change', () => { S.memberPicks = new Set(parseIds($('dispatch-member-ids').value)); render(); });
  for (const id of ['dispatch-lat', 'dispatch-lon']) {
    $(id).addEventListener('change', () => {
      const lat = Number($('dispatch-lat').value); const lon = Number($('dispatch-lon').value);
      if ($('dispatch-lat').value && $('dispatch-lon').value && Math.abs(lat) <= 90 && Math.abs(lon) <= 180) { S.pick = { lat, lon }; render(); }
    });
  }
  $('drill-form').addEventListener('submit', onDrill);
  $('drill-target-type').addEventListener('change', updateTargetFields);
  $('history-load').addEventListener('click', loadHistory);
  document.addEventListener('visibilitychange', render);
  // Browsers start audio only after a user gesture: any click or key resumes it.
  const resume = () => { if (S.voice?.ctx && S.voice.ctx.state !== 'running') S.voice.ctx.resume().then(render, () => {}); };
  document.addEventListener('pointerdown', resume, true);
  document.addEventListener('keydown', resume, true);
  $('audio-enable').addEventListener('click', resume);
  updateTargetFields();
  selectTab('dispatch');
}

async function boot() {
  wire();
  let token = null;
  try { token = sessionStorage.getItem('pttConsole:token'); } catch { /* private mode */ }
  if (token) {
    try {
      const s = await api('GET', `${API}/session`, null, { token });
      await start(s);
      return;
    } catch { /* back to sign-in */ }
  }
  signedOut('');
}

boot();
