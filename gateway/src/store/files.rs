//! Who may read the data directory and the database: the gateway's user
//! only. The database holds alert text, photos and receipts, so the data
//! directory is kept at mode 0700 and `gateway.db`, `gateway.db-wal` and
//! `gateway.db-shm` at 0600, whatever the umask and whoever created them.
//!
//! SQLite creates `-wal` and `-shm` lazily with the main file's mode (its
//! Unix VFS copies the mode and `fchmod`s past the umask), so creating the
//! main file 0600 before SQLite opens it keeps all three private; files an
//! older gateway left wider are narrowed on open, with a warning.

use std::path::{Path, PathBuf};

use super::Error;

/// The data directory's mode: the gateway's user only.
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;
/// The database files' mode.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates the data directory `dir` (and missing parents) with mode 0700,
/// or narrows an existing one that group or others can access to 0700,
/// logging a warning with its old mode. Call it at start, before anything
/// is written into the directory.
pub fn create_data_dir(dir: &Path) -> Result<(), Error> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir).map_err(io(dir))?;
    #[cfg(unix)]
    if let Some(old) = narrow(dir, DIR_MODE).map_err(io(dir))? {
        tracing::warn!(
            path = %dir.display(),
            old_mode = format_args!("{old:04o}"),
            "the data directory was open to group or others; narrowed it to 0700"
        );
    }
    Ok(())
}

/// The database's side files SQLite creates next to `db` in WAL mode.
fn side_files(db: &Path) -> [PathBuf; 2] {
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [with("-wal"), with("-shm")]
}

/// Before SQLite opens `db`: creates it empty with mode 0600 if missing
/// (SQLite takes a zero-length file for a new database) and narrows it and
/// any side files left by an earlier run to 0600.
pub(super) fn before_open(db: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(db)
            .map_err(io(db))?;
        narrow_file(db)?;
        after_open(db)?;
    }
    #[cfg(not(unix))]
    let _ = db;
    Ok(())
}

/// After SQLite opened `db` in WAL mode: narrows the side files it created,
/// should its build not have copied the main file's mode.
pub(super) fn after_open(db: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    for side in side_files(db) {
        if side.exists() {
            narrow_file(&side)?;
        }
    }
    #[cfg(not(unix))]
    let _ = db;
    Ok(())
}

#[cfg(unix)]
fn narrow_file(path: &Path) -> Result<(), Error> {
    if let Some(old) = narrow(path, FILE_MODE).map_err(io(path))? {
        tracing::warn!(
            path = %path.display(),
            old_mode = format_args!("{old:04o}"),
            "a database file was open to group or others; narrowed it to 0600"
        );
    }
    Ok(())
}

/// Sets `path`'s mode to `mode` if group or others have any access to it;
/// returns the old mode when it changed.
#[cfg(unix)]
fn narrow(path: &Path, mode: u32) -> std::io::Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt;
    let old = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if old & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(Some(old))
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::store::Store;
    use ptt_codec::TerminalId;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_new_data_dir_is_0700_and_an_open_one_is_narrowed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/data");
        create_data_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);

        set_mode(&dir, 0o755);
        create_data_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "narrowed");
        create_data_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "idempotent");
    }

    #[test]
    fn the_database_and_its_wal_and_shm_are_0600_after_a_write() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("gateway.db");
        let store = Store::open(&db).unwrap();
        store
            .create_alert(
                TerminalId(1),
                &super::super::tests::body(600),
                "t",
                0,
                &[TerminalId(2)],
            )
            .unwrap();
        let [wal, shm] = side_files(&db);
        for f in [&db, &wal, &shm] {
            assert!(f.exists(), "{} exists in WAL mode", f.display());
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
    }

    #[test]
    fn database_files_an_older_gateway_left_0644_are_narrowed_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("gateway.db");
        let [wal, shm] = side_files(&db);
        {
            let store = Store::open(&db).unwrap();
            store
                .create_alert(
                    TerminalId(1),
                    &super::super::tests::body(600),
                    "t",
                    0,
                    &[TerminalId(2)],
                )
                .unwrap();
            // While it is open, as an older gateway would have left them.
            for f in [&db, &wal, &shm] {
                set_mode(f, 0o644);
            }
            // A second connection beside the first (`drill-report` beside a
            // running gateway) finds the side files still there.
            let _beside = Store::open(&db).unwrap();
            for f in [&db, &wal, &shm] {
                assert_eq!(mode(f), 0o600, "{}", f.display());
            }
        }
        set_mode(&db, 0o644);
        let _reopened = Store::open(&db).unwrap();
        for f in [&db, &wal, &shm] {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
    }
}
