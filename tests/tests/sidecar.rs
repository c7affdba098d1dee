//! Sidecar mode end to end: real cgroups, loads inside and outside the scope, and only the
//! inside shows up, in the totals as in the breakdowns, for every signal: run-queue and futex
//! waits (`record --cgroup PATH`, `self`, and without breakdowns), lock waits (the waiting
//! task), block I/O (the submitter, with and without an I/O scheduler) and TCP retransmits (the
//! socket's cgroup, judged in softirq and timer context). Scopes `self` and `pod` of the agent
//! (Prometheus and OTLP, in a kubelet layout), `pod` from inside a cgroup namespace, and scopes
//! that do not resolve (refused with the reason).

use std::{collections::BTreeSet, process::Stdio, time::Duration};

use observer_tests::{
    ChildGuard, Recording, agent,
    cgroup::{Cgroup, TestCgroups},
    observer_ok, require_root, skip_or_fail,
};
use serde_json::Value;

const LOADGEN: &str = env!("CARGO_BIN_EXE_observer-loadgen");

/// `observer-loadgen ARGS` inside `cg`.
fn load_in(cgroups: &TestCgroups, cg: &Cgroup, args: &[&str]) -> ChildGuard {
    let mut cmd = observer_tests::loadgen_cmd(LOADGEN);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    ChildGuard::new(
        cgroups
            .spawn_in(cg, &mut cmd)
            .unwrap_or_else(|e| panic!("starting the load generator in {}: {e}", cg.path)),
    )
}

/// Runs the loads (a scheduler load and futex waits) in each cgroup and waits for them; returns
/// the pids of each cgroup's loads.
fn run_loads(cgroups: &TestCgroups, cgs: &[&Cgroup], secs: u64) -> Vec<BTreeSet<u64>> {
    let loads: Vec<Vec<ChildGuard>> = cgs
        .iter()
        .map(|cg| {
            vec![
                load_in(cgroups, cg, &["wake", &secs.to_string()]),
                load_in(cgroups, cg, &["futex", "20", "20"]),
            ]
        })
        .collect();
    loads
        .into_iter()
        .map(|group| {
            group
                .into_iter()
                .map(|load| {
                    let pid = u64::from(load.id());
                    let out = load.wait_output(Duration::from_secs(60)).unwrap();
                    assert!(out.status.success(), "load generator failed: {out:?}");
                    pid
                })
                .collect()
        })
        .collect()
}

fn rows<'a>(signal: &'a Value, key: &str) -> &'a [Value] {
    signal[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {signal}"))
}

