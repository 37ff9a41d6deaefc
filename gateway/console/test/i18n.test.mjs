// Labels: both languages have the same keys, and every static key the page
// and app.js use exists (a missing one would show the raw key to a dispatcher).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { DICTS } from '../js/i18n.js';

const read = (p) => readFileSync(new URL(p, import.meta.url), 'utf8');

test('zh and en have the same keys', () => {
  const zh = Object.keys(DICTS.zh).sort();
  const en = Object.keys(DICTS.en).sort();
  assert.deepEqual(zh.filter((k) => !DICTS.en[k]), []);
  assert.deepEqual(en.filter((k) => !DICTS.zh[k]), []);
});

test('every data-i18n key and every literal t() key exists', () => {
  const html = read('../index.html');
  const app = read('../js/app.js');
  const keys = new Set();
  for (const m of html.matchAll(/data-i18n(?:-placeholder)?="([^"]+)"/g)) keys.add(m[1]);
  for (const m of app.matchAll(/\bt\('([^']+)'\)/g)) keys.add(m[1]);
  for (const m of app.matchAll(/'data-i18n': '([^']+)'/g)) keys.add(m[1]);
  const missing = [...keys].filter((k) => !(k in DICTS.zh) || !(k in DICTS.en));
  assert.deepEqual(missing, []);
  assert.ok(keys.size > 100, `${keys.size} keys`);
});

test('every enumerated label family is complete', () => {
  for (const d of Object.values(DICTS)) {
    for (const k of [1, 2, 3, 4, 5, 6, 7]) assert.ok(d[`kind.${k}`]);
    for (const k of [0, 1, 2, 3, 4, 5, 6]) assert.ok(d[`rc.${k}`]);
    for (const k of [1, 2, 3, 5, 6, 100, 101, 255]) assert.ok(d[`deny.${k}`]);
    for (const k of [2, 3, 4, 255]) assert.ok(d[`revoke.${k}`]);
    for (const r of ['police', 'auxiliary_police', 'security_guard', 'staff', 'volunteer', 'dispatcher']) assert.ok(d[`role.${r}`]);
    for (const k of ['city', 'district', 'police_station', 'station', 'unit']) assert.ok(d[`nodeKind.${k}`]);
    for (const k of ['handheld', 'screen_terminal', 'phone_app', 'console']) assert.ok(d[`tkind.${k}`]);
    for (const s of ['signed-out', 'connecting', 'online', 'offline']) assert.ok(d[`state.${s}`]);
    for (const s of ['receipt', 'accept', 'arrive']) assert.ok(d[`drill.${s}`]);
  }
});
