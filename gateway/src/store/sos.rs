//! The active SOS of each terminal (at most one): written when an SOS is
//! raised or refreshed, removed when it is cancelled, read when the
//! gateway starts so that an SOS raised before a restart can still be
//! cancelled.

use ptt_codec::{GroupId, TerminalId};
use ptt_gateway_core::sos::Active;
use rusqlite::params;

use super::{Error, Store};

fn encode_recipients(recipients: &[TerminalId]) -> String {
    let ids: Vec<String> = recipients.iter().map(|r| r.0.to_string()).collect();
    ids.join(" ")
}

fn decode_recipients(text: &str) -> Result<Vec<TerminalId>, Error> {
    text.split_ascii_whitespace()
        .map(|id| {
            id.parse().map(TerminalId).map_err(|_| {
                Error::Sqlite(rusqlite::Error::InvalidColumnType(
                    3,
                    "recipients".into(),
                    rusqlite::types::Type::Text,
                ))
            })
        })
        .collect()
}

impl Store {
    /// Records `sos` as `terminal`'s active SOS, replacing an older one.
    /// Call once its alert is stored.
    pub fn put_active_sos(&self, terminal: TerminalId, sos: &Active) -> Result<(), Error> {
        self.lock().execute(
            "INSERT OR REPLACE INTO active_sos (terminal, alert, grp, recipients, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                terminal.0,
                sos.alert as i64,
                sos.group.0,
                encode_recipients(&sos.recipients),
                sos.expires_ms as i64
            ],
        )?;
        Ok(())
    }

    /// Extends `terminal`'s active SOS, alert `alert`, to `expires_ms`: the
    /// alert stays deliverable (store and forward) until then. One
    /// transaction.
    pub fn refresh_sos(
        &self,
        terminal: TerminalId,
        alert: u64,
        expires_ms: u64,
    ) -> Result<(), Error> {
        let conn = self.lock();
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "UPDATE alert SET expires_ms = ?1 WHERE id = ?2",
            params![expires_ms as i64, alert as i64],
        )?;
        tx.execute(
            "UPDATE active_sos SET expires_ms = ?1 WHERE terminal = ?2 AND alert = ?3",
            params![expires_ms as i64, terminal.0, alert as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets `terminal`'s active SOS (it was cancelled).
    pub fn end_active_sos(&self, terminal: TerminalId) -> Result<(), Error> {
        self.lock()
            .execute("DELETE FROM active_sos WHERE terminal = ?1", [terminal.0])?;
        Ok(())
    }

    /// Every active SOS, by terminal: read it once when the gateway starts.
    pub fn active_sos(&self) -> Result<Vec<(TerminalId, Active)>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT terminal, alert, grp, recipients, expires_ms FROM active_sos ORDER BY terminal",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                TerminalId(r.get(0)?),
                r.get::<_, i64>(1)? as u64,
                GroupId(r.get(2)?),
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)? as u64,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (terminal, alert, group, recipients, expires_ms) = row?;
            let recipients = decode_recipients(&recipients)?;
            out.push((
                terminal,
                Active {
                    alert,
                    group,
                    recipients,
                    expires_ms,
                },
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::body;

    #[test]
    fn an_active_sos_is_kept_refreshed_and_ended() {
        let store = Store::in_memory().expect("in-memory store");
        let recipients = [TerminalId(300), TerminalId(502)];
        let alert = store
            .create_alert(TerminalId(501), &body(60), "sos", 1_000, &recipients)
            .expect("stored");
        let sos = Active {
            alert,
            group: GroupId(5),
            recipients: recipients.to_vec(),
            expires_ms: 61_000,
        };
        store.put_active_sos(TerminalId(501), &sos).expect("stored");
        assert_eq!(
            store.active_sos().expect("readable"),
            [(TerminalId(501), sos.clone())]
        );
        store
            .refresh_sos(TerminalId(501), alert, 90_000)
            .expect("refreshed");
        let [(_, refreshed)] = &store.active_sos().expect("readable")[..] else {
            panic!("one active SOS");
        };
        assert_eq!(refreshed.expires_ms, 90_000);
        assert_eq!(
            store
                .undelivered(TerminalId(300), 80_000)
                .expect("readable")[0]
                .expires_ms,
            90_000,
            "the alert stays deliverable until the new expiry"
        );
        store.end_active_sos(TerminalId(501)).expect("ended");
        assert!(store.active_sos().expect("readable").is_empty());
    }
}
