//! Floor control: who may talk in a group, as a sans-I/O state machine.
//!
//! Modelled on the floor control server of 3GPP TS 24.380 (MCPTT): a
//! *Floor Request* is answered by *Floor Granted*, *Floor Deny* or a queue
//! position (*Floor Queue Position Info*); the other participants learn
//! *Floor Taken* and *Floor Idle*; the server takes the floor back with
//! *Floor Revoke* when a request of higher priority pre-empts the holder or
//! the burst outlasts timer T2 ("stop talking").
//!
//! Like `quinn-proto`, the machine does no I/O and reads no clock: the caller
//! passes `now` into every `handle_*` call, then drains [`Machine::poll_event`]
//! until it returns `None`, and calls [`Machine::handle_timeout`] once the
//! instant from [`Machine::poll_timeout`] has passed (calling it early is
//! harmless). Turning events into messages for terminals is the caller's job.
//!
//! Precedence compares the class first (emergency > imminent peril >
//! normal), then the priority (0-255, derived from the role by the caller).
//! Only a strictly higher request pre-empts; the queue is ordered by class,
//! priority, then arrival.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ptt_codec::{Class, DenyCause, RevokeCause, TerminalId};

/// Settings of one group's floor.
#[derive(Debug, Clone)]
pub struct Config {
    /// Longest burst before the floor is revoked. Default 30 s: TS 24.380
    /// timer T2 ("stop talking").
    pub talk_limit: Duration,
    /// Requests that may wait. Default 16.
    pub queue_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            talk_limit: Duration::from_secs(30),
            queue_capacity: 16,
        }
    }
}

/// A talk-key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Who asks.
    pub terminal: TerminalId,
    /// Normal, imminent peril or emergency.
    pub class: Class,
    /// 0-255, higher wins; from the terminal's role, never from the terminal.
    pub priority: u8,
    /// Talk-time limit of this burst instead of the group's (an SOS hot-mic
    /// burst is shorter).
    pub limit: Option<Duration>,
}

impl Request {
    fn rank(&self) -> (Class, u8) {
        (self.class, self.priority)
    }
}

/// The ongoing burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    /// The floor holder.
    pub terminal: TerminalId,
    /// Burst id: voice datagrams of this burst carry it. Never 0.
    pub id: u16,
    /// The class it was granted with.
    pub class: Class,
    /// The priority it was granted with.
    pub priority: u8,
    /// When it was granted.
    pub granted_at: Instant,
    /// Its talk-time limit.
    pub limit: Duration,
}

/// What happened, for the caller to tell the terminals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `burst.terminal` may talk now, for at most `limit`. Tell it (Floor
    /// Granted) and every other member (Floor Taken).
    Granted {
        /// The new burst.
        burst: Burst,
        /// Its talk-time limit.
        limit: Duration,
    },
    /// The request was refused and not queued.
    Denied {
        /// The requester.
        terminal: TerminalId,
        /// Why.
        cause: DenyCause,
    },
    /// The terminal waits at `position` (1 is next): sent when it is queued
    /// and whenever its position changes.
    Queued {
        /// The waiting terminal.
        terminal: TerminalId,
        /// From 1.
        position: u16,
    },
    /// The holder lost the floor involuntarily (Floor Revoke).
    Revoked {
        /// The former holder.
        terminal: TerminalId,
        /// The burst that ended.
        burst: u16,
        /// Why.
        cause: RevokeCause,
    },
    /// Nobody has the floor (Floor Idle). Not emitted when a burst hands over
    /// directly to the next talker.
    Idle,
}

/// The timers of a floor. One today; a variant per future timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// T2: the holder's talk-time limit.
    TalkLimit,
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    request: Request,
    /// Arrival order, for FIFO among equals.
    arrival: u64,
    /// Last position reported, to report only changes.
    reported: u16,
}

/// The floor of one talk group.
#[derive(Debug)]
pub struct Machine {
    config: Config,
    holder: Option<Burst>,
    queue: VecDeque<Waiting>,
    events: VecDeque<Event>,
    next_burst: u16,
    arrivals: u64,
}

