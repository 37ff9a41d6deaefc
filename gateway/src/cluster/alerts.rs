//! Alerts and receipts shared by a cluster's nodes (docs/notes/h-alerts.md):
//! the JetStream stream that is their source of truth, its records and
//! their encoding, writing to it with retries, and each node's consumer.
//!
//! One stream, [`STREAM`], on subjects `ptt.alerts.>` (`ptt.alerts.alert`,
//! `ptt.alerts.receipt`), file storage, `cluster.replicas` replicas. An
//! alert is confirmed to its issuer only once the stream acknowledged its
//! record; its id is [`CLUSTER_IDS`] plus the record's stream sequence, so
//! every node names it alike. One stream keeps one order: an alert's
//! record always precedes its receipts' records, and every node's consumer
//! reads them in that order.
//!
//! This module only moves records; what they do to the store and the
//! terminals is in `crate::ops::replication`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use ptt_codec::alert::{
    MAX_ADDRESS, MAX_ATTACHMENTS, MAX_MIME, MAX_TARGET_TERMINALS, MAX_TEXT, MAX_TITLE,
};
use ptt_codec::{AlertBody, AlertKind, AttachmentRef, Location, ReceiptStatus, TerminalId};
use serde::{Deserialize, Serialize};

use super::Cluster;
use crate::metrics::Metrics;
use crate::store::CLUSTER_IDS;

/// The stream of alerts and receipts.
pub(crate) const STREAM: &str = "PTT_ALERTS";

/// The subject of alert records.
const ALERT_SUBJECT: &str = "ptt.alerts.alert";

/// The subject of receipt records.
const RECEIPT_SUBJECT: &str = "ptt.alerts.receipt";

/// How long records stay in the stream: a node that was down for longer
/// misses them (its store has what it had; a replayed consumer would
/// re-store only expired alerts). 30 days: longer than any alert's time to
/// live in use (`core::sos`, drills and dispatches live hours).
const MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a write to the stream is retried before the alert or receipt
/// is refused: JetStream refuses writes for 4-8 s while it elects a new
/// stream leader after a NATS server dies (issue 14; 4.6-7.6 s in
/// tests/tests/cluster_alerts.rs). 9 s covers that and stays a second under
/// the terminal library's 10 s answer timeout
/// (`ptt_terminal::ANSWER_TIMEOUT`), so the issuer always hears whether
/// its alert went out.
pub(crate) const PUBLISH_WINDOW: Duration = Duration::from_secs(9);

/// The first pause between two tries, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The longest pause between two tries.
const MAX_BACKOFF: Duration = Duration::from_millis(1000);

/// The largest record accepted from the stream: NATS's default maximum
/// payload. An alert to about 100,000 recipients fills it.
pub(crate) const MAX_RECORD: usize = 1 << 20;

/// The longest target description a record may carry: "terminals " and
/// [`MAX_TARGET_TERMINALS`] ids of up to 10 digits, comma-separated (what
/// `core::recipients::describe` makes of the largest target), with room.
/// A node must never refuse a record another node made of a valid alert.
const MAX_TARGET: usize = 64 + MAX_TARGET_TERMINALS * 11;

/// Writing to or reading from the stream failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream did not acknowledge the record within [`PUBLISH_WINDOW`].
    #[error("the cluster's alert stream did not acknowledge within {0:?}: {1}")]
    Unacknowledged(Duration, String),
    /// The stream or the consumer could not be created or read.
    #[error("the cluster's alert stream: {0}")]
    Stream(String),
}

/// A record of the stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    /// Larger than [`MAX_RECORD`].
    #[error("{0} bytes is over the limit")]
    TooLarge(usize),
    /// Not the JSON of a record.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A field out of its bounds.
    #[error("{0}")]
    Field(&'static str),
}

