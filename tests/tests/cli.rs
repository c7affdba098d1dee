//! The command line: text output, bad input, `observer check`, defaults and duration units.

use std::time::{Duration, Instant};

use observer_tests::blockdev::{self, LoopDevice};
use observer_tests::{
    ChildGuard, Recording, SIGNAL_KEYS, SIGNALS, observer, observer_ok, require_root,
};

const LOADGEN: &str = env!("CARGO_BIN_EXE_observer-loadgen");

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
    for (s, k) in SIGNALS.iter().zip(SIGNAL_KEYS) {
        assert!(
            text.contains(s) || text.contains(k),
            "observer check does not name signal {s}: {text}"
        );
    }
}

/// Without --signals every signal is recorded, and on this machine every one of them runs;
/// `--top 2` bounds every breakdown list (with load that gives several of them more than two
/// rows); a plain number of seconds is a duration.
#[test]
fn default_records_all_signals_and_top_bounds_every_list() {
    require_root!();
    let rec = observer_ok!(Recording::start(&["--duration", "2", "--top", "2"]).wait_attached());
    // Contention on several kinds of kernel lock (mmap_lock read and write, spinlocks), so that
    // more than two lock classes have waits, and more than two processes wait for a CPU.
    let out = ChildGuard::new(
        observer_tests::loadgen_cmd(LOADGEN)
            .args(["mmap", "8", "1"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start load generator"),
    )
    .wait_output(Duration::from_secs(20))
    .expect("load generator");
    assert!(out.status.success(), "load generator failed: {out:?}");
    let report = observer_ok!(rec.finish());
    report.assert_all_signals("signals in the default report");
    let lists = [
        ("runqueue_latency", "by_cgroup"),
        ("runqueue_latency", "by_process"),
        ("block_io_latency", "by_disk"),
        ("tcp_retransmits", "by_remote"),
        ("lock_contention", "by_class"),
        ("futex_wait", "by_process"),
    ];
    // More than two processes wait for a CPU (the load generator, this test, kernel threads).
    let procs = report.signal("runqueue_latency")["by_process"]
        .as_array()
        .unwrap();
    assert_eq!(procs.len(), 2, "--top 2 lists two processes: {procs:?}");
    let too_long: Vec<String> = lists
        .iter()
        .filter_map(|(sig, list)| {
            let l = report.signal(sig)[list]
                .as_array()
                .unwrap_or_else(|| panic!("{sig}.{list} is not a list"));
            (l.len() > 2).then(|| format!("{sig}.{list} has {} entries: {l:?}", l.len()))
        })
        .collect();
    assert!(
        too_long.is_empty(),
        "--top 2 does not bound every list: {too_long:#?}"
    );
}

/// A duration with a unit: 500ms records for half a second.
#[test]
fn duration_with_milliseconds() {
    require_root!();
    let t = Instant::now();
    let report =
        observer_ok!(Recording::start(&["--signals", "futex", "--duration", "500ms"]).finish());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "a 500ms recording finished in {took:?}"
    );
    assert_eq!(report.signal_keys(), ["futex_wait"]);
}

/// `--format text` prints one histogram per latency signal (and the TCP retransmit count).
/// Creates a little of each condition while it records, so that no histogram is empty: direct
/// reads on a loop device, mmap_lock contention and run-queue waits from many threads, and
/// futex waits.
#[test]
fn text_format_prints_a_histogram_for_each_signal() {
    require_root!();
    let dev = LoopDevice::create(16).expect("create loop device");
    let rec = observer_ok!(Recording::start_format("text", &["--duration", "3s"]).wait_attached());
    let f = dev.open_direct().expect("open loop device");
    blockdev::direct_reads(&f, 200, 4096, 16 << 20).expect("direct reads");
    let mmap = observer_tests::loadgen_cmd(LOADGEN)
        .args(["mmap", "8", "1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start load generator");
    let futex = observer_tests::loadgen_cmd(LOADGEN)
        .args(["futex", "20", "3"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start load generator");
    for child in [mmap, futex] {
        let out = ChildGuard::new(child)
            .wait_output(Duration::from_secs(20))
            .expect("load generator");
        assert!(out.status.success(), "load generator failed: {out:?}");
    }
    let text = observer_ok!(rec.finish_raw());
    eprintln!("observer record --format text:\n{text}");
    assert!(
        serde_json::from_str::<serde_json::Value>(text.trim()).is_err(),
        "--format text printed JSON"
    );
    // Blocks are separated by blank lines; each signal's starts with a line naming it. A
    // histogram row shows a bucket range and a bar.
    let blocks: Vec<&str> = text.split("\n\n").collect();
    let find = |names: &[&str]| -> Option<&str> {
        blocks.iter().copied().find(|b| {
            let head = b.trim_start().lines().next().unwrap_or("").to_lowercase();
            names.iter().any(|n| head.contains(n))
        })
    };
    let is_row = |l: &str| l.contains("->") && l.contains('|') && l.contains('*');
    for (names, what) in [
        (
            &["run-queue", "runqueue", "run queue"][..],
            "run-queue latency",
        ),
        (&["block i/o device", "block"][..], "block I/O latency"),
        (&["lock contention"][..], "kernel lock contention"),
        (&["futex"][..], "futex waits"),
    ] {
        let block = find(names).unwrap_or_else(|| panic!("no section for {what} in:\n{text}"));
        let rows = block.lines().filter(|l| is_row(l)).count();
        assert!(
            rows > 0,
            "the {what} section has no histogram rows:\n{block}"
        );
    }
    let tcp = find(&["tcp", "retransmit"])
        .unwrap_or_else(|| panic!("no TCP retransmit section in:\n{text}"));
    assert!(
        tcp.lines()
            .next()
            .is_some_and(|l| l.chars().any(|c| c.is_ascii_digit())),
        "the TCP retransmit section does not give a count: {tcp}"
    );
}

/// Ctrl-C (SIGINT) during a recording stops it early and still prints what was measured, over
/// the time it actually ran, with exit code 0: what runqlat users expect.
#[test]
fn sigint_stops_a_recording_early_with_its_report() {
    require_root!();
    let rec =
        observer_ok!(Recording::start(&["--duration", "60s", "--signals", "lock"]).wait_attached());
    std::thread::sleep(Duration::from_millis(500));
    observer_tests::signal_child(rec.pid(), libc::SIGINT);
    let t = Instant::now();
    let text = observer_ok!(rec.finish_raw());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "record took {:?} to stop after SIGINT",
        t.elapsed()
    );
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("no JSON report after SIGINT ({e}): {text}"));
    let measured = json["duration_s"].as_f64().expect("duration_s");
    assert!(
        (0.4..10.0).contains(&measured),
        "duration_s {measured} after SIGINT at ~0.5 s"
    );
    assert!(
        json["signals"]["lock_contention"]["count"].is_u64(),
        "{json}"
    );
}
