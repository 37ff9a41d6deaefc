//! Runs every `ptt-fuzz` target for a few thousand cases, so that CI keeps
//! the fuzz mode compiling and its checks passing on valid code, cheaply
//! (a few seconds in a debug build). The long runs are in BENCHMARKS.md.

use std::process::Command;

fn fuzz(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ptt-fuzz"))
        .args(args)
        .output()
        .expect("ptt-fuzz runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_target_passes_a_few_thousand_cases() {
    let (ok, text) = fuzz(&[
        "--target",
        "all",
        "--cases",
        "2000",
        "--seed",
        "11",
        "--threads",
        "2",
    ]);
    assert!(ok, "{text}");
    let (_, list) = fuzz(&["--list"]);
    let names: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.len() >= 14, "{list}");
    assert!(names.contains(&"group"), "{list}");
    for name in names {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains(" 2000 cases") && l.contains(" ok ")),
            "{name} did not run 2000 cases:\n{text}"
        );
    }
    assert!(text.contains("no failure"), "{text}");
}

#[test]
fn a_reproducer_replays_and_bad_arguments_fail() {
    // A Join of group 5, as a failure would print it.
    let (ok, text) = fuzz(&["--target", "client,frame", "--reproduce", "02000400000005"]);
    assert!(ok, "{text}");
    assert!(text.contains("client: passes (decoded)"), "{text}");
    assert!(!fuzz(&["--target", "nope", "--cases", "1"]).0);
    assert!(!fuzz(&["--target", "client", "--reproduce", "0g"]).0);
}