/// An alert as the stream holds it: everything a node needs to store and
/// deliver it. Its id is not in it: it is [`CLUSTER_IDS`] plus the
/// record's stream sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertRecord {
    /// Who sent it.
    pub issuer: u32,
    /// `AlertKind` code.
    pub kind: u8,
    /// 0 to 3.
    pub priority: u8,
    /// Time to live, s.
    pub ttl_s: u32,
    /// Title.
    pub title: String,
    /// Text.
    pub text: String,
    /// Latitude, longitude (1e-7 degrees) and address.
    pub location: Option<(i32, i32, String)>,
    /// Photos: id, size, media type (their content stays on the issuer's
    /// node).
    pub attachments: Vec<(u64, u32, String)>,
    /// The target, described for the store.
    pub target: String,
    /// When the issuer's node accepted it (Unix ms).
    pub created_ms: u64,
    /// Who receives it.
    pub recipients: Vec<u32>,
}

impl AlertRecord {
    /// The record of an alert `issuer` sends.
    pub(crate) fn new(
        issuer: TerminalId,
        body: &AlertBody,
        target: String,
        created_ms: u64,
        recipients: &[TerminalId],
    ) -> Self {
        Self {
            issuer: issuer.0,
            kind: body.kind.code(),
            priority: body.priority,
            ttl_s: body.ttl_s,
            title: body.title.clone(),
            text: body.text.clone(),
            location: body
                .location
                .as_ref()
                .map(|l| (l.lat_e7, l.lon_e7, l.address.clone())),
            attachments: body
                .attachments
                .iter()
                .map(|a| (a.id, a.size, a.mime.clone()))
                .collect(),
            target,
            created_ms,
            recipients: recipients.iter().map(|r| r.0).collect(),
        }
    }

    /// The alert's body (checked when decoded).
    pub(crate) fn body(&self) -> AlertBody {
        AlertBody {
            kind: AlertKind::from_code(self.kind).unwrap_or(AlertKind::Notice),
            priority: self.priority,
            ttl_s: self.ttl_s,
            title: self.title.clone(),
            text: self.text.clone(),
            location: self
                .location
                .as_ref()
                .map(|(lat_e7, lon_e7, address)| Location {
                    lat_e7: *lat_e7,
                    lon_e7: *lon_e7,
                    address: address.clone(),
                }),
            attachments: self
                .attachments
                .iter()
                .map(|(id, size, mime)| AttachmentRef {
                    id: *id,
                    size: *size,
                    mime: mime.clone(),
                })
                .collect(),
        }
    }

    /// Its recipients.
    pub(crate) fn recipients(&self) -> Vec<TerminalId> {
        self.recipients.iter().copied().map(TerminalId).collect()
    }

    fn check(&self) -> Result<(), Malformed> {
        let field = |ok: bool, what| {
            if ok {
                Ok(())
            } else {
                Err(Malformed::Field(what))
            }
        };
        field(
            AlertKind::from_code(self.kind).is_some(),
            "unknown alert kind",
        )?;
        field(self.title.len() <= MAX_TITLE, "title too long")?;
        field(self.text.len() <= MAX_TEXT, "text too long")?;
        field(
            self.location
                .as_ref()
                .is_none_or(|(_, _, a)| a.len() <= MAX_ADDRESS),
            "address too long",
        )?;
        field(
            self.attachments.len() <= MAX_ATTACHMENTS
                && self.attachments.iter().all(|(_, _, m)| m.len() <= MAX_MIME),
            "attachments over their bounds",
        )?;
        field(self.target.len() <= MAX_TARGET, "target too long")?;
        field(!self.recipients.is_empty(), "no recipients")
    }
}

/// A recipient's receipt as the stream holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiptRecord {
    /// The alert (a cluster id).
    pub alert: u64,
    /// The recipient.
    pub terminal: u32,
    /// `ReceiptStatus` code, never `Pending`.
    pub status: u8,
    /// When its node received it (Unix ms).
    pub at_ms: u64,
    /// A rejection's reason.
    pub reason: String,
}

impl ReceiptRecord {
    /// The status (checked when decoded).
    pub(crate) fn status(&self) -> ReceiptStatus {
        ReceiptStatus::from_code(self.status).unwrap_or(ReceiptStatus::Pending)
    }

    fn check(&self) -> Result<(), Malformed> {
        if self.alert < CLUSTER_IDS {
            return Err(Malformed::Field("receipt for a node's own alert"));
        }
        match ReceiptStatus::from_code(self.status) {
            None | Some(ReceiptStatus::Pending) => Err(Malformed::Field("bad receipt status")),
            Some(_) if self.reason.len() > MAX_TEXT => Err(Malformed::Field("reason too long")),
            Some(_) => Ok(()),
        }
    }
}

