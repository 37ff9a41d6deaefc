//! The nine attacks of issue 11's table, each checked against the bounds
//! while it runs. None is defended yet: attack 9 only in part (a silent
//! connection is closed after the hello timeout, see
//! `floods::connections_without_hello_are_closed_after_the_hello_timeout`,
//! but what it may send before that is not bounded).

use super::*;

/// Attack 1: one 4 MiB photo uploaded once, then work reports naming
/// it eight times each; the station console reads what it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    let mut stingy = RawSession::connect_with(&gw, ATTACKER, Reading::ControlOnly, config).await;
    let fetch = ClientMsg::AttachmentFetch { attachment: id };
    assert!(stingy.write(batch(&fetch, 600)).await);
    tokio::time::sleep(ATTACK).await;
    let outcome = scene.finish().await;
    eprintln!("{outcome}\nattacker: {:?}", stingy.replies());
    outcome.assert_unharmed();
}

/// Attack 2, past the stall timeout: photo streams to a connection that
/// never grants stream credit are reset and counted, and free their slots
/// for the fetches waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_2_stalled_photo_streams_are_reset() {
    let mut gw = GatewayProcess::start("[attachments]\nstall_timeout_ms = 200\n").await;
    let id = {
        let mut a = gw.terminal(ATTACKER).await;
        let id = a
            .upload_attachment("image/jpeg", photo(256 * 1024))
            .await
            .unwrap();
        a.close();
        id
    };
    let config = gw.client_config(stingy_transport(1024));
    let mut stingy = RawSession::connect_with(&gw, ATTACKER, Reading::ControlOnly, config).await;
    let fetch = ClientMsg::AttachmentFetch { attachment: id };
    // Two streaming, four waiting: three rounds of stalls.
    assert!(stingy.write(batch(&fetch, 6)).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counters = gw.stop().await;
    let stalled = counters["attachment_streams_stalled"].as_u64();
    assert_eq!(stalled, Some(6), "{counters}");
    assert_eq!(counters["attachment_fetches_refused"].as_u64(), Some(0));
}

/// Attack 3: 4 MiB uploads that no alert ever uses, two at a time, as
/// fast as the gateway stores them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    // The quota (16 MiB of unused uploads by default) is refused with
    // its own code.
    assert!((1..=4).contains(&stored), "stored {stored} photos of 4 MiB");
    let over = a.upload_attachment("image/jpeg", content).await;
    assert_eq!(code("an upload over the quota", over), ErrorCode::OverLimit);
}

/// Attack 3's cleanup: an upload that no alert uses expires, and the
/// quota it took is free again; one used by a report stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_3_unused_uploads_expire() {
    let mut gw = GatewayProcess::start(
        "[attachments]\nunused_expiry_s = 1\nsweep_interval_s = 1\nquota_uploads = 2\n",
    )
    .await;
    let mut a = gw.terminal(ATTACKER).await;
    let used = a
        .upload_attachment("image/jpeg", photo(64 * 1024))
        .await
        .unwrap();
    a.send_report(report("Patrol", &[used])).await.unwrap();
    let unused = a
        .upload_attachment("image/jpeg", photo(64 * 1024))
        .await
        .unwrap();
    a.upload_attachment("image/jpeg", photo(64 * 1024))
        .await
        .unwrap();
    let over = a.upload_attachment("image/jpeg", photo(64 * 1024)).await;
    assert_eq!(code("a third unused upload", over), ErrorCode::OverLimit);
    // Created over a second ago and swept (every second) since.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let gone = a.fetch_attachment(unused).await;
    assert_eq!(
        code("an expired upload", gone),
        ErrorCode::UnknownAttachment
    );
    let ptt_terminal_sim::terminal::Download::Attachment { data, .. } =
        a.fetch_attachment(used).await.unwrap()
    else {
        panic!("a download of the used photo");
    };
    assert_eq!(data.len(), 64 * 1024);
    a.upload_attachment("image/jpeg", photo(64 * 1024))
        .await
        .unwrap();
    let counters = gw.stop().await;
    assert_eq!(
        counters["attachments_expired"].as_u64(),
        Some(2),
        "{counters}"
    );
    assert_eq!(
        counters["attachment_uploads_over_quota"].as_u64(),
        Some(1),
        "{counters}"
    );
}

