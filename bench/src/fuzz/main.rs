//! `ptt-fuzz`: a long-running fuzz mode, on the stable toolchain, for every
//! decoder and state machine that takes peer input (issue 11, item 10).
//!
//! Each target has a generator, which makes one case's input bytes from a
//! seeded random generator (valid encodings from the codec's own encoders,
//! then mutated: random bytes alone rarely get past a frame header), and a
//! check, which runs the code under test on those bytes and checks its
//! properties. The check depends on the bytes alone, so a failing case is
//! shrunk by deleting and lowering bytes, and printed as hex that
//! `--reproduce` replays. A panic counts as a failure.
//!
//! ```text
//! cargo build --release -p ptt-bench --bin ptt-fuzz
//! nice -n 10 target/release/ptt-fuzz --target all --cases 1000000 --threads 2
//! target/release/ptt-fuzz --target client --reproduce 02000400000005
//! ```
//!
//! Not run in CI beyond `bench/tests/fuzz_smoke.rs` (a few thousand cases a
//! target); BENCHMARKS.md records a long run.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;

/// Fails the check with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        // Not `!cond`: with floats, "not at most" is not "more than".
        if let false = $cond {
            return Err(format!($($fmt)+));
        }
    };
}

mod codec;
mod input;
mod limits;
mod machines;
mod media;
mod org;

use input::Rng;

/// What a passing case did, for the per-target tallies ("decoded",
/// "malformed", "refused", ...): they show how much of the input got past
/// the outer checks.
pub type Outcome = &'static str;

/// One fuzz target.
struct Target {
    name: &'static str,
    about: &'static str,
    generate: fn(&mut Rng) -> Vec<u8>,
    check: fn(&[u8]) -> Result<Outcome, String>,
}

const TARGETS: &[Target] = &[
    Target {
        name: "frame",
        about: "control framing (split_frame) over streams of frames of both directions, both body decoders",
        generate: codec::gen_frame,
        check: codec::check_frame,
    },
    Target {
        name: "client",
        about: "ClientMsg::decode (what the gateway reads), and encode/decode round trips",
        generate: codec::gen_client,
        check: codec::check_client,
    },
    Target {
        name: "server",
        about: "ServerMsg::decode (what a terminal reads), and encode/decode round trips",
        generate: codec::gen_server,
        check: codec::check_server,
    },
    Target {
        name: "alert",
        about: "alert bodies and targets inside AlertSend and Alert frames",
        generate: codec::gen_alert,
        check: codec::check_alert,
    },
    Target {
        name: "voice",
        about: "VoiceHeader::decode, the relay's speaker stamp and fanout::admit",
        generate: codec::gen_voice,
        check: codec::check_voice,
    },
    Target {
        name: "media",
        about: "the shared port's media path: srtp::divert, SRTP/SRTCP unprotect, voice::read; forgeries never authenticate",
        generate: media::gen_media,
        check: media::check_media,
    },
    Target {
        name: "limits",
        about: "every bounded field and value laid out by hand at, under and over its bound",
        generate: machines::gen_ops,
        check: limits::check_limits,
    },
    Target {
        name: "receipt",
        about: "the one receipt rule (codec receipt::advance, re-exported as core alert::advance) over receipt sequences",
        generate: machines::gen_ops,
        check: machines::check_receipt,
    },
    Target {
        name: "floor",
        about: "floor::Machine under any requests, releases, leaves, timeouts, against a model",
        generate: machines::gen_ops,
        check: machines::check_floor,
    },
    Target {
        name: "group",
        about: "group::Machine: attach, replace, stale detach, requests, timeouts, presence, churn",
        generate: machines::gen_ops,
        check: machines::check_group,
    },
    Target {
        name: "admission",
        about: "admission::Admission (handshake slots, Retry, per-address bound) against a model",
        generate: machines::gen_ops,
        check: machines::check_admission,
    },
    Target {
        name: "ratelimit",
        about: "fanout::RateLimit: never above burst + rate * time, full after a pause",
        generate: machines::gen_ops,
        check: machines::check_ratelimit,
    },
    Target {
        name: "recipients",
        about: "recipients::resolve with any sender, body, target and positions; join rights",
        generate: machines::gen_ops,
        check: org::check_recipients,
    },
    Target {
        name: "credential",
        about: "ProvisioningKey::verify on any presented credential",
        generate: machines::gen_ops,
        check: org::check_credential,
    },
    Target {
        name: "drill",
        about: "drill::report arithmetic, its JSON and CSV, from any receipts and marks",
        generate: machines::gen_ops,
        check: org::check_drill,
    },
];

