//! The living city's director: who talks when, who sends a report or raises
//! an SOS, for as long as the run lasts (until SIGINT/SIGTERM with
//! `--duration 0`).
//!
//! The decisions are [`Life`], a pure schedule driven by `now` and tested
//! without sockets or sleeps; [`direct`] only sleeps until its next wake-up
//! and hands what is due to the actors.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ptt_codec::{AlertBody, AlertKind, Class, GroupId, Target, TerminalId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;
use tokio::sync::mpsc;

use super::{actor, Commands, Plan, RunConfig, Spec, LOG};

/// A burst not over this long after its longest hold is given up on (its
/// press queued behind a console that keeps talking, or its end lost with
/// a connection): the slot talks elsewhere.
const STUCK: Duration = Duration::from_secs(30);

/// Most SOS at a time city-wide: an SOS every few minutes is a busy
/// evening already.
const MAX_SOS: usize = 2;

/// Work reports (工作上报): title and text.
const REPORTS: [(&str, &str); 6] = [
    (
        "巡逻情况",
        "夜市周边巡逻一圈，人员密集但秩序正常，未发现异常。",
    ),
    (
        "矛盾纠纷化解",
        "两名商户因占道经营发生口角，已现场劝解，双方和解。",
    ),
    ("安全隐患", "小区东门消防通道被车辆占用，已联系车主挪车。"),
    (
        "重点部位检查",
        "对辖区学校周边进行放学时段护学，交通秩序良好。",
    ),
    ("走访情况", "走访沿街商铺12家，发放防诈骗宣传资料40份。"),
    ("设备巡检", "广场监控探头3号画面模糊，已报物业维修。"),
];

/// Clues (发布线索): title and text.
const CLUES: [(&str, &str); 4] = [
    (
        "可疑人员",
        "一名男子在停车场反复拉车门，身穿黑色外套，往北门方向离开。",
    ),
    ("可疑车辆", "一辆无牌电动车多次在商场门口徘徊，车上两人。"),
    ("寻人线索", "疑似走失老人在公交站附近，约70岁，穿灰色上衣。"),
    ("违法线索", "有群众反映商贸城后巷夜间有人聚众赌博。"),
];

/// What is due, for the director to hand to an actor.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `talker` presses the talk key in `group` and talks for `hold`.
    Press {
        /// Who.
        talker: TerminalId,
        /// Its unit group.
        group: GroupId,
        /// How long it talks once granted.
        hold: Duration,
    },
    /// `member` sends a work report or a clue to its station's consoles.
    Report {
        /// Who.
        member: TerminalId,
        /// The report.
        body: AlertBody,
    },
    /// `member` raises an SOS and cancels it after `cancel_after` unless a
    /// console did.
    Sos {
        /// Who.
        member: TerminalId,
        /// Its unit group (kept quiet meanwhile).
        group: GroupId,
        /// When the raiser gives up waiting for a console.
        cancel_after: Duration,
    },
}

/// The living city's schedule. Call [`Life::due`] at [`Life::next_wake`]
/// and [`Life::burst_over`] whenever a burst of one of its talkers ends.
#[derive(Debug)]
pub struct Life {
    rng: StdRng,
    /// Unit groups with members online, and those members.
    groups: Vec<(GroupId, Vec<TerminalId>)>,
    /// Longest hold; holds are a quarter of this up to this.
    burst: Duration,
    /// Mean pause before a talk slot talks again.
    gap: Duration,
    /// Talk slots free, each with the time it presses next.
    slots: Vec<Instant>,
    /// Groups a slot talks in, since when.
    busy: HashMap<GroupId, Instant>,
    /// Groups with an SOS, until when.
    sos: HashMap<GroupId, Instant>,
    /// Mean time between reports; when the next one goes.
    report: Option<(Duration, Instant)>,
    /// Mean time between SOS; when the next one goes.
    next_sos: Option<(Duration, Instant)>,
    /// How long a raiser waits before cancelling its SOS.
    sos_cancel: Duration,
    /// Time-to-live of reports.
    ttl_s: u32,
}

