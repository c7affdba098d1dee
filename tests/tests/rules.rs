//! Threshold rules and tuning actions, end to end: `observer run` inside a network namespace of
//! the test's own (net sysctls are per namespace, so the host is never changed), real TCP
//! retransmits made there by an nftables rule that drops a share of the data packets on input
//! (see tests/tcp.rs for why input), and a rule on the retransmit rate that sets
//! net.core.somaxconn. The test reads the namespace's sysctl and the agent's journal
//! (`observer actions --format json`).

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use observer_tests::{netns::NetNs, observer, require_root, rotel, unique_name};
use serde_json::Value;

/// The load's ports: the first connection uses the first; more connections, the next ones.
const PORT: u16 = 5202;
const PORTS: u16 = 8;
const KEY: &str = "/proc/sys/net/core/somaxconn";
/// The value the rules set.
const TUNED: &str = "8192";

/// A namespace with a drop rule, a scratch directory, and the agent running in the namespace.
struct Lab {
    ns: NetNs,
    dir: PathBuf,
    original: String,
}

impl Lab {
    fn new(drop_percent: u32) -> Self {
        let ns = NetNs::create().expect("create a network namespace (needs root and iproute2)");
        let mut lab = Self {
            dir: std::env::temp_dir().join(unique_name("observer-rules")),
            original: String::new(),
            ns,
        };
        fs::create_dir_all(&lab.dir).unwrap();
        lab.set_drop(drop_percent);
        lab.original = lab.sysctl();
        lab
    }

    /// Drops `percent`% of the data packets to PORT on input (replacing any earlier rule).
    fn set_drop(&self, percent: u32) {
        self.ns
            .exec(
                &["nft", "-f", "-"],
                &format!(
                    "table inet observer_rules {{}}
                     delete table inet observer_rules
                     table inet observer_rules {{
                       chain input {{
                         type filter hook input priority 0; policy accept;
                         tcp dport {PORT}-{last} meta length > 200 numgen random mod 100 < {percent} drop
                       }}
                     }}",
                    last = PORT + PORTS - 1
                ),
            )
            .expect("nftables rule in the namespace (needs `nft`: apt-get install nftables)");
    }

    fn sysctl(&self) -> String {
        self.ns
            .run(|| fs::read_to_string(KEY).unwrap().trim().to_owned())
            .unwrap()
    }

    fn set_sysctl(&self, v: &str) {
        self.ns.run(|| fs::write(KEY, v).unwrap()).unwrap();
    }

    /// Writes the config: the journal and state in the scratch directory, one rule.
    fn config(&self, rule: &str) -> PathBuf {
        let path = self.dir.join("observer.toml");
        fs::write(
            &path,
            format!(
                "[agent]\ninterval = \"1s\"\nsignals = [\"tcp\"]\n\n\
                 [tuning]\njournal = \"{d}/actions.jsonl\"\nstate = \"{d}/managed.json\"\n\n\
                 [[rules]]\nname = \"retransmits\"\nsignal = \"tcp\"\nstatistic = \"rate\"\n\
                 clear_below = 2\nwindow = \"2s\"\nmin_interval = \"1s\"\n{above}{rule}\
                 actions = [{{ type = \"sysctl\", key = \"net.core.somaxconn\", value = \"{TUNED}\" }}]\n",
                d = self.dir.display(),
                above = if rule.contains("above") {
                    ""
                } else {
                    "above = 20\n"
                },
            ),
        )
        .unwrap();
        path
    }

