// Offline map on a canvas: Web Mercator fitted to the bounding box of the
// known positions; units as labelled markers (centroid of their members),
// members as dots (green online, grey offline), a microphone icon while a
// member talks, SOS members flashing red, the point picked for a K-nearest
// dispatch with its radius. An optional tile layer is drawn only when the
// session names a tile URL (session.map.tiles); nothing else is fetched.

export function project(lat, lon) {
  const s = Math.sin((Math.max(-85, Math.min(85, lat)) * Math.PI) / 180);
  return { x: (lon + 180) / 360, y: 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI) };
}

export function unproject(x, y) {
  const lon = x * 360 - 180;
  const n = Math.PI - 2 * Math.PI * y;
  const lat = (180 / Math.PI) * Math.atan(0.5 * (Math.exp(n) - Math.exp(-n)));
  return { lat, lon };
}

/** Scale and offset that fit world points into w x h with a margin. Pure, for tests. */
export function fit(points, w, h, margin = 40) {
  if (!points.length) return null;
  let x0 = Infinity; let y0 = Infinity; let x1 = -Infinity; let y1 = -Infinity;
  for (const p of points) { x0 = Math.min(x0, p.x); y0 = Math.min(y0, p.y); x1 = Math.max(x1, p.x); y1 = Math.max(y1, p.y); }
  const minSpan = 0.004 / 360; // about 400 m: a single point still shows its surroundings
  const spanX = Math.max(x1 - x0, minSpan);
  const spanY = Math.max(y1 - y0, minSpan);
  const scale = Math.min((w - 2 * margin) / spanX, (h - 2 * margin) / spanY);
  const cx = (x0 + x1) / 2; const cy = (y0 + y1) / 2;
  return { scale, ox: w / 2 - cx * scale, oy: h / 2 - cy * scale };
}

export class MapView {
  constructor(canvas, { onPick, tiles = null, labels = {} } = {}) {
    this.canvas = canvas;
    this.onPick = onPick;
    this.tiles = tiles;
    this.labels = labels;
    this.tileCache = new Map();
    this.data = { members: [], units: [], pick: null, radius: null };
    canvas.addEventListener('click', (e) => {
      if (!this.view) return;
      const r = canvas.getBoundingClientRect();
      const x = (e.clientX - r.left - this.view.ox) / this.view.scale;
      const y = (e.clientY - r.top - this.view.oy) / this.view.scale;
      const p = unproject(x, y);
      this.onPick?.({ lat: Math.round(p.lat * 1e6) / 1e6, lon: Math.round(p.lon * 1e6) / 1e6 });
    });
    this.ro = new ResizeObserver(() => this.draw());
    this.ro.observe(canvas);
    this.flash = setInterval(() => { if (this.data.members.some((m) => m.sos)) this.draw(); }, 400);
  }

  /**
   * @param {object} d {members: [{id, name, lat, lon, online, talking, sos, unit}], units: [{id, name}], pick, radius}
   */
  set(d) {
    this.data = { ...this.data, ...d };
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth; const h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.fillStyle = '#0b1420';
    g.fillRect(0, 0, w, h);
    const pts = this.data.members.map((m) => ({ ...m, ...project(m.lat, m.lon) }));
    const pick = this.data.pick ? { ...this.data.pick, ...project(this.data.pick.lat, this.data.pick.lon) } : null;
    const view = fit(pick ? [...pts, pick] : pts, w, h);
    this.view = view;
    if (!view) {
      g.fillStyle = '#8aa0b8';
      g.font = '16px sans-serif';
      g.textAlign = 'center';
      g.fillText(this.labels.noPositions ?? 'no positions', w / 2, h / 2);
      return;
    }
    const X = (p) => p.x * view.scale + view.ox;
    const Y = (p) => p.y * view.scale + view.oy;
    if (this.tiles) this.drawTiles(g, view, w, h);
    this.drawGrid(g, view, w, h);
    // Units: centroid of the members with positions.
    const byUnit = new Map();
    for (const p of pts) {
      if (p.unit == null) continue;
      if (!byUnit.has(p.unit)) byUnit.set(p.unit, []);
      byUnit.get(p.unit).push(p);
    }
    g.font = '13px sans-serif';
    g.textAlign = 'left';
    g.textBaseline = 'middle';
    const labels = [];
    for (const u of this.data.units) {
      const ms = byUnit.get(u.id);
      if (!ms || !ms.length) continue;
      const cx = ms.reduce((a, p) => a + X(p), 0) / ms.length;
      const cy = ms.reduce((a, p) => a + Y(p), 0) / ms.length;
      g.strokeStyle = 'rgba(120,170,255,0.35)';
      for (const p of ms) { g.beginPath(); g.moveTo(cx, cy); g.lineTo(X(p), Y(p)); g.stroke(); }
      g.fillStyle = '#1d4ed8';
      g.beginPath(); g.rect(cx - 6, cy - 6, 12, 12); g.fill();
      labels.push({ text: u.name, x: cx, y: cy });
    }
    const blink = Math.floor(Date.now() / 400) % 2 === 0;
    for (const p of pts) {
      const x = X(p); const y = Y(p);
      if (p.sos) {
        g.fillStyle = blink ? '#ff1f1f' : '#7a0000';
        g.beginPath(); g.arc(x, y, 14, 0, 2 * Math.PI); g.fill();
        g.fillStyle = '#fff';
        g.font = 'bold 12px sans-serif';
        g.textAlign = 'center';
        g.fillText('SOS', x, y);
        g.textAlign = 'left';
        g.font = '13px sans-serif';
        g.fillStyle = '#ffb3b3';
        g.fillText(p.name, x + 17, y);
      } else if (p.talking) {
        drawMic(g, x, y);
        g.fillStyle = '#ffe08a';
        g.fillText(p.name, x + 14, y);
      } else {
        g.fillStyle = p.online ? '#22c55e' : '#6b7280';
        g.beginPath(); g.arc(x, y, 5, 0, 2 * Math.PI); g.fill();
        g.strokeStyle = '#0b1420'; g.lineWidth = 1.5; g.stroke(); g.lineWidth = 1;
      }
    }
    // Unit labels above the member dots so a dot never hides a name.
    g.font = '13px sans-serif';
    g.textAlign = 'left';
    for (const l of labels) {
      const tw = g.measureText(l.text).width;
      g.fillStyle = 'rgba(10,20,35,0.85)';
      g.fillRect(l.x + 9, l.y - 10, tw + 8, 20);
      g.fillStyle = '#dbe7ff';
      g.fillText(l.text, l.x + 13, l.y);
    }
    if (pick) {
      const x = X(pick); const y = Y(pick);
      if (this.data.radius) {
        // Metres per world unit at this latitude.
        const mPerUnit = 40075016.7 * Math.cos((pick.lat * Math.PI) / 180);
        const r = (this.data.radius / mPerUnit) * view.scale;
        g.strokeStyle = 'rgba(250,204,21,0.7)';
        g.setLineDash([6, 4]);
        g.beginPath(); g.arc(x, y, r, 0, 2 * Math.PI); g.stroke();
        g.setLineDash([]);
      }
      g.strokeStyle = '#facc15'; g.lineWidth = 2;
      g.beginPath(); g.moveTo(x - 10, y); g.lineTo(x + 10, y); g.moveTo(x, y - 10); g.lineTo(x, y + 10); g.stroke();
      g.lineWidth = 1;
    }
  }

