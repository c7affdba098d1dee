//! The agent, `observer -v run`, in the background for the end-to-end tests: its stderr
//! collected, its resident memory sampled over time, signals sent to it, and (when started
//! [`Agent::with_prometheus`]) its own Prometheus endpoint read directly (no Prometheus server:
//! the tests want the agent's values at an instant). Killed (by its pid) on drop.

use std::{
    fs,
    io::Read,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    process::{Child, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::Exited;

pub struct Agent {
    args: Vec<String>,
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
    started: Instant,
    /// Where its Prometheus endpoint listens, when the test chose the port.
    prometheus: Option<SocketAddr>,
    /// `(seconds since start, VmRSS kB)` of every [`Agent::sample_rss`].
    pub rss: Vec<(f64, u64)>,
}

/// The `service.instance.id` an agent must export on this machine, computed apart from it, with
/// Python's uuid module: the UUID v5 of /etc/machine-id (the host name without one), followed by
/// a space and the scope as `observer.scope` shows it for a scoped agent, in the namespace the
/// semantic conventions give. Never the machine id itself, which stays private.
pub fn instance_id(scope: Option<&str>) -> String {
    let read = |path: &str| fs::read_to_string(path).map(|s| s.trim().to_owned());
    let machine = read("/etc/machine-id")
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| read("/proc/sys/kernel/hostname").expect("the host name"));
    let name = match scope {
        Some(scope) => format!("{machine} {scope}"),
        None => machine.clone(),
    };
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, uuid; \
             print(uuid.uuid5(uuid.UUID('4d63009a-8d0f-11ee-aad7-4c796ed8e320'), sys.argv[1]))",
            &name,
        ])
        .output()
        .expect("python3 (rotel's own dependency)");
    assert!(out.status.success(), "python3: {out:?}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        id.len() == 36 && !id.replace('-', "").contains(&machine),
        "{id}"
    );
    id
}

/// A loopback address with a port free right now.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
}

