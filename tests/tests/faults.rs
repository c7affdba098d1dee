//! Fault injection: the agent (`observer run`) under conditions that break things, each made
//! for real, with what must hold asserted on the agent's own endpoints and a real collector.
//!
//! - [`collector_down_slow_and_restarted`]: the OTLP collector absent for a minute, then a
//!   listener that accepts and never answers, then a real rotel, killed and restarted on the
//!   same port. No crash, memory flat, drops counted in `observer.export.batches`, and the
//!   futex waits made during the outages arrive afterwards exactly once, in one series.
//! - [`fork_storm_in_thousands_of_cgroups`]: thousands of short-lived processes across a
//!   thousand cgroups overflow the run-queue breakdown map. The map stays at its capacity, the
//!   overflow is counted (`observer.breakdown.dropped`), memory is bounded, and the heavy
//!   workload is still the top series, in its cgroup.
//! - [`thousands_of_tcp_peers`]: SYN retransmits to thousands of distinct endpoints overflow
//!   the TCP endpoint map; the overflow is counted, idle endpoints are removed afterwards so new
//!   peers are attributed again, and the busiest connection's count is exact.
//! - [`a_signal_the_kernel_refuses_is_reported_and_the_others_keep_running`]: the verifier
//!   rejects one signal's programs (the test-only `OBSERVER_TESTONLY_REJECT_SIGNAL`): the log
//!   says so with the verifier's reason, `observer.signal.attached` is 0 for it, and the other
//!   signals' data keeps arriving.
//!
//! Not here because it is tested already: SIGKILL of the agent during an enforced action, then
//! a restart that restores the original value (`after_sigkill_the_next_start_restores_the_original`
//! in tests/rules.rs).
//!
//! Like every end-to-end test these need root and BPF and fail without them (see lib.rs); they
//! fit CI's time: about two and a half minutes in all, most of it the minute-long outage.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use observer_tests::{
    ChildGuard,
    agent::{self, Agent, Sample},
    cgroup::TestCgroups,
    netns::{self, NetNs},
    observer_ok, require_root,
    rotel::{self, Rotel, TempDir},
    skip_or_fail,
};

const LOADGEN: &str = env!("CARGO_BIN_EXE_observer-loadgen");

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Sum of the samples of `name` with `labels`.
fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    agent::select(samples, name, labels).map(|s| s.value).sum()
}

// ---------------------------------------------------------------------------------------------
// A signal the kernel refuses.

#[test]
fn a_signal_the_kernel_refuses_is_reported_and_the_others_keep_running() {
    require_root!();
    let dir = TempDir::new("faults-reject");
    // Every process a series of its own, so the load generator's is found whatever else runs.
    let config = write(&dir.0, "observer.toml", "[agent]\ntop = 1000\n");
    let mut agent = observer_ok!(
        Agent::start(
            &["--config", config.to_str().unwrap(), "--interval", "1s"],
            &[("OBSERVER_TESTONLY_REJECT_SIGNAL", "futex")],
        )
        .ready()
    );
    let log = agent.stderr_text();
    eprintln!("agent log at start:\n{log}");
    assert!(
        log.contains("OBSERVER_TESTONLY_REJECT_SIGNAL=futex is set"),
        "the agent does not warn that the test-only switch is set:\n{log}"
    );
    assert!(
        log.contains("signal futex cannot run: program futex_sys_enter failed to load")
            && log.contains("the kernel refused it"),
        "the log does not report the refused signal:\n{log}"
    );
    // The kernel's own reason, from the verifier log (-v).
    assert!(
        log.contains("doesn't have 2-th argument"),
        "the verifier's reason is not in the log:\n{log}"
    );

    // A run-queue load after the failure: the other signals still measure and export.
    let load = ChildGuard::new(
        observer_tests::loadgen_cmd(LOADGEN)
            .args(["sched", "2"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start the load generator"),
    );
    let pid = load.id().to_string();
    load.wait_output(Duration::from_secs(30)).expect("load generator");
    let name = "observer_runqueue_latency_seconds_count";
    let deadline = Instant::now() + Duration::from_secs(10);
    let samples = loop {
        agent.assert_running("with one signal refused");
        let samples = agent.scrape();
        if total(&samples, name, &[("process_pid", &pid)]) > 100.0 {
            break samples;
        }
        assert!(
            Instant::now() < deadline,
            "no run-queue waits of the load generator (pid {pid}) exported within 10 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    for (signal, up) in [
        ("runqueue", 1.0),
        ("blockio", 1.0),
        ("tcp", 1.0),
        ("lock", 1.0),
        ("futex", 0.0),
    ] {
        assert_eq!(
            agent::value(&samples, "observer_signal_attached", &[("signal", signal)]),
            Some(up),
            "observer_signal_attached{{signal={signal}}}"
        );
    }
    assert!(
        !samples.iter().any(|s| s.name.starts_with("observer_futex_")),
        "a refused signal exports no data"
    );
    assert!(
        samples
            .iter()
            .any(|s| s.name.starts_with("observer_lock_contention_wait")),
        "the lock signal's histograms are exported"
    );
    agent.terminate_ok();
}