#[derive(Debug, Parser)]
#[command(
    about = "Fuzz the PTT codec's decoders and the gateway's state machines (stable Rust, no cargo-fuzz)"
)]
struct Args {
    /// A target name, or `all`. `--list` shows them.
    #[arg(long, default_value = "all")]
    target: String,
    /// Cases per target.
    #[arg(long, default_value_t = 1_000_000)]
    cases: u64,
    /// Seed of the run; a failure prints it. Default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Worker threads. Default: the available cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Replay one input, as hex (what a failure prints), on `--target`.
    #[arg(long, value_name = "HEX")]
    reproduce: Option<String>,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
}

thread_local! {
    /// The message of the last panic on this thread, caught by the hook.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs a check, turning a panic into a failure.
fn run_check(t: &Target, input: &[u8]) -> Result<Outcome, String> {
    match panic::catch_unwind(AssertUnwindSafe(|| (t.check)(input))) {
        Ok(r) => r,
        Err(_) => Err(format!(
            "panicked: {}",
            PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| "(no message)".to_owned())
        )),
    }
}

/// Shrinks a failing input: deletes ever smaller ranges, then lowers
/// bytes, keeping each change that still fails.
fn minimise(t: &Target, input: &[u8]) -> Vec<u8> {
    let mut best = input.to_vec();
    let mut budget = 50_000u32;
    let fails = |c: &[u8], budget: &mut u32| {
        *budget = budget.saturating_sub(1);
        run_check(t, c).is_err()
    };
    loop {
        let before = best.clone();
        let mut chunk = best.len().div_ceil(2);
        while chunk > 0 && budget > 0 {
            let mut i = 0;
            while i + chunk <= best.len() && budget > 0 {
                let mut c = best.clone();
                c.drain(i..i + chunk);
                if fails(&c, &mut budget) {
                    best = c;
                } else {
                    i += chunk;
                }
            }
            chunk /= 2;
        }
        for i in 0..best.len() {
            for v in [0, best[i] / 2, best[i].saturating_sub(1)] {
                if v < best[i] && budget > 0 {
                    let mut c = best.clone();
                    c[i] = v;
                    if fails(&c, &mut budget) {
                        best = c;
                    }
                }
            }
        }
        if best == before || budget == 0 {
            return best;
        }
    }
}

/// The first failure a run found.
struct Failure {
    case: u64,
    input: Vec<u8>,
}

/// Counts of one run of one target.
#[derive(Default)]
struct Tally {
    cases: u64,
    outcomes: Vec<(Outcome, u64)>,
}

impl Tally {
    fn add(&mut self, o: Outcome, n: u64) {
        match self.outcomes.iter_mut().find(|(k, _)| *k == o) {
            Some((_, c)) => *c += n,
            None => self.outcomes.push((o, n)),
        }
    }
}

