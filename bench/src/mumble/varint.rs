//! Mumble's variable-length integers (`PacketDataStream`), used in the UDP
//! voice packet: 1 to 9 bytes, the prefix bits of the first byte telling
//! the length, big endian; two prefixes encode negative numbers.

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ends inside the number.
    #[error("input ends inside a varint")]
    Truncated,
    /// A negative prefix inside a negative prefix (Mumble's own reader
    /// recurses; one level is all its writer produces).
    #[error("nested negative varint")]
    Nested,
}

/// Appends `v` in the shortest form (Mumble's writer for non-negative
/// numbers).
pub fn put(v: u64, out: &mut Vec<u8>) {
    match v {
        0..0x80 => out.push(v as u8),
        0x80..0x4000 => out.extend_from_slice(&[(v >> 8) as u8 | 0x80, v as u8]),
        0x4000..0x20_0000 => {
            out.extend_from_slice(&[(v >> 16) as u8 | 0xC0, (v >> 8) as u8, v as u8]);
        }
        0x20_0000..0x1000_0000 => out.extend_from_slice(&[
            (v >> 24) as u8 | 0xE0,
            (v >> 16) as u8,
            (v >> 8) as u8,
            v as u8,
        ]),
        0x1000_0000..0x1_0000_0000 => {
            out.push(0xF0);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
        _ => {
            out.push(0xF4);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// Reads one varint from the front of `input`: the value (negative forms
/// as their two's complement) and the bytes it took.
pub fn get(input: &[u8]) -> Result<(u64, usize), Error> {
    get_inner(input, false)
}

fn get_inner(input: &[u8], nested: bool) -> Result<(u64, usize), Error> {
    let first = *input.first().ok_or(Error::Truncated)?;
    let bytes = |n: usize| -> Result<u64, Error> {
        let b = input.get(1..1 + n).ok_or(Error::Truncated)?;
        Ok(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
    };
    Ok(match first {
        0x00..=0x7F => (u64::from(first), 1),
        0x80..=0xBF => ((u64::from(first & 0x3F) << 8) | bytes(1)?, 2),
        0xC0..=0xDF => ((u64::from(first & 0x1F) << 16) | bytes(2)?, 3),
        0xE0..=0xEF => ((u64::from(first & 0x0F) << 24) | bytes(3)?, 4),
        0xF0..=0xF3 => (bytes(4)?, 5),
        0xF4..=0xF7 => (bytes(8)?, 9),
        0xF8..=0xFB => {
            if nested {
                return Err(Error::Nested);
            }
            let (v, n) = get_inner(&input[1..], true)?;
            (!v, n + 1)
        }
        0xFC..=0xFF => (!u64::from(first & 0x03), 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_every_boundary() {
        let mut values = vec![0u64, 1, u64::MAX, u64::MAX - 1];
        for shift in [7u32, 14, 21, 28, 32, 40, 63] {
            let b = 1u64 << shift;
            values.extend([b - 1, b, b + 1]);
        }
        for v in values {
            let mut out = Vec::new();
            put(v, &mut out);
            assert_eq!(get(&out), Ok((v, out.len())), "{v:#x}");
            // Every shorter prefix is truncated, never a panic or a value.
            for cut in 0..out.len() {
                assert_eq!(get(&out[..cut]), Err(Error::Truncated), "{v:#x} cut {cut}");
            }
        }
    }

    #[test]
    fn lengths_are_mumbles() {
        for (v, len) in [
            (0x7F, 1),
            (0x3FFF, 2),
            (0x1F_FFFF, 3),
            (0xFFF_FFFF, 4),
            (0xFFFF_FFFF, 5),
            (1 << 32, 9),
        ] {
            let mut out = Vec::new();
            put(v, &mut out);
            assert_eq!(out.len(), len, "{v:#x}");
        }
    }

    #[test]
    fn negative_forms() {
        assert_eq!(get(&[0xFC]), Ok((!0u64, 1)));
        assert_eq!(get(&[0xFF]), Ok((!3u64, 1)));
        assert_eq!(get(&[0xF8, 0x05]), Ok((!5u64, 2)));
        assert_eq!(get(&[0xF8, 0xF8, 0x05]), Err(Error::Nested));
        assert_eq!(get(&[0xF8]), Err(Error::Truncated));
    }

    #[test]
    fn hostile_input_never_panics() {
        // Every two-byte input and a pseudo-random sweep of longer ones.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let input = [a, b];
                if let Ok((_, n)) = get(&input) {
                    assert!(n <= input.len());
                }
            }
        }
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let input = x.to_le_bytes();
            let len = (x % 10) as usize;
            if let Ok((_, n)) = get(&input[..len.min(8)]) {
                assert!(n <= len.min(8));
            }
        }
    }
}
