// Live receipt board of one alert the console sent, sans-I/O.
//
// Receipts move forward only (PROTOCOL.md section 5, Rules): pending ->
// delivered -> read -> accepted -> arrived -> resolved; rejected may follow
// pending, delivered or read and nothing follows it. `update` applies a
// ReceiptUpdate by those rules (an out-of-order or repeated update never
// moves a recipient back); `setCounts` takes the AlertStatus summary; `view`
// groups recipients per unit for display.

import { RECEIPT } from './codec.js';

const PATH_RANK = { 0: 0, 1: 1, 2: 2, 3: 3, 5: 4, 6: 5 };

/** Whether a recipient at `from` may move to `to`. */
export function receiptAdvances(from, to) {
  if (from === to) return false;
  if (from === RECEIPT.rejected) return false;
  if (to === RECEIPT.rejected) return from <= RECEIPT.read;
  if (!(to in PATH_RANK) || !(from in PATH_RANK)) return false;
  return PATH_RANK[to] > PATH_RANK[from];
}

export class ReceiptBoard {
  /**
   * @param {object} meta {alert, request, kind, title, target, sentAt}
   * @param {number[]} expected recipients predicted from the target and the tree (may be empty)
   */
  constructor(meta, expected = []) {
    this.meta = meta;
    this.alert = meta.alert ?? null;
    this.recipients = new Map(); // terminal -> {status, at_ms, reason}
    for (const t of expected) this.recipients.set(t, { status: RECEIPT.pending, at_ms: null, reason: '' });
    this.counts = null; // {recipients, by_status[7], expired}
    this.accepted = null; // recipients count from AlertAccepted
    this.refused = null;
  }

  /** Applies a ReceiptUpdate. Returns true when it changed the board. */
  update(terminal, status, at_ms, reason = '') {
    const r = this.recipients.get(terminal);
    if (!r) {
      this.recipients.set(terminal, { status, at_ms, reason });
      return true;
    }
    if (!receiptAdvances(r.status, status)) return false;
    Object.assign(r, { status, at_ms, reason });
    return true;
  }

  setCounts(msg) {
    this.counts = { recipients: msg.recipients, by_status: msg.counts.by_status.slice(), expired: msg.counts.expired };
  }

  /**
   * Counts per status. While the board has a row for every recipient the
   * gateway counted, the rows are the truth (they follow each
   * ReceiptUpdate at once; the AlertStatus summary is only as fresh as its
   * last poll), with the summary's expired count; otherwise the summary.
   */
  tally() {
    const by_status = [0, 0, 0, 0, 0, 0, 0];
    for (const r of this.recipients.values()) by_status[r.status]++;
    if (!this.counts) return { recipients: this.accepted ?? this.recipients.size, by_status, expired: 0, live: true };
    if (this.recipients.size >= this.counts.recipients) {
      return { recipients: this.counts.recipients, by_status, expired: this.counts.expired, live: true };
    }
    return { ...this.counts, live: false };
  }

  /**
   * Recipients grouped per unit: [{node, name, rows: [{terminal, name, status, at_ms, reason, online, stored}]}].
   * `stored` marks recipients pending and offline: stored, delivered when online.
   */
  view(tree) {
    const groups = new Map();
    for (const [terminal, r] of this.recipients) {
      const t = tree?.terminal(terminal);
      const node = t?.node ?? 0;
      if (!groups.has(node)) groups.set(node, { node, name: node ? tree.name(node) : '?', rows: [] });
      const online = t ? !!t.online : null;
      groups.get(node).rows.push({
        terminal, name: t?.name ?? `#${terminal}`, status: r.status, at_ms: r.at_ms, reason: r.reason,
        online, stored: r.status === RECEIPT.pending && online === false,
      });
    }
    const out = [...groups.values()].sort((a, b) => a.node - b.node);
    for (const g of out) g.rows.sort((a, b) => a.terminal - b.terminal);
    return out;
  }

  /** The hook view: {[terminal]: status}. */
  snapshot() {
    const out = {};
    for (const [t, r] of this.recipients) out[t] = r.status;
    return out;
  }
}

/** Recipients a target will reach as far as the console can tell (for the pending rows). */
export function expectedRecipients(target, tree, self, roleBitOf) {
  if (!tree) return [];
  let ts = [];
  switch (target.type) {
    case 'Terminals': ts = target.terminals.slice(); break;
    case 'Group': ts = (tree.byNode.get(target.group) ?? []).map((t) => t.id); break;
    case 'Subtree': ts = tree.subtreeTerminals(target.node, target.roles, roleBitOf).map((t) => t.id); break;
    default: ts = [];
  }
  return ts.filter((t) => t !== self);
}
