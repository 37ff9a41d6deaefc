//! The gateway's recordings, with the real binaries: talk bursts of
//! speech-like audio through simulated terminals, then every recording
//! checked with the standard tools (`opusinfo`, `ffprobe`; setup.sh installs
//! them), listed and exported with the CLI, and decoded to audio whose
//! envelope follows what the talker said.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ptt_terminal_sim::speech::Speech;
use ptt_tests::{bin, free_udp_port, wait_for_log};

/// 20 ms at 16 kHz.
const FRAME: usize = 320;

/// `seconds` of the speech-like test signal (glottal pulses through vowel
/// formants under a syllable envelope with pauses: not a sine).
fn speech(seed: u64, seconds: usize) -> Vec<i16> {
    let mut s = Speech::new(seed);
    let mut pcm = vec![0i16; FRAME * 50 * seconds];
    for frame in pcm.chunks_mut(FRAME) {
        s.next_frame(frame);
    }
    pcm
}

fn write_wav(path: &Path, pcm: &[i16]) {
    let mut w = ptt_terminal_sim::wav::WavWriter::create(path).unwrap();
    w.write(pcm).unwrap();
    w.finish().unwrap();
}

/// RMS of each 20 ms frame.
fn envelope(pcm: &[i16]) -> Vec<f64> {
    pcm.chunks_exact(FRAME)
        .map(|f| (f.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / FRAME as f64).sqrt())
        .collect()
}

fn pearson(a: &[f64], b: impl Iterator<Item = f64> + Clone) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.clone().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        cov += (x - ma) * (y - mb);
        va += (x - ma).powi(2);
        vb += (y - mb).powi(2);
    }
    cov / (va.sqrt() * vb.sqrt()).max(f64::MIN_POSITIVE)
}

/// The best correlation of `rec` against `source` looped (the talker loops
/// its audio and a burst starts anywhere in it), over every start frame.
fn best_looped(rec: &[f64], source: &[f64]) -> f64 {
    (0..source.len())
        .map(|k| pearson(rec, (0..rec.len()).map(|j| source[(k + j) % source.len()])))
        .fold(f64::MIN, f64::max)
}

