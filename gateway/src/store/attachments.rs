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

    /// Starts an upload of `size` bytes by `owner` if its unused uploads
    /// stay within `quota` with it: a row whose content is `size` zero
    /// bytes, pending (no alert may use it, nobody may fetch it) until
    /// [`Store::finish_upload`]; returns its id. Call it when the upload's
    /// header arrives, before any content is read, then write the content
    /// a chunk at a time with [`Store::write_upload`]; on any failure call
    /// [`Store::abandon_upload`]. A pending upload counts against the
    /// quota, so uploads in progress at once cannot pass it together.
    /// Fails with [`Error::OverQuota`], storing nothing.
    pub fn begin_upload(
        &self,
        owner: TerminalId,
        mime: &str,
        size: u64,
        created_ms: u64,
        quota: Quota,
    ) -> Result<u64, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        Self::check_quota(&tx, owner, size, quota)?;
        tx.execute(
            "INSERT INTO attachment (owner, mime, size, data, created_ms, pending)
             VALUES (?1, ?2, ?3, zeroblob(?3), ?4, 1)",
            params![owner.0, mime, size as i64, created_ms as i64],
        )?;
        let id = tx.last_insert_rowid() as u64;
        tx.commit()?;
        Ok(id)
    }

    /// Writes `data` into pending upload `id`'s content at `offset`
    /// through incremental blob I/O: only that much is written. Not synced
    /// to disk on its own: [`Store::finish_upload`]'s commit syncs it
    /// (WAL), and the upload is acknowledged only after that. Fails if the
    /// upload is gone or `data` runs past its size.
    pub fn write_upload(&self, id: u64, offset: usize, data: &[u8]) -> Result<(), Error> {
        let conn = self.lock();
        // A chunk's write is its own transaction: without a sync of its
        // own, a 4 MiB upload costs one fsync (at the finish), not 64.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let written = conn
            .blob_open(DatabaseName::Main, "attachment", "data", id as i64, false)
            .and_then(|mut blob| blob.write_at(data, offset));
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(written?)
    }

    /// Marks pending upload `id` complete (usable, fetchable), in a
    /// synced commit. False if it is gone (expired, or abandoned).
    pub fn finish_upload(&self, id: u64) -> Result<bool, Error> {
        let n = self.lock().execute(
            "UPDATE attachment SET pending = 0 WHERE id = ?1 AND pending = 1",
            [id as i64],
        )?;
        Ok(n == 1)
    }

    /// Deletes pending upload `id` (its stream failed): no row and no
    /// bytes are left. False if it was already gone.
    pub fn abandon_upload(&self, id: u64) -> Result<bool, Error> {
        let n = self.lock().execute(
            "DELETE FROM attachment WHERE id = ?1 AND pending = 1",
            [id as i64],
        )?;
        Ok(n == 1)
    }

    /// Whether an upload of `size` bytes by `owner` fits its quota.
    /// [`Store::begin_upload`] checks it too, when the upload starts.
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

    /// Deletes attachments created before `before_ms` that no alert uses,
    /// and pending uploads (still streaming, or left by a crash) created
    /// before `pending_before_ms`; returns how many. Call it from the
    /// background sweep with `pending_before_ms` no later than the longest
    /// an upload can take, so that none is deleted mid-stream.
    pub fn expire_unused(&self, before_ms: u64, pending_before_ms: u64) -> Result<usize, Error> {
        Ok(self.lock().execute(
            "DELETE FROM attachment
             WHERE created_ms < CASE WHEN pending = 1 THEN ?2 ELSE ?1 END
               AND NOT EXISTS (SELECT 1 FROM alert_attachment aa WHERE aa.attachment = attachment.id)",
            params![before_ms as i64, pending_before_ms as i64],
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
                    "SELECT size, mime FROM attachment WHERE id = ?1 AND owner = ?2 AND pending = 0",
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
                "SELECT owner, mime, size FROM attachment WHERE id = ?1 AND pending = 0",
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
        // A pending upload expires by its own (later) cut-off.
        let streaming = s
            .begin_upload(
                member,
                "image/png",
                5,
                5,
                Quota {
                    bytes: 100,
                    uploads: 9,
                },
            )
            .unwrap();
        assert_eq!(s.expire_unused(10, 5).unwrap(), 1);
        assert_eq!(s.expire_unused(10, 6).unwrap(), 1, "then the pending one");
        assert!(!s.finish_upload(streaming).unwrap());
        assert!(s.fetchable_attachment(member, b).unwrap().is_none());
        assert!(s.fetchable_attachment(station, a).unwrap().is_some());
        // Retention deletes used ones too, and the alerts' references.
        assert_eq!(s.retire_attachments(2).unwrap(), 1);
        assert!(s.fetchable_attachment(station, a).unwrap().is_none());
        assert_eq!(s.unused_uploads(member).unwrap(), (0, 0));
    }

    #[test]
    fn an_upload_is_streamed_into_its_blob_and_usable_only_once_finished() {
        let s = Store::in_memory().unwrap();
        let (member, station) = (TerminalId(2), TerminalId(1));
        let quota = Quota {
            bytes: 300_000,
            uploads: 4,
        };
        let photo: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let id = s
            .begin_upload(member, "image/jpeg", photo.len() as u64, 1, quota)
            .unwrap();
        // Pending: counted against the quota, but nobody may use or fetch it.
        assert_eq!(s.unused_uploads(member).unwrap(), (1, 200_000));
        assert!(matches!(
            s.begin_upload(member, "image/jpeg", 100_001, 2, quota),
            Err(Error::OverQuota { .. })
        ));
        assert!(s.fetchable_attachment(member, id).unwrap().is_none());
        assert!(matches!(
            s.attachment_refs(member, &[id]),
            Err(Error::UnknownAttachment(x)) if x == id
        ));
        let mut early = body(600);
        early.attachments = vec![AttachmentRef {
            id,
            size: 200_000,
            mime: "image/jpeg".into(),
        }];
        assert!(matches!(
            s.create_alert(member, &early, "t", 2, &[station]),
            Err(Error::UnknownAttachment(_))
        ));
        for (i, chunk) in photo.chunks(65_536).enumerate() {
            s.write_upload(id, i * 65_536, chunk).unwrap();
        }
        assert!(s.write_upload(id, 199_999, b"xy").is_err(), "past its size");
        assert!(s.finish_upload(id).unwrap());
        let mut back = vec![0; photo.len()];
        s.read_attachment(id, 0, &mut back).unwrap();
        assert_eq!(back, photo);
        assert_eq!(s.fetchable_attachment(member, id).unwrap().unwrap().0, 0);
        assert!(!s.abandon_upload(id).unwrap(), "a finished upload stays");

        // An abandoned upload leaves no row and no bytes.
        let gone = s
            .begin_upload(member, "image/png", 50_000, 3, quota)
            .unwrap();
        s.write_upload(gone, 0, &[7; 1000]).unwrap();
        assert!(s.abandon_upload(gone).unwrap());
        assert!(!s.finish_upload(gone).unwrap());
        assert!(s.write_upload(gone, 1000, &[7; 10]).is_err());
        assert_eq!(s.unused_uploads(member).unwrap(), (1, 200_000));
        let rows: i64 = s
            .lock()
            .query_row("SELECT count(*) FROM attachment", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        // Writes keep the connection's full sync for everything else.
        let sync: i64 = s
            .lock()
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
    }
}
