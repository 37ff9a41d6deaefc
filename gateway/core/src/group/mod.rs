//! One talk group at run time, as a sans-I/O state machine: who is online,
//! the floor, and every control message that follows from them.
//!
//! The machine owns the group's [`floor::Machine`] and its membership
//! (terminal -> [`Member`]). A member carries an opaque link `L` chosen by the
//! caller (the gateway uses its connection handle); the machine never looks
//! inside it, it only hands a clone back in [`Output::Send`] so the caller can
//! reach the terminal without looking it up again.
//!
//! Like `quinn-proto`'s `Connection`, the caller passes `now` into every
//! `handle_*` call, then drains [`Machine::poll_output`] until it returns
//! `None` and (re)arms one timer at [`Machine::poll_timeout`], calling
//! [`Machine::handle_timeout`] when it fires (early calls are harmless). The
//! outputs are addressed control messages, "republish the fan-out snapshot",
//! and ended bursts for the audit log, in the order they must happen.
//!
//! Presence is coalesced per member: the others are told of a member's
//! change at once when they were told nothing of it for the presence
//! interval, else once the interval since the last telling has passed, and
//! then only the net change (join, leave, join within the interval is one
//! "online", or nothing when they were last told "online"). So a burst of
//! joins and leaves costs each other member at most one `Presence` per
//! interval, however fast it comes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ptt_codec::{Class, DenyCause, GroupId, RevokeCause, ServerMsg, TerminalId};

use crate::floor;

pub mod churn;
#[cfg(test)]
mod tests;

/// The timers of a group (one enum for the whole machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// T2: the floor holder's talk-time limit.
    TalkLimit,
    /// A member's coalesced presence change is due.
    Presence,
}

/// What the other members were last told of one terminal's presence.
#[derive(Debug, Clone, Copy)]
struct Told {
    /// Told online (else offline).
    online: bool,
    /// When.
    at: Instant,
    /// It changed since: tell the net change at `at + interval`.
    pending: bool,
}

/// A member online in a group.
#[derive(Debug, Clone)]
pub struct Member<L> {
    /// May request the floor.
    pub talk: bool,
    /// Floor priority (from role).
    pub priority: u8,
    /// Display name, for `FloorTaken`.
    pub name: Arc<str>,
    /// Session id: a newer session of the same terminal has a larger one.
    /// [`Machine::handle_detach`] only removes the session it names, so a
    /// late detach of a replaced session leaves the new one alone.
    pub session: u64,
    /// Where to reach it: opaque to the machine, handed back in
    /// [`Output::Send`].
    pub link: L,
}

/// How a burst ended, for the floor audit log: the audit log's own type.
pub use crate::audit::EndedBy;

/// A burst that ended, for the floor audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The burst as it was granted (talker, id, class, grant time).
    pub burst: floor::Burst,
    /// The `now` of the call that ended it.
    pub ended_at: Instant,
    /// How it ended.
    pub by: EndedBy,
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output<L> {
    /// Send `msg` to terminal `to`, over its `link`.
    Send {
        /// The addressee.
        to: TerminalId,
        /// Its link, as given in [`Member::link`].
        link: L,
        /// The message.
        msg: ServerMsg,
    },
    /// Membership or the floor holder changed: republish the fan-out
    /// snapshot from [`Machine::members`] and [`Machine::holder`].
    Publish,
    /// A burst ended: write it to the audit log.
    BurstEnded(Ended),
}

/// One talk group: membership and floor.
#[derive(Debug)]
pub struct Machine<L> {
    id: GroupId,
    name: Arc<str>,
    floor: floor::Machine,
    members: BTreeMap<TerminalId, Member<L>>,
    /// The burst being talked, kept from its grant until it is logged as
    /// ended (the floor forgets it as soon as it ends).
    talking: Option<floor::Burst>,
    /// Presence told per terminal, kept while it may still coalesce.
    told: BTreeMap<TerminalId, Told>,
    /// At most one `Presence` per member per this interval.
    presence_interval: Duration,
    outputs: VecDeque<Output<L>>,
}

impl<L: Clone> Machine<L> {
    /// A group with nobody online, telling each member's presence changes
    /// at most once per `presence_interval`.
    pub fn new(
        id: GroupId,
        name: Arc<str>,
        floor: floor::Config,
        presence_interval: Duration,
    ) -> Self {
        Self {
            id,
            name,
            floor: floor::Machine::new(floor),
            members: BTreeMap::new(),
            talking: None,
            told: BTreeMap::new(),
            presence_interval,
            outputs: VecDeque::new(),
        }
    }

    // Getters.

    /// The group's id.
    pub fn id(&self) -> GroupId {
        self.id
    }

    /// Number of members online.
    pub fn online(&self) -> usize {
        self.members.len()
    }

    /// The member `terminal`, if online.
    pub fn member(&self, terminal: TerminalId) -> Option<&Member<L>> {
        self.members.get(&terminal)
    }

    /// Members online, by terminal id.
    pub fn members(&self) -> impl ExactSizeIterator<Item = (TerminalId, &Member<L>)> {
        self.members.iter().map(|(t, m)| (*t, m))
    }