impl Agent {
    /// Starts `observer -v run <args> --socket ""` with `env`, and without any `OTEL_*` or
    /// `RUST_LOG` variable of the test's own environment (`-v` gives the info log that says when
    /// it is collecting). Tests run agents side by side, and only one may serve the local
    /// socket: these serve none (tests/top.rs tests the socket).
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(args, env, None)
    }

    /// [`Agent::start`] with `--prometheus-listen` on a free loopback port, for
    /// [`Agent::scrape`].
    pub fn with_prometheus(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(args, env, Some(free_addr()))
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], prometheus: Option<SocketAddr>) -> Self {
        let mut full = vec!["-v".to_string(), "run".to_string()];
        full.extend(args.iter().map(|a| a.to_string()));
        if let Some(addr) = prometheus {
            full.extend(["--prometheus-listen".into(), addr.to_string()]);
        }
        full.extend(["--socket".to_string(), String::new()]);
        let mut cmd = crate::observer::command();
        cmd.args(&full);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env_remove("RUST_LOG");
        cmd.envs(env.iter().copied());
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start observer {full:?}: {e}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        eprintln!("started observer {full:?} {env:?} (pid {})", child.id());
        Self {
            args: full,
            child: Some(child),
            stderr,
            reader: Some(reader),
            started: Instant::now(),
            prometheus,
            rss: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent already exited").id()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    fn exited(&mut self, status: ExitStatus) -> Exited {
        self.child = None;
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
        Exited {
            args: self.args.clone(),
            status,
            stderr: self.stderr_text(),
        }
    }

    /// Waits until the agent has loaded and attached its programs, taken its first reading and
    /// installed its signal handlers: its info log then says `collecting`. `Err` when it exited
    /// instead (it cannot run here: no BPF, not root...).
    pub fn ready(mut self) -> Result<Self, Exited> {
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(self.exited(status));
            }
            if self.stderr_text().contains(" collecting") {
                eprintln!("observer collecting after {:.2?}", self.started.elapsed());
                return Ok(self);
            }
            assert!(
                self.started.elapsed() < Duration::from_secs(30),
                "observer {:?} did not start collecting within 30 s; stderr:\n{}",
                self.args,
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails the test if the agent has exited (crashed).
    pub fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            let exited = self.exited(status);
            panic!("the agent exited {when}: {exited}");
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        crate::signal_child(self.pid(), sig);
    }

    /// A `kB` field of /proc/<pid>/status: VmRSS (resident now), VmHWM (peak resident).
    pub fn status_kb(&self, key: &str) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{}/status", self.pid()))
    }

    /// VmRSS now, in kB, also recorded in [`Agent::rss`].
    pub fn sample_rss(&mut self) -> u64 {
        let kb = self.status_kb("VmRSS");
        self.rss.push((self.started.elapsed().as_secs_f64(), kb));
        kb
    }

    /// Sleeps `d`, checking every 100 ms that the agent still runs and sampling its memory.
    pub fn run_for(&mut self, d: Duration, when: &str) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.assert_running(when);
            self.sample_rss();
            std::thread::sleep(Duration::from_millis(100).min(end - Instant::now()));
        }
    }

    /// The highest VmRSS sampled at or after `from` seconds since start.
    pub fn max_rss_since(&self, from: f64) -> u64 {
        self.rss
            .iter()
            .filter(|(t, _)| *t >= from)
            .map(|(_, kb)| *kb)
            .max()
            .unwrap_or(0)
    }

    /// Seconds since the agent was started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// User + system CPU time used so far (all threads), from /proc/<pid>/stat.
    pub fn cpu_time(&self) -> Duration {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // After "pid (comm) ": state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Duration::from_secs_f64(ticks as f64 / hz)
    }

    /// One scrape of the agent's own `/metrics` (text format), parsed.
    pub fn scrape(&self) -> Vec<Sample> {
        let addr = self
            .prometheus
            .expect("scrape needs an agent started with Agent::with_prometheus");
        let (status, _, body) = crate::prom::http_get(addr, "/metrics", None)
            .unwrap_or_else(|e| panic!("scraping the agent: {e}"));
        assert_eq!(status, 200, "scraping the agent: HTTP {status}");
        parse_text(&String::from_utf8_lossy(&body))
    }

    /// SIGTERM, then waits at most `limit` for the agent to exit (killing it after): its exit
    /// status, how long it took, and its whole stderr.
    pub fn terminate(mut self, limit: Duration) -> (ExitStatus, Duration, String) {
        self.signal(libc::SIGTERM);
        let sent = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let took = sent.elapsed();
                let stderr = self.exited(status).stderr;
                eprintln!("observer exited {took:.2?} after SIGTERM ({status})");
                return (status, took, stderr);
            }
            if sent.elapsed() > limit {
                let _ = self.child.as_mut().unwrap().kill();
                panic!(
                    "observer still running {limit:?} after SIGTERM (killed it); stderr:\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM: the agent must exit 0 within 15 s. Returns its stderr.
    pub fn terminate_ok(self) -> String {
        let (status, _, stderr) = self.terminate(Duration::from_secs(15));
        assert!(
            status.success(),
            "observer exited with {status} after SIGTERM, expected 0; stderr:\n{stderr}"
        );
        stderr
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One sample of the Prometheus text format: `name{labels} value`.
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of `name` whose labels include every `(key, value)` of `labels`.
pub fn select<'a>(
    samples: &'a [Sample],
    name: &'a str,
    labels: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = &'a Sample> + 'a {
    samples
        .iter()
        .filter(move |s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
}

/// The value of the one sample of `name` with `labels`, `None` when there is none.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = select(samples, name, labels).collect();
    assert!(
        found.len() <= 1,
        "{name}{labels:?}: {} samples, expected one: {found:?}",
        found.len()
    );
    found.first().map(|s| s.value)
}

/// Parses the Prometheus text exposition format (what the agent serves; label values with
/// `\"`, `\\` and `\n` escapes).
pub fn parse_text(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|e| panic!("{line:?}: {e}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), Vec::new()),
            Some((name, rest)) => (name.to_owned(), parse_labels(rest.trim_end_matches('}'))),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        assert_eq!(
            chars.next(),
            Some('"'),
            "label {key} without a quoted value"
        );
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                c => value.push(c),
            }
        }
        out.push((key.trim_start_matches(',').to_owned(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_samples_and_escaped_labels() {
        let s = parse_text(
            "# HELP x y\n# TYPE a counter\na_total{k=\"v\",q=\"a\\\"b,c\"} 3\nb 1.5\nc{le=\"+Inf\"} 7\n",
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "a_total");
        assert_eq!(
            s[0].labels,
            [("k".into(), "v".into()), ("q".into(), "a\"b,c".into())]
        );
        assert_eq!(s[0].value, 3.0);
        assert_eq!((s[1].name.as_str(), s[1].value), ("b", 1.5));
        assert_eq!(s[2].label("le"), Some("+Inf"));
        assert_eq!(value(&s, "c", &[]), Some(7.0));
    }
}
