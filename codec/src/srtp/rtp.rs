//! The RTP header (RFC 3550 §5.1) and its header extension (RFC 8285).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           timestamp                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                             SSRC                              |
//! +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! |                   CSRC list (CC x 32 bits)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      profile (16 bits)        |   length in 32-bit words      |  if X
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  extension data (length x 32 bits)            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Everything up to the end of the extension is the header: SRTP leaves it
//! in clear and authenticates it (the AEAD's associated data).

use std::ops::Range;

use super::Error;

/// RTP version 2, the only one.
pub const VERSION: u8 = 2;

/// Bytes of the fixed header, before CSRCs and extension.
pub const FIXED_LEN: usize = 12;

/// The most CSRCs a header can list (4-bit count).
pub const MAX_CSRC: usize = 15;

/// Extension profile of RFC 8285's one-byte header form.
pub const ONE_BYTE_PROFILE: u16 = 0xbede;

/// Extension profiles `0x1000..=0x100f` are RFC 8285's two-byte form (the
/// low 4 bits are application bits).
pub const TWO_BYTE_PROFILE: u16 = 0x1000;

/// A parsed RTP header. Parsing checks only that the header is version 2 and
/// lies wholly inside the packet; it never reads past the slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The P bit: the payload ends in padding whose length is its last byte.
    pub padding: bool,
    /// The M bit (for voice: the first packet of a talkspurt).
    pub marker: bool,
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Sequence number, +1 per packet, wrapping.
    pub sequence: u16,
    /// Media clock of the first sample.
    pub timestamp: u32,
    /// The sending stream.
    pub ssrc: u32,
    /// Contributing sources listed (0..=15); read them with
    /// [`csrcs`](Header::csrcs).
    pub csrc_count: u8,
    /// The header extension, if the X bit is set.
    pub extension: Option<Extension>,
    /// Bytes of the whole header: fixed part, CSRCs and extension.
    pub len: usize,
}

/// Where a header extension lies in its packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The 16-bit profile ([`ONE_BYTE_PROFILE`], a two-byte profile, or
    /// anything else, which RFC 3550 leaves to the profile's definer).
    pub profile: u16,
    /// The extension data (after the 4-byte extension header) in the packet.
    pub data: Range<usize>,
}

impl Header {
    /// Parses the header at the start of `packet`.
    ///
    /// [`Error::Truncated`] if the packet ends inside the header,
    /// [`Error::NotRtp`] if the version is not 2.
    pub fn parse(packet: &[u8]) -> Result<Header, Error> {
        let fixed: &[u8; FIXED_LEN] = packet
            .get(..FIXED_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(Error::Truncated)?;
        if fixed[0] >> 6 != VERSION {
            return Err(Error::NotRtp);
        }
        let csrc_count = fixed[0] & 0x0f;
        let mut len = FIXED_LEN + 4 * usize::from(csrc_count);
        if packet.len() < len {
            return Err(Error::Truncated);
        }
        let extension = if fixed[0] & 0x10 != 0 {
            let head = packet.get(len..len + 4).ok_or(Error::Truncated)?;
            let profile = u16::from_be_bytes([head[0], head[1]]);
            let words = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let start = len + 4;
            len = start + 4 * words;
            if packet.len() < len {
                return Err(Error::Truncated);
            }
            Some(Extension {
                profile,
                data: start..len,
            })
        } else {
            None
        };
        Ok(Header {
            padding: fixed[0] & 0x20 != 0,
            marker: fixed[1] & 0x80 != 0,
            payload_type: fixed[1] & 0x7f,
            sequence: u16::from_be_bytes([fixed[2], fixed[3]]),
            timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
            ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
            csrc_count,
            extension,
            len,
        })
    }

    /// The CSRCs of `packet`, the packet this header was parsed from.
    pub fn csrcs<'a>(&self, packet: &'a [u8]) -> impl Iterator<Item = u32> + 'a {
        let end = (FIXED_LEN + 4 * usize::from(self.csrc_count)).min(packet.len());
        packet
            .get(FIXED_LEN..end)
            .unwrap_or_default()
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// The fields of an RTP header to write: no padding (an Opus packet needs
/// none, and SRTP's AEAD does not either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Builder<'a> {
    /// The M bit.
    pub marker: bool,
    /// Payload type (7 bits; the high bit is ignored).
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// The sending stream.
    pub ssrc: u32,
    /// At most [`MAX_CSRC`] contributing sources.
    pub csrcs: &'a [u32],
    /// Extension profile and data; the data's length must be a multiple of 4
    /// and at most 65,535 words.
    pub extension: Option<(u16, &'a [u8])>,
}

impl Builder<'_> {
    /// Bytes of the header this builder writes.
    pub fn header_len(&self) -> usize {
        FIXED_LEN + 4 * self.csrcs.len() + self.extension.map_or(0, |(_, data)| 4 + data.len())
    }