/// The best correlation of `rec` against any stretch of `heard`.
fn best_within(rec: &[f64], heard: &[f64]) -> f64 {
    (0..heard.len().saturating_sub(rec.len()) + 1)
        .map(|k| pearson(rec, heard[k..k + rec.len()].iter().copied()))
        .fold(f64::MIN, f64::max)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn talk_bursts_are_recorded_as_standard_ogg_opus_that_sounds_like_the_talker() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("city.toml");
    run(Command::new(bin("terminal-sim"))
        .args(["gen-city", "--units", "10", "--out"])
        .arg(&org));
    let source = speech(42, 10);
    let source_wav = dir.path().join("speech.wav");
    write_wav(&source_wav, &source);

    let port = free_udp_port();
    let log = dir.path().join("gateway.log");
    let data = dir.path().join("data");
    let mut gateway = Command::new(bin("ptt-gateway"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--org"])
        .arg(&org)
        .arg("--data-dir")
        .arg(&data)
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_log(&log, "gateway listening", Duration::from_secs(20));

    // voice-steady: 5 s bursts, one talker at a time per group.
    let heard = dir.path().join("heard");
    run(Command::new(bin("terminal-sim"))
        .args(["run", "--gateway", &format!("127.0.0.1:{port}"), "--ca"])
        .arg(data.join("cert.pem"))
        .arg("--org")
        .arg(&org)
        .args([
            "--scenario",
            "voice-steady",
            "--duration",
            "7",
            "--groups",
            "2",
        ])
        .arg("--audio")
        .arg(&source_wav)
        .arg("--record-dir")
        .arg(&heard)
        .arg("--report")
        .arg(dir.path().join("report.json")));

    // SIGTERM: the gateway makes every recording durable before it exits.
    let pid = gateway.id().to_string();
    run(Command::new("kill").args(["-TERM", &pid]));
    let started = Instant::now();
    while gateway.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(15), "no stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let stopped = text
        .lines()
        .find(|l| l.contains("gateway stopped"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        stopped.contains("\"recorder_frames_dropped\":0"),
        "{stopped}"
    );
    assert!(stopped.contains("\"recorder_errors\":0"), "{stopped}");

    // The index, through the CLI.
    let listed = run(Command::new(bin("ptt-gateway"))
        .args(["recordings", "--format", "json", "--data-dir"])
        .arg(&data));
    let rows: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let spoken: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["frames"].as_u64() > Some(0))
        .collect();
    assert!(spoken.len() >= 2, "a burst per group at least: {listed}");
    let table = run(Command::new(bin("ptt-gateway"))
        .args(["recordings", "--data-dir"])
        .arg(&data)
        .args(["--group", &spoken[0]["group"].to_string()]));
    assert!(table.starts_with("    id  started (UTC)"), "{table}");
    assert!(
        table.lines().count() >= 2
            && table
                .lines()
                .skip(1)
                .all(|l| l.contains(".opus") || l.contains(" - ")),
        "{table}"
    );

    let recordings = data.join("recordings");
    for r in &spoken {
        let path = recordings.join(r["path"].as_str().unwrap());
        let frames = r["frames"].as_u64().unwrap() + r["filled"].as_u64().unwrap();
        assert_eq!(r["dropped"].as_u64(), Some(0), "{r}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            r["bytes"].as_u64().unwrap()
        );
        // opusinfo: a valid Ogg Opus stream, no warnings.
        let info = run(Command::new("opusinfo").arg(&path));
        if std::ptr::eq(*r, spoken[0]) {
            eprintln!("opusinfo {}:\n{info}", path.display());
        }
        assert!(info.contains("Opus stream 1"), "{info}");
        assert!(info.contains("Pre-skip: 312"), "{info}");
        assert!(
            !info.contains("WARNING") && !info.contains("ERROR"),
            "{info}"
        );
        // ffprobe: opus, mono, as long as its frames.
        let probe = run(Command::new("ffprobe")
            .args(["-v", "error", "-show_entries"])
            .args(["stream=codec_name,channels:format=duration", "-of", "json"])
            .arg(&path));
        let probe: serde_json::Value = serde_json::from_str(&probe).unwrap();
        assert_eq!(probe["streams"][0]["codec_name"], "opus", "{probe}");
        assert_eq!(probe["streams"][0]["channels"], 1, "{probe}");
        let secs: f64 = probe["format"]["duration"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let expected = frames as f64 * 0.020 - 312.0 / 48_000.0;
        assert!(
            (secs - expected).abs() < 0.05,
            "{secs} s for {frames} frames"
        );
    }

    // The longest burst, exported both ways.
    let longest = spoken.iter().max_by_key(|r| r["frames"].as_u64()).unwrap();
    let id = longest["id"].to_string();
    let opus = dir.path().join("burst.opus");
    let wav = dir.path().join("burst.wav");
    run(Command::new(bin("ptt-gateway"))
        .args(["recordings", "export", "--data-dir"])
        .arg(&data)
        .args(["--burst", &id, "--out"])
        .arg(&opus));
    assert_eq!(
        std::fs::read(&opus).unwrap(),
        std::fs::read(recordings.join(longest["path"].as_str().unwrap())).unwrap()
    );
    run(Command::new(bin("ptt-gateway"))
        .args(["recordings", "export", "--data-dir"])
        .arg(&data)
        .args(["--burst", &id, "--wav", "--out"])
        .arg(&wav));
    let decoded = ptt_terminal_sim::wav::read_mono_16k(&wav).unwrap();
    let rec = envelope(&decoded);
    assert!(rec.len() > 100, "{} frames decoded", rec.len());

    // It follows the source, and not another utterance of the same
    // generator: the comparison can tell them apart.
    let matched = best_looped(&rec, &envelope(&source));
    let other = best_looped(&rec, &envelope(&speech(7, 10)));
    eprintln!("envelope correlation: source {matched:.3}, another voice {other:.3}");
    assert!(matched > 0.8, "source {matched:.3}");
    assert!(
        matched > other + 0.2,
        "source {matched:.3}, other {other:.3}"
    );

    // And what a listener heard (terminal-sim's --record-dir) contains it.
    let group = longest["group"].as_u64().unwrap();
    let listener: Vec<PathBuf> = std::fs::read_dir(&heard)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("group-{group}-"))
        })
        .collect();
    if let [path] = &listener[..] {
        let heard = envelope(&ptt_terminal_sim::wav::read_mono_16k(path).unwrap());
        let within = best_within(&rec, &heard);
        eprintln!("envelope correlation with what a listener heard: {within:.3}");
        assert!(within > 0.8, "listener {within:.3}");
    }
}
