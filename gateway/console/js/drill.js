// Drill report table (PROTOCOL.md "Drills"), sans-I/O: validates the JSON
// document of a DrillReport stream and turns it into rows of cells for the
// 1-3-8 board.

const STEPS = ['receipt', 'accept', 'arrive'];

function num(v) { return typeof v === 'number' && Number.isFinite(v) ? v : null; }

/** Parses and checks a report; throws on a document that is not one. */
export function parseDrillReport(text) {
  const j = typeof text === 'string' ? JSON.parse(text) : text;
  if (!j || typeof j !== 'object' || !Array.isArray(j.rows) || !Array.isArray(j.marks_s)) {
    throw new TypeError('drill report: rows and marks_s expected');
  }
  if (j.marks_s.some((m) => num(m) === null)) throw new TypeError('drill report: marks_s must be numbers');
  return j;
}

/**
 * Table model: {alert, title, marks_s, started_ms, generated_ms, rows: [{level, node, name, units, members,
 *   steps: {receipt|accept|arrive: {reached, within[], median_s, max_s, cells: [{mark, n, of, ok}]}}}]}.
 * `ok` per mark: 'all' every unit made it, 'some', 'none'.
 */
export function drillTable(report) {
  const marks = report.marks_s;
  const rows = report.rows.map((r) => {
    const units = num(r.units) ?? 0;
    const steps = {};
    for (const s of STEPS) {
      const st = r[s] ?? {};
      const within = Array.isArray(st.within) ? st.within.map((x) => num(x) ?? 0) : [];
      steps[s] = {
        reached: num(st.reached) ?? 0,
        median_s: num(st.median_s),
        max_s: num(st.max_s),
        within,
        cells: marks.map((m, i) => {
          const n = within[i] ?? 0;
          return { mark: m, n, of: units, ok: units > 0 && n >= units ? 'all' : n > 0 ? 'some' : 'none' };
        }),
      };
    }
    return {
      level: String(r.level ?? ''), node: r.node ?? null, name: String(r.name ?? ''), parent: r.parent ?? null,
      units, members: num(r.members) ?? 0, steps,
    };
  });
  return {
    alert: report.alert, title: String(report.title ?? ''), marks_s: marks,
    started_ms: num(report.started_ms), generated_ms: num(report.generated_ms), rows,
  };
}

export const DRILL_STEPS = STEPS;

/** "1 min", "3 min", "8 min" for the 60/180/480 s marks. */
export function markLabel(s) {
  return s % 60 === 0 ? `${s / 60} min` : `${s} s`;
}
