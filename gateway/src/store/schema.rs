//! The database schema: migrations applied in order when the store opens.

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many ran. Never edit one that has shipped: append.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: alerts and their recipients.
    "CREATE TABLE alert (
        id INTEGER PRIMARY KEY,
        issuer INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        priority INTEGER NOT NULL,
        ttl_s INTEGER NOT NULL,
        title TEXT NOT NULL,
        text TEXT NOT NULL,
        lat_e7 INTEGER,
        lon_e7 INTEGER,
        address TEXT,
        target TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE TABLE recipient (
        alert INTEGER NOT NULL REFERENCES alert(id),
        terminal INTEGER NOT NULL,
        status INTEGER NOT NULL DEFAULT 0,
        delivered_ms INTEGER,
        read_ms INTEGER,
        accepted_ms INTEGER,
        rejected_ms INTEGER,
        reason TEXT,
        arrived_ms INTEGER,
        resolved_ms INTEGER,
        PRIMARY KEY (alert, terminal)
    ) WITHOUT ROWID;
    CREATE INDEX recipient_by_terminal ON recipient(terminal, status);",
    // 2: audit log of floor grants: who talked in which group, when, how long.
    "CREATE TABLE floor_grant (
        id INTEGER PRIMARY KEY,
        grp INTEGER NOT NULL,
        terminal INTEGER NOT NULL,
        burst INTEGER NOT NULL,
        class INTEGER NOT NULL,
        granted_ms INTEGER NOT NULL,
        ended_ms INTEGER NOT NULL,
        ended_by TEXT NOT NULL
    );
    CREATE INDEX floor_grant_by_group ON floor_grant(grp, granted_ms);",
    // 3: who cancelled an alert (an SOS), and when.
    "ALTER TABLE alert ADD COLUMN cancelled_by INTEGER;
    ALTER TABLE alert ADD COLUMN cancelled_ms INTEGER;",
    // 4: attachments (photos) and which alerts carry them; drill reports.
    "CREATE TABLE attachment (
        id INTEGER PRIMARY KEY,
        owner INTEGER NOT NULL,
        mime TEXT NOT NULL,
        size INTEGER NOT NULL,
        data BLOB NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE alert_attachment (
        alert INTEGER NOT NULL REFERENCES alert(id),
        attachment INTEGER NOT NULL REFERENCES attachment(id),
        position INTEGER NOT NULL,
        PRIMARY KEY (alert, attachment)
    ) WITHOUT ROWID;
    CREATE INDEX alert_attachment_by_attachment ON alert_attachment(attachment);
    CREATE TABLE drill_report (
        id INTEGER PRIMARY KEY,
        alert INTEGER NOT NULL REFERENCES alert(id),
        generated_ms INTEGER NOT NULL,
        json TEXT NOT NULL
    );
    CREATE INDEX drill_report_by_alert ON drill_report(alert, generated_ms);",
    // 5: the active SOS of each terminal (at most one), so that it can be
    // refreshed and cancelled after a restart. `recipients` is the alerted
    // terminal ids, space-separated.
    "CREATE TABLE active_sos (
        terminal INTEGER PRIMARY KEY,
        alert INTEGER NOT NULL REFERENCES alert(id),
        grp INTEGER NOT NULL,
        recipients TEXT NOT NULL,
        expires_ms INTEGER NOT NULL
    );",
    // 6: revoked terminal credentials (a stolen or lost handset), at most
    // one row per terminal; the gateway refuses their `Hello` and closes
    // their sessions. `revoked_by` names who revoked it (operator, tool).
    "CREATE TABLE revocation (
        terminal INTEGER PRIMARY KEY,
        revoked_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        revoked_by TEXT NOT NULL
    );",
    // 7: what operators did through the admin API, and who.
    "CREATE TABLE admin_action (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        operator TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL
    );",
    // 8: alerts and floor grants by age, so that
    // the retention sweep reads only the rows it deletes; `pending` marks
    // an upload whose content is still being streamed into its blob (no
    // alert may use it, nobody may fetch it).
    "CREATE INDEX alert_by_created ON alert(created_ms);
    CREATE INDEX floor_grant_by_granted ON floor_grant(granted_ms);
    ALTER TABLE attachment ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;",
    // 9: one row per recorded talk burst. `path` is relative to
    // the recordings directory, NULL when no frame of the burst was
    // recorded. `frames` relayed packets written, `filled` packets written
    // for lost or dropped frames, `dropped` frames the recorder's queue was
    // too full to take, `bytes` the file's size.
    "CREATE TABLE recording (
        id INTEGER PRIMARY KEY,
        grp INTEGER NOT NULL,
        terminal INTEGER NOT NULL,
        burst INTEGER NOT NULL,
        class INTEGER NOT NULL,
        started_ms INTEGER NOT NULL,
        ended_ms INTEGER NOT NULL,
        ended_by TEXT NOT NULL,
        path TEXT,
        frames INTEGER NOT NULL,
        filled INTEGER NOT NULL,
        dropped INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    );
    CREATE INDEX recording_by_group ON recording(grp, started_ms);
    CREATE INDEX recording_by_terminal ON recording(terminal, started_ms);
    CREATE INDEX recording_by_start ON recording(started_ms);",
    // 10: console operators (`ptt-gateway operator`), each bound to a
    // console terminal of the org, with an argon2id password hash (PHC
    // string); and their signed-in sessions, by the SHA-256 of the token
    // (the token itself is never stored).
    "CREATE TABLE operator (
        name TEXT PRIMARY KEY,
        terminal INTEGER NOT NULL,
        password TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE console_session (
        token_hash BLOB PRIMARY KEY,
        operator TEXT NOT NULL,
        terminal INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    );",
];
