//! `LinkReport` (kind 0x13): round trips, and hostile bodies are errors,
//! never panics.

use bytes::BytesMut;
use proptest::prelude::*;
use ptt_codec::control::{kind, split_frame, RawFrame};
use ptt_codec::{ClientMsg, Malformed};

fn report() -> impl Strategy<Value = ClientMsg> {
    (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
        |(received, lost, late, jitter_us)| ClientMsg::LinkReport {
            received,
            lost,
            late: late.min(received),
            jitter_us,
        },
    )
}

fn body(received: u32, lost: u32, late: u32, jitter_us: u32) -> Vec<u8> {
    [received, lost, late, jitter_us]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect()
}

fn decode(body: &[u8]) -> Result<ClientMsg, Malformed> {
    ClientMsg::decode(RawFrame {
        kind: kind::LINK_REPORT,
        body,
    })
}

proptest! {
    #[test]
    fn link_reports_round_trip(msg in report()) {
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        prop_assert_eq!(out.len(), 3 + 16);
        prop_assert_eq!(out[0], 0x13);
        let frame = split_frame(&out).unwrap();
        prop_assert_eq!(frame.len(), out.len());
        prop_assert_eq!(ClientMsg::decode(frame).unwrap(), msg);
    }

    /// Any body: a report exactly when it is 16 bytes with late at most
    /// received, an error otherwise; never a panic.
    #[test]
    fn any_body_decodes_or_is_refused(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        match decode(&bytes) {
            Ok(ClientMsg::LinkReport { received, late, .. }) => {
                prop_assert_eq!(bytes.len(), 16);
                prop_assert!(late <= received);
            }
            Ok(other) => prop_assert!(false, "decoded as {:?}", other),
            Err(_) => prop_assert!(
                bytes.len() != 16 || bytes[8..12] > bytes[0..4],
                "a well-formed body was refused"
            ),
        }
    }

    #[test]
    fn more_late_than_received_is_refused(received in 0u32..u32::MAX, extra in 1u32..1000, lost: u32, jitter: u32) {
        let late = received.saturating_add(extra);
        prop_assert_eq!(
            decode(&body(received, lost, late, jitter)),
            Err(Malformed::InvalidValue("late above received"))
        );
    }
}

#[test]
fn hostile_link_report_bodies_are_errors() {
    let good = body(250, 3, 1, 4_200);
    assert!(decode(&good).is_ok());
    // Every truncation.
    for n in 0..good.len() {
        assert_eq!(decode(&good[..n]), Err(Malformed::Truncated), "{n} bytes");
    }
    // Trailing bytes.
    let mut long = good.clone();
    long.push(0);
    assert_eq!(decode(&long), Err(Malformed::TrailingBytes));
    // Impossible counters.
    assert_eq!(
        decode(&body(0, 0, 1, 0)),
        Err(Malformed::InvalidValue("late above received"))
    );
    assert_eq!(
        decode(&body(5, u32::MAX, u32::MAX, u32::MAX)),
        Err(Malformed::InvalidValue("late above received"))
    );
    // Extremes that are possible are kept as read.
    assert_eq!(
        decode(&body(u32::MAX, u32::MAX, u32::MAX, u32::MAX)),
        Ok(ClientMsg::LinkReport {
            received: u32::MAX,
            lost: u32::MAX,
            late: u32::MAX,
            jitter_us: u32::MAX,
        })
    );
    assert_eq!(
        decode(&[]),
        Err(Malformed::Truncated),
        "an empty body is not a report"
    );
}

#[test]
fn the_frame_kind_is_0x13() {
    assert_eq!(kind::LINK_REPORT, 0x13);
    let msg = ClientMsg::LinkReport {
        received: 1,
        lost: 0,
        late: 0,
        jitter_us: 0,
    };
    assert_eq!(msg.kind(), 0x13);
}
