//! The receive side of the harness: counts, timestamps and checks every
//! voice frame a simulated terminal gets, without decoding unless asked.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ptt_codec::{GroupId, TerminalId};

use crate::report::Latency;
use crate::terminal::Voice;

/// Frames remembered per group for latency lookups: 512 frames = 10 s of
/// 20 ms voice, far longer than any frame stays in flight.
const RING: usize = 512;

/// Frames a talker remembers from the end of its burst: 16 frames, 320 ms,
/// longer than a floor revocation takes to reach it on loopback.
pub const REVOKED_TAIL: usize = 16;

/// When each frame of a group was sent and by whom, written by the talker
/// and read by listeners; and how far into each burst any listener heard.
#[derive(Debug)]
pub struct SendLog {
    inner: Mutex<LogInner>,
}

#[derive(Debug)]
struct LogInner {
    slots: Vec<Option<Sent>>,
    /// The highest seq any listener received, per (speaker, burst).
    top_heard: HashMap<(u32, u16), u16>,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    burst: u16,
    seq: u16,
    talker: TerminalId,
    at: Instant,
}

impl Default for SendLog {
    fn default() -> Self {
        Self {
            inner: Mutex::new(LogInner {
                slots: vec![None; RING],
                top_heard: HashMap::new(),
            }),
        }
    }
}

impl SendLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `talker` sent frame `(burst, seq)` at `at`.
    pub fn sent(&self, burst: u16, seq: u16, talker: TerminalId, at: Instant) {
        self.lock().slots[usize::from(seq) % RING] = Some(Sent {
            burst,
            seq,
            talker,
            at,
        });
    }

    /// Records that a listener received frame `(burst, seq)` stamped with
    /// `speaker`, and returns when and by whom it was sent, if the ring still
    /// holds it.
    fn heard(&self, speaker: u32, burst: u16, seq: u16) -> Option<Sent> {
        let mut inner = self.lock();
        let top = inner.top_heard.entry((speaker, burst)).or_insert(seq);
        *top = (*top).max(seq);
        inner.slots[usize::from(seq) % RING].filter(|s| s.burst == burst && s.seq == seq)
    }

    /// The highest seq of `talker`'s burst that any listener received.
    pub fn top_heard(&self, talker: TerminalId, burst: u16) -> Option<u16> {
        self.lock().top_heard.get(&(talker.0, burst)).copied()
    }
}

/// The last frames a talker sent before it learned that the gateway had
/// revoked its floor (pre-emption, talk-time limit), each with the
/// deliveries it was counted for.
///
/// The gateway relays a frame only while its sender holds the floor, so the
/// frames that left the talker after the revocation, and before the
/// revocation reached it, are refused by design (`voice_not_holder` in the
/// gateway's counters). They are not losses, and are taken out of the
/// deliveries expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedTail {
    /// The group of the burst.
    pub group: GroupId,
    /// The talker.
    pub talker: TerminalId,
    /// The burst.
    pub burst: u16,
    /// The burst's last frames (at most [`REVOKED_TAIL`]), oldest first: seq
    /// and deliveries expected.
    pub frames: Vec<(u16, u64)>,
}

impl RevokedTail {
    /// Frames and deliveries the gateway refused, given the highest seq of
    /// this burst any listener heard: every frame after it. A frame that
    /// some listener heard was relayed, and so was every frame before it
    /// (the gateway relays in order); only frames after the last one heard,
    /// within the tail, can have been refused. A frame nobody was expected
    /// to hear (no other listener online) tells nothing and is left out.
    pub fn refused(&self, top_heard: Option<u16>) -> (u64, u64) {
        self.frames
            .iter()
            .filter(|(seq, expected)| *expected > 0 && top_heard.is_none_or(|top| *seq > top))
            .fold((0, 0), |(frames, deliveries), (_, expected)| {
                (frames + 1, deliveries + expected)
            })
    }
}

/// Per-listener, per-group state for the safety checks.
#[derive(Debug, Default)]
struct GroupView {
    /// The burst being heard now.
    current: Option<(u32, u16)>,
    /// Bursts heard earlier; a frame of one of these means two talkers
    /// overlapped at this listener.
    ended: VecDeque<(u32, u16)>,
    /// Highest seq of the current burst and a bitmap of the 64 below it,
    /// to spot duplicates.
    top: u16,
    window: u64,
}

