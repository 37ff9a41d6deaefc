//! Drill reports (拉动演练): the arithmetic is the core's
//! ([`ptt_gateway_core::drill`]); this module reads the store and builds the
//! report.

use ptt_codec::AlertKind;

pub use ptt_gateway_core::drill::{
    report, Drill, Level, Measure, Progress, Report, Row, DEFAULT_MARKS_S,
};

use crate::org::Org;
use crate::store::{self, Store};

/// Builds the report of drill `alert` from the store at `now_ms` and keeps
/// a copy there. The gateway answers `DrillReportQuery` with it; the
/// `ptt-gateway drill-report` command exports it. Fails with
/// [`store::Error::UnknownAlert`] or [`store::Error::NotADrill`] (refusals,
/// see [`store::Error::is_refusal`]) or a database error.
pub fn from_store(
    store: &Store,
    org: &Org,
    marks_s: &[u32],
    alert: u64,
    now_ms: u64,
) -> Result<Report, store::Error> {
    let a = store
        .alert(alert)?
        .ok_or(store::Error::UnknownAlert(alert))?;
    if a.body.kind != AlertKind::Drill {
        return Err(store::Error::NotADrill {
            alert,
            kind: a.body.kind,
        });
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
    Ok(report)
}
