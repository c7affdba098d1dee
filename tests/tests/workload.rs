//! Workload attribution end to end: real cgroups laid out as systemd, Docker, containerd, CRI-O,
//! podman and the kubelet (both drivers) lay them out, under a test directory of the cgroup2
//! mount; a load generator inside each one; the run-queue waits it makes attributed to its
//! container, pod and systemd unit in `observer record --format json`, in the agent's OTLP
//! export (to a real collector, rotel) and in its Prometheus endpoint.
//!
//! With `[kubernetes]` enrichment the agent names the pods from a pod list served over HTTPS
//! (`observer_tests::kubelet`: a real TLS server with its own CA, answering like a kubelet or an
//! API server), and says once why when the server is unreachable or refuses.
//!
//! Like every end-to-end test these need root and BPF, and fail without them (only outside CI
//! with `OBSERVER_TESTS_ALLOW_SKIP=1` do they skip). The cgroups, and whatever still runs in
//! them, are removed even when a test fails (`observer_tests::cgroup::TestCgroups`).

use std::{
    io::{BufRead as _, BufReader},
    os::unix::net::UnixStream,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use observer_tests::{
    ChildGuard, Recording,
    cgroup::{Cgroup, TestCgroups},
    kubelet::{self, PodServer},
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
    /// The OTLP attributes beyond observer.cgroup.path/id and the process.
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
                ("observer.k8s.pod.qos_class", "Burstable".into()),
                ("observer.systemd.unit", scope1),
                ("observer.systemd.slice", slice1),
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
                ("observer.k8s.pod.qos_class", "BestEffort".into()),
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
                ("observer.k8s.pod.qos_class", "Guaranteed".into()),
                ("observer.systemd.unit", scope3),
                ("observer.systemd.slice", slice3),
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
                ("observer.systemd.unit", scope4),
                ("observer.systemd.slice", "system.slice".into()),
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
                ("observer.systemd.unit", scope5),
                ("observer.systemd.slice", "machine.slice".into()),
            ],
        },
        Layout {
            rel: "system.slice/observer-e2e.service".into(),
            container: Value::Null,
            pod: Value::Null,
            systemd_unit: Some("observer-e2e.service".into()),
            attributes: vec![
                ("observer.systemd.unit", "observer-e2e.service".into()),
                ("observer.systemd.slice", "system.slice".into()),
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
fn agent_exports_each_cgroups_container_pod_and_unit_over_otlp_and_prometheus() {
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
    std::fs::write(&config, "[agent]\ntop = 1000\nsignals = [\"runqueue\"]\n").unwrap();
    let listen = observer_tests::agent::free_addr();
    let mut cmd = observer_tests::observer::command();
    cmd.args([
        "run",
        "--socket",
        "",
        "--config",
        config.to_str().unwrap(),
        "--interval",
        "1s",
        "--prometheus-listen",
        &listen.to_string(),
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
        e.metric("observer.runqueue.wait.duration")?
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
    // The endpoint serves the snapshot rotel received, or a later one: series stay.
    let (status, _, body) =
        observer_tests::prom::http_get(listen, "/metrics", None).expect("scrape");
    assert_eq!(status, 200);
    let samples = observer_tests::agent::parse_text(&String::from_utf8_lossy(&body));
    drop(agent);
    let last = exports.last().unwrap();
    let mut problems = Vec::new();
    for ((layout, cg), pid) in made.iter().zip(&pids) {
        let got = point_of(last, pid).unwrap();
        let str_of = |v: &str| format!("Str({v})");
        let mut want: Vec<(String, String)> = vec![
            ("observer.cgroup.path".into(), str_of(&cg.path)),
            ("observer.cgroup.id".into(), format!("Int({})", cg.id)),
            ("process.pid".into(), pid.clone()),
            (
                "observer.process.comm".into(),
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
        // Prometheus: the same attributes as labels, dots as underscores.
        let bare = |v: &str| v[4..v.len() - 1].to_owned();
        let Some(series) = samples.iter().find(|s| {
            s.name == "observer_runqueue_wait_duration_seconds_count"
                && s.label("process_pid") == Some(bare(pid).as_str())
        }) else {
            problems.push(format!("{}: no Prometheus series of {pid}", cg.path));
            continue;
        };
        for (key, value) in &want {
            let label = key.replace('.', "_");
            if series.label(&label) != Some(bare(value).as_str()) {
                problems.push(format!(
                    "{}: Prometheus label {label} is {:?}, expected {value}",
                    cg.path,
                    series.label(&label)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The pods of the kubepods layouts (the first three), as the pod list names them: UID, name,
/// namespace, and the container's id and name.
fn pods() -> Vec<kubelet::Pod> {
    [
        (1, "web-7d4f9c-x2x9z", "shop", "nginx"),
        (2, "batch-28f6d", "jobs", "worker"),
        (3, "db-0", "shop", "postgres"),
    ]
    .into_iter()
    .map(|(n, name, namespace, container)| kubelet::Pod {
        uid: uid(n),
        name: name.into(),
        namespace: namespace.into(),
        containers: vec![(id(n), container.into())],
    })
    .collect()
}

/// `observer run` for these tests: run-queue only, room for every series, OTLP to `rotel`, the
/// log (with info lines) in `log`.
fn start_agent(config_text: &str, dir: &Path, rotel: &Rotel, extra: &[&str]) -> ChildGuard {
    let config = dir.join("observer.toml");
    std::fs::write(&config, config_text).unwrap();
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let mut cmd = observer_tests::observer::command();
    cmd.args(["-v", "run", "--config", config.to_str().unwrap()])
        .args([
            "--interval",
            "1s",
            "--otlp-endpoint",
            &rotel.grpc_endpoint(),
        ])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("OTEL_") || k == "NODE_NAME" || k.starts_with("KUBERNETES_") {
            cmd.env_remove(&*k);
        }
    }
    ChildGuard::new(cmd.spawn().expect("starting observer run"))
}

fn agent_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
}

/// Waits up to `timeout` for the agent's log to hold `what`.
fn wait_for_log(dir: &Path, what: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let log = agent_log(dir);
        if log.contains(what) {
            return log;
        }
        assert!(
            start.elapsed() < timeout,
            "the agent's log does not say {what:?} after {timeout:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The attributes of the run-queue series of process `pid` (`Int(N)`) in the last export.
fn series_of(e: &rotel::Export, pid: &str) -> Option<Vec<(String, String)>> {
    e.metric("observer.runqueue.wait.duration")?
        .points
        .iter()
        .find(|p| p.attr("process.pid") == Some(pid))
        .map(|p| p.attributes.clone())
}

fn attr<'a>(attributes: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The names a series must carry: the pod's for the kubepods layouts, none for the others.
fn expected_names(pod: Option<&kubelet::Pod>) -> [(&'static str, Option<String>); 3] {
    [
        ("k8s.pod.name", pod.map(|p| format!("Str({})", p.name))),
        (
            "k8s.namespace.name",
            pod.map(|p| format!("Str({})", p.namespace)),
        ),
        (
            "k8s.container.name",
            pod.map(|p| format!("Str({})", p.containers[0].1)),
        ),
    ]
}

#[test]
fn agent_names_pods_from_the_kubelet_over_https_in_otlp_prometheus_and_top() {
    require_root!();
    let bin = match rotel::find_binary() {
        Ok(b) => b,
        Err(e) => skip_or_fail!("{e}"),
    };
    let pods = pods();
    let server = match PodServer::start(&kubelet::pod_list(&pods)) {
        Ok(s) => s,
        Err(e) => skip_or_fail!("{e}"),
    };
    let (cgroups, made) = match make_cgroups() {
        Ok(m) => m,
        Err(e) => skip_or_fail!("{e}"),
    };
    let dir = TempDir::new("workload-k8s");
    let rotel = Rotel::start(&bin, &dir.0, "rotel", rotel::free_ports());
    let socket = dir.0.join("observer.sock");
    let prometheus = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let config = format!(
        "[agent]\ntop = 1000\nsignals = [\"runqueue\"]\nsocket = \"{}\"\n\
         [prometheus]\nlisten = \"{prometheus}\"\n\
         [kubernetes]\nenrich = \"kubelet\"\nurl = \"{}\"\ntoken_file = \"{}\"\nca_file = \"{}\"\n\
         refresh = \"1s\"\n",
        socket.display(),
        server.url(),
        server.token.display(),
        server.ca.display(),
    );
    // Sidecar mode from the flag: the test's own directory, which holds every load.
    let agent = start_agent(&config, &dir.0, &rotel, &["--cgroup", &cgroups.top]);
    let loads = start_loads(&cgroups, &made, 10);
    let pids: Vec<String> = loads.iter().map(|l| format!("Int({})", l.id())).collect();
    let pod_of = |layout: &Layout| {
        pods.iter()
            .find(|p| layout.pod.get("uid").and_then(Value::as_str) == Some(p.uid.as_str()))
    };
    let named = |e: &rotel::Export| {
        made.iter().zip(&pids).all(|((layout, _), pid)| {
            series_of(e, pid)
                .is_some_and(|a| pod_of(layout).is_none() || attr(&a, "k8s.pod.name").is_some())
        })
    };
    let started = Instant::now();
    let exports = rotel.wait_for(
        "every load generator's series, the pods' with their names",
        Duration::from_secs(40),
        |exports| exports.last().is_some_and(named),
    );
    eprintln!("named series after {:.1?}", started.elapsed());
    let last = exports.last().unwrap();
    let mut problems = Vec::new();
    for ((layout, cg), pid) in made.iter().zip(&pids) {
        let got = series_of(last, pid).unwrap();
        for (key, want) in expected_names(pod_of(layout)) {
            if attr(&got, key) != want.as_deref() {
                problems.push(format!(
                    "{}: {key} is {:?}, expected {want:?}",
                    cg.path,
                    attr(&got, key)
                ));
            }
        }
    }
    // --cgroup: only the test's cgroups are seen.
    for p in &last
        .metric("observer.runqueue.wait.duration")
        .unwrap()
        .points
    {
        let path = p.attr("observer.cgroup.path").unwrap_or_default();
        if path != "Str(other)" && !path.starts_with(&format!("Str({}", cgroups.top)) {
            problems.push(format!("a series outside the scope: {path}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Prometheus: the same names, as labels.
    let (status, _, body) =
        observer_tests::prom::http_get(prometheus, "/metrics", None).expect("scrape");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    for pod in &pods {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("k8s_pod_uid=\"{}\"", pod.uid)))
            .unwrap_or_else(|| panic!("no series of pod {} in /metrics:\n{text}", pod.uid));
        for label in [
            format!("k8s_pod_name=\"{}\"", pod.name),
            format!("k8s_namespace_name=\"{}\"", pod.namespace),
            format!("k8s_container_name=\"{}\"", pod.containers[0].1),
        ] {
            assert!(line.contains(&label), "{label} missing in {line}");
        }
    }

    // `observer top` reads the same socket: its hello names the scope, its cgroup rows the pods.
    let stream = UnixStream::connect(&socket).expect("the agent's socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut lines = BufReader::new(stream).lines();
    let hello: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["scope"], cgroups.top.as_str(), "{hello}");
    let interval: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let rows: Vec<&str> = interval["signals"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["title"] == "cgroups")
        .flat_map(|t| t["rows"].as_array().unwrap())
        .filter_map(|r| r["name"].as_str())
        .collect();
    for pod in &pods {
        let name = format!("{}/{} {}", pod.namespace, pod.name, pod.containers[0].1);
        assert!(rows.contains(&name.as_str()), "no row {name:?} in {rows:?}");
    }
    drop(agent);
    let requests = server.requests();
    assert!(
        !requests.is_empty() && requests.iter().all(|r| r == "/pods"),
        "{requests:?}"
    );
    let log = agent_log(&dir.0);
    assert!(
        log.contains("kubernetes: 3 pods listed by the kubelet; pod names are exported"),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") && l.contains("kubernetes")),
        "{log}"
    );
}

#[test]
fn a_refused_token_then_missing_rbac_are_said_once_each_and_data_flows_without_names() {
    require_root!();
    let bin = match rotel::find_binary() {
        Ok(b) => b,
        Err(e) => skip_or_fail!("{e}"),
    };
    let pods = pods();
    let server = match PodServer::start(&kubelet::pod_list(&pods)) {
        Ok(s) => s,
        Err(e) => skip_or_fail!("{e}"),
    };
    let mut cgroups = match TestCgroups::new() {
        Ok(c) => c,
        Err(e) => skip_or_fail!("{e}"),
    };
    let layout = layouts().remove(0);
    let cg = cgroups.create(&layout.rel).unwrap();
    let made = vec![(layout, cg)];
    let dir = TempDir::new("workload-k8s-refused");
    let rotel = Rotel::start(&bin, &dir.0, "rotel", rotel::free_ports());
    // The agent's token is not the one the server takes (401), and once it is, the server
    // still forbids the list (403: no RBAC).
    let token = dir.0.join("token");
    std::fs::write(&token, "a-token-of-another-cluster\n").unwrap();
    server.forbid(true);
    let config = format!(
        "[agent]\ntop = 1000\nsignals = [\"runqueue\"]\nsocket = \"\"\n\
         [prometheus]\nenabled = false\n\
         [kubernetes]\nenrich = \"api-server\"\nurl = \"{}\"\nnode_name = \"node-1\"\n\
         token_file = \"{}\"\nca_file = \"{}\"\nrefresh = \"1s\"\n",
        server.url(),
        token.display(),
        server.ca.display(),
    );
    let _agent = start_agent(&config, &dir.0, &rotel, &[]);
    let loads = start_loads(&cgroups, &made, 40);
    let pid = format!("Int({})", loads[0].id());
    let uid = Value::as_str(&made[0].0.pod["uid"]).unwrap().to_owned();

    // 1. 401: said, and the series flows with its pod UID but no name.
    let log = wait_for_log(&dir.0, "401 Unauthorized", Duration::from_secs(20));
    let exports = rotel.wait_for(
        "the pod's series, without names",
        Duration::from_secs(20),
        |e| e.last().and_then(|e| series_of(e, &pid)).is_some(),
    );
    let series = series_of(exports.last().unwrap(), &pid).unwrap();
    assert_eq!(
        attr(&series, "k8s.pod.uid"),
        Some(format!("Str({uid})").as_str())
    );
    assert_eq!(attr(&series, "k8s.pod.name"), None);
    assert!(
        log.contains(&format!(
            "the token in {} was refused (expired, revoked, or of another cluster)",
            token.display()
        )) && log.contains("Metrics are exported without k8s.pod.name"),
        "{log}"
    );
    // Retried (1 s, 2 s...), said once.
    std::thread::sleep(Duration::from_secs(4));
    let log = agent_log(&dir.0);
    assert_eq!(log.matches("401 Unauthorized").count(), 1, "{log}");

    // 2. The right token: 403, said with the RBAC to grant.
    std::fs::copy(&server.token, &token).unwrap();
    let log = wait_for_log(&dir.0, "403 Forbidden", Duration::from_secs(20));
    assert!(
        log.contains(
            "403 Forbidden (pods is forbidden: User \"system:serviceaccount:observer:observer\" \
             cannot list resource \"pods\""
        ) && log.contains("grant it a ClusterRole with `list` on `pods`"),
        "{log}"
    );

    // 3. Granted: the names arrive on the same series, and the agent says it works again.
    server.forbid(false);
    let exports = rotel.wait_for(
        "the pod's series with its names",
        Duration::from_secs(45),
        |e| {
            e.last()
                .and_then(|e| series_of(e, &pid))
                .is_some_and(|a| attr(&a, "k8s.pod.name").is_some())
        },
    );
    let series = series_of(exports.last().unwrap(), &pid).unwrap();
    for (key, want) in expected_names(Some(&pods[0])) {
        assert_eq!(attr(&series, key), want.as_deref(), "{key}");
    }
    let log = wait_for_log(
        &dir.0,
        "pods listed by the api-server",
        Duration::from_secs(5),
    );
    assert_eq!(log.matches("403 Forbidden").count(), 1, "{log}");
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .all(|r| r == "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1"),
        "{requests:?}"
    );
}

#[test]
fn an_unreachable_server_is_said_once_and_data_flows_without_names() {
    require_root!();
    let bin = match rotel::find_binary() {
        Ok(b) => b,
        Err(e) => skip_or_fail!("{e}"),
    };
    // A CA for the configuration; nothing listens where the agent is sent.
    let server = match PodServer::start(&kubelet::pod_list(&[])) {
        Ok(s) => s,
        Err(e) => skip_or_fail!("{e}"),
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let mut cgroups = match TestCgroups::new() {
        Ok(c) => c,
        Err(e) => skip_or_fail!("{e}"),
    };
    let layout = layouts().remove(0);
    let cg = cgroups.create(&layout.rel).unwrap();
    let made = vec![(layout, cg)];
    let dir = TempDir::new("workload-k8s-unreachable");
    let rotel = Rotel::start(&bin, &dir.0, "rotel", rotel::free_ports());
    let config = format!(
        "[agent]\ntop = 1000\nsignals = [\"runqueue\"]\nsocket = \"\"\n\
         [prometheus]\nenabled = false\n\
         [kubernetes]\nenrich = \"kubelet\"\nurl = \"https://{closed}\"\ntoken_file = \"{}\"\n\
         ca_file = \"{}\"\n",
        server.token.display(),
        server.ca.display(),
    );
    let _agent = start_agent(&config, &dir.0, &rotel, &[]);
    let loads = start_loads(&cgroups, &made, 20);
    let pid = format!("Int({})", loads[0].id());
    let log = wait_for_log(&dir.0, "cannot reach it", Duration::from_secs(20));
    assert!(
        log.contains(&format!(
            "kubernetes.enrich = \"kubelet\": listing pods at https://{closed}/pods failed: \
             cannot reach it: Connection refused"
        )),
        "{log}"
    );
    let exports = rotel.wait_for(
        "the pod's series, without names",
        Duration::from_secs(20),
        |e| e.last().and_then(|e| series_of(e, &pid)).is_some(),
    );
    let series = series_of(exports.last().unwrap(), &pid).unwrap();
    assert!(attr(&series, "k8s.pod.uid").is_some());
    assert_eq!(attr(&series, "k8s.pod.name"), None);
    // Attempts at about 0, 1, 3 and 7 s: still one message, and collection went on.
    std::thread::sleep(Duration::from_secs(8));
    let log = agent_log(&dir.0);
    assert_eq!(log.matches("cannot reach it").count(), 1, "{log}");
    let later = rotel.exports();
    assert!(later.len() > exports.len(), "exports stopped");
}
