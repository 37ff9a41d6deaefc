// Scan priority (voice.js, the part without Web Audio): with several groups
// talking at once the emergency one, then the highest priority (lowest
// number), plays at full volume and the others are ducked to 0.15.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Voice, DUCK_GAIN } from '../js/voice.js';

function voice(now) {
  const v = new Voice({ framesReceived: 0, framesDecoded: 0, decodeErrors: 0, lastRms: 0, captureRms: 0 }, () => {});
  const talk = (group, settings) => Object.assign(v.channel(group), { lastVoice: now - 10 }, settings);
  return { v, talk };
}

test('one group talking plays at its own volume', () => {
  const now = 100000;
  const { v, talk } = voice(now);
  talk(4, { priority: 5, volume: 0.8 });
  v.channel(40).priority = 1; // silent
  v.duck(now);
  assert.equal(v.channel(4).ducked, false);
  assert.equal(v.channel(4).level, 0.8);
  assert.equal(v.channel(40).ducked, false);
});

test('the highest priority (lowest number) wins, others are ducked', () => {
  const now = 100000;
  const { v, talk } = voice(now);
  talk(4, { priority: 10, volume: 1 });
  talk(40, { priority: 1, volume: 1 });
  talk(41, { priority: 10, volume: 0.5 });
  v.duck(now);
  assert.deepEqual(v.activeGroups(now).map((c) => c.group), [40, 4, 41]);
  assert.equal(v.channel(40).level, 1);
  assert.equal(v.channel(4).level, DUCK_GAIN);
  assert.equal(v.channel(41).level, 0.5 * DUCK_GAIN);
});

test('an emergency (SOS group or class 2 burst) beats any priority; mute is 0', () => {
  const now = 100000;
  const { v, talk } = voice(now);
  talk(4, { priority: 1 });
  talk(41, { priority: 50, emergency: true });
  v.duck(now);
  assert.equal(v.channel(41).ducked, false);
  assert.equal(v.channel(4).ducked, true);
  const b = voice(now);
  b.talk(4, { priority: 1 });
  b.talk(42, { priority: 50, cls: 2, muted: true });
  b.v.duck(now);
  assert.equal(b.v.channel(4).ducked, true);
  assert.equal(b.v.channel(42).level, 0);
});

test('a group silent for 400 ms no longer ducks the others', () => {
  const now = 100000;
  const { v, talk } = voice(now);
  talk(4, { priority: 10 });
  Object.assign(v.channel(40), { priority: 1, lastVoice: now - 500 });
  v.duck(now);
  assert.equal(v.channel(4).ducked, false);
});

test('malformed voice datagrams are counted, never thrown', () => {
  const stats = { framesReceived: 0, framesDecoded: 0, decodeErrors: 0, lastRms: 0, captureRms: 0 };
  const v = new Voice(stats, () => {});
  v.onDatagram(new Uint8Array([0x20, 0, 0, 0, 4]));
  v.onDatagram(new Uint8Array(0));
  assert.equal(stats.decodeErrors, 2);
  assert.equal(stats.framesReceived, 0);
  v.onDatagram(Uint8Array.from([0x10, 0, 0, 0, 4, 0, 0, 3, 0xe9, 0, 5, 0, 0, 0xf8, 0xff, 0xfe]));
  assert.equal(stats.framesReceived, 1);
  assert.equal(v.channel(4).jitter.frames.size, 1);
});
