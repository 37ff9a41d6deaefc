//! One burst's Ogg Opus file: headers, audio pages, the last page marked
//! end of stream; and reading one back.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ogg::{PacketReader, PacketWriteEndInfo, PacketWriter};
use ptt_gateway_core::recording::{self, Packet};

use super::Start;

/// Audio packets per Ogg page: a page a second of 20 ms frames, so a crash
/// loses at most the last second of a burst being written, and a page
/// stays far below the 255 segments one can hold.
const PAGE_PACKETS: u32 = 50;

/// The input rate `OpusHead` names: terminals encode 16 kHz wideband
/// (`ptt_codec::audio::SAMPLE_RATE`). Informational: players decode at
/// 48 kHz or what they choose.
const INPUT_RATE: u32 = 16_000;

/// Vendor string of the `OpusTags` header.
const VENDOR: &str = concat!(
    "ptt-gateway ",
    env!("CARGO_PKG_VERSION"),
    " (relayed, not re-encoded)"
);

/// The relative path of a burst's file: `YYYY/MM/DD/g<group>-t<talker>-
/// <start ms>-b<burst>.opus`, the date in UTC.
pub fn date_path(start: &Start) -> String {
    let (y, m, d) = civil_from_days((start.started_ms / 86_400_000) as i64);
    format!(
        "{y:04}/{m:02}/{d:02}/g{}-t{}-{}-b{}.opus",
        start.group.0, start.terminal.0, start.started_ms, start.burst
    )
}

/// Year, month, day of the day `days` after 1970-01-01 (proleptic
/// Gregorian; H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days from 1970-01-01 to `y-m-d` (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `ms` (Unix) as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn utc(ms: u64) -> String {
    let (y, m, d) = civil_from_days((ms / 86_400_000) as i64);
    let in_day = ms % 86_400_000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// A time given on the command line: Unix ms, or a UTC date
/// `YYYY-MM-DD` with an optional `THH:MM[:SS]` and `Z`.
pub fn parse_time(text: &str) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|e| format!("{text}: {e}"));
    }
    let bad = || format!("{text}: expected Unix ms or YYYY-MM-DD[THH:MM[:SS]][Z] (UTC)");
    let t = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = t.split_once(['T', ' ']).unwrap_or((t, ""));
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
    let mut ymd = date.splitn(3, '-');
    let (y, m, d) = match (ymd.next(), ymd.next(), ymd.next()) {
        (Some(y), Some(m), Some(d)) => (num(y)?, num(m)?, num(d)?),
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return Err(bad());
    }
    let mut hms = [0u32; 3];
    if !time.is_empty() {
        for (i, part) in time.split(':').enumerate() {
            *hms.get_mut(i).ok_or_else(bad)? = num(part)?;
        }
        if hms[0] > 23 || hms[1] > 59 || hms[2] > 60 {
            return Err(bad());
        }
    }
    let days = days_from_civil(i64::from(y), m, d) as u64;
    let secs =
        days * 86_400 + u64::from(hms[0]) * 3600 + u64::from(hms[1]) * 60 + u64::from(hms[2]);
    Ok(secs * 1000)
}

/// A burst's file being written.
pub(super) struct BurstFile {
    writer: PacketWriter<'static, BufWriter<File>>,
    serial: u32,
    /// The last packet, held until the next one shows it is not the last
    /// (the last is written with end-of-stream).
    held: Option<Packet>,
    /// Audio packets on the page being filled.
    on_page: u32,
    /// Where it is.
    pub(super) path: PathBuf,
}

impl std::fmt::Debug for BurstFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BurstFile")
            .field("path", &self.path)
            .finish()
    }
}

