//! The alert rules as the session handlers call them: the rules themselves
//! are the core's ([`ptt_gateway_core::recipients`]); this adds the clock.

use ptt_codec::{AlertBody, ErrorCode, Target, TerminalId};
use ptt_gateway_core::recipients;

use crate::clock::now_ms;
use crate::location::Positions;
use crate::org::Org;

/// Why an alert was refused, as `AlertRefused` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable code for the wire.
    pub code: ErrorCode,
    /// Detail for logs and operators.
    pub message: String,
}

impl From<recipients::Refusal> for Refusal {
    fn from(r: recipients::Refusal) -> Self {
        Refusal {
            code: r.to_code(),
            message: r.to_string(),
        }
    }
}

/// Alert rules over the org, at the current time.
#[derive(Debug, Clone, Copy)]
pub struct Service;

impl Service {
    /// [`recipients::resolve`] now.
    pub fn recipients(
        org: &Org,
        positions: &Positions,
        online: impl Fn(TerminalId) -> bool,
        issuer: TerminalId,
        body: &AlertBody,
        target: &Target,
    ) -> Result<Vec<TerminalId>, Refusal> {
        recipients::resolve(org, positions, online, issuer, body, target, now_ms())
            .map_err(Refusal::from)
    }

    /// [`recipients::station_consoles`].
    pub fn station_consoles(org: &Org, member: TerminalId) -> Vec<TerminalId> {
        recipients::station_consoles(org, member)
    }

    /// [`recipients::describe`].
    pub fn describe(target: &Target) -> String {
        recipients::describe(target)
    }
}
