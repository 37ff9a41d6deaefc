//! Opus for terminals: a mono voice encoder and a decoder with in-band FEC
//! and packet-loss concealment, wrapping libopus through the `opus` crate.

use bytes::Bytes;

/// Sample rate: 16 kHz wideband voice, what handheld intercoms use.
pub const SAMPLE_RATE: u32 = 16_000;

/// Frame length: 20 ms, the protocol's default.
pub const FRAME_MS: u32 = 20;

/// Samples in one 20 ms frame at [`SAMPLE_RATE`].
pub const FRAME_SAMPLES: usize = (SAMPLE_RATE * FRAME_MS / 1000) as usize;

/// Default bit rate: 16 kbit/s, clear speech on a weak cellular link.
pub const DEFAULT_BITRATE: u32 = 16_000;

/// Largest Opus packet (RFC 6716 §3.2.1).
pub const MAX_PACKET: usize = 1275;

/// Longest frame Opus decodes (120 ms at 16 kHz), for output buffers.
const MAX_FRAME_SAMPLES: usize = (SAMPLE_RATE as usize) * 120 / 1000;

/// Errors of the Opus wrapper.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The input is not exactly one frame.
    #[error("expected {expected} samples per frame, got {got}")]
    FrameLength {
        /// Samples in one frame.
        expected: usize,
        /// Samples given.
        got: usize,
    },
    /// A setting is outside what the wrapper supports.
    #[error("unsupported setting: {0}")]
    Unsupported(&'static str),
    /// libopus refused (e.g. a corrupt packet).
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
}

/// Encoder settings.
#[derive(Debug, Clone, Copy)]
pub struct EncoderConfig {
    /// Bits per second. Default [`DEFAULT_BITRATE`].
    pub bitrate: u32,
    /// In-band forward error correction: each packet carries a coarse copy
    /// of the previous frame. Default on: cellular links lose packets.
    pub fec: bool,
    /// Loss the encoder plans FEC for, in percent. Default 10.
    pub expected_loss_percent: u8,
    /// Frame length in ms: 10, 20, 40 or 60. Default 20.
    pub frame_ms: u8,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            bitrate: DEFAULT_BITRATE,
            fec: true,
            expected_loss_percent: 10,
            frame_ms: FRAME_MS as u8,
        }
    }
}

/// A mono Opus voice encoder.
#[derive(Debug)]
pub struct Encoder {
    inner: opus::Encoder,
    frame_samples: usize,
    buf: Vec<u8>,
}

impl Encoder {
    /// A 16 kHz mono VoIP encoder.
    pub fn new(config: EncoderConfig) -> Result<Encoder, AudioError> {
        if ![10, 20, 40, 60].contains(&config.frame_ms) {
            return Err(AudioError::Unsupported("frame_ms must be 10, 20, 40 or 60"));
        }
        if config.expected_loss_percent > 100 {
            return Err(AudioError::Unsupported("expected_loss_percent above 100"));
        }
        let bitrate =
            i32::try_from(config.bitrate).map_err(|_| AudioError::Unsupported("bitrate"))?;
        let mut inner =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
        inner.set_bitrate(opus::Bitrate::Bits(bitrate))?;
        inner.set_inband_fec(config.fec)?;
        inner.set_packet_loss_perc(i32::from(config.expected_loss_percent))?;
        Ok(Encoder {
            inner,
            frame_samples: SAMPLE_RATE as usize * usize::from(config.frame_ms) / 1000,
            buf: vec![0; MAX_PACKET],
        })
    }

    /// Samples `encode` expects.
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// Encodes exactly one frame of 16 kHz mono PCM into one Opus packet.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Bytes, AudioError> {
        if pcm.len() != self.frame_samples {
            return Err(AudioError::FrameLength {
                expected: self.frame_samples,
                got: pcm.len(),
            });
        }
        let n = self.inner.encode(pcm, &mut self.buf)?;
        Ok(Bytes::copy_from_slice(&self.buf[..n]))
    }
}

/// A mono Opus decoder.
#[derive(Debug)]
pub struct Decoder {
    inner: opus::Decoder,
    /// Samples of the last decoded frame: the length concealment and FEC
    /// produce.
    last_frame: usize,
}

impl Decoder {
    /// A 16 kHz mono decoder.
    pub fn new() -> Result<Decoder, AudioError> {
        Ok(Decoder {
            inner: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?,
            last_frame: FRAME_SAMPLES,
        })
    }