/// A record read from the stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    /// An alert, with its cluster id.
    Alert(u64, AlertRecord),
    /// A receipt.
    Receipt(ReceiptRecord),
}

impl Record {
    /// Decodes the record at stream sequence `sequence` on `subject`.
    pub(crate) fn decode(subject: &str, sequence: u64, payload: &[u8]) -> Result<Self, Malformed> {
        if payload.len() > MAX_RECORD {
            return Err(Malformed::TooLarge(payload.len()));
        }
        match subject {
            ALERT_SUBJECT => {
                let alert: AlertRecord = serde_json::from_slice(payload)?;
                alert.check()?;
                let id = CLUSTER_IDS
                    .checked_add(sequence)
                    .ok_or(Malformed::Field("sequence out of range"))?;
                Ok(Record::Alert(id, alert))
            }
            RECEIPT_SUBJECT => {
                let receipt: ReceiptRecord = serde_json::from_slice(payload)?;
                receipt.check()?;
                Ok(Record::Receipt(receipt))
            }
            _ => Err(Malformed::Field("unknown subject")),
        }
    }
}

/// Receipts waiting to be shared again, at most (a receipt is about 100
/// bytes: 1.6 MB). Beyond it the terminal is told to send it again.
const LATER: usize = 16_384;

impl Cluster {
    /// Queues a receipt this node stored but the stream did not acknowledge
    /// (JetStream electing a leader for longer than the retries, NATS
    /// unreachable): it is published again every second until the stream
    /// takes it, so the issuer hears of it wherever it is. False when the
    /// queue is full.
    pub(crate) fn share_later(self: &Arc<Self>, record: ReceiptRecord) -> bool {
        let tx = self.later.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<ReceiptRecord>(LATER);
            let cluster = Arc::clone(self);
            tokio::spawn(async move {
                while let Some(record) = rx.recv().await {
                    while cluster.publish_receipt(&record).await.is_err() {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            });
            tx
        });
        tx.try_send(record).is_ok()
    }

