// WebTransport link to the gateway (CONSOLE.md "WebTransport"): the session,
// Hello with the sign-in token, the control stream (reader with a bounded
// reassembly buffer, serialized writer), datagrams, gateway-opened uni
// streams (Alert / Attachment / DrillReport), uploads, keep-alive, and
// reconnect with backoff. Browser only; the protocol logic is in codec.js.

import {
  FrameAssembler, Malformed, decodeServer, encodeClient, hexToBytes, splitFrame,
  KIND, HEADER_LEN, MAX_BODY, MAX_ATTACHMENT, CLOSE_CODE_NAMES,
} from './codec.js';

/** Close codes after which reconnecting cannot help (PROTOCOL.md section 3 + CONSOLE.md). */
export const FINAL_CLOSE = new Set([2, 3, 6, 9, 11, 12]);
/** Largest drill report document accepted (the JSON of a city-wide drill stays far below). */
export const MAX_DRILL_REPORT = 8 * 1024 * 1024;
const HELLO_TIMEOUT_MS = 10000;
const KEEPALIVE_MS = 10000;

/**
 * Reads until at least `n` bytes (counting `have`) arrived from a stream
 * reader, then returns them joined (chunks are joined once, so a 4 MiB photo
 * in small chunks costs one copy). Throws on an early end.
 */
async function readExactly(reader, have, n) {
  const chunks = have.length ? [have] : [];
  let total = have.length;
  while (total < n) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`stream ended after ${total} of ${n} bytes`);
    chunks.push(value);
    total += value.length;
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

export class Link {
  /**
   * @param {object} h handlers:
   *  getSession(): Promise<Session> (throws {status: 401} when signed out)
   *  onState(state, detail)        'connecting' | 'online' | 'offline' | 'closed'
   *  onFrame(msg)                  every decoded control-stream frame (Welcome included)
   *  onMalformed(err, kind)        a frame that did not decode (skipped)
   *  onDatagram(bytes)             each voice datagram
   *  onStreamFrame(msg, content)   Alert (content null), Attachment / DrillReport (content bytes)
   *  onFinal(code, reason)         closed for good (revoked, signed out, replaced...)
   */
  constructor(h) {
    this.h = h;
    this.wt = null;
    this.writer = null;
    this.dgWriter = null;
    this.writeChain = Promise.resolve();
    this.stopped = false;
    this.backoff = 1000;
    this.online = false;
    this.keepalive = null;
    this.nonce = 1;
    this.generation = 0;
  }

  /** Starts (or restarts) the connection loop. */
  async start(session) {
    this.stopped = false;
    this.session = session;
    await this.connectLoop();
  }

  async connectLoop() {
    const gen = ++this.generation;
    while (!this.stopped && gen === this.generation) {
      try {
        await this.connectOnce();
        this.backoff = 1000;
        return;
      } catch (e) {
        if (this.stopped || gen !== this.generation) return;
        if (e && e.final) return;
        this.h.onState('offline', String(e?.message ?? e));
        await new Promise((r) => setTimeout(r, this.backoff * (0.8 + Math.random() * 0.4)));
        this.backoff = Math.min(this.backoff * 2, 10000);
        try {
          this.session = await this.h.getSession();
        } catch (se) {
          if (se && se.status === 401) {
            this.stopped = true;
            this.h.onFinal(12, 'session expired');
            return;
          }
        }
      }
    }
  }

  async connectOnce() {
    const s = this.session;
    this.h.onState('connecting');
    const opts = {};
    if (s.webtransport.cert_hashes && s.webtransport.cert_hashes.length) {
      opts.serverCertificateHashes = s.webtransport.cert_hashes.map((hx) => ({ algorithm: 'sha-256', value: hexToBytes(hx) }));
    }
    if (typeof WebTransport === 'undefined') throw Object.assign(new Error('this browser has no WebTransport'), { final: true });
    const wt = new WebTransport(s.webtransport.url, opts);
    this.wt = wt;
    await wt.ready;
    const bidi = await wt.createBidirectionalStream();
    this.writer = bidi.writable.getWriter();
    this.writeChain = Promise.resolve();
    this.dgWriter = wt.datagrams.writable.getWriter();
    const welcome = new Promise((resolve, reject) => {
      this.welcomeWaiter = { resolve, reject };
      setTimeout(() => reject(new Error('no Welcome within 10 s')), HELLO_TIMEOUT_MS);
    });
    this.send({ type: 'Hello', version: 1, terminal: s.terminal, credential: hexToBytes(s.token) });
    this.readControl(bidi.readable.getReader(), wt);
    this.readDatagrams(wt);
    this.readUniStreams(wt);
    wt.closed.then((info) => this.onClosed(wt, info), (err) => this.onClosed(wt, { closeCode: null, reason: String(err?.message ?? err) }));
    try {
      await welcome;
    } catch (e) {
      try { wt.close(); } catch { /* already closed */ }
      throw e;
    }
    this.online = true;
    this.h.onState('online');
    clearInterval(this.keepalive);
    this.keepalive = setInterval(() => this.send({ type: 'Ping', nonce: this.nonce++ }), KEEPALIVE_MS);
  }