impl Life {
    /// A schedule for `spec` over `groups` (unit groups with their members
    /// online), starting at `now`: the talk slots start within the first
    /// `gap_ms`, so the city does not talk all at once.
    pub fn new(
        spec: &Spec,
        groups: Vec<(GroupId, Vec<TerminalId>)>,
        seed: u64,
        now: Instant,
    ) -> Life {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x4c49_4645);
        let groups: Vec<_> = groups.into_iter().filter(|(_, m)| !m.is_empty()).collect();
        let gap = Duration::from_millis(spec.gap_ms.max(1));
        let talkers = if groups.is_empty() { 0 } else { spec.talkers };
        let slots = (0..talkers)
            .map(|_| now + gap.mul_f64(rng.gen_range(0.0..1.0)))
            .collect();
        let every = |ms: u64| (ms > 0 && !groups.is_empty()).then(|| Duration::from_millis(ms));
        let report = every(spec.report_every_ms);
        let sos = every(spec.sos_every_ms);
        let mut life = Life {
            rng,
            burst: Duration::from_millis(spec.burst_ms.max(4)),
            gap,
            slots,
            busy: HashMap::new(),
            sos: HashMap::new(),
            report: None,
            next_sos: None,
            sos_cancel: Duration::from_millis(spec.sos_cancel_ms.max(1)),
            ttl_s: spec.ttl_s.max(1),
            groups,
        };
        life.report = report.map(|mean| (mean, now + life.exp(mean)));
        life.next_sos = sos.map(|mean| (mean, now + life.exp(mean)));
        life
    }

    /// When [`Life::due`] has something next (`None`: never).
    pub fn next_wake(&self) -> Option<Instant> {
        let stuck = self.busy.values().map(|since| *since + self.burst + STUCK);
        let sos_over = self.sos.values().copied();
        self.slots
            .iter()
            .copied()
            .chain(stuck)
            .chain(sos_over)
            .chain(self.report.map(|(_, at)| at))
            .chain(self.next_sos.map(|(_, at)| at))
            .min()
    }

    /// A burst in `group` ended (or was refused): its slot talks again
    /// after a pause. Bursts this schedule did not start are ignored.
    pub fn burst_over(&mut self, group: GroupId, now: Instant) {
        if self.busy.remove(&group).is_some() {
            let pause = self.exp(self.gap);
            self.slots.push(now + pause);
        }
    }

    /// Groups talking now.
    pub fn talking(&self) -> usize {
        self.busy.len()
    }

    /// What is due at `now`, in order.
    pub fn due(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let limit = self.burst + STUCK;
        let stuck: Vec<GroupId> = self
            .busy
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= limit)
            .map(|(g, _)| *g)
            .collect();
        for g in stuck {
            self.burst_over(g, now);
        }
        self.sos.retain(|_, until| *until > now);
        if let Some((mean, at)) = self.next_sos.filter(|(_, at)| *at <= now) {
            self.next_sos = Some((mean, catch_up(at, now, mean) + self.exp(mean)));
            if self.sos.len() < MAX_SOS {
                if let Some((group, member)) = pick(&self.groups, &mut self.rng, |_| true) {
                    self.sos.insert(group, now + self.sos_cancel + STUCK);
                    actions.push(Action::Sos {
                        member,
                        group,
                        cancel_after: self.sos_cancel,
                    });
                }
            }
        }
        if let Some((mean, at)) = self.report.filter(|(_, at)| *at <= now) {
            // Catch up at most one mean's worth after a long stall.
            self.report = Some((mean, catch_up(at, now, mean) + self.exp(mean)));
            if let Some((_, member)) = pick(&self.groups, &mut self.rng, |_| true) {
                let body = self.report_body();
                actions.push(Action::Report { member, body });
            }
        }
        let (ready, later): (Vec<Instant>, Vec<Instant>) =
            self.slots.drain(..).partition(|at| *at <= now);
        self.slots = later;
        for _ in ready {
            let (busy, sos) = (&self.busy, &self.sos);
            let free = |g: &GroupId| !busy.contains_key(g) && !sos.contains_key(g);
            match pick(&self.groups, &mut self.rng, free) {
                Some((group, talker)) => {
                    let hold = self.burst.mul_f64(self.rng.gen_range(0.25..=1.0));
                    self.busy.insert(group, now);
                    actions.push(Action::Press {
                        talker,
                        group,
                        hold,
                    });
                }
                // Every group busy: try again after a pause.
                None => {
                    let pause = self.exp(self.gap);
                    self.slots.push(now + pause);
                }
            }
        }
        actions
    }

    /// A work report (two in three) or a clue.
    fn report_body(&mut self) -> AlertBody {
        let (kind, (title, text)) = if self.rng.gen_bool(2.0 / 3.0) {
            (
                AlertKind::Report,
                REPORTS[self.rng.gen_range(0..REPORTS.len())],
            )
        } else {
            (AlertKind::Clue, CLUES[self.rng.gen_range(0..CLUES.len())])
        };
        AlertBody {
            kind,
            priority: u8::from(kind == AlertKind::Clue),
            ttl_s: self.ttl_s,
            title: title.into(),
            text: text.into(),
            location: None,
            attachments: Vec::new(),
        }
    }

    /// An exponential delay of mean `mean`, cut at four times it.
    fn exp(&mut self, mean: Duration) -> Duration {
        let m = mean.as_secs_f64().max(1e-3);
        let s = rand_distr::Exp::new(1.0 / m).map_or(m, |d| d.sample(&mut self.rng));
        Duration::from_secs_f64(s.min(4.0 * m))
    }
}

