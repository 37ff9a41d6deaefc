//! A recording decoded to PCM, through the codec's Opus decoder (the
//! `wav-export` feature): for `ptt-gateway recordings export --wav` and
//! for tests that listen to what was recorded.

use std::path::Path;

use ptt_codec::audio::{Decoder, SAMPLE_RATE};
use ptt_gateway_core::recording::GRANULE_RATE;

use super::read_packets;

/// Why a recording could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The file could not be read, or is not Ogg Opus.
    #[error("reading the recording: {0}")]
    Read(#[from] std::io::Error),
    /// libopus refused a packet.
    #[error("decoding: {0}")]
    Decode(#[from] ptt_codec::audio::AudioError),
    /// The WAV file could not be written.
    #[error("writing the WAV file: {0}")]
    Wav(#[from] hound::Error),
}

/// The recording at `path` as 16 kHz mono PCM: pre-skip removed, cut at
/// the last granule position, fillers concealed (RFC 7845 §4.1).
pub fn decode(path: &Path) -> Result<Vec<i16>, ExportError> {
    let (pre_skip, packets) = read_packets(path)?;
    let ratio = (GRANULE_RATE / SAMPLE_RATE) as usize;
    let mut decoder = Decoder::new()?;
    let mut pcm = Vec::new();
    let mut end = None;
    for (data, granule) in packets {
        // A 1-byte code-0 packet is a zero-length frame: a lost one.
        let frame = if data.len() == 1 && data[0] & 0x3 == 0 {
            decoder.conceal()?
        } else {
            decoder.decode(&data)?
        };
        pcm.extend_from_slice(&frame);
        if granule.is_some() {
            end = granule;
        }
    }
    let skip = usize::from(pre_skip) / ratio;
    let len = end.map_or(pcm.len(), |g| (g as usize) / ratio);
    pcm.truncate(len.min(pcm.len()));
    Ok(pcm.split_off(skip.min(pcm.len())))
}

/// Writes the recording at `path` as a 16 kHz mono 16-bit WAV file at
/// `out`; returns the samples written.
pub fn to_wav(path: &Path, out: &Path) -> Result<usize, ExportError> {
    let pcm = decode(path)?;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(out, spec)?;
    for s in &pcm {
        w.write_sample(*s)?;
    }
    w.finalize()?;
    Ok(pcm.len())
}
