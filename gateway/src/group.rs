//! One talk group at run time: its members online, its floor, and the
//! fan-out snapshot the voice path reads.
//!
//! This is the async shell around [`floor::Machine`]: it passes in the time,
//! turns floor events into control messages, republishes the fan-out
//! snapshot, and arms the talk-time timer. All mutable state sits behind one
//! short-held mutex that is never held across an `.await`; the per-frame
//! voice path never takes it (it reads [`Group::fanout`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::ArcSwap;
use ptt_codec::{Class, DenyCause, GroupId, ServerMsg, TerminalId};

use crate::alert::{now_ms, BurstRecord, EndedBy};
use crate::fanout::{self, Receiver, Talker};
use crate::floor;
use crate::metrics::Metrics;
use crate::outbox::Outbox;

/// The fan-out snapshot of a group in the gateway.
pub type Snapshot = fanout::Snapshot<quinn::Connection>;

/// A terminal's live connection, as a group sees it.
#[derive(Debug, Clone)]
pub struct Link {
    /// Session id: a newer session of the same terminal has a larger one.
    pub session: u64,
    /// For voice datagrams.
    pub conn: quinn::Connection,
    /// For control messages.
    pub outbox: Outbox,
}

/// A member online in a group.
#[derive(Debug, Clone)]
pub struct Member {
    /// May request the floor.
    pub talk: bool,
    /// Floor priority (from role).
    pub priority: u8,
    /// Display name, for `FloorTaken`.
    pub name: Arc<str>,
    /// Where to reach it.
    pub link: Link,
}

#[derive(Debug)]
struct State {
    floor: floor::Machine,
    members: BTreeMap<TerminalId, Member>,
    /// Deadline a timer task is sleeping towards, to avoid spawning twice.
    armed: Option<Instant>,
    /// The burst being talked, for the audit log: (terminal, burst, class,
    /// granted Unix ms).
    talking: Option<(TerminalId, u16, Class, u64)>,
}

/// A talk group.
#[derive(Debug)]
pub struct Group {
    /// The group's id (its node's id).
    pub id: GroupId,
    /// The node's display name.
    pub name: Arc<str>,
    fanout: ArcSwap<Snapshot>,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    audit: tokio::sync::mpsc::UnboundedSender<BurstRecord>,
}

impl Group {
    /// A group with nobody online.
    /// Ended bursts go to `audit`, to be written to the floor audit log.
    pub fn new(
        id: GroupId,
        name: Arc<str>,
        floor: floor::Config,
        metrics: Arc<Metrics>,
        audit: tokio::sync::mpsc::UnboundedSender<BurstRecord>,
    ) -> Self {
        Self {
            id,
            name,
            fanout: ArcSwap::from_pointee(Snapshot::default()),
            state: Mutex::new(State {
                floor: floor::Machine::new(floor),
                members: BTreeMap::new(),
                armed: None,
                talking: None,
            }),
            metrics,
            audit,
        }
    }

