use std::sync::atomic::Ordering;

use ptt_codec::voice::FLAG_END;

use super::*;
use crate::store::RecordingQuery;

/// TOC of a 20 ms SILK wideband packet.
const TOC: u8 = 9 << 3;

fn header(group: u32, burst: u16, seq: u16) -> VoiceHeader {
    VoiceHeader {
        group: GroupId(group),
        speaker: 0,
        burst,
        seq,
        flags: 0,
    }
}

fn datagram(h: &VoiceHeader) -> Bytes {
    let mut opus = vec![TOC];
    opus.extend_from_slice(&h.seq.to_be_bytes());
    opus.resize(40, 0x5a);
    h.to_datagram(&opus)
}

fn start(group: u32, terminal: u32, burst: u16, class: Class) -> Start {
    Start {
        group: GroupId(group),
        terminal: TerminalId(terminal),
        burst,
        class,
        started_ms: 1_764_000_000_000,
    }
}

fn config(queue: usize) -> config::Recording {
    config::Recording {
        queue,
        sync_interval_ms: 10,
        ..config::Recording::default()
    }
}

#[test]
fn a_full_queue_drops_frames_from_the_recording_never_waits_and_counts_them() {
    let (frames, rx) = mpsc::sync_channel(2);
    let (control, control_rx) = mpsc::channel();
    let metrics = Arc::new(Metrics::default());
    let tap = Tap {
        frames,
        control,
        dropped: AtomicU64::new(0),
        metrics: metrics.clone(),
    };
    tap.start(start(5, 501, 1, Class::Normal));
    for seq in 0..5 {
        let h = header(5, 1, seq);
        // Nobody reads: the third and later find the queue full and
        // return at once.
        tap.frame(&h, &datagram(&h));
    }
    assert_eq!(metrics.recorder_frames_dropped.load(Ordering::Relaxed), 3);
    tap.end(GroupId(5), 1, 2, EndedBy::Released);
    let queued: Vec<Frame> = rx.try_iter().collect();
    assert_eq!(queued.iter().map(|f| f.seq).collect::<Vec<_>>(), [0, 1]);
    let control: Vec<Control> = control_rx.try_iter().collect();
    assert!(matches!(control[0], Control::Start(_)));
    assert!(
        matches!(control[1], Control::End { dropped: 3, .. }),
        "{control:?}"
    );
    // The count starts again for the next burst.
    assert_eq!(tap.dropped.load(Ordering::Relaxed), 0);
    // A recorder that is gone drops the same way.
    drop(rx);
    let h = header(5, 1, 5);
    tap.frame(&h, &datagram(&h));
    assert_eq!(metrics.recorder_frames_dropped.load(Ordering::Relaxed), 4);
}

#[test]
fn bursts_become_indexed_ogg_opus_files_with_their_gaps_filled() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::in_memory().unwrap());
    let metrics = Arc::new(Metrics::default());
    let recorder =
        Recorder::start(&config(64), dir.path(), store.clone(), metrics.clone()).unwrap();
    let (a, b) = (recorder.tap(), recorder.tap());
    // Group 5: frames 0..10 with 3 and 4 lost on the way.
    a.start(start(5, 501, 7, Class::Normal));
    for seq in (0..10).filter(|s| ![3, 4].contains(s)) {
        let mut h = header(5, 7, seq);
        h.flags = if seq == 9 { FLAG_END } else { 0 };
        a.frame(&h, &datagram(&h));
    }
    a.end(GroupId(5), 7, 1_764_000_002_000, EndedBy::Released);
    // Group 6: an SOS burst, pre-empted... by the gateway stopping.
    b.start(start(6, 502, 1, Class::Emergency));
    for seq in 0..3 {
        let h = header(6, 1, seq);
        b.frame(&h, &datagram(&h));
    }
    // Group 7: granted, nobody spoke.
    a.start(start(7, 503, 2, Class::Normal));
    a.end(GroupId(7), 2, 1_764_000_001_000, EndedBy::Preempted);
    // A frame of no burst the recorder knows.
    let stray = header(8, 9, 0);
    a.frame(&stray, &datagram(&stray));
    recorder.stop();

    let rows = store.recordings(&RecordingQuery::default()).unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let by_group = |g: u32| rows.iter().find(|r| r.group == g).unwrap();
    let r5 = by_group(5);
    assert_eq!(
        (r5.terminal, r5.burst, r5.class, r5.ended_by),
        (TerminalId(501), 7, 0, EndedBy::Released)
    );
    assert_eq!((r5.frames, r5.filled, r5.dropped), (8, 2, 0));
    assert_eq!(r5.ended_ms, 1_764_000_002_000);
    let path = dir
        .path()
        .join("recordings")
        .join(r5.path.as_ref().unwrap());
    assert!(path.starts_with(dir.path().join("recordings/2025/11/24")));
    assert_eq!(r5.bytes, std::fs::metadata(&path).unwrap().len());
    let (pre_skip, packets) = read_packets(&path).unwrap();
    assert_eq!(pre_skip, 312);
    assert_eq!(packets.len(), 10, "8 frames, 2 fillers");
    // The relayed packets, byte for byte, with fillers where 3 and 4 were.
    for (seq, (data, _)) in packets.iter().enumerate() {
        if seq == 3 || seq == 4 {
            assert_eq!(data, &[TOC]);
        } else {
            let h = header(5, 7, seq as u16);
            assert_eq!(&data[..], &datagram(&h)[13..]);
        }
    }
    // The last page ends at 10 frames of 20 ms.
    assert_eq!(packets.last().unwrap().1, Some(10 * 960));

    let r6 = by_group(6);
    assert_eq!((r6.class, r6.ended_by, r6.frames), (2, EndedBy::Left, 3));
    assert!(r6.is_sos());
    let r7 = by_group(7);
    assert_eq!((r7.path.as_deref(), r7.frames, r7.bytes), (None, 0, 0));
    assert_eq!(r7.ended_by, EndedBy::Preempted);

    let m = metrics.snapshot();
    assert_eq!(m.recordings_written, 3);
    assert_eq!(m.recorder_frames_late, 1);
    assert_eq!(m.recorder_errors, 0);
}