    /// Starts `observer run` in the namespace.
    fn agent(&self, config: &Path) -> Agent {
        let path = self.dir.join(unique_name("agent.log"));
        let log = fs::File::create(&path).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name])
            .arg(observer::bin())
            .args(["-v", "run", "--socket", "", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start observer run");
        Agent {
            child: Some(child),
            log: path,
        }
    }

    /// The decisions in the journal so far.
    fn journal(&self) -> Vec<Value> {
        let path = self.dir.join("actions.jsonl");
        if !path.exists() {
            return Vec::new();
        }
        let out = observer::run(&[
            "actions",
            "--format",
            "json",
            "--journal",
            path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
    }

    /// Waits until the journal has a record with `outcome` (and `event`, if given), after the
    /// first `skip` records; returns the journal.
    fn wait_for(
        &self,
        agent: &mut Agent,
        outcome: &str,
        event: Option<&str>,
        skip: usize,
    ) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let journal = self.journal();
            if journal
                .iter()
                .skip(skip)
                .any(|r| r["outcome"] == outcome && event.is_none_or(|e| r["event"] == e))
            {
                return journal;
            }
            if let Some(status) = agent.exited() {
                panic!(
                    "observer run exited ({status}) before recording {outcome}: {}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no {outcome} record within 30 s; journal: {journal:#?}\nagent log: {}",
                self.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        let mut out = String::new();
        for e in fs::read_dir(&self.dir).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("agent.log") {
                out += &fs::read_to_string(e.path()).unwrap_or_default();
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    fn signal(&mut self, sig: libc::c_int) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("agent running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "agent did not exit"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A bulk TCP transfer inside the namespace until stopped: with the drop rule, a steady stream
/// of retransmits.
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    fn start(ns: &NetNs) -> Self {
        Self::on(ns, PORT)
    }

    fn on(ns: &NetNs, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = ns.name.clone();
        let thread = thread::spawn(move || {
            let file = fs::File::open(format!("/run/netns/{name}")).unwrap();
            // SAFETY: a valid namespace fd; affects only this thread.
            let r =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let listener = TcpListener::bind(addr).unwrap();
            let mut client = TcpStream::connect(addr).unwrap();
            let (mut server, _) = listener.accept().unwrap();
            let reader = thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                while server.read(&mut buf).is_ok_and(|n| n > 0) {}
            });
            let chunk = vec![0x42u8; 256 << 10];
            while !flag.load(Ordering::Relaxed) {
                if client.write_all(&chunk).is_err() {
                    break;
                }
                // About 50 MB/s: steady retransmits without taking a whole CPU.
                thread::sleep(Duration::from_millis(5));
            }
            drop(client);
            let _ = reader.join();
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn outcomes(journal: &[Value]) -> Vec<(String, String)> {
    journal
        .iter()
        .map(|r| {
            (
                r["event"].as_str().unwrap_or("").to_owned(),
                r["outcome"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn pair(event: &str, outcome: &str) -> (String, String) {
    (event.to_owned(), outcome.to_owned())
}

#[test]
fn dry_run_records_the_decision_and_changes_nothing() {
    require_root!();
    let lab = Lab::new(5);
    let mut agent = lab.agent(&lab.config("mode = \"dry-run\"\n"));
    let load = Load::start(&lab.ns);
    let journal = lab.wait_for(&mut agent, "dry_run", None, 0);
    let r = journal.iter().find(|r| r["outcome"] == "dry_run").unwrap();
    assert_eq!(r["before"], lab.original.as_str());
    assert_eq!(r["after"], TUNED);
    assert!(r["observed"].as_f64().unwrap() > 20.0, "{r}");
    assert_eq!(r["knob"], "sysctl net.core.somaxconn");
    assert_eq!(lab.sysctl(), lab.original, "dry-run changed the sysctl");
    drop(load);
    let status = agent.signal(libc::SIGTERM);
    assert!(status.success(), "{status}: {}", lab.log());
    assert_eq!(lab.sysctl(), lab.original);
}

#[test]
fn enforce_changes_reverts_on_clear_and_on_sigterm() {
    require_root!();
    let lab = Lab::new(5);
    let mut agent = lab.agent(&lab.config("mode = \"enforce\"\nclear_for = \"2s\"\n"));
    let load = Load::start(&lab.ns);
    let journal = lab.wait_for(&mut agent, "applied", None, 0);
    let applied = journal.iter().find(|r| r["outcome"] == "applied").unwrap();
    assert_eq!(applied["before"], lab.original.as_str());
    assert_eq!(applied["after"], TUNED);
    assert_eq!(lab.sysctl(), TUNED);
    drop(load);
    let journal = lab.wait_for(&mut agent, "rolled_back", Some("clear"), 0);
    assert_eq!(lab.sysctl(), lab.original);
    let n = journal.len();
    let load = Load::start(&lab.ns);
    lab.wait_for(&mut agent, "applied", None, n);
    assert_eq!(lab.sysctl(), TUNED);
    let status = agent.signal(libc::SIGTERM);
    assert!(status.success(), "{status}: {}", lab.log());
    drop(load);
    assert_eq!(
        lab.sysctl(),
        lab.original,
        "SIGTERM did not restore the sysctl"
    );
    let journal = lab.journal();
    assert_eq!(
        outcomes(&journal).last().unwrap(),
        &pair("exit", "rolled_back"),
        "{journal:#?}"
    );
}

#[test]
fn after_sigkill_the_next_start_restores_the_original() {
    require_root!();
    let lab = Lab::new(5);
    let config = lab.config("mode = \"enforce\"\n");
    let mut agent = lab.agent(&config);
    let load = Load::start(&lab.ns);
    lab.wait_for(&mut agent, "applied", None, 0);
    assert_eq!(lab.sysctl(), TUNED);
    agent.signal(libc::SIGKILL);
    drop(load);
    assert_eq!(
        lab.sysctl(),
        TUNED,
        "nothing restores a setting after SIGKILL but a restart"
    );
    let mut agent = lab.agent(&config);
    lab.wait_for(&mut agent, "restored", Some("startup"), 0);
    assert_eq!(lab.sysctl(), lab.original);
    // The restore happens before the programs load; SIGTERM is handled once collecting.
    let start = Instant::now();
    while !fs::read_to_string(&agent.log)
        .unwrap()
        .contains("collecting")
    {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", lab.log());
        thread::sleep(Duration::from_millis(100));
    }
    let status = agent.signal(libc::SIGTERM);
    assert!(status.success(), "{status}: {}", lab.log());
}

#[test]
fn rate_limits_hold_back_a_second_change() {
    require_root!();
    let lab = Lab::new(5);
    let mut agent = lab.agent(&lab.config("mode = \"enforce\"\nmax_changes_per_hour = 1\n"));
    let load = Load::start(&lab.ns);
    lab.wait_for(&mut agent, "applied", None, 0);
    drop(load);
    let journal = lab.wait_for(&mut agent, "rolled_back", Some("clear"), 0);
    let load = Load::start(&lab.ns);
    let journal = lab.wait_for(&mut agent, "rate_limited", None, journal.len());
    let limited = journal
        .iter()
        .find(|r| r["outcome"] == "rate_limited")
        .unwrap();
    assert!(
        limited["message"]
            .as_str()
            .unwrap()
            .contains("max_changes_per_hour is 1"),
        "{limited}"
    );
    assert_eq!(lab.sysctl(), lab.original);
    drop(load);
    assert!(agent.signal(libc::SIGTERM).success());
}

#[test]
fn an_outside_change_is_noticed_and_left_alone() {
    require_root!();
    let lab = Lab::new(5);
    let mut agent = lab.agent(&lab.config("mode = \"enforce\"\n"));
    let load = Load::start(&lab.ns);
    lab.wait_for(&mut agent, "applied", None, 0);
    lab.set_sysctl("1000");
    let journal = lab.wait_for(&mut agent, "outside_change", None, 0);
    let r = journal
        .iter()
        .find(|r| r["outcome"] == "outside_change")
        .unwrap();
    assert_eq!(
        (r["before"].as_str(), r["after"].as_str()),
        (Some(TUNED), Some("1000"))
    );
    drop(load);
    assert!(agent.signal(libc::SIGTERM).success());
    assert_eq!(lab.sysctl(), "1000", "observer undid someone else's change");
    lab.set_sysctl(&lab.original);
}

#[test]
fn experiment_mode_reverts_a_change_that_made_retransmits_worse() {
    require_root!();
    let lab = Lab::new(3);
    let mut agent = lab.agent(&lab.config(
        "mode = \"enforce\"\nabove = 5\nexperiment = { window = \"4s\", worse_by = \"50%\" }\n",
    ));
    let load = Load::start(&lab.ns);
    lab.wait_for(&mut agent, "applied", None, 0);
    // The change is followed by four more connections losing packets: the target got worse.
    // (More loss on one connection would not do: congestion control slows it down, and the
    // retransmit rate may even fall.)
    let more: Vec<Load> = (1..5).map(|i| Load::on(&lab.ns, PORT + i)).collect();
    let journal = lab.wait_for(&mut agent, "reverted", Some("experiment"), 0);
    let r = journal.iter().find(|r| r["outcome"] == "reverted").unwrap();
    let (before, after) = (
        r["experiment"]["before"]["value"].as_f64().unwrap(),
        r["experiment"]["after"]["value"].as_f64().unwrap(),
    );
    assert!(
        after > before * 1.5,
        "before {before}/s, after {after}/s: {r}"
    );
    assert_eq!(lab.sysctl(), lab.original);
    drop((load, more));
    assert!(agent.signal(libc::SIGTERM).success());
}

#[test]
fn enforce_is_refused_from_a_config_others_can_write() {
    require_root!();
    let lab = Lab::new(0);
    let config = lab.config("mode = \"enforce\"\n");
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&config, fs::Permissions::from_mode(0o666)).unwrap();
    let out = observer::run(&["run", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("writable by everyone") && err.contains("chmod go-w"),
        "{err}"
    );
}

/// The audit records reach the collector as OTLP log records. The agent runs on the host here
/// (rotel listens on the host's loopback), in dry-run, so nothing is changed; the retransmits
/// still come from the namespace (the tracepoint sees every namespace).
#[test]
fn decisions_are_exported_as_otlp_log_records() {
    require_root!();
    let bin = rotel::find_binary().unwrap_or_else(|e| panic!("{e}"));
    let lab = Lab::new(5);
    let collector = rotel::Rotel::start(&bin, &lab.dir, "rotel", rotel::free_ports());
    let config = lab.config("mode = \"dry-run\"\n");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        text.replace(
            "[tuning]",
            &format!(
                "[otlp]\nendpoint = \"{}\"\n\n[tuning]",
                collector.grpc_endpoint()
            ),
        ),
    )
    .unwrap();
    let log = fs::File::create(lab.dir.join("agent.log.host")).unwrap();
    let child = observer::command()
        .args(["-v", "run", "--socket", "", "--config"])
        .arg(&config)
        // Host loopback: keep clear of a Prometheus another test or service may run.
        .args(["--prometheus-listen", "127.0.0.1:0"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start observer run");
    let mut agent = Agent {
        child: Some(child),
        log: lab.dir.join("agent.log.host"),
    };
    let load = Load::start(&lab.ns);
    lab.wait_for(&mut agent, "dry_run", None, 0);
    let exports = collector.wait_for_logs("the dry-run decision", Duration::from_secs(20), |e| {
        e.iter()
            .flat_map(|e| &e.records)
            .any(|r| r.attr("observer.outcome") == Some("Str(dry_run)"))
    });
    let export = exports
        .iter()
        .find(|e| {
            e.records
                .iter()
                .any(|r| r.attr("observer.outcome") == Some("Str(dry_run)"))
        })
        .unwrap();
    assert_eq!(export.resource_attr("service.name"), Some("Str(observer)"));
    let r = export
        .records
        .iter()
        .find(|r| r.attr("observer.outcome") == Some("Str(dry_run)"))
        .unwrap();
    let journal = lab.journal();
    let j = journal.iter().find(|j| j["outcome"] == "dry_run").unwrap();
    assert_eq!(r.event_name.as_deref(), Some("observer.tuning.decision"));
    assert_eq!(r.severity_text, "INFO");
    let id = format!("Str({})", j["id"].as_str().unwrap());
    assert_eq!(r.attr("observer.decision.id"), Some(id.as_str()));
    assert_eq!(r.attr("observer.rule"), Some("Str(retransmits)"));
    assert_eq!(
        r.attr("observer.knob"),
        Some("Str(sysctl net.core.somaxconn)")
    );
    assert_eq!(
        r.attr("observer.after"),
        Some(format!("Str({TUNED})").as_str())
    );
    assert!(
        r.body.contains("rule retransmits fire host: dry_run"),
        "{}",
        r.body
    );
    drop(load);
    let status = agent.signal(libc::SIGTERM);
    assert!(status.success(), "{status}");
}

/// An I/O scheduler action on a loop device the test creates: the rule watches the host's
/// block I/O rate (direct reads on the loop device make it cross the threshold) and names the
/// device, so no other disk is ever touched. Enforced, then undone when the reads stop.
#[test]
fn io_scheduler_of_a_loop_device_is_set_and_restored() {
    require_root!();
    let dev = observer_tests::blockdev::LoopDevice::create(64).expect("create a loop device");
    let (offered, original) = dev.schedulers().unwrap();
    let Some(other) = offered.iter().find(|s| **s != original).cloned() else {
        panic!("{} offers only {original}: nothing to switch to", dev.name);
    };
    let lab = Lab::new(0);
    let config = lab.dir.join("observer.toml");
    fs::write(
        &config,
        format!(
            "[agent]\ninterval = \"1s\"\nsignals = [\"blockio\"]\n\n\
             [tuning]\njournal = \"{d}/actions.jsonl\"\nstate = \"{d}/managed.json\"\n\n\
             [[rules]]\nname = \"busy-disk\"\nsignal = \"blockio\"\nstatistic = \"rate\"\n\
             above = 2000\nclear_below = 100\nwindow = \"2s\"\nclear_for = \"2s\"\n\
             mode = \"enforce\"\n\
             actions = [{{ type = \"io_scheduler\", device = \"{name}\", scheduler = \"{other}\" }}]\n",
            d = lab.dir.display(),
            name = dev.name,
        ),
    )
    .unwrap();
    let log = fs::File::create(lab.dir.join("agent.log.io")).unwrap();
    let child = observer::command()
        .args(["-v", "run", "--socket", "", "--config"])
        .arg(&config)
        .args(["--prometheus-listen", "127.0.0.1:0"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start observer run");
    let mut agent = Agent {
        child: Some(child),
        log: lab.dir.join("agent.log.io"),
    };
    // Direct 4 KiB reads until the change is seen.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = {
        let stop = stop.clone();
        let f = dev.open_direct().unwrap();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                observer_tests::blockdev::direct_reads(&f, 2000, 4096, 32 << 20).unwrap();
            }
        })
    };
    let journal = lab.wait_for(&mut agent, "applied", None, 0);
    let r = journal.iter().find(|r| r["outcome"] == "applied").unwrap();
    assert_eq!(
        r["knob"],
        format!("io_scheduler {}", dev.name).as_str(),
        "{r}"
    );
    assert_eq!(r["before"], original.as_str());
    assert_eq!(r["after"], other.as_str());
    assert_eq!(dev.schedulers().unwrap().1, other);
    stop.store(true, Ordering::Relaxed);
    reads.join().unwrap();
    lab.wait_for(&mut agent, "rolled_back", Some("clear"), 0);
    assert_eq!(dev.schedulers().unwrap().1, original);
    assert!(agent.signal(libc::SIGTERM).success(), "{}", lab.log());
}

/// A per-cgroup rule names the offending cgroup, and its cgroup action plans a change of that
/// cgroup's cpu.weight: a cgroup the test creates, with a load generator waking a thousand
/// times a second inside. Dry-run, because other cgroups of the machine may cross the
/// threshold too. Where the cpu controller is not on cgroup v2 (this development VM mixes v1
/// and v2), the decision fails with the reason and the fix; otherwise it shows the current
/// weight and the planned one.
#[test]
fn cgroup_action_targets_the_offending_cgroup() {
    require_root!();
    let mut cgroups = observer_tests::cgroup::TestCgroups::new().expect("cgroup v2");
    let cg = cgroups.create("busy").unwrap();
    let lab = Lab::new(0);
    let config = lab.dir.join("observer.toml");
    fs::write(
        &config,
        format!(
            "[agent]\ninterval = \"1s\"\nsignals = [\"runqueue\"]\n\n\
             [tuning]\njournal = \"{d}/actions.jsonl\"\nstate = \"{d}/managed.json\"\n\n\
             [[rules]]\nname = \"busy-cgroup\"\nsignal = \"runqueue\"\nstatistic = \"rate\"\n\
             per = \"cgroup\"\nabove = 200\nwindow = \"2s\"\nmode = \"dry-run\"\n\
             actions = [{{ type = \"cgroup\", file = \"cpu.weight\", value = 50 }}]\n",
            d = lab.dir.display(),
        ),
    )
    .unwrap();
    let log = fs::File::create(lab.dir.join("agent.log.cg")).unwrap();
    let child = observer::command()
        .args(["-v", "run", "--socket", "", "--config"])
        .arg(&config)
        .args(["--prometheus-listen", "127.0.0.1:0"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start observer run");
    let mut agent = Agent {
        child: Some(child),
        log: lab.dir.join("agent.log.cg"),
    };
    let mut cmd = observer_tests::loadgen_cmd(env!("CARGO_BIN_EXE_observer-loadgen"));
    cmd.args(["wake", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _load = observer_tests::ChildGuard::new(cgroups.spawn_in(&cg, &mut cmd).unwrap());
    let target = format!("cgroup {} (id {})", cg.path, cg.id);
    let start = Instant::now();
    let record = loop {
        let journal = lab.journal();
        if let Some(r) = journal.iter().find(|r| r["target"] == target.as_str()) {
            break r.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no decision about {target}: {journal:#?}\n{}",
            lab.log()
        );
        thread::sleep(Duration::from_millis(200));
    };
    let controllers = fs::read_to_string(cgroups.mount.join("cgroup.controllers")).unwrap();
    if controllers.split_whitespace().any(|c| c == "cpu") {
        assert_eq!(record["outcome"], "dry_run", "{record}");
        assert_eq!(
            record["knob"],
            format!("cgroup {} cpu.weight", cg.dir.display()).as_str()
        );
        assert_eq!(record["after"], "50");
    } else {
        assert_eq!(record["outcome"], "failed", "{record}");
        let message = record["message"].as_str().unwrap();
        assert!(message.contains("cpu"), "{message}");
        eprintln!("no cpu controller on cgroup v2 here; the decision says: {message}");
    }
    assert!(agent.signal(libc::SIGTERM).success(), "{}", lab.log());
}
