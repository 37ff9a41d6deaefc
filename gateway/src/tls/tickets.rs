//! TLS session tickets every node of a cluster accepts: sealed with a
//! secret the nodes share through a file (`transport.ticket_key_file`),
//! rotated by editing that file.
//!
//! Without the file each gateway process seals tickets with random keys of
//! its own (rustls's ticketer), and a terminal whose node died makes a full
//! handshake on the next one. With it, the terminal resumes there as it
//! would on its own node: no certificate signature on the gateway, no
//! chain verification on the handset.
//!
//! # The file
//!
//! One secret per line, 64 hex digits (32 bytes), newest first; blank
//! lines and lines starting with `#` are ignored; at most [`MAX_KEYS`]
//! secrets. Tickets are sealed with the first and opened with any.
//! `ptt-gateway ticket-key new FILE` writes one; `ptt-gateway ticket-key
//! rotate FILE` puts a new one on top and keeps the previous one.
//!
//! Rotation: rotate the file, copy it to every node; each node rereads it
//! within [`RECHECK`] of its next handshake (it looks at the file's
//! modification time and size, not more often than that). Until every node
//! has the new file, a ticket sealed with the new secret fails on a node
//! still without it, and that terminal makes one full handshake: nothing
//! else is lost. Rotate at most once per ticket lifetime ([`LIFETIME_S`],
//! 12 h) so that the previous secret, kept one rotation, still opens every
//! ticket that has not expired.
//!
//! # The ticket
//!
//! `key id (8) | nonce (12) | AES-256-GCM(session state) | tag (16)`: the
//! key id (the first 8 bytes of SHA-256 over a label and the secret) picks
//! the secret to open with and is authenticated as associated data; the
//! nonce is random per ticket, as rustls's own ticketer does (a counter
//! would tell observers how many tickets a node issued).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};

use crate::metrics::Metrics;

/// Bytes of one secret: an AES-256 key.
pub const SECRET_LEN: usize = 32;

/// Most secrets a file may hold: the current one, the previous one, and
/// room for an operator who keeps one or two more while a rotation spreads.
/// More is a mistake (a file appended to instead of rotated) and refused.
pub const MAX_KEYS: usize = 4;

/// Seconds a ticket is valid: 12 hours, as rustls's own ticketer (its keys
/// rotate every 6 hours and the previous one is kept). A handset that was
/// off longer makes one full handshake.
pub const LIFETIME_S: u32 = 12 * 60 * 60;

/// How often, at most, the file's modification time and size are looked
/// at (on the handshake path, which issues tickets): a rotation reaches a
/// running node within this long of its next handshake, and a node with
/// thousands of handshakes a second makes one `stat` every 30 s.
pub const RECHECK: Duration = Duration::from_secs(30);

/// Bytes of a ticket's key id.
const KEY_ID_LEN: usize = 8;

/// Bytes of a ticket's nonce (AES-GCM's 96 bits).
const NONCE_LEN: usize = 12;

/// Largest ticket sealed or opened, bytes. A TLS 1.3 session state without
/// client certificates is under 300 bytes; refusing longer ones unopened
/// bounds what a forged ticket costs and narrows partitioning-oracle
/// attacks (rustls's ticketer bounds them by the longest it issued, which
/// a node cannot know of another node's tickets).
const MAX_TICKET: usize = 2048;

/// Domain separation of the key id: the id is a hash of the secret, and
/// must not be a hash anything else computes of it.
const KEY_ID_LABEL: &[u8] = b"ptt-gateway session ticket key id v1";