    /// Creates the alert stream, or updates it to this node's settings.
    /// Every node calls it when it joins; the same settings make it a
    /// no-op.
    pub(crate) async fn ensure_alert_stream(&self) -> Result<(), Error> {
        self.jetstream()
            .create_or_update_stream(stream::Config {
                name: STREAM.to_owned(),
                subjects: vec!["ptt.alerts.>".to_owned()],
                num_replicas: self.config().replicas as usize,
                storage: stream::StorageType::File,
                max_age: MAX_AGE,
                // Tries of one record (same `Nats-Msg-Id`) within this are
                // stored once.
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(|e| Error::Stream(e.to_string()))
    }

    /// This node's durable consumer of the alert stream (named after the
    /// node; every record from the first; each acknowledged once stored).
    pub(crate) async fn alert_consumer(&self) -> Result<consumer::PullConsumer, Error> {
        let stream = self
            .jetstream()
            .get_stream(STREAM)
            .await
            .map_err(|e| Error::Stream(e.to_string()))?;
        let name = format!("alerts-{}", self.me);
        stream
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    deliver_policy: consumer::DeliverPolicy::All,
                    ack_policy: consumer::AckPolicy::Explicit,
                    // A record sent to this node through a NATS server
                    // that died is sent again after this: short, as
                    // applying a record twice is harmless.
                    ack_wait: Duration::from_secs(5),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Error::Stream(e.to_string()))
    }

    /// Writes an alert's record; returns its cluster id once the stream
    /// acknowledged it. `key` names this alert's tries (one per
    /// `AlertSend`), so a try whose answer was lost is not stored twice.
    pub(crate) async fn publish_alert(
        &self,
        key: &str,
        record: &AlertRecord,
    ) -> Result<u64, Error> {
        let payload = serde_json::to_vec(record).expect("an alert record serialises");
        let sequence = self.publish(ALERT_SUBJECT, key, payload.into()).await?;
        Ok(CLUSTER_IDS + sequence)
    }

    /// Writes a receipt's record, once the stream acknowledged it.
    pub(crate) async fn publish_receipt(&self, record: &ReceiptRecord) -> Result<(), Error> {
        // One id per step of one recipient: a step sent twice (a resend, a
        // second node) is stored once within the duplicate window, and
        // applying it again later is a harmless duplicate.
        let key = format!("r-{}-{}-{}", record.alert, record.terminal, record.status);
        let payload = serde_json::to_vec(record).expect("a receipt record serialises");
        self.publish(RECEIPT_SUBJECT, &key, payload.into())
            .await
            .map(drop)
    }

    /// Publishes with acknowledgement, trying again with backoff for
    /// [`PUBLISH_WINDOW`]; returns the stream sequence.
    async fn publish(
        &self,
        subject: &'static str,
        key: &str,
        payload: Bytes,
    ) -> Result<u64, Error> {
        let deadline = tokio::time::Instant::now() + PUBLISH_WINDOW;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let publish = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(key);
            let attempt = async {
                let ack = self
                    .jetstream()
                    .send_publish(subject, publish)
                    .await
                    .map_err(|e| e.to_string())?;
                ack.await.map_err(|e| e.to_string())
            };
            let last = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(ack)) => {
                    Metrics::add(&self.metrics.cluster_alert_records_out, 1);
                    return Ok(ack.sequence);
                }
                Ok(Err(e)) => e,
                Err(_) => "no answer".to_owned(),
            };
            let now = tokio::time::Instant::now();
            if now + backoff >= deadline {
                return Err(Error::Unacknowledged(PUBLISH_WINDOW, last));
            }
            Metrics::add(&self.metrics.cluster_alert_publish_retries, 1);
            let nats = self.client().connection_state();
            tracing::debug!(subject, key, %nats, "alert stream write failed, trying again: {last}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> AlertRecord {
        AlertRecord {
            issuer: 300,
            kind: AlertKind::Dispatch.code(),
            priority: 3,
            ttl_s: 600,
            title: "两名男子试图拉车门".into(),
            text: "城南路165号".into(),
            location: Some((291_000_000, 1_196_500_000, "城南路165号".into())),
            attachments: vec![(7, 4, "image/jpeg".into())],
            target: "group 5".into(),
            created_ms: 1_000,
            recipients: vec![501, 502],
        }
    }

    fn receipt() -> ReceiptRecord {
        ReceiptRecord {
            alert: CLUSTER_IDS + 1,
            terminal: 501,
            status: ReceiptStatus::Delivered.code(),
            at_ms: 2_000,
            reason: String::new(),
        }
    }

    #[test]
    fn records_round_trip_and_alerts_take_their_sequence_as_id() {
        let a = alert();
        let bytes = serde_json::to_vec(&a).unwrap();
        let decoded = Record::decode(ALERT_SUBJECT, 42, &bytes).unwrap();
        assert_eq!(decoded, Record::Alert(CLUSTER_IDS + 42, a.clone()));
        let body = a.body();
        let again = AlertRecord::new(
            TerminalId(300),
            &body,
            a.target.clone(),
            a.created_ms,
            &a.recipients(),
        );
        assert_eq!(again, a, "body and recipients carry everything");
        let r = receipt();
        let bytes = serde_json::to_vec(&r).unwrap();
        assert_eq!(
            Record::decode(RECEIPT_SUBJECT, 43, &bytes).unwrap(),
            Record::Receipt(r)
        );
    }