/// What one listener measured.
#[derive(Debug, Default)]
pub struct Heard {
    /// Frames of groups this terminal is in.
    pub received: u64,
    /// Frames of groups this terminal is not in.
    pub non_member: u64,
    /// Frames of a burst that had already been superseded at this listener.
    pub overlapping: u64,
    /// Same frame twice.
    pub duplicates: u64,
    /// Speaker field differs from the terminal that sent the frame.
    pub wrong_speaker: u64,
    /// Send-to-receive latency.
    pub latency: Latency,
    /// Frames received in each second since the run's epoch.
    pub per_second: Vec<u64>,
    /// Of `received`, frames the simulated loss dropped before playout.
    pub lost_simulated: u64,
    /// What this terminal recorded, per group it is the recorder of: the
    /// frames lost to the simulated loss there, and the recording.
    pub recordings: Vec<(GroupId, u64, crate::record::Recording)>,
}

impl Heard {
    /// Adds another listener's figures.
    pub fn merge(&mut self, other: &Heard) {
        self.received += other.received;
        self.non_member += other.non_member;
        self.overlapping += other.overlapping;
        self.duplicates += other.duplicates;
        self.wrong_speaker += other.wrong_speaker;
        self.lost_simulated += other.lost_simulated;
        self.recordings.extend(other.recordings.iter().cloned());
        self.latency.merge(&other.latency);
        if self.per_second.len() < other.per_second.len() {
            self.per_second.resize(other.per_second.len(), 0);
        }
        for (a, b) in self.per_second.iter_mut().zip(&other.per_second) {
            *a += b;
        }
    }
}

/// Checks and counts the frames one terminal receives.
#[derive(Debug)]
pub struct Listener {
    logs: Arc<HashMap<GroupId, Arc<SendLog>>>,
    epoch: Instant,
    views: HashMap<GroupId, GroupView>,
    /// Results so far.
    pub heard: Heard,
}

impl Listener {
    /// A listener in `groups`; `logs` has the send log of every group in the
    /// run.
    pub fn new(groups: &[GroupId], logs: Arc<HashMap<GroupId, Arc<SendLog>>>) -> Self {
        Self {
            logs,
            epoch: Instant::now(),
            views: groups.iter().map(|g| (*g, GroupView::default())).collect(),
            heard: Heard::default(),
        }
    }

    /// Counts frames per second from `epoch` (the run's, shared by every
    /// listener) instead of from this listener's creation.
    pub fn since(mut self, epoch: Instant) -> Self {
        self.epoch = epoch;
        self
    }

