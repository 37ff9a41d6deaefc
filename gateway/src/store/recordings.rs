//! The index of recorded talk bursts: which file holds which burst, who
//! talked in which group, when, how it ended, and what the recorder kept.

use ptt_codec::TerminalId;
use ptt_gateway_core::audit::EndedBy;
use rusqlite::{params, Row};

use super::{Error, Store};

/// Class code of emergency (SOS) bursts, kept `sos_retention_days`.
const EMERGENCY: u8 = 2;

/// One recorded burst.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// Row id: what `ptt-gateway recordings export --burst` takes. Ignored
    /// by [`Store::add_recordings`], which assigns it.
    pub id: u64,
    /// The group.
    pub group: u32,
    /// Who talked.
    pub terminal: TerminalId,
    /// The floor's burst id (wraps; not unique).
    pub burst: u16,
    /// Class code (0 normal, 1 imminent peril, 2 emergency).
    pub class: u8,
    /// Granted, Unix ms.
    pub started_ms: u64,
    /// Ended, Unix ms.
    pub ended_ms: u64,
    /// How it ended.
    pub ended_by: EndedBy,
    /// The Ogg Opus file, relative to the recordings directory; `None` when
    /// no frame of the burst was recorded.
    pub path: Option<String>,
    /// Relayed Opus packets in the file.
    pub frames: u64,
    /// Packets written for frames missing from the file (lost on the way,
    /// dropped by the recorder, invalid), so the audio keeps its timing.
    pub filled: u64,
    /// Frames the recorder's queue was too full to take
    /// (`recorder_frames_dropped`).
    pub dropped: u64,
    /// The file's size.
    pub bytes: u64,
}

impl Recording {
    /// Whether the burst was at emergency class (an SOS), kept longer.
    pub fn is_sos(&self) -> bool {
        self.class >= EMERGENCY
    }
}

/// Which recordings to list; every field narrows, none lists all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordingQuery {
    /// Only this group.
    pub group: Option<u32>,
    /// Only this talker.
    pub terminal: Option<TerminalId>,
    /// Granted at or after, Unix ms.
    pub since_ms: Option<u64>,
    /// Granted at or before, Unix ms.
    pub until_ms: Option<u64>,
    /// At most this many, the newest of those matching (still listed
    /// oldest first); `None`: all.
    pub limit: Option<u32>,
}

const COLUMNS: &str = "id, grp, terminal, burst, class, started_ms, ended_ms, ended_by, path, \
                       frames, filled, dropped, bytes";

fn row(r: &Row<'_>) -> rusqlite::Result<Recording> {
    Ok(Recording {
        id: r.get::<_, i64>(0)? as u64,
        group: r.get(1)?,
        terminal: TerminalId(r.get(2)?),
        burst: r.get(3)?,
        class: r.get(4)?,
        started_ms: r.get::<_, i64>(5)? as u64,
        ended_ms: r.get::<_, i64>(6)? as u64,
        ended_by: r.get::<_, String>(7)?.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, Box::new(e))
        })?,
        path: r.get(8)?,
        frames: r.get::<_, i64>(9)? as u64,
        filled: r.get::<_, i64>(10)? as u64,
        dropped: r.get::<_, i64>(11)? as u64,
        bytes: r.get::<_, i64>(12)? as u64,
    })
}

