//! Randomness for the fuzzer: a seeded generator for making inputs, and a
//! reader that turns any byte string into structured values.
//!
//! Every case is a byte string. A target's generator makes it (usually a
//! valid encoding, then mutated); its check reads it, either as wire bytes
//! or, through [`Source`], as a sequence of operations and values. Because
//! the check depends on the bytes alone, a failure is reproduced and
//! shrunk by replaying bytes, whatever the target.

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and good enough to
/// drive a fuzzer; one per case, seeded from the run's seed and the case
/// number, so any case can be replayed alone.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The generator of case `case` of a run seeded with `seed` for
    /// target number `target`.
    pub fn for_case(seed: u64, target: u64, case: u64) -> Self {
        let mut r = Rng(seed ^ target.wrapping_mul(0xa076_1d64_78bd_642f));
        r.0 ^= r.next_u64() ^ case.wrapping_mul(0xe703_7ed1_a0b4_28db);
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; 0 when `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den < num
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// Random bytes of a random length below `max`, short lengths more
    /// likely (most structure lives in the first bytes).
    pub fn blob(&mut self, max: usize) -> Vec<u8> {
        let cap = match self.below(4) {
            0 => 16,
            1 => 64,
            2 => 256,
            _ => max,
        }
        .min(max);
        let n = self.below(cap + 1);
        self.bytes(n)
    }
}

/// Values that sit on boundaries: where off-by-one and overflow bugs live.
const INTERESTING_U8: [u8; 9] = [0, 1, 2, 0x3f, 0x40, 0x7f, 0x80, 0xfe, 0xff];

/// Mutates `data` in place 1 to `max_rounds` times: bit flips, boundary bytes,
/// inserted, deleted, duplicated or truncated ranges. Random bytes alone
/// rarely get past a frame header; mutating valid encodings does.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, max_rounds: usize) {
    let rounds = 1 + rng.below(max_rounds);
    for _ in 0..rounds {
        let len = data.len();
        match rng.below(12) {
            9 => {
                // Grow a length-prefixed field (a string, a body) by one
                // byte, its prefix with it: how limits are probed.
                let j = rng.below(len + 1);
                if let Some(i) = covering_u16(data, j) {
                    let v = u16::from_be_bytes([data[i], data[i + 1]]).saturating_add(1);
                    data[i..i + 2].copy_from_slice(&v.to_be_bytes());
                    data.insert(j, b"aZ0 \xff"[rng.below(5)]);
                }
            }
            10 if len > 0 => {
                // Shrink one: a byte out, its prefix down.
                let j = rng.below(len);
                if let Some(i) = covering_u16(data, j + 1) {
                    let v = u16::from_be_bytes([data[i], data[i + 1]]);
                    if v > 0 && j >= i + 2 {
                        data[i..i + 2].copy_from_slice(&(v - 1).to_be_bytes());
                        data.remove(j);
                    }
                }
            }
            11 if len > 0 => {
                // A count or a code one up or down.
                let i = rng.below(len);
                data[i] = if rng.chance(1, 2) {
                    data[i].wrapping_add(1)
                } else {
                    data[i].wrapping_sub(1)
                };
            }
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING_U8[rng.below(INTERESTING_U8.len())];
            }
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next_u64() as u8;
            }
            3 => {
                let i = rng.below(len + 1);
                let extra = rng.blob(16);
                data.splice(i..i, extra);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                data.drain(i..i + n);
            }
            5 => data.truncate(rng.below(len + 1)),
            6 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let copy = data[i..i + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, copy);
            }
            7 if len >= 2 => {
                // A big-endian u16 (a length or a count) set to a boundary.
                let i = rng.below(len - 1);
                let v: u16 = match rng.below(6) {
                    0 => 0,
                    1 => 1,
                    2 => u16::MAX,
                    3 => 16 * 1024,
                    4 => 16 * 1024 + 1,
                    _ => u16::from_be_bytes([data[i], data[i + 1]]).wrapping_add(1),
                };
                data[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
            _ if len >= 4 => {
                // A big-endian u32 (an id) set to 0 or all ones.
                let i = rng.below(len - 3);
                let v: u32 = if rng.chance(1, 2) { 0 } else { u32::MAX };
                data[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            _ => data.push(rng.next_u64() as u8),
        }
    }
}

/// The innermost big-endian u16 before position `j` that, read as a
/// length, covers `j`: the prefix of the length-prefixed field `j` is in.
fn covering_u16(data: &[u8], j: usize) -> Option<usize> {
    (0..j.saturating_sub(1)).rev().take(512).find(|&i| {
        let v = usize::from(u16::from_be_bytes([data[i], data[i + 1]]));
        i + 2 + v >= j && i + 2 + v <= data.len()
    })
}

/// Reads values out of a byte string, like `arbitrary::Unstructured`: once
/// the bytes run out every read returns zero, so any string is a valid
/// description of a value or an operation sequence.
#[derive(Debug)]
pub struct Source<'a> {
    rest: &'a [u8],
}

impl<'a> Source<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// One byte, 0 once exhausted.
    pub fn u8(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((b, tail)) => {
                self.rest = tail;
                *b
            }
            None => 0,
        }
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// A big-endian u64.
    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    /// A boolean.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// Uniform-ish in `lo..=hi`.
    pub fn range_u32(&mut self, lo: u32, hi: u32) -> u32 {
        debug_assert!(lo <= hi);
        let span = u64::from(hi - lo) + 1;
        lo + (u64::from(self.u32()) % span) as u32
    }

    /// In `0..n`; 0 when `n` is 0. Reads one byte for small `n`, so that
    /// shrinking and mutation act on one byte per choice.
    pub fn below(&mut self, n: usize) -> usize {
        match n {
            0 => 0,
            1..=256 => usize::from(self.u8()) % n,
            _ => self.u32() as usize % n,
        }
    }

    /// One of `items`, which must not be empty.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// A non-zero u32, small values likely (ids that collide), boundary
    /// values sometimes.
    pub fn id_u32(&mut self) -> u32 {
        match self.u8() % 8 {
            0 => u32::MAX,
            1 => self.u32().max(1),
            _ => 1 + u32::from(self.u8() % 16),
        }
    }

    /// A u64 near the boundaries or anywhere.
    pub fn any_u64(&mut self) -> u64 {
        match self.u8() % 6 {
            0 => 0,
            1 => u64::MAX,
            2 => u64::from(self.u8()),
            _ => self.u64(),
        }
    }

    /// A UTF-8 string of at most `max` bytes, with characters of one to
    /// four bytes so that limits fall inside characters; often exactly at
    /// or near `max` bytes.
    pub fn string(&mut self, max: usize) -> String {
        const CHARS: [char; 10] = ['a', 'Z', '0', ' ', '\n', 'é', 'ß', '张', '所', '😀'];
        let target = match self.u8() % 4 {
            0 => 0,
            1 => self.below(17),
            2 => max.saturating_sub(self.below(5)),
            _ => self.below(max + 1),
        }
        .min(max);
        let mut s = String::with_capacity(target);
        // A repeated character keeps long strings cheap to describe.
        let fill = self.pick(&CHARS);
        while s.len() < target {
            let c = if self.is_empty() {
                fill
            } else {
                self.pick(&CHARS)
            };
            if s.len() + c.len_utf8() > target {
                // Pad with ASCII to land exactly on the target length.
                s.push('x');
            } else {
                s.push(c);
            }
        }
        s
    }
}
