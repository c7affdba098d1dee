//! `cargo xtask soak`: the release agent run for a long time (an hour by default) with every
//! signal, a 1 s interval, OTLP export to a real collector (rotel) that is stopped and restarted
//! now and then, its Prometheus endpoint and local socket read every few seconds and a rule in
//! dry-run, under a mixed load that cycles through the signals' workloads. Every `--every`
//! seconds the agent's RSS, CPU time, open fds, threads and its own counters are appended to
//! soak/soak.csv; at the end SOAK.md summarises them (is memory flat, are fds flat).
//!
//! Everything it makes (processes, loop device, network namespace, cgroups, temporary files) is
//! removed when it ends, fails or is stopped with Ctrl-C (SIGINT) or SIGTERM. The children run in
//! process groups of their own, so a Ctrl-C at the terminal reaches only the soak, which then
//! stops them in order.
//!
//! Small pieces are duplicated from bench.rs (the HTTP scrape, /proc/PID/stat parsing, the loop
//! device) rather than shared, so the two commands can change independently.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{Cmd, is_root};
use crate::host::{CgroupDir, CpuTicks, LoopDevice, load_average, remove_cgroup};
use crate::setup::{self, Scope};
use crate::tasks::{self, Profile};

/// Each workload of the cycle runs this long, then the next starts.
const PHASE: Duration = Duration::from_secs(20);
/// The collector runs this long, then is down for [`OUTAGE`], again and again.
const COLLECTOR_UP: Duration = Duration::from_secs(120);
/// Longer than the agent's queue holds at a 1 s interval ([`QUEUE`] batches), so every outage
/// makes it drop (and count) batches.
const OUTAGE: Duration = Duration::from_secs(45);
const QUEUE: u32 = 16;
/// How often Prometheus is scraped and the socket read (the samples also scrape).
const SCRAPE_EVERY: Duration = Duration::from_secs(3);
/// Size of the loop device's backing file (sparse, so reads are served from memory).
const LOOP_BYTES: u64 = 256 << 20;
/// Cgroups made per burst (one burst a second during the cgroup phase), each running
/// `perf bench sched messaging` (40 short-lived processes) and removed when it is done.
const CGROUPS_PER_BURST: usize = 8;
/// Threads creating and unlinking files in one directory during the lock phase (the
/// directory's i_rwsem is the contended lock).
const LOCK_THREADS: usize = 6;
/// The fio direct random reads of the block I/O phase; `--filename` and `--runtime` are added.
const FIO: [&str; 9] = [
    "fio",
    "--name=observer-soak",
    "--direct=1",
    "--rw=randread",
    "--bs=4k",
    "--ioengine=psync",
    "--time_based",
    "--norandommap",
    "--output=/dev/null",
];
/// Tools the workloads run, and their Debian packages (packages.rs installs perf, nft and ip).
const TOOLS: [(&str, &str); 1] = [("/usr/bin/fio", "fio")];

/// The TCP phase, run with python3 inside the soak's network namespace, whose nftables rule
/// drops 3% of data packets to port 5201: a server on every loopback address and a client that
/// sends 1 s bulk transfers to a different 127.x.y.1 address each time (the remote breakdown
/// sees many peers). Argument: seconds to run.
const TCP_LOAD: &str = r#"
import socket, sys, threading, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 5201))
srv.listen(128)
def drain(c):
    while c.recv(1 << 16):
        pass
    c.close()
def serve():
    while True:
        c, _ = srv.accept()
        threading.Thread(target=drain, args=(c,), daemon=True).start()
