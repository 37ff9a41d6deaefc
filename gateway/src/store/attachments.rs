//! Attachments (photos): upload, the references alerts carry, and who may
//! fetch them.

use ptt_codec::{AttachmentRef, TerminalId};
use rusqlite::{params, Connection, DatabaseName, OptionalExtension};

use super::{Error, Store};

/// How much a terminal may keep in uploads that no alert uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Bytes, all unused uploads together.
    pub bytes: u64,
    /// Unused uploads.
    pub uploads: u32,
}

impl Store {
    /// Stores an uploaded attachment; returns its id.
    pub fn put_attachment(
        &self,
        owner: TerminalId,
        mime: &str,
        data: &[u8],
        created_ms: u64,
    ) -> Result<u64, Error> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO attachment (owner, mime, size, data, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![owner.0, mime, data.len() as i64, data, created_ms as i64],
        )?;
        Ok(conn.last_insert_rowid() as u64)
    }

    /// Stores an uploaded attachment if `owner`'s unused uploads stay
    /// within `quota` with it; returns its id. Call it for uploads from
    /// terminals ([`Store::put_attachment`] has no quota). Fails with
    /// [`Error::OverQuota`], storing nothing, when they would not.
    pub fn put_attachment_within(
        &self,
        owner: TerminalId,
        mime: &str,
        data: &[u8],
        created_ms: u64,
        quota: Quota,
    ) -> Result<u64, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        Self::check_quota(&tx, owner, data.len() as u64, quota)?;
        tx.execute(
            "INSERT INTO attachment (owner, mime, size, data, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![owner.0, mime, data.len() as i64, data, created_ms as i64],
        )?;
        let id = tx.last_insert_rowid() as u64;
        tx.commit()?;
        Ok(id)
    }

    /// Whether an upload of `size` bytes by `owner` fits its quota. Call
    /// it when the upload's header arrives, before its content is read;
    /// [`Store::put_attachment_within`] checks again when storing.
    pub fn upload_fits(&self, owner: TerminalId, size: u64, quota: Quota) -> Result<(), Error> {
        Self::check_quota(&self.lock(), owner, size, quota)
    }

    /// `owner`'s attachments that no alert uses: how many, and their bytes.
    pub fn unused_uploads(&self, owner: TerminalId) -> Result<(u64, u64), Error> {
        Ok(Self::unused_of(&self.lock(), owner)?)
    }

    fn unused_of(conn: &Connection, owner: TerminalId) -> rusqlite::Result<(u64, u64)> {
        conn.query_row(
            "SELECT count(*), coalesce(sum(size), 0) FROM attachment t
             WHERE t.owner = ?1
               AND NOT EXISTS (SELECT 1 FROM alert_attachment aa WHERE aa.attachment = t.id)",
            [owner.0],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )
    }

    fn check_quota(
        conn: &Connection,
        owner: TerminalId,
        size: u64,
        quota: Quota,
    ) -> Result<(), Error> {
        let (count, bytes) = Self::unused_of(conn, owner)?;
        if count >= u64::from(quota.uploads) || bytes.saturating_add(size) > quota.bytes {
            return Err(Error::OverQuota {
                uploads: count,
                bytes,
            });
        }
        Ok(())
    }

    /// Deletes attachments created before `before_ms` that no alert uses;
    /// returns how many. Call it from the background sweep.
    pub fn expire_unused(&self, before_ms: u64) -> Result<usize, Error> {
        Ok(self.lock().execute(
            "DELETE FROM attachment WHERE created_ms < ?1
               AND NOT EXISTS (SELECT 1 FROM alert_attachment aa WHERE aa.attachment = attachment.id)",
            [before_ms as i64],
        )?)
    }

    /// Deletes every attachment created before `before_ms`, used or not,
    /// and the alerts' references to them (the alerts stay, without those
    /// photos); returns how many. Call it from the background sweep when a
    /// retention is configured.
    pub fn retire_attachments(&self, before_ms: u64) -> Result<usize, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM alert_attachment WHERE attachment IN
               (SELECT id FROM attachment WHERE created_ms < ?1)",
            [before_ms as i64],
        )?;
        let n = tx.execute(
            "DELETE FROM attachment WHERE created_ms < ?1",
            [before_ms as i64],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// The attachments' size and media type as alerts carry them, in
    /// order, each once however often it is named. Call it before storing
    /// an alert: the gateway, not the sender, says how large each
    /// attachment is. Fails with [`Error::UnknownAttachment`] for the
    /// first one that does not exist or that `owner` did not upload.
    pub fn attachment_refs(
        &self,
        owner: TerminalId,
        ids: &[u64],
    ) -> Result<Vec<AttachmentRef>, Error> {
        let conn = self.lock();
        let mut out: Vec<AttachmentRef> = Vec::with_capacity(ids.len());
        for id in ids {
            if out.iter().any(|a| a.id == *id) {
                continue;
            }
            let row = conn
                .query_row(
                    "SELECT size, mime FROM attachment WHERE id = ?1 AND owner = ?2",
                    params![*id as i64, owner.0],
                    |r| {
                        Ok(AttachmentRef {
                            id: *id,
                            size: r.get(0)?,
                            mime: r.get(1)?,
                        })
                    },
                )
                .optional()?;
            match row {
                Some(a) => out.push(a),
                None => return Err(Error::UnknownAttachment(*id)),
            }
        }
        Ok(out)
    }

    /// Whether `terminal` may fetch attachment `id`: its uploader, or a
    /// recipient or issuer of an alert that carries it. Returns the alert
    /// it is fetched through (0 for its uploader before any alert) and its
    /// size and media type. Reads no content: call it before
    /// [`Store::read_attachment`].
    pub fn fetchable_attachment(
        &self,
        terminal: TerminalId,
        id: u64,
    ) -> Result<Option<(u64, AttachmentRef)>, Error> {
        let conn = self.lock();
        // Only the row's first columns: the content stays on disk.
        let Some((owner, attachment)) = conn
            .query_row(
                "SELECT owner, mime, size FROM attachment WHERE id = ?1",
                [id as i64],
                |r| {
                    Ok((
                        TerminalId(r.get(0)?),
                        AttachmentRef {
                            id,
                            mime: r.get(1)?,
                            size: r.get(2)?,
                        },
                    ))
                },
            )
            .optional()?
        else {
            return Ok(None);
        };
        let through: Option<i64> = conn
            .query_row(
                "SELECT aa.alert FROM alert_attachment aa
                 JOIN alert a ON a.id = aa.alert
                 LEFT JOIN recipient r ON r.alert = aa.alert AND r.terminal = ?2
                 WHERE aa.attachment = ?1 AND (r.terminal IS NOT NULL OR a.issuer = ?2)
                 ORDER BY aa.alert LIMIT 1",
                params![id as i64, terminal.0],
                |r| r.get(0),
            )
            .optional()?;
        match through {
            Some(alert) => Ok(Some((alert as u64, attachment))),
            None if owner == terminal => Ok(Some((0, attachment))),
            None => Ok(None),
        }
    }

    /// Reads `buf.len()` bytes of attachment `id`'s content from `offset`,
    /// through SQLite's incremental blob I/O: only that much is read.
    /// Call it once [`Store::fetchable_attachment`] allowed the fetch, a
    /// chunk at a time. Fails if the attachment is gone or shorter.
    pub fn read_attachment(&self, id: u64, offset: usize, buf: &mut [u8]) -> Result<(), Error> {
        let conn = self.lock();
        let blob = conn.blob_open(DatabaseName::Main, "attachment", "data", id as i64, true)?;
        blob.read_at_exact(buf, offset)?;
        Ok(())
    }

    pub(super) fn attachments_of(
        conn: &Connection,
        alert: u64,
    ) -> rusqlite::Result<Vec<AttachmentRef>> {
        let mut stmt = conn.prepare_cached(
            "SELECT t.id, t.size, t.mime FROM alert_attachment aa JOIN attachment t ON t.id = aa.attachment
             WHERE aa.alert = ?1 ORDER BY aa.position",
        )?;
        let rows = stmt.query_map([alert as i64], |r| {
            Ok(AttachmentRef {
                id: r.get::<_, i64>(0)? as u64,
                size: r.get(1)?,
                mime: r.get(2)?,
            })
        })?;
        rows.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::body;

    #[test]
    fn attachments_are_fetched_only_through_their_alerts() {
        let s = Store::in_memory().unwrap();
        let (console, member, stranger) = (TerminalId(1), TerminalId(2), TerminalId(3));
        let photo = vec![0xffu8; 300_000];
        let a = s.put_attachment(console, "image/jpeg", &photo, 5).unwrap();
        // Before any alert: only its uploader.
        assert_eq!(s.fetchable_attachment(console, a).unwrap().unwrap().0, 0);
        assert!(s.fetchable_attachment(member, a).unwrap().is_none());

        let refs = s.attachment_refs(console, &[a]).unwrap();
        assert_eq!(
            (refs[0].size, refs[0].mime.as_str()),
            (300_000, "image/jpeg")
        );
        assert!(matches!(
            s.attachment_refs(stranger, &[a]),
            Err(Error::UnknownAttachment(x)) if x == a
        ));
        let mut with_photo = body(600);
        with_photo.attachments = refs;
        let id = s
            .create_alert(console, &with_photo, "t", 10, &[member])
            .unwrap();
        let (through, got) = s.fetchable_attachment(member, a).unwrap().unwrap();
        assert_eq!(
            (through, got.size, got.mime.as_str()),
            (id, 300_000, "image/jpeg")
        );
        let mut chunk = vec![0u8; 1000];
        s.read_attachment(a, 299_000, &mut chunk).unwrap();
        assert_eq!(chunk, photo[299_000..]);
        assert!(s.read_attachment(a, 299_500, &mut chunk).is_err());
        assert!(s.fetchable_attachment(stranger, a).unwrap().is_none());
        // Alerts read back carry their attachments (store and forward too).
        assert_eq!(s.alert(id).unwrap().unwrap().body, with_photo);
        assert_eq!(s.undelivered(member, 11).unwrap()[0].body, with_photo);
    }

    #[test]
    fn an_alert_with_a_foreign_attachment_stores_nothing() {
        let s = Store::in_memory().unwrap();
        let a = s
            .put_attachment(TerminalId(9), "image/png", b"png", 1)
            .unwrap();
        let mut b = body(600);
        b.attachments = vec![AttachmentRef {
            id: a,
            size: 3,
            mime: "image/png".into(),
        }];
        let err = s
            .create_alert(TerminalId(1), &b, "t", 1, &[TerminalId(2)])
            .unwrap_err();
        assert!(matches!(err, Error::UnknownAttachment(x) if x == a));
        assert!(s.undelivered(TerminalId(2), 2).unwrap().is_empty());
        let alerts: i64 = s
            .lock()
            .query_row("SELECT count(*) FROM alert", [], |r| r.get(0))
            .unwrap();
        assert_eq!(alerts, 0);
    }

    #[test]
    fn references_are_kept_once_and_uploads_are_bounded_expired_and_retired() {
        let s = Store::in_memory().unwrap();
        let (member, station) = (TerminalId(2), TerminalId(1));
        let quota = Quota {
            bytes: 10,
            uploads: 2,
        };
        let a = s
            .put_attachment_within(member, "image/png", b"12345", 1, quota)
            .unwrap();
        assert!(matches!(
            s.put_attachment_within(member, "image/png", b"123456", 2, quota),
            Err(Error::OverQuota {
                uploads: 1,
                bytes: 5
            })
        ));
        assert!(s.upload_fits(member, 5, quota).is_ok());
        let b = s
            .put_attachment_within(member, "image/png", b"12345", 3, quota)
            .unwrap();
        assert!(s.upload_fits(member, 0, quota).is_err(), "two uploads");
        // A report naming one photo eight times carries it once.
        let refs = s.attachment_refs(member, &[a; 8]).unwrap();
        assert_eq!(refs.len(), 1);
        let mut report = body(600);
        report.attachments = refs;
        s.create_alert(member, &report, "t", 4, &[station]).unwrap();
        // A used upload no longer counts against the quota.
        assert_eq!(s.unused_uploads(member).unwrap(), (1, 5));
        // Only unused uploads expire.
        assert_eq!(s.expire_unused(10).unwrap(), 1);
        assert!(s.fetchable_attachment(member, b).unwrap().is_none());
        assert!(s.fetchable_attachment(station, a).unwrap().is_some());
        // Retention deletes used ones too, and the alerts' references.
        assert_eq!(s.retire_attachments(2).unwrap(), 1);
        assert!(s.fetchable_attachment(station, a).unwrap().is_none());
        assert_eq!(s.unused_uploads(member).unwrap(), (0, 0));
    }
}