impl BurstFile {
    /// Creates `dir/rel` (and its folders, private) with the two header
    /// pages (RFC 7845 §3: each header alone on its page).
    pub(super) fn create(dir: &Path, rel: &str, start: &Start) -> std::io::Result<BurstFile> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut writer = PacketWriter::new(BufWriter::new(file));
        let serial = rand::random::<u32>();
        writer.write_packet(
            recording::head(INPUT_RATE),
            serial,
            PacketWriteEndInfo::EndPage,
            0,
        )?;
        let comments = [
            format!("PTT_GROUP={}", start.group.0),
            format!("PTT_SPEAKER={}", start.terminal.0),
            format!("PTT_BURST={}", start.burst),
            format!("PTT_CLASS={}", start.class.code()),
            format!("PTT_STARTED_MS={}", start.started_ms),
        ];
        writer.write_packet(
            recording::tags(VENDOR, comments.iter().map(String::as_str)),
            serial,
            PacketWriteEndInfo::EndPage,
            0,
        )?;
        Ok(BurstFile {
            writer,
            serial,
            held: None,
            on_page: 0,
            path,
        })
    }

    /// Writes `packets` (all but the last, which is held).
    pub(super) fn write(&mut self, packets: impl Iterator<Item = Packet>) -> std::io::Result<()> {
        for p in packets {
            if let Some(prev) = self.held.replace(p) {
                self.on_page += 1;
                let end = if self.on_page >= PAGE_PACKETS {
                    self.on_page = 0;
                    PacketWriteEndInfo::EndPage
                } else {
                    PacketWriteEndInfo::NormalPacket
                };
                self.writer
                    .write_packet(prev.data.to_vec(), self.serial, end, prev.granule)?;
            }
        }
        Ok(())
    }

    /// Writes the held packet as the end of the stream and flushes; returns
    /// the file, not yet fsynced, and its size.
    pub(super) fn finish(mut self) -> std::io::Result<(File, u64)> {
        if let Some(last) = self.held.take() {
            self.writer.write_packet(
                last.data.to_vec(),
                self.serial,
                PacketWriteEndInfo::EndStream,
                last.granule,
            )?;
        }
        let mut buffered = self.writer.into_inner();
        buffered.flush()?;
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        let bytes = file.metadata()?.len();
        Ok((file, bytes))
    }
}

/// An audio packet read back, with the granule position of the page it
/// ends (`None` mid-page).
pub type ReadPacket = (Vec<u8>, Option<u64>);

/// The packets of an Ogg Opus file after its two headers, and the
/// `OpusHead` pre-skip. Call on a closed recording (for export, tests).
pub fn read_packets(path: &Path) -> std::io::Result<(u16, Vec<ReadPacket>)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut reader = PacketReader::new(std::io::BufReader::new(File::open(path)?));
    let read = |r: &mut PacketReader<_>| r.read_packet().map_err(std::io::Error::other);
    let head = read(&mut reader)?.ok_or_else(|| bad("no OpusHead"))?;
    if head.data.len() < 19 || &head.data[..8] != b"OpusHead" {
        return Err(bad("the first packet is not OpusHead"));
    }
    let pre_skip = u16::from_le_bytes([head.data[10], head.data[11]]);
    let tags = read(&mut reader)?.ok_or_else(|| bad("no OpusTags"))?;
    if tags.data.len() < 8 || &tags.data[..8] != b"OpusTags" {
        return Err(bad("the second packet is not OpusTags"));
    }
    let mut packets = Vec::new();
    while let Some(p) = read(&mut reader)? {
        let granule = p.last_in_page().then(|| p.absgp_page());
        packets.push((p.data, granule));
    }
    Ok((pre_skip, packets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_utc() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        // 2024-02-29, a leap day; 2026-11-29.
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_786), (2026, 11, 29));
        for days in [0, 59, 19_782, 20_786, 40_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(
            utc(20_786 * 86_400_000 + 3_723_004),
            "2026-11-29T01:02:03.004Z"
        );
        let day = 20_786 * 86_400_000;
        assert_eq!(parse_time("2026-11-29"), Ok(day));
        assert_eq!(parse_time("2026-11-29T01:02:03Z"), Ok(day + 3_723_000));
        assert_eq!(parse_time("2026-11-29T01:02"), Ok(day + 3_720_000));
        assert_eq!(parse_time("1764000000000"), Ok(1_764_000_000_000));
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-11",
            "2026-11-29T25:00",
            "2026-11-29T1:2:3:4",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        let start = Start {
            group: ptt_codec::GroupId(7),
            terminal: ptt_codec::TerminalId(501),
            burst: 3,
            class: ptt_codec::Class::Normal,
            started_ms: 20_786 * 86_400_000 + 5,
        };
        assert_eq!(
            date_path(&start),
            format!("2026/11/29/g7-t501-{}-b3.opus", start.started_ms)
        );
    }
}
