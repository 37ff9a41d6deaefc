//! Session rules: what the first control frame must be, who is let in, and
//! who may join which group. The gateway's session shell reads the frames
//! and applies these answers.

use ptt_codec::control::VERSION;
use ptt_codec::{ClientMsg, CloseCode, ErrorCode, GroupId, TerminalId};
use ptt_org::auth::ProvisioningKey;
use ptt_org::{Denied, Org, Policy, Rights};

/// Why a connection's first frame does not open a session. Each ends the
/// connection with [`Refusal::to_code`] and [`Refusal::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The first frame is not a well-formed `Hello`.
    #[error("first frame must be a valid hello")]
    NotHello,
    /// The `Hello` speaks another protocol version.
    #[error("unsupported protocol version")]
    UnsupportedVersion,
    /// The terminal is not in the org, or its credential is wrong (the two
    /// are not told apart).
    #[error("unknown terminal or wrong credential")]
    AuthFailed {
        /// The terminal the `Hello` claimed to be.
        terminal: TerminalId,
    },
}

impl Refusal {
    /// The close code the connection ends with.
    pub fn to_code(&self) -> CloseCode {
        match self {
            Refusal::NotHello => CloseCode::ProtocolViolation,
            Refusal::UnsupportedVersion => CloseCode::UnsupportedVersion,
            Refusal::AuthFailed { .. } => CloseCode::AuthFailed,
        }
    }

    /// The reason sent with the close code.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotHello => "first frame must be a valid hello",
            Refusal::UnsupportedVersion => "unsupported protocol version",
            Refusal::AuthFailed { .. } => "unknown terminal or wrong credential",
        }
    }
}

/// Checks a connection's first control frame (`None` when it did not
/// decode): a `Hello` of this protocol version from a terminal of `org`
/// whose credential `key` verifies. Returns the terminal.
///
/// The credential is verified even for terminals not in the org, so the
/// time taken does not tell the two failures apart.
pub fn authenticate(
    org: &Org,
    key: &ProvisioningKey,
    first: Option<ClientMsg>,
) -> Result<TerminalId, Refusal> {
    authenticate_with(org, first, |terminal, credential| {
        key.verify(terminal, credential)
    })
}

/// As [`authenticate`], with the credential checked by `verify` (the
/// terminal and the credential's bytes): a browser console's `Hello`
/// carries its operator's session token instead of a provisioned
/// credential. `verify` is called even for terminals not in the org.
pub fn authenticate_with(
    org: &Org,
    first: Option<ClientMsg>,
    verify: impl FnOnce(TerminalId, &[u8]) -> bool,
) -> Result<TerminalId, Refusal> {
    let Some(ClientMsg::Hello {
        version,
        terminal,
        credential,
        ..
    }) = first
    else {
        return Err(Refusal::NotHello);
    };
    if version != VERSION {
        return Err(Refusal::UnsupportedVersion);
    }
    let known = org.terminal(terminal).is_some();
    let valid = verify(terminal, &credential);
    if known && valid {
        Ok(terminal)
    } else {
        Err(Refusal::AuthFailed { terminal })
    }
}

/// Why a `Join` is refused. Answered with an `Error` of
/// [`JoinRefusal::to_code`] and [`JoinRefusal::message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    /// The group is not in the org.
    #[error("no such group")]
    UnknownGroup,
    /// The policy gives the terminal neither listen nor talk there.
    #[error("not allowed in this group")]
    NotAllowed,
    /// The policy could not be asked (the terminal is not in the org).
    #[error("{0:?}")]
    Unanswered(Denied),
    /// The terminal is in as many groups as `session.max_groups` allows.
    #[error("group limit reached")]
    TooManyGroups,
    /// The session is not registered (a gateway bug).
    #[error("session not registered")]
    Unregistered,
}

impl JoinRefusal {
    /// The stable wire code of the refusal.
    pub fn to_code(&self) -> ErrorCode {
        match self {
            JoinRefusal::UnknownGroup | JoinRefusal::Unanswered(_) => ErrorCode::UnknownGroup,
            JoinRefusal::NotAllowed => ErrorCode::JoinDenied,
            JoinRefusal::TooManyGroups => ErrorCode::TooManyGroups,
            JoinRefusal::Unregistered => ErrorCode::Internal,
        }
    }

