//! `observer top` in a real terminal: tmux runs it under scheduler load, and the test reads the
//! screen with `capture-pane`, presses keys and checks that `q` leaves the terminal intact. With
//! an agent (`observer run`) serving its socket, `top` reads from it instead of loading the
//! programs, and refuses, saying why, when it may not (not root).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use observer_tests::{
    ChildGuard, bpf_links, observer, require_root, rotel::TempDir, skip_or_fail, unique_name,
};

const LOADGEN: &str = env!("CARGO_BIN_EXE_observer-loadgen");

/// A detached tmux session, killed (by its name, only it) when the test ends.
struct Session(String);

impl Session {
    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run tmux {args:?}: {e}"))
    }

    fn capture(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-t", &self.0]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        self.tmux(&["send-keys", "-t", &self.0, keys]);
    }

    /// Waits until the screen satisfies `ok`, and returns it (or the last one seen).
    fn wait_for(&self, timeout: Duration, ok: impl Fn(&str) -> bool) -> (bool, String) {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if ok(&screen) || start.elapsed() > timeout {
                return (ok(&screen), screen);
            }
            sleep(Duration::from_millis(200));
        }
    }
}

impl Session {
    /// `script` (a shell command line) in a new detached session of `width` x `height`.
    fn start(width: u16, height: u16, script: &str) -> Self {
        let session = Session(unique_name("observer-top"));
        let out = session.tmux(&[
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "-s",
            &session.0,
            script,
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        session
    }

    /// The pid of the first child of the session's shell: the command the script runs.
    fn command_pid(&self) -> Option<u32> {
        let out = self.tmux(&["display-message", "-p", "-t", &self.0, "#{pane_pid}"]);
        let shell = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let children = fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

/// The run-queue row of the summary: `1 runqueue <events/s> <p50> <p99> ...`.
fn runqueue_row(screen: &str) -> Option<Vec<String>> {
    screen.lines().find(|l| l.contains("1 runqueue")).map(|l| {
        l.trim_matches(|c: char| c == '│' || c.is_whitespace())
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    })
}

/// An events/s cell: `87`, `9.99`, `87.2k`, `1.20M`.
fn rate(s: &str) -> Option<f64> {
    let (number, scale) = match s.strip_suffix('k') {
        Some(n) => (n, 1e3),
        None => match s.strip_suffix('M') {
            Some(n) => (n, 1e6),
            None => (s, 1.0),
        },
    };
    number.parse::<f64>().ok().map(|v| v * scale)
}

fn has_unit(s: &str) -> bool {
    ["ns", "us", "ms", "s"].iter().any(|u| s.ends_with(u))
        && s.starts_with(|c: char| c.is_ascii_digit())
}

#[test]
fn top_shows_live_runqueue_load_switches_views_and_quits_cleanly() {
    require_root!();
    if Command::new("tmux").arg("-V").output().is_err() {
        skip_or_fail!("tmux is not installed (apt-get install tmux)");
    }
    let bin = observer::bin();
    assert!(
        bin.exists(),
        "observer binary not found at {}",
        bin.display()
    );
    // No agent serves this socket: top loads the programs itself.
    let dir = TempDir::new("top-local");
    let socket = dir.0.join("observer.sock");
    // After observer exits, the shell prints the terminal's width and a marker: proof that the
    // terminal works again (raw mode off, main screen back) and how observer exited.
    let script = format!(
        "{} top --interval 1s --socket {}; echo \"exit=$?\"; stty -a | grep -o -- '-\\?icanon' ; echo done; sleep 30",
        bin.display(),
        socket.display()
    );
    let session = Session::start(120, 40, &script);

    let load = observer_tests::loadgen_cmd(LOADGEN)
        .args(["sched", "8"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start load generator");
    let _load = observer_tests::ChildGuard::new(load);

    let (ok, screen) = session.wait_for(Duration::from_secs(15), |s| {
        runqueue_row(s).is_some_and(|r| {
            r.len() >= 5 && rate(&r[2]).is_some_and(|v| v > 0.0) && has_unit(&r[4])
        })
    });
    eprintln!("{screen}");
    if !ok && screen.contains("observer:") {
        skip_or_fail!("observer top could not start: {screen}");
    }
    assert!(ok, "no run-queue rate and p99 on screen:\n{screen}");
    assert!(
        screen.contains("programs loaded by this process"),
        "{screen}"
    );
    assert!(screen.contains("by processes"), "{screen}");

    session.keys("2");
    let (ok, screen) = session.wait_for(Duration::from_secs(5), |s| {
        s.contains("blockio histogram") && s.contains("disks x ops")
    });
    assert!(ok, "2 did not switch to blockio:\n{screen}");
    session.keys("5");
    let (ok, screen) = session.wait_for(Duration::from_secs(5), |s| s.contains("futex histogram"));
    assert!(ok, "5 did not switch to futex:\n{screen}");
    session.keys("?");
    let (ok, screen) = session.wait_for(Duration::from_secs(5), |s| s.contains("pause / resume"));
    assert!(ok, "? did not show the help:\n{screen}");
    session.keys("Escape");

    session.keys("q");
    let (ok, screen) = session.wait_for(Duration::from_secs(10), |s| s.contains("done"));
    eprintln!("{screen}");
    assert!(ok, "observer top did not exit on q:\n{screen}");
    assert!(screen.contains("exit=0"), "observer top failed:\n{screen}");
    // Canonical mode is back on (raw mode turns it off), and the UI is gone from the screen.
    assert!(
        screen.lines().any(|l| l.trim() == "icanon"),
        "terminal left in raw mode:\n{screen}"
    );
    assert!(
        !screen.contains("p99 history"),
        "alternate screen not left:\n{screen}"
    );
}

#[test]
fn top_without_a_terminal_points_to_record() {
    require_root!();
    let out = observer::run(&["top"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "observer top succeeded without a terminal"
    );
    assert!(
        stderr.contains("needs a terminal") && stderr.contains("observer record"),
        "{stderr}"
    );
}

/// `observer -v run --config FILE` in the background, its log in a file; killed (by its pid)
/// if the test ends first.
struct Agent {
    child: ChildGuard,
    log: PathBuf,
}

impl Agent {
    fn start(config: &Path, log: &Path) -> Self {
        let mut cmd = observer::command();
        cmd.args(["-v", "run", "--config"]).arg(config);
        // Only the file configures it: no OTLP endpoint or log filter from the environment.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).expect("the agent's log file"));
        let child = cmd.spawn().expect("start observer run");
        Self {
            child: ChildGuard::new(child),
            log: log.to_owned(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the agent says it is collecting (its socket is up by then); `Err` with its
    /// log when it exits instead.
    fn ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let child = self.child.0.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Err(format!("observer run exited ({status}): {}", self.log()));
            }
            if self.log().contains(" collecting") {
                return Ok(());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "observer run did not start collecting within 30 s: {}",
                self.log()
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then its exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.0.take().expect("running");
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        child.wait().expect("wait for observer run")
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A run-queue row with a rate above zero and a p99 with its unit.
fn runqueue_loaded(screen: &str) -> bool {
    runqueue_row(screen)
        .is_some_and(|r| r.len() >= 5 && rate(&r[2]).is_some_and(|v| v > 0.0) && has_unit(&r[4]))
}

#[test]
fn top_reads_from_a_running_agent_and_refuses_clients_that_are_not_root() {
    require_root!();
    if Command::new("tmux").arg("-V").output().is_err() {
        skip_or_fail!("tmux is not installed (apt-get install tmux)");
    }
    let bin = observer::bin();
    let dir = TempDir::new("top-agent");
    // The socket's directory does not exist yet: the agent creates it. Prometheus on a port of
    // its choosing, so nothing else on the machine is in the way.
    let socket = dir.0.join("run").join("observer.sock");
    let config = dir.0.join("observer.toml");
    fs::write(
        &config,
        format!(
            "[agent]\ninterval = \"1s\"\nsocket = \"{}\"\n\n[prometheus]\nlisten = \
             \"127.0.0.1:0\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let mut agent = Agent::start(&config, &dir.0.join("agent.log"));
    if let Err(e) = agent.ready() {
        skip_or_fail!("the agent could not start: {e}");
    }
    assert_eq!(
        mode(socket.parent().unwrap()),
        0o700,
        "the socket's directory"
    );
    assert_eq!(mode(&socket), 0o600, "the socket");

    let load = observer_tests::loadgen_cmd(LOADGEN)
        .args(["sched", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start load generator");
    let _load = ChildGuard::new(load);

    // 1. top reads from the agent: says so, shows the load, loads nothing itself.
    let session = Session::start(
        80,
        24,
        &format!(
            "{} top --socket {}; echo \"exit=$?\"; echo done; sleep 30",
            bin.display(),
            socket.display()
        ),
    );
    let source = format!("source: agent pid {}", agent.pid());
    let (ok, screen) = session.wait_for(Duration::from_secs(20), |s| {
        s.contains(&source) && runqueue_loaded(s)
    });
    eprintln!("observer top reading from the agent, at 80x24:\n{screen}");
    assert!(
        ok,
        "no `{source}` and run-queue load on screen:\n{screen}\nagent log:\n{}",
        agent.log()
    );
    let top = session.command_pid().expect("the pid of observer top");
    assert_eq!(bpf_links(top), 0, "top attached programs of its own");
    assert!(bpf_links(agent.pid()) > 0, "the agent holds no BPF links");
    // Drilling into the busiest process works on the agent's data too: its summary at the
    // bottom, its own histogram on the left (titled with its name, maybe cut short).
    session.keys("Enter");
    let (ok, screen) = session.wait_for(Duration::from_secs(5), |s| {
        let lines: Vec<&str> = s.lines().collect();
        let Some(name) = lines
            .iter()
            .find_map(|l| l.strip_prefix("> ")?.split(": ").next())
        else {
            return false;
        };
        let start: String = name.chars().take(20).collect();
        lines
            .iter()
            .any(|l| l.starts_with("┌ ") && l.contains(&start))
    });
    assert!(ok, "Enter did not drill into a row:\n{screen}");
    session.keys("q");
    let (ok, screen) = session.wait_for(Duration::from_secs(10), |s| s.contains("done"));
    assert!(
        ok && screen.contains("exit=0"),
        "top did not quit cleanly:\n{screen}"
    );

    // 2. --local loads the programs in top even with the agent there.
    let session = Session::start(
        100,
        30,
        &format!(
            "{} top --local --socket {}; echo \"exit=$?\"; echo done; sleep 30",
            bin.display(),
            socket.display()
        ),
    );
    let (ok, screen) = session.wait_for(Duration::from_secs(20), |s| {
        s.contains("source: programs loaded by this process") && runqueue_loaded(s)
    });
    assert!(ok, "--local did not load the programs:\n{screen}");
    session.keys("q");
    let (ok, screen) = session.wait_for(Duration::from_secs(10), |s| s.contains("done"));
    assert!(
        ok && screen.contains("exit=0"),
        "top --local did not quit:\n{screen}"
    );

    // 3. A terminal that goes away (tmux session killed, ssh connection lost) ends top too.
    let session = Session::start(
        80,
        24,
        &format!(
            "{} top --socket {}; sleep 30",
            bin.display(),
            socket.display()
        ),
    );
    let (ok, screen) = session.wait_for(Duration::from_secs(20), |s| s.contains(&source));
    assert!(ok, "top did not start:\n{screen}");
    let top = session.command_pid().expect("the pid of observer top");
    drop(session);
    let gone = || {
        fs::read_to_string(format!("/proc/{top}/stat")).map_or(true, |stat| {
            stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z'))
        })
    };
    let start = Instant::now();
    while !gone() && start.elapsed() < Duration::from_secs(5) {
        sleep(Duration::from_millis(50));
    }
    if !gone() {
        // SAFETY: kill(2) on the process this test started, so that it does not outlive it.
        unsafe { libc::kill(top as libc::pid_t, libc::SIGKILL) };
        panic!("observer top (pid {top}) kept running after its terminal went away");
    }

    // 4. Not root: the directory (0700) and the socket (0600) keep other users out...
    let as_nobody = || {
        Session::start(
            250,
            10,
            &format!(
                "setpriv --reuid=65534 --regid=65534 --clear-groups {} top --socket {}; echo \
                 \"exit=$?\"; sleep 30",
                bin.display(),
                socket.display()
            ),
        )
    };
    let session = as_nobody();
    let (ok, screen) = session.wait_for(Duration::from_secs(10), |s| s.contains("exit="));
    eprintln!("observer top as nobody:\n{screen}");
    assert!(ok && screen.contains("exit=1"), "{screen}");
    assert!(
        screen.contains(&format!(
            "cannot connect to the observer agent at {}: permission denied; only root may read \
             from the agent",
            socket.display()
        )),
        "{screen}"
    );
    // ... and past them, the agent checks the client's uid itself (SO_PEERCRED).
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(socket.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).unwrap();
    let session = as_nobody();
    let (ok, screen) = session.wait_for(Duration::from_secs(10), |s| s.contains("exit="));
    eprintln!("observer top as nobody, the socket open to all:\n{screen}");
    assert!(ok && screen.contains("exit=1"), "{screen}");
    assert!(
        screen.contains(
            "refused: only root may read from the observer agent, and this client runs as uid \
             65534"
        ),
        "{screen}"
    );
    assert!(
        agent
            .log()
            .contains("refused an observer top client running as uid 65534"),
        "{}",
        agent.log()
    );

    // 5. The agent removes its socket when it stops.
    let status = agent.terminate();
    assert!(status.success(), "observer run exited with {status}");
    assert!(!socket.exists(), "the socket outlived the agent");
}