fn count(v: &Value) -> u64 {
    v["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("no count in {v}"))
}

/// Only `inside` (and what is below it) in the report: every cgroup row is in it, the totals
/// are the rows' sums (nothing unattributed from elsewhere), the inside's loads are there and
/// the outside's are not.
fn assert_only_inside(
    report: &Value,
    inside: &Cgroup,
    pids_in: &BTreeSet<u64>,
    pids_out: &BTreeSet<u64>,
) {
    let rq = &report["signals"]["runqueue_latency"];
    let cgroups = rows(rq, "by_cgroup");
    assert!(!cgroups.is_empty(), "no run-queue waits in the scope: {rq}");
    for row in cgroups {
        let path = row["cgroup"].as_str().unwrap();
        assert!(
            path == inside.path || path.starts_with(&format!("{}/", inside.path)),
            "a cgroup outside the scope {}: {row}",
            inside.path
        );
    }
    assert_eq!(
        count(rq),
        cgroups.iter().map(count).sum::<u64>(),
        "the run-queue total is more than the scope's cgroups: {rq}"
    );
    let procs: BTreeSet<u64> = rows(rq, "by_process")
        .iter()
        .map(|r| r["tgid"].as_u64().unwrap())
        .collect();
    assert!(
        procs.is_disjoint(pids_out),
        "outside loads in runqueue: {procs:?} vs {pids_out:?}"
    );
    assert!(
        !procs.is_disjoint(pids_in),
        "no inside load in runqueue: {procs:?} vs {pids_in:?}"
    );

    let futex = &report["signals"]["futex_wait"];
    let procs: Vec<&Value> = rows(futex, "by_process").iter().collect();
    let tgids: BTreeSet<u64> = procs.iter().map(|r| r["tgid"].as_u64().unwrap()).collect();
    assert!(
        tgids.is_subset(pids_in),
        "futex waits from outside the scope: {futex}"
    );
    assert!(
        !tgids.is_empty(),
        "no futex waits from inside the scope: {futex}"
    );
    assert_eq!(
        count(futex),
        procs.iter().map(|r| count(r)).sum::<u64>(),
        "the futex total is more than the scope's processes: {futex}"
    );
}

#[test]
fn record_cgroup_path_sees_only_that_subtree() {
    require_root!();
    let mut cgroups = match TestCgroups::new() {
        Ok(c) => c,
        Err(e) => skip_or_fail!("{e}"),
    };
    let inside = cgroups.create("pod/app").unwrap();
    let outside = cgroups.create("other").unwrap();
    let scope = format!("{}/pod", cgroups.top);
    let rec = observer_ok!(
        Recording::start(&[
            "--signals",
            "runqueue,futex",
            "--cgroup",
            &scope,
            "--top",
            "100",
            "--duration",
            "8s",
        ])
        .wait_attached()
    );
    let secs = (rec.remaining().as_secs_f64() - 1.5).floor() as u64;
    assert!(
        secs >= 2,
        "observer took too long to attach: {:?} left",
        rec.remaining()
    );
    let pids = run_loads(&cgroups, &[&inside, &outside], secs);
    let json = rec.finish_raw().unwrap();
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["scope"], scope.as_str(), "the scope in the report");
    assert_only_inside(&report, &inside, &pids[0], &pids[1]);
}

