//! Receipts: each recipient's status, moved forward by the core's rule
//! ([`ptt_gateway_core::alert::advance`]) and written in batches.

use ptt_codec::{ReceiptStatus, TerminalId};
use ptt_gateway_core::alert::{advance, Step};
use rusqlite::{params, OptionalExtension};

use super::{Error, Receipt, ReceiptIn, Store};

fn status_column(s: ReceiptStatus) -> &'static str {
    match s {
        ReceiptStatus::Pending => "created",
        ReceiptStatus::Delivered => "delivered_ms",
        ReceiptStatus::Read => "read_ms",
        ReceiptStatus::Accepted => "accepted_ms",
        ReceiptStatus::Rejected => "rejected_ms",
        ReceiptStatus::Arrived => "arrived_ms",
        ReceiptStatus::Resolved => "resolved_ms",
    }
}

impl Store {
    /// Records a recipient's receipt at `at_ms`.
    pub fn record_receipt(
        &self,
        alert: u64,
        terminal: TerminalId,
        status: ReceiptStatus,
        at_ms: u64,
        reason: &str,
    ) -> Result<Receipt, Error> {
        let receipt = ReceiptIn {
            alert,
            terminal,
            status,
            at_ms,
            reason: reason.to_owned(),
        };
        let mut out = self.record_receipts(std::slice::from_ref(&receipt))?;
        Ok(out.pop().unwrap_or(Receipt::UnknownAlert))
    }

    /// Records many receipts in one transaction (one disk flush: group
    /// commit), in order; returns what each did.
    pub fn record_receipts(&self, receipts: &[ReceiptIn]) -> Result<Vec<Receipt>, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(receipts.len());
        for r in receipts {
            out.push(Self::apply_receipt(
                &tx, r.alert, r.terminal, r.status, r.at_ms, &r.reason,
            )?);
        }
        tx.commit()?;
        Ok(out)
    }

    fn apply_receipt(
        tx: &rusqlite::Transaction<'_>,
        alert: u64,
        terminal: TerminalId,
        status: ReceiptStatus,
        at_ms: u64,
        reason: &str,
    ) -> Result<Receipt, Error> {
        let Some(issuer) = tx
            .query_row(
                "SELECT issuer FROM alert WHERE id = ?1",
                [alert as i64],
                |r| r.get::<_, u32>(0),
            )
            .optional()?
        else {
            return Ok(Receipt::UnknownAlert);
        };
        let Some(current) = tx
            .query_row(
                "SELECT status FROM recipient WHERE alert = ?1 AND terminal = ?2",
                params![alert as i64, terminal.0],
                |r| r.get::<_, u8>(0),
            )
            .optional()?
        else {
            return Ok(Receipt::NotRecipient);
        };
        let current = ReceiptStatus::from_code(current).unwrap_or(ReceiptStatus::Pending);
        match advance(current, status) {
            Err(e) => Ok(Receipt::Invalid(e)),
            Ok(Step::Duplicate) => Ok(Receipt::Duplicate { status: current }),
            Ok(Step::Advance) => {
                let column = status_column(status);
                let sql = format!(
                    "UPDATE recipient SET status = ?1, {column} = ?2, reason = CASE WHEN ?3 = '' THEN reason ELSE ?3 END
                     WHERE alert = ?4 AND terminal = ?5"
                );
                tx.execute(
                    &sql,
                    params![
                        status.code(),
                        at_ms as i64,
                        reason,
                        alert as i64,
                        terminal.0
                    ],
                )?;
                Ok(Receipt::Advanced {
                    issuer: TerminalId(issuer),
                    status,
                })
            }
        }
    }
}