    /// The current fan-out snapshot. Lock-free; valid until the next
    /// membership or floor change, after which the next load sees the new one.
    #[inline]
    pub fn fanout(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.fanout.load()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock is a bug in this module; the state
        // is still consistent enough to keep serving other terminals.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `terminal` online in the group, or replaces its link when it
    /// reconnected. With `announce`, the terminal is sent `Joined`; either
    /// way it is told who talks right now (late entry) and the others see it
    /// come online.
    pub fn attach(self: &Arc<Self>, terminal: TerminalId, member: Member, announce: bool) {
        let mut st = self.lock();
        let outbox = member.link.outbox.clone();
        let talk = member.talk;
        let was_online = st.members.insert(terminal, member).is_some();
        if !was_online {
            for (t, m) in &st.members {
                if *t != terminal {
                    m.link.outbox.send(ServerMsg::Presence {
                        group: self.id,
                        terminal,
                        online: true,
                    });
                }
            }
        }
        if announce {
            outbox.send(ServerMsg::Joined {
                group: self.id,
                talk,
                name: self.name.to_string(),
                online: st.members.keys().copied().collect(),
            });
        }
        if let Some(burst) = st.floor.holder() {
            if burst.terminal != terminal {
                let name = st.members.get(&burst.terminal).map(|m| m.name.to_string());
                outbox.send(ServerMsg::FloorTaken {
                    group: self.id,
                    speaker: burst.terminal,
                    burst: burst.id,
                    class: burst.class,
                    name: name.unwrap_or_default(),
                });
            }
        }
        self.publish(&st);
    }

    /// Takes `terminal` offline in the group if its link belongs to
    /// `session` (a newer session's link is left alone). Ends its burst and
    /// drops its queued request. Returns whether it was removed.
    pub fn detach(self: &Arc<Self>, terminal: TerminalId, session: u64) -> bool {
        let mut st = self.lock();
        match st.members.get(&terminal) {
            Some(m) if m.link.session == session => {}
            _ => return false,
        }
        st.members.remove(&terminal);
        for m in st.members.values() {
            m.link.outbox.send(ServerMsg::Presence {
                group: self.id,
                terminal,
                online: false,
            });
        }
        st.floor.handle_leave(Instant::now(), terminal);
        self.after_floor(&mut st, EndedBy::Left);
        true
    }

    /// A member pressed the talk key.
    pub fn request_floor(self: &Arc<Self>, terminal: TerminalId, class: Class) {
        self.request_floor_for(terminal, class, None);
    }

    /// A floor request with its own talk-time limit (an SOS hot-mic burst).
    pub fn request_floor_for(
        self: &Arc<Self>,
        terminal: TerminalId,
        class: Class,
        limit: Option<std::time::Duration>,
    ) {
        let mut st = self.lock();
        let Some(m) = st.members.get(&terminal) else {
            return;
        };
        if !m.talk {
            m.link.outbox.send(ServerMsg::FloorDenied {
                group: self.id,
                cause: DenyCause::ReceiveOnly,
            });
            Metrics::add(&self.metrics.floor_denied, 1);
            return;
        }
        let request = floor::Request {
            terminal,
            class,
            priority: m.priority,
            limit,
        };
        st.floor.handle_request(Instant::now(), request);
        self.after_floor(&mut st, EndedBy::Released);
    }

    /// A member released the talk key (or withdrew its queued request).
    pub fn release_floor(self: &Arc<Self>, terminal: TerminalId) {
        let mut st = self.lock();
        st.floor.handle_release(Instant::now(), terminal);
        self.after_floor(&mut st, EndedBy::Released);
    }

    /// Number of members online.
    pub fn online(&self) -> usize {
        self.lock().members.len()
    }

    /// The terminal holding the floor, if any.
    pub fn holder(&self) -> Option<TerminalId> {
        self.lock().floor.holder().map(|b| b.terminal)
    }

    fn on_timer(self: &Arc<Self>, deadline: Instant) {
        let mut st = self.lock();
        if st.armed == Some(deadline) {
            st.armed = None;
        }
        st.floor.handle_timeout(Instant::now());
        self.after_floor(&mut st, EndedBy::Released);
    }

    /// Delivers floor events, logs ended bursts, republishes the snapshot
    /// and arms the timer. A burst that ends without a revoke ended the way
    /// `ended_by` says (the caller's operation: released or left).
    fn after_floor(self: &Arc<Self>, st: &mut State, ended_by: EndedBy) {
        while let Some(event) = st.floor.poll_event() {
            match &event {
                floor::Event::Revoked { cause, .. } => self.burst_ended(st, EndedBy::from(*cause)),
                floor::Event::Granted { burst, .. } => {
                    self.burst_ended(st, ended_by);
                    st.talking = Some((burst.terminal, burst.id, burst.class, now_ms()));
                }
                floor::Event::Idle => self.burst_ended(st, ended_by),
                _ => {}
            }
            self.deliver(st, event);
        }
        self.publish(st);
        if let Some(deadline) = st.floor.poll_timeout() {
            if st.armed.is_none_or(|a| a > deadline) {
                st.armed = Some(deadline);
                let group = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
                    group.on_timer(deadline);
                });
            }
        }
    }

    fn burst_ended(&self, st: &mut State, ended_by: EndedBy) {
        if let Some((terminal, burst, class, granted_ms)) = st.talking.take() {
            let _ = self.audit.send(BurstRecord {
                group: self.id.0,
                terminal,
                burst,
                class: class.code(),
                granted_ms,
                ended_ms: now_ms(),
                ended_by,
            });
        }
    }

    fn deliver(&self, st: &State, event: floor::Event) {
        let to = |t: &TerminalId, msg: ServerMsg| {
            if let Some(m) = st.members.get(t) {
                m.link.outbox.send(msg);
            }
        };
        match event {
            floor::Event::Granted { burst, limit } => {
                Metrics::add(&self.metrics.floor_granted, 1);
                tracing::debug!(group = %self.id, terminal = %burst.terminal, burst = burst.id, class = ?burst.class, "floor granted");
                let name = st
                    .members
                    .get(&burst.terminal)
                    .map(|m| m.name.to_string())
                    .unwrap_or_default();
                for (t, m) in &st.members {
                    let msg = if *t == burst.terminal {
                        ServerMsg::FloorGranted {
                            group: self.id,
                            burst: burst.id,
                            limit_ms: u32::try_from(limit.as_millis()).unwrap_or(u32::MAX),
                        }
                    } else {
                        ServerMsg::FloorTaken {
                            group: self.id,
                            speaker: burst.terminal,
                            burst: burst.id,
                            class: burst.class,
                            name: name.clone(),
                        }
                    };
                    m.link.outbox.send(msg);
                }
            }
            floor::Event::Denied { terminal, cause } => {
                Metrics::add(&self.metrics.floor_denied, 1);
                to(
                    &terminal,
                    ServerMsg::FloorDenied {
                        group: self.id,
                        cause,
                    },
                );
            }
            floor::Event::Queued { terminal, position } => {
                to(
                    &terminal,
                    ServerMsg::FloorQueued {
                        group: self.id,
                        position,
                    },
                );
            }
            floor::Event::Revoked {
                terminal,
                burst,
                cause,
            } => {
                Metrics::add(&self.metrics.floor_revoked, 1);
                tracing::debug!(group = %self.id, %terminal, burst, ?cause, "floor revoked");
                to(
                    &terminal,
                    ServerMsg::FloorRevoked {
                        group: self.id,
                        burst,
                        cause,
                    },
                );
            }
            floor::Event::Idle => {
                for m in st.members.values() {
                    m.link.outbox.send(ServerMsg::FloorIdle { group: self.id });
                }
            }
        }
    }

    /// Replaces the fan-out snapshot with one built from `st`.
    fn publish(&self, st: &State) {
        let receivers: Arc<[Receiver<quinn::Connection>]> = st
            .members
            .iter()
            .map(|(t, m)| Receiver {
                terminal: *t,
                sink: m.link.conn.clone(),
            })
            .collect();
        let talker = st.floor.holder().map(|b| Talker {
            terminal: b.terminal,
            burst: b.id,
        });
        self.fanout.store(Arc::new(Snapshot { talker, receivers }));
    }
}
