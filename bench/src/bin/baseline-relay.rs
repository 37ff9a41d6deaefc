//! `baseline-relay`: the floor for any voice relay on this machine.
//!
//! A raw UDP fan-out relay written for the benchmark: no encryption, no
//! congestion control, no acknowledgements, one thread, batched system
//! calls (`recvmmsg` in, `sendmmsg` out). It does the work a relay cannot
//! avoid: receive a frame, find its group, stamp the speaker, send one copy
//! to every other member. `ptt-bench` runs it on the same workload as the
//! gateway and divides the two processes' CPU time per delivered frame.
//!
//! Datagrams: `J` + group u32 + terminal u32 (big endian) joins a group:
//! the terminal at the sender's address becomes a member (like the
//! simulator's QUIC terminals, many share one socket). Anything else is a
//! voice datagram in the protocol's 13-byte header format whose speaker
//! field names the talking terminal, relayed to the group's other members.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use anyhow::Context;
use clap::Parser;
use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrIn, SockaddrStorage};
use ptt_codec::{TerminalId, VoiceHeader};

#[derive(Debug, Parser)]
#[command(about = "Raw UDP fan-out relay (benchmark baseline)")]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// UDP socket buffer size, bytes (as the gateway's default).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    socket_buffer: usize,
}

/// Datagrams read per `recvmmsg`.
const RECV_BATCH: usize = 64;
/// Datagrams written per `sendmmsg`.
const SEND_BATCH: usize = 512;
const MAX_DATAGRAM: usize = 1500;

/// Group members: where each terminal is.
#[derive(Debug, Default)]
struct Groups {
    members: HashMap<u32, Vec<(SockaddrIn, u32)>>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let socket =
        UdpSocket::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    let sock2 = socket2::SockRef::from(&socket);
    sock2.set_recv_buffer_size(args.socket_buffer)?;
    sock2.set_send_buffer_size(args.socket_buffer)?;
    eprintln!("baseline relay listening on {}", socket.local_addr()?);
    let fd = socket.as_raw_fd();
    let mut groups = Groups::default();
    let mut bufs = vec![[0u8; MAX_DATAGRAM]; RECV_BATCH];
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(RECV_BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrIn>::preallocate(SEND_BATCH, None);
    // One received batch's frames, stamped, and where each copy goes.
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(RECV_BATCH);
    let mut out: Vec<(usize, SockaddrIn)> = Vec::with_capacity(SEND_BATCH);
    loop {
        frames.clear();
        out.clear();
        let received: Vec<(usize, Option<SockaddrIn>)> = {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
                bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
            recvmmsg(
                fd,
                &mut recv_headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            )?
            .map(|m| {
                let from = m.address.and_then(|a| a.as_sockaddr_in().copied());
                (m.bytes, from)
            })
            .collect()
        };
        for (i, (len, from)) in received.into_iter().enumerate() {
            let Some(from) = from else { continue };
            let datagram = &bufs[i][..len];
            if len == 9 && datagram[0] == b'J' {
                let group = u32::from_be_bytes(datagram[1..5].try_into().expect("4 bytes"));
                let terminal = u32::from_be_bytes(datagram[5..9].try_into().expect("4 bytes"));
                let members = groups.members.entry(group).or_default();
                if !members.contains(&(from, terminal)) {
                    members.push((from, terminal));
                }
                continue;
            }
            let Ok((header, _)) = VoiceHeader::decode(datagram) else {
                continue;
            };
            let Some(members) = groups.members.get(&header.group.0) else {
                continue;
            };
            // Only members are relayed; the speaker is stamped as the gateway
            // does.
            let speaker = (from, header.speaker);
            if !members.contains(&speaker) {
                continue;
            }
            frames.push(
                ptt_codec::voice::stamp_speaker(datagram, TerminalId(header.speaker)).to_vec(),
            );
            let frame = frames.len() - 1;
            for m in members {
                if *m != speaker {
                    out.push((frame, m.0));
                }
            }
        }
        for chunk in out.chunks(SEND_BATCH) {
            let slices: Vec<[IoSlice<'_>; 1]> = chunk
                .iter()
                .map(|(f, _)| [IoSlice::new(&frames[*f])])
                .collect();
            let addrs: Vec<Option<SockaddrIn>> = chunk.iter().map(|(_, a)| Some(*a)).collect();
            // A full socket buffer drops copies, like any UDP relay; the
            // receivers' counts show it.
            let _ = sendmmsg(
                fd,
                &mut send_headers,
                &slices,
                &addrs,
                [],
                MsgFlags::MSG_DONTWAIT,
            );
        }
    }
}
