// A scripted in-page gateway behind a fake `WebTransport`, for integration
// tests of app.js without the Rust side (dev/integration.mjs). Loaded before
// app.js by the mock server when the page URL has `?fake-gateway`. It speaks
// the real wire format through codec.js, answers the console's frames the way
// the gateway would (Welcome, Joined, FloorGranted, AlertAccepted, ...), and
// records what it got in `window.fakeGateway.received`.
import {
  FrameAssembler, decodeClient, decodeVoice, encodeServer, encodeVoice, concat, splitFrame,
} from '../js/codec.js';

function pipe() {
  let ctrl;
  const readable = new ReadableStream({ start(c) { ctrl = c; } });
  return { readable, push: (b) => ctrl.enqueue(b), end: () => ctrl.close() };
}

class FakeGateway {
  constructor(wt) {
    this.wt = wt;
    this.received = [];
    this.datagrams = [];
    this.uploads = [];
    this.asm = new FrameAssembler();
    this.nextAlert = 100;
    this.nextAttachment = 500;
    this.burst = 1;
    this.auto = true;
    this.online = [1001, 1002];
  }
  /** A control frame to the console. */
  send(msg) { this.control.push(encodeServer(msg)); }
  /** Raw bytes on the control stream (for malformed input). */
  sendRaw(bytes) { this.control.push(bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes)); }
  /** A gateway-opened uni stream carrying `frame` and optional content. */
  stream(msg, content = null) {
    const p = pipe();
    let bytes = encodeServer(msg);
    if (content) bytes = concat(bytes, content);
    p.push(bytes);
    p.end();
    this.wt.uniCtrl.enqueue(p.readable);
  }
  voice(header, opus) { this.wt.dgCtrl.enqueue(encodeVoice(header, opus)); }
  onClientBytes(chunk) {
    for (const f of this.asm.push(chunk)) {
      const m = decodeClient(f.kind, f.body);
      this.received.push(m);
      if (this.auto) this.answer(m);
    }
  }
  onDatagram(d) { this.datagrams.push({ ...decodeVoice(d).header, bytes: d.length }); }
  onUpload(bytes) {
    const f = splitFrame(bytes);
    const m = decodeClient(f.kind, f.body);
    const content = bytes.subarray(f.size);
    this.uploads.push({ ...m, got: content.length });
    if (content.length !== m.size) { this.send({ type: 'AlertRefused', request: m.request, code: 25, message: 'size' }); return; }
    this.send({ type: 'AttachmentStored', request: m.request, attachment: this.nextAttachment++, size: m.size });
  }
  answer(m) {
    switch (m.type) {
      case 'Hello': this.send({ type: 'Welcome', terminal: m.terminal, name: '城南派出所指挥室', resumed: false, groups: [] }); break;
      case 'Join': this.send({ type: 'Joined', group: m.group, talk: true, name: `G${m.group}`, online: this.online }); break;
      case 'Leave': this.send({ type: 'Left', group: m.group }); break;
      case 'FloorRequest': this.send({ type: 'FloorGranted', group: m.group, burst: this.burst++, limit_ms: 30000 }); break;
      case 'FloorRelease': this.send({ type: 'FloorIdle', group: m.group }); break;
      case 'AlertSend': this.send({ type: 'AlertAccepted', request: m.request, alert: this.nextAlert++, recipients: 3 }); break;
      case 'AlertReceipt': this.send({ type: 'ReceiptSaved', alert: m.alert, status: m.status }); break;
      case 'AlertQuery': this.send({ type: 'AlertStatus', alert: m.alert, recipients: 3, counts: { by_status: [1, 1, 0, 1, 0, 0, 0], expired: 0 } }); break;
      case 'SosCancel': this.send({ type: 'AlertCancelled', alert: this.lastSos ?? 1, by: 300 }); break;
      case 'DrillReportQuery': {
        const json = JSON.stringify({
          alert: m.alert, title: 'drill', issuer: 300, started_ms: Date.now() - 60000, generated_ms: Date.now(), marks_s: [60, 180, 480],
          rows: [{ level: 'unit', node: 41, name: '共治单元1', parent: 40, units: 1, members: 4,
            receipt: { reached: 1, within: [1, 1, 1], median_s: 0.4, max_s: 0.4 },
            accept: { reached: 1, within: [1, 1, 1], median_s: 42, max_s: 42 },
            arrive: { reached: 0, within: [0, 0, 0], median_s: null, max_s: null } }],
        });
        const bytes = new TextEncoder().encode(json);
        this.stream({ type: 'DrillReport', alert: m.alert, size: bytes.length }, bytes);
        break;
      }
      default: break;
    }
  }
}

class FakeWebTransport {
  constructor(url, options) {
    this.url = url;
    this.options = options;
    this.gateway = new FakeGateway(this);
    window.fakeGateway = this.gateway;
    this.ready = Promise.resolve();
    this.closed = new Promise((r) => { this.closeNow = r; });
    const gw = this.gateway;
    this.datagrams = {
      readable: new ReadableStream({ start: (c) => { this.dgCtrl = c; } }),
      writable: new WritableStream({ write: (d) => gw.onDatagram(d) }),
    };
    this.incomingUnidirectionalStreams = new ReadableStream({ start: (c) => { this.uniCtrl = c; } });
  }
  async createBidirectionalStream() {
    const p = pipe();
    this.gateway.control = p;
    return { readable: p.readable, writable: new WritableStream({ write: (chunk) => this.gateway.onClientBytes(chunk) }) };
  }
  async createUnidirectionalStream() {
    let buf = new Uint8Array(0);
    return new WritableStream({
      write: (chunk) => { buf = concat(buf, chunk); },
      close: () => this.gateway.onUpload(buf),
    });
  }
  close(info = {}) { this.closeNow({ closeCode: info.closeCode ?? 0, reason: info.reason ?? '' }); }
}

window.WebTransport = FakeWebTransport;
