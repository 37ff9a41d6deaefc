//! Records what a listener heard in one group: jitter buffer, Opus decoder
//! (with FEC and concealment), WAV file; and, given the talkers' source
//! audio, how closely it followed what was said ([`crate::quality`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ptt_codec::audio::{Decoder, FRAME_SAMPLES, SAMPLE_RATE};

use crate::jitter::{self, JitterBuffer, Playout};
use crate::quality::{Burst, Kind, Score};
use crate::terminal::Voice;
use crate::wav::WavWriter;

/// Heard audio a recorder keeps for scoring: 120 s (3.8 MB). Bursts past it
/// are written to the file but not scored: scoring happens once the run is
/// over, so that it never delays a listener, and a long run must not hold
/// all its audio in memory.
const SCORED_SAMPLES: usize = SAMPLE_RATE as usize * 120;

/// Plays out one group's voice into a WAV file, as a terminal's speaker would.
#[derive(Debug)]
pub struct Recorder {
    burst: Option<(u32, u16)>,
    jitter: JitterBuffer,
    decoder: Decoder,
    wav: WavWriter,
    /// The talkers' audio, looped, to score against; `None`: not scored.
    source: Option<Arc<Vec<i16>>>,
    /// The burst being played.
    playing: Burst,
    /// Bursts played, kept for scoring, at most [`SCORED_SAMPLES`].
    played: Vec<Burst>,
    kept_samples: usize,
    /// Bursts played but not kept.
    dropped_bursts: u64,
}

/// What a recorder did, once finished.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// The jitter buffer's counters: frames played, recovered from FEC,
    /// concealed, late.
    pub playout: jitter::Stats,
    /// How closely the played audio followed the source (empty without a
    /// source).
    pub score: Score,
}

impl Recorder {
    /// Creates the WAV file. `jitter` sets the playout (FEC recovery on or
    /// off); `source`, if given, is what every talker sends, looped: the
    /// recording is scored against it when finished.
    pub fn create(
        path: &Path,
        jitter: jitter::Config,
        source: Option<Arc<Vec<i16>>>,
    ) -> anyhow::Result<Recorder> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Recorder {
            burst: None,
            jitter: JitterBuffer::new(jitter),
            decoder: Decoder::new()?,
            wav: WavWriter::create(path)?,
            source,
            playing: Burst::default(),
            played: Vec::new(),
            kept_samples: 0,
            dropped_bursts: 0,
        })
    }

    /// Accepts a received frame; a new burst restarts the jitter buffer.
    pub fn push(&mut self, now: Instant, voice: &Voice) {
        let burst = (voice.header.speaker, voice.header.burst);
        if self.burst != Some(burst) {
            self.burst = Some(burst);
            self.jitter.reset();
            self.keep_burst();
        }
        let payload = bytes::Bytes::copy_from_slice(voice.opus());
        if voice.header.is_end() {
            self.jitter.push_end(now, voice.header.seq, payload);
        } else {
            self.jitter.push(now, voice.header.seq, payload);
        }
    }

    /// Call every 20 ms: decodes whatever is due and appends it to the file.
    pub fn play(&mut self, now: Instant) -> anyhow::Result<()> {
        loop {
            let gave_up = self.jitter.stats().gave_up;
            let Some(p) = self.jitter.pop(now) else {
                if self.jitter.stats().gave_up != gave_up {
                    // The playout gave the burst up (nothing came for
                    // 200 ms): what plays next, if anything, is on another
                    // timeline and is scored as a burst of its own.
                    self.keep_burst();
                }
                break;
            };
            let (kind, pcm) = match p {
                Playout::Frame(packet) => (Kind::Played, self.decoder.decode(&packet)),
                Playout::Recover { next } => {
                    (Kind::Recovered, self.decoder.recover_from_next(&next))
                }
                Playout::Conceal => (Kind::Concealed, self.decoder.conceal()),
            };
            // An undecodable frame plays as silence, keeping the timing.
            let pcm = pcm.unwrap_or_else(|e| {
                tracing::debug!("undecodable frame: {e}");
                vec![0; FRAME_SAMPLES]
            });
            self.wav.write(&pcm)?;
            if self.source.is_some() {
                self.playing.push(kind, &pcm);
            }
        }
        Ok(())
    }

    /// Ends the burst being played: keeps it for scoring while the bound
    /// allows.
    fn keep_burst(&mut self) {
        let mut burst = std::mem::take(&mut self.playing);
        burst.trim_concealed_tail();
        if burst.frames() == 0 {
            return;
        }
        if self.kept_samples + burst.pcm.len() > SCORED_SAMPLES {
            self.dropped_bursts += 1;
            return;
        }
        self.kept_samples += burst.pcm.len();
        self.played.push(burst);
    }

    /// Flushes and closes the file, and scores what was played against the
    /// source. Call once the run is over: scoring takes a while.
    pub fn finish(mut self) -> anyhow::Result<Recording> {
        self.keep_burst();
        self.wav.finish()?;
        let mut score = Score::default();
        if let Some(source) = &self.source {
            for burst in &self.played {
                score.add(source, burst);
            }
            score.bursts_unscored += self.dropped_bursts;
        }
        Ok(Recording {
            playout: self.jitter.stats(),
            score,
        })
    }
}
