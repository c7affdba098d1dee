//! The overhead budget (`agent.max_overhead_percent`), end to end: the agent runs with the
//! run-queue signal under `taskset -c 0 perf bench sched pipe` (the scheduler-heavy workload of
//! `./x bench`), exporting every second on a Prometheus endpoint that the test scrapes.
//!
//! With a budget far below what the programs cost (0.001% of the CPUs' time), the agent must
//! measure that cost, export it, and sample: `observer_runqueue_sampling` goes above 1 (a power of
//! two) while sampled waits keep arriving in the histogram. Without a budget nothing is
//! measured, and every wait stays timed (sampling 1). The futex signal samples the same way,
//! under `perf bench futex lock-pi` (threads contending for a PI futex: a stream of
//! FUTEX_LOCK_PI waits): `observer_futex_sampling`.
//!
//! Like every end-to-end test these need root and BPF, and fail without them; `perf` (Debian
//! package linux-perf) missing fails them too, unless skipping is allowed.

use std::{
    fs,
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use observer_tests::{
    ChildGuard, agent::free_addr, prom::http_get, require_root, rotel::TempDir, skip_or_fail,
};

/// The budget that no real workload can meet: the agent must sample.
const TINY_BUDGET: &str = "0.001";

/// `taskset -c 0 perf bench sched pipe`, long enough to outlast the test; killed (by its pid)
/// when dropped.
fn sched_pipe() -> Result<Load, String> {
    load(&[
        "taskset",
        "-c",
        "0",
        "perf",
        "bench",
        "sched",
        "pipe",
        "-l",
        "1000000000",
    ])
}

/// `perf bench futex lock-pi`: four threads taking turns on one PI futex, thousands of
/// FUTEX_LOCK_PI waits a second, for longer than the test; killed when dropped.
fn futex_lock_pi() -> Result<Load, String> {
    load(&["perf", "bench", "futex", "lock-pi", "-t", "4", "-r", "600"])
}

/// A load generator in a process group of its own, killed as a group when dropped: `perf bench`
/// forks its workers, which a kill of the parent alone would leave running.
struct Load(ChildGuard);

impl Drop for Load {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the process group this test created; no memory is involved.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        // The ChildGuard then reaps the parent.
    }
}

/// Starts a load generator, killed with everything it forked when dropped.
fn load(argv: &[&str]) -> Result<Load, String> {
    let shown = argv.join(" ");
    let child = Command::new(argv[0])
        .args(&argv[1..])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let mut guard = Load(ChildGuard::new(child));
    std::thread::sleep(Duration::from_millis(300));
    if let Some(status) = guard.0.0.as_mut().unwrap().try_wait().unwrap() {
        return Err(format!(
            "{shown} exited at once ({status}); install linux-perf (apt-get install linux-perf)"
        ));
    }
    Ok(guard)
}

/// `observer run` with one signal, exporting every second to a Prometheus endpoint only, with
/// `max_overhead_percent` as given. Its stderr goes to a file in `dir`.
struct Agent {
    child: ChildGuard,
    addr: SocketAddr,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &TempDir, signal: &str, budget: &str) -> Self {
        let addr = free_addr();
        let config = dir.0.join("observer.toml");
        fs::write(
            &config,
            format!(
                "[agent]\ninterval = \"1s\"\nsignals = [\"{signal}\"]\n\
                 max_overhead_percent = {budget}\n\
                 [otlp]\nenabled = false\n\
                 [prometheus]\nlisten = \"{addr}\"\n"
            ),
        )
        .unwrap();
        let log = dir.0.join("observer.log");
        let mut cmd = observer_tests::observer::command();
        cmd.args([
            "-v",
            "run",
            "--socket",
            "",
            "--config",
            config.to_str().unwrap(),
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
        let child = ChildGuard::new(cmd.spawn().expect("start observer run"));
        eprintln!("started observer run (pid {}) with {config:?}", child.id());
        Self { child, addr, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One scrape, parsed; `None` while the endpoint is not up yet. Fails the test if the agent
    /// exited.
    fn scrape(&mut self) -> Option<Scrape> {
        if let Some(status) = self.child.0.as_mut().unwrap().try_wait().unwrap() {
            panic!("observer run exited ({status}):\n{}", self.log());
        }
        let (status, _, body) = http_get(self.addr, "/metrics", None).ok()?;
        (status == 200).then(|| Scrape(String::from_utf8_lossy(&body).into_owned()))
    }

    /// Scrapes until `done` holds, for at most `timeout`.
    fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Scrape) -> bool,
    ) -> Scrape {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < timeout {
            if let Some(s) = self.scrape() {
                if done(&s) {
                    return s;
                }
                last = Some(s);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "{what}: not seen within {timeout:?}; last scrape:\n{}\nlog:\n{}",
            last.map_or_else(|| "(none)".into(), |s| s.0),
            self.log()
        );
    }
}

/// A Prometheus text exposition.
struct Scrape(String);

impl Scrape {
    /// Values of the samples of `name` whose labels contain `labels`
    /// (e.g. `observer_signal="runqueue"`).
    fn values(&self, name: &str, labels: &str) -> Vec<f64> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
                (metric == name && rest.contains(labels)).then(|| value.parse().ok())?
            })
            .collect()
    }

    fn one(&self, name: &str, labels: &str) -> Option<f64> {
        match self.values(name, labels)[..] {
            [v] => Some(v),
            _ => None,
        }
    }

    fn sampling(&self) -> Option<f64> {
        self.one("observer_runqueue_sampling", "")
    }

    /// The measured cost of a signal's programs, as a fraction of all CPUs' time.
    fn cost_of(&self, signal: &str) -> Option<f64> {
        self.one(
            "observer_overhead_cpu_utilization",
            &format!("observer_signal=\"{signal}\""),
        )
    }

    fn cost(&self) -> Option<f64> {
        self.cost_of("runqueue")
    }

    /// Waits timed so far, over every series of the run-queue histogram.
    fn waits(&self) -> f64 {
        self.values("observer_runqueue_wait_duration_seconds_count", "")
            .iter()
            .sum()
    }

    /// Futex waits timed so far, over every series.
    fn futex_waits(&self) -> f64 {
        self.values("observer_futex_wait_duration_seconds_count", "")
            .iter()
            .sum()
    }
}