    /// Accounts for one received frame.
    pub fn on_frame(&mut self, voice: &Voice, now: Instant) {
        let h = &voice.header;
        let Some(view) = self.views.get_mut(&h.group) else {
            self.heard.non_member += 1;
            return;
        };
        let key = (h.speaker, h.burst);
        if view.current != Some(key) {
            if view.ended.contains(&key) {
                self.heard.overlapping += 1;
                return;
            }
            if let Some(prev) = view.current.replace(key) {
                view.ended.push_back(prev);
                if view.ended.len() > 16 {
                    view.ended.pop_front();
                }
            }
            view.top = h.seq;
            view.window = 1;
        } else {
            let ahead = h.seq.wrapping_sub(view.top);
            if ahead != 0 && ahead < 0x8000 {
                view.window = if ahead >= 64 {
                    1
                } else {
                    (view.window << ahead) | 1
                };
                view.top = h.seq;
            } else {
                let behind = view.top.wrapping_sub(h.seq);
                if behind < 64 && view.window & (1 << behind) != 0 {
                    self.heard.duplicates += 1;
                    return;
                }
                if behind < 64 {
                    view.window |= 1 << behind;
                }
            }
        }
        self.heard.received += 1;
        let second = now.saturating_duration_since(self.epoch).as_secs() as usize;
        if second < 24 * 3600 {
            if self.heard.per_second.len() <= second {
                self.heard.per_second.resize(second + 1, 0);
            }
            self.heard.per_second[second] += 1;
        }
        if let Some(sent) = self
            .logs
            .get(&h.group)
            .and_then(|l| l.heard(h.speaker, h.burst, h.seq))
        {
            if sent.talker.0 != h.speaker {
                self.heard.wrong_speaker += 1;
            }
            self.heard
                .latency
                .record(now.saturating_duration_since(sent.at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptt_codec::VoiceHeader;

    fn voice(group: u32, speaker: u32, burst: u16, seq: u16) -> Voice {
        let header = VoiceHeader {
            group: GroupId(group),
            speaker,
            burst,
            seq,
            flags: 0,
        };
        Voice {
            header,
            datagram: header.to_datagram(&[1]),
        }
    }

    #[test]
    fn counts_overlaps_duplicates_and_strangers() {
        let log = Arc::new(SendLog::default());
        let t0 = Instant::now();
        log.sent(1, 0, TerminalId(5), t0);
        let logs = Arc::new(HashMap::from([(GroupId(7), log)]));
        let mut l = Listener::new(&[GroupId(7)], logs);
        l.on_frame(&voice(7, 5, 1, 0), t0 + std::time::Duration::from_millis(3));
        l.on_frame(&voice(7, 5, 1, 0), t0); // duplicate
        l.on_frame(&voice(7, 5, 1, 1), t0);
        l.on_frame(&voice(7, 6, 2, 0), t0); // next burst starts
        l.on_frame(&voice(7, 5, 1, 2), t0); // old burst again: overlap
        l.on_frame(&voice(8, 5, 1, 0), t0); // not my group
        let h = &l.heard;
        assert_eq!(
            (h.received, h.duplicates, h.overlapping, h.non_member),
            (3, 1, 1, 1)
        );
        assert_eq!(h.latency.percentiles().samples, 1);
        assert_eq!(h.wrong_speaker, 0);
    }

    #[test]
    fn the_log_knows_how_far_into_each_burst_listeners_heard() {
        let log = Arc::new(SendLog::default());
        let t0 = Instant::now();
        for seq in 0..5 {
            log.sent(1, seq, TerminalId(5), t0);
        }
        let logs = Arc::new(HashMap::from([(GroupId(7), log.clone())]));
        let mut a = Listener::new(&[GroupId(7)], logs.clone());
        let mut b = Listener::new(&[GroupId(7)], logs);
        a.on_frame(&voice(7, 5, 1, 0), t0);
        a.on_frame(&voice(7, 5, 1, 1), t0);
        b.on_frame(&voice(7, 5, 1, 0), t0);
        b.on_frame(&voice(7, 5, 1, 2), t0);
        b.on_frame(&voice(7, 5, 1, 1), t0); // late, out of order
        assert_eq!(log.top_heard(TerminalId(5), 1), Some(2));
        assert_eq!(log.top_heard(TerminalId(5), 2), None);
        assert_eq!(log.top_heard(TerminalId(6), 1), None);
    }

    #[test]
    fn only_frames_after_the_last_one_heard_count_as_refused() {
        let tail = RevokedTail {
            group: GroupId(7),
            talker: TerminalId(5),
            burst: 1,
            frames: vec![(10, 4), (11, 4), (12, 3), (13, 3)],
        };
        // Heard up to 11: 12 and 13 were refused, 3 deliveries each.
        assert_eq!(tail.refused(Some(11)), (2, 6));
        // Everything heard: nothing refused, whatever went missing is loss.
        assert_eq!(tail.refused(Some(13)), (0, 0));
        // A frame heard past the tail (the tail is the burst's end, so this
        // is a listener's view of a later frame): nothing refused.
        assert_eq!(tail.refused(Some(40)), (0, 0));
        // Nothing of the burst heard: the whole tail was refused.
        assert_eq!(tail.refused(None), (4, 14));
        // Frames nobody was expected to hear are not counted either way.
        let alone = RevokedTail {
            frames: vec![(10, 0), (11, 2)],
            ..tail
        };
        assert_eq!(alone.refused(None), (1, 2));
    }

    #[test]
    fn wrong_speaker_is_flagged() {
        let log = Arc::new(SendLog::default());
        let t0 = Instant::now();
        log.sent(1, 0, TerminalId(5), t0);
        let logs = Arc::new(HashMap::from([(GroupId(7), log)]));
        let mut l = Listener::new(&[GroupId(7)], logs);
        l.on_frame(&voice(7, 9, 1, 0), t0);
        assert_eq!(l.heard.wrong_speaker, 1);
    }
}
