// Latency marks for measurement (issue 13, BENCHMARKS.md "Browser console
// latency"): off unless a measurement program turns them on with
// `window.pttConsole.timing = newTiming()` (or any object with the four
// arrays below). The page then records, in wall-clock milliseconds
// (`performance.timeOrigin + performance.now()`, comparable with another
// process's clock on the same machine):
//   presses:  {group, event, down, granted, firstFrame}  one per talk-key press:
//             `event` the key event's own time stamp, `down` when the page
//             handled it (FloorRequest written), `granted` FloorGranted
//             received, `firstFrame` first voice datagram handed to the link
//   sent:     {group, burst, seq, end, at}  each voice datagram handed to
//             the link (WebTransport datagram writer; `at` just before)
//   received: {group, speaker, burst, seq, at}  each voice datagram read from
//             the link (before the jitter buffer)
//   decoded:  {group, burst, seq, pulled, at}  each frame taken from the jitter
//             buffer (`pulled`, handed to the AudioDecoder) and decoded (`at`,
//             the decoder's output callback)
// Each array keeps its last LIMIT entries. Sans-I/O apart from the clock.

/** Entries kept per array. */
export const LIMIT = 20000;

/** Fresh, empty marks (turns recording on when put in `pttConsole.timing`). */
export function newTiming() {
  return { presses: [], sent: [], received: [], decoded: [] };
}

/** Wall-clock milliseconds now, microsecond-ish resolution. */
export function wallMs() {
  return performance.timeOrigin + performance.now();
}

/** Wall-clock milliseconds of a `performance.now()`-based time stamp (an event's `timeStamp`). */
export function wallOf(stamp) {
  return performance.timeOrigin + stamp;
}

/**
 * Appends `entry` to `timing[list]`, dropping the oldest beyond `limit`.
 * Returns the entry (to fill in later), or null when recording is off.
 */
export function mark(timing, list, entry, limit = LIMIT) {
  const a = timing?.[list];
  if (!Array.isArray(a)) return null;
  a.push(entry);
  if (a.length > limit) a.splice(0, a.length - limit);
  return entry;
}
