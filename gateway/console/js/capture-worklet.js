// AudioWorklet: collects the microphone's mono samples into 960-sample
// (20 ms at 48 kHz) frames and posts each to the main thread, which encodes
// them (WebCodecs) only while the talk key is down and the floor granted.
import { SampleFramer } from './framer.js';

class PttCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.framer = new SampleFramer(960);
    this.on = false;
    this.port.onmessage = (e) => {
      if (e.data && typeof e.data.capturing === 'boolean') {
        this.on = e.data.capturing;
        if (!this.on) this.framer.clear();
      }
    };
  }

  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (this.on && ch) {
      for (const f of this.framer.push(ch)) this.port.postMessage(f, [f.buffer]);
    }
    return true;
  }
}

registerProcessor('ptt-capture', PttCapture);