/// Attack 3 on a disk down to its reserve: uploads are refused, and SOS,
/// dispatches and receipts are still stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_3_uploads_are_refused_at_the_disk_reserve() {
    // A reserve larger than any disk: the disk is always at it.
    let mut gw =
        GatewayProcess::start("[attachments]\ndisk_reserve_bytes = 9223372036854775807\n").await;
    let scene = Scene::start(&gw).await;
    let mut a = gw.terminal(ATTACKER).await;
    let content = photo(4 * 1024 * 1024);
    let started = std::time::Instant::now();
    let mut refused = 0;
    while started.elapsed() < ATTACK {
        let r = a.upload_attachment("image/jpeg", content.clone()).await;
        assert_eq!(
            code("an upload at the disk reserve", r),
            ErrorCode::OverLimit
        );
        refused += 1;
    }
    let outcome = scene.finish().await;
    eprintln!("{outcome}\nuploads refused {refused}");
    outcome.assert_unharmed();
    // The disk watch raised its alarm once (it stays on) and reads the
    // free space.
    let counters = gw.stop().await;
    assert_eq!(counters["disk_low_alarms"].as_u64(), Some(1), "{counters}");
    assert!(
        counters["disk_free_bytes"].as_u64().is_some_and(|b| b > 0),
        "{counters}"
    );
    assert_eq!(counters["store_full"].as_u64(), Some(0), "{counters}");
}

