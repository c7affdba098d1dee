//! Run-queue latency: create scheduler load on one CPU and check observer sees it, attributed to
//! the process that made it; time a wake-up across CPUs and check observer's wait is the one the
//! woken program measures; and on the idle machine, compare the distribution with `runqlat`'s.

use std::time::Duration;

use observer_tests::{
    Recording, observer_ok, report, require_root, runqlat::Runqlat, skip_or_fail,
};

const LOADGEN: &str = env!("CARGO_BIN_EXE_observer-loadgen");

#[test]
fn runqueue_latency_of_a_scheduler_load_is_attributed_to_its_process() {
    require_root!();
    let top = 50;
    let rec = observer_ok!(
        Recording::start(&[
            "--signals",
            "runqueue",
            "--duration",
            "4s",
            "--top",
            &top.to_string()
        ])
        .wait_attached()
    );

    // Four threads of one process on CPU 0: two ping-pong over pipes (each wakes the other), two
    // spin. The woken threads wait in CPU 0's run queue behind the spinners.
    let load_secs = rec.remaining().as_secs_f64() - 0.7;
    assert!(
        load_secs > 1.0,
        "observer took too long to attach: {:?} left",
        rec.remaining()
    );
    let (tgid, out) = observer_tests::run_loadgen(
        LOADGEN,
        &["sched", &format!("{}", load_secs.floor() as u64)],
    );
    eprintln!(
        "load generator (tgid {tgid}): {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );

    let report = observer_ok!(rec.finish());
    assert_eq!(
        report.signal_keys(),
        ["runqueue_latency"],
        "only the requested signal appears"
    );
    let rq = report.signal("runqueue_latency");
    let (total, buckets) = report::histogram(rq, "runqueue_latency");
    eprintln!("runqueue_latency: {total:?}, {} buckets", buckets.len());
    assert!(total.count > 0, "no run-queue latency recorded under load");

    let by_process = report::breakdown(
        &rq["by_process"],
        None,
        top,
        total.count,
        "runqueue_latency.by_process",
    );
    let ours = by_process
        .iter()
        .find(|(e, _)| e["tgid"].as_u64() == Some(tgid))
        .unwrap_or_else(|| {
            panic!(
                "load generator (tgid {tgid}) not in by_process: {}",
                serde_json::to_string_pretty(&rq["by_process"]).unwrap()
            )
        });
    let comm = report::str_of(ours.0, "comm", "by_process entry").to_string();
    // Thousands of wakeups a second on a CPU shared with two spinners.
    assert!(
        ours.1.count >= 100,
        "only {} run-queue waits for the load generator",
        ours.1.count
    );
    eprintln!("load generator in by_process: {}", ours.0);
    let mut longest: Vec<_> = by_process.iter().collect();
    longest.sort_by(|a, b| b.1.max_ns.total_cmp(&a.1.max_ns));
    for (e, s) in longest.iter().take(3) {
        eprintln!(
            "  longest waits: {} (tgid {}): max <= {:.1} ms",
            e["comm"],
            e["tgid"],
            s.max_ns / 1e6
        );
    }

    let by_cgroup = report::breakdown(
        &rq["by_cgroup"],
        None,
        top,
        total.count,
        "runqueue_latency.by_cgroup",
    );
    assert!(!by_cgroup.is_empty(), "by_cgroup is empty");
    for (e, _) in &by_cgroup {
        report::u64_of(e, "cgroup_id", "by_cgroup entry");
        let path = report::str_of(e, "cgroup", "by_cgroup entry");
        assert!(
            path.starts_with('/'),
            "cgroup path {path:?} is not absolute"
        );
    }
    // Our load generator's cgroup (v2; on a hybrid hierarchy the unified one) is listed.
    let own = own_cgroup_v2(tgid_self());
    if let Some(own) = own {
        assert!(
            by_cgroup
                .iter()
                .any(|(e, _)| e["cgroup"].as_str() == Some(own.as_str())),
            "our cgroup {own:?} not in by_cgroup: {}",
            rq["by_cgroup"]
        );
    }
    // Checked last, and reported together, so that one does not hide the other.
    let mut problems = Vec::new();
    // Lists that --top did not cut account for every wait in the total.
    for (list, key) in [(&by_process, "by_process"), (&by_cgroup, "by_cgroup")] {
        if let Err(e) = report::adds_up(
            list,
            top,
            total.count,
            report::dropped(rq, key, "runqueue_latency"),
            &format!("runqueue_latency.{key}"),
        ) {
            problems.push(e);
        }
    }
    // The process's name is the one it has had since it exec'd, for nearly all its life.
    // TASK_COMM_LEN is 16: the kernel keeps the first 15 bytes of the executable's name. (Between
    // fork and exec the child still carries the forking thread's name, here the test thread's.)
    if comm != "observer-loadgen"[..15] {
        problems.push(format!(
            "by_process names the load generator (tgid {tgid}) {comm:?}, not {:?}, the name it \
             ran under (a name taken at the process's first event is the pre-exec name of a \
             forked child)",
            &"observer-loadgen"[..15]
        ));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

fn tgid_self() -> u32 {
    std::process::id()
}

/// The cgroup v2 path of a process (the `0::` line of /proc/PID/cgroup). The load generator is
/// our child and inherits our cgroup, so ours stands for it.
fn own_cgroup_v2(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Wake-ups of the sleeper across CPUs, 10 ms apart: a few hundred in 3 s.
const CROSSWAKE_ROUNDS: u64 = 300;

/// A wait on an otherwise idle CPU is mostly the time that CPU takes to get the woken task
/// running (the IPI, leaving halt: tens of microseconds in a VM), and that is what the woken
/// program feels. A sleeper on CPU 1, blocked in read() on a pipe, is woken by a writer on CPU
/// 0 that puts its clock in the message; the sleeper reads the clock again when read() returns.
/// That delay, less the time of the write and read system calls themselves (which the sleeper
/// also measures), is its run-queue wait, and observer's row for its process must say the same
/// within a factor of 2, never 0 (issue 14: the scheduler's own `sched_info` stamps skip exactly
/// this part and read 0). Neither does `sched_wakeup` see it: a wake-up onto an idle CPU that
/// shares the waker's cache is queued on that CPU's wake list (ttwu_queue_wakelist, Linux 6.0
/// on), and `sched_wakeup` fires there once the IPI has brought it out of halt, a few
/// microseconds before it runs the task; `sched_waking` fires on the waker's CPU, before the IPI.
#[test]
fn a_sleeper_woken_across_cpus_waits_as_long_as_it_measures() {
    require_root!();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test wakes a task on another CPU and needs 2 CPUs, this machine has {cpus}"
    );
    let top = 50;
    let rec = observer_ok!(
        Recording::start(&[
            "--signals",
            "runqueue",
            "--by",
            "process",
            "--duration",
            "8s",
            "--top",
            &top.to_string()
        ])
        .wait_attached()
    );
    let (tgid, out) =
        observer_tests::run_loadgen(LOADGEN, &["crosswake", &CROSSWAKE_ROUNDS.to_string()]);
    // remaining() is an upper bound (observer's window opens after it loads), so any time left
    // means the whole load was inside the window.
    assert!(
        rec.remaining() > Duration::ZERO,
        "the load generator outlasted the recording"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let measured = |key: &str| -> f64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("load generator did not print {key}: {stdout}"))
    };

    let report = observer_ok!(rec.finish());
    let rq = report.signal("runqueue_latency");
    let (total, _) = report::histogram(rq, "runqueue_latency");
    let by_process = report::breakdown(
        &rq["by_process"],
        None,
        top,
        total.count,
        "runqueue_latency.by_process",
    );
    let (row, ours) = by_process
        .iter()
        .find(|(e, _)| e["tgid"].as_u64() == Some(tgid))
        .unwrap_or_else(|| {
            panic!(
                "the sleeper (tgid {tgid}) is not in by_process: {}",
                rq["by_process"]
            )
        });

    // The system calls take about the same time at every wake-up, so their median is what each
    // delay carries besides the wait.
    let syscall = measured("syscall_p50_ns");
    let want_p50 = measured("wake_p50_ns") - syscall;
    let want_p90 = measured("wake_p90_ns") - syscall;
    eprintln!(
        "sleeper (tgid {tgid}) measured: {} wake-ups, p50 {} ns, p90 {} ns; its write + read \
         alone: p50 {syscall} ns, p90 {} ns; so its waits: p50 {want_p50} ns, p90 {want_p90} ns",
        measured("wakeups"),
        measured("wake_p50_ns"),
        measured("wake_p90_ns"),
        measured("syscall_p90_ns"),
    );
    eprintln!(
        "observer's row for it: {row}; {} waits, p50 {:.0} ns, p90 {:.0} ns",
        ours.count, ours.p50_ns, ours.p90_ns
    );
    let mut problems = Vec::new();
    // Besides the wake-ups, a few waits of its own: its start, moving to CPU 1, reaping the
    // writer. Far fewer would mean observer missed wake-ups.
    if ours.count < CROSSWAKE_ROUNDS * 9 / 10 {
        problems.push(format!(
            "observer counted {} waits for the sleeper, which was woken {CROSSWAKE_ROUNDS} times",
            ours.count
        ));
    }
    for (name, got, want) in [
        ("p50", ours.p50_ns, want_p50),
        ("p90", ours.p90_ns, want_p90),
    ] {
        if got <= 0.0 || !(want / 2.0..=want * 2.0).contains(&got) {
            problems.push(format!(
                "observer's {name} for the sleeper is {got:.0} ns, the sleeper measured \
                 {want:.0} ns: not within a factor of 2"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// How long observer and runqlat record the idle machine together: long enough for a few
/// hundred waits on an idle VM (issue 14 saw 172 in 10 s).
const IDLE_WINDOW: Duration = Duration::from_secs(15);
/// Fewer waits than this in the window and a few of them decide the shares.
const IDLE_MIN_WAITS: u64 = 100;
/// The "short" waits compared, in ns, as each tool can count them. runqlat truncates a wait to
/// whole microseconds and puts 0 and 1 in its first row: waits under 2000 ns. observer's
/// buckets are powers of 2^(1/4) in ns, and 2048 = 2^11 is an edge (bucket 43 ends there), so
/// it counts waits up to 2048 ns. The two differ by the waits between 2000 and 2048 ns, 1/30 of
/// an octave of a distribution that spans ten or more: a fraction of a point against the 20
/// allowed.
const SHORT_NS: f64 = 2048.0;
/// How far apart the two shares of short waits may be, in percentage points.
const SHARE_TOLERANCE: f64 = 20.0;

/// On the idle machine most waits are wake-ups on an idle CPU, which the scheduler's own clock
/// does not see (issue 14: observer put most of them at 0 where runqlat put 3.5% under 2 us).
/// observer and runqlat record the same window, and the share of waits at or under 2 us must be
/// within 20 points between them.
#[test]
fn on_the_idle_machine_the_share_of_short_waits_is_runqlats() {
    require_root!();
    // Each tool sees the other start: observer first, as loading it is the heavier of the two
    // (its window opens after), then runqlat, whose start is a handful of waits in observer's
    // window only. Both are stopped with SIGINT, back to back. Nothing of this test runs in the
    // window but one sleep.
    let rec = observer_ok!(
        Recording::start(&[
            "--signals",
            "runqueue",
            "--by",
            "process",
            "--duration",
            "60s",
            "--top",
            "5"
        ])
        .wait_attached()
    );
    let runqlat = match Runqlat::start(&[]) {
        Ok(r) => r,
        Err(e) => skip_or_fail!("{e}"),
    };
    let busy_before = cpu_times();
    std::thread::sleep(IDLE_WINDOW);
    let busy = cpu_times().busy_share_since(&busy_before);
    runqlat.interrupt();
    let report = observer_ok!(rec.interrupt());
    let slots = runqlat.finish().unwrap_or_else(|e| panic!("{e}"));

    let rq = report.signal("runqueue_latency");
    let (total, buckets) = report::histogram(rq, "runqueue_latency");
    let ours_short: u64 = buckets
        .iter()
        .filter(|b| b.upper_ns <= SHORT_NS)
        .map(|b| b.count)
        .sum();
    let theirs: u64 = slots.iter().map(|s| s.count).sum();
    let theirs_short: u64 = slots
        .iter()
        .filter(|s| s.high_us < 2)
        .map(|s| s.count)
        .sum();
    let share = |short: u64, all: u64| 100.0 * short as f64 / all.max(1) as f64;
    let (ours_share, theirs_share) = (share(ours_short, total.count), share(theirs_short, theirs));
    eprintln!(
        "observer recorded {} s, runqlat the last {IDLE_WINDOW:?} of them, on a machine meant to \
         be idle (CPUs {:.1}% busy): observer {} waits, {ours_short} at or under {SHORT_NS} ns \
         ({ours_share:.1}%), p50 {:.0} ns, p90 {:.0} ns; runqlat {theirs} waits, {theirs_short} \
         under 2 us ({theirs_share:.1}%); runqlat's histogram: {}",
        report.json["duration_s"],
        100.0 * busy,
        total.count,
        total.p50_ns,
        total.p90_ns,
        slots
            .iter()
            .map(|s| format!("{}-{} us: {}", s.low_us, s.high_us, s.count))
            .collect::<Vec<_>>()
            .join(", "),
    );
    eprintln!("observer's processes with most waits: {}", rq["by_process"]);
    assert!(
        total.count >= IDLE_MIN_WAITS && theirs >= IDLE_MIN_WAITS,
        "too few waits to compare shares: observer {}, runqlat {theirs} in {IDLE_WINDOW:?}, \
         need {IDLE_MIN_WAITS} each",
        total.count
    );
    assert!(
        (ours_share - theirs_share).abs() <= SHARE_TOLERANCE,
        "waits at or under 2 us: observer {ours_share:.1}%, runqlat {theirs_share:.1}%: more \
         than {SHARE_TOLERANCE} points apart"
    );
}

/// The CPU time counters of all CPUs together, from the first line of /proc/stat (in ticks).
struct CpuTimes {
    busy: u64,
    total: u64,
}

fn cpu_times() -> CpuTimes {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .expect("the cpu line of /proc/stat")
        .split_whitespace()
        .map(|t| t.parse().expect("a tick count"))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = ticks.iter().take(8).sum();
    CpuTimes {
        busy: total - ticks[3] - ticks[4],
        total,
    }
}

impl CpuTimes {
    /// The share of CPU time spent busy since `before`, to tell an idle machine from one that
    /// is not when reading a failure.
    fn busy_share_since(&self, before: &CpuTimes) -> f64 {
        (self.busy - before.busy) as f64 / (self.total - before.total).max(1) as f64
    }
}

/// Under load, the waits observer and runqlat time are the same events with the same ends (no
/// CPU is idle long enough for a wakeup to go through the idle CPU's wake list, the one place
/// where observer's start, `sched_waking`, and runqlat's, `sched_wakeup`, are microseconds
/// apart): the two count the same number of waits and their distributions agree. Measured on
/// the development VM (the load generator's pinned ping-pong behind two spinners, then `perf
/// bench sched messaging`): counts within 0.1%, the cumulative shares within 0.5 points from
/// 4 us up. At 2 us they are 3-6 points apart: `sched_waking` comes a fraction of a microsecond
/// before `sched_wakeup` on every wakeup, which moves short waits across that edge.
#[test]
fn under_load_observer_and_runqlat_count_the_same_waits_alike() {
    require_root!();
    let rec = observer_ok!(
        Recording::start(&["--signals", "runqueue", "--by", "disk", "--duration", "60s"])
            .wait_attached()
    );
    let runqlat = match Runqlat::start(&[]) {
        Ok(r) => r,
        Err(e) => skip_or_fail!("{e}"),
    };
    let out = observer_tests::loadgen_cmd(LOADGEN)
        .args(["sched", "3"])
        .output()
        .expect("start the load generator");
    assert!(out.status.success(), "load generator failed: {out:?}");
    let messaging = std::process::Command::new("perf")
        .args(["bench", "sched", "messaging", "-g", "4", "-l", "200"])
        .output()
        .expect("perf bench (linux-perf, installed by ./x setup)");
    assert!(
        messaging.status.success(),
        "perf bench sched messaging failed: {messaging:?}"
    );
    runqlat.interrupt();
    let report = observer_ok!(rec.interrupt());
    let slots = runqlat.finish().unwrap_or_else(|e| panic!("{e}"));

    let (total, buckets) = report::histogram(report.signal("runqueue_latency"), "runqueue_latency");
    let theirs: u64 = slots.iter().map(|s| s.count).sum();
    eprintln!("observer {} waits, runqlat {theirs}", total.count);
    assert!(
        total.count >= 100_000,
        "only {} waits under a load of some 100,000 a second",
        total.count
    );
    let mut problems = Vec::new();
    // runqlat started after observer and stopped before it, so observer's window holds
    // runqlat's and about a second more (runqlat's start, the two stops), with whatever else the
    // machine woke meanwhile: hundreds of waits on a quiet machine, thousands with other work
    // running (measured: 11,000 a second while colleagues' tests ran). Within runqlat's window
    // the two count the same events, so observer may have more, by at most that second, and
    // never fewer.
    if total.count < theirs || total.count - theirs > theirs / 33 {
        problems.push(format!(
            "observer counted {} waits and runqlat {theirs}: observer's window holds \
             runqlat's, so it should count as many and at most 3% more",
            total.count
        ));
    }
    // Edges where both histograms have one: 2^k us for runqlat (whole microseconds, so under
    // 2^k * 1000 ns), 2^k * 1024 ns for observer; the 2.4% between them holds next to nothing
    // of these distributions (the shares differ by under half a point at every edge).
    for k in [2u32, 4, 6, 8, 10, 12] {
        let us = 1u64 << k;
        let ours = buckets
            .iter()
            .filter(|b| b.upper_ns <= (us * 1024) as f64)
            .map(|b| b.count)
            .sum::<u64>() as f64
            / total.count as f64;
        let theirs_below = slots
            .iter()
            .filter(|s| s.high_us < us)
            .map(|s| s.count)
            .sum::<u64>() as f64
            / theirs.max(1) as f64;
        eprintln!(
            "  at or under {us} us: observer {:.1}%, runqlat {:.1}%",
            100.0 * ours,
            100.0 * theirs_below
        );
        if (ours - theirs_below).abs() > 0.02 {
            problems.push(format!(
                "waits at or under {us} us: observer {:.1}%, runqlat {:.1}%, more than 2 \
                 points apart",
                100.0 * ours,
                100.0 * theirs_below
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