    /// The message sent with the code.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// The rights `terminal` joins `group` with under `policy`: at least one of
/// listen and talk, or a refusal.
pub fn join_rights(
    org: &Org,
    policy: &Policy,
    terminal: TerminalId,
    group: GroupId,
) -> Result<Rights, JoinRefusal> {
    if org.node(group).is_none() {
        return Err(JoinRefusal::UnknownGroup);
    }
    match org.rights(policy, terminal, group) {
        Ok(r) if r.listen || r.talk => Ok(r),
        Ok(_) | Err(Denied::NotAllowed) => Err(JoinRefusal::NotAllowed),
        Err(e) => Err(JoinRefusal::Unanswered(e)),
    }
}

/// Whether a terminal in `count` groups may be in `group` too, given
/// whether it is in it already (a repeated join never counts twice) and
/// the limit `max_groups`.
pub fn within_limit(count: usize, already: bool, max_groups: usize) -> Result<(), JoinRefusal> {
    if already || count < max_groups {
        Ok(())
    } else {
        Err(JoinRefusal::TooManyGroups)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const TREE: &str = r#"
        [[node]]
        id = 1
        kind = "city"
        name = "city"
        [[node]]
        id = 2
        parent = 1
        kind = "district"
        name = "district"
        [[node]]
        id = 3
        parent = 2
        kind = "police_station"
        name = "east"
        [[node]]
        id = 4
        parent = 3
        kind = "station"
        name = "station"
        [[node]]
        id = 5
        parent = 4
        kind = "unit"
        name = "unit 1"
        [[node]]
        id = 6
        parent = 4
        kind = "unit"
        name = "unit 2"
        [[terminal]]
        id = 501
        node = 5
        role = "security_guard"
        kind = "handheld"
        name = "guard"
    "#;

    fn org() -> Org {
        Org::from_toml(TREE, Path::new(".")).expect("the test tree is valid")
    }

    fn hello(version: u8, terminal: u32, credential: Vec<u8>) -> Option<ClientMsg> {
        Some(ClientMsg::Hello {
            version,
            terminal: TerminalId(terminal),
            credential: credential.into(),
            media: ptt_codec::MediaOffer::NONE,
        })
    }

    #[test]
    fn a_hello_with_the_right_credential_opens_a_session() {
        let (org, key) = (org(), ProvisioningKey::from_bytes([7; 32]));
        let good = key.credential(TerminalId(501)).to_vec();
        assert_eq!(
            authenticate(&org, &key, hello(VERSION, 501, good.clone())),
            Ok(TerminalId(501))
        );
        assert_eq!(
            authenticate(&org, &key, hello(VERSION + 1, 501, good)),
            Err(Refusal::UnsupportedVersion)
        );
        assert_eq!(
            authenticate(&org, &key, hello(VERSION, 501, vec![0; 32])),
            Err(Refusal::AuthFailed {
                terminal: TerminalId(501)
            })
        );
        // A valid credential of a terminal not in the org is refused alike.
        let stranger = key.credential(TerminalId(999)).to_vec();
        assert_eq!(
            authenticate(&org, &key, hello(VERSION, 999, stranger)),
            Err(Refusal::AuthFailed {
                terminal: TerminalId(999)
            })
        );
        assert_eq!(
            authenticate(&org, &key, Some(ClientMsg::Ping { nonce: 1 })),
            Err(Refusal::NotHello)
        );
        assert_eq!(authenticate(&org, &key, None), Err(Refusal::NotHello));
    }

    #[test]
    fn refusals_map_to_stable_close_codes_and_reasons() {
        let cases = [
            (
                Refusal::NotHello,
                CloseCode::ProtocolViolation,
                "first frame must be a valid hello",
            ),
            (
                Refusal::UnsupportedVersion,
                CloseCode::UnsupportedVersion,
                "unsupported protocol version",
            ),
            (
                Refusal::AuthFailed {
                    terminal: TerminalId(1),
                },
                CloseCode::AuthFailed,
                "unknown terminal or wrong credential",
            ),
        ];
        for (refusal, code, reason) in cases {
            assert_eq!(refusal.to_code(), code);
            assert_eq!(refusal.reason(), reason);
            assert_eq!(refusal.to_string(), reason);
        }
    }

    #[test]
    fn joins_follow_the_policy_and_the_group_limit() {
        let (org, policy) = (org(), Policy::default());
        let guard = TerminalId(501);
        let own = join_rights(&org, &policy, guard, GroupId(5)).expect("its own unit");
        assert!(own.listen && own.talk);
        assert_eq!(
            join_rights(&org, &policy, guard, GroupId(77)),
            Err(JoinRefusal::UnknownGroup)
        );
        assert_eq!(
            join_rights(&org, &policy, guard, GroupId(3)),
            Err(JoinRefusal::NotAllowed)
        );
        assert_eq!(
            join_rights(&org, &policy, TerminalId(999), GroupId(5)),
            Err(JoinRefusal::Unanswered(Denied::UnknownTerminal))
        );
        assert_eq!(within_limit(0, false, 1), Ok(()));
        assert_eq!(within_limit(1, false, 1), Err(JoinRefusal::TooManyGroups));
        assert_eq!(within_limit(1, true, 1), Ok(()));
    }

    #[test]
    fn join_refusals_map_to_stable_codes_and_messages() {
        let cases = [
            (
                JoinRefusal::UnknownGroup,
                ErrorCode::UnknownGroup,
                "no such group",
            ),
            (
                JoinRefusal::NotAllowed,
                ErrorCode::JoinDenied,
                "not allowed in this group",
            ),
            (
                JoinRefusal::Unanswered(Denied::UnknownTerminal),
                ErrorCode::UnknownGroup,
                "UnknownTerminal",
            ),
            (
                JoinRefusal::TooManyGroups,
                ErrorCode::TooManyGroups,
                "group limit reached",
            ),
            (
                JoinRefusal::Unregistered,
                ErrorCode::Internal,
                "session not registered",
            ),
        ];
        for (refusal, code, message) in cases {
            assert_eq!(refusal.to_code(), code);
            assert_eq!(refusal.message(), message);
        }
    }
}