    /// Writes header and `payload` to the start of `out`; returns the bytes
    /// written.
    ///
    /// [`Error::BufferTooSmall`] if `out` cannot hold them,
    /// [`Error::Malformed`] if there are too many CSRCs or the extension data
    /// is not whole 32-bit words.
    pub fn write(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        if self.csrcs.len() > MAX_CSRC {
            return Err(Error::Malformed);
        }
        if let Some((_, data)) = self.extension {
            if data.len() % 4 != 0 || data.len() / 4 > usize::from(u16::MAX) {
                return Err(Error::Malformed);
            }
        }
        let header_len = self.header_len();
        let total = header_len + payload.len();
        let out = out.get_mut(..total).ok_or(Error::BufferTooSmall)?;
        // The count fits 4 bits: checked against MAX_CSRC above.
        out[0] =
            (VERSION << 6) | (u8::from(self.extension.is_some()) << 4) | self.csrcs.len() as u8;
        out[1] = (u8::from(self.marker) << 7) | (self.payload_type & 0x7f);
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let mut at = FIXED_LEN;
        for csrc in self.csrcs {
            out[at..at + 4].copy_from_slice(&csrc.to_be_bytes());
            at += 4;
        }
        if let Some((profile, data)) = self.extension {
            out[at..at + 2].copy_from_slice(&profile.to_be_bytes());
            // At most u16::MAX words: checked above.
            let words = (data.len() / 4) as u16;
            out[at + 2..at + 4].copy_from_slice(&words.to_be_bytes());
            out[at + 4..at + 4 + data.len()].copy_from_slice(data);
            at += 4 + data.len();
        }
        out[at..total].copy_from_slice(payload);
        Ok(total)
    }
}

/// One element of an RFC 8285 header extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element<'a> {
    /// Local identifier (1..=14 in the one-byte form, 1..=255 in the
    /// two-byte form).
    pub id: u8,
    /// The element's data.
    pub data: &'a [u8],
}

/// Iterates over the elements of an RFC 8285 extension; see [`elements`].
#[derive(Debug, Clone)]
pub struct Elements<'a> {
    data: &'a [u8],
    two_byte: bool,
}

/// The elements of an extension with `profile` and `data` (one-byte form
/// for [`ONE_BYTE_PROFILE`], two-byte form for `0x1000..=0x100f`).
///
/// Any other profile yields no element (RFC 3550 extensions of other
/// profiles are opaque). An element running past the data yields
/// `Err(Error::Malformed)` once, then the iteration ends.
pub fn elements(profile: u16, data: &[u8]) -> Elements<'_> {
    let (data, two_byte) = match profile {
        ONE_BYTE_PROFILE => (data, false),
        p if p & 0xfff0 == TWO_BYTE_PROFILE => (data, true),
        _ => (&data[..0], false),
    };
    Elements { data, two_byte }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<Element<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&first, rest) = self.data.split_first()?;
            if first == 0 {
                // Padding byte between elements (both forms).
                self.data = rest;
                continue;
            }
            let (id, len, rest) = if self.two_byte {
                let Some((&len, rest)) = rest.split_first() else {
                    self.data = &[];
                    return Some(Err(Error::Malformed));
                };
                (first, usize::from(len), rest)
            } else {
                let id = first >> 4;
                if id == 15 {
                    // RFC 8285 §4.2: id 15 stops processing.
                    self.data = &[];
                    return None;
                }
                (id, usize::from(first & 0x0f) + 1, rest)
            };
            let Some(data) = rest.get(..len) else {
                self.data = &[];
                return Some(Err(Error::Malformed));
            };
            self.data = &rest[len..];
            return Some(Ok(Element { id, data }));
        }
    }
}

