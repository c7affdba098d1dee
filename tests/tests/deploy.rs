//! The deployment files in deploy/: what can be checked on a machine without systemd as PID 1,
//! a Kubernetes cluster or a container registry.
//!
//! - deploy/observer.service passes `systemd-analyze verify` (no warning either), with its
//!   ExecStart pointed at the binary under test, and its exposure score is printed;
//! - deploy/kubernetes/*.yaml parse, have the fields the README promises (no privileged mode,
//!   exactly the capabilities listed, the host paths, the service account and its RBAC for pod
//!   names: `list` on pods and nothing else), and the observer.toml in their ConfigMap passes
//!   `observer config check` (with the DaemonSet's, in the environment a pod would have);
//! - deploy/Containerfile copies what the release build produces and starts what the manifests
//!   expect.

use std::{fs, path::PathBuf, process::Command};

use observer_tests::{observer, unique_name};
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("observer-deploy"));
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn systemd_unit_verifies() {
    let unit = fs::read_to_string(repo().join("deploy/observer.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/observer run --config /etc/observer/observer.toml")
    );
    // verify checks that the program exists: point it at the binary under test.
    let dir = scratch();
    let path = dir.join("observer.service");
    fs::write(
        &path,
        unit.replace("/usr/local/bin/observer", observer::bin().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "verify: {stderr}"
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for observer.service:")
                .nth(1)
        })
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    eprintln!("systemd-analyze security: exposure {score}");
    // 0 is a fully sandboxed service, 10 an unprotected one; BPF needs some privilege.
    assert!(score <= 5.0, "exposure {score} regressed: {text}");
    // Every directory the agent writes is one systemd creates for it.
    for line in [
        "StateDirectory=observer",
        "RuntimeDirectory=observer",
        "ProtectSystem=strict",
    ] {
        assert!(unit.contains(line), "missing {line}");
    }
    fs::remove_dir_all(dir).unwrap();
}

