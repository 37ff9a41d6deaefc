//! Operator tokens: who may read `/metrics` and `/api/v1` and act through
//! it, by name, so that every action is recorded with who took it.
//!
//! The token file has one operator per line, `<name> <token>`; `#` starts a
//! comment. When the file does not exist the gateway writes one with a
//! single operator `admin` and a random token, mode 0600. A file that group
//! or others may read is refused, like the provisioning key.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// Why the token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the file failed.
    #[error("operator token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Group or others may read it.
    #[error("operator token file {path} is readable by group or others (mode {mode:o}): run `chmod 600 {path}`")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// A line is not `<name> <token>`, or a token is too short to be safe.
    #[error("operator token file {path}, line {line}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Shortest token accepted: 128 bits as hex.
const MIN_TOKEN_LEN: usize = 32;

/// The operators and their tokens.
#[derive(Clone)]
pub struct Tokens {
    operators: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: tokens never reach a log.
        let names: Vec<_> = self.operators.iter().map(|(n, _)| n).collect();
        f.debug_struct("Tokens").field("operators", &names).finish()
    }
}

impl Tokens {
    /// Loads the token file at `path`, creating it with one random `admin`
    /// token when it does not exist. Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Tokens, bool), Error> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let created = if path.exists() {
            false
        } else {
            let token: [u8; 32] = rand::random();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            writeln!(
                f,
                "# Operators of the gateway's admin API: <name> <token> per line.\nadmin {}",
                hex::encode(token)
            )
            .map_err(io)?;
            f.sync_all().map_err(io)?;
            true
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Ok((Self::parse(path, &text)?, created))
    }

    fn parse(path: &Path, text: &str) -> Result<Tokens, Error> {
        let invalid = |line, reason| Error::Invalid {
            path: path.to_owned(),
            line,
            reason,
        };
        let mut operators = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some(token), None) = (words.next(), words.next(), words.next()) else {
                return Err(invalid(i + 1, "expected `<name> <token>`"));
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(invalid(i + 1, "token shorter than 32 characters"));
            }
            operators.push((name.to_owned(), token.as_bytes().to_vec()));
        }
        if operators.is_empty() {
            return Err(invalid(0, "no operator"));
        }
        Ok(Tokens { operators })
    }

    /// The operator whose token `presented` is, compared in constant time
    /// against every token (so the time taken tells nothing of which, or
    /// how much, matched).
    pub fn operator(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for (name, token) in &self.operators {
            if bool::from(token.as_slice().ct_eq(presented)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_created_private_and_its_token_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operator.token");
        let (tokens, created) = Tokens::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let token = text.lines().last().unwrap().split(' ').nth(1).unwrap();
        assert_eq!(tokens.operator(token.as_bytes()), Some("admin"));
        assert_eq!(tokens.operator(b"admin"), None);
        assert_eq!(tokens.operator(b""), None);
        let (again, created) = Tokens::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.operator(token.as_bytes()), Some("admin"));
        assert!(!format!("{again:?}").contains(token), "no token in Debug");
    }

    #[test]
    fn operators_are_told_apart_and_bad_files_refused() {
        let p = Path::new("t");
        let a = "a".repeat(32);
        let b = "b".repeat(40);
        let t = Tokens::parse(p, &format!("# ops\nduty-1 {a}\n\nduty-2 {b} # night\n")).unwrap();
        assert_eq!(t.operator(a.as_bytes()), Some("duty-1"));
        assert_eq!(t.operator(b.as_bytes()), Some("duty-2"));
        assert_eq!(t.operator(&b.as_bytes()[..39]), None);
        for bad in [
            "",
            "# only a comment\n",
            "duty-1\n",
            "x short\n",
            &format!("x {a} extra\n"),
        ] {
            assert!(Tokens::parse(p, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operator.token");
        std::fs::write(&path, format!("admin {}\n", "a".repeat(32))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Tokens::load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