#[test]
fn scope_self_is_the_cgroup_observer_runs_in() {
    require_root!();
    let mut cgroups = match TestCgroups::new() {
        Ok(c) => c,
        Err(e) => skip_or_fail!("{e}"),
    };
    let own = cgroups.create("sidecar").unwrap();
    let outside = cgroups.create("other").unwrap();
    let mut cmd = observer_tests::observer::command();
    cmd.args([
        "record",
        "--format",
        "json",
        "--signals",
        "runqueue,futex",
        "--cgroup",
        "self",
        "--top",
        "100",
        "--duration",
        "6s",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let observer = ChildGuard::new(cgroups.spawn_in(&own, &mut cmd).unwrap());
    // Loading takes a moment; the loads run while it records.
    std::thread::sleep(Duration::from_millis(2500));
    let pids = run_loads(&cgroups, &[&own, &outside], 2);
    let out = observer.wait_output(Duration::from_secs(60)).unwrap();
    if !out.status.success() {
        skip_or_fail!("observer failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let scope = report["scope"].as_str().unwrap();
    assert!(
        scope.starts_with("self (") && scope.ends_with("/sidecar)"),
        "{scope}"
    );
    // The observer itself is inside too, and may show up; the other cgroup's loads may not.
    assert_only_inside(&report, &own, &pids[0], &pids[1]);
}

#[test]
fn a_scope_that_does_not_resolve_is_refused() {
    require_root!();
    for (scope, expected) in [
        ("/observer-no-such-cgroup", "no such cgroup"),
        ("/", "the whole host"),
        ("container", "use \"self\""),
    ] {
        let out = observer_tests::observer::run(&["record", "--duration", "1s", "--cgroup", scope]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{scope}: accepted");
        assert!(err.contains(expected), "{scope}: {err}");
    }
}

/// Two recordings at once, each scoped to one of two sibling cgroups; returns them attached.
fn two_scoped(signals: &str, a: &Cgroup, b: &Cgroup) -> Option<(Recording, Recording)> {
    let start = |cg: &Cgroup| {
        Recording::start(&[
            "--signals",
            signals,
            "--cgroup",
            &cg.path,
            "--top",
            "100",
            "--duration",
            "10s",
        ])
        .wait_attached()
    };
    match (start(a), start(b)) {
        (Ok(ra), Ok(rb)) => Some((ra, rb)),
        (Err(e), _) | (_, Err(e)) => {
            if observer_tests::skip_allowed() {
                observer_tests::report_skip(&e.to_string());
                return None;
            }
            panic!("{e}");
        }
    }
}

#[test]
fn lock_waits_count_only_the_tasks_in_the_scope() {
    require_root!();
    let mut cgroups = match TestCgroups::new() {
        Ok(c) => c,
        Err(e) => skip_or_fail!("{e}"),
    };
    let quiet = cgroups.create("quiet").unwrap();
    let busy = cgroups.create("busy").unwrap();
    let Some((rq, rb)) = two_scoped("lock", &quiet, &busy) else {
        return;
    };
    let secs = (rb.remaining().as_secs_f64() - 1.5).floor() as u64;
    assert!(
        secs >= 2,
        "observer took too long to attach: {:?} left",
        rb.remaining()
    );
    // An mmap/munmap storm contends one process's mmap_lock (see lock.rs), in `busy` only;
    // `quiet` holds no task at all.
    let load = load_in(&cgroups, &busy, &["mmap", "8", &secs.to_string()]);
    let out = load.wait_output(Duration::from_secs(60)).unwrap();
    assert!(out.status.success(), "load generator failed: {out:?}");
    let (quiet_report, busy_report) = (rq.finish().unwrap(), rb.finish().unwrap());
    let quiet_n = count(quiet_report.signal("lock_contention"));
    let busy_n = count(busy_report.signal("lock_contention"));
    eprintln!("lock waits: scope busy {busy_n}, scope quiet {quiet_n}");
    assert!(
        busy_n > 0,
        "no lock waits in the busy cgroup: nothing to compare"
    );
    assert_eq!(quiet_n, 0, "lock waits counted in a cgroup with no task");
}

#[test]
fn block_io_counts_only_the_requests_the_scope_submits() {
    require_root!();
    for scheduler in ["none", "mq-deadline"] {
        let mut cgroups = match TestCgroups::new() {
            Ok(c) => c,
            Err(e) => skip_or_fail!("{e}"),
        };
        let a = cgroups.create("a").unwrap();
        let b = cgroups.create("b").unwrap();
        let dev = observer_tests::blockdev::LoopDevice::create(64).expect("create loop device");
        dev.set_scheduler(scheduler).expect("set scheduler");
        let Some((ra, rb)) = two_scoped("blockio", &a, &b) else {
            return;
        };
        // Direct 4 KiB reads, one request each (as in blockio.rs), from dd in each cgroup at
        // once: 300 in a, 500 in b.
        let dd = |cg: &Cgroup, n: u32, skip: u32| {
            let mut cmd = std::process::Command::new("dd");
            cmd.arg(format!("if={}", dev.dev.display()))
                .args(["of=/dev/null", "bs=4096", "iflag=direct"])
                .arg(format!("count={n}"))
                .arg(format!("skip={skip}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            ChildGuard::new(cgroups.spawn_in(cg, &mut cmd).expect("start dd"))
        };
        let loads = [dd(&a, 300, 0), dd(&b, 500, 4000)];
        for load in loads {
            let out = load.wait_output(Duration::from_secs(60)).unwrap();
            assert!(out.status.success(), "dd failed: {out:?}");
        }
        let (rep_a, rep_b) = (ra.finish().unwrap(), rb.finish().unwrap());
        for (report, expected, name) in [(&rep_a, 300, "a"), (&rep_b, 500, "b")] {
            let sig = report.signal("block_io_latency");
            let reads = rows(sig, "by_disk")
                .iter()
                .find(|e| e["disk"].as_str() == Some(&dev.disk()) && e["op"] == "read")
                .unwrap_or_else(|| {
                    panic!(
                        "{scheduler}: no reads of {} in scope {name}: {sig}",
                        dev.disk()
                    )
                });
            eprintln!("{scheduler}: scope {name}: {reads}");
            assert_eq!(
                count(&reads["device"]),
                expected,
                "{scheduler}: reads of the loop device in scope {name}"
            );
        }
    }
}

#[test]
fn tcp_retransmits_count_only_the_sockets_the_scope_created() {
    require_root!();
    let mut cgroups = match TestCgroups::new() {
        Ok(c) => c,
        Err(e) => skip_or_fail!("{e}"),
    };
    let a = cgroups.create("a").unwrap();
    let b = cgroups.create("b").unwrap();
    // As in tcp.rs: a namespace of our own whose input drops a few percent of the data packets
    // to the two servers, so both senders retransmit (in timer and softirq context, where the
    // socket's cgroup is what tells them apart).
    let ns = observer_tests::netns::NetNs::create().expect("create network namespace");
    ns.exec(
        &["nft", "-f", "-"],
        "table inet observer_test {
           chain input {
             type filter hook input priority 0; policy accept;
             tcp dport { 5201, 5202 } meta length > 200 numgen random mod 100 < 5 drop
           }
         }",
    )
    .expect("add nftables drop rule in the namespace (needs nft)");
    let Some((ra, rb)) = two_scoped("tcp", &a, &b) else {
        return;
    };
    let send = |cg: &Cgroup, port: &str| {
        let mut cmd = std::process::Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &ns.name,
            LOADGEN,
            "tcp",
            "127.0.0.1",
            port,
            "64",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        ChildGuard::new(cgroups.spawn_in(cg, &mut cmd).expect("start the transfer"))
    };
    let loads = [send(&a, "5201"), send(&b, "5202")];
    for load in loads {
        let out = load.wait_output(Duration::from_secs(60)).unwrap();
        assert!(out.status.success(), "transfer failed: {out:?}");
    }
    let (rep_a, rep_b) = (ra.finish().unwrap(), rb.finish().unwrap());
    for (report, own, name) in [(&rep_a, 5201, "a"), (&rep_b, 5202, "b")] {
        let sig = report.signal("tcp_retransmits");
        let entries = rows(sig, "by_remote");
        let port = |e: &&Value| e["remote_port"].as_u64();
        eprintln!("scope {name}: count {}, {entries:?}", count(sig));
        assert!(
            entries.iter().any(|e| port(&e) == Some(own)),
            "scope {name}: no retransmit to its own server {own}: {sig}"
        );
        assert!(
            entries.iter().all(|e| port(&e) == Some(own)),
            "scope {name}: a retransmit of another cgroup's socket: {sig}"
        );
        assert_eq!(
            count(sig),
            entries.iter().map(count).sum::<u64>(),
            "scope {name}: the total is more than its sockets' retransmits"
        );
    }
}

/// `observer run` started inside a test cgroup with `agent.scope = "self"`, scraped over
/// Prometheus while the same load runs inside and outside: every run-queue series is the
/// agent's own cgroup (or "other"), and the outside load never shows.
#[test]
fn agent_scope_self_exports_only_its_own_cgroup() {
    require_root!();
    let mut cgroups = match TestCgroups::new() {
        Ok(c) => c,
        Err(e) => skip_or_fail!("{e}"),
    };
    let own = cgroups.create("sidecar").unwrap();
    let outside = cgroups.create("other").unwrap();
    let dir = std::env::temp_dir().join(observer_tests::unique_name("observer-sidecar"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("observer.toml");
    std::fs::write(
        &config,
        "[agent]\ninterval = \"500ms\"\nsignals = [\"runqueue\"]\nscope = \"self\"\n[otlp]\nenabled = false\n",
    )
    .unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let mut cmd = observer_tests::observer::command();
    // Tests run agents side by side, and only one may serve the socket `top` reads: none here.
    cmd.args([
        "-v",
        "run",
        "--config",
        config.to_str().unwrap(),
        "--socket",
        "",
    ])
    .args(["--prometheus-listen", &addr.to_string()])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let agent = ChildGuard::new(cgroups.spawn_in(&own, &mut cmd).unwrap());
    let scrape = || {
        observer_tests::prom::http_get(addr, "/metrics", None)
            .ok()
            .map(|(_, _, body)| String::from_utf8_lossy(&body).into_owned())
    };
    let started = std::time::Instant::now();
    while scrape().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the agent did not serve metrics within 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pids = run_loads(&cgroups, &[&own, &outside], 3);
    // Two more collections after the loads.
    std::thread::sleep(Duration::from_millis(1500));
    let text = scrape().expect("scrape");
    let std::process::Output { stderr, .. } = {
        // SAFETY: kill(2) on the agent this test started; it shuts down cleanly on SIGTERM.
        unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
        agent.wait_output(Duration::from_secs(30)).unwrap()
    };
    let log = String::from_utf8_lossy(&stderr);
    assert!(
        log.contains("every signal restricted to this cgroup"),
        "no scope in the agent's log: {log}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let label = |line: &str, key: &str| -> Option<String> {
        let start = line.find(&format!("{key}=\""))? + key.len() + 2;
        Some(line[start..].split('"').next()?.to_owned())
    };
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("observer_runqueue_wait_duration_seconds_count{"))
        .collect();
    assert!(!series.is_empty(), "no run-queue series: {text}");
    let mut seen = BTreeSet::new();
    for line in &series {
        let path =
            label(line, "observer.cgroup.path").or_else(|| label(line, "observer_cgroup_path"));
        let path = path.unwrap_or_else(|| panic!("no cgroup path label: {line}"));
        assert!(
            path == own.path || path == "other",
            "a series outside the scope {}: {line}",
            own.path
        );
        if let Some(pid) = label(line, "process.pid").or_else(|| label(line, "process_pid")) {
            seen.insert(pid.parse::<u64>().unwrap());
        }
    }
    assert!(
        seen.is_disjoint(&pids[1]),
        "outside loads exported: {series:?}"
    );
    assert!(
        !seen.is_disjoint(&pids[0]),
        "no inside load exported: {series:?}"
    );
    let scope = text
        .lines()
        .find(|l| l.starts_with("observer_scope{"))
        .unwrap_or_else(|| panic!("no observer_scope gauge: {text}"));
    let named = label(scope, "observer_scope").or_else(|| label(scope, "observer.scope"));
    assert!(
        named.is_some_and(|s| s.starts_with("self (") && s.ends_with(&format!("{})", own.path))),
        "{scope}"
    );
}

#[test]
fn agent_with_a_bad_scope_stops_with_a_clear_error() {
    require_root!();
    let dir = std::env::temp_dir().join(observer_tests::unique_name("observer-sidecar"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("observer.toml");
    std::fs::write(&config, "[agent]\nscope = \"/observer-no-such-cgroup\"\n").unwrap();
    let out = observer_tests::observer::run(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--socket",
        "",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {err}");
    assert!(
        err.contains("scope /observer-no-such-cgroup: no such cgroup"),
        "{err}"
    );
}

/// Without breakdowns the run-queue programs skip attribution, but a scope still judges every
/// wait at the task's next switch-out: an empty cgroup counts nothing, a busy one its waits.
#[test]
fn runqueue_without_breakdowns_counts_only_the_scope() {
    require_root!();
    let mut cgroups = match TestCgroups::new() {
        Ok(c) => c,
        Err(e) => skip_or_fail!("{e}"),
    };
    let quiet = cgroups.create("quiet").unwrap();
    let busy = cgroups.create("busy").unwrap();
    let start = |cg: &Cgroup| {
        Recording::start(&[
            "--signals",
            "runqueue",
            "--by",
            "disk",
            "--cgroup",
            &cg.path,
            "--duration",
            "8s",
        ])
    };
    let (rq, rb) = (start(&quiet), start(&busy));
    let rq = observer_ok!(rq.wait_attached());
    let rb = observer_ok!(rb.wait_attached());
    let secs = (rb.remaining().as_secs_f64() - 1.5).floor() as u64;
    assert!(
        secs >= 2,
        "observer took too long to attach: {:?} left",
        rb.remaining()
    );
    let load = load_in(&cgroups, &busy, &["wake", &secs.to_string()]);
    let out = load.wait_output(Duration::from_secs(60)).unwrap();
    assert!(out.status.success(), "load generator failed: {out:?}");
    let quiet_n = count(rq.finish().unwrap().signal("runqueue_latency"));
    let busy_n = count(rb.finish().unwrap().signal("runqueue_latency"));
    eprintln!("run-queue waits: scope busy {busy_n}, scope quiet {quiet_n}");
    assert!(
        busy_n >= 1000 * (secs - 1),
        "too few waits in the busy cgroup: {busy_n}"
    );
    assert_eq!(
        quiet_n, 0,
        "run-queue waits counted in a cgroup with no task"
    );
}

/// The sidecar layout: observer in one container of a (kubelet, systemd driver) pod, scope
/// `pod`, exporting over OTLP to a real collector (rotel). The pod's other container's load is
/// exported, another pod's is not, and the resource names the scope and the pod.
#[test]
fn agent_scope_pod_sees_its_sibling_container_and_not_another_pod() {
    use observer_tests::rotel::{self, Rotel, TempDir};
    require_root!();
    let bin = match rotel::find_binary() {
        Ok(b) => b,
        Err(e) => skip_or_fail!("{e}"),
    };
    let mut cgroups = match TestCgroups::new() {
        Ok(c) => c,
        Err(e) => skip_or_fail!("{e}"),
    };
    let TwoPods {
        sidecar,
        app,
        other,
        pod_path,
        uid,
    } = two_pods(&mut cgroups, "burstable");

    let dir = TempDir::new("sidecar-otlp");
    let rotel = Rotel::start(&bin, &dir.0, "rotel", rotel::free_ports());
    let config = dir.0.join("observer.toml");
    std::fs::write(
        &config,
        "[agent]\ntop = 1000\nsignals = [\"runqueue\"]\nscope = \"pod\"\n[prometheus]\nenabled = false\n",
    )
    .unwrap();
    let mut cmd = observer_tests::observer::command();
    cmd.args([
        "run",
        "--config",
        config.to_str().unwrap(),
        "--interval",
        "1s",
        "--socket",
        "",
    ])
    .args(["--otlp-endpoint", &rotel.grpc_endpoint()])
    .env_remove("RUST_LOG")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    let agent = ChildGuard::new(cgroups.spawn_in(&sidecar, &mut cmd).unwrap());
    let loads = [
        load_in(&cgroups, &app, &["wake", "8"]),
        load_in(&cgroups, &other, &["wake", "8"]),
    ];
    let (app_pid, other_pid) = (
        format!("Int({})", loads[0].id()),
        format!("Int({})", loads[1].id()),
    );
    let has = |e: &rotel::Export, pid: &str| {
        e.metric("observer.runqueue.wait.duration")
            .is_some_and(|m| m.points.iter().any(|p| p.attr("process.pid") == Some(pid)))
    };
    let exports = rotel.wait_for(
        "the sibling container's run-queue series",
        Duration::from_secs(30),
        |exports| exports.last().is_some_and(|e| has(e, &app_pid)),
    );
    // One more export, with the other pod's load well under way.
    std::thread::sleep(Duration::from_millis(2500));
    let exports = {
        let later = rotel.exports();
        if later.len() > exports.len() {
            later
        } else {
            exports
        }
    };
    drop(agent);
    drop(loads);
    for e in &exports {
        assert!(!has(e, &other_pid), "another pod's load was exported");
        let Some(m) = e.metric("observer.runqueue.wait.duration") else {
            continue;
        };
        for p in &m.points {
            let path = p.attr("observer.cgroup.path").unwrap_or_default();
            assert!(
                path.starts_with(&format!("Str({pod_path}/")) || path == "Str(other)",
                "a series outside the pod: {:?}",
                p.attributes
            );
        }
    }
    let last = exports.last().unwrap();
    let scope = last
        .resource_attr("observer.scope")
        .expect("observer.scope in the resource");
    assert!(scope.contains(&format!("{pod_path})")), "{scope}");
    // Another instance than a host-wide agent's: the scope is part of the id's name.
    let scope = scope
        .strip_prefix("Str(")
        .unwrap()
        .strip_suffix(')')
        .unwrap();
    assert_eq!(
        last.resource_attr("service.instance.id"),
        Some(format!("Str({})", agent::instance_id(Some(scope))).as_str())
    );
    assert!(
        last.resource_attr("k8s.pod.uid")
            .is_some_and(|u| u.contains(&uid)),
        "the pod in the resource: {:?}",
        last.resource
    );
}

/// As in a Kubernetes sidecar under containerd: observer in its own cgroup namespace, where its
/// cgroup is `/` and its pod is hidden, with a cgroup2 mount of that namespace and a view of the
/// node's hierarchy (here the test host's own mount). `--cgroup pod` finds its cgroup in the
/// node's view by id, then its pod: the sibling container's load counts, another pod's not.
#[test]
fn scope_pod_from_inside_a_cgroup_namespace_finds_the_pod_in_the_nodes_view() {
    require_root!();
    let mut cgroups = match TestCgroups::new() {
        Ok(c) => c,
        Err(e) => skip_or_fail!("{e}"),
    };
    let TwoPods {
        sidecar,
        app,
        other,
        pod_path,
        ..
    } = two_pods(&mut cgroups, "besteffort");
    let mnt = std::env::temp_dir().join(observer_tests::unique_name("observer-cgroupns"));
    std::fs::create_dir_all(&mnt).unwrap();
    let observer = observer_tests::observer::bin();
    // The namespace's own cgroup2 mount, as a container runtime makes it, in a private mount
    // namespace (gone with the process).
    let script = format!(
        "mount -t cgroup2 none {mnt} && exec {observer} record --format json --signals runqueue,futex \
         --cgroup pod --top 100 --duration 6s",
        mnt = mnt.display(),
        observer = observer.display()
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--cgroup",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let rec = ChildGuard::new(cgroups.spawn_in(&sidecar, &mut cmd).unwrap());
    std::thread::sleep(Duration::from_millis(2500));
    let pids = run_loads(&cgroups, &[&app, &other], 2);
    let out = rec.wait_output(Duration::from_secs(60)).unwrap();
    let _ = std::fs::remove_dir(&mnt);
    if !out.status.success() {
        skip_or_fail!("observer failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let scope = report["scope"].as_str().unwrap();
    assert!(
        scope.starts_with("pod (") && scope.ends_with(&format!("{pod_path})")),
        "{scope}"
    );
    let pod_cgroup = Cgroup {
        path: pod_path,
        dir: Default::default(),
        id: 0,
    };
    assert_only_inside(&report, &pod_cgroup, &pids[0], &pids[1]);
}

/// Two Kubernetes pods under containerd's systemd layout, in `qos`'s slice: the first with two
/// containers (observer's and an application's), the second with one.
struct TwoPods {
    sidecar: Cgroup,
    app: Cgroup,
    other: Cgroup,
    /// The first pod's cgroup path.
    pod_path: String,
    /// The first pod's UID.
    uid: String,
}

fn two_pods(cgroups: &mut TestCgroups, qos: &str) -> TwoPods {
    let uid = |n: u32| format!("275ecb36-5aa8-4c2a-9c47-{n:012x}");
    let container = |n: u64| format!("cri-containerd-{}.scope", format!("{n:016x}").repeat(4));
    let pod = |n: u32| {
        format!(
            "kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{}.slice",
            uid(n).replace('-', "_")
        )
    };
    let mut create = |n: u32, c: u64| {
        cgroups
            .create(&format!("{}/{}", pod(n), container(c)))
            .unwrap()
    };
    let (sidecar, app, other) = (create(1, 1), create(1, 2), create(2, 3));
    TwoPods {
        sidecar,
        app,
        other,
        pod_path: format!("{}/{}", cgroups.top, pod(1)),
        uid: uid(1),
    }
}
