//! Run-queue latency: create scheduler load on one CPU and check observer sees it, attributed to
//! the process that made it.

use std::time::Duration;

use observer_tests::{Recording, observer_ok, report, require_root};

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
    let child = observer_tests::loadgen_cmd(LOADGEN)
        .args(["sched", &format!("{}", load_secs.floor() as u64)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start load generator");
    let child = observer_tests::ChildGuard::new(child);
    let tgid = child.id() as u64;
    let out = child
        .wait_output(Duration::from_secs(30))
        .expect("load generator");
    assert!(out.status.success(), "load generator failed: {out:?}");
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
