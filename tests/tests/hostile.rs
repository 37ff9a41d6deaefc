//! The hostile-client suite (issue 11 item 10): the real gateway process,
//! real QUIC, one attacker with an ordinary guard's credential or none,
//! and beside it legit voice, an SOS and a dispatch that must still work.
//!
//! Every test runs one attack for a few seconds inside a
//! [`Scene`](ptt_tests::hostile::Scene) and asserts, with the generous
//! bounds of the issue, that legit voice was delivered (at least 99 %),
//! every SOS was stored within 1 s and every dispatch delivered within
//! 8 s, the gateway's memory stayed under
//! [`RSS_BOUND`](ptt_tests::hostile::RSS_BOUND) and its data directory
//! grew by less than [`DISK_BOUND`](ptt_tests::hostile::DISK_BOUND).
//!
//! Attacks the gateway does not withstand yet (issue 11's table) are
//! `#[ignore]`d with the reason; whoever fixes one removes its `ignore`.
//! (The tests sit in a module named `hostile` so that
//! `cargo nextest run -p ptt-tests hostile` selects them.)

mod hostile {
    use std::time::Duration;

    use ptt_codec::{
        Class, ClientMsg, CloseCode, ErrorCode, GroupId, ServerMsg, Target, TerminalId,
    };
    use ptt_terminal_sim::terminal::{Error, FloorAnswer};
    use ptt_tests::hostile::*;

    /// How long each attack runs: long enough for every probe to run a
    /// few times and for an attack that holds memory to pass the bound,
    /// short enough for the suite to stay within a minute.
    const ATTACK: Duration = Duration::from_millis(2500);

    fn code<T: std::fmt::Debug>(what: &str, r: Result<T, Error>) -> ErrorCode {
        match r {
            Err(Error::Refused { code, .. }) => code,
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    }

    /// Alerts and a photo that belong to others than the attacker: the
    /// city console's photo, its dispatch to another police station's
    /// guard, its drill.
    struct Others {
        photo: u64,
        alert: u64,
        drill: u64,
    }

    impl Others {
        async fn make(gw: &GatewayProcess) -> Others {
            let mut city = gw.terminal(CITY_CONSOLE).await;
            let photo = city
                .upload_attachment("image/jpeg", ptt_tests::hostile::photo(64 * 1024))
                .await
                .unwrap();
            let mut with_photo = dispatch("Suspect");
            with_photo.attachments = report("", &[photo]).attachments;
            let (alert, _) = city
                .send_alert(
                    Target::Terminals(vec![TerminalId(DISPATCHED_GUARD)]),
                    with_photo,
                )
                .await
                .unwrap();
            let mut drill = dispatch("1-3-8 drill");
            drill.kind = ptt_codec::AlertKind::Drill;
            let (drill, _) = city
                .send_alert(Target::Group(OTHER_UNIT), drill)
                .await
                .unwrap();
            Others {
                photo,
                alert,
                drill,
            }
        }
    }

    mod attacks;
    mod floods;
    mod rights;
}