/// Attack 3 with lying streams: uploads whose stream ends short of its
/// size, carries more, is reset, trickles a byte at a time (slowloris) or
/// goes silent, while the scene runs. Each is refused ATTACHMENT_INVALID,
/// leaves no row and no bytes (the whole quota is free afterwards) and is
/// counted; the content is streamed into the store a chunk at a time, so
/// none is held whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_3_lying_upload_streams_leave_nothing() {
    let mut gw = GatewayProcess::start(
        "[attachments]\nquota_uploads = 2\nquota_bytes = 400000\nstall_timeout_ms = 500\n",
    )
    .await;
    let scene = Scene::start(&gw).await;
    let mut a = gw.terminal(ATTACKER).await;
    let header = |request: u32, size: u32| {
        let mut buf = bytes::BytesMut::new();
        ClientMsg::AttachmentPut {
            request,
            mime: "image/jpeg".into(),
            size,
        }
        .encode(&mut buf);
        buf
    };
    // (request, announced size, bytes sent, how the stream ends)
    #[derive(Clone, Copy, Debug)]
    enum End {
        Finish,
        Reset,
        Trickle,
        Silent,
    }
    let lies = [
        (1, 200_000, 100_000, End::Finish),
        (2, 100, 150_000, End::Finish),
        (3, 200_000, 150_000, End::Reset),
        (4, 200_000, 0, End::Trickle),
        (5, 200_000, 70_000, End::Silent),
    ];
    let conn = a.connection().clone();
    let mut open = Vec::new();
    for (request, size, sent, end) in lies {
        let mut buf = header(request, size);
        buf.extend_from_slice(&photo(sent));
        let mut s = conn.open_uni().await.unwrap();
        s.write_all(&buf).await.unwrap();
        match end {
            End::Finish => s.finish().unwrap(),
            End::Reset => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                s.reset(quinn::VarInt::from_u32(9)).unwrap();
            }
            End::Trickle => {
                // A byte every 50 ms: far less than a chunk per stall
                // timeout, though never silent for long.
                open.push(tokio::spawn(async move {
                    for _ in 0..100 {
                        if s.write_all(&[0]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }));
                continue;
            }
            End::Silent => {
                open.push(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    drop(s);
                }));
                continue;
            }
        }
        // One upload stream at a time per terminal (max_uni_streams 2):
        // wait for the answer before the next.
        let refused = a
            .wait_for(|m| match m {
                ServerMsg::AlertRefused {
                    request: r, code, ..
                } if *r == request => Some(Ok(*code)),
                ServerMsg::AttachmentStored { request: r, .. } if *r == request => {
                    Some(Ok(ErrorCode::Internal))
                }
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!(refused, ErrorCode::AttachmentInvalid, "{end:?}");
    }
    for request in [4, 5] {
        let refused = a
            .wait_for(|m| match m {
                ServerMsg::AlertRefused {
                    request: r, code, ..
                } if *r == request => Some(Ok(*code)),
                ServerMsg::AttachmentStored { request: r, .. } if *r == request => {
                    Some(Ok(ErrorCode::Internal))
                }
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!(refused, ErrorCode::AttachmentInvalid, "request {request}");
    }
    for t in open {
        t.abort();
    }
    // Nothing was left: the whole quota (two uploads, 400,000 bytes) is
    // free, and what is stored is whole.
    let first = a
        .upload_attachment("image/jpeg", photo(200_000))
        .await
        .unwrap();
    a.upload_attachment("image/jpeg", photo(200_000))
        .await
        .unwrap();
    let ptt_terminal_sim::terminal::Download::Attachment { data, .. } =
        a.fetch_attachment(first).await.unwrap()
    else {
        panic!("a download of the stored photo");
    };
    assert_eq!(&data[..], &photo(200_000)[..]);
    let outcome = scene.finish().await;
    eprintln!("{outcome}");
    outcome.assert_unharmed();
    let counters = gw.stop().await;
    assert_eq!(
        counters["attachment_uploads_abandoned"].as_u64(),
        Some(5),
        "{counters}"
    );
}

/// Attack 3 against memory: uploads announced at 4 MiB whose content all
/// arrives but for its last byte, then held open, two per connection from
/// two terminals. The content is in the store as it arrives: each held
/// upload costs the gateway one chunk of memory, not 4 MiB. Once stalled
/// (`stall_timeout_ms`) each is refused and leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_3_uploads_held_open_hold_a_chunk_each() {
    let mut gw = GatewayProcess::start("[attachments]\nstall_timeout_ms = 4000\n").await;
    let scene = Scene::start(&gw).await;
    let size = 4 * 1024 * 1024;
    let (mut held, mut attackers) = (Vec::new(), Vec::new());
    for who in [ATTACKER, SECOND_ATTACKER] {
        let a = gw.terminal(who).await;
        for request in 0..2 {
            let mut buf = bytes::BytesMut::new();
            ClientMsg::AttachmentPut {
                request,
                mime: "image/jpeg".into(),
                size,
            }
            .encode(&mut buf);
            buf.extend_from_slice(&photo(size as usize - 1));
            let mut s = a.connection().open_uni().await.unwrap();
            s.write_all(&buf).await.unwrap();
            held.push(s);
        }
        attackers.push(a);
    }
    tokio::time::sleep(ATTACK).await;
    let outcome = scene.finish().await;
    eprintln!("{outcome}\n{} uploads of 4 MiB held open", held.len());
    outcome.assert_unharmed();
    for a in &mut attackers {
        for request in 0..2 {
            let refused = tokio::time::timeout(
                Duration::from_secs(30),
                a.wait_for(|m| match m {
                    ServerMsg::AlertRefused {
                        request: r, code, ..
                    } if *r == request => Some(Ok(*code)),
                    _ => None,
                }),
            )
            .await
            .expect("a held upload is refused once stalled")
            .unwrap();
            assert_eq!(refused, ErrorCode::AttachmentInvalid);
        }
    }
    drop(held);
    let counters = gw.stop().await;
    assert_eq!(
        counters["attachment_uploads_abandoned"].as_u64(),
        Some(4),
        "{counters}"
    );
}

/// Attack 4: a 42 KB burst of Join/Leave on the attacker's own unit,
/// where legit voice runs and the district console listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    // The attacker's sessions closed RATE_LIMITED (over session.join_rate
    // for session.join_max_refused frames in a row).
    let mut rate_limited = 0;
    while started.elapsed() < ATTACK {
        if !a.write(burst.clone()).await {
            if let Some(quinn::ConnectionError::ApplicationClosed(c)) = a.conn.close_reason() {
                if c.error_code.into_inner() == u64::from(CloseCode::RateLimited.code()) {
                    rate_limited += 1;
                }
            }
            a = RawSession::connect(&gw, ATTACKER, Reading::All).await;
        }
        bursts += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let outcome = scene.finish().await;
    eprintln!("{outcome}\nbursts: {bursts}, closed RATE_LIMITED: {rate_limited}");
    assert!(
        outcome.voice.listeners_lost.is_empty(),
        "nobody but the attacker is disconnected: {outcome}"
    );
    outcome.assert_unharmed();
    assert!(
        rate_limited > 0,
        "a burst of joins and leaves is closed RATE_LIMITED"
    );
}

/// Attack 5: one member floods SOS, his unit mate never accepts a
/// stream; a console's dispatch elsewhere must still be delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_5_sos_flood_to_a_reader_that_never_reads() {
    let gw = GatewayProcess::start("").await;
    let config = gw.client_config(stingy_transport(1024));
    let _accomplice = RawSession::connect_with(&gw, ACCOMPLICE, Reading::ControlOnly, config).await;
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

/// The handshake bounds attack 8 needs, which are off by default: a
/// Retry once 128 attempts are in, 8 unproven and 64 proven attempts per
/// source address (see `transport.retry_from` for why they are off).
const DEFENDED_HANDSHAKES: &str =
    "[transport]\nretry_from = 128\nhandshakes_per_address = 8\nhandshakes_per_proven_address = 64\n";

/// Attack 8: 500 never-completed Initials a second from one socket;
/// five terminals connecting meanwhile must get their sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_8_initial_flood_from_one_socket() {
    let gw = GatewayProcess::start(DEFENDED_HANDSHAKES).await;
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
    // The socket's attempts beyond `transport.handshakes_per_address` (8)
    // were answered with a Retry, which it never takes up.
    let mut gw = std::sync::Arc::into_inner(gw).expect("the attack's tasks are over");
    let counters = gw.stop().await;
    let count = |name: &str| counters[name].as_u64().unwrap();
    assert!(count("handshakes_retried_address") > sent / 2, "{counters}");
}

