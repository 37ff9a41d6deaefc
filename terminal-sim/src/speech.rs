//! A deterministic speech-like test signal, so load tests send real Opus
//! encodings of something voice-shaped without shipping recordings.
//!
//! A glottal pulse train (pitch gliding between 90 and 220 Hz) through
//! three formant resonators whose vowel changes every 150-300 ms, under a
//! syllable-rate (~4 Hz) envelope with pauses, plus a little noise for
//! fricatives.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use ptt_codec::audio::SAMPLE_RATE;

/// Vowel formants (F1, F2, F3) in Hz: a, e, i, o, u.
const VOWELS: [[f32; 3]; 5] = [
    [730.0, 1090.0, 2440.0],
    [530.0, 1840.0, 2480.0],
    [270.0, 2290.0, 3010.0],
    [570.0, 840.0, 2410.0],
    [300.0, 870.0, 2240.0],
];

/// A two-pole resonator.
#[derive(Debug, Clone, Copy, Default)]
struct Resonator {
    a1: f32,
    a2: f32,
    gain: f32,
    y1: f32,
    y2: f32,
}

impl Resonator {
    fn tune(&mut self, freq: f32, bandwidth: f32) {
        let fs = SAMPLE_RATE as f32;
        let r = (-std::f32::consts::PI * bandwidth / fs).exp();
        self.a1 = 2.0 * r * (2.0 * std::f32::consts::PI * freq / fs).cos();
        self.a2 = -r * r;
        self.gain = 1.0 - r;
    }

    fn step(&mut self, x: f32) -> f32 {
        let y = self.gain * x + self.a1 * self.y1 + self.a2 * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// The generator.
#[derive(Debug)]
pub struct Speech {
    rng: StdRng,
    t: u64,
    phase: f32,
    pitch: f32,
    pitch_target: f32,
    formants: [Resonator; 3],
    vowel_left: u32,
    syllable_left: u32,
    syllable_len: u32,
    pause: bool,
}

impl Speech {
    /// A generator; the same seed gives the same signal.
    pub fn new(seed: u64) -> Self {
        let mut s = Self {
            rng: StdRng::seed_from_u64(seed),
            t: 0,
            phase: 0.0,
            pitch: 140.0,
            pitch_target: 140.0,
            formants: [Resonator::default(); 3],
            vowel_left: 0,
            syllable_left: 0,
            syllable_len: 1,
            pause: false,
        };
        s.next_vowel();
        s
    }

    fn next_vowel(&mut self) {
        let v = VOWELS[self.rng.gen_range(0..VOWELS.len())];
        for (r, (f, bw)) in self
            .formants
            .iter_mut()
            .zip(v.iter().zip([80.0, 100.0, 150.0]))
        {
            r.tune(*f, bw);
        }
        self.vowel_left = self
            .rng
            .gen_range(SAMPLE_RATE * 15 / 100..SAMPLE_RATE * 30 / 100);
        self.pitch_target = self.rng.gen_range(90.0..220.0);
    }

    fn next_syllable(&mut self) {
        self.pause = self.rng.gen_bool(0.15);
        self.syllable_len = self.rng.gen_range(SAMPLE_RATE / 6..SAMPLE_RATE / 3);
        self.syllable_left = self.syllable_len;
    }

    /// Fills `out` with the next samples (16 kHz mono).
    pub fn next_frame(&mut self, out: &mut [i16]) {
        let fs = SAMPLE_RATE as f32;
        for sample in out.iter_mut() {
            if self.vowel_left == 0 {
                self.next_vowel();
            }
            if self.syllable_left == 0 {
                self.next_syllable();
            }
            self.vowel_left -= 1;
            self.syllable_left -= 1;
            self.t += 1;
            self.pitch += (self.pitch_target - self.pitch) * 0.0005;
            self.phase += self.pitch / fs;
            // Glottal pulse: a short decaying spike once per pitch period.
            let excitation = if self.phase >= 1.0 {
                self.phase -= 1.0;
                1.0
            } else {
                0.0
            };
            let noise: f32 = self.rng.gen_range(-1.0..1.0);
            let voiced: f32 = self
                .formants
                .iter_mut()
                .map(|r| r.step(excitation * 40.0))
                .sum();
            // Raised-sine syllable envelope, silent in pauses.
            let pos = 1.0 - self.syllable_left as f32 / self.syllable_len as f32;
            let env = if self.pause {
                0.0
            } else {
                (std::f32::consts::PI * pos).sin().powf(0.7)
            };
            let fricative = if pos > 0.85 {
                0.08 * noise
            } else {
                0.01 * noise
            };
            let v = (voiced * env + fricative * env) * 9000.0;
            *sample = v.clamp(-28_000.0, 28_000.0) as i16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptt_codec::audio::{Decoder, Encoder, EncoderConfig, FRAME_SAMPLES};

    fn seconds(seed: u64, s: usize) -> Vec<i16> {
        let mut g = Speech::new(seed);
        let mut out = vec![0i16; FRAME_SAMPLES * 50 * s];
        for f in out.chunks_mut(FRAME_SAMPLES) {
            g.next_frame(f);
        }
        out
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn is_audible_not_clipping_and_deterministic() {
        let a = seconds(7, 2);
        assert!(rms(&a) > 300.0, "rms {}", rms(&a));
        assert!(a.iter().all(|s| s.unsigned_abs() <= 28_000));
        assert_eq!(a, seconds(7, 2));
        assert_ne!(a, seconds(8, 2));
        // It has pauses and syllables: the 20 ms energy varies a lot.
        let frames: Vec<f64> = a.chunks(FRAME_SAMPLES).map(rms).collect();
        let loud = frames.iter().filter(|e| **e > 200.0).count();
        assert!(
            loud > 10 && loud < frames.len(),
            "{loud} of {} frames loud",
            frames.len()
        );
    }

    #[test]
    fn survives_an_opus_round_trip() {
        let pcm = seconds(3, 2);
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let mut dec = Decoder::new().unwrap();
        let out: Vec<i16> = pcm
            .chunks(FRAME_SAMPLES)
            .flat_map(|f| dec.decode(&enc.encode(f).unwrap()).unwrap())
            .collect();
        let (a, b) = (rms(&pcm[1600..]), rms(&out[1600..]));
        assert!(b > a * 0.4 && b < a * 2.5, "rms in {a}, out {b}");
    }
}