/// Why a ticket key file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It holds no secret.
    #[error("no ticket key in the file")]
    Empty,
    /// A line is not hexadecimal.
    #[error("line {line}: not hex")]
    NotHex {
        /// 1-based line number.
        line: usize,
    },
    /// A line is not [`SECRET_LEN`] bytes.
    #[error("line {line}: {bytes} bytes, not {SECRET_LEN}")]
    WrongLength {
        /// 1-based line number.
        line: usize,
        /// Its length.
        bytes: usize,
    },
    /// More than [`MAX_KEYS`] secrets.
    #[error("{count} ticket keys, at most {MAX_KEYS}: drop the oldest")]
    TooMany {
        /// Secrets found.
        count: usize,
    },
    /// The same secret twice: a rotation that did not make a new one.
    #[error("line {line}: the same key as an earlier line")]
    Duplicate {
        /// 1-based line number.
        line: usize,
    },
    /// The system's random source failed.
    #[error("no randomness for a new ticket key")]
    Random,
}

/// One secret, ready to seal and open.
struct Key {
    id: [u8; KEY_ID_LEN],
    aead: LessSafeKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The id only: the secret stays out of logs.
        f.debug_struct("Key")
            .field("id", &hex::encode(self.id))
            .finish()
    }
}

impl Key {
    fn new(secret: &[u8; SECRET_LEN]) -> Key {
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        hash.update(KEY_ID_LABEL);
        hash.update(secret);
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&hash.finish().as_ref()[..KEY_ID_LEN]);
        let unbound =
            UnboundKey::new(&AES_256_GCM, secret).expect("a 32-byte secret is an AES-256 key");
        Key {
            id,
            aead: LessSafeKey::new(unbound),
        }
    }
}

/// The secrets of one ticket key file, newest first: seals with the newest,
/// opens with any.
#[derive(Debug)]
pub struct Keys {
    keys: Vec<Key>,
}

impl Keys {
    /// Parses a key file's text (see the module documentation).
    pub fn parse(text: &str) -> Result<Keys, Error> {
        let mut keys: Vec<Key> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let hexed = raw.trim();
            if hexed.is_empty() || hexed.starts_with('#') {
                continue;
            }
            let bytes = hex::decode(hexed).map_err(|e| match e {
                hex::FromHexError::OddLength => Error::WrongLength {
                    line,
                    bytes: hexed.len() / 2,
                },
                _ => Error::NotHex { line },
            })?;
            let secret: [u8; SECRET_LEN] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::WrongLength {
                        line,
                        bytes: bytes.len(),
                    })?;
            let key = Key::new(&secret);
            if keys.iter().any(|k| k.id == key.id) {
                return Err(Error::Duplicate { line });
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(Error::Empty);
        }
        if keys.len() > MAX_KEYS {
            return Err(Error::TooMany { count: keys.len() });
        }
        Ok(Keys { keys })
    }

    /// Reads and parses the key file at `path`.
    pub fn load(path: &Path) -> Result<Keys, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Keys::parse(&text)
    }

    /// Seals `plain` with the newest secret; `None` if it is too long or
    /// the random source failed (rustls then issues no ticket).
    fn seal(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let key = self.keys.first()?;
        let len = KEY_ID_LEN + NONCE_LEN + plain.len() + AES_256_GCM.tag_len();
        if len > MAX_TICKET {
            return None;
        }
        let mut nonce = [0; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(len);
        ticket.extend_from_slice(&key.id);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(plain);
        let tag = key
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.id),
                &mut ticket[KEY_ID_LEN + NONCE_LEN..],
            )
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    /// Opens `ticket` with the secret its key id names; `None` if no secret
    /// of the file has that id, or the ticket was not sealed with it
    /// (forged, altered, truncated).
    fn open(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() > MAX_TICKET
            || ticket.len() < KEY_ID_LEN + NONCE_LEN + AES_256_GCM.tag_len()
        {
            return None;
        }
        let (id, rest) = ticket.split_at(KEY_ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        // The id is public (it is in every ticket): comparing it in
        // variable time tells an attacker nothing it did not send.
        let key = self.keys.iter().find(|k| k.id == id)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut out = sealed.to_vec();
        let plain = key
            .aead
            .open_in_place(nonce, Aad::from(&key.id), &mut out)
            .ok()?
            .len();
        out.truncate(plain);
        Some(out)
    }

    /// How many secrets the file holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true for parsed keys (an empty file is refused); for clippy.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A new secret as one line of a key file (64 hex digits).
pub fn new_secret_line() -> Result<String, Error> {
    let mut secret = [0u8; SECRET_LEN];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| Error::Random)?;
    Ok(hex::encode(secret))
}

