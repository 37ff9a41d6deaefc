//! Drills: `DrillReportQuery`, the report on a stream of its own.

use bytes::Bytes;
use ptt_codec::control::kind;
use ptt_codec::{ErrorCode, ServerMsg};

use super::attachments::send_stream;
use super::Caller;
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
            let allowed = issuer.is_some_and(|i| {
                i == terminal
                    || match (org.terminal(terminal), org.terminal(i)) {
                        (Some(me), Some(them)) => {
                            me.is_console() && org.is_ancestor_or_self(me.node, them.node)
                        }
                        _ => false,
                    }
            });
            if !allowed {
                return Ok(Err((
                    ErrorCode::UnknownAlert,
                    format!("no drill {alert} of yours"),
                )));
            }
            match crate::drill::from_store(s, org, &hub.config().drill.marks_s, alert, now_ms()) {
                Err(e) if e.is_refusal() => Ok(Err((e.to_code(), e.to_string()))),
                made => made.map(Ok),
            }
        })
        .await;
    match made {
        Ok(Ok(report)) => {
            let json = Bytes::from(report.to_json());
            let header = ServerMsg::DrillReport {
                alert,
                size: json.len() as u32,
            };
            if let Err(e) = send_stream(&cx.conn, header, &json).await {
                tracing::debug!(alert, "sending a drill report failed: {e}");
            }
        }
        Ok(Err((code, message))) => cx.error(code, frame, message),
        Err(e) => {
            tracing::error!("making a drill report failed: {e}");
            cx.error(ErrorCode::Internal, frame, "report unavailable; retry");
        }
    }
}
