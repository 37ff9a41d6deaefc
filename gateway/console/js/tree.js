// The station's tree (GET /console/api/tree), indexed; sans-I/O helpers.

export const NODE_KIND_ORDER = ['city', 'district', 'police_station', 'station', 'unit'];
export const MAX_GROUPS = 64;

export class Tree {
  constructor(json) {
    if (!json || typeof json !== 'object' || !Array.isArray(json.nodes) || !Array.isArray(json.terminals)) {
      throw new TypeError('tree: nodes and terminals expected');
    }
    this.root = json.root;
    this.nodes = new Map();
    this.children = new Map();
    this.terminals = new Map();
    this.byNode = new Map();
    for (const n of json.nodes) {
      this.nodes.set(n.id, n);
      this.children.set(n.id, []);
      this.byNode.set(n.id, []);
    }
    for (const n of json.nodes) {
      if (n.parent != null && this.children.has(n.parent) && n.id !== this.root) this.children.get(n.parent).push(n.id);
    }
    for (const c of this.children.values()) c.sort((a, b) => a - b);
    for (const t of json.terminals) {
      this.terminals.set(t.id, t);
      if (this.byNode.has(t.node)) this.byNode.get(t.node).push(t);
    }
    for (const list of this.byNode.values()) list.sort((a, b) => a.id - b.id);
    if (!this.nodes.has(this.root) && json.nodes.length) this.root = json.nodes[0].id;
  }

  node(id) { return this.nodes.get(id); }
  terminal(id) { return this.terminals.get(id); }
  name(id) { return this.nodes.get(id)?.name ?? `#${id}`; }
  terminalName(id) { return this.terminals.get(id)?.name ?? `#${id}`; }

  /** Node ids in depth-first order with depth, root first. */
  ordered() {
    const out = [];
    const seen = new Set();
    const walk = (id, depth) => {
      if (seen.has(id) || !this.nodes.has(id)) return;
      seen.add(id);
      out.push({ id, depth });
      for (const c of this.children.get(id) ?? []) walk(c, depth + 1);
    };
    walk(this.root, 0);
    for (const id of this.nodes.keys()) if (!seen.has(id)) walk(id, 0);
    return out;
  }

  /** Every node at or under `id`. */
  subtree(id) {
    const out = [];
    const stack = [id];
    const seen = new Set();
    while (stack.length) {
      const n = stack.pop();
      if (seen.has(n) || !this.nodes.has(n)) continue;
      seen.add(n);
      out.push(n);
      stack.push(...(this.children.get(n) ?? []));
    }
    return out;
  }

  /** Terminals at or under `id`, optionally filtered by role bits (0 = all). */
  subtreeTerminals(id, roleBits = 0, roleBitOf = null) {
    const out = [];
    for (const n of this.subtree(id)) {
      for (const t of this.byNode.get(n) ?? []) {
        if (roleBits === 0 || (roleBitOf && (roleBitOf(t.role) & roleBits))) out.push(t);
      }
    }
    return out;
  }

  /** The unit (or nearest node) a terminal belongs to, for grouping receipts. */
  unitOf(terminalId) {
    return this.terminals.get(terminalId)?.node ?? null;
  }

  /** Groups a console monitors by default: its own node and the direct children, at most 64. */
  defaultMonitored(ownNode) {
    const own = this.nodes.has(ownNode) ? ownNode : this.root;
    return [own, ...(this.children.get(own) ?? [])].slice(0, MAX_GROUPS);
  }

  /** The unit node of a terminal, or its node. */
  parentChain(id) {
    const out = [];
    let n = this.nodes.get(id);
    const seen = new Set();
    while (n && !seen.has(n.id)) {
      seen.add(n.id);
      out.push(n.id);
      n = n.parent != null ? this.nodes.get(n.parent) : null;
    }
    return out;
  }

  /** Every known position: [{terminal, lat, lon, at_ms}]. */
  positions() {
    const out = [];
    for (const t of this.terminals.values()) {
      if (t.position && Number.isFinite(t.position.lat) && Number.isFinite(t.position.lon)) {
        out.push({ terminal: t.id, lat: t.position.lat, lon: t.position.lon, at_ms: t.position.at_ms });
      }
    }
    return out;
  }
}

/** "12 s", "5 min", "3 h" since `at_ms`. */
export function ageText(at_ms, now) {
  if (at_ms == null) return '—';
  const s = Math.max(0, Math.round((now - at_ms) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400 * 2) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

/** Link quality: {rtt_ms, loss_pct} or null. */
export function linkQuality(link) {
  if (!link) return null;
  const sent = Number(link.sent_packets) || 0;
  const lost = Number(link.lost_packets) || 0;
  return { rtt_ms: Math.round(Number(link.rtt_ms) || 0), loss_pct: sent > 0 ? Math.round((lost / sent) * 1000) / 10 : 0 };
}

/** Great-circle distance in metres. */
export function distanceM(a, b) {
  const R = 6371008.8;
  const toRad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * toRad;
  const dLon = (b.lon - a.lon) * toRad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * toRad) * Math.cos(b.lat * toRad) * Math.sin(dLon / 2) ** 2;
  return 2 * R * Math.asin(Math.min(1, Math.sqrt(h)));
}
