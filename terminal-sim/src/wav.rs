//! WAV files: reading talk audio for `--audio`, writing what listeners heard.

use std::path::Path;

use anyhow::{bail, Context};
use ptt_codec::audio::SAMPLE_RATE;

/// Reads a 16-bit PCM WAV as 16 kHz mono: stereo is mixed down, other rates
/// are resampled by linear interpolation.
pub fn read_mono_16k(path: &Path) -> anyhow::Result<Vec<i16>> {
    let mut reader =
        hound::WavReader::open(path).with_context(|| format!("opening {}", path.display()))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        bail!("{}: only 16-bit PCM WAV is supported", path.display());
    }
    let channels = usize::from(spec.channels.max(1));
    let samples: Vec<i16> = reader.samples::<i16>().collect::<Result<_, _>>()?;
    let mono: Vec<i16> = samples
        .chunks(channels)
        .map(|c| (c.iter().map(|s| i32::from(*s)).sum::<i32>() / c.len() as i32) as i16)
        .collect();
    if spec.sample_rate == SAMPLE_RATE || mono.is_empty() {
        return Ok(mono);
    }
    let ratio = f64::from(spec.sample_rate) / f64::from(SAMPLE_RATE);
    let n = (mono.len() as f64 / ratio) as usize;
    Ok((0..n)
        .map(|i| {
            let x = i as f64 * ratio;
            let j = x as usize;
            let frac = x - j as f64;
            let a = f64::from(mono[j.min(mono.len() - 1)]);
            let b = f64::from(mono[(j + 1).min(mono.len() - 1)]);
            (a + (b - a) * frac) as i16
        })
        .collect())
}

/// Writes 16 kHz mono 16-bit WAV.
pub struct WavWriter {
    inner: hound::WavWriter<std::io::BufWriter<std::fs::File>>,
}

impl std::fmt::Debug for WavWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavWriter")
            .field("samples", &self.inner.len())
            .finish()
    }
}

impl WavWriter {
    /// Creates (or truncates) the file.
    pub fn create(path: &Path) -> anyhow::Result<WavWriter> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let inner = hound::WavWriter::create(path, spec)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(WavWriter { inner })
    }

    /// Appends samples.
    pub fn write(&mut self, samples: &[i16]) -> anyhow::Result<()> {
        for s in samples {
            self.inner.write_sample(*s)?;
        }
        Ok(())
    }

    /// Finishes the header and closes the file.
    pub fn finish(self) -> anyhow::Result<()> {
        Ok(self.inner.finalize()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("ptt-wav-{}-{name}", std::process::id()))
    }

    #[test]
    fn round_trips_and_converts() {
        let path = temp("mono.wav");
        let mut w = WavWriter::create(&path).unwrap();
        let samples: Vec<i16> = (0..1600).map(|i| (i * 7) as i16).collect();
        w.write(&samples).unwrap();
        w.finish().unwrap();
        assert_eq!(read_mono_16k(&path).unwrap(), samples);

        // 8 kHz stereo: mixed down and upsampled to twice as many samples.
        let path8 = temp("stereo8k.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path8, spec).unwrap();
        for i in 0..800 {
            w.write_sample(i as i16).unwrap();
            w.write_sample(i as i16 + 2).unwrap();
        }
        w.finalize().unwrap();
        let got = read_mono_16k(&path8).unwrap();
        assert_eq!(got.len(), 1600);
        assert_eq!(got[0], 1);
        assert_eq!(got[2], 2);

        let bad = temp("bad.wav");
        std::fs::write(&bad, b"not a wav").unwrap();
        assert!(read_mono_16k(&bad).is_err());
        for p in [path, path8, bad] {
            let _ = std::fs::remove_file(p);
        }
    }
}