impl Machine {
    /// An idle floor.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            holder: None,
            queue: VecDeque::new(),
            events: VecDeque::new(),
            next_burst: 1,
            arrivals: 0,
        }
    }

    /// Changes the talk-time limit for bursts granted from now on (requests
    /// with their own limit keep theirs).
    pub fn set_talk_limit(&mut self, limit: Duration) {
        self.config.talk_limit = limit;
    }

    /// The current burst, if any.
    pub fn holder(&self) -> Option<&Burst> {
        self.holder.as_ref()
    }

    /// Requests waiting.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// The terminals waiting for the floor, next first (for operators'
    /// views; the machine reports positions to terminals itself).
    pub fn queued(&self) -> impl ExactSizeIterator<Item = TerminalId> + '_ {
        self.queue.iter().map(|w| w.request.terminal)
    }

    /// A terminal pressed the talk key.
    ///
    /// A request from the current holder is ignored (it already talks). A
    /// request from a queued terminal replaces its earlier one, which may
    /// move it in the queue; its position is reported again either way.
    pub fn handle_request(&mut self, now: Instant, request: Request) {
        match self.holder {
            Some(h) if h.terminal == request.terminal => {}
            None => self.grant(now, request),
            Some(h) if request.rank() > (h.class, h.priority) => {
                self.queue
                    .retain(|w| w.request.terminal != request.terminal);
                self.events.push_back(Event::Revoked {
                    terminal: h.terminal,
                    burst: h.id,
                    cause: RevokeCause::Preempted,
                });
                self.grant(now, request);
                self.report_positions();
            }
            Some(_) => {
                let existing = self
                    .queue
                    .iter()
                    .position(|w| w.request.terminal == request.terminal);
                let arrival = match existing {
                    Some(i) => {
                        let w = self.queue.remove(i).expect("index from position");
                        w.arrival
                    }
                    None if self.queue.len() >= self.config.queue_capacity => {
                        self.events.push_back(Event::Denied {
                            terminal: request.terminal,
                            cause: DenyCause::NoResources,
                        });
                        return;
                    }
                    None => {
                        self.arrivals += 1;
                        self.arrivals
                    }
                };
                let at = self
                    .queue
                    .iter()
                    .position(|w| {
                        (w.request.rank(), std::cmp::Reverse(w.arrival))
                            < (request.rank(), std::cmp::Reverse(arrival))
                    })
                    .unwrap_or(self.queue.len());
                self.queue.insert(
                    at,
                    Waiting {
                        request,
                        arrival,
                        reported: 0,
                    },
                );
                self.report_positions();
            }
        }
    }

    /// A terminal released the talk key: the holder ends its burst (the head
    /// of the queue is granted, or the floor goes idle); a queued terminal
    /// withdraws its request. Anyone else: nothing happens.
    pub fn handle_release(&mut self, now: Instant, terminal: TerminalId) {
        if self.holder.is_some_and(|h| h.terminal == terminal) {
            self.holder = None;
            self.next_or_idle(now);
        } else if let Some(i) = self
            .queue
            .iter()
            .position(|w| w.request.terminal == terminal)
        {
            self.queue.remove(i);
            self.report_positions();
        }
    }

    /// The terminal left the group or disconnected: as a release, for
    /// whichever role it had.
    pub fn handle_leave(&mut self, now: Instant, terminal: TerminalId) {
        self.queue.retain(|w| w.request.terminal != terminal);
        if self.holder.is_some_and(|h| h.terminal == terminal) {
            self.holder = None;
            self.next_or_idle(now);
        } else {
            self.report_positions();
        }
    }

    /// The floor may no longer be arbitrated here (a cluster node lost the
    /// group or its quorum): the holder is revoked with `revoke`, every
    /// queued request denied with `deny`, and the floor goes idle.
    pub fn handle_suspend(&mut self, revoke: RevokeCause, deny: DenyCause) {
        for w in std::mem::take(&mut self.queue) {
            self.events.push_back(Event::Denied {
                terminal: w.request.terminal,
                cause: deny,
            });
        }
        if let Some(h) = self.holder.take() {
            self.events.push_back(Event::Revoked {
                terminal: h.terminal,
                burst: h.id,
                cause: revoke,
            });
            self.events.push_back(Event::Idle);
        }
    }

    /// Call when `now` has reached [`Machine::poll_timeout`]; earlier calls
    /// do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(h) = self.holder else { return };
        if now < self.deadline(&h) {
            return;
        }
        self.events.push_back(Event::Revoked {
            terminal: h.terminal,
            burst: h.id,
            cause: RevokeCause::BurstTooLong,
        });
        self.holder = None;
        self.next_or_idle(now);
    }

    /// When [`Machine::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.holder.map(|h| self.deadline(&h))
    }

    /// The timer that [`Machine::poll_timeout`] refers to.
    pub fn poll_timer(&self) -> Option<(Timer, Instant)> {
        self.poll_timeout().map(|t| (Timer::TalkLimit, t))
    }

    /// The next event; call until `None` after every `handle_*`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn deadline(&self, h: &Burst) -> Instant {
        h.granted_at + h.limit
    }

    fn grant(&mut self, now: Instant, request: Request) {
        let id = self.next_burst;
        self.next_burst = match self.next_burst.wrapping_add(1) {
            0 => 1,
            n => n,
        };
        let limit = request.limit.unwrap_or(self.config.talk_limit);
        let burst = Burst {
            terminal: request.terminal,
            id,
            class: request.class,
            priority: request.priority,
            granted_at: now,
            limit,
        };
        self.holder = Some(burst);
        self.events.push_back(Event::Granted { burst, limit });
    }

    fn next_or_idle(&mut self, now: Instant) {
        match self.queue.pop_front() {
            Some(w) => {
                self.grant(now, w.request);
                self.report_positions();
            }
            None => self.events.push_back(Event::Idle),
        }
    }

    /// Reports every queue position that changed since last reported.
    fn report_positions(&mut self) {
        for (i, w) in self.queue.iter_mut().enumerate() {
            let position = u16::try_from(i + 1).unwrap_or(u16::MAX);
            if w.reported != position {
                w.reported = position;
                self.events.push_back(Event::Queued {
                    terminal: w.request.terminal,
                    position,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