/// Attack 8, forged: the same Initials from 250 addresses of 127.0.0.0/8
/// (an attacker forging source addresses; loopback only), 500 a second.
/// With the default configuration (no per-address bounds), only the Retry
/// under pressure (`transport.retry_from`, every slot taken) keeps real
/// terminals in: the forged attempts hold at most `retry_from` slots, for
/// one handshake timeout, and never come back with a token. Without the Retry, the same flood holds every slot for
/// the 5 s handshake timeout and the terminals below wait behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_8_initial_flood_from_forged_addresses() {
    // The defaults: Retry once every handshake slot is taken.
    let gw = GatewayProcess::start("").await;
    let packets = initials(&gw, 1500).await;
    let scene = Scene::start(&gw).await;
    let gw = std::sync::Arc::new(gw);
    let attack = {
        let addr = gw.addr;
        tokio::spawn(async move { forged_initials(addr, &packets, 250, 500, ATTACK).await })
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
    eprintln!("{outcome}\nforged Initials sent: {sent}\nreconnects: {reconnects:?}");
    outcome.assert_unharmed();
    assert!(
        reconnects.iter().all(|(_, ok, _)| *ok),
        "every terminal got its session within {DISPATCH_DELIVERED_WITHIN:?}: {reconnects:?}"
    );
    let mut gw = std::sync::Arc::into_inner(gw).expect("the attack's tasks are over");
    let counters = gw.stop().await;
    let count = |name: &str| counters[name].as_u64().unwrap();
    assert!(count("handshakes_retried") > sent / 2, "{counters}");
    assert_eq!(count("handshakes_retried_address"), 0, "{counters}");
}

/// Sends `packets` to `to` from `sources` sockets on distinct addresses of
/// 127.0.0.0/8 (127.10.x.y; loopback only), `per_second` a second in turn,
/// for `duration`; never reads what comes back. Returns the packets sent.
async fn forged_initials(
    to: std::net::SocketAddr,
    packets: &[Vec<u8>],
    sources: u16,
    per_second: u64,
    duration: Duration,
) -> u64 {
    let mut sockets = Vec::new();
    for n in 0..sources {
        let ip = std::net::Ipv4Addr::new(127, 10, (n >> 8) as u8, (n & 0xff) as u8 + 1);
        let socket = tokio::net::UdpSocket::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("binding {ip} on loopback: {e}"));
        sockets.push(socket);
    }
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < duration {
        let due = Duration::from_secs_f64(sent as f64 / per_second as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let socket = &sockets[sent as usize % sockets.len()];
        let packet = &packets[sent as usize % packets.len()];
        if socket.send_to(packet, to).await.is_ok() {
            sent += 1;
        }
    }
    sent
}

/// Attack 9: connections that never send `Hello` but fill every
/// stream the gateway allows them; each may cost at most 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