    /// Decodes one packet. A corrupt packet is an error; the decoder stays
    /// usable.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<i16>, AudioError> {
        if packet.is_empty() {
            return self.conceal();
        }
        let mut out = vec![0i16; MAX_FRAME_SAMPLES];
        let n = self.inner.decode(packet, &mut out, false)?;
        out.truncate(n);
        self.last_frame = n.max(1);
        Ok(out)
    }

    /// One frame of packet-loss concealment, for a frame that never came.
    pub fn conceal(&mut self) -> Result<Vec<i16>, AudioError> {
        let mut out = vec![0i16; self.last_frame];
        let n = self.inner.decode(&[], &mut out, false)?;
        out.truncate(n);
        Ok(out)
    }

    /// Recovers a lost frame from the in-band FEC data of the packet that
    /// followed it. Decode `next_packet` normally afterwards.
    pub fn recover_from_next(&mut self, next_packet: &[u8]) -> Result<Vec<i16>, AudioError> {
        if next_packet.is_empty() {
            return self.conceal();
        }
        let mut out = vec![0i16; self.last_frame];
        let n = self.inner.decode(next_packet, &mut out, true)?;
        out.truncate(n);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(frames: usize) -> Vec<i16> {
        (0..frames * FRAME_SAMPLES)
            .map(|i| {
                let t = i as f64 / f64::from(SAMPLE_RATE);
                let env = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
                (8000.0 * env * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
            })
            .collect()
    }

    fn energy(x: &[i16]) -> f64 {
        x.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / x.len().max(1) as f64
    }

    #[test]
    fn round_trip_keeps_the_signal() {
        let pcm = tone(50);
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let mut dec = Decoder::new().unwrap();
        let mut out = Vec::new();
        let mut bytes = 0;
        for frame in pcm.chunks(FRAME_SAMPLES) {
            let p = enc.encode(frame).unwrap();
            bytes += p.len();
            let d = dec.decode(&p).unwrap();
            assert_eq!(d.len(), FRAME_SAMPLES);
            out.extend(d);
        }
        let avg = bytes / 50;
        assert!(
            (20..=80).contains(&avg),
            "16 kbit/s is ~40 bytes per 20 ms, got {avg}"
        );
        // Energy within a factor of two after the codec's start-up.
        let (a, b) = (energy(&pcm[3200..]), energy(&out[3200..]));
        assert!(b > a / 2.0 && b < a * 2.0, "input {a}, output {b}");
    }

    #[test]
    fn fec_and_concealment_give_full_frames() {
        let pcm = tone(10);
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let packets: Vec<Bytes> = pcm
            .chunks(FRAME_SAMPLES)
            .map(|f| enc.encode(f).unwrap())
            .collect();
        let mut dec = Decoder::new().unwrap();
        for p in &packets[..4] {
            dec.decode(p).unwrap();
        }
        // Packet 4 lost: recovered from packet 5's FEC.
        assert_eq!(
            dec.recover_from_next(&packets[5]).unwrap().len(),
            FRAME_SAMPLES
        );
        assert_eq!(dec.decode(&packets[5]).unwrap().len(), FRAME_SAMPLES);
        // Packets 6 and 7 lost, nothing after: concealment.
        assert_eq!(dec.conceal().unwrap().len(), FRAME_SAMPLES);
        assert_eq!(dec.decode(&[]).unwrap().len(), FRAME_SAMPLES);
    }

    #[test]
    fn wrong_frame_length_and_settings_are_errors() {
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        assert!(matches!(
            enc.encode(&[0; 100]),
            Err(AudioError::FrameLength {
                expected: 320,
                got: 100
            })
        ));
        let bad = EncoderConfig {
            frame_ms: 25,
            ..EncoderConfig::default()
        };
        assert!(Encoder::new(bad).is_err());
        let long = EncoderConfig {
            frame_ms: 60,
            ..EncoderConfig::default()
        };
        assert_eq!(Encoder::new(long).unwrap().frame_samples(), 960);
    }

    #[test]
    fn garbage_packets_never_panic() {
        let mut dec = Decoder::new().unwrap();
        let mut seed = 0x1234_5678_9abc_def0u64;
        for len in 0..400 {
            let packet: Vec<u8> = (0..len % 1300)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = dec.decode(&packet);
            let _ = dec.recover_from_next(&packet);
        }
        // Still decodes good packets afterwards.
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let p = enc.encode(&tone(1)).unwrap();
        assert_eq!(dec.decode(&p).unwrap().len(), FRAME_SAMPLES);
    }
}
