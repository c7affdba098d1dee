//! Workload attribution end to end: real cgroups laid out as systemd, Docker, containerd, CRI-O,
//! podman and the kubelet (both drivers) lay them out, under a test directory of the cgroup2
//! mount; a load generator inside each one; the run-queue waits it makes attributed to its
//! container, pod and systemd unit in `observer record --format json` and in the agent's OTLP
//! export (to a real collector, rotel).
//!
//! Like every end-to-end test these need root and BPF, and fail without them (only outside CI
//! with `OBSERVER_TESTS_ALLOW_SKIP=1` do they skip). The cgroups, and whatever still runs in
//! them, are removed even when a test fails (`observer_tests::cgroup::TestCgroups`).

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use observer_tests::{
    ChildGuard, Recording,
    cgroup::{Cgroup, TestCgroups},
    observer_ok, report, require_root,
    rotel::{self, Rotel, TempDir},
    skip_or_fail,
};
use serde_json::{Value, json};

const LOADGEN: &str = env!("CARGO_BIN_EXE_observer-loadgen");

/// A cgroup layout and what observer must read from it.
struct Layout {
    /// Under the test directory.
    rel: String,
    /// `container` and `pod` of the JSON row (`null`: absent).
    container: Value,
    pod: Value,
    systemd_unit: Option<String>,
    /// The OTLP attributes beyond cgroup.path/id and the process.
    attributes: Vec<(&'static str, String)>,
}

/// A 64-hex-digit container id, different for each `n`.
fn id(n: u64) -> String {
    format!("{:016x}", 0x0e2e_0000_0000_0000 + n).repeat(4)
}

/// A pod UID, different for each `n`.
fn uid(n: u64) -> String {
    format!("275ecb36-5aa8-4c2a-9c47-{n:012x}")
}

fn layouts() -> Vec<Layout> {
    let (id1, id2, id3, id4, id5) = (id(1), id(2), id(3), id(4), id(5));
    let (uid1, uid2, uid3) = (uid(1), uid(2), uid(3));
    let systemd = |uid: &str| uid.replace('-', "_");
    let scope1 = format!("cri-containerd-{id1}.scope");
    let slice1 = format!("kubepods-burstable-pod{}.slice", systemd(&uid1));
    let scope3 = format!("crio-{id3}.scope");
    let slice3 = format!("kubepods-pod{}.slice", systemd(&uid3));
    let scope4 = format!("docker-{id4}.scope");
    let scope5 = format!("libpod-{id5}.scope");
    vec![
        Layout {
            rel: format!("kubepods.slice/kubepods-burstable.slice/{slice1}/{scope1}"),
            container: json!({"runtime": "containerd", "id": id1}),
            pod: json!({"uid": uid1, "qos_class": "Burstable"}),
            systemd_unit: Some(scope1.clone()),
            attributes: vec![
                ("container.id", id1.clone()),
                ("container.runtime.name", "containerd".into()),
                ("k8s.pod.uid", uid1.clone()),
                ("k8s.pod.qos_class", "Burstable".into()),
                ("systemd.unit", scope1),
                ("systemd.slice", slice1),
            ],
        },
        Layout {
            rel: format!("kubepods/besteffort/pod{uid2}/{id2}"),
            container: json!({"id": id2}),
            pod: json!({"uid": uid2, "qos_class": "BestEffort"}),
            systemd_unit: None,
            attributes: vec![
                ("container.id", id2.clone()),
                ("k8s.pod.uid", uid2.clone()),
                ("k8s.pod.qos_class", "BestEffort".into()),
            ],
        },
        Layout {
            rel: format!("kubepods.slice/{slice3}/{scope3}"),
            container: json!({"runtime": "cri-o", "id": id3}),
            pod: json!({"uid": uid3, "qos_class": "Guaranteed"}),
            systemd_unit: Some(scope3.clone()),
            attributes: vec![
                ("container.id", id3.clone()),
                ("container.runtime.name", "cri-o".into()),
                ("k8s.pod.uid", uid3.clone()),
                ("k8s.pod.qos_class", "Guaranteed".into()),
                ("systemd.unit", scope3),
                ("systemd.slice", slice3),
            ],
        },
        Layout {
            rel: format!("system.slice/{scope4}"),
            container: json!({"runtime": "docker", "id": id4}),
            pod: Value::Null,
            systemd_unit: Some(scope4.clone()),
            attributes: vec![
                ("container.id", id4.clone()),
                ("container.runtime.name", "docker".into()),
                ("systemd.unit", scope4),
                ("systemd.slice", "system.slice".into()),
            ],
        },
        Layout {
            rel: format!("machine.slice/{scope5}/container"),
            container: json!({"runtime": "podman", "id": id5}),
            pod: Value::Null,
            systemd_unit: Some(scope5.clone()),
            attributes: vec![
                ("container.id", id5.clone()),
                ("container.runtime.name", "podman".into()),
                ("systemd.unit", scope5),
                ("systemd.slice", "machine.slice".into()),
            ],
        },
        Layout {
            rel: "system.slice/observer-e2e.service".into(),
            container: Value::Null,
            pod: Value::Null,
            systemd_unit: Some("observer-e2e.service".into()),
            attributes: vec![
                ("systemd.unit", "observer-e2e.service".into()),
                ("systemd.slice", "system.slice".into()),
            ],
        },
    ]
}

/// The test's cgroups, one per layout.
fn make_cgroups() -> Result<(TestCgroups, Vec<(Layout, Cgroup)>), String> {
    let mut cgroups = TestCgroups::new()?;
    let made = layouts()
        .into_iter()
        .map(|l| cgroups.create(&l.rel).map(|cg| (l, cg)))
        .collect::<Result<_, _>>()?;
    Ok((cgroups, made))
}

/// `observer-loadgen wake SECS` in each cgroup (a thousand wakeups a second, little CPU).
fn start_loads(cgroups: &TestCgroups, made: &[(Layout, Cgroup)], secs: u64) -> Vec<ChildGuard> {
    made.iter()
        .map(|(_, cg)| {
            let mut cmd = observer_tests::loadgen_cmd(LOADGEN);
            cmd.args(["wake", &secs.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let child = cgroups
                .spawn_in(cg, &mut cmd)
                .unwrap_or_else(|e| panic!("starting the load generator in {}: {e}", cg.path));
            let own = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
            assert!(
                own.lines().any(|l| l == format!("0::{}", cg.path)),
                "the load generator is not in {}: {own}",
                cg.path
            );
            ChildGuard::new(child)
        })
        .collect()
}

#[test]
fn record_json_names_each_cgroups_container_pod_and_unit() {
    require_root!();
    let (cgroups, made) = match make_cgroups() {
        Ok(m) => m,
        Err(e) => skip_or_fail!("{e}"),
    };
    let top = 200;
    let rec = observer_ok!(
        Recording::start(&[
            "--signals",
            "runqueue",
            "--by",
            "cgroup",
            "--duration",
            // Room for a slow attach on a loaded machine: the load runs for what is left.
            "8s",
            "--top",
            &top.to_string()
        ])
        .wait_attached()
    );
    let secs = (rec.remaining().as_secs_f64() - 0.7).floor() as u64;
    assert!(
        secs >= 2,
        "observer took too long to attach: {:?} left",
        rec.remaining()
    );
    let loads = start_loads(&cgroups, &made, secs);
    for load in loads {
        let out = load.wait_output(Duration::from_secs(30)).unwrap();
        assert!(out.status.success(), "load generator failed: {out:?}");
    }
    let report = observer_ok!(rec.finish());
    let rq = report.signal("runqueue_latency");
    let rows = rq["by_cgroup"].as_array().expect("by_cgroup");
    let mut problems = Vec::new();
    for (layout, cg) in &made {
        let Some(row) = rows.iter().find(|r| r["cgroup_id"].as_u64() == Some(cg.id)) else {
            problems.push(format!("{} (id {}) is not in by_cgroup", cg.path, cg.id));
            continue;
        };
        eprintln!("{row}");
        let count = report::u64_of(row, "count", "by_cgroup row");
        let unit = layout
            .systemd_unit
            .as_deref()
            .map_or(Value::Null, Value::from);
        let got = (
            &row["cgroup"],
            &row["container"],
            &row["pod"],
            &row["systemd_unit"],
        );
        let want = (
            &Value::from(cg.path.as_str()),
            &layout.container,
            &layout.pod,
            &unit,
        );
        if got != want || count < 100 {
            problems.push(format!(
                "{}: got {got:?} with {count} waits, expected {want:?} with at least 100",
                cg.path
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn agent_exports_each_cgroups_container_pod_and_unit_over_otlp() {
    require_root!();
    let bin = match rotel::find_binary() {
        Ok(b) => b,
        Err(e) => skip_or_fail!("{e}"),
    };
    let (cgroups, made) = match make_cgroups() {
        Ok(m) => m,
        Err(e) => skip_or_fail!("{e}"),
    };
    let dir = TempDir::new("workload-otlp");
    let rotel = Rotel::start(&bin, &dir.0, "rotel", rotel::free_ports());
    // Room for every process of this busy machine, so the load generators' series are tracked.
    let config = dir.0.join("observer.toml");
    std::fs::write(
        &config,
        "[agent]\ntop = 1000\nsignals = [\"runqueue\"]\n[prometheus]\nenabled = false\n",
    )
    .unwrap();
    let mut cmd = observer_tests::observer::command();
    cmd.args([
        "run",
        "--socket",
        "",
        "--config",
        config.to_str().unwrap(),
        "--interval",
        "1s",
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
    let agent = ChildGuard::new(cmd.spawn().expect("starting observer run"));
    let loads = start_loads(&cgroups, &made, 8);
    let pids: Vec<String> = loads.iter().map(|l| format!("Int({})", l.id())).collect();
    let started = Instant::now();
    let point_of = |e: &rotel::Export, pid: &str| {
        e.metric("observer.runqueue.latency")?
            .points
            .iter()
            .find(|p| p.attr("process.pid") == Some(pid))
            .map(|p| p.attributes.clone())
    };
    let exports = rotel.wait_for(
        "a run-queue series of every load generator",
        Duration::from_secs(30),
        |exports| {
            exports
                .last()
                .is_some_and(|e| pids.iter().all(|pid| point_of(e, pid).is_some()))
        },
    );
    eprintln!(
        "every load generator's series arrived after {:.1?}",
        started.elapsed()
    );
    drop(agent);
    let last = exports.last().unwrap();
    let mut problems = Vec::new();
    for ((layout, cg), pid) in made.iter().zip(&pids) {
        let got = point_of(last, pid).unwrap();
        let str_of = |v: &str| format!("Str({v})");
        let mut want: Vec<(String, String)> = vec![
            ("cgroup.path".into(), str_of(&cg.path)),
            ("cgroup.id".into(), format!("Int({})", cg.id)),
            ("process.pid".into(), pid.clone()),
            (
                "process.executable.name".into(),
                str_of(&"observer-loadgen"[..15]),
            ),
        ];
        want.extend(
            layout
                .attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), str_of(v))),
        );
        let (mut got_sorted, mut want_sorted) = (got.clone(), want.clone());
        got_sorted.sort();
        want_sorted.sort();
        if got_sorted != want_sorted {
            problems.push(format!(
                "{}: attributes {got_sorted:#?}, expected {want_sorted:#?}",
                cg.path
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