    #[test]
    fn the_record_of_the_largest_valid_alert_is_accepted() {
        let most: Vec<TerminalId> = (0..MAX_TARGET_TERMINALS as u32)
            .map(|i| TerminalId(u32::MAX - i))
            .collect();
        let target =
            ptt_gateway_core::recipients::describe(&ptt_codec::Target::Terminals(most.clone()));
        let body = AlertBody {
            kind: AlertKind::Dispatch,
            priority: 3,
            ttl_s: u32::MAX,
            title: "x".repeat(MAX_TITLE),
            text: "x".repeat(MAX_TEXT),
            location: Some(Location {
                lat_e7: i32::MIN,
                lon_e7: i32::MAX,
                address: "x".repeat(MAX_ADDRESS),
            }),
            attachments: vec![
                AttachmentRef {
                    id: u64::MAX,
                    size: u32::MAX,
                    mime: "m".repeat(MAX_MIME),
                };
                MAX_ATTACHMENTS
            ],
        };
        let record = AlertRecord::new(TerminalId(300), &body, target, u64::MAX, &most);
        let bytes = serde_json::to_vec(&record).unwrap();
        assert!(bytes.len() < MAX_RECORD);
        assert_eq!(
            Record::decode(ALERT_SUBJECT, 1, &bytes).unwrap(),
            Record::Alert(CLUSTER_IDS + 1, record)
        );
        let receipt = ReceiptRecord {
            reason: "x".repeat(ptt_codec::control::MAX_MESSAGE),
            ..receipt()
        };
        let bytes = serde_json::to_vec(&receipt).unwrap();
        assert!(Record::decode(RECEIPT_SUBJECT, 2, &bytes).is_ok());
    }

    #[test]
    fn malformed_and_hostile_records_are_refused_without_panicking() {
        fn json(v: &impl Serialize) -> Vec<u8> {
            serde_json::to_vec(v).unwrap()
        }
        let bad_alerts = [
            AlertRecord {
                kind: 99,
                ..alert()
            },
            AlertRecord {
                title: "x".repeat(MAX_TITLE + 1),
                ..alert()
            },
            AlertRecord {
                text: "x".repeat(MAX_TEXT + 1),
                ..alert()
            },
            AlertRecord {
                location: Some((0, 0, "x".repeat(MAX_ADDRESS + 1))),
                ..alert()
            },
            AlertRecord {
                attachments: vec![(1, 1, "m".into()); MAX_ATTACHMENTS + 1],
                ..alert()
            },
            AlertRecord {
                attachments: vec![(1, 1, "m".repeat(MAX_MIME + 1))],
                ..alert()
            },
            AlertRecord {
                recipients: Vec::new(),
                ..alert()
            },
        ];
        for a in &bad_alerts {
            assert!(Record::decode(ALERT_SUBJECT, 1, &json(a)).is_err(), "{a:?}");
        }
        let bad_receipts = [
            ReceiptRecord {
                alert: 5,
                ..receipt()
            },
            ReceiptRecord {
                status: 0,
                ..receipt()
            },
            ReceiptRecord {
                status: 200,
                ..receipt()
            },
            ReceiptRecord {
                reason: "x".repeat(MAX_TEXT + 1),
                ..receipt()
            },
        ];
        for r in &bad_receipts {
            assert!(
                Record::decode(RECEIPT_SUBJECT, 1, &json(r)).is_err(),
                "{r:?}"
            );
        }
        let good = json(&alert());
        assert!(
            Record::decode(ALERT_SUBJECT, u64::MAX, &good).is_err(),
            "id overflow"
        );
        assert!(Record::decode("ptt.alerts.other", 1, &good).is_err());
        assert!(
            Record::decode(RECEIPT_SUBJECT, 1, &good).is_err(),
            "wrong shape"
        );
        let big = vec![b' '; MAX_RECORD + 1];
        assert!(matches!(
            Record::decode(ALERT_SUBJECT, 1, &big),
            Err(Malformed::TooLarge(_))
        ));
        let mut extra: serde_json::Value = serde_json::from_slice(&good).unwrap();
        extra["admin"] = true.into();
        let extra = serde_json::to_vec(&extra).unwrap();
        assert!(
            Record::decode(ALERT_SUBJECT, 1, &extra).is_err(),
            "unknown field"
        );
        for junk in [
            &b""[..],
            b"{",
            b"null",
            b"[]",
            b"\xff\xfe",
            b"{\"issuer\":-1}",
        ] {
            assert!(Record::decode(ALERT_SUBJECT, 1, junk).is_err());
            assert!(Record::decode(RECEIPT_SUBJECT, 1, junk).is_err());
        }
        // Every prefix of a good record is refused, never a panic.
        for end in 0..good.len() {
            let _ = Record::decode(ALERT_SUBJECT, 1, &good[..end]);
        }
    }
}
