//! Records what a listener heard in one group: jitter buffer, Opus decoder
//! (with FEC and concealment), WAV file.

use std::path::Path;
use std::time::Instant;

use ptt_codec::audio::Decoder;

use crate::jitter::{self, JitterBuffer, Playout};
use crate::terminal::Voice;
use crate::wav::WavWriter;

/// Plays out one group's voice into a WAV file, as a terminal's speaker would.
#[derive(Debug)]
pub struct Recorder {
    burst: Option<(u32, u16)>,
    jitter: JitterBuffer,
    decoder: Decoder,
    wav: WavWriter,
}

impl Recorder {
    /// Creates the WAV file.
    pub fn create(path: &Path) -> anyhow::Result<Recorder> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Recorder {
            burst: None,
            jitter: JitterBuffer::new(jitter::Config::default()),
            decoder: Decoder::new()?,
            wav: WavWriter::create(path)?,
        })
    }

    /// Accepts a received frame; a new burst restarts the jitter buffer.
    pub fn push(&mut self, now: Instant, voice: &Voice) {
        let burst = (voice.header.speaker, voice.header.burst);
        if self.burst != Some(burst) {
            self.burst = Some(burst);
            self.jitter.reset();
        }
        self.jitter.push(
            now,
            voice.header.seq,
            bytes::Bytes::copy_from_slice(voice.opus()),
        );
    }

    /// Call every 20 ms: decodes whatever is due and appends it to the file.
    pub fn play(&mut self, now: Instant) -> anyhow::Result<()> {
        while let Some(p) = self.jitter.pop(now) {
            let pcm = match p {
                Playout::Frame(packet) => self.decoder.decode(&packet),
                Playout::Recover { next } => self.decoder.recover_from_next(&next),
                Playout::Conceal => self.decoder.conceal(),
            };
            match pcm {
                Ok(pcm) => self.wav.write(&pcm)?,
                Err(e) => tracing::debug!("undecodable frame: {e}"),
            }
        }
        Ok(())
    }

    /// Flushes and closes the file.
    pub fn finish(self) -> anyhow::Result<()> {
        self.wav.finish()
    }
}
