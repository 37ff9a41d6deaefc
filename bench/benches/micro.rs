//! Micro-benchmarks of the per-frame and per-message work: codec decode and
//! encode, floor state machine steps, fan-out receiver selection.
//!
//! `cargo bench -p ptt-bench --bench micro` (criterion; results in
//! target/criterion). These isolate the CPU cost of the gateway's own code
//! from the network stack; the end-to-end cost is `ptt-bench`'s job.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ptt_codec::control::split_frame;
use ptt_codec::{
    AlertBody, AlertKind, Class, ClientMsg, GroupId, Location, ServerMsg, Target, TerminalId,
    VoiceHeader,
};
use ptt_gateway::fanout::{self, Receiver, Sink, SinkError, Snapshot, Talker};
use ptt_gateway::floor::{Machine, Request};

/// A 20 ms Opus frame at 16 kbit/s is about 40 bytes.
const OPUS: [u8; 40] = [0x5a; 40];

fn voice_datagram() -> Bytes {
    let header = VoiceHeader {
        group: GroupId(42),
        speaker: 0,
        burst: 7,
        seq: 100,
        flags: 0,
    };
    let mut buf = BytesMut::new();
    header.encode(&OPUS, &mut buf);
    buf.freeze()
}

fn alert_send() -> ClientMsg {
    ClientMsg::AlertSend {
        request: 7,
        target: Target::Subtree { node: 3, roles: 0 },
        body: AlertBody {
            kind: AlertKind::Dispatch,
            priority: 3,
            ttl_s: 600,
            title: "两名男子试图拉车门".into(),
            text: "城南路165号，01:25，请就近处置并回报。".into(),
            location: Some(Location {
                lat_e7: 290_800_000,
                lon_e7: 1_196_400_000,
                address: "城南路165号".into(),
            }),
            attachments: Vec::new(),
        },
    }
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    let datagram = voice_datagram();
    g.bench_function("voice_header_decode", |b| {
        b.iter(|| VoiceHeader::decode(black_box(&datagram)).unwrap())
    });
    g.bench_function("voice_stamp_speaker", |b| {
        b.iter(|| ptt_codec::voice::stamp_speaker(black_box(&datagram), TerminalId(1001)))
    });
    let floor_taken = ServerMsg::FloorTaken {
        group: GroupId(42),
        speaker: TerminalId(1001),
        burst: 7,
        class: Class::Normal,
        name: "张伟".into(),
    };
    g.bench_function("floor_taken_encode", |b| {
        let mut buf = BytesMut::with_capacity(64);
        b.iter(|| {
            buf.clear();
            black_box(&floor_taken).encode(&mut buf);
        })
    });
    let alert = alert_send();
    let mut encoded = BytesMut::new();
    alert.encode(&mut encoded);
    g.bench_function("alert_send_decode", |b| {
        b.iter(|| ClientMsg::decode(split_frame(black_box(&encoded)).unwrap()).unwrap())
    });
    g.bench_function("alert_send_encode", |b| {
        let mut buf = BytesMut::with_capacity(512);
        b.iter(|| {
            buf.clear();
            black_box(&alert).encode(&mut buf);
        })
    });
    g.finish();
}

fn request(terminal: u32, class: Class, priority: u8) -> Request {
    Request {
        terminal: TerminalId(terminal),
        class,
        priority,
        limit: None,
    }
}

fn floor(c: &mut Criterion) {
    let mut g = c.benchmark_group("floor");
    // One press-talk-release cycle on an idle group: grant, then release.
    g.bench_function("grant_and_release", |b| {
        let mut m = Machine::new(Default::default());
        let mut now = Instant::now();
        b.iter(|| {
            m.handle_request(now, request(1, Class::Normal, 10));
            m.handle_release(now, TerminalId(1));
            while let Some(e) = m.poll_event() {
                black_box(e);
            }
            now += Duration::from_millis(1);
        })
    });
    // Contention: a guard holds the floor, three more press (queued), then
    // the console pre-empts and everyone lets go.
    g.bench_function("contention_round", |b| {
        let mut now = Instant::now();
        b.iter_batched(
            || Machine::new(Default::default()),
            |mut m| {
                m.handle_request(now, request(1, Class::Normal, 10));
                for t in 2..5 {
                    m.handle_request(now, request(t, Class::Normal, 10));
                }
                m.handle_request(now, request(9, Class::ImminentPeril, 200));
                for t in [9, 1, 2, 3, 4] {
                    m.handle_release(now, TerminalId(t));
                }
                while let Some(e) = m.poll_event() {
                    black_box(e);
                }
                now += Duration::from_millis(1);
                m
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Counts datagrams instead of sending them (shared by every receiver, as
/// connections share one socket).
#[derive(Debug, Default, Clone)]
struct Count(Arc<AtomicUsize>);

impl Sink for Count {
    fn send(&self, datagram: Bytes) -> Result<(), SinkError> {
        black_box(datagram);
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    let datagram = voice_datagram();
    let (header, _) = VoiceHeader::decode(&datagram).unwrap();
    // A unit of 5 with its station console; a station group of 60; a
    // police station's 400 listeners.
    for members in [6usize, 60, 400] {
        let sink = Count::default();
        let snapshot = Snapshot {
            talker: Some(Talker {
                terminal: TerminalId(1),
                burst: 7,
            }),
            receivers: (1..=members as u32)
                .map(|t| Receiver {
                    terminal: TerminalId(t),
                    sink: sink.clone(),
                })
                .collect(),
        };
        g.throughput(Throughput::Elements(members as u64 - 1));
        g.bench_function(format!("admit_and_relay_{members}"), |b| {
            b.iter(|| {
                fanout::admit(&snapshot, TerminalId(1), black_box(&header)).unwrap();
                fanout::relay(&snapshot, TerminalId(1), black_box(&datagram))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codec, floor, fanout);
criterion_main!(benches);