  drawGrid(g, view, w, h) {
    // A scale bar: metres per pixel at the centre.
    const mid = unproject((w / 2 - view.ox) / view.scale, (h / 2 - view.oy) / view.scale);
    const mPerPx = (40075016.7 * Math.cos((mid.lat * Math.PI) / 180)) / view.scale;
    const nice = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];
    const m = nice.find((n) => n / mPerPx > 80) ?? 50000;
    const px = m / mPerPx;
    g.strokeStyle = '#8aa0b8'; g.fillStyle = '#8aa0b8';
    g.beginPath(); g.moveTo(12, h - 14); g.lineTo(12 + px, h - 14); g.stroke();
    g.font = '12px sans-serif'; g.textAlign = 'left'; g.textBaseline = 'bottom';
    g.fillText(m >= 1000 ? `${m / 1000} km` : `${m} m`, 12, h - 18);
    g.textBaseline = 'middle';
  }

  drawTiles(g, view, w, h) {
    const z = Math.max(0, Math.min(19, Math.floor(Math.log2(view.scale / 256))));
    const n = 2 ** z;
    const size = view.scale / n;
    const tx0 = Math.floor((-view.ox / view.scale) * n);
    const ty0 = Math.floor((-view.oy / view.scale) * n);
    const tx1 = Math.floor(((w - view.ox) / view.scale) * n);
    const ty1 = Math.floor(((h - view.oy) / view.scale) * n);
    if ((tx1 - tx0 + 1) * (ty1 - ty0 + 1) > 64) return;
    for (let tx = tx0; tx <= tx1; tx++) {
      for (let ty = ty0; ty <= ty1; ty++) {
        if (tx < 0 || ty < 0 || tx >= n || ty >= n) continue;
        const url = this.tiles.replace('{z}', z).replace('{x}', tx).replace('{y}', ty);
        let img = this.tileCache.get(url);
        if (!img) {
          img = new Image();
          img.onload = () => this.draw();
          img.src = url;
          this.tileCache.set(url, img);
          if (this.tileCache.size > 256) this.tileCache.delete(this.tileCache.keys().next().value);
        }
        if (img.complete && img.naturalWidth) {
          g.globalAlpha = 0.6;
          g.drawImage(img, tx * size + view.ox, ty * size + view.oy, size + 0.5, size + 0.5);
          g.globalAlpha = 1;
        }
      }
    }
  }
}

function drawMic(g, x, y) {
  g.fillStyle = '#facc15';
  g.beginPath(); g.arc(x, y, 11, 0, 2 * Math.PI); g.fill();
  g.fillStyle = '#111';
  g.beginPath();
  g.roundRect ? g.roundRect(x - 3, y - 7, 6, 9, 3) : g.rect(x - 3, y - 7, 6, 9);
  g.fill();
  g.strokeStyle = '#111'; g.lineWidth = 1.5;
  g.beginPath(); g.arc(x, y - 1, 5, 0.1 * Math.PI, 0.9 * Math.PI); g.stroke();
  g.beginPath(); g.moveTo(x, y + 4); g.lineTo(x, y + 7); g.stroke();
  g.lineWidth = 1;
}
