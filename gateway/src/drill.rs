//! Drill reports (拉动演练): the arithmetic is the core's
//! ([`ptt_gateway_core::drill`]); this module reads the store and builds the
//! report.

use ptt_codec::{AlertKind, ErrorCode};

pub use ptt_gateway_core::drill::{
    report, Drill, Level, Measure, Progress, Report, Row, DEFAULT_MARKS_S,
};

use crate::alert::Store;
use crate::org::Org;

/// Builds the report of drill `alert` from the store at `now_ms` and keeps
/// a copy there. The gateway answers `DrillReportQuery` with it; the
/// `ptt-gateway drill-report` command exports it.
pub fn from_store(
    store: &Store,
    org: &Org,
    marks_s: &[u32],
    alert: u64,
    now_ms: u64,
) -> Result<Result<Report, (ErrorCode, String)>, crate::alert::store::Error> {
    let Some(a) = store.alert(alert)? else {
        return Ok(Err((ErrorCode::UnknownAlert, format!("no alert {alert}"))));
    };
    if a.body.kind != AlertKind::Drill {
        return Ok(Err((
            ErrorCode::NotADrill,
            format!("alert {alert} is a {:?}, not a drill", a.body.kind),
        )));
    }
    let progress = store.drill_progress(alert)?;
    let report = report(
        org,
        &Drill {
            alert,
            title: &a.body.title,
            issuer: a.issuer,
            started_ms: a.created_ms,
            progress: &progress,
        },
        marks_s,
        now_ms,
    );
    store.save_drill_report(alert, now_ms, &report.to_json())?;
    Ok(Ok(report))
}
