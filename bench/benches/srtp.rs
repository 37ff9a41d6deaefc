//! Micro-benchmark of the media plane's per-packet work: SRTP protect and
//! unprotect (AEAD_AES_128_GCM, RFC 7714) of a 20 ms Opus frame, the cost the
//! gateway pays once per talker packet (unprotect) and once per listener
//! (protect) when it relays SRTP.
//!
//! `cargo bench -p ptt-bench --bench srtp` (criterion; results in
//! target/criterion). The payload is 80 bytes: a 20 ms Opus frame at
//! 32 kbit/s; the packet is 12 + 80 bytes of RTP plus the 16-byte tag.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ptt_codec::srtp::{self, rtp, MasterKeys, Receiver, Role, Sender, TAG_LEN};

/// A 20 ms Opus frame at 32 kbit/s.
const PAYLOAD: usize = 80;
const SSRC: u32 = 0x0000_03e9;
/// RTP header, payload and tag.
const PACKET: usize = rtp::FIXED_LEN + PAYLOAD + TAG_LEN;

fn keys() -> MasterKeys {
    let exported: [u8; srtp::EXPORTER_LEN] = core::array::from_fn(|i| i as u8);
    MasterKeys::from_exporter(&exported).expect("56 bytes")
}

/// The plaintext RTP packet with sequence `seq`, in a buffer with room for
/// the tag.
fn plain(seq: u16) -> [u8; PACKET] {
    let mut buf = [0u8; PACKET];
    rtp::Builder {
        marker: false,
        payload_type: 111,
        sequence: seq,
        timestamp: u32::from(seq).wrapping_mul(960),
        ssrc: SSRC,
        csrcs: &[],
        extension: None,
    }
    .write(&[0x5a; PAYLOAD], &mut buf)
    .expect("room");
    buf
}

fn srtp(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("srtp");
    g.throughput(Throughput::Elements(1));

    // Copy the plaintext into the send buffer, set the next sequence number,
    // encrypt and tag in place: what the relay does per listener.
    g.bench_function("protect_80B", |b| {
        let mut sender = Sender::new(&keys.session(Role::Server.sending()), SSRC);
        let template = plain(0);
        let mut seq = 0u16;
        b.iter(|| {
            let mut buf = template;
            seq = seq.wrapping_add(1);
            buf[2..4].copy_from_slice(&seq.to_be_bytes());
            let len = sender
                .protect(&mut buf, PACKET - TAG_LEN)
                .expect("sequence numbers increase by 1");
            black_box((&buf, len));
        })
    });

    // Parse, window check, verify and decrypt in place, window update: what
    // the gateway does once per talker packet. Each packet is new (sequence
    // +1), protected outside the timed part.
    g.bench_function("unprotect_80B", |b| {
        let uplink = keys.session(Role::Client.sending());
        let mut sender = Sender::new(&uplink, SSRC);
        let mut receiver = Receiver::new(&keys.session(Role::Server.receiving()), SSRC);
        let mut seq = 0u16;
        b.iter_batched(
            || {
                seq = seq.wrapping_add(1);
                let mut buf = plain(seq);
                sender
                    .protect(&mut buf, PACKET - TAG_LEN)
                    .expect("sequence numbers increase by 1");
                buf
            },
            |mut buf| {
                let packet = receiver.unprotect(&mut buf).expect("authentic, in order");
                black_box((&buf, packet.payload));
            },
            BatchSize::SmallInput,
        )
    });

    // A forged packet with the receiver's SSRC: refused by the tag check
    // (what a flood of garbage costs per packet).
    g.bench_function("unprotect_forged_80B", |b| {
        let mut receiver = Receiver::new(&keys.session(Role::Server.receiving()), SSRC);
        let forged = plain(1);
        b.iter(|| {
            let mut buf = forged;
            black_box(receiver.unprotect(&mut buf)).expect_err("forged");
        })
    });

    // Key setup per listener and direction: derivation plus the AES and GHASH
    // key schedules of SRTP and SRTCP (once per QUIC connection).
    g.bench_function("session_setup", |b| {
        b.iter(|| {
            let session = black_box(&keys).session(Role::Server.sending());
            black_box(Sender::new(&session, SSRC));
        })
    });
    g.finish();
}

