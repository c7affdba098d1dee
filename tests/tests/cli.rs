//! The command line: text output, bad input, `observer check`, defaults and duration units.

use std::time::{Duration, Instant};

use observer_tests::{Recording, observer, observer_ok, require_root};

const SIGNALS: [&str; 5] = ["runqueue", "blockio", "tcp", "lock", "futex"];
const KEYS: [&str; 5] = [
    "runqueue_latency",
    "block_io_latency",
    "tcp_retransmits",
    "lock_contention",
    "futex_wait",
];

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A bad value must be refused before anything is loaded: non-zero exit, a message on stderr
/// that names the bad value and lists what is valid, and no panic or backtrace.
fn refused(args: &[&str], bad: &str, valid: &[&str]) {
    let t = Instant::now();
    let out = observer::run(args);
    let err = stderr(&out);
    eprintln!("observer {args:?} -> {}; stderr:\n{err}", out.status);
    assert!(
        !out.status.success(),
        "observer {args:?} exited 0; stdout: {}",
        stdout(&out)
    );
    assert!(
        err.contains(bad),
        "stderr does not name the bad value {bad:?}: {err}"
    );
    for v in valid {
        assert!(
            err.contains(v),
            "stderr does not list the valid value {v:?}: {err}"
        );
    }
    for p in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!err.contains(p), "stderr shows a panic ({p:?}): {err}");
    }
    assert!(
        stdout(&out).trim().is_empty(),
        "a refused command printed a result: {}",
        stdout(&out)
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "refusing bad input took {:?}",
        t.elapsed()
    );
}

#[test]
fn bad_duration_is_refused_naming_it() {
    refused(&["record", "--duration", "abc"], "abc", &["ms", "s", "m"]);
    refused(
        &["record", "--duration", "5parsecs"],
        "5parsecs",
        &["ms", "s", "m"],
    );
}

#[test]
fn bad_signal_is_refused_listing_the_valid_ones() {
    refused(
        &["record", "--duration", "1", "--signals", "bogus"],
        "bogus",
        &SIGNALS,
    );
    refused(
        &["record", "--duration", "1", "--signals", "runqueue,bogus2"],
        "bogus2",
        &SIGNALS,
    );
}

#[test]
fn bad_format_is_refused_listing_the_valid_ones() {
    refused(
        &["record", "--duration", "1", "--format", "xml"],
        "xml",
        &["text", "json"],
    );
}

#[test]
fn check_exits_zero_and_names_each_signal() {
    require_root!();
    let out = observer::run(&["check"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    eprintln!("observer check -> {}:\n{text}", out.status);
    if !out.status.success() {
        observer_tests::skip_or_fail!("observer check exited {}: {text}", out.status);
    }
    for (s, k) in SIGNALS.iter().zip(KEYS) {
        assert!(
            text.contains(s) || text.contains(k),
            "observer check does not name signal {s}: {text}"
        );
    }
}

/// Without --signals every signal is recorded, and on this machine every one of them runs.
#[test]
fn default_records_all_signals_and_duration_units_work() {
    require_root!();
    let t = Instant::now();
    let report = observer_ok!(Recording::start(&["--duration", "500ms"]).finish());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "observer finished a 500ms recording in {took:?}"
    );
    let mut keys = report.signal_keys();
    keys.sort();
    let mut want = KEYS.map(String::from).to_vec();
    want.sort();
    assert_eq!(
        keys, want,
        "signals in the default report; errors: {}",
        report.json["errors"]
    );
    assert!(
        report
            .json
            .get("errors")
            .is_none_or(|e| e.as_object().is_some_and(|o| o.is_empty())),
        "signals failed on this machine: {}",
        report.json["errors"]
    );
    for k in KEYS {
        report.signal(k);
    }
}

/// `--format text` prints one histogram per signal. Runs a little load so that every latency
/// histogram has something in it.
#[test]
fn text_format_prints_a_histogram_for_each_signal() {
    require_root!();
    let out = observer::run(&["record", "--duration", "2s", "--format", "text"]);
    let text = stdout(&out);
    eprintln!(
        "observer record --format text -> {}\nstdout:\n{text}\nstderr:\n{}",
        out.status,
        stderr(&out)
    );
    if !out.status.success() {
        observer_tests::skip_or_fail!("observer record exited {}: {}", out.status, stderr(&out));
    }
    assert!(
        serde_json::from_str::<serde_json::Value>(text.trim()).is_err(),
        "--format text printed JSON"
    );
    let lower = text.to_lowercase();
    for (names, what) in [
        (
            &["runqueue", "run queue", "run-queue"][..],
            "run-queue latency",
        ),
        (&["block"][..], "block I/O latency"),
        (&["tcp", "retransmit"][..], "TCP retransmits"),
        (&["lock"][..], "lock contention"),
        (&["futex"][..], "futex waits"),
    ] {
        assert!(
            names.iter().any(|n| lower.contains(n)),
            "text output has no section for {what}:\n{text}"
        );
    }
}
