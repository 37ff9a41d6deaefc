//! Drills: `DrillReportQuery`, the report on a stream of its own.

use bytes::Bytes;
use ptt_codec::control::kind;
use ptt_codec::{ErrorCode, ServerMsg};

use super::attachments::send_stream;
use super::{Caller, Error};
use crate::clock::now_ms;

/// `DrillReportQuery`: the report, on a stream of its own.
pub(crate) async fn query(cx: Caller, alert: u64) {
    let frame = kind::DRILL_REPORT_QUERY;
    let (hub, terminal) = (cx.hub.clone(), cx.terminal);
    let made = cx
        .hub
        .desk()
        .blocking(move |s| {
            let org = hub.org();
            // Only the issuer, or a console above the issuer, may see it.
            let issuer = s.alert(alert)?.map(|a| a.issuer);
            if !issuer.is_some_and(|i| org.commands(terminal, i)) {
                return Ok(None);
            }
            let marks = &hub.config().drill.marks_s;
            crate::drill::from_store(s, &org, marks, alert, now_ms()).map(Some)
        })
        .await
        .map_err(Error::from);
    match made {
        Ok(Some(report)) => {
            let json = Bytes::from(report.to_json());
            let header = ServerMsg::DrillReport {
                alert,
                size: json.len() as u32,
            };
            if let Err(e) = send_stream(&cx.conn, header, &json).await {
                tracing::debug!(alert, "sending a drill report failed: {e}");
            }
        }
        Ok(None) => cx.error(
            ErrorCode::UnknownAlert,
            frame,
            format!("no drill {alert} of yours"),
        ),
        Err(e) if e.to_code() != ErrorCode::Internal => cx.error(e.to_code(), frame, e.to_string()),
        Err(e) => {
            tracing::error!("making a drill report failed: {e}");
            cx.error(ErrorCode::Internal, frame, "report unavailable; retry");
        }
    }
}