/// A random group of `groups` passing `ok`, and a random member of it
/// (every group has members: [`Life::new`] keeps only those).
fn pick(
    groups: &[(GroupId, Vec<TerminalId>)],
    rng: &mut StdRng,
    ok: impl Fn(&GroupId) -> bool,
) -> Option<(GroupId, TerminalId)> {
    let candidates: Vec<usize> = (0..groups.len()).filter(|i| ok(&groups[*i].0)).collect();
    if candidates.is_empty() {
        return None;
    }
    let (group, members) = &groups[candidates[rng.gen_range(0..candidates.len())]];
    Some((*group, members[rng.gen_range(0..members.len())]))
}

/// When a periodic event that was due `at` counts from, at `now`: at most
/// one `mean` back, so a long stall does not fire a backlog.
fn catch_up(at: Instant, now: Instant, mean: Duration) -> Instant {
    now.checked_sub(mean).map_or(at, |floor| at.max(floor))
}

/// Runs the living city until the duration is over (never when it is zero)
/// or SIGINT/SIGTERM arrives. Call once every actor runs; `done` hears the
/// group of every burst that ended.
pub(super) async fn direct(
    config: &RunConfig,
    plan: &Plan,
    commands: &Commands,
    done: &mut mpsc::UnboundedReceiver<GroupId>,
) {
    let groups: Vec<(GroupId, Vec<TerminalId>)> = plan
        .groups
        .iter()
        .map(|g| {
            let online = g
                .talkers
                .iter()
                .copied()
                .filter(|t| commands.contains_key(t))
                .collect();
            (g.id, online)
        })
        .collect();
    let mut life = Life::new(&config.spec, groups, config.seed, Instant::now());
    let deadline =
        (!config.duration.is_zero()).then(|| tokio::time::Instant::now() + config.duration);
    tracing::info!(
        target: LOG,
        groups = plan.groups.len(),
        "the city is alive{}",
        if deadline.is_some() { "" } else { "; Ctrl-C to stop" }
    );
    let interrupted = interrupted();
    tokio::pin!(interrupted);
    let (mut bursts, mut reports, mut sos) = (0u64, 0u64, 0u64);
    loop {
        let wake = life.next_wake().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = &mut interrupted => break,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => break,
            Some(group) = done.recv() => life.burst_over(group, Instant::now()),
            _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {
                for action in life.due(Instant::now()) {
                    let (to, cmd) = match action {
                        Action::Press { talker, group, hold } => {
                            bursts += 1;
                            (talker, actor::Command::Press { group, class: Class::Normal, hold })
                        }
                        Action::Report { member, body } => {
                            reports += 1;
                            tracing::info!(target: LOG, terminal = %member, title = %body.title, "report to the station");
                            // The station's consoles are people: no
                            // delivery of it is counted.
                            (member, actor::Command::Alert { target: Target::Station, body, expected: Some(0) })
                        }
                        Action::Sos { member, cancel_after, .. } => {
                            sos += 1;
                            tracing::info!(target: LOG, terminal = %member, "SOS raised");
                            (member, actor::Command::Sos { cancel_after })
                        }
                    };
                    if let Some(tx) = commands.get(&to) {
                        let _ = tx.send(cmd);
                    }
                }
            }
        }
    }
    tracing::info!(
        target: LOG,
        bursts,
        reports,
        sos,
        "the city goes quiet"
    );
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM; never if neither can be
/// listened to.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn city(groups: u32, members: u32) -> Vec<(GroupId, Vec<TerminalId>)> {
        (0..groups)
            .map(|g| {
                (
                    GroupId(100 + g),
                    (0..members)
                        .map(|m| TerminalId(1000 + g * 10 + m))
                        .collect(),
                )
            })
            .collect()
    }

    /// Runs `life` for `for_s` seconds in 100 ms steps; every burst ends
    /// after its hold. Returns every action with its time.
    fn simulate(life: &mut Life, start: Instant, for_s: u64) -> Vec<(Instant, Action)> {
        let mut out = Vec::new();
        let mut ends: Vec<(Instant, GroupId)> = Vec::new();
        let end = start + Duration::from_secs(for_s);
        let mut now = start;
        while now < end {
            ends.retain(|(at, g)| {
                if *at <= now {
                    life.burst_over(*g, now);
                    false
                } else {
                    true
                }
            });
            if life.next_wake().is_some_and(|w| w <= now) {
                for a in life.due(now) {
                    if let Action::Press { group, hold, .. } = &a {
                        ends.push((now + *hold, *group));
                    }
                    out.push((now, a));
                }
            }
            assert!(life.talking() <= 3, "more talkers than slots");
            now += Duration::from_millis(100);
        }
        out
    }

    #[test]
    fn a_few_talk_at_a_time_in_realistic_bursts() {
        let spec = Spec::living_city();
        let start = Instant::now();
        let mut life = Life::new(&spec, city(40, 4), 1, start);
        let actions = simulate(&mut life, start, 600);
        let presses: Vec<_> = actions
            .iter()
            .filter_map(|(at, a)| match a {
                Action::Press {
                    talker,
                    group,
                    hold,
                } => Some((*at, *talker, *group, *hold)),
                _ => None,
            })
            .collect();
        // Three slots of 2-8 s bursts with ~6 s pauses: ~11 s a cycle,
        // about 160 bursts in 10 minutes.
        assert!(
            (100..260).contains(&presses.len()),
            "{} bursts",
            presses.len()
        );
        for (_, talker, group, hold) in &presses {
            assert!(
                (Duration::from_secs(2)..=Duration::from_secs(8)).contains(hold),
                "{hold:?}"
            );
            // The talker is a member of the group it talks in.
            assert_eq!(talker.0 / 10, group.0);
        }
        // Bursts spread over the city.
        let groups: std::collections::HashSet<_> = presses.iter().map(|p| p.2).collect();
        assert!(groups.len() > 20, "{} groups talked", groups.len());
        // Reports every ~45 s: about 13 in 10 minutes; no SOS by default.
        let reports = actions
            .iter()
            .filter(|(_, a)| matches!(a, Action::Report { .. }))
            .count();
        assert!((4..30).contains(&reports), "{reports} reports");
        assert!(!actions.iter().any(|(_, a)| matches!(a, Action::Sos { .. })));
        for (_, a) in &actions {
            if let Action::Report { body, .. } = a {
                assert!(body.kind.is_upward());
                assert!(!body.text.is_empty() && body.text.len() <= ptt_codec::alert::MAX_TEXT);
            }
        }
    }

    #[test]
    fn never_two_talkers_in_one_group_and_deterministic() {
        let spec = Spec::living_city();
        let start = Instant::now();
        // Two groups for three slots: one slot waits.
        let mut life = Life::new(&spec, city(2, 3), 7, start);
        let actions = simulate(&mut life, start, 300);
        let mut open: HashMap<GroupId, Instant> = HashMap::new();
        for (at, a) in &actions {
            if let Action::Press { group, hold, .. } = a {
                if let Some(until) = open.get(group) {
                    assert!(at >= until, "two bursts at once in {group:?}");
                }
                open.insert(*group, *at + *hold);
            }
        }
        assert!(!actions.is_empty());
        let mut again = Life::new(&spec, city(2, 3), 7, start);
        assert_eq!(simulate(&mut again, start, 300), actions);
        let mut other = Life::new(&spec, city(2, 3), 8, start);
        assert_ne!(simulate(&mut other, start, 300), actions);
    }

    #[test]
    fn sos_when_asked_keeps_its_group_quiet_and_is_bounded() {
        let mut spec = Spec::living_city();
        spec.sos_every_ms = 20_000;
        spec.sos_cancel_ms = 60_000;
        let start = Instant::now();
        let mut life = Life::new(&spec, city(10, 3), 3, start);
        let actions = simulate(&mut life, start, 900);
        let sos: Vec<_> = actions
            .iter()
            .filter_map(|(at, a)| match a {
                Action::Sos {
                    group,
                    cancel_after,
                    ..
                } => Some((*at, *group, *cancel_after)),
                _ => None,
            })
            .collect();
        assert!(sos.len() >= 5, "{} SOS", sos.len());
        for (at, group, cancel_after) in &sos {
            assert_eq!(*cancel_after, Duration::from_secs(60));
            // Never more than MAX_SOS outstanding.
            let open = sos
                .iter()
                .filter(|(t, _, _)| t <= at && *t + *cancel_after + STUCK > *at)
                .count();
            assert!(open <= MAX_SOS, "{open} SOS at once");
            // Nobody starts talking in that group while it lasts.
            assert!(!actions.iter().any(|(t, a)| matches!(a,
                Action::Press { group: g, .. } if g == group && t > at && *t < *at + *cancel_after)));
        }
    }

    #[test]
    fn stuck_bursts_free_their_slot_and_an_empty_city_does_nothing() {
        let spec = Spec::living_city();
        let start = Instant::now();
        let mut life = Life::new(&spec, city(5, 2), 1, start);
        // Nothing ever ends: the slots come back after burst + STUCK.
        let mut presses = 0;
        let mut now = start;
        while now < start + Duration::from_secs(200) {
            if life.next_wake().is_some_and(|w| w <= now) {
                presses += life
                    .due(now)
                    .iter()
                    .filter(|a| matches!(a, Action::Press { .. }))
                    .count();
            }
            now += Duration::from_millis(500);
        }
        assert!(presses > 3 * 2, "{presses} presses");
        let mut empty = Life::new(&spec, city(3, 0), 1, start);
        assert_eq!(empty.next_wake(), None);
        assert!(empty.due(start + Duration::from_secs(60)).is_empty());
    }
}
