//! Per-terminal credentials derived from one provisioning key.
//!
//! `credential = HMAC-SHA256(key, "ptt-terminal-credential-v1" || id_be32)`.
//! The gateway and the provisioning tool share only the 32-byte key; each
//! terminal is flashed with its own derived credential. Nothing per terminal
//! is stored, so 30,000 terminals need no manual step each, and one leaked
//! credential reveals nothing about another terminal's (HMAC is a PRF).

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use ptt_codec::TerminalId;
use rand::RngCore;
use sha2::Sha256;

/// Domain separation: a key used for anything else never yields these.
const LABEL: &[u8] = b"ptt-terminal-credential-v1";

/// Errors loading or saving a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not 64 hex digits.
    #[error("a provisioning key is 64 hex digits (32 bytes)")]
    Format,
    /// Group or others have some access to the key file: every terminal's
    /// credential derives from it, so it is refused rather than used.
    #[error(
        "{path} has mode {mode:04o}: group or others can access the provisioning key; \
         run `chmod 600 {path}`"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The provisioning key. Its `Debug` output does not reveal it.
#[derive(Clone)]
pub struct ProvisioningKey([u8; 32]);

impl std::fmt::Debug for ProvisioningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProvisioningKey(..)")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl ProvisioningKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        Self(k)
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex digits (surrounding whitespace allowed).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(text.trim()).map_err(|_| KeyError::Format)?;
        Ok(Self(bytes.try_into().map_err(|_| KeyError::Format)?))
    }

    /// The key as 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads a key file. On Unix the file must be accessible by its owner
    /// only (like an SSH private key): a mode with any group or other bit
    /// is refused with [`KeyError::Exposed`], whose message says how to fix
    /// it.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        use std::io::Read;
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        // The mode of the file opened, not of the path: no window between
        // the check and the read.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file.metadata().map_err(io)?.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Exposed {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io)?;
        Self::from_hex(&text)
    }

    /// Writes the key file, readable by its owner only (mode 0600, also
    /// when the file already existed with a wider mode).
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        use std::io::Write;
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        // The mode above applies only to a file created now; narrow an
        // existing one before the key is written into it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        writeln!(file, "{}", self.to_hex()).map_err(io)
    }

    fn mac(&self, terminal: TerminalId) -> HmacSha256 {
        // HMAC accepts keys of any length; 32 bytes cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(LABEL);
        mac.update(&terminal.0.to_be_bytes());
        mac
    }

    /// The credential to provision into `terminal`.
    pub fn credential(&self, terminal: TerminalId) -> [u8; 32] {
        self.mac(terminal).finalize().into_bytes().into()
    }

    /// Whether `presented` is `terminal`'s credential, compared in constant
    /// time.
    pub fn verify(&self, terminal: TerminalId, presented: &[u8]) -> bool {
        self.mac(terminal).verify_slice(presented).is_ok()
    }
}