#[test]
fn a_tiny_budget_makes_the_runqueue_signal_sample_and_says_so() {
    require_root!();
    let _load = match sched_pipe() {
        Ok(l) => l,
        Err(reason) => skip_or_fail!("{reason}"),
    };
    let dir = TempDir::new("budget-tiny");
    let mut agent = Agent::start(&dir, "runqueue", TINY_BUDGET);
    // The first measurement window closes before the first collection.
    let first = agent.wait_for("the first snapshot", Duration::from_secs(30), |s| {
        s.cost().is_some()
    });
    eprintln!(
        "first snapshot: cost {:?}, sampling {:?}",
        first.cost(),
        first.sampling()
    );
    let cost = first.cost().unwrap();
    // A fraction of all CPUs' time: above the budget (the load keeps CPU 0 busy switching) and
    // below everything.
    assert!(
        cost > 0.001 / 100.0 && cost < 1.0,
        "measured cost {cost} is not a plausible fraction above the budget"
    );
    let sampling = first
        .sampling()
        .expect("observer_runqueue_sampling is exported");
    assert!(
        sampling > 1.0,
        "cost {cost} is over the budget of {TINY_BUDGET}% but sampling is {sampling}"
    );
    assert!(
        sampling <= 1024.0 && (sampling as u64).is_power_of_two() && sampling.fract() == 0.0,
        "sampling {sampling} is not 2^k with k <= 10"
    );
    // Sampled waits keep arriving: the signal still measures, only less often.
    let before = first.waits();
    let later = agent.wait_for(
        "sampled waits after the first snapshot",
        Duration::from_secs(20),
        |s| s.waits() > before,
    );
    eprintln!(
        "waits timed: {before} then {}; sampling {:?}",
        later.waits(),
        later.sampling()
    );
    assert!(later.sampling().unwrap() > 1.0, "sampling went back to 1");
    let log = agent.log();
    assert!(
        log.contains("overhead budget") && log.contains("run-queue waits"),
        "the agent does not log what it did:\n{log}"
    );
}

#[test]
fn a_tiny_budget_makes_the_futex_signal_sample_too() {
    require_root!();
    let _load = match futex_lock_pi() {
        Ok(l) => l,
        Err(reason) => skip_or_fail!("{reason}"),
    };
    let dir = TempDir::new("budget-futex");
    let mut agent = Agent::start(&dir, "futex", TINY_BUDGET);
    let first = agent.wait_for("the first snapshot", Duration::from_secs(30), |s| {
        s.cost_of("futex").is_some()
    });
    let cost = first.cost_of("futex").unwrap();
    let sampling = first
        .one("observer_futex_sampling", "")
        .expect("observer_futex_sampling is exported");
    eprintln!("first snapshot: futex cost {cost}, sampling {sampling}");
    assert!(
        cost > 0.001 / 100.0 && cost < 1.0,
        "measured cost {cost} is not a plausible fraction above the budget"
    );
    assert!(
        sampling > 1.0 && sampling <= 1024.0 && (sampling as u64).is_power_of_two(),
        "cost {cost} is over the budget of {TINY_BUDGET}% but futex sampling is {sampling}"
    );
    // Only the futex signal runs: no run-queue rate is exported.
    assert_eq!(
        first.sampling(),
        None,
        "a rate for a signal that is not running"
    );
    // Sampled waits keep arriving (thousands of waits a second, 1 in at most 1024 timed).
    let before = first.futex_waits();
    let later = agent.wait_for(
        "sampled futex waits after the first snapshot",
        Duration::from_secs(20),
        |s| s.futex_waits() > before,
    );
    eprintln!("futex waits timed: {before} then {}", later.futex_waits());
    let log = agent.log();
    assert!(
        log.contains("overhead budget") && log.contains("futex waits"),
        "the agent does not log what it did:\n{log}"
    );
}

#[test]
fn without_a_budget_every_wait_is_timed_and_nothing_is_measured() {
    require_root!();
    let _load = match sched_pipe() {
        Ok(l) => l,
        Err(reason) => skip_or_fail!("{reason}"),
    };
    let dir = TempDir::new("budget-none");
    let mut agent = Agent::start(&dir, "runqueue", "0");
    agent.wait_for("the first snapshot", Duration::from_secs(30), |s| {
        s.sampling().is_some()
    });
    // Several snapshots later (each scrape sees a new one): still every wait timed, and no
    // statistics window was ever opened (it would cost every BPF program on the host).
    let mut seen = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let s = agent.scrape().expect("the endpoint stays up");
        assert_eq!(s.sampling(), Some(1.0), "sampling without a budget");
        assert_eq!(s.cost(), None, "measured without a budget");
        seen += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("sampling 1 in {seen} scrapes, no cost measured");
    assert!(
        !agent.log().contains("now timing 1 in") && !agent.log().contains("overhead budget:"),
        "the agent sampled or measured without a budget:\n{}",
        agent.log()
    );
}