/// The AEAD alone, RustCrypto `aes-gcm` (what the codec uses) against
/// `ring` (BoringSSL's assembly, already in the tree for rustls), on the
/// same 80-byte payload and 12-byte header: how much of the per-packet cost
/// is the cipher backend.
fn backend(c: &mut Criterion) {
    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::{Aes128Gcm, KeyInit, Nonce};
    use ring::aead::{Aad, LessSafeKey, Nonce as RingNonce, UnboundKey, AES_128_GCM};

    let key = [7u8; 16];
    let header = [0x80u8; rtp::FIXED_LEN];
    let mut g = c.benchmark_group("srtp_backend");
    g.throughput(Throughput::Elements(1));
    g.bench_function("aes_gcm_seal_80B", |b| {
        let gcm = Aes128Gcm::new(&key.into());
        let mut counter = 0u64;
        b.iter(|| {
            counter += 1;
            let mut iv = [0u8; 12];
            iv[4..].copy_from_slice(&counter.to_be_bytes());
            let mut body = [0x5au8; PAYLOAD];
            let tag = gcm
                .encrypt_in_place_detached(Nonce::from_slice(&iv), &header, &mut body)
                .expect("80 bytes is within GCM's limit");
            black_box((body, tag));
        })
    });
    g.bench_function("ring_seal_80B", |b| {
        let sealing = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).expect("16-byte key"));
        let mut counter = 0u64;
        b.iter(|| {
            counter += 1;
            let mut iv = [0u8; 12];
            iv[4..].copy_from_slice(&counter.to_be_bytes());
            let mut body = [0x5au8; PAYLOAD];
            let tag = sealing
                .seal_in_place_separate_tag(
                    RingNonce::assume_unique_for_key(iv),
                    Aad::from(&header),
                    &mut body,
                )
                .expect("80 bytes is within GCM's limit");
            black_box(&body);
            black_box(tag.as_ref());
        })
    });
    g.finish();
}

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    // The thread CPU clock is never negative.
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The same protect and unprotect, timed by the thread's CPU clock instead
/// of the wall clock: on a shared machine the wall clock also counts the
/// time other processes held the core. Reported by criterion as "time".
fn cpu(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("srtp_cpu");
    g.throughput(Throughput::Elements(1));
    g.bench_function("protect_80B", |b| {
        let mut sender = Sender::new(&keys.session(Role::Server.sending()), SSRC);
        let template = plain(0);
        let mut seq = 0u16;
        b.iter_custom(|iters| {
            let start = thread_cpu();
            for _ in 0..iters {
                let mut buf = template;
                seq = seq.wrapping_add(1);
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                let len = sender
                    .protect(&mut buf, PACKET - TAG_LEN)
                    .expect("sequence numbers increase by 1");
                black_box((&buf, len));
            }
            thread_cpu() - start
        })
    });
    g.bench_function("unprotect_80B", |b| {
        let mut sender = Sender::new(&keys.session(Role::Client.sending()), SSRC);
        let mut receiver = Receiver::new(&keys.session(Role::Server.receiving()), SSRC);
        let mut seq = 0u16;
        b.iter_custom(|iters| {
            // Protected outside the timed part, in batches of at most 4,096.
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(4096);
                left -= n;
                let batch: Vec<[u8; PACKET]> = (0..n)
                    .map(|_| {
                        seq = seq.wrapping_add(1);
                        let mut buf = plain(seq);
                        sender
                            .protect(&mut buf, PACKET - TAG_LEN)
                            .expect("sequence numbers increase by 1");
                        buf
                    })
                    .collect();
                let start = thread_cpu();
                for mut buf in batch {
                    let packet = receiver.unprotect(&mut buf).expect("authentic, in order");
                    black_box((&buf, packet.payload));
                }
                spent += thread_cpu() - start;
            }
            spent
        })
    });
    g.finish();
}

criterion_group!(benches, srtp, backend, cpu);
criterion_main!(benches);