/// Writes `elements` in the one-byte form (RFC 8285 §4.2), zero-padded to a
/// whole number of 32-bit words, to the start of `out`; returns the bytes
/// written, ready for [`Builder::extension`] with [`ONE_BYTE_PROFILE`].
///
/// [`Error::Malformed`] if an id is outside 1..=14 or data is empty or
/// longer than 16 bytes; [`Error::BufferTooSmall`] if `out` is too short.
pub fn write_one_byte(elements: &[Element<'_>], out: &mut [u8]) -> Result<usize, Error> {
    let mut at = 0;
    for element in elements {
        let len = element.data.len();
        if !(1..=14).contains(&element.id) || !(1..=16).contains(&len) {
            return Err(Error::Malformed);
        }
        let slot = out.get_mut(at..at + 1 + len).ok_or(Error::BufferTooSmall)?;
        // len - 1 fits 4 bits: 1..=16 checked above.
        slot[0] = (element.id << 4) | (len - 1) as u8;
        slot[1..].copy_from_slice(element.data);
        at += 1 + len;
    }
    let padded = at.next_multiple_of(4);
    out.get_mut(at..padded)
        .ok_or(Error::BufferTooSmall)?
        .fill(0);
    Ok(padded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_with_csrcs_and_extension_round_trips() {
        let mut ext = [0u8; 16];
        let ext_len = write_one_byte(
            &[
                Element {
                    id: 1,
                    data: &[0xaa, 0xbb, 0xcc, 0xdd],
                },
                Element { id: 2, data: &[7] },
            ],
            &mut ext,
        )
        .expect("room");
        assert_eq!(ext_len, 8);
        let builder = Builder {
            marker: true,
            payload_type: 111,
            sequence: 0xfffe,
            timestamp: 0x0102_0304,
            ssrc: 0xdead_beef,
            csrcs: &[1001, 42],
            extension: Some((ONE_BYTE_PROFILE, &ext[..ext_len])),
        };
        let mut packet = [0u8; 64];
        let len = builder.write(b"opus", &mut packet).expect("room");
        assert_eq!(len, builder.header_len() + 4);
        let header = Header::parse(&packet[..len]).expect("valid");
        assert!(header.marker && !header.padding);
        assert_eq!(header.payload_type, 111);
        assert_eq!(header.sequence, 0xfffe);
        assert_eq!(header.timestamp, 0x0102_0304);
        assert_eq!(header.ssrc, 0xdead_beef);
        assert_eq!(header.csrcs(&packet[..len]).collect::<Vec<_>>(), [1001, 42]);
        assert_eq!(header.len, 12 + 8 + 4 + 8);
        assert_eq!(&packet[header.len..len], b"opus");
        let ext = header.extension.expect("X bit");
        assert_eq!(ext.profile, ONE_BYTE_PROFILE);
        let found: Vec<_> = elements(ext.profile, &packet[ext.data])
            .collect::<Result<_, _>>()
            .expect("well formed");
        assert_eq!(
            found,
            [
                Element {
                    id: 1,
                    data: &[0xaa, 0xbb, 0xcc, 0xdd]
                },
                Element { id: 2, data: &[7] },
            ]
        );
    }

    #[test]
    fn every_truncation_of_a_header_is_truncated() {
        let builder = Builder {
            marker: false,
            payload_type: 96,
            sequence: 1,
            timestamp: 2,
            ssrc: 3,
            csrcs: &[4, 5, 6],
            extension: Some((0x1234, &[9; 12])),
        };
        let mut packet = [0u8; 64];
        let len = builder.write(&[], &mut packet).expect("room");
        for cut in 0..len {
            assert_eq!(
                Header::parse(&packet[..cut]),
                Err(Error::Truncated),
                "cut {cut}"
            );
        }
        assert_eq!(Header::parse(&packet[..len]).map(|h| h.len), Ok(len));
    }

    #[test]
    fn other_versions_are_not_rtp() {
        for version in [0u8, 1, 3] {
            let mut packet = [0u8; 12];
            packet[0] = version << 6;
            assert_eq!(Header::parse(&packet), Err(Error::NotRtp));
        }
    }

    #[test]
    fn two_byte_elements_padding_and_stop() {
        let data = [0, 0, 5, 2, 0xab, 0xcd, 0, 9, 0, 0];
        let found: Vec<_> = elements(0x1003, &data).collect();
        assert_eq!(
            found,
            [
                Ok(Element {
                    id: 5,
                    data: &[0xab, 0xcd]
                }),
                Ok(Element { id: 9, data: &[] }),
            ]
        );
        // One-byte id 15 ends processing; a short element is malformed once.
        assert_eq!(elements(ONE_BYTE_PROFILE, &[0xf0, 0x10, 1, 2]).count(), 0);
        let short: Vec<_> = elements(ONE_BYTE_PROFILE, &[0x13, 1, 2]).collect();
        assert_eq!(short, [Err(Error::Malformed)]);
        let short: Vec<_> = elements(0x1000, &[7]).collect();
        assert_eq!(short, [Err(Error::Malformed)]);
        // Opaque profiles have no elements.
        assert_eq!(elements(0x0001, &[0x10, 1, 0, 0]).count(), 0);
    }

    #[test]
    fn builder_refuses_what_the_header_cannot_say() {
        let mut out = [0u8; 128];
        let base = Builder {
            marker: false,
            payload_type: 0,
            sequence: 0,
            timestamp: 0,
            ssrc: 0,
            csrcs: &[0; 16],
            extension: None,
        };
        assert_eq!(base.write(&[], &mut out), Err(Error::Malformed));
        let odd = Builder {
            csrcs: &[],
            extension: Some((ONE_BYTE_PROFILE, &[1, 2, 3])),
            ..base.clone()
        };
        assert_eq!(odd.write(&[], &mut out), Err(Error::Malformed));
        let fits = Builder { csrcs: &[], ..base };
        assert_eq!(
            fits.write(&[0; 4], &mut out[..15]),
            Err(Error::BufferTooSmall)
        );
        assert_eq!(
            write_one_byte(&[Element { id: 15, data: &[1] }], &mut out),
            Err(Error::Malformed)
        );
        assert_eq!(
            write_one_byte(
                &[Element {
                    id: 1,
                    data: &[0; 17]
                }],
                &mut out
            ),
            Err(Error::Malformed)
        );
        assert_eq!(
            write_one_byte(
                &[Element {
                    id: 1,
                    data: &[0; 4]
                }],
                &mut out[..6]
            ),
            Err(Error::BufferTooSmall)
        );
    }
}
