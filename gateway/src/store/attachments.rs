//! Attachments (photos): upload, the references alerts carry, and who may
//! fetch them.

use bytes::Bytes;
use ptt_codec::{AttachmentRef, TerminalId};
use rusqlite::{params, Connection, OptionalExtension};

use super::{Attachment, Error, Store};

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

    /// The attachments' size and media type as alerts carry them, in
    /// order. Call it before storing an alert: the gateway, not the sender,
    /// says how large each attachment is. Fails with
    /// [`Error::UnknownAttachment`] for the first one that does not exist or
    /// that `owner` did not upload.
    pub fn attachment_refs(
        &self,
        owner: TerminalId,
        ids: &[u64],
    ) -> Result<Vec<AttachmentRef>, Error> {
        let conn = self.lock();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
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

    /// Attachment `id` if `terminal` may fetch it: its uploader, or a
    /// recipient or issuer of an alert that carries it. Returns the alert
    /// it is fetched through (0 for its uploader before any alert).
    pub fn fetchable_attachment(
        &self,
        terminal: TerminalId,
        id: u64,
    ) -> Result<Option<(u64, Attachment)>, Error> {
        let conn = self.lock();
        let Some(attachment) = conn
            .query_row(
                "SELECT owner, mime, data FROM attachment WHERE id = ?1",
                [id as i64],
                |r| {
                    Ok(Attachment {
                        id,
                        owner: TerminalId(r.get(0)?),
                        mime: r.get(1)?,
                        data: Bytes::from(r.get::<_, Vec<u8>>(2)?),
                    })
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
            None if attachment.owner == terminal => Ok(Some((0, attachment))),
            None => Ok(None),
        }
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
        assert_eq!((through, got.data.len(), got.owner), (id, 300_000, console));
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
}