threading.Thread(target=serve, daemon=True).start()
end = time.time() + float(sys.argv[1])
buf = b"x" * (1 << 16)
n = 0
while time.time() < end:
    n += 1
    s = socket.create_connection(("127.%d.%d.1" % (n // 250 % 250, n % 250 + 1), 5201))
    stop = time.time() + 1
    while time.time() < stop:
        s.sendall(buf)
    s.close()
"#;

pub fn run(root: &Path, duration: Duration, every: Duration) -> Result<()> {
    if !is_root()? {
        bail!(
            "the soak loads BPF programs, attaches a loop device and makes a network namespace \
             and cgroups, which needs root: rerun as root"
        );
    }
    if every.is_zero() || every > duration {
        bail!("--every must be above 0 and at most --duration");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the SIGINT/SIGTERM handler")?;
    }
    setup::run(root, Scope::Full)?;
    tasks::build(root, Profile::Release)?;
    ensure_tools()?;
    let binary = tasks::observer_binary(root, Profile::Release);
    let work = WorkDir::create()?;
    let rotel_bin = rotel_binary()?;
    let (grpc, http) = (free_port()?, free_port()?);
    let mut collector = Collector::start(&rotel_bin, &work.0, grpc, http)?;
    let prometheus = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let socket = work.0.join("observer.sock");
    let mut agent = Agent::start(&binary, &work.0, grpc, prometheus, &socket)?;
    let mut load = Load::new()?;

    let out_dir = root.join("soak");
    fs::create_dir_all(&out_dir)?;
    let csv_path = out_dir.join("soak.csv");
    let mut csv =
        fs::File::create(&csv_path).with_context(|| format!("creating {}", csv_path.display()))?;
    let first = agent.first_collection()?;
    let columns: Vec<String> = first.keys().filter(|k| tracked(k)).cloned().collect();
    writeln!(
        csv,
        "seconds,phase,collector_up,rss_kb,cpu_seconds,fds,threads,machine_busy_percent,\
         load1,{}",
        columns
            .iter()
            .map(|c| csv_quote(c))
            .collect::<Vec<_>>()
            .join(",")
    )?;

    println!(
        "==> soak for {} s: sampling every {} s into {}",
        duration.as_secs(),
        every.as_secs(),
        csv_path.display()
    );
    let started = Instant::now();
    let load_before = load_average()?;
    let mut samples = Vec::new();
    let mut machine = MachineCpu::read()?;
    let (mut next_sample, mut next_scrape) = (Duration::ZERO, Duration::ZERO);
    let mut collector_since = Instant::now();
    let (mut outages, mut scrapes, mut socket_reads) = (0u32, 0u64, 0u64);
    let mut failures = Vec::new();
    let mut phase_started = Instant::now();
    load.start(0)?;
    let mut phase = 0;
    while started.elapsed() < duration && !stop.load(Ordering::Relaxed) {
        let now = started.elapsed();
        if let Some(status) = agent.exited()? {
            bail!(
                "observer run exited ({status}) during the soak; its log: {}",
                agent.log()
            );
        }
        if phase_started.elapsed() >= PHASE {
            load.stop();
            phase += 1;
            load.start(phase)?;
            phase_started = Instant::now();
        }
        load.tick()?;
        match &collector {
            Some(_) if collector_since.elapsed() >= COLLECTOR_UP => {
                collector = None;
                collector_since = Instant::now();
                outages += 1;
                println!("  {:>5} s: collector stopped", now.as_secs());
            }
            None if collector_since.elapsed() >= OUTAGE => {
                collector = Collector::start(&rotel_bin, &work.0, grpc, http)?;
                collector_since = Instant::now();
                println!("  {:>5} s: collector restarted", now.as_secs());
            }
            _ => {}
        }
        if now >= next_scrape {
            next_scrape = now + SCRAPE_EVERY;
            match agent.scrape() {
                Ok(_) => scrapes += 1,
                Err(e) => failures.push(format!("{} s: scrape: {e:#}", now.as_secs())),
            }
            match read_socket(&socket) {
                Ok(()) => socket_reads += 1,
                Err(e) => failures.push(format!("{} s: socket: {e:#}", now.as_secs())),
            }
        }
        if now >= next_sample {
            next_sample = now + every;
            let metrics = match agent.scrape() {
                Ok(text) => parse_metrics(&text),
                Err(e) => {
                    failures.push(format!("{} s: sample scrape: {e:#}", now.as_secs()));
                    BTreeMap::new()
                }
            };
            let own = agent.usage()?;
            let busy = machine.busy_percent_since()?;
            let sample = Sample {
                seconds: now.as_secs_f64(),
                phase: load.name(phase),
                collector_up: collector.is_some(),
                own,
                machine_busy: busy,
                load1: load_average()?.0,
                metrics: columns
                    .iter()
                    .map(|c| metrics.get(c).copied().unwrap_or(f64::NAN))
                    .collect(),
            };
            writeln!(csv, "{}", sample.csv_row())?;
            println!(
                "  {:>5} s: rss {} kB, cpu {:.1} s, {} fds, {} threads, machine {:.0}% busy ({})",
                now.as_secs(),
                sample.own.rss_kb,
                sample.own.cpu_seconds,
                sample.own.fds,
                sample.own.threads,
                busy,
                sample.phase
            );
            samples.push(sample);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let interrupted = stop.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    load.stop();
    let hwm_kb = agent.status_kb("VmHWM")?;
    let final_metrics = parse_metrics(&agent.scrape()?);
    let (status, log) = agent.terminate()?;
    drop(collector);
    let run = Run {
        elapsed,
        interrupted,
        outages,
        scrapes,
        socket_reads,
        failures,
        load_before,
        load_after: load_average()?,
        hwm_kb,
        status,
        decisions: journal_outcomes(&work.0.join("actions.jsonl")),
        log,
        final_metrics,
        columns,
        samples,
    };
    let summary = run.summary(&binary, every);
    fs::write(root.join("SOAK.md"), &summary)?;
    println!("\n==> SOAK.md\n{summary}");
    if interrupted {
        println!(
            "stopped early (SIGINT/SIGTERM) after {} s",
            elapsed.as_secs()
        );
    }
    Ok(())
}

fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(path, _)| !Path::new(path).is_file())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "the soak needs Debian packages {}; installing them",
        missing.join(" ")
    );
    crate::packages::apt_install(&missing)
}

/// The `rotel-agent` binary inside the installed `rotel` Python package (pip puts it there, not
/// on PATH); python.rs installs the package.
fn rotel_binary() -> Result<PathBuf> {
    let path = Cmd::new(
        "python3",
        &[
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ],
    )
    .query()
    .context("finding rotel-agent in the rotel Python package")?;
    let path = PathBuf::from(path.trim());
    if !path.is_file() {
        bail!(
            "{} is missing: reinstall rotel (pip install rotel)",
            path.display()
        );
    }
    Ok(path)
}

/// A free loopback port, for a server to bind once this listener is closed.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The soak's scratch directory (config, logs, journal, socket), removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("observer-soak-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child in a process group of its own (so a Ctrl-C at the terminal does not reach it),
/// killed when dropped.
struct Background {
    child: Child,
}

impl Background {
    fn spawn(mut command: Command, name: &str) -> Result<Self> {
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("could not start {name}"))?;
        Ok(Self { child })
    }

    fn signal(&self, signal: &str) {
        let _ = Cmd::new("kill", &[signal, &self.child.id().to_string()]).query();
    }
}

impl Drop for Background {
    /// Kills the whole process group: the workloads fork (perf's two pipe ends, fio's job
    /// processes, perf messaging's 40 processes), and the children would outlive their parent.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Cmd::new("kill", &["-KILL", "--", &group]).query();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// rotel on fixed loopback ports, throwing what it receives away; killed when dropped (an
/// outage is a crash of the collector, not a graceful shutdown).
struct Collector(Background);

impl Collector {
    fn start(bin: &Path, dir: &Path, grpc: u16, http: u16) -> Result<Option<Self>> {
        let log = fs::File::create(dir.join("rotel.log"))?;
        let mut command = Command::new(bin);
        command
            .arg("start")
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
            .args(["--exporter", "blackhole"])
            .arg("--log-file")
            .arg(dir.join("rotel.file.log"))
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut collector = Self(Background::spawn(command, "rotel-agent")?);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", grpc)).is_err() {
            if let Some(status) = collector.0.child.try_wait()? {
                bail!(
                    "rotel-agent exited ({status}): {}",
                    fs::read_to_string(dir.join("rotel.log")).unwrap_or_default()
                );
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("rotel-agent does not listen on 127.0.0.1:{grpc} after 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(collector))
    }
}

/// What the agent itself uses, from /proc/PID.
struct Usage {
    rss_kb: u64,
    cpu_seconds: f64,
    fds: usize,
    threads: u64,
}

/// `observer run` with every signal, OTLP to the collector, Prometheus on loopback, the socket
/// in the scratch directory and a rule in dry-run; its standard error goes to a log file.
struct Agent {
    process: Background,
    addr: SocketAddr,
    log: PathBuf,
}

impl Agent {
    fn start(
        binary: &Path,
        dir: &Path,
        grpc: u16,
        prometheus: SocketAddr,
        socket: &Path,
    ) -> Result<Self> {
        let config = dir.join("observer.toml");
        fs::write(
            &config,
            format!(
                r#"[agent]
interval = "1s"
signals = ["runqueue", "blockio", "tcp", "lock", "futex"]
socket = "{socket}"
max_overhead_percent = 0

[otlp]
enabled = true
endpoint = "http://127.0.0.1:{grpc}"
protocol = "grpc"
queue = {QUEUE}
timeout = "2s"

[prometheus]
enabled = true
listen = "{prometheus}"

[tuning]
mode = "dry-run"
journal = "{journal}"
state = "{state}"

[[rules]]
name = "soak-runqueue"
signal = "runqueue"
statistic = "p99"
above = "50us"
for = "5s"
min_interval = "1m"
max_changes_per_hour = 60
actions = [{{ type = "log" }}]

[[rules]]
name = "soak-retransmits"
signal = "tcp"
statistic = "rate"
above = 1
for = "3s"
min_interval = "1m"
max_changes_per_hour = 60
actions = [{{ type = "sysctl", key = "net.core.somaxconn", value = 8192 }}]
"#,
                socket = socket.display(),
                journal = dir.join("actions.jsonl").display(),
                state = dir.join("managed.json").display(),
            ),
        )?;
        Cmd::new(
            &binary.to_string_lossy(),
            &["config", "check", &config.to_string_lossy()],
        )
        .query()
        .context("observer refused the soak's configuration")?;
        let log = dir.join("agent.log");
        let mut command = Command::new(binary);
        command
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OTEL_") {
                command.env_remove(key);
            }
        }
        let mut agent = Self {
            process: Background::spawn(command, "observer run")?,
            addr: prometheus,
            log,
        };
        let start = Instant::now();
        while agent.scrape().is_err() {
            if let Some(status) = agent.exited()? {
                bail!("observer run exited ({status}): {}", agent.log());
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("observer run did not serve /metrics on {prometheus} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(agent)
    }

    /// The series of the first scrape that has the export counters: before its first
    /// collection the agent serves only target_info, and the CSV's columns are fixed from this.
    fn first_collection(&mut self) -> Result<BTreeMap<String, f64>> {
        let start = Instant::now();
        loop {
            let metrics = parse_metrics(&self.scrape()?);
            if metrics
                .keys()
                .any(|k| k.starts_with("observer_export_batches_total{observer_exporter=\"otlp"))
            {
                return Ok(metrics);
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("observer run exported no OTLP batch counters within 30 s");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn pid(&self) -> u32 {
        self.process.child.id()
    }

    fn exited(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.process.child.try_wait()?)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET /metrics (Prometheus text format).
    fn scrape(&self) -> Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.addr
        )?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        match reply.split_once("\r\n\r\n") {
            Some((head, body)) if head.contains(" 200 ") => Ok(body.to_owned()),
            _ => bail!("unexpected reply from observer's /metrics"),
        }
    }

    fn usage(&self) -> Result<Usage> {
        let pid = self.pid();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // utime and stime are fields 14 and 15; the name in parentheses may hold spaces.
        let ticks: u64 = stat
            .rsplit_once(") ")
            .context("no `(comm) ` in the agent's stat")?
            .1
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(str::parse::<u64>)
            .sum::<Result<_, _>>()
            .context("parsing the agent's stat")?;
        Ok(Usage {
            rss_kb: self.status_kb("VmRSS")?,
            // USER_HZ is 100 on Linux.
            cpu_seconds: ticks as f64 / 100.0,
            fds: fs::read_dir(format!("/proc/{pid}/fd"))?.count(),
            threads: self.status_kb("Threads")?,
        })
    }

    /// A number from a line of /proc/PID/status (`VmRSS:  1234 kB`, `Threads: 5`).
    fn status_kb(&self, key: &str) -> Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {key} in the agent's status"))
    }

    /// Stops the agent as a service manager would (SIGTERM), waiting up to 30 s; returns how it
    /// exited and its log.
    fn terminate(mut self) -> Result<(String, String)> {
        self.process.signal("-TERM");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.process.child.try_wait()? {
                break status.to_string();
            }
            if start.elapsed() > Duration::from_secs(30) {
                break "still running 30 s after SIGTERM (killed)".to_owned();
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Ok((status, self.log()))
    }
}

/// Connects to the agent's socket as `observer top` does and reads its first line (the hello),
/// then hangs up: a leak per client would show in the fd count.
fn read_socket(path: &Path) -> Result<()> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.is_empty() {
        bail!("the agent closed the socket without a hello");
    }
    Ok(())
}

/// Every sample of a Prometheus text exposition, by its series (`name{labels}`).
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The agent's own series recorded in the CSV: drops, failures, map fullness, attach state and
/// collection time (not the per-target breakdowns, whose series come and go).
fn tracked(series: &str) -> bool {
    const NAMES: [&str; 10] = [
        "observer_export_batches_total",
        "observer_breakdown_dropped_total",
        "observer_map_utilization",
        "observer_signal_attached",
        "observer_collection_duration_seconds",
        "observer_block_io_untimed_total",
        "observer_lock_mismatched_total",
        "observer_tcp_retransmit_failures_total",
        "observer_rule_error_total",
        "observer_rule_decision_total",
    ];
    let name = series.split('{').next().unwrap_or(series);
    NAMES.contains(&name)
}

fn csv_quote(field: &str) -> String {
    format!("\"{}\"", field.replace('"', "\"\""))
}

/// The 1, 5 and 15 minute load averages.
/// The machine's CPU time from /proc/stat, to say how busy everything else kept it.
struct MachineCpu {
    total: u64,
    busy: u64,
}

impl MachineCpu {
    fn read() -> Result<Self> {
        let ticks = CpuTicks::read()?;
        Ok(Self {
            total: ticks.total,
            busy: ticks.busy + ticks.steal,
        })
    }

    /// Percent of all CPUs' time busy since the last call.
    fn busy_percent_since(&mut self) -> Result<f64> {
        let now = Self::read()?;
        let total = now.total.saturating_sub(self.total).max(1) as f64;
        let busy = now.busy.saturating_sub(self.busy) as f64;
        *self = now;
        Ok(100.0 * busy / total)
    }
}

/// The workloads, one at a time, each for [`PHASE`]; what a phase needs (loop device, network
/// namespace, cgroups directory) is made once and removed when dropped.
struct Load {
    disk: LoopDevice,
    netns: NetNs,
    cgroups: CgroupDir,
    lock_dir: PathBuf,
    running: Vec<Background>,
    threads: Option<LockThreads>,
    /// The phase running, None between phases.
    current: Option<&'static str>,
    bursts: u64,
    last_burst: Instant,
}

const PHASES: [&str; 5] = [
    "sched-pipe",
    "fio-direct-reads",
    "tcp-retransmits",
    "cgroup-fork-bursts",
    "lock-contention",
];

impl Load {
    fn new() -> Result<Self> {
        let (disk, netns, cgroups) = (
            LoopDevice::create("soak", LOOP_BYTES)?,
            NetNs::create()?,
            CgroupDir::create("soak")?,
        );
        // Made last: nothing would remove it if a later step failed.
        let lock_dir =
            std::env::temp_dir().join(format!("observer-soak-lock-{}", std::process::id()));
        fs::create_dir_all(&lock_dir)?;
        Ok(Self {
            disk,
            netns,
            cgroups,
            lock_dir,
            running: Vec::new(),
            threads: None,
            current: None,
            bursts: 0,
            last_burst: Instant::now(),
        })
    }

    fn name(&self, phase: usize) -> &'static str {
        PHASES[phase % PHASES.len()]
    }

    fn start(&mut self, phase: usize) -> Result<()> {
        let seconds = PHASE.as_secs().to_string();
        self.current = Some(self.name(phase));
        match self.name(phase) {
            "sched-pipe" => {
                let mut pipe = Command::new("perf");
                // perf reads -l into an int: 4000000000 wraps negative and it exits at once.
                // This many loops outlast any phase; the phase's end kills it.
                pipe.args(["bench", "sched", "pipe", "-l", "2000000000"])
                    .stdout(Stdio::null());
                self.running
                    .push(Background::spawn(pipe, "perf bench sched pipe")?);
            }
            "fio-direct-reads" => {
                let mut fio = Command::new(FIO[0]);
                fio.args(&FIO[1..])
                    .arg(format!("--filename={}", self.disk.device))
                    .arg(format!("--runtime={seconds}"))
                    .stdout(Stdio::null());
                self.running.push(Background::spawn(fio, "fio")?);
            }
            "tcp-retransmits" => {
                let mut tcp = Command::new("ip");
                tcp.args([
                    "netns",
                    "exec",
                    &self.netns.name,
                    "python3",
                    "-c",
                    TCP_LOAD,
                    &seconds,
                ])
                .stdout(Stdio::null());
                self.running
                    .push(Background::spawn(tcp, "the TCP load (python3)")?);
            }
            "cgroup-fork-bursts" => self.last_burst = Instant::now() - Duration::from_secs(1),
            "lock-contention" => {
                self.threads = Some(LockThreads::start(&self.lock_dir));
                let mut futex = Command::new("perf");
                futex
                    .args(["bench", "futex", "lock-pi", "-s", "-t", "4", "-r", &seconds])
                    .stdout(Stdio::null());
                self.running
                    .push(Background::spawn(futex, "perf bench futex lock-pi")?);
            }
            _ => unreachable!("every phase is named in PHASES"),
        }
        Ok(())
    }

    /// During the cgroup phase, one burst a second: cgroups made, a short-lived workload in
    /// each, waited for, and the cgroups removed.
    fn tick(&mut self) -> Result<()> {
        if self.current == Some("cgroup-fork-bursts")
            && self.last_burst.elapsed() >= Duration::from_secs(1)
        {
            self.last_burst = Instant::now();
            self.bursts += 1;
            self.cgroups.burst(self.bursts)?;
        }
        Ok(())
    }

    fn stop(&mut self) {
        self.running.clear();
        self.threads = None;
        self.current = None;
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.lock_dir);
    }
}

/// Threads creating and unlinking files in one directory (contending for its i_rwsem); stopped
/// and joined when dropped.
struct LockThreads {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl LockThreads {
    fn start(dir: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..LOCK_THREADS)
            .map(|t| {
                let (stop, dir) = (Arc::clone(&stop), dir.to_owned());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let path = dir.join(format!("{t}-{}", n % 64));
                        let _ = fs::File::create(&path);
                        let _ = fs::remove_file(&path);
                        n += 1;
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for LockThreads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A network namespace with loopback up and an nftables rule dropping 3% of the data packets
/// to port 5201 (the TCP load's), deleted (with its rules) when dropped.
struct NetNs {
    name: String,
}

impl NetNs {
    fn create() -> Result<Self> {
        let name = format!("observer-soak-{}", std::process::id());
        Cmd::new("ip", &["netns", "add", &name]).query()?;
        let ns = Self { name };
        Cmd::new("ip", &["-n", &ns.name, "link", "set", "lo", "up"]).query()?;
        let nft = |command: &[&str]| {
            let mut args = vec!["netns", "exec", &ns.name, "nft"];
            args.extend(command);
            Cmd::new("ip", &args)
                .query()
                .context("adding the nftables drop rule in the soak's namespace")
        };
        nft(&["add", "table", "inet", "soak"])?;
        nft(&[
            "add",
            "chain",
            "inet",
            "soak",
            "out",
            "{ type filter hook output priority 0; }",
        ])?;
        nft(&[
            "add", "rule", "inet", "soak", "out", "tcp", "dport", "5201", "meta", "length", "gt",
            "200", "numgen", "random", "mod", "100", "lt", "3", "drop",
        ])?;
        Ok(ns)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Cmd::new("ip", &["netns", "del", &self.name]).query();
    }
}

/// The soak's cgroup bursts, in its [`CgroupDir`].
impl CgroupDir {
    /// Makes [`CGROUPS_PER_BURST`] cgroups, runs `perf bench sched messaging` (a group of 40
    /// short-lived processes) in each, waits for them and removes the cgroups.
    fn burst(&self, n: u64) -> Result<()> {
        let mut children = Vec::new();
        for i in 0..CGROUPS_PER_BURST {
            let cgroup = self.dir.join(format!("b{n}-{i}"));
            fs::create_dir(&cgroup)?;
            let procs = cgroup.join("cgroup.procs");
            // The shell moves itself into the cgroup, then becomes the workload.
            let mut command = Command::new("sh");
            command
                .args([
                    "-c",
                    "echo $$ > \"$1\" && exec perf bench sched messaging -g 1 -l 5",
                    "sh",
                ])
                .arg(&procs)
                .stdout(Stdio::null());
            children.push((cgroup, Background::spawn(command, "a cgroup's workload")?));
        }
        for (cgroup, mut child) in children {
            child.child.wait()?;
            drop(child);
            remove_cgroup(&cgroup);
        }
        Ok(())
    }
}

/// One row of the CSV.
struct Sample {
    seconds: f64,
    phase: &'static str,
    collector_up: bool,
    own: Usage,
    machine_busy: f64,
    load1: f64,
    metrics: Vec<f64>,
}

impl Sample {
    fn csv_row(&self) -> String {
        let mut row = format!(
            "{:.1},{},{},{},{:.2},{},{},{:.1},{:.2}",
            self.seconds,
            self.phase,
            u8::from(self.collector_up),
            self.own.rss_kb,
            self.own.cpu_seconds,
            self.own.fds,
            self.own.threads,
            self.machine_busy,
            self.load1
        );
        for value in &self.metrics {
            let _ = write!(row, ",{value}");
        }
        row
    }
}

/// Everything the summary is made of.
struct Run {
    elapsed: Duration,
    interrupted: bool,
    outages: u32,
    scrapes: u64,
    socket_reads: u64,
    failures: Vec<String>,
    load_before: (f64, f64, f64),
    load_after: (f64, f64, f64),
    hwm_kb: u64,
    status: String,
    /// Journal records by outcome.
    decisions: BTreeMap<String, usize>,
    log: String,
    final_metrics: BTreeMap<String, f64>,
    columns: Vec<String>,
    samples: Vec<Sample>,
}

impl Run {
    fn summary(&self, binary: &Path, every: Duration) -> String {
        let mut md = String::new();
        let s = &self.samples;
        let date = Cmd::new("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
            .query()
            .unwrap_or_default();
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let _ = writeln!(
            md,
            "# Soak\n\nWritten by `cargo xtask soak` (xtask/src/soak.rs); the samples are in \
             soak/soak.csv, one row every {} s.\n",
            every.as_secs()
        );
        let _ = writeln!(
            md,
            "- ended {}: kernel {}, {cpus} CPUs; {} run for {:.0} s ({:.2} h){}",
            date.trim(),
            kernel.trim(),
            binary.file_name().unwrap_or_default().to_string_lossy(),
            self.elapsed.as_secs_f64(),
            self.elapsed.as_secs_f64() / 3600.0,
            if self.interrupted {
                ", stopped early by SIGINT/SIGTERM"
            } else {
                ""
            }
        );
        let _ = writeln!(
            md,
            "- the agent: `observer run` (release), all five signals and their breakdowns, \
             interval 1 s, OTLP/gRPC to rotel (queue = {QUEUE} batches), Prometheus scraped \
             every {} s, its socket read (connect, hello, hang up) every {} s, two rules in \
             dry-run (a log action on run-queue p99, a sysctl action on the TCP retransmit \
             rate) whose decisions are journaled and exported as OTLP log records",
            SCRAPE_EVERY.as_secs(),
            SCRAPE_EVERY.as_secs()
        );
        let _ = writeln!(
            md,
            "- the collector: up {} s, then killed for {} s (longer than the queue holds), \
             {} outages",
            COLLECTOR_UP.as_secs(),
            OUTAGE.as_secs(),
            self.outages
        );
        let _ = writeln!(
            md,
            "- the load, {} s per phase in turn: {}; plus whatever else the machine ran: \
             it is shared with other developers' builds and tests, which were running \
             (machine CPU busy {:.0}% on average, {:.0}% at most, per sample; load average \
             {:.2} / {:.2} / {:.2} before, {:.2} / {:.2} / {:.2} after)",
            PHASE.as_secs(),
            PHASES.join(", "),
            mean(s.iter().map(|x| x.machine_busy)),
            s.iter().map(|x| x.machine_busy).fold(0.0, f64::max),
            self.load_before.0,
            self.load_before.1,
            self.load_before.2,
            self.load_after.0,
            self.load_after.1,
            self.load_after.2
        );
        let (Some(first), Some(last)) = (s.first(), s.last()) else {
            let _ = writeln!(md, "\nNo samples were taken.");
            return md;
        };
        let wall = last.seconds - first.seconds;
        let cpu = last.own.cpu_seconds - first.own.cpu_seconds;
        let half: Vec<&Sample> = s.iter().filter(|x| x.seconds >= wall / 2.0).collect();
        let slope = slope_per_hour(half.iter().map(|x| (x.seconds, x.own.rss_kb as f64)));
        let half_cpu = match (half.first(), half.last()) {
            (Some(a), Some(b)) if b.seconds > a.seconds => {
                100.0 * (b.own.cpu_seconds - a.own.cpu_seconds) / (b.seconds - a.seconds)
            }
            _ => f64::NAN,
        };
        let max_rss = s.iter().map(|x| x.own.rss_kb).max().unwrap_or_default();
        let fds = minmax(s.iter().map(|x| x.own.fds as u64));
        // Connections come and go (scrapes, socket clients, the collector): flat means the
        // second half never held more than the first did.
        let fds_first_half = s
            .iter()
            .filter(|x| x.seconds < wall / 2.0)
            .map(|x| x.own.fds)
            .max()
            .unwrap_or_default();
        let fds_second_half = half.iter().map(|x| x.own.fds).max().unwrap_or_default();
        let threads = minmax(s.iter().map(|x| x.own.threads));
        let mean_half_rss = mean(half.iter().map(|x| x.own.rss_kb as f64));
        let _ = writeln!(md, "\n## Results\n");
        let _ = writeln!(md, "| | value |\n|---|---|");
        let _ = writeln!(md, "| samples | {} |", s.len());
        let _ = writeln!(
            md,
            "| RSS (VmRSS) first / last / max sample | {} / {} / {max_rss} kB |",
            first.own.rss_kb, last.own.rss_kb
        );
        let _ = writeln!(md, "| VmHWM at the end | {} kB |", self.hwm_kb);
        let _ = writeln!(
            md,
            "| RSS slope over the second half (least squares) | {slope:+.0} kB/h \
             ({:+.2}% of its mean {mean_half_rss:.0} kB per hour) |",
            100.0 * slope / mean_half_rss.max(1.0)
        );
        let _ = writeln!(
            md,
            "| CPU: whole run / second half | {:.2}% / {half_cpu:.2}% of one CPU ({cpu:.1} s \
             in {wall:.0} s) |",
            100.0 * cpu / wall.max(1.0)
        );
        let _ = writeln!(
            md,
            "| open fds min / max; most in the first / second half (flat: {}) | {} / {}; \
             {fds_first_half} / {fds_second_half} |",
            if fds_second_half <= fds_first_half {
                "yes"
            } else {
                "no"
            },
            fds.0,
            fds.1,
        );
        let _ = writeln!(md, "| threads min / max | {} / {} |", threads.0, threads.1);
        let _ = writeln!(
            md,
            "| scrapes / socket reads / failed | {} / {} / {} |",
            self.scrapes,
            self.socket_reads,
            self.failures.len()
        );
        let _ = writeln!(md, "| agent exit on SIGTERM | {} |", self.status);
        let problems = self.problems();
        let _ = writeln!(
            md,
            "| agent log | {} lines, {} WARN/ERROR other than rule decisions |",
            self.log.lines().count(),
            problems.len()
        );
        let outcomes: Vec<String> = self
            .decisions
            .iter()
            .map(|(outcome, n)| format!("{n} {outcome}"))
            .collect();
        let _ = writeln!(
            md,
            "| rule decisions journaled | {} ({}) |",
            self.decisions.values().sum::<usize>(),
            outcomes.join(", ")
        );
        let _ = writeln!(
            md,
            "\nThe agent's own series at the end (and the most seen):\n"
        );
        let _ = writeln!(md, "| series | end | max |\n|---|---|---|");
        for (i, column) in self.columns.iter().enumerate() {
            let max = s
                .iter()
                .filter_map(|x| x.metrics.get(i).copied())
                .filter(|v| v.is_finite())
                .fold(f64::NAN, f64::max);
            let end = self.final_metrics.get(column).copied().unwrap_or(f64::NAN);
            let _ = writeln!(md, "| `{column}` | {end} | {max} |");
        }
        if !self.failures.is_empty() {
            let _ = writeln!(md, "\nFailed reads (first 10):\n");
            for failure in self.failures.iter().take(10) {
                let _ = writeln!(md, "- {failure}");
            }
        }
        let warn_lines = problems;
        if !warn_lines.is_empty() {
            let _ = writeln!(
                md,
                "\nThe agent's first and last warnings (rule decisions left out):\n\n```"
            );
            for line in warn_lines.iter().take(3) {
                let _ = writeln!(md, "{line}");
            }
            if warn_lines.len() > 3 {
                let _ = writeln!(md, "...\n{}", warn_lines[warn_lines.len() - 1]);
            }
            let _ = writeln!(md, "```");
        }
        md
    }
}

/// How the agent's log lines of rule decisions start (after the level).
const RULE_LINE: &str = "observer::agent::run: rule ";

impl Run {
    /// The agent's WARN and ERROR lines but the rules' decisions (a dry-run decision that is
    /// rate limited, say, is a warning by design).
    fn problems(&self) -> Vec<&str> {
        self.log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .filter(|l| !l.contains(RULE_LINE))
            .collect()
    }
}

/// The journal's records counted by outcome (`dry_run`, `rate_limited`...).
fn journal_outcomes(path: &Path) -> BTreeMap<String, usize> {
    let mut outcomes = BTreeMap::new();
    for line in fs::read_to_string(path).unwrap_or_default().lines() {
        let outcome = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|record| record["outcome"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "unreadable".to_owned());
        *outcomes.entry(outcome).or_default() += 1;
    }
    outcomes
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    sum / f64::from(n.max(1))
}

fn minmax(values: impl Iterator<Item = u64>) -> (u64, u64) {
    values.fold((u64::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// Least-squares slope of (seconds, value) points, per hour (0 with fewer than two points).
fn slope_per_hour(points: impl Iterator<Item = (f64, f64)>) -> f64 {
    let points: Vec<(f64, f64)> = points.collect();
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx * 3600.0 }
}

/// `90`, `90s`, `3m`, `1h`, `1h30m`: a duration for `--duration` and `--every`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: write 90, 90s, 3m or 1h");
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = 0u64;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_metrics, slope_per_hour, tracked};
    use std::time::Duration;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "m", "3x", "1h3", "0s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fits_a_slope_per_hour() {
        let points = [(0.0, 100.0), (1800.0, 150.0), (3600.0, 200.0)];
        assert!((slope_per_hour(points.into_iter()) - 100.0).abs() < 1e-9);
        assert_eq!(slope_per_hour([(1.0, 5.0)].into_iter()), 0.0);
    }

    #[test]
    fn keeps_the_agents_own_series() {
        let text = "# TYPE x counter\nobserver_map_utilization{observer_map=\"A\"} 0.5\n\
                    observer_runqueue_wait_duration_seconds_bucket{le=\"1\"} 3\n";
        let metrics = parse_metrics(text);
        let kept: Vec<&String> = metrics.keys().filter(|k| tracked(k)).collect();
        assert_eq!(kept, ["observer_map_utilization{observer_map=\"A\"}"]);
    }
}
