//! Stable numeric codes carried on the wire.
//!
//! Every number here is part of the protocol (docs/PROTOCOL.md). Never renumber
//! a variant; add new ones at the end. `tests::codes_are_stable` pins them.

macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr($repr)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The wire value.
            pub const fn code(self) -> $repr {
                self as $repr
            }

            /// Parses a wire value; `None` for an unknown value.
            pub fn from_code(code: $repr) -> Option<Self> {
                match code {
                    $( $value => Some($name::$variant), )+
                    _ => None,
                }
            }
        }
    };
}

wire_enum! {
    /// Floor priority class, highest wins (TS 24.380 distinguishes emergency and
    /// imminent peril calls from normal ones). A higher class pre-empts a lower
    /// one regardless of the numeric priority.
    #[derive(PartialOrd, Ord)]
    pub enum Class: u8 {
        /// Ordinary talk.
        Normal = 0,
        /// Imminent peril: someone is about to be hurt.
        ImminentPeril = 1,
        /// Emergency (SOS): outranks everything.
        Emergency = 2,
    }
}

wire_enum! {
    /// Why a floor request was refused. Numbers follow TS 24.380 §8.2.6.2
    /// (Floor Deny "Reject Cause") where a cause exists there.
    pub enum DenyCause: u16 {
        /// Another terminal holds the floor and queueing is not possible.
        AnotherHasPermission = 1,
        /// Internal error of the floor control server.
        InternalError = 2,
        /// The group has only the requester listening; nobody would hear.
        OnlyOneParticipant = 3,
        /// The terminal may only listen in this group.
        ReceiveOnly = 5,
        /// The queue is full.
        NoResources = 6,
        /// The terminal has not joined the group.
        NotJoined = 100,
        /// The terminal's role may not claim the emergency class on a floor
        /// request (`policy.emergency_roles`); its SOS still does.
        EmergencyNotAllowed = 101,
        /// The group's floor arbiter cannot be reached from the terminal's
        /// gateway node (a cluster without quorum, or an arbiter taking
        /// over); try again in a few seconds.
        ArbiterUnavailable = 102,
        /// Any other reason.
        Other = 255,
    }
}

wire_enum! {
    /// Why the floor was taken away from its holder. Numbers follow TS 24.380
    /// §8.2.6.2 (Floor Revoke "Reject Cause").
    pub enum RevokeCause: u16 {
        /// The burst exceeded the group's talk-time limit (TS 24.380 T2).
        BurstTooLong = 2,
        /// The terminal is no longer allowed to talk in this group.
        NoPermission = 3,
        /// A request of higher class or priority pre-empted the burst.
        Preempted = 4,
        /// The group's floor arbiter was lost (its node died, or this node
        /// lost the cluster's quorum); the floor is idle until a new
        /// arbiter takes over.
        ArbiterLost = 100,
        /// Any other reason, e.g. the gateway is shutting down.
        Other = 255,
    }
}

wire_enum! {
    /// Error codes carried in an `Error` control frame. Non-fatal: the
    /// connection stays open unless it is also closed with a [`CloseCode`].
    pub enum ErrorCode: u16 {
        /// The frame could not be decoded.
        Malformed = 1,
        /// The frame type is known but not allowed in this state.
        UnexpectedFrame = 2,
        /// The group does not exist.
        UnknownGroup = 10,
        /// The terminal may not join this group.
        JoinDenied = 11,
        /// The terminal is not a member of this group.
        NotJoined = 12,
        /// Too many groups joined at once.
        TooManyGroups = 13,
        /// The alert is invalid (empty title, zero time-to-live, no
        /// recipients).
        AlertInvalid = 20,
        /// The target is outside the sender's authority.
        TargetNotAllowed = 21,
        /// No such alert (or not this terminal's to ask about).
        UnknownAlert = 22,
        /// The terminal is not a recipient of this alert.
        NotRecipient = 23,
        /// The receipt contradicts an earlier one (accepting after
        /// rejecting).
        InvalidReceipt = 24,
        /// An attachment is larger than 4 MiB, or its stream did not carry
        /// the size it announced.
        AttachmentInvalid = 25,
        /// No such attachment, or not one this terminal may fetch or use.
        UnknownAttachment = 26,
        /// The alert is not a drill (drill report asked for another kind).
        NotADrill = 27,
        /// Over the terminal's rate for this frame kind, or too much of its
        /// work in flight; the frame was not handled. Retry later; a
        /// terminal refused too often is closed with
        /// [`CloseCode::RateLimited`].
        Busy = 28,
        /// The terminal is over one of its bounds: its unused uploads are
        /// over their quota, it has too many attachment fetches waiting,
        /// or the gateway keeps its disk reserve for alerts. Nothing was
        /// done; retry later (use or let expire the uploads first).
        OverLimit = 29,
        /// The gateway failed internally; retry later.
        Internal = 500,
        /// The gateway's disk is full: the alert, SOS, receipt or upload
        /// was not stored. Retrying will not help until an operator frees
        /// space; tell the user to use another way (radio, telephone).
        StorageFull = 507,
    }
}

wire_enum! {
    /// QUIC application close codes (CONNECTION_CLOSE reason codes).
    pub enum CloseCode: u32 {
        /// Normal close by either side.
        Normal = 0,
        /// The peer broke the protocol (e.g. a malformed control frame).
        ProtocolViolation = 1,
        /// Unknown terminal or wrong credential.
        AuthFailed = 2,
        /// The same terminal connected again; this older session is replaced.
        SessionReplaced = 3,
        /// The gateway is shutting down; reconnect to another or later.
        ServerShutdown = 4,
        /// No `Hello` arrived in time.
        HelloTimeout = 5,
        /// The protocol version in `Hello` is not supported.
        UnsupportedVersion = 6,
        /// The terminal did not read its control stream fast enough.
        TooSlow = 7,
        /// The terminal kept sending frames over its rate limits (too many
        /// `BUSY` refusals within a window).
        RateLimited = 8,
        /// The terminal's credential is valid but has been revoked by an
        /// operator (a stolen or lost handset): its session is closed and
        /// its `Hello` refused with this code until the revocation is
        /// lifted. Do not reconnect; tell the user.
        Revoked = 9,
        /// An operator disconnected this terminal through the admin API;
        /// it may reconnect (with backoff, as after any close).
        OperatorDisconnect = 10,
        /// The terminal was removed from the org file and the gateway
        /// reloaded it: its credential is refused from now on, so it must
        /// not reconnect (reprovision it, or put it back in the org).
        OrgRemoved = 11,
        /// A browser console's operator signed out, or their console
        /// session expired or was ended (a new password): sign in again.
        SignedOut = 12,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let class: Vec<_> = Class::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(class, [0, 1, 2]);
        let deny: Vec<_> = DenyCause::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(deny, [1, 2, 3, 5, 6, 100, 101, 102, 255]);
        let revoke: Vec<_> = RevokeCause::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(revoke, [2, 3, 4, 100, 255]);
        let error: Vec<_> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(
            error,
            [1, 2, 10, 11, 12, 13, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 500, 507]
        );
        let close: Vec<_> = CloseCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(close, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn unknown_codes_are_none() {
        assert_eq!(Class::from_code(3), None);
        assert_eq!(DenyCause::from_code(4), None);
        assert_eq!(RevokeCause::from_code(1), None);
        assert_eq!(ErrorCode::from_code(0), None);
        assert_eq!(CloseCode::from_code(99), None);
        for c in Class::ALL {
            assert_eq!(Class::from_code(c.code()), Some(*c));
        }
    }
}
