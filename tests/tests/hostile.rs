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
    const ATTACK: Duration = Duration::from_secs(3);

    fn code<T: std::fmt::Debug>(what: &str, r: Result<T, Error>) -> ErrorCode {
        match r {
            Err(Error::Refused { code, .. }) => code,
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    }

    /// The baseline: nothing but legit traffic stays within every bound.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_an_attack_everything_is_within_bounds() {
        let gw = GatewayProcess::start("").await;
        let scene = Scene::start(&gw).await;
        tokio::time::sleep(ATTACK).await;
        let outcome = scene.finish().await;
        eprintln!("{outcome}");
        outcome.assert_unharmed();
    }

    /// Every out-of-rights action of the security review is refused with
    /// its documented code, and nobody else notices.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn out_of_rights_actions_are_refused_with_their_codes() {
        let mut gw = GatewayProcess::start("").await;
        // What belongs to others: the city console's photo, its dispatch
        // to another police station's guard, its drill; an SOS of another
        // unit's guard.
        let mut city = gw.terminal(CITY_CONSOLE).await;
        let photo_id = city
            .upload_attachment("image/jpeg", photo(64 * 1024))
            .await
            .unwrap();
        let mut with_photo = dispatch("Suspect");
        with_photo.attachments = report("", &[photo_id]).attachments;
        let (others_alert, _) = city
            .send_alert(
                Target::Terminals(vec![TerminalId(DISPATCHED_GUARD)]),
                with_photo,
            )
            .await
            .unwrap();
        let mut drill = dispatch("1-3-8 drill");
        drill.kind = ptt_codec::AlertKind::Drill;
        let (others_drill, _) = city
            .send_alert(Target::Group(OTHER_UNIT), drill)
            .await
            .unwrap();
        let mut in_sos = gw.terminal(SECOND_ATTACKER).await;
        in_sos.sos().await.unwrap();

        let scene = Scene::start(&gw).await;
        let mut a = gw.terminal(ATTACKER).await;
        a.join(VOICE_GROUP).await.unwrap();
        // Joining other units, the police station, the city; a group that
        // does not exist.
        for group in [SECOND_UNIT, OTHER_UNIT, GroupId(3), GroupId(1)] {
            assert_eq!(
                code(&format!("join {group}"), a.join(group).await),
                ErrorCode::JoinDenied
            );
        }
        assert_eq!(
            code("join 4242", a.join(GroupId(4242)).await),
            ErrorCode::UnknownGroup
        );
        // Talking in a listen-only group, or in one not joined.
        assert!(!a.join(STATION).await.unwrap().talk, "listen-only");
        assert_eq!(
            a.request_floor(STATION, Class::Normal).await.unwrap(),
            FloorAnswer::Denied(ptt_codec::DenyCause::ReceiveOnly)
        );
        assert_eq!(
            a.request_floor(SECOND_UNIT, Class::Normal).await.unwrap(),
            FloorAnswer::Denied(ptt_codec::DenyCause::NotJoined)
        );
        assert_eq!(
            code("leave", a.leave(OTHER_UNIT).await),
            ErrorCode::NotJoined
        );
        // Dispatching as a member, to his unit, a terminal, the city.
        for target in [
            Target::Group(VOICE_GROUP),
            Target::Terminals(vec![TerminalId(DISPATCHED_GUARD)]),
            Target::Subtree { node: 1, roles: 0 },
        ] {
            assert_eq!(
                code(
                    &format!("dispatch to {target:?}"),
                    a.send_alert(target.clone(), dispatch("Fake")).await
                ),
                ErrorCode::TargetNotAllowed
            );
        }
        // Using and fetching someone else's photo.
        assert_eq!(
            code(
                "a report with another's photo",
                a.send_report(report("Mine", &[photo_id])).await
            ),
            ErrorCode::UnknownAttachment
        );
        assert_eq!(
            code(
                "fetching another's photo",
                a.fetch_attachment(photo_id).await
            ),
            ErrorCode::UnknownAttachment
        );
        // Cancelling someone else's SOS.
        assert_eq!(
            code(
                "cancelling another's SOS",
                a.cancel_sos(TerminalId(SECOND_ATTACKER)).await
            ),
            ErrorCode::TargetNotAllowed
        );
        // Watching positions as a member.
        a.watch_positions(VOICE_GROUP.0).unwrap();
        let watched = a
            .wait_for(|m| match m {
                ServerMsg::Error { code, frame, .. }
                    if *frame == ptt_codec::control::kind::WATCH_POSITIONS =>
                {
                    Some(Ok(*code))
                }
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!(watched, ErrorCode::TargetNotAllowed);
        // Receipts, status and drill reports of alerts not his.
        assert_eq!(
            code(
                "a receipt for another's alert",
                a.receipt(others_alert, ptt_codec::ReceiptStatus::Accepted, "")
                    .await
            ),
            ErrorCode::NotRecipient
        );
        assert_eq!(
            code("another's alert status", a.alert_status(others_alert).await),
            ErrorCode::UnknownAlert
        );
        assert_eq!(
            code("another's drill report", a.drill_report(others_drill).await),
            ErrorCode::UnknownAlert
        );
        // A second Hello, an upload header on the control stream.
        for (msg, frame) in [
            (
                ClientMsg::Hello {
                    version: ptt_codec::control::VERSION,
                    terminal: TerminalId(TALKER),
                    credential: bytes::Bytes::from_static(&[1; 32]),
                },
                ptt_codec::control::kind::HELLO,
            ),
            (
                ClientMsg::AttachmentPut {
                    request: 9,
                    mime: "image/jpeg".into(),
                    size: 10,
                },
                ptt_codec::control::kind::ATTACHMENT_PUT,
            ),
        ] {
            a.send(msg).unwrap();
            let got = a
                .wait_for(|m| match m {
                    ServerMsg::Error { code, frame: f, .. } if *f == frame => Some(Ok(*code)),
                    _ => None,
                })
                .await
                .unwrap();
            assert_eq!(got, ErrorCode::UnexpectedFrame, "frame {frame:#x}");
        }
        // Voice without the floor, with a spoofed speaker, into his unit
        // where the talker holds the floor, and into a unit not his.
        for group in [VOICE_GROUP, SECOND_UNIT] {
            for seq in 0..50u16 {
                let header = ptt_codec::VoiceHeader {
                    group,
                    speaker: TALKER,
                    burst: seq % 4,
                    seq,
                    flags: 0,
                };
                a.send_raw_datagram(header.to_datagram(&[0xa5; 80]))
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // A console alerting and watching above its node.
        let mut east = gw.terminal(EAST_CONSOLE).await;
        assert_eq!(
            code(
                "a station console alerting the city",
                east.send_alert(Target::Group(GroupId(1)), dispatch("Fake"))
                    .await
            ),
            ErrorCode::TargetNotAllowed
        );
        assert_eq!(
            code(
                "a station console alerting another station's unit",
                east.send_alert(Target::Group(OTHER_UNIT), dispatch("Fake"))
                    .await
            ),
            ErrorCode::TargetNotAllowed
        );

        let outcome = scene.finish().await;
        eprintln!("{outcome}");
        outcome.assert_unharmed();
        assert!(
            outcome.voice.foreign.values().all(|n| *n == 0),
            "the attacker's voice reached a listener: {outcome}"
        );
        let counters = gw.stop().await;
        assert!(
            counters["voice_not_holder"].as_u64().unwrap()
                + counters["voice_unknown_group"].as_u64().unwrap()
                >= 100,
            "the attacker's 100 frames were dropped and counted: {counters}"
        );
    }

    /// Malformed control frames: each connection is closed after
    /// `session.max_malformed`, and the attacker reconnecting and starting
    /// over costs nobody else anything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_malformed_control_frames_closes_each_connection() {
        let gw = GatewayProcess::start("").await;
        let scene = Scene::start(&gw).await;
        // Unknown type, truncated Join: 16 of them per write.
        let garbage = raw_batch(0x3e, b"", 8);
        let truncated = raw_batch(ptt_codec::control::kind::JOIN, &[0, 0, 1], 8);
        let batch = [garbage, truncated].concat().into();
        let f = flood(&gw, ATTACKER, Reading::All, &batch, 16, ATTACK, None).await;
        let outcome = scene.finish().await;
        eprintln!("{outcome}\nflood: {f:?}");
        outcome.assert_unharmed();
        assert!(f.connections >= 2, "the attacker reconnected: {f:?}");
        let protocol = u64::from(CloseCode::ProtocolViolation.code());
        // The last connection may have been opened as the attack ended.
        assert!(
            f.closed.get(&protocol).copied().unwrap_or(0) + 1 >= f.connections,
            "every connection closed as a protocol violation: {f:?}"
        );
        assert!(
            f.replies.errors(ErrorCode::Malformed) <= 8 * f.connections,
            "at most max_malformed errors per connection: {f:?}"
        );
    }

    /// Connections that never send `Hello` are closed after
    /// `session.hello_timeout_ms` (1 s here) with HELLO_TIMEOUT.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_without_hello_are_closed_after_the_hello_timeout() {
        let gw = GatewayProcess::start("[session]\nhello_timeout_ms = 1000\n").await;
        let scene = Scene::start(&gw).await;
        let silent = without_hello(&gw, 50).await;
        let closed = tokio::time::timeout(ATTACK + Duration::from_secs(2), async {
            let mut codes = Vec::new();
            for (_, conn) in &silent {
                codes.push(match conn.closed().await {
                    quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
                    other => panic!("closed otherwise: {other}"),
                });
            }
            codes
        })
        .await
        .expect("every silent connection is closed within the hello timeout");
        let outcome = scene.finish().await;
        eprintln!("{outcome}");
        outcome.assert_unharmed();
        let hello_timeout = u64::from(CloseCode::HelloTimeout.code());
        assert!(closed.iter().all(|c| *c == hello_timeout), "{closed:?}");
    }

    /// Voice datagrams as fast as the connection sends them, from a member
    /// without the floor of his unit, every other one malformed: the
    /// voice rate limit drops all but 150 a second, the rest are dropped
    /// as not the holder's or malformed, and none reaches a listener.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_voice_flood_without_the_floor_is_rate_limited_and_dropped() {
        let mut gw = GatewayProcess::start("").await;
        let scene = Scene::start(&gw).await;
        let mut a = gw.terminal(ATTACKER).await;
        a.join(VOICE_GROUP).await.unwrap();
        let header = ptt_codec::VoiceHeader {
            group: VOICE_GROUP,
            speaker: TALKER,
            burst: 1,
            seq: 0,
            flags: 0,
        };
        let datagrams = [
            header.to_datagram(&[0xa5; 80]),
            // Version 2, unknown flags, a truncated header.
            bytes::Bytes::from_static(&[0x2f, 0, 0, 0, 5, 0, 0]),
        ];
        let sent = voice_flood(&a, &datagrams, ATTACK).await;
        let outcome = scene.finish().await;
        eprintln!("{outcome}\nflood: {sent} datagrams");
        outcome.assert_unharmed();
        assert!(outcome.voice.foreign.values().all(|n| *n == 0), "{outcome}");
        let counters = gw.stop().await;
        let count = |name: &str| counters[name].as_u64().unwrap();
        assert!(count("voice_rate_limited") > 0, "{counters}");
        assert!(
            count("voice_not_holder") > 0 && count("voice_malformed") > 0,
            "{counters}"
        );
    }

    /// Voice datagrams as fast as the connection sends them, from a member
    /// holding the floor of his own unit: his mate hears at most the
    /// voice rate limit (150 a second, bursts of 50), and legit voice
    /// elsewhere is untouched.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_voice_flood_with_the_floor_is_cut_to_the_voice_rate() {
        let gw = GatewayProcess::start("").await;
        let mut mate = gw.terminal(ACCOMPLICE).await;
        mate.join(SECOND_UNIT).await.unwrap();
        let scene = Scene::start(&gw).await;
        let mut a = gw.terminal(SECOND_ATTACKER).await;
        a.join(SECOND_UNIT).await.unwrap();
        let burst = a.talk(SECOND_UNIT, Class::Normal).await.unwrap();
        let datagrams: Vec<bytes::Bytes> = (0..100u16)
            .map(|seq| {
                ptt_codec::VoiceHeader {
                    group: SECOND_UNIT,
                    speaker: 0,
                    burst,
                    seq,
                    flags: 0,
                }
                .to_datagram(&[0xa5; 80])
            })
            .collect();
        let started = std::time::Instant::now();
        let heard = tokio::spawn(async move {
            let mut n = 0u64;
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(500), mate.recv_voice()).await
            {
                n += 1;
            }
            n
        });
        let sent = voice_flood(&a, &datagrams, ATTACK).await;
        let outcome = scene.finish().await;
        let heard = heard.await.unwrap();
        let lasted = started.elapsed().as_secs_f64();
        eprintln!("{outcome}\nflood: {sent} datagrams sent, {heard} heard in {lasted:.1} s");
        outcome.assert_unharmed();
        // voice_rate = 150/s and voice_burst = 50 (the defaults).
        assert!(
            heard as f64 <= 150.0 * lasted + 50.0,
            "{heard} frames heard in {lasted:.1} s"
        );
        assert!(heard > 0, "the holder's frames within the rate are relayed");
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

    /// Floods the attacker's control stream with `msg` (made from what
    /// belongs to others) for [`ATTACK`], reading everything the gateway
    /// sends like a conforming terminal; returns the outcome and the flood.
    async fn flood_of(config: &str, msg: impl FnOnce(&Others) -> ClientMsg) -> (Outcome, Flood) {
        let gw = GatewayProcess::start(config).await;
        let others = Others::make(&gw).await;
        let msg = msg(&others);
        let scene = Scene::start(&gw).await;
        let f = flood(
            &gw,
            ATTACKER,
            Reading::All,
            &batch(&msg, 64),
            64,
            ATTACK,
            None,
        )
        .await;
        let outcome = scene.finish().await;
        eprintln!("{outcome}\nflood of {msg:?}: {f:?}");
        (outcome, f)
    }

    macro_rules! flood_test {
        ($(#[$meta:meta])* $name:ident, $msg:expr) => {
            $(#[$meta])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (outcome, _) = flood_of("", $msg).await;
                outcome.assert_unharmed();
            }
        };
    }

    // Floods the gateway withstands today: frames it answers at once (an
    // attacker that does not read the answers as fast is closed as
    // TOO_SLOW, for its own slowness) or that cost it nothing.
    flood_test!(
        /// A second `Hello`: UNEXPECTED_FRAME each.
        flood_of_hello,
        |_| ClientMsg::Hello {
            version: ptt_codec::control::VERSION,
            terminal: TerminalId(TALKER),
            credential: bytes::Bytes::from_static(&[1; 32]),
        }
    );
    flood_test!(flood_of_ping, |_| ClientMsg::Ping { nonce: 7 });
    flood_test!(
        /// Leaving a group not joined: NOT_JOINED each.
        flood_of_leave,
        |_| ClientMsg::Leave { group: OTHER_UNIT }
    );
    flood_test!(
        /// The talk key of a group not joined: FloorDenied each.
        flood_of_floor_request,
        |_| ClientMsg::FloorRequest {
            group: SECOND_UNIT,
            class: Class::Normal
        }
    );
    flood_test!(flood_of_floor_release, |_| ClientMsg::FloorRelease {
        group: OTHER_UNIT
    });
    flood_test!(
        /// Watching positions as a member: TARGET_NOT_ALLOWED each.
        flood_of_watch_positions,
        |_| ClientMsg::WatchPositions { node: 5 }
    );
    flood_test!(
        /// An upload header on the control stream: UNEXPECTED_FRAME each.
        flood_of_attachment_put,
        |_| ClientMsg::AttachmentPut {
            request: 1,
            mime: "image/jpeg".into(),
            size: 10
        }
    );
    flood_test!(
        /// Each connection ends at its first `Logout`; the flood
        /// reconnects hundreds of times.
        flood_of_logout,
        |_| ClientMsg::Logout
    );

    /// Positions as fast as flow control lets them in, while the station
    /// console watches the attacker's unit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flood_of_positions_with_a_console_watching() {
        let gw = GatewayProcess::start("").await;
        let watcher = RawSession::connect(&gw, EAST_CONSOLE, Reading::All).await;
        let mut watcher = watcher;
        assert!(
            watcher
                .write(batch(&ClientMsg::WatchPositions { node: 3 }, 1))
                .await
        );
        let scene = Scene::start(&gw).await;
        let msg = ClientMsg::Position {
            lat_e7: 290_800_000,
            lon_e7: 1_196_400_000,
            accuracy_m: 8,
        };
        let f = flood(
            &gw,
            ATTACKER,
            Reading::All,
            &batch(&msg, 64),
            64,
            ATTACK,
            None,
        )
        .await;
        let outcome = scene.finish().await;
        eprintln!("{outcome}\nflood: {f:?}\nwatcher: {:?}", watcher.replies());
        outcome.assert_unharmed();
        assert!(
            watcher.conn.close_reason().is_none(),
            "the watching console is still connected"
        );
    }

    // Floods that every frame spawns a task for, with no bound on tasks in
    // flight per session (issue 11, "also found by reading"): memory grows
    // with the attacker's bandwidth, and the store's work delays an SOS.
    flood_test!(
        #[ignore = "issue 11: no bound on tasks in flight per session (a task per AlertSend, refused or not) not defended yet"]
        flood_of_refused_dispatches,
        |_| ClientMsg::AlertSend {
            request: 1,
            body: dispatch("Fake"),
            target: Target::Group(VOICE_GROUP)
        }
    );
    flood_test!(
        #[ignore = "issue 11: no per-terminal rate of reports (each stored and delivered) not defended yet"]
        flood_of_reports,
        |_| ClientMsg::AlertSend {
            request: 1,
            body: report("Report", &[]),
            target: Target::Station
        }
    );
    flood_test!(
        #[ignore = "issue 11: no per-terminal rate of receipts, unbounded receipt queue, not defended yet"]
        flood_of_receipts_for_others_alerts,
        |o| ClientMsg::AlertReceipt {
            alert: o.alert,
            status: ptt_codec::ReceiptStatus::Accepted,
            reason: String::new()
        }
    );
    flood_test!(
        #[ignore = "issue 11: no per-terminal rate of status queries (a task and a database read each) not defended yet"]
        flood_of_alert_queries,
        |o| ClientMsg::AlertQuery { alert: o.alert }
    );
    flood_test!(
        #[ignore = "issue 11: no per-terminal rate of drill-report queries (a task and a database read each) not defended yet"]
        flood_of_drill_report_queries,
        |o| ClientMsg::DrillReportQuery { alert: o.drill }
    );
    flood_test!(
        #[ignore = "issue 11: no bound on tasks in flight per session (a task per SosCancel) not defended yet"]
        flood_of_sos_cancels,
        |_| ClientMsg::SosCancel {
            terminal: TerminalId(SOS_PROBE)
        }
    );
    flood_test!(
        #[ignore = "issue 11: no per-terminal rate of joins (attack 4) not defended yet"]
        flood_of_joins,
        |_| ClientMsg::Join { group: VOICE_GROUP }
    );
    flood_test!(
        #[ignore = "issue 11: no per-terminal rate of SOS (attacks 5 and 6) not defended yet"]
        flood_of_sos,
        |_| ClientMsg::Sos
    );
    flood_test!(
        #[ignore = "issue 11: attack 7 (a task and a blob read per refused fetch) not defended yet"]
        flood_of_fetches_of_others_photo,
        |o| ClientMsg::AttachmentFetch {
            attachment: o.photo
        }
    );

    // The nine attacks of issue 11's table, each with the bounds while it
    // runs; the first eight are not defended yet.

    /// Attack 1: one 4 MiB photo uploaded once, then work reports naming
    /// it eight times each; the station console reads what it is sent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "issue 11: attack 1 (attachment references not deduplicated, photos held whole per push) not defended yet"]
    async fn attack_1_reports_naming_one_photo_eight_times() {
        let gw = GatewayProcess::start("").await;
        let console = RawSession::connect(&gw, EAST_CONSOLE, Reading::All).await;
        let scene = Scene::start(&gw).await;
        let mut a = gw.terminal(ATTACKER).await;
        let id = a
            .upload_attachment("image/jpeg", photo(4 * 1024 * 1024))
            .await
            .unwrap();
        let mut reports = bytes::BytesMut::new();
        for request in 0..40 {
            ClientMsg::AlertSend {
                request,
                body: report("Patrol", &[id; 8]),
                target: Target::Station,
            }
            .encode(&mut reports);
        }
        let mut raw = RawSession::connect(&gw, ATTACKER, Reading::All).await;
        assert!(raw.write(reports.freeze()).await);
        tokio::time::sleep(ATTACK).await;
        let outcome = scene.finish().await;
        eprintln!(
            "{outcome}\nattacker: {:?}\nconsole: {:?}",
            raw.replies(),
            console.replies()
        );
        outcome.assert_unharmed();
    }

    /// Attack 2: a member fetches his own photo 600 times on a connection
    /// that never grants the gateway stream credit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "issue 11: attack 2 (a photo held whole per fetch, however slow the reader) not defended yet"]
    async fn attack_2_fetches_of_a_photo_never_read() {
        let gw = GatewayProcess::start("").await;
        let id = {
            let mut a = gw.terminal(ATTACKER).await;
            let id = a
                .upload_attachment("image/jpeg", photo(4 * 1024 * 1024))
                .await
                .unwrap();
            a.send_report(report("Patrol", &[id])).await.unwrap();
            a.close();
            id
        };
        let scene = Scene::start(&gw).await;
        let config = gw.client_config(stingy_transport(1024));
        let mut stingy =
            RawSession::connect_with(&gw, ATTACKER, Reading::ControlOnly, config).await;
        let fetch = ClientMsg::AttachmentFetch { attachment: id };
        assert!(stingy.write(batch(&fetch, 600)).await);
        tokio::time::sleep(ATTACK).await;
        let outcome = scene.finish().await;
        eprintln!("{outcome}\nattacker: {:?}", stingy.replies());
        outcome.assert_unharmed();
    }

    /// Attack 3: 4 MiB uploads that no alert ever uses, two at a time, as
    /// fast as the gateway stores them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "issue 11: attack 3 (unused uploads stored without quota or expiry) not defended yet"]
    async fn attack_3_unused_uploads() {
        let gw = GatewayProcess::start("").await;
        let scene = Scene::start(&gw).await;
        let mut a = gw.terminal(ATTACKER).await;
        let content = photo(4 * 1024 * 1024);
        let started = std::time::Instant::now();
        let (mut stored, mut refused) = (0, 0);
        while started.elapsed() < ATTACK {
            match a.upload_attachment("image/jpeg", content.clone()).await {
                Ok(_) => stored += 1,
                Err(_) => refused += 1,
            }
        }
        let outcome = scene.finish().await;
        eprintln!("{outcome}\nuploads stored {stored}, refused {refused}");
        outcome.assert_unharmed();
    }

    /// Attack 4: a 42 KB burst of Join/Leave on the attacker's own unit,
    /// where legit voice runs and the district console listens.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "issue 11: attack 4 (presence not coalesced, joins and leaves not rate-limited) not defended yet"]
    async fn attack_4_join_leave_burst_in_the_own_unit() {
        let gw = GatewayProcess::start("").await;
        let scene = Scene::start(&gw).await;
        let mut pair = bytes::BytesMut::new();
        ClientMsg::Join { group: VOICE_GROUP }.encode(&mut pair);
        ClientMsg::Leave { group: VOICE_GROUP }.encode(&mut pair);
        // 3,000 pairs of 7-byte frames: 42 KB.
        let burst: bytes::Bytes = pair.repeat(3000).into();
        let mut a = RawSession::connect(&gw, ATTACKER, Reading::All).await;
        let started = std::time::Instant::now();
        let mut bursts = 0;
        while started.elapsed() < ATTACK {
            if !a.write(burst.clone()).await {
                a = RawSession::connect(&gw, ATTACKER, Reading::All).await;
            }
            bursts += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let outcome = scene.finish().await;
        eprintln!("{outcome}\nbursts: {bursts}");
        assert!(
            outcome.voice.listeners_lost.is_empty(),
            "nobody but the attacker is disconnected: {outcome}"
        );
        outcome.assert_unharmed();
    }

    /// Attack 5: one member floods SOS, his unit mate never accepts a
    /// stream; a console's dispatch elsewhere must still be delivered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "issue 11: attack 5 (shared delivery slots held by a reader that never reads) not defended yet"]
    async fn attack_5_sos_flood_to_a_reader_that_never_reads() {
        let gw = GatewayProcess::start("").await;
        let config = gw.client_config(stingy_transport(1024));
        let _accomplice =
            RawSession::connect_with(&gw, ACCOMPLICE, Reading::ControlOnly, config).await;
        let scene = Scene::start(&gw).await;
        let f = flood(
            &gw,
            SECOND_ATTACKER,
            Reading::All,
            &batch(&ClientMsg::Sos, 10),
            10,
            ATTACK,
            Some(400),
        )
        .await;
        let outcome = scene.finish().await;
        eprintln!(
            "{outcome}\nSOS flood: {} frames, {} stored",
            f.frames,
            f.replies.accepted.len()
        );
        outcome.assert_unharmed();
    }

    /// Attack 6: 700 SOS from one member, then one cancel: every one of
    /// them must end (one active SOS per terminal).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "issue 11: attack 6 (only the latest SOS of a terminal can be cancelled) not defended yet"]
    async fn attack_6_one_cancel_ends_every_sos_of_a_terminal() {
        let gw = GatewayProcess::start("").await;
        let scene = Scene::start(&gw).await;
        let mut a = RawSession::connect(&gw, SECOND_ATTACKER, Reading::All).await;
        assert!(a.write(batch(&ClientMsg::Sos, 700)).await);
        let stored = ptt_tests::eventually("the 700 SOS answered", || {
            let n = a.replies().accepted.len();
            if n >= 700 {
                Ok(())
            } else {
                Err(n)
            }
        });
        stored.await;
        let cancel = ClientMsg::SosCancel {
            terminal: TerminalId(SECOND_ATTACKER),
        };
        assert!(a.write(batch(&cancel, 1)).await);
        tokio::time::sleep(ATTACK).await;
        let outcome = scene.finish().await;
        eprintln!("{outcome}");
        outcome.assert_unharmed();
        let store = gw.store();
        let ids = a.replies().accepted;
        let open: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| store.cancelled(*id).unwrap().is_none())
            .collect();
        assert!(
            open.is_empty(),
            "{} of {} SOS alerts still active after the cancel",
            open.len(),
            ids.len()
        );
    }

    /// Attack 6, after a restart: an SOS raised before it can still be
    /// cancelled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "issue 11: attack 6 (active SOS kept in memory only, lost on restart) not defended yet"]
    async fn attack_6_an_sos_can_be_cancelled_after_a_restart() {
        let mut gw = GatewayProcess::start("").await;
        let alert = gw.terminal(SECOND_ATTACKER).await.sos().await.unwrap();
        gw.restart().await;
        let mut t = gw.terminal(SECOND_ATTACKER).await;
        match t.cancel_sos(TerminalId(SECOND_ATTACKER)).await {
            Ok(cancelled) => assert_eq!(cancelled, alert),
            Err(e) => panic!("SOS {alert}, raised before the restart, cannot be cancelled: {e}"),
        }
        assert!(gw.store().cancelled(alert).unwrap().is_some());
    }

    /// Attack 7: 2,000 refused fetches a second of someone else's 4 MiB
    /// photo.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "issue 11: attack 7 (the blob read before the permission check, a task per frame) not defended yet"]
    async fn attack_7_refused_fetches_of_anothers_photo() {
        let gw = GatewayProcess::start("").await;
        let photo_id = {
            let mut city = gw.terminal(CITY_CONSOLE).await;
            let id = city
                .upload_attachment("image/jpeg", photo(4 * 1024 * 1024))
                .await
                .unwrap();
            let mut body = dispatch("Suspect");
            body.attachments = report("", &[id]).attachments;
            city.send_alert(Target::Group(OTHER_UNIT), body)
                .await
                .unwrap();
            id
        };
        let scene = Scene::start(&gw).await;
        let fetch = ClientMsg::AttachmentFetch {
            attachment: photo_id,
        };
        let f = flood(
            &gw,
            ATTACKER,
            Reading::All,
            &batch(&fetch, 20),
            20,
            ATTACK,
            Some(2000),
        )
        .await;
        let outcome = scene.finish().await;
        eprintln!("{outcome}\nfetches: {f:?}");
        outcome.assert_unharmed();
    }

    /// Attack 8: 500 never-completed Initials a second from one socket;
    /// five terminals connecting meanwhile must get their sessions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "issue 11: attack 8 (no per-address handshake limit, no Retry) not defended yet"]
    async fn attack_8_initial_flood_from_one_socket() {
        let gw = GatewayProcess::start("").await;
        let packets = initials(&gw, 1500).await;
        let scene = Scene::start(&gw).await;
        let gw = std::sync::Arc::new(gw);
        let attack = {
            let gw = gw.clone();
            tokio::spawn(async move { send_initials(&gw, &packets, 500, ATTACK).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut reconnects = tokio::task::JoinSet::new();
        for id in [
            CITY_CONSOLE,
            EAST_CONSOLE,
            ATTACKER,
            SECOND_ATTACKER,
            ACCOMPLICE,
        ] {
            let gw = gw.clone();
            reconnects.spawn(async move {
                let started = std::time::Instant::now();
                let t = tokio::time::timeout(DISPATCH_DELIVERED_WITHIN, gw.try_terminal(id)).await;
                (id, matches!(t, Ok(Ok(_))), started.elapsed())
            });
        }
        let reconnects = reconnects.join_all().await;
        let sent = attack.await.unwrap();
        let outcome = scene.finish().await;
        eprintln!("{outcome}\nInitials sent: {sent}\nreconnects: {reconnects:?}");
        outcome.assert_unharmed();
        assert!(
            reconnects.iter().all(|(_, ok, _)| *ok),
            "every terminal got its session within {DISPATCH_DELIVERED_WITHIN:?}: {reconnects:?}"
        );
    }

    /// Attack 9: connections that never send `Hello` but fill every
    /// stream the gateway allows them; each may cost at most 64 KiB.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "issue 11: attack 9 (default stream windows before Hello) not defended yet"]
    async fn attack_9_connections_without_hello_filling_their_windows() {
        let gw = GatewayProcess::start("").await;
        let scene = Scene::start(&gw).await;
        let silent = without_hello(&gw, 30).await;
        let mut accepted = 0;
        for (_, conn) in &silent {
            accepted += fill_before_hello(conn, 2 * 1024 * 1024, Duration::from_millis(100)).await;
        }
        tokio::time::sleep(ATTACK).await;
        let outcome = scene.finish().await;
        eprintln!("{outcome}\nbytes the gateway took before Hello: {accepted}");
        outcome.assert_unharmed();
        assert!(
            accepted <= 30 * 64 * 1024,
            "{accepted} bytes taken from 30 connections before Hello"
        );
    }
}