  onClosed(wt, info) {
    if (wt !== this.wt) return;
    clearInterval(this.keepalive);
    const wasOnline = this.online;
    this.online = false;
    this.writer = null;
    this.dgWriter = null;
    if (this.welcomeWaiter) this.welcomeWaiter.reject(new Error(`closed: ${info?.reason || ''}`));
    const code = info?.closeCode ?? null;
    if (this.stopped) { this.h.onState('closed'); return; }
    if (code != null && FINAL_CLOSE.has(code)) {
      this.stopped = true;
      this.h.onState('closed', CLOSE_CODE_NAMES[code]);
      this.h.onFinal(code, info?.reason ?? '');
      return;
    }
    this.h.onState('offline', `${CLOSE_CODE_NAMES[code] ?? code ?? ''} ${info?.reason ?? ''}`.trim());
    // A close before Welcome is handled by the connect loop's own retry.
    if (!wasOnline || this.reconnecting) return;
    this.reconnecting = true;
    setTimeout(async () => {
      this.reconnecting = false;
      if (this.stopped) return;
      try { this.session = await this.h.getSession(); } catch (se) {
        if (se && se.status === 401) { this.stopped = true; this.h.onFinal(12, 'session expired'); return; }
      }
      this.connectLoop();
    }, this.backoff);
    this.backoff = Math.min(this.backoff * 2, 10000);
  }

  async readControl(reader, wt) {
    const asm = new FrameAssembler();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        let frames;
        try {
          frames = asm.push(value);
        } catch (e) {
          // A header over 16384 bytes: the stream cannot be resynced.
          this.h.onMalformed(e, null);
          try { wt.close({ closeCode: 1, reason: 'frame too long' }); } catch { /* closed */ }
          return;
        }
        for (const f of frames) {
          let msg;
          try {
            msg = decodeServer(f.kind, f.body);
          } catch (e) {
            this.h.onMalformed(e, f.kind);
            continue;
          }
          if (msg.type === 'Welcome' && this.welcomeWaiter) {
            this.welcomeWaiter.resolve(msg);
            this.welcomeWaiter = null;
          }
          try { this.h.onFrame(msg); } catch (e) { console.error('frame handler', e); }
        }
      }
    } catch (e) {
      if (wt === this.wt) console.warn('control stream', e);
    }
  }

  async readDatagrams(wt) {
    const reader = wt.datagrams.readable.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        try { this.h.onDatagram(value); } catch (e) { console.error('datagram handler', e); }
      }
    } catch { /* closed */ }
  }

  async readUniStreams(wt) {
    const reader = wt.incomingUnidirectionalStreams.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.readUniStream(value);
      }
    } catch { /* closed */ }
  }

  /** One gateway-opened stream: one frame, then for Attachment / DrillReport exactly `size` bytes. */
  async readUniStream(stream) {
    const reader = stream.getReader();
    try {
      let buf = await readExactly(reader, new Uint8Array(0), HEADER_LEN);
      const len = (buf[1] << 8) | buf[2];
      if (len > MAX_BODY) throw new Malformed('frame too long', true);
      buf = await readExactly(reader, buf, HEADER_LEN + len);
      const f = splitFrame(buf);
      const msg = decodeServer(f.kind, f.body);
      let rest = buf.subarray(f.size);
      if (msg.type === 'Alert') {
        this.h.onStreamFrame(msg, null);
        return;
      }
      if (msg.type !== 'Attachment' && msg.type !== 'DrillReport') throw new Malformed(`unexpected ${msg.type} on a stream`);
      const limit = msg.type === 'Attachment' ? MAX_ATTACHMENT : MAX_DRILL_REPORT;
      if (msg.size > limit) throw new Malformed(`${msg.type} of ${msg.size} bytes`);
      rest = await readExactly(reader, rest, msg.size);
      // Exactly `size` bytes and then the end of the stream; anything more is refused whole.
      if (rest.length !== msg.size) throw new Malformed(`${msg.type}: more bytes than announced`);
      const { done } = await reader.read();
      if (!done) throw new Malformed(`${msg.type}: more bytes than announced`);
      this.h.onStreamFrame(msg, rest.slice());
    } catch (e) {
      this.h.onMalformed(e, null);
      try { reader.cancel(); } catch { /* gone */ }
    } finally {
      try { reader.releaseLock(); } catch { /* gone */ }
    }
  }

  /** Queues one control frame; frames go out in order. Returns false when offline. */
  send(msg) {
    const w = this.writer;
    if (!w) return false;
    const bytes = encodeClient(msg);
    this.writeChain = this.writeChain.then(() => w.write(bytes)).catch((e) => console.warn('write', e));
    if (this.h.onSent) this.h.onSent(msg);
    return true;
  }

  /** Sends one voice datagram. */
  sendDatagram(bytes) {
    const w = this.dgWriter;
    if (!w) return false;
    w.write(bytes).catch(() => {});
    return true;
  }

  /** Uploads one attachment: AttachmentPut + content on a stream of its own. */
  async upload(request, mime, content) {
    if (!this.wt) throw new Error('offline');
    const s = await this.wt.createUnidirectionalStream();
    const w = s.getWriter();
    await w.write(encodeClient({ type: 'AttachmentPut', request, mime, size: content.length }));
    await w.write(content);
    await w.close();
  }

  /** Logout (forget groups) and close; no reconnect. */
  async stop(logout = false) {
    this.stopped = true;
    clearInterval(this.keepalive);
    if (logout) this.send({ type: 'Logout' });
    try { await this.writeChain; } catch { /* ignore */ }
    try { this.wt?.close({ closeCode: 0, reason: 'signed out' }); } catch { /* closed */ }
    this.wt = null;
  }
}

export { KIND };