#[test]
fn a_burst_starting_below_the_disk_reserve_is_indexed_without_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::in_memory().unwrap());
    let metrics = Arc::new(Metrics::default());
    let mut c = config(64);
    // More than any disk has free.
    c.disk_reserve_bytes = u64::MAX;
    let recorder = Recorder::start(&c, dir.path(), store.clone(), metrics.clone()).unwrap();
    let tap = recorder.tap();
    tap.start(start(5, 501, 1, Class::Normal));
    for seq in 0..3 {
        let h = header(5, 1, seq);
        tap.frame(&h, &datagram(&h));
    }
    tap.end(GroupId(5), 1, 1_764_000_001_000, EndedBy::Released);
    recorder.stop();
    let rows = store.recordings(&RecordingQuery::default()).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].path.as_deref(), rows[0].frames, rows[0].bytes),
        (None, 0, 0)
    );
    assert!(!dir.path().join("recordings").exists());
    let m = metrics.snapshot();
    assert_eq!(m.recordings_refused_disk_reserve, 1);
    assert_eq!(m.recorder_errors, 0);
}

#[test]
fn retention_and_the_budget_delete_files_and_rows_oldest_first_sos_last() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::in_memory().unwrap());
    let metrics = Arc::new(Metrics::default());
    let day = 86_400_000u64;
    let now = 100 * day;
    let mut rows = Vec::new();
    for (i, (age_days, class)) in [(40, 0u8), (40, 2), (20, 0), (1, 0), (1, 2)]
        .iter()
        .enumerate()
    {
        let rel = format!("f{i}.opus");
        std::fs::write(dir.path().join(&rel), vec![0u8; 1000]).unwrap();
        rows.push(crate::store::Recording {
            id: 0,
            group: 5,
            terminal: TerminalId(i as u32),
            burst: 1,
            class: *class,
            started_ms: now - age_days * day,
            ended_ms: now - age_days * day + 1,
            ended_by: EndedBy::Released,
            path: Some(rel),
            frames: 1,
            filled: 0,
            dropped: 0,
            bytes: 1000,
        });
    }
    store.add_recordings(&rows).unwrap();
    let mut c = config(1);
    c.retention_days = 30;
    c.sos_retention_days = 365;
    c.disk_budget_bytes = 2_500;
    let sweep = sweep::Sweep::new(&c, dir.path().to_path_buf(), store.clone(), metrics.clone());
    // Retention takes terminal 0 (40 days, normal); the budget then the
    // oldest normal ones (2, 3) until 2 000 bytes remain: the SOS ones.
    assert_eq!(sweep.once(now).unwrap(), 3);
    let left: Vec<u32> = store
        .recordings(&RecordingQuery::default())
        .unwrap()
        .iter()
        .map(|r| r.terminal.0)
        .collect();
    assert_eq!(left, [1, 4]);
    for i in [0, 2, 3] {
        assert!(!dir.path().join(format!("f{i}.opus")).exists());
    }
    assert!(dir.path().join("f1.opus").exists());
    assert_eq!(metrics.snapshot().recordings_deleted, 3);
    assert_eq!(sweep.once(now).unwrap(), 0, "nothing more to do");
}