/// The text of a key file after a rotation of `old`'s: a new secret on
/// top, then the newest `keep - 1` secret lines of `old` (comments
/// dropped). `keep` is at least 1 and at most [`MAX_KEYS`].
pub fn rotated(old: &str, keep: usize) -> Result<String, Error> {
    // Refuse to rotate a file the gateway would refuse anyway.
    Keys::parse(old)?;
    let keep = keep.clamp(1, MAX_KEYS);
    let mut out = new_secret_line()? + "\n";
    for line in old
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .take(keep - 1)
    {
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// Writes `text` to `path` as the owner's alone (0600), replacing it
/// atomically (a node rereading it never sees half a file).
pub fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// What identifies one version of the key file without reading it: its
/// modification time, size and (on Unix) inode, which an atomic
/// replacement ([`write_file`], `mv`) changes even within one clock tick.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok()?, meta.len(), inode))
}

/// When the file was last looked at, and what it was then.
#[derive(Debug)]
struct Watch {
    checked: Instant,
    stamp: Stamp,
}

/// The session ticketer of a node sharing its ticket keys through a file
/// (see the module documentation). Wrapped in the gateway's counting
/// ticketer, which counts the tickets it opens and refuses.
#[derive(Debug)]
pub struct Shared {
    path: PathBuf,
    keys: arc_swap::ArcSwap<Keys>,
    watch: Mutex<Watch>,
    recheck: Duration,
    metrics: Arc<Metrics>,
}

impl Shared {
    /// Loads the key file at `path`. Call once per endpoint, at start: a
    /// file that does not load stops the gateway from starting (a node
    /// with keys of its own would make every failover a full handshake).
    pub fn open(path: &Path, metrics: Arc<Metrics>) -> Result<Shared, Error> {
        Self::with_recheck(path, metrics, RECHECK)
    }

    /// As [`Shared::open`], looking at the file at most every `recheck`
    /// (tests use zero).
    pub fn with_recheck(
        path: &Path,
        metrics: Arc<Metrics>,
        recheck: Duration,
    ) -> Result<Shared, Error> {
        let before = stamp(path);
        let keys = Keys::load(path)?;
        #[cfg(unix)]
        warn_if_exposed(path);
        tracing::info!(path = %path.display(), keys = keys.len(), "shared TLS ticket keys loaded");
        Ok(Shared {
            path: path.to_owned(),
            keys: arc_swap::ArcSwap::from_pointee(keys),
            watch: Mutex::new(Watch {
                checked: Instant::now(),
                stamp: before,
            }),
            recheck,
            metrics,
        })
    }

    /// Rereads the file if `recheck` has passed since it was last looked
    /// at and it changed. A file that no longer loads is reported (once
    /// per change) and the keys already loaded stay in use.
    fn refresh(&self) {
        // Another handshake is looking: it will do.
        let Ok(mut watch) = self.watch.try_lock() else {
            return;
        };
        if watch.checked.elapsed() < self.recheck {
            return;
        }
        watch.checked = Instant::now();
        let now = stamp(&self.path);
        if now == watch.stamp {
            return;
        }
        watch.stamp = now;
        match Keys::load(&self.path) {
            Ok(keys) => {
                tracing::info!(
                    path = %self.path.display(),
                    keys = keys.len(),
                    "shared TLS ticket keys reloaded"
                );
                self.keys.store(Arc::new(keys));
                Metrics::add(&self.metrics.tls_ticket_key_reloads, 1);
            }
            Err(e) => {
                tracing::warn!(
                    path = %self.path.display(),
                    "shared TLS ticket keys not reloaded, the loaded ones stay in use: {e}"
                );
                Metrics::add(&self.metrics.tls_ticket_key_reload_failures, 1);
            }
        }
    }
}

impl rustls::server::ProducesTickets for Shared {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME_S
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.refresh();
        self.keys.load().seal(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.refresh();
        self.keys.load().open(cipher)
    }
}

/// Warns when group or others can access the key file (anyone who reads it
/// can decrypt recorded handshakes' tickets and resume as any terminal's
/// TLS session, though not authenticate as the terminal: that takes its
/// credential).
#[cfg(unix)]
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:04o}"),
                "group or others can access the TLS ticket key file; consider `chmod 600` on it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use rustls::server::ProducesTickets;

    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
    const C: &str = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf";

    fn keys(lines: &[&str]) -> Keys {
        Keys::parse(&lines.join("\n")).unwrap()
    }

    #[test]
    fn a_key_file_parses_newest_first_skipping_blanks_and_comments() {
        let k = Keys::parse(&format!("# rotated 2026-11-30\n\n  {B}  \n{A}\n")).unwrap();
        assert_eq!(k.len(), 2);
        assert_eq!(k.keys[0].id, keys(&[B]).keys[0].id, "the first line seals");
        assert_eq!(k.keys[1].id, keys(&[A]).keys[0].id);
        let upper = A.to_uppercase();
        assert_eq!(keys(&[&upper]).keys[0].id, keys(&[A]).keys[0].id);
    }

    #[test]
    fn malformed_key_files_are_refused() {
        assert!(matches!(Keys::parse(""), Err(Error::Empty)));
        assert!(matches!(
            Keys::parse("\n# only a comment\n"),
            Err(Error::Empty)
        ));
        assert!(matches!(
            Keys::parse(&A[..62]),
            Err(Error::WrongLength { line: 1, bytes: 31 })
        ));
        assert!(matches!(
            Keys::parse(&format!("{A}\n{A}00")),
            Err(Error::WrongLength { line: 2, bytes: 33 })
        ));
        assert!(matches!(
            Keys::parse(&format!("{A}0")),
            Err(Error::WrongLength { line: 1, .. })
        ));
        let bad = format!("zz{}", &A[2..]);
        assert!(matches!(Keys::parse(&bad), Err(Error::NotHex { line: 1 })));
        assert!(matches!(
            Keys::parse(&format!("{A}\n{}", "é".repeat(32))),
            Err(Error::NotHex { line: 2 })
        ));
        assert!(matches!(
            Keys::parse(&format!("{A}\n{B}\n{A}")),
            Err(Error::Duplicate { line: 3 })
        ));
        let five: Vec<String> = (0..5u8).map(|i| hex::encode([i; SECRET_LEN])).collect();
        assert!(matches!(
            Keys::parse(&five.join("\n")),
            Err(Error::TooMany { count: 5 })
        ));
        assert_eq!(Keys::parse(&five[..4].join("\n")).unwrap().len(), 4);
        // A secret split over two lines is two wrong lengths, not one key.
        assert!(matches!(
            Keys::parse(&format!("{}\n{}", &A[..32], &A[32..])),
            Err(Error::WrongLength { line: 1, bytes: 16 })
        ));
    }

    #[test]
    fn tickets_open_with_any_key_of_the_file_and_only_those() {
        let node_a = keys(&[B, A]);
        let node_b = keys(&[B, A]);
        let plain = b"a TLS 1.3 session state".as_slice();
        let ticket = node_a.seal(plain).unwrap();
        assert_eq!(node_b.open(&ticket).as_deref(), Some(plain), "other node");
        assert_ne!(
            node_a.seal(plain),
            Some(ticket.clone()),
            "a fresh nonce each"
        );

        // Sealed before the rotation (A was current): still opens after it.
        let old = keys(&[A]).seal(plain).unwrap();
        assert_eq!(node_b.open(&old).as_deref(), Some(plain));
        // A key no longer in the file: refused.
        let dropped = keys(&[C]).seal(plain).unwrap();
        assert_eq!(node_b.open(&dropped), None);
        // And once A is dropped, A's tickets too.
        assert_eq!(keys(&[C, B]).open(&old), None);
    }

    #[test]
    fn altered_truncated_and_forged_tickets_are_refused() {
        let k = keys(&[A]);
        let ticket = k.seal(b"session").unwrap();
        for i in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[i] ^= 0x01;
            assert_eq!(k.open(&bad), None, "bit flipped in byte {i}");
        }
        for len in 0..ticket.len() {
            assert_eq!(k.open(&ticket[..len]), None, "truncated to {len}");
        }
        let mut long = ticket.clone();
        long.push(0);
        assert_eq!(k.open(&long), None);
        // Right key id, garbage after it.
        let mut forged = ticket[..KEY_ID_LEN].to_vec();
        forged.extend_from_slice(&[0u8; 64]);
        assert_eq!(k.open(&forged), None);
        assert_eq!(k.open(&vec![0u8; MAX_TICKET + 1]), None);
        // Too long to seal: no ticket rather than one nobody can open.
        assert_eq!(k.seal(&vec![0u8; MAX_TICKET]), None);
    }

    #[test]
    fn two_nodes_share_tickets_through_the_file_and_follow_its_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ticket.keys");
        write_file(&path, &format!("{A}\n")).unwrap();
        let metrics = Arc::new(Metrics::default());
        let zero = Duration::ZERO;
        let node_a = Shared::with_recheck(&path, metrics.clone(), zero).unwrap();
        let node_b = Shared::with_recheck(&path, metrics.clone(), zero).unwrap();
        assert!(node_a.enabled());
        assert_eq!(node_a.lifetime(), 12 * 3600);
        let before = node_a.encrypt(b"state").unwrap();
        assert_eq!(
            node_b.decrypt(&before).as_deref(),
            Some(b"state".as_slice())
        );

        // Rotate: B on top, A kept. Both nodes pick it up.
        let text = rotated(&std::fs::read_to_string(&path).unwrap(), 2).unwrap();
        assert_eq!(text.lines().nth(1), Some(A));
        let newest = text.lines().next().unwrap().to_owned();
        write_file(&path, &text).unwrap();
        let after = node_b.encrypt(b"state").unwrap();
        assert_eq!(&after[..KEY_ID_LEN], &keys(&[&newest]).keys[0].id);
        assert_eq!(node_a.decrypt(&after).as_deref(), Some(b"state".as_slice()));
        assert_eq!(
            node_a.decrypt(&before).as_deref(),
            Some(b"state".as_slice())
        );
        assert_eq!(metrics.snapshot().tls_ticket_key_reloads, 2);

        // A broken file keeps the loaded keys, and says so once.
        std::fs::write(&path, "not a key\n").unwrap();
        assert!(node_a.decrypt(&after).is_some());
        assert!(node_a.decrypt(&after).is_some());
        assert_eq!(metrics.snapshot().tls_ticket_key_reload_failures, 1);

        // Rotated again, A dropped: tickets sealed with A are refused.
        write_file(&path, &rotated(&text, 2).unwrap()).unwrap();
        assert_eq!(node_a.decrypt(&before), None);
        assert!(node_a.decrypt(&after).is_some());
    }

    #[test]
    fn rotation_keeps_the_newest_and_refuses_a_broken_file() {
        let text = rotated(&format!("# c\n{B}\n{A}\n"), 2).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], B);
        assert!(Keys::parse(&text).is_ok());
        assert_eq!(rotated(&text, 1).unwrap().lines().count(), 1);
        assert!(matches!(rotated("junk", 2), Err(Error::NotHex { .. })));
        let fresh = new_secret_line().unwrap();
        assert_eq!(fresh.len(), 2 * SECRET_LEN);
        assert_ne!(fresh, new_secret_line().unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_written_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_file(&path, &new_secret_line().unwrap()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
