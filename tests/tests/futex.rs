//! Futex waits of a known length: a child process in which one thread holds a std Mutex for
//! HOLD while another blocks on it, REPS times. Its waits must land in the scale-2 bucket that
//! holds HOLD.

use std::time::Duration;

use observer_tests::{Recording, hist, observer_ok, report, require_root};

const LOADGEN: &str = env!("CARGO_BIN_EXE_observer-loadgen");
/// 51 ms sits well inside bucket 102, (2^25.5, 2^25.75] ns = (47.45 ms, 56.43 ms]. The load
/// generator starts each hold once the waiter is blocked, ends it on time and hands its CPU
/// straight to the waiter (see `futex` in src/bin/loadgen.rs), so a wait comes out tens of
/// microseconds over 51 ms, on a busy machine too.
const HOLD_MS: u64 = 51;
const REPS: u64 = 6;

#[test]
fn futex_waits_of_51ms_land_in_the_bucket_that_holds_51ms() {
    require_root!();
    let (lo, hi) = hist::bounds(hist::index_of(HOLD_MS as f64 * 1e6));
    eprintln!("expected bucket for {HOLD_MS} ms: ({lo}, {hi}] ns");
    let top = 100;
    let rec = observer_ok!(
        Recording::start(&[
            "--signals",
            "futex",
            "--duration",
            "3s",
            "--top",
            &top.to_string()
        ])
        .wait_attached()
    );
    let (tgid, out) =
        observer_tests::run_loadgen(LOADGEN, &["futex", &HOLD_MS.to_string(), &REPS.to_string()]);
    assert!(
        rec.remaining() > Duration::from_millis(300),
        "the waits did not finish well inside the recording"
    );
    // What the waiting thread itself measured around lock(): our premise is that every wait is
    // inside the expected bucket (if not, the machine was too busy to run this test).
    let waits: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("wait_ns "))
        .map(|v| v.parse().unwrap())
        .collect();
    eprintln!("waits measured by the load generator (tgid {tgid}): {waits:?}");
    assert_eq!(waits.len() as u64, REPS);
    for w in &waits {
        assert!(
            lo < *w && *w <= hi,
            "a wait of {w} ns is outside ({lo}, {hi}]: premise failed"
        );
    }

    let report = observer_ok!(rec.finish());
    assert_eq!(
        report.signal_keys(),
        ["futex_wait"],
        "only the requested signal appears"
    );
    let sig = report.signal("futex_wait");
    let (total, _) = report::histogram(sig, "futex_wait");
    assert!(
        total.count >= REPS,
        "futex_wait count {} < {REPS}",
        total.count
    );
    let by_process = report::breakdown(
        &sig["by_process"],
        None,
        top,
        total.count,
        "futex_wait.by_process",
    );
    report::assert_adds_up(
        &by_process,
        top,
        total.count,
        report::dropped(sig, "by_process", "futex_wait"),
        "futex_wait.by_process",
    );
    let (e, s) = by_process
        .iter()
        .find(|(e, _)| e["tgid"].as_u64() == Some(tgid))
        .unwrap_or_else(|| {
            panic!(
                "load generator (tgid {tgid}) not in futex_wait.by_process: {}",
                sig["by_process"]
            )
        });
    eprintln!("observer's entry for the load generator: {e}");
    assert_eq!(
        report::str_of(e, "comm", "by_process entry"),
        &"observer-loadgen"[..15]
    );
    assert!(
        s.count >= REPS,
        "{} futex waits for the load generator, expected at least {REPS}",
        s.count
    );
    // The longest waits are ours, so the highest non-empty bucket is the expected one.
    assert!(
        hist::close(s.max_ns, hi),
        "max_ns {} ({:.2} ms) is not the upper bound of the bucket holding {HOLD_MS} ms, ({lo}, {hi}]",
        s.max_ns,
        s.max_ns / 1e6
    );
    // Our REPS long waits are most of this process's waits (the others are at most a thread
    // join), so the median is inside the expected bucket.
    assert!(
        s.count < 2 * REPS,
        "{} waits recorded for the load generator, more than expected ({REPS} plus a few short ones)",
        s.count
    );
    assert!(
        lo <= s.p50_ns && s.p50_ns <= hi,
        "p50 {} ns is outside ({lo}, {hi}]",
        s.p50_ns
    );
    // Each of the REPS waits is more than lo.
    assert!(
        s.sum_ns as f64 > REPS as f64 * lo,
        "sum_ns {} < {REPS} x {lo}",
        s.sum_ns
    );
    // The kernel-side waits (futex entry to exit) are what the waiter timed around lock(), less
    // its brief spinning before the syscall; the process's other waits (a thread join) are short.
    let measured: f64 = waits.iter().sum();
    assert!(
        (s.sum_ns as f64) > measured - REPS as f64 * 1e6 && (s.sum_ns as f64) < measured + 5e6,
        "sum_ns {} is not within [-{REPS} ms, +5 ms] of the {measured} ns the waiter measured",
        s.sum_ns
    );
}