impl Store {
    /// Indexes recorded bursts, in one transaction (one fsync); returns
    /// their ids in order. Call once their files are on disk.
    pub fn add_recordings(&self, recordings: &[Recording]) -> Result<Vec<u64>, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut ids = Vec::with_capacity(recordings.len());
        {
            let mut insert = tx.prepare(
                "INSERT INTO recording (grp, terminal, burst, class, started_ms, ended_ms,
                     ended_by, path, frames, filled, dropped, bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for r in recordings {
                insert.execute(params![
                    r.group,
                    r.terminal.0,
                    r.burst,
                    r.class,
                    r.started_ms as i64,
                    r.ended_ms as i64,
                    r.ended_by.as_str(),
                    r.path,
                    r.frames as i64,
                    r.filled as i64,
                    r.dropped as i64,
                    r.bytes as i64,
                ])?;
                ids.push(tx.last_insert_rowid() as u64);
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Recordings matching `query`, oldest first.
    pub fn recordings(&self, query: &RecordingQuery) -> Result<Vec<Recording>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT * FROM (SELECT {COLUMNS} FROM recording
             WHERE (?1 IS NULL OR grp = ?1) AND (?2 IS NULL OR terminal = ?2)
               AND (?3 IS NULL OR started_ms >= ?3) AND (?4 IS NULL OR started_ms <= ?4)
             ORDER BY started_ms DESC, id DESC LIMIT coalesce(?5, -1))
             ORDER BY started_ms, id"
        ))?;
        let rows = stmt.query_map(
            params![
                query.group,
                query.terminal.map(|t| t.0),
                query.since_ms.map(|v| v as i64),
                query.until_ms.map(|v| v as i64),
                query.limit,
            ],
            row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The recording with row id `id`.
    pub fn recording(&self, id: u64) -> Result<Option<Recording>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM recording WHERE id = ?1"))?;
        let mut rows = stmt.query_map(params![id as i64], row)?;
        Ok(rows.next().transpose()?)
    }

    /// Up to `limit` recordings past retention, oldest first: normal ones
    /// granted before `before_ms`, emergency ones before `sos_before_ms`
    /// (`None`: kept forever).
    pub fn expired_recordings(
        &self,
        before_ms: Option<u64>,
        sos_before_ms: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Recording>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM recording
             WHERE (class < {EMERGENCY} AND ?1 IS NOT NULL AND started_ms < ?1)
                OR (class >= {EMERGENCY} AND ?2 IS NOT NULL AND started_ms < ?2)
             ORDER BY started_ms, id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![
                before_ms.map(|v| v as i64),
                sos_before_ms.map(|v| v as i64),
                limit
            ],
            row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Bytes of every recording file indexed.
    pub fn recordings_bytes(&self) -> Result<u64, Error> {
        let conn = self.lock();
        let total: i64 =
            conn.query_row("SELECT COALESCE(SUM(bytes), 0) FROM recording", [], |r| {
                r.get(0)
            })?;
        Ok(total as u64)
    }

    /// Up to `limit` recordings in the order a disk budget deletes them:
    /// normal ones oldest first, then emergency ones oldest first.
    pub fn recordings_to_evict(&self, limit: u32) -> Result<Vec<Recording>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM recording
             ORDER BY class >= {EMERGENCY}, started_ms, id LIMIT ?1"
        ))?;
        let rows = stmt.query_map(params![limit], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes the index rows `ids` (their files are the caller's).
    pub fn delete_recordings(&self, ids: &[u64]) -> Result<(), Error> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut delete = tx.prepare("DELETE FROM recording WHERE id = ?1")?;
            for id in ids {
                delete.execute(params![*id as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A recording of `terminal` in `group` granted at `started_ms`.
    pub(crate) fn rec(group: u32, terminal: u32, started_ms: u64, class: u8) -> Recording {
        Recording {
            id: 0,
            group,
            terminal: TerminalId(terminal),
            burst: 3,
            class,
            started_ms,
            ended_ms: started_ms + 2_000,
            ended_by: EndedBy::Released,
            path: Some(format!("x/{group}-{terminal}-{started_ms}.opus")),
            frames: 100,
            filled: 2,
            dropped: 1,
            bytes: 4_000,
        }
    }

    #[test]
    fn queries_by_group_speaker_and_time() {
        let s = Store::in_memory().unwrap();
        let ids = s
            .add_recordings(&[
                rec(5, 501, 1_000, 0),
                rec(5, 502, 2_000, 0),
                rec(6, 501, 3_000, 2),
            ])
            .unwrap();
        assert_eq!(ids.len(), 3);
        let mut preempted = rec(6, 600, 4_000, 0);
        preempted.ended_by = EndedBy::Preempted;
        preempted.path = None;
        s.add_recordings(&[preempted]).unwrap();
        let q = |query: RecordingQuery| -> Vec<u64> {
            s.recordings(&query)
                .unwrap()
                .iter()
                .map(|r| r.started_ms)
                .collect()
        };
        assert_eq!(q(RecordingQuery::default()), [1_000, 2_000, 3_000, 4_000]);
        let group5 = RecordingQuery {
            group: Some(5),
            ..Default::default()
        };
        assert_eq!(q(group5), [1_000, 2_000]);
        let by_501 = RecordingQuery {
            terminal: Some(TerminalId(501)),
            ..Default::default()
        };
        assert_eq!(q(by_501), [1_000, 3_000]);
        let window = RecordingQuery {
            since_ms: Some(2_000),
            until_ms: Some(3_000),
            ..Default::default()
        };
        assert_eq!(q(window), [2_000, 3_000]);
        let all_of_them = RecordingQuery {
            group: Some(5),
            terminal: Some(TerminalId(502)),
            since_ms: Some(1_500),
            until_ms: Some(2_500),
            limit: None,
        };
        assert_eq!(q(all_of_them), [2_000]);
        let newest_two = RecordingQuery {
            limit: Some(2),
            ..Default::default()
        };
        assert_eq!(q(newest_two), [3_000, 4_000]);
        // Every field reads back.
        let one = s.recording(ids[2]).unwrap().unwrap();
        assert_eq!(
            one,
            Recording {
                id: ids[2],
                ..rec(6, 501, 3_000, 2)
            }
        );
        assert!(one.is_sos());
        let last = s.recordings(&RecordingQuery::default()).unwrap()[3].clone();
        assert_eq!(last.path, None);
        assert_eq!(last.ended_by, EndedBy::Preempted);
        assert_eq!(s.recording(999).unwrap(), None);
        assert_eq!(s.recordings_bytes().unwrap(), 16_000);
    }

    #[test]
    fn retention_keeps_sos_longer_and_the_budget_evicts_normal_bursts_first() {
        let s = Store::in_memory().unwrap();
        s.add_recordings(&[
            rec(5, 1, 1_000, 2),
            rec(5, 2, 2_000, 0),
            rec(5, 3, 3_000, 1),
            rec(5, 4, 9_000, 0),
        ])
        .unwrap();
        let who = |v: Vec<Recording>| v.iter().map(|r| r.terminal.0).collect::<Vec<_>>();
        // Normal before 5 000; SOS kept forever.
        assert_eq!(
            who(s.expired_recordings(Some(5_000), None, 10).unwrap()),
            [2, 3]
        );
        assert_eq!(
            who(s.expired_recordings(Some(5_000), Some(1_500), 10).unwrap()),
            [1, 2, 3]
        );
        assert_eq!(
            who(s.expired_recordings(None, None, 10).unwrap()),
            [] as [u32; 0]
        );
        assert_eq!(
            who(s.expired_recordings(Some(5_000), None, 1).unwrap()),
            [2]
        );
        assert_eq!(who(s.recordings_to_evict(10).unwrap()), [2, 3, 4, 1]);
        let ids: Vec<u64> = s
            .recordings_to_evict(2)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        s.delete_recordings(&ids).unwrap();
        assert_eq!(
            who(s.recordings(&RecordingQuery::default()).unwrap()),
            [1, 4]
        );
        assert_eq!(s.recordings_bytes().unwrap(), 8_000);
    }
}