    /// The current burst, if any.
    pub fn holder(&self) -> Option<&floor::Burst> {
        self.floor.holder()
    }

    /// The terminals waiting for the floor, next first.
    pub fn queued(&self) -> impl ExactSizeIterator<Item = TerminalId> + '_ {
        self.floor.queued()
    }

    // Inputs.

    /// Puts `terminal` online, or replaces its member (a reconnect: the new
    /// session's link). With `announce`, the terminal is sent `Joined`;
    /// either way it is told who talks right now (late entry), and when it
    /// was not online before the others see it come online (coalesced, see
    /// the module docs).
    pub fn handle_attach(
        &mut self,
        now: Instant,
        terminal: TerminalId,
        member: Member<L>,
        announce: bool,
    ) {
        let link = member.link.clone();
        let talk = member.talk;
        let was_online = self.members.insert(terminal, member).is_some();
        if !was_online {
            self.presence_changed(now, terminal);
        }
        if announce {
            let msg = ServerMsg::Joined {
                group: self.id,
                talk,
                name: self.name.to_string(),
                online: self.members.keys().copied().collect(),
            };
            self.send(terminal, link.clone(), msg);
        }
        if let Some(burst) = self.floor.holder().copied() {
            if burst.terminal != terminal {
                let msg = self.taken(&burst);
                self.send(terminal, link, msg);
            }
        }
        self.outputs.push_back(Output::Publish);
    }

    /// Takes `terminal` offline if its member belongs to `session` (a newer
    /// session's member is left alone). Ends its burst and drops its queued
    /// request. Returns whether it was removed.
    pub fn handle_detach(&mut self, now: Instant, terminal: TerminalId, session: u64) -> bool {
        match self.members.get(&terminal) {
            Some(m) if m.session == session => {}
            _ => return false,
        }
        self.members.remove(&terminal);
        self.presence_changed(now, terminal);
        self.floor.handle_leave(now, terminal);
        self.after_floor(now, EndedBy::Left, true);
        true
    }

    /// A member pressed the talk key; `limit` is its own talk-time limit
    /// instead of the group's (an SOS hot-mic burst). Ignored for a terminal
    /// not online; denied for a receive-only member.
    pub fn handle_request(
        &mut self,
        now: Instant,
        terminal: TerminalId,
        class: Class,
        limit: Option<Duration>,
    ) {
        let Some(m) = self.members.get(&terminal) else {
            return;
        };
        if !m.talk {
            let msg = ServerMsg::FloorDenied {
                group: self.id,
                cause: DenyCause::ReceiveOnly,
            };
            self.send(terminal, m.link.clone(), msg);
            return;
        }
        let request = floor::Request {
            terminal,
            class,
            priority: m.priority,
            limit,
        };
        self.floor.handle_request(now, request);
        self.after_floor(now, EndedBy::Released, false);
    }

    /// This node may no longer arbitrate the group's floor (a cluster node
    /// lost the group or its quorum): the holder is told `FloorRevoked`
    /// (`ARBITER_LOST`), every queued member `FloorDenied`
    /// (`ARBITER_UNAVAILABLE`), everyone `FloorIdle`. Members stay online.
    pub fn handle_suspend(&mut self, now: Instant) {
        self.floor
            .handle_suspend(RevokeCause::ArbiterLost, DenyCause::ArbiterUnavailable);
        self.after_floor(now, EndedBy::Revoked, false);
    }

    /// A member released the talk key (or withdrew its queued request).
    pub fn handle_release(&mut self, now: Instant, terminal: TerminalId) {
        self.floor.handle_release(now, terminal);
        self.after_floor(now, EndedBy::Released, false);
    }

    /// Call when `now` has reached [`Machine::poll_timeout`]; earlier calls
    /// do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.flush_presence(now);
        self.floor.handle_timeout(now);
        self.after_floor(now, EndedBy::Released, false);
    }

    // Outputs.

    /// The next thing to do; call until `None` after every `handle_*`.
    pub fn poll_output(&mut self) -> Option<Output<L>> {
        self.outputs.pop_front()
    }

    /// When [`Machine::handle_timeout`] must be called next, if ever. Changes
    /// after every `handle_*` call.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.poll_timer().map(|(_, at)| at)
    }

    /// The timer that [`Machine::poll_timeout`] refers to (the earliest).
    pub fn poll_timer(&self) -> Option<(Timer, Instant)> {
        let floor = self.floor.poll_timeout().map(|at| (Timer::TalkLimit, at));
        let presence = self
            .told
            .values()
            .filter(|t| t.pending)
            .map(|t| t.at + self.presence_interval)
            .min()
            .map(|at| (Timer::Presence, at));
        match (floor, presence) {
            (Some(f), Some(p)) => Some(if p.1 < f.1 { p } else { f }),
            (f, p) => f.or(p),
        }
    }

    // Internals.

    /// `terminal` came online or went offline at `now`: tell the others at
    /// once if they were told nothing of it for the interval, else mark it
    /// for [`Machine::flush_presence`].
    fn presence_changed(&mut self, now: Instant, terminal: TerminalId) {
        match self.told.get_mut(&terminal) {
            Some(told) if now.saturating_duration_since(told.at) < self.presence_interval => {
                told.pending = true;
            }
            _ => self.tell_presence(now, terminal),
        }
    }

    /// Tells the net presence changes that are due at `now`, and forgets
    /// terminals told offline that can no longer coalesce.
    fn flush_presence(&mut self, now: Instant) {
        let interval = self.presence_interval;
        let due: Vec<TerminalId> = self
            .told
            .iter()
            .filter(|(_, t)| t.pending && now.saturating_duration_since(t.at) >= interval)
            .map(|(id, _)| *id)
            .collect();
        for terminal in due {
            self.tell_presence(now, terminal);
        }
        self.told
            .retain(|_, t| t.online || t.pending || now.saturating_duration_since(t.at) < interval);
    }

    /// Tells every other member whether `terminal` is online now, unless
    /// that is what they were last told.
    fn tell_presence(&mut self, now: Instant, terminal: TerminalId) {
        let online = self.members.contains_key(&terminal);
        let unchanged = match self.told.get_mut(&terminal) {
            Some(told) => {
                told.pending = false;
                told.online == online
            }
            // Never told: offline, as far as the others know.
            None => !online,
        };
        if unchanged {
            return;
        }
        self.told.insert(
            terminal,
            Told {
                online,
                at: now,
                pending: false,
            },
        );
        let presence = ServerMsg::Presence {
            group: self.id,
            terminal,
            online,
        };
        self.send_to_all(Some(terminal), &presence);
    }

    /// Turns floor events into messages and ended bursts. A burst that ends
    /// without a revoke ended the way `ended_by` says (the caller's
    /// operation). Publishes when the holder changed or, with
    /// `members_changed`, anyway.
    fn after_floor(&mut self, now: Instant, ended_by: EndedBy, members_changed: bool) {
        let before = self.talking.map(|b| (b.terminal, b.id));
        while let Some(event) = self.floor.poll_event() {
            match event {
                floor::Event::Granted { burst, limit } => {
                    self.burst_ended(now, ended_by);
                    self.talking = Some(burst);
                    let taken = self.taken(&burst);
                    let granted = ServerMsg::FloorGranted {
                        group: self.id,
                        burst: burst.id,
                        limit_ms: u32::try_from(limit.as_millis()).unwrap_or(u32::MAX),
                    };
                    for (t, m) in &self.members {
                        let msg = if *t == burst.terminal {
                            granted.clone()
                        } else {
                            taken.clone()
                        };
                        self.outputs.push_back(Output::Send {
                            to: *t,
                            link: m.link.clone(),
                            msg,
                        });
                    }
                }
                floor::Event::Denied { terminal, cause } => {
                    let msg = ServerMsg::FloorDenied {
                        group: self.id,
                        cause,
                    };
                    self.send_if_online(terminal, msg);
                }
                floor::Event::Queued { terminal, position } => {
                    let msg = ServerMsg::FloorQueued {
                        group: self.id,
                        position,
                    };
                    self.send_if_online(terminal, msg);
                }
                floor::Event::Revoked {
                    terminal,
                    burst,
                    cause,
                } => {
                    self.burst_ended(now, EndedBy::from(cause));
                    let msg = ServerMsg::FloorRevoked {
                        group: self.id,
                        burst,
                        cause,
                    };
                    self.send_if_online(terminal, msg);
                }
                floor::Event::Idle => {
                    self.burst_ended(now, ended_by);
                    let idle = ServerMsg::FloorIdle { group: self.id };
                    self.send_to_all(None, &idle);
                }
            }
        }
        if members_changed || before != self.talking.map(|b| (b.terminal, b.id)) {
            self.outputs.push_back(Output::Publish);
        }
    }

    fn burst_ended(&mut self, now: Instant, by: EndedBy) {
        if let Some(burst) = self.talking.take() {
            self.outputs.push_back(Output::BurstEnded(Ended {
                burst,
                ended_at: now,
                by,
            }));
        }
    }

    /// `FloorTaken` for everyone but the talker of `burst`.
    fn taken(&self, burst: &floor::Burst) -> ServerMsg {
        let name = self
            .members
            .get(&burst.terminal)
            .map(|m| m.name.to_string())
            .unwrap_or_default();
        ServerMsg::FloorTaken {
            group: self.id,
            speaker: burst.terminal,
            burst: burst.id,
            class: burst.class,
            name,
        }
    }

    fn send(&mut self, to: TerminalId, link: L, msg: ServerMsg) {
        self.outputs.push_back(Output::Send { to, link, msg });
    }

    fn send_if_online(&mut self, to: TerminalId, msg: ServerMsg) {
        if let Some(m) = self.members.get(&to) {
            let link = m.link.clone();
            self.send(to, link, msg);
        }
    }

    /// `msg` to every member but `except`.
    fn send_to_all(&mut self, except: Option<TerminalId>, msg: &ServerMsg) {
        for (t, m) in &self.members {
            if Some(*t) != except {
                self.outputs.push_back(Output::Send {
                    to: *t,
                    link: m.link.clone(),
                    msg: msg.clone(),
                });
            }
        }
    }
}