fn documents(file: &str) -> Vec<Yaml> {
    let text = fs::read_to_string(repo().join(file)).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn of_kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn strings(y: &Yaml) -> Vec<&str> {
    y.as_vec()
        .unwrap_or_else(|| panic!("not a list: {y:?}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// A container's securityContext: not privileged, no escalation, a read-only root, every
/// capability dropped but exactly `caps`.
fn least_privilege(sc: &Yaml, caps: &[&str]) {
    assert_eq!(sc["privileged"].as_bool(), Some(false));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(strings(&sc["capabilities"]["add"]), caps);
}

/// Writes the ConfigMap's observer.toml to a file and checks it as observer would.
fn config_checks(config_map: &Yaml) {
    let out = config_check(config_map, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `observer config check` of the ConfigMap's observer.toml with exactly `env` of the
/// variables a pod has (`NODE_NAME`, `KUBERNETES_SERVICE_*`) set.
fn config_check(config_map: &Yaml, env: &[(&str, &str)]) -> std::process::Output {
    let toml = config_map["data"]["observer.toml"]
        .as_str()
        .expect("ConfigMap data observer.toml");
    let dir = scratch();
    let path = dir.join("observer.toml");
    fs::write(&path, toml).unwrap();
    let mut cmd = observer::command();
    cmd.args(["config", "check", path.to_str().unwrap()]);
    for var in [
        "NODE_NAME",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("observer config check");
    fs::remove_dir_all(dir).unwrap();
    out
}

#[test]
fn daemonset_has_the_documented_privileges_and_a_valid_config() {
    let docs = documents("deploy/kubernetes/daemonset.yaml");
    let ds = of_kind(&docs, "DaemonSet");
    assert_eq!(ds["apiVersion"].as_str(), Some("apps/v1"));
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    assert!(pod["hostNetwork"].is_badvalue(), "no host network needed");
    let c = &pod["containers"][0];
    assert_eq!(
        strings(&c["args"]),
        ["run", "--config", "/etc/observer/observer.toml"]
    );
    least_privilege(
        &c["securityContext"],
        &[
            "BPF",
            "PERFMON",
            "SYS_ADMIN",
            "DAC_READ_SEARCH",
            "SYS_RESOURCE",
        ],
    );
    // Every mount has a volume, and the host paths are the ones the README lists.
    let volumes = pod["volumes"].as_vec().unwrap();
    for m in c["volumeMounts"].as_vec().unwrap() {
        let name = m["name"].as_str().unwrap();
        let v = volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("mount {name} has no volume"));
        if let Some(host) = v["hostPath"]["path"].as_str() {
            assert_eq!(Some(host), m["mountPath"].as_str(), "{name}");
            assert!(
                ["/sys/fs/cgroup", "/var/lib/observer", "/run/observer"].contains(&host),
                "unexpected host path {host}"
            );
        }
    }
    let cgroup = c["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/sys/fs/cgroup"))
        .unwrap();
    assert_eq!(cgroup["readOnly"].as_bool(), Some(true));

    // Pod names: the node's name from the downward API, a service account with its token,
    // and RBAC for exactly what [kubernetes] enrich = "api-server" asks: list pods.
    let env = c["env"].as_vec().unwrap();
    let node = env
        .iter()
        .find(|e| e["name"].as_str() == Some("NODE_NAME"))
        .expect("NODE_NAME in the container's env");
    assert_eq!(
        node["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("spec.nodeName")
    );
    let sa = of_kind(&docs, "ServiceAccount");
    let (sa_name, sa_namespace) = (
        sa["metadata"]["name"].as_str().unwrap(),
        sa["metadata"]["namespace"].as_str().unwrap(),
    );
    assert_eq!(pod["serviceAccountName"].as_str(), Some(sa_name));
    assert_eq!(ds["metadata"]["namespace"].as_str(), Some(sa_namespace));
    assert_ne!(pod["automountServiceAccountToken"].as_bool(), Some(false));
    let role = of_kind(&docs, "ClusterRole");
    let rules = role["rules"].as_vec().unwrap();
    assert_eq!(rules.len(), 1, "one rule: {rules:?}");
    assert_eq!(strings(&rules[0]["apiGroups"]), [""]);
    assert_eq!(strings(&rules[0]["resources"]), ["pods"]);
    assert_eq!(strings(&rules[0]["verbs"]), ["list"]);
    let binding = of_kind(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["kind"].as_str(), Some("ClusterRole"));
    assert_eq!(
        binding["roleRef"]["name"].as_str(),
        role["metadata"]["name"].as_str()
    );
    let subjects = binding["subjects"].as_vec().unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0]["kind"].as_str(), Some("ServiceAccount"));
    assert_eq!(subjects[0]["name"].as_str(), Some(sa_name));
    assert_eq!(subjects[0]["namespace"].as_str(), Some(sa_namespace));

    let config_map = of_kind(&docs, "ConfigMap");
    let toml = config_map["data"]["observer.toml"].as_str().unwrap();
    assert!(toml.contains("enrich = \"api-server\""), "{toml}");
    // In a pod of this DaemonSet (the kubelet sets KUBERNETES_SERVICE_*): valid, and the
    // resolved list is this node's pods from the in-cluster API server.
    let pod_env = [
        ("NODE_NAME", "node-1"),
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
    ];
    let out = config_check(config_map, &pod_env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("https://10.96.0.1:443/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        "{stdout}"
    );
    // Without NODE_NAME (the env entry forgotten): refused, saying how to set it.
    let out = config_check(config_map, &pod_env[1..]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("set NODE_NAME from the downward API"),
        "{stderr}"
    );
}

#[test]
fn containerfile_copies_the_release_binary_and_starts_what_the_manifests_run() {
    let text = fs::read_to_string(repo().join("deploy/Containerfile")).unwrap();
    let instructions: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once(' '))
        .collect();
    let copies: Vec<&str> = instructions
        .iter()
        .filter(|(i, _)| *i == "COPY")
        .map(|(_, a)| *a)
        .collect();
    // `./x build --release` leaves the binary here (cargo's release profile, no target triple).
    assert!(copies.contains(&"target/release/observer /usr/local/bin/observer"));
    for copy in &copies {
        let source = copy.split_whitespace().next().unwrap();
        if source != "target/release/observer" {
            assert!(repo().join(source).exists(), "COPY {source}: no such file");
        }
    }
    let entrypoint = instructions
        .iter()
        .find(|(i, _)| *i == "ENTRYPOINT")
        .unwrap()
        .1;
    assert_eq!(entrypoint, r#"["/usr/local/bin/observer"]"#);
    let cmd = instructions.iter().find(|(i, _)| *i == "CMD").unwrap().1;
    let docs = documents("deploy/kubernetes/daemonset.yaml");
    let args =
        strings(&of_kind(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert_eq!(
        cmd,
        serde_json::to_string(&args).unwrap().replace(',', ", ")
    );
}

/// Runs `observer -v run` for a moment with stderr to a file, `JOURNAL_STREAM` set as systemd
/// would (to that file's device:inode, or to something else), and returns what it logged.
fn agent_log(journal: bool) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let dir = scratch();
    let path = dir.join("stderr");
    let file = fs::File::create(&path).unwrap();
    let meta = fs::metadata(&path).unwrap();
    let stream = if journal {
        format!("{}:{}", meta.dev(), meta.ino())
    } else {
        format!("{}:{}", meta.dev(), meta.ino() + 1)
    };
    let mut child = observer::command()
        .args([
            "-v",
            "run",
            "--socket",
            "",
            "--interval",
            "1s",
            "--signals",
            "futex",
        ])
        .args(["--prometheus-listen", "127.0.0.1:0"])
        .env("JOURNAL_STREAM", stream)
        .stderr(file)
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !fs::read_to_string(&path).unwrap().contains("collecting") {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "observer run exited ({status}): {}",
                fs::read_to_string(&path).unwrap()
            );
        }
        assert!(
            start.elapsed().as_secs() < 30,
            "{}",
            fs::read_to_string(&path).unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let log = fs::read_to_string(&path).unwrap();
    fs::remove_dir_all(dir).unwrap();
    log
}

#[test]
fn logs_use_journal_priorities_when_stderr_is_the_journal() {
    observer_tests::require_root!();
    let log = agent_log(true);
    for line in log.lines() {
        assert!(
            line.starts_with("<6>observer::") || line.starts_with("<4>observer::"),
            "not in journald form: {line:?}"
        );
        assert!(!line.contains('\u{1b}'), "colour codes: {line:?}");
    }
    assert!(
        log.contains("<6>observer::agent::run: collecting interval=1s"),
        "{log}"
    );
    // JOURNAL_STREAM inherited by a process whose stderr goes elsewhere: ordinary lines.
    let log = agent_log(false);
    assert!(
        log.lines()
            .all(|l| l.starts_with("20") && l.contains(" INFO ") || l.contains(" WARN ")),
        "{log}"
    );
}

#[test]
fn sidecar_is_scoped_to_its_pod_with_minimal_privileges_and_a_valid_config() {
    let docs = documents("deploy/kubernetes/sidecar.yaml");
    let pod = of_kind(&docs, "Pod");
    assert_eq!(pod["apiVersion"].as_str(), Some("v1"));
    let spec = &pod["spec"];
    assert!(
        spec["hostPID"].is_badvalue(),
        "a sidecar needs no host PIDs"
    );
    assert!(spec["hostNetwork"].is_badvalue(), "nor the host network");
    let containers = spec["containers"].as_vec().unwrap();
    assert_eq!(containers.len(), 2, "an application and observer");
    let c = containers
        .iter()
        .find(|c| c["name"].as_str() == Some("observer"))
        .expect("an observer container");
    assert_eq!(
        strings(&c["args"]),
        ["run", "--config", "/etc/observer/observer.toml"]
    );
    least_privilege(
        &c["securityContext"],
        &["BPF", "PERFMON", "DAC_READ_SEARCH", "SYS_RESOURCE"],
    );
    // The node's cgroup tree, read-only, not over the container's own /sys/fs/cgroup.
    let volumes = spec["volumes"].as_vec().unwrap();
    for m in c["volumeMounts"].as_vec().unwrap() {
        let name = m["name"].as_str().unwrap();
        let v = volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("mount {name} has no volume"));
        if let Some(host) = v["hostPath"]["path"].as_str() {
            assert_eq!(host, "/sys/fs/cgroup", "the only host path");
            assert_eq!(m["mountPath"].as_str(), Some("/host/cgroup"));
            assert_eq!(m["readOnly"].as_bool(), Some(true));
        }
    }
    let config_map = of_kind(&docs, "ConfigMap");
    let toml = config_map["data"]["observer.toml"].as_str().unwrap();
    assert!(toml.contains("scope = \"pod\""), "{toml}");
    assert!(
        toml.contains("socket = \"\""),
        "no socket on a read-only root: {toml}"
    );
    config_checks(config_map);
}