/// Runs `cases` cases of target number `index` on `threads` threads.
fn run(index: usize, seed: u64, cases: u64, threads: usize) -> (Tally, Option<Failure>) {
    let t = &TARGETS[index];
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<Failure>> = Mutex::new(None);
    let tally = Mutex::new(Tally::default());
    std::thread::scope(|scope| {
        for worker in 0..threads as u64 {
            let (stop, failure, tally) = (&stop, &failure, &tally);
            scope.spawn(move || {
                let mut mine = Tally::default();
                let mut case = worker;
                while case < cases && !stop.load(Ordering::Relaxed) {
                    let mut rng = Rng::for_case(seed, index as u64, case);
                    let input = (t.generate)(&mut rng);
                    match run_check(t, &input) {
                        Ok(o) => mine.add(o, 1),
                        Err(_) => {
                            stop.store(true, Ordering::Relaxed);
                            let mut f = failure.lock().unwrap_or_else(|e| e.into_inner());
                            if f.as_ref().is_none_or(|f| f.case > case) {
                                *f = Some(Failure { case, input });
                            }
                            break;
                        }
                    }
                    mine.cases += 1;
                    case += threads as u64;
                }
                let mut all = tally.lock().unwrap_or_else(|e| e.into_inner());
                all.cases += mine.cases;
                for (o, n) in mine.outcomes {
                    all.add(o, n);
                }
            });
        }
    });
    (
        tally.into_inner().unwrap_or_else(|e| e.into_inner()),
        failure.into_inner().unwrap_or_else(|e| e.into_inner()),
    )
}

/// `text` cut to a readable length: a failing case's value can be 16 KiB.
fn clip(text: &str) -> String {
    const MAX: usize = 800;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}... ({} bytes in all)", &text[..i], text.len()),
        None => text.to_owned(),
    }
}

fn parse_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    text.trim()
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let digits = std::str::from_utf8(pair).context("not hex")?;
            if digits.len() != 2 {
                bail!("odd number of hex digits");
            }
            u8::from_str_radix(digits, 16).context("not hex")
        })
        .collect()
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.list {
        for t in TARGETS {
            println!("{:<11} {}", t.name, t.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Panics are failures reported with their input; keep their message
    // for the report instead of printing it from every shrinking attempt.
    panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{at}")));
    }));
    let chosen: Vec<usize> = if args.target == "all" {
        (0..TARGETS.len()).collect()
    } else {
        let mut v = Vec::new();
        for name in args.target.split(',') {
            match TARGETS.iter().position(|t| t.name == name) {
                Some(i) => v.push(i),
                None => bail!("no target {name:?}; --list shows them"),
            }
        }
        v
    };
    if let Some(hex) = &args.reproduce {
        let input = parse_hex(hex)?;
        let mut failed = false;
        for &i in &chosen {
            let t = &TARGETS[i];
            match run_check(t, &input) {
                Ok(o) => println!("{}: passes ({o})", t.name),
                Err(e) => {
                    println!("{}: FAILS: {}", t.name, clip(&e));
                    failed = true;
                }
            }
        }
        return Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    println!(
        "ptt-fuzz: seed {seed}, {} cases per target, {threads} threads",
        args.cases
    );
    let started = Instant::now();
    let mut total = 0u64;
    for &i in &chosen {
        let t = &TARGETS[i];
        let t0 = Instant::now();
        let (tally, failure) = run(i, seed, args.cases, threads);
        let secs = t0.elapsed().as_secs_f64();
        total += tally.cases;
        if let Some(f) = failure {
            let small = minimise(t, &f.input);
            let why = run_check(t, &small).err().unwrap_or_default();
            println!("FAIL {}: seed {seed}, case {}", t.name, f.case);
            println!("  {}", clip(&why));
            println!(
                "  input ({} bytes, shrunk from {}): {}",
                small.len(),
                f.input.len(),
                codec::hex(&small)
            );
            println!(
                "  replay: ptt-fuzz --target {} --reproduce {}",
                t.name,
                codec::hex(&small)
            );
            return Ok(ExitCode::FAILURE);
        }
        let mut outcomes = tally.outcomes;
        outcomes.sort_by_key(|o| std::cmp::Reverse(o.1));
        let detail: Vec<String> = outcomes
            .iter()
            .map(|(o, n)| format!("{o} {:.1}%", 100.0 * *n as f64 / tally.cases.max(1) as f64))
            .collect();
        println!(
            "{:<11} {:>11} cases {:>8.1} s {:>11.0} cases/s  ok  ({})",
            t.name,
            tally.cases,
            secs,
            tally.cases as f64 / secs.max(1e-9),
            detail.join(", ")
        );
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "total       {total:>11} cases {secs:>8.1} s {:>11.0} cases/s  no failure",
        total as f64 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}
