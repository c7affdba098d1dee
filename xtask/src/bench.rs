//! `cargo xtask bench`: what observer costs the workloads it watches. This VM has no hardware
//! PMU, so cost is measured as wall time (the workload's own time per operation, with and without
//! a tracer running) and as the kernel's run time per program (kernel.bpf_stats, which
//! `observer record --stats` reports).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};

use crate::cmd::{Cmd, is_root};
use crate::host::{CgroupDir, CpuTicks, LoopDevice, load_average};
use crate::tasks::{self, Profile};

/// Touched before the timed build so that it redoes both the eBPF object and the binary.
const TOUCHED: &str = "observer-ebpf/src/main.rs";

/// The peer tools compared with, from Debian's libbpf-tools.
const RUNQLAT: &str = "/usr/sbin/runqlat";
const BIOLATENCY: &str = "/usr/sbin/biolatency";
const KLOCKSTAT: &str = "/usr/sbin/klockstat";
/// What the benchmarks run, and the Debian package of each. Installed here rather than through
/// packages.rs, which brings every test package (a Prometheus server among them): fio is only the
/// benchmarks', and the bench should not need a setup run for libbpf-tools.
const TOOLS: [(&str, &str); 5] = [
    ("/usr/bin/perf", "linux-perf"),
    (RUNQLAT, "libbpf-tools"),
    (BIOLATENCY, "libbpf-tools"),
    (KLOCKSTAT, "libbpf-tools"),
    ("/usr/bin/fio", "fio"),
];

/// kernel.bpf_stats_enabled: left on, it would tax every variant; runqlat has no --stats of its
/// own, so it is turned on around runqlat's measured runs.
const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Pinned to one CPU: unpinned, the two processes wake each other across CPUs and the benchmark
/// measures IPIs rather than the scheduler path the runqueue programs hook.
const SCHED_PIPE: [&str; 7] = ["taskset", "-c", "0", "perf", "bench", "sched", "pipe"];
/// getppid() in a loop: nearly nothing but sys_enter and sys_exit, the hooks every system call
/// reaches (none of observer's programs is on them: the futex signal works from sched_switch).
const SYSCALL_BASIC: [&str; 4] = ["perf", "bench", "syscall", "basic"];
/// Direct (O_DIRECT) 4 KiB random reads, one at a time, from a loop device: every read is one
/// request through block_rq_insert/issue/complete, and the loop device's backing file is in
/// memory, so the block layer rather than a disk sets the pace. `--filename` and `--number_ios`
/// are added per run.
const FIO_RANDREAD: [&str; 10] = [
    "fio",
    "--name=observer-bench",
    "--direct=1",
    "--rw=randread",
    "--bs=4k",
    "--ioengine=psync",
    "--iodepth=1",
    "--norandommap",
    "--randrepeat=0",
    "--output-format=json",
];
/// Threads of the lock workload (`observer-loadgen mmap`), each mapping, touching and unmapping
/// memory in a loop: mmap and munmap take the process's mmap_lock (an rwsem) for writing, so
/// two threads on two CPUs contend about once per operation (more threads sleep longer on it
/// and contend less often).
const MMAP_THREADS: &str = "2";
/// Size of the loop device's backing file (sparse, so reads are served from memory).
const LOOP_BYTES: u64 = 256 << 20;
/// How long the agent's own cost is measured, scraped every second.
const AGENT_WINDOW: Duration = Duration::from_secs(10);
/// The same at full maps, once the map is full (the storm's first few seconds fill it).
const FULL_MAPS_WINDOW: Duration = Duration::from_secs(15);
/// The fork storm of that row (`observer-loadgen storm`), as in the end-to-end fork-storm test:
/// more live processes than the run-queue per-process map's 4096 entries, over many cgroups.
const STORM_PROCS: &str = "5000";
const STORM_CGROUPS: &str = "1000";
/// The run-queue per-process map's `observer_map_utilization` sample, and how full counts as full
/// (the agent removes exited processes' entries as it reads them, so it reads a little under 1).
const RUNQ_MAP_LABEL: &str = "observer_map=\"RUNQ_BY_PROCESS\"";
const FULL: f64 = 0.9;

/// A tool's programs count as attached once its number of BPF links has stayed the same for
/// this long (observer and runqlat attach all of theirs within milliseconds of each other).
const ATTACH_SETTLE: Duration = Duration::from_millis(200);
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(root: &Path, runs: u32, seconds: f64, pairs: u32) -> Result<()> {
    if !is_root()? {
        bail!(
            "the benchmarks load BPF programs and turn on kernel.bpf_stats, which needs root: \
             rerun as root"
        );
    }
    if !(seconds > 0.0 && seconds.is_finite()) {
        bail!("--seconds must be a positive number of seconds, like 2 or 0.5");
    }
    let started = Instant::now();
    // Brings the binary up to date first, so that only the rebuild after the touch is timed.
    tasks::build(root, Profile::Release)?;
    ensure_tools()?;
    let build_time = timed_rebuild(root)?;
    let loadgen = build_loadgen(root)?;
    let binary = tasks::observer_binary(root, Profile::Release);
    let binary_size = fs::metadata(&binary)
        .with_context(|| format!("{} is missing after the build", binary.display()))?
        .len();
    let shown = binary.strip_prefix(root).unwrap_or(&binary).display();

    let mut report = String::new();
    machine(&mut report)?;
    let _ = writeln!(
        report,
        "- release build after touching {TOUCHED} (eBPF object and binary): {:.1} s; \
         {shown} is {:.2} MB ({binary_size} bytes)",
        build_time.as_secs_f64(),
        binary_size as f64 / 1e6
    );
    let _ = writeln!(
        report,
        "- each run starts the tracer, waits until its BPF links are attached, then runs the \
         workload, then stops the tracer with SIGINT: `{shown} record ARGS --strict --duration \
         1h`, `{shown} floor --hooks HOOKS --duration 1h` (empty programs), `{RUNQLAT}` or \
         `{BIOLATENCY}`; in-kernel figures are bpf_stats' `run_cnt` and `run_time_ns` of the \
         tracer's programs, from /proc/PID/fdinfo just before and just after the workload"
    );
    let _ = writeln!(report, "- load average before: {}", loadavg()?);
    if fs::read_to_string(BPF_STATS_SYSCTL)?.trim() != "0" {
        let _ = writeln!(
            report,
            "- WARNING: kernel.bpf_stats_enabled is on, so every BPF program run (baselines \
             included) pays for the statistics; `sysctl kernel.bpf_stats_enabled=0` turns it off"
        );
    }
    let others = other_bpf_links();
    let _ = writeln!(
        report,
        "- BPF links held by other processes before: {}",
        if others.is_empty() {
            "none".to_owned()
        } else {
            others.join(", ")
        }
    );

    let disk = LoopDevice::create("bench", LOOP_BYTES)?;
    println!(
        "block I/O benchmark on {} ({} MiB sparse file)",
        disk.device,
        LOOP_BYTES >> 20
    );
    let fio: Vec<String> = FIO_RANDREAD
        .iter()
        .map(|a| (*a).to_owned())
        .chain([format!("--filename={}", disk.device)])
        .collect();
    let lock_workload = Workload::timed(
        &[loadgen.to_string_lossy().as_ref(), "mmap", MMAP_THREADS],
        seconds,
    );
    let (lock_peers, lock_note) = match peer_attaches(KLOCKSTAT)? {
        Ok(()) => (
            vec![
                Alongside::Peer {
                    tool: KLOCKSTAT,
                    stats: false,
                },
                Alongside::Peer {
                    tool: KLOCKSTAT,
                    stats: true,
                },
            ],
            None,
        ),
        Err(error) => (
            Vec::new(),
            Some(format!(
                "No peer: libbpf-tools' `{KLOCKSTAT}` cannot run on this kernel. It attaches \
                 with fentry where the kernel lets it (here attaching fentry programs fails) and \
                 with kprobes otherwise (this kernel has no CONFIG_KPROBES): it said `{error}`."
            )),
        ),
    };
    let scenarios = [
        Scenario {
            title: "scheduler hot path (sched_switch; sched_waking or sched_wakeup)",
            workload: Workload::calibrated(Kind::PerfBench, &SCHED_PIPE, 20_000, seconds)?,
            variants: vec![
                Alongside::Floor,
                Alongside::Observer(&["--signals", "runqueue"]),
                Alongside::Observer(&["--signals", "runqueue", "--by", "disk"]),
                Alongside::Observer(&["--signals", "runqueue", "--stats"]),
                Alongside::Observer(&["--signals", "runqueue", "--by", "disk", "--stats"]),
                Alongside::Observer(&["--signals", "futex", "--stats"]),
                Alongside::Observer(&[]),
                Alongside::Observer(&["--stats"]),
                Alongside::Peer {
                    tool: RUNQLAT,
                    stats: false,
                },
                Alongside::Peer {
                    tool: RUNQLAT,
                    stats: true,
                },
            ],
            // observer's run-queue signal starts a wait at sched_waking (on the waker's CPU,
            // before the wake-up IPI), runqlat at sched_wakeup: the same event.
            hooks: &[&["sched_switch"], &["sched_waking", "sched_wakeup"]],
            note: None,
            targets: vec![
                Target {
                    goal: "in-kernel ns per round trip, run-queue signal alone (`record \
                           --signals runqueue --stats`, all breakdowns) at most 0.5x runqlat's \
                           (with bpf_stats on)",
                    row: Alongside::Observer(&["--signals", "runqueue", "--stats"]),
                    against: Alongside::Peer {
                        tool: RUNQLAT,
                        stats: true,
                    },
                    measure: Measure::NsPerOp,
                    at_most: 0.5,
                },
                Target {
                    goal: "all signals on (`record --stats`) at most 0.6x runqlat's",
                    row: Alongside::Observer(&["--stats"]),
                    against: Alongside::Peer {
                        tool: RUNQLAT,
                        stats: true,
                    },
                    measure: Measure::NsPerOp,
                    at_most: 0.6,
                },
            ],
            split_dispatch: true,
            // All signals with all breakdowns, as a user runs it, against runqlat as a user
            // runs it: neither with bpf_stats, which adds time of its own to every run.
            paired: Some([
                Alongside::Observer(&[]),
                Alongside::Peer {
                    tool: RUNQLAT,
                    stats: false,
                },
            ]),
        },
        Scenario {
            title: "system call hot path (sys_enter, sys_exit)",
            workload: Workload::calibrated(Kind::PerfBench, &SYSCALL_BASIC, 1_000_000, seconds)?,
            variants: vec![
                Alongside::Floor,
                Alongside::Observer(&[]),
                Alongside::Observer(&["--stats"]),
            ],
            hooks: &[&["sys_enter"], &["sys_exit"]],
            note: None,
            targets: Vec::new(),
            split_dispatch: false,
            paired: None,
        },
        Scenario {
            title: "block I/O (block_rq_issue, block_rq_complete)",
            workload: Workload::calibrated(Kind::Fio, &fio, 2_000, seconds)?,
            variants: vec![
                Alongside::Floor,
                Alongside::Observer(&["--signals", "blockio"]),
                Alongside::Observer(&["--signals", "blockio", "--stats"]),
                Alongside::Observer(&[]),
                Alongside::Observer(&["--stats"]),
                Alongside::Peer {
                    tool: BIOLATENCY,
                    stats: false,
                },
                Alongside::Peer {
                    tool: BIOLATENCY,
                    stats: true,
                },
            ],
            hooks: &[&["block_rq_issue"], &["block_rq_complete"]],
            note: None,
            targets: ["block_rq_issue", "block_rq_complete"]
                .map(|hook| Target {
                    goal: "block I/O per event no more than biolatency",
                    row: Alongside::Observer(&["--signals", "blockio", "--stats"]),
                    against: Alongside::Peer {
                        tool: BIOLATENCY,
                        stats: true,
                    },
                    measure: Measure::NsPerRun(hook),
                    at_most: 1.0,
                })
                .into(),
            split_dispatch: false,
            paired: None,
        },
        Scenario {
            title: "kernel lock contention (contention_begin, contention_end)",
            workload: lock_workload,
            variants: [
                Alongside::Floor,
                Alongside::Observer(&["--signals", "lock"]),
                Alongside::Observer(&["--signals", "lock", "--stats"]),
                Alongside::Observer(&[]),
                Alongside::Observer(&["--stats"]),
            ]
            .into_iter()
            .chain(lock_peers)
            .collect(),
            hooks: &[&["contention_begin"], &["contention_end"]],
            note: lock_note,
            targets: Vec::new(),
            split_dispatch: false,
            paired: None,
        },
    ];
    for scenario in &scenarios {
        let before = CpuUse::read()?;
        let (baseline, results) = scenario.measure(&binary, runs)?;
        let busy = CpuUse::read()?.since(&before);
        scenario.table(&baseline, &results, runs, &busy, &mut report);
        scenario.pairs(&binary, pairs, &mut report)?;
    }

    drop(disk);
    println!("==> the agent's own cost: observer run --interval 1s, scraped every second");
    let _ = writeln!(
        report,
        "\nthe agent itself (`observer run`, all signals, collecting every 1 s, Prometheus \
         scraped every 1 s by the bench, no OTLP): {}",
        agent_cost(&binary, &loadgen, AgentLoad::Normal)?.shown()
    );
    println!("==> the same while fork storms keep the per-process maps full");
    let _ = writeln!(
        report,
        "\nthe agent at full maps (the same, while `observer-loadgen storm` forks \
         {STORM_PROCS} processes at a time into {STORM_CGROUPS} cgroups, all alive for 1.5 s, \
         then the next {STORM_PROCS}; measured for {} s once the run-queue per-process map is \
         full): {}",
        FULL_MAPS_WINDOW.as_secs(),
        agent_cost(&binary, &loadgen, AgentLoad::FullMaps)?.shown()
    );
    budget_demo(&binary, &mut report)?;

    let _ = writeln!(report, "\n- load average after: {}", loadavg()?);
    let others = other_bpf_links();
    if !others.is_empty() {
        let _ = writeln!(
            report,
            "- BPF links held by other processes after: {}",
            others.join(", ")
        );
    }
    let _ = writeln!(
        report,
        "- bench took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    println!("\n==> results\n{report}");
    Ok(())
}

/// The lock workload's and the fork storms' generator, from the end-to-end tests' crate.
pub fn build_loadgen(root: &Path) -> Result<std::path::PathBuf> {
    Cmd::cargo(&[
        "build",
        "-p",
        "observer-tests",
        "--release",
        "--bin",
        "observer-loadgen",
    ])
    .current_dir(root)
    .run()?;
    Ok(tasks::target_dir(root).join("release/observer-loadgen"))
}

/// The rebuild a one-line change to the kernel programs costs: eBPF object, then the binary.
fn timed_rebuild(root: &Path) -> Result<Duration> {
    let touched = root.join(TOUCHED);
    fs::File::options()
        .write(true)
        .open(&touched)
        .and_then(|file| file.set_modified(SystemTime::now()))
        .with_context(|| format!("touching {}", touched.display()))?;
    let start = Instant::now();
    tasks::build_observer(Profile::Release)
        .current_dir(root)
        .run()?;
    Ok(start.elapsed())
}

fn ensure_tools() -> Result<()> {
    let missing = || -> Vec<(&str, &str)> {
        TOOLS
            .into_iter()
            .filter(|(path, _)| !Path::new(path).is_file())
            .collect()
    };
    let packages: Vec<&str> = missing().iter().map(|(_, package)| *package).collect();
    if packages.is_empty() {
        return Ok(());
    }
    println!(
        "the benchmarks need Debian packages {}; installing them",
        packages.join(" ")
    );
    crate::packages::apt_install(&packages)?;
    if let Some((path, package)) = missing().first() {
        bail!(
            "{package} is installed but {path} is not there: find where it put it \
             (`dpkg -L {package}`) and update TOOLS in xtask/src/bench.rs"
        );
    }
    Ok(())
}

/// The date, kernel and CPUs, as the first lines of the report.
fn machine(report: &mut String) -> Result<()> {
    let date = Cmd::new("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).query()?;
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let cpus = std::thread::available_parallelism()?;
    let cpuinfo = fs::read_to_string("/proc/cpuinfo")?;
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim());
    let _ = writeln!(
        report,
        "- {}: kernel {} (uname -r), {cpus} CPUs (nproc), {model}",
        date.trim(),
        kernel.trim()
    );
    Ok(())
}

/// The 1, 5 and 15 minute load averages: how busy the machine was around the measurements.
/// The three load averages as /proc/loadavg shows them.
fn loadavg() -> Result<String> {
    let (one, five, fifteen) = load_average()?;
    Ok(format!("{one:.2} {five:.2} {fifteen:.2}"))
}

/// CPU time in clock ticks, summed over all CPUs: the machine's from /proc/stat, and this
/// process's and its reaped children's (the workloads and tracers) from /proc/self/stat. The
/// difference is what other processes took, which the wall times suffer from.
pub struct CpuUse {
    total: u64,
    busy: u64,
    /// Time the hypervisor ran something else while a CPU of this VM wanted to run.
    steal: u64,
    ours: u64,
}

impl CpuUse {
    pub fn read() -> Result<Self> {
        let machine = CpuTicks::read()?;
        let own = fs::read_to_string("/proc/self/stat")?;
        // utime, stime, cutime, cstime are fields 14-17; the name in parentheses (field 2) may
        // hold spaces, so count from after it.
        let ours = own
            .rsplit_once(") ")
            .context("no `(comm) ` in /proc/self/stat")?
            .1
            .split_whitespace()
            .skip(11)
            .take(4)
            .map(str::parse::<u64>)
            .sum::<Result<_, _>>()
            .context("parsing /proc/self/stat")?;
        Ok(Self {
            total: machine.total,
            busy: machine.busy,
            steal: machine.steal,
            ours,
        })
    }

    /// The share of all CPUs' time since `before` that other processes took, in percent.
    pub fn others_percent(&self, before: &Self) -> f64 {
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        let others = (self.busy - before.busy).saturating_sub(self.ours - before.ours);
        others as f64 / total * 100.0
    }

    /// How much of all CPUs' time since `before` other processes and the hypervisor took.
    fn since(&self, before: &Self) -> String {
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        format!(
            "other processes used {:.0}% of the CPUs' time and the host stole {:.0}%",
            self.others_percent(before),
            (self.steal - before.steal) as f64 / total * 100.0
        )
    }
}

/// `comm (pid N): L links` for every process holding BPF links: another tracer on the same hooks
/// (a colleague's test run, say) would add its cost to every variant, baselines included. Called
/// while no tracer of the bench's own runs.
fn other_bpf_links() -> Vec<String> {
    let Ok(processes) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    processes
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let links = bpf_links(pid);
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (links > 0).then(|| format!("{} (pid {pid}): {links} links", comm.trim()))
        })
        .collect()
}

/// How many BPF links a process holds open (0 once it has exited).
fn bpf_links(pid: u32) -> usize {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.as_os_str() == "anon_inode:bpf_link")
        .count()
}

/// What runs a workload, which decides how long it runs, how that is passed and how its time per
/// operation and its number of operations are read.
#[derive(Clone, Copy)]
enum Kind {
    /// `perf bench ... -l N`, which prints `usecs/op`.
    PerfBench(u64),
    /// `fio ... --number_ios=N --output-format=json`: one read per operation.
    Fio(u64),
    /// `observer-loadgen mmap THREADS SECS`: runs for SECS, then prints `mmap_munmap N`, the
    /// operations (one mmap, touch and munmap) its threads completed between them.
    Loadgen(f64),
}

/// A benchmark command that lasts about `--seconds` when nothing watches.
struct Workload {
    kind: Kind,
    command: Vec<String>,
}

/// One run of a workload.
struct Sample {
    us_per_op: f64,
    /// Operations done: what the tracers' in-kernel time is divided by.
    ops: u64,
}

impl Workload {
    /// Times `probe_loops` loops once and scales the loop count to `seconds`.
    fn calibrated<S: AsRef<str>>(
        kind: fn(u64) -> Kind,
        command: &[S],
        probe_loops: u64,
        seconds: f64,
    ) -> Result<Self> {
        let command: Vec<String> = command.iter().map(|a| a.as_ref().to_owned()).collect();
        let probe = Self {
            kind: kind(probe_loops),
            command: command.clone(),
        }
        .run()?;
        let loops = ((seconds * 1e6 / probe.us_per_op).round() as u64).max(probe_loops);
        let workload = Self {
            kind: kind(loops),
            command,
        };
        println!(
            "calibrated `{}`: {:.3} us/op, so {loops} loops for about {seconds} s",
            workload.shown(),
            probe.us_per_op
        );
        Ok(workload)
    }

    /// A workload that runs for `seconds` by itself.
    fn timed<S: AsRef<str>>(command: &[S], seconds: f64) -> Self {
        Self {
            kind: Kind::Loadgen(seconds),
            command: command.iter().map(|a| a.as_ref().to_owned()).collect(),
        }
    }

    fn count_args(&self) -> Vec<String> {
        match self.kind {
            Kind::PerfBench(loops) => vec!["-l".to_owned(), loops.to_string()],
            Kind::Fio(ios) => vec![format!("--number_ios={ios}")],
            Kind::Loadgen(seconds) => vec![seconds.to_string()],
        }
    }

    /// The command as shown: a program given by its path (the load generator) by its name.
    fn shown(&self) -> String {
        let program = Path::new(&self.command[0])
            .file_name()
            .map_or(self.command[0].as_str(), |name| {
                name.to_str().unwrap_or_default()
            });
        let mut shown = vec![program];
        shown.extend(self.command[1..].iter().map(String::as_str));
        format!("{} {}", shown.join(" "), self.count_args().join(" "))
    }

    fn run(&self) -> Result<Sample> {
        let mut args: Vec<&str> = self.command[1..].iter().map(String::as_str).collect();
        let count = self.count_args();
        args.extend(count.iter().map(String::as_str));
        let output = Cmd::new(&self.command[0], &args).query()?;
        match self.kind {
            Kind::PerfBench(loops) => Ok(Sample {
                us_per_op: parse_us_per_op(&output).with_context(|| {
                    format!("no `usecs/op` line in the output of `{}`", self.shown())
                })?,
                ops: loops,
            }),
            Kind::Fio(ios) => Ok(Sample {
                us_per_op: parse_fio_us_per_read(&output)
                    .with_context(|| format!("no read IOPS in the output of `{}`", self.shown()))?,
                ops: ios,
            }),
            Kind::Loadgen(seconds) => {
                let ops = parse_loadgen_ops(&output)
                    .filter(|&ops| ops > 0)
                    .with_context(|| {
                        format!(
                            "no `mmap_munmap N` line in the output of `{}`",
                            self.shown()
                        )
                    })?;
                Ok(Sample {
                    us_per_op: seconds * 1e6 / ops as f64,
                    ops,
                })
            }
        }
    }
}

/// The `       4.498690 usecs/op` line `perf bench sched pipe` and `syscall basic` print.
fn parse_us_per_op(output: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|line| line.trim().strip_suffix("usecs/op"))
        .and_then(|value| value.trim().parse().ok())
}

/// fio's JSON: microseconds per read, from the job's read IOPS (one read in flight at a time).
fn parse_fio_us_per_read(output: &str) -> Option<f64> {
    // fio may print notes before the JSON document.
    let json: serde_json::Value = serde_json::from_str(&output[output.find('{')?..]).ok()?;
    let iops = json["jobs"][0]["read"]["iops"].as_f64()?;
    (iops > 0.0).then(|| 1e6 / iops)
}

/// The `mmap_munmap N` line `observer-loadgen mmap` prints.
fn parse_loadgen_ops(output: &str) -> Option<u64> {
    output
        .lines()
        .find_map(|line| line.strip_prefix("mmap_munmap "))
        .and_then(|n| n.trim().parse().ok())
}

/// What runs next to the workload, in the runs compared with the baseline.
#[derive(PartialEq)]
enum Alongside {
    /// `observer record` with these arguments (plus `--strict` and `--duration`, and stopped
    /// with SIGINT after the workload); with `--stats`, its programs' cost is read.
    Observer(&'static [&'static str]),
    /// `observer floor` on every hook of the scenario: empty programs, bpf_stats on.
    Floor,
    /// A libbpf-tools peer (runqlat, biolatency) with its default options; with `stats`,
    /// kernel.bpf_stats_enabled is on while it runs.
    Peer { tool: &'static str, stats: bool },
}

impl Alongside {
    fn label(&self) -> String {
        match self {
            Self::Observer(args) if args.contains(&"--signals") => {
                format!("`observer record {}`", args.join(" "))
            }
            Self::Observer(args) => format!(
                "`observer record{}{}` (all signals)",
                if args.is_empty() { "" } else { " " },
                args.join(" ")
            ),
            Self::Floor => "empty `tp_btf` program (floor): `observer floor`".to_owned(),
            Self::Peer { tool, stats: false } => format!("`{tool}` (libbpf-tools)"),
            Self::Peer { tool, stats: true } => {
                format!("`{tool}` with `sysctl kernel.bpf_stats_enabled=1`")
            }
        }
    }

    /// Whether bpf_stats is on while it runs, so that its programs' cost is read.
    fn stats(&self) -> bool {
        match self {
            Self::Observer(args) => args.contains(&"--stats"),
            Self::Floor => true,
            Self::Peer { stats, .. } => *stats,
        }
    }
}

/// The runs of one variant.
#[derive(Default)]
struct Results {
    /// Runs during which another process held BPF links (a colleague's tracer, say).
    disturbed: u32,
    us_per_op: Vec<f64>,
    /// Time per operation against the baseline run just before, in percent.
    vs_baseline: Vec<f64>,
    /// The same as wall time added per operation, in ns.
    added_ns_per_op: Vec<f64>,
    /// All the tracer's programs' run time over the workload's operations (variants with
    /// bpf_stats on): what it adds to each operation in the kernel.
    kernel_ns_per_op: Vec<f64>,
    /// That, against the time per operation of the baseline run just before, in percent.
    kernel_vs_baseline: Vec<f64>,
    /// ns/run of the programs on each hook, for variants with bpf_stats on.
    ns_per_run: BTreeMap<&'static str, Vec<f64>>,
    /// How often each hook fired per operation (its programs' runs; the floor has one per hook).
    runs_per_op: BTreeMap<&'static str, Vec<f64>>,
    /// Runs of all the tracer's programs, on every hook, per operation: how many times it paid
    /// the dispatch into a program.
    program_runs_per_op: Vec<f64>,
}

/// What one of the targets compares, by the medians of this run.
enum Measure {
    /// ns/run of the programs on this hook.
    NsPerRun(&'static str),
    /// In-kernel ns per operation of the workload, all programs together.
    NsPerOp,
}

/// One of the targets: `row`'s figure at most `at_most` times `against`'s.
struct Target {
    goal: &'static str,
    row: Alongside,
    against: Alongside,
    measure: Measure,
    at_most: f64,
}

struct Scenario {
    title: &'static str,
    workload: Workload,
    variants: Vec<Alongside>,
    /// The hooks whose programs' ns/run the table shows (the floor's programs attach to all),
    /// by the event they mark: tracers may see one event at different hooks.
    hooks: &'static [&'static [&'static str]],
    /// Said under the title (a peer that cannot run here, say).
    note: Option<String>,
    /// The issues' targets. The variants they compare must have a program on a hook of every
    /// event: a tracer that skipped one would look cheaper for measuring less.
    targets: Vec<Target>,
    /// Whether to say, per tracer with bpf_stats on, which part of its cost is the tracepoint's
    /// dispatch and which its programs' bodies (see [`Split`]).
    split_dispatch: bool,
    /// observer and a peer whose wall-time losses are compared in alternating pairs (see
    /// [`Scenario::pairs`]).
    paired: Option<[Alongside; 2]>,
}

impl Scenario {
    /// Runs every variant `runs` times, taking turns, each right after a baseline run: the speed
    /// of this VM drifts by tens of percent over seconds to minutes, so a variant is compared
    /// with the baseline of the same moment. Returns the baseline runs and each variant's.
    fn measure(&self, binary: &Path, runs: u32) -> Result<(Vec<f64>, Vec<Results>)> {
        println!("==> {}: `{}`", self.title, self.workload.shown());
        let mut baseline = Vec::new();
        let mut results: Vec<Results> = self.variants.iter().map(|_| Results::default()).collect();
        for run in 1..=runs {
            for (variant, results) in self.variants.iter().zip(&mut results) {
                let others = other_bpf_links();
                let before = self.workload.run()?.us_per_op;
                let (sample, costs) = self.traced_by(binary, variant)?;
                let vs_baseline = (sample.us_per_op / before - 1.0) * 100.0;
                let mut shown = format!(
                    "  [{run}/{runs}] baseline {before:.3} us/op, then {}: {:.3} us/op \
                     ({vs_baseline:+.1}%)",
                    variant.label(),
                    sample.us_per_op
                );
                if let Some(costs) = &costs {
                    let ns_per_op = costs.total_ns() as f64 / sample.ops as f64;
                    let share = ns_per_op / (before * 1e3) * 100.0;
                    let _ = write!(shown, "; in the kernel {ns_per_op:.0} ns/op ({share:.1}%)");
                    results.kernel_ns_per_op.push(ns_per_op);
                    results.kernel_vs_baseline.push(share);
                    results
                        .program_runs_per_op
                        .push(costs.total_runs() as f64 / sample.ops as f64);
                    if let Some(hooks) = self.unhooked(variant, costs) {
                        bail!("{} attached no program to {hooks}", variant.label());
                    }
                    for hook in self.columns() {
                        if !costs.hooked(hook) {
                            continue;
                        }
                        let runs = costs.runs(hook) as f64 / sample.ops as f64;
                        results.runs_per_op.entry(hook).or_default().push(runs);
                        // No runs (nothing fired on that hook during the run): no figure.
                        if let Some(ns) = costs.ns_per_run(hook) {
                            let _ = write!(shown, "; {hook} {ns:.0} ns/run");
                            results.ns_per_run.entry(hook).or_default().push(ns);
                        }
                    }
                }
                if !others.is_empty() {
                    let _ = write!(shown, " (BPF links of {})", others.join(", "));
                    results.disturbed += 1;
                }
                println!("{shown}");
                baseline.push(before);
                results.us_per_op.push(sample.us_per_op);
                results.vs_baseline.push(vs_baseline);
                results
                    .added_ns_per_op
                    .push((sample.us_per_op - before) * 1e3);
            }
        }
        Ok((baseline, results))
    }

    /// The hooks `variant` should have a program on and has not, if any. The floor must be on
    /// every hook, what a target compares on every event (a tracer that skipped one would look
    /// cheaper for measuring less). Others need not: a peer may hook elsewhere (klockstat: fentry
    /// on the lock functions), a signal may leave an event alone (futex has no wakeup program;
    /// no signal is on sys_enter/sys_exit): their totals still count, the hook's column stays
    /// empty.
    fn unhooked(&self, variant: &Alongside, costs: &Costs) -> Option<String> {
        if *variant == Alongside::Floor {
            return self
                .columns()
                .find(|hook| !costs.hooked(hook))
                .map(str::to_owned);
        }
        let compared = self
            .targets
            .iter()
            .any(|target| target.row == *variant || target.against == *variant);
        self.hooks
            .iter()
            .find(|event| compared && !event.iter().any(|hook| costs.hooked(hook)))
            .map(|event| event.join(" or "))
    }

    /// Every hook, in the table's order.
    fn columns(&self) -> impl Iterator<Item = &'static str> {
        self.hooks.iter().flat_map(|event| event.iter().copied())
    }

    /// One run of the workload while `variant` traces (see [`observe`], [`with_peer`]).
    fn traced_by(&self, binary: &Path, variant: &Alongside) -> Result<(Sample, Option<Costs>)> {
        match variant {
            Alongside::Observer(args) => {
                let mut args = args.to_vec();
                args.insert(0, "record");
                args.push("--strict");
                observe(binary, &args, variant.stats(), &self.workload)
            }
            Alongside::Floor => observe(
                binary,
                &[
                    "floor",
                    "--hooks",
                    &self.columns().collect::<Vec<_>>().join(","),
                ],
                true,
                &self.workload,
            ),
            Alongside::Peer { tool, stats } => with_peer(tool, &self.workload, *stats),
        }
    }

    /// A Markdown table (for BENCHMARKS.md as it is): median (min to max) over the runs, then
    /// what the kernel figures say: each program against the floor on its hook, and the
    /// issue's targets.
    fn table(
        &self,
        baseline: &[f64],
        results: &[Results],
        runs: u32,
        busy: &str,
        report: &mut String,
    ) {
        let disturbed: u32 = results.iter().map(|results| results.disturbed).sum();
        let _ = writeln!(
            report,
            "\n{}: `{}`, {runs} run{} of each, median (min to max); meanwhile {busy}; another \
             process held BPF links in {disturbed} of the {} runs",
            self.title,
            self.workload.shown(),
            if runs == 1 { "" } else { "s" },
            results.len() as u32 * runs
        );
        if let Some(note) = &self.note {
            let _ = writeln!(report, "\n{note}");
        }
        let hooks: String = self
            .columns()
            .map(|hook| format!(" {hook} ns/run |"))
            .collect();
        let _ = writeln!(
            report,
            "\n| running alongside | us/op | time/op vs baseline just before | in-kernel ns/op | \
             in-kernel time vs baseline's time/op |{hooks}"
        );
        let _ = writeln!(
            report,
            "| --- | ---: | ---: | ---: | ---: |{}",
            " ---: |".repeat(self.columns().count())
        );
        let us = |values: &[f64]| spread(values, |v| format!("{v:.3}"));
        let or_blank = |values: &[f64], show: fn(f64) -> String| {
            if values.is_empty() {
                String::new()
            } else {
                spread(values, show)
            }
        };
        let _ = writeln!(
            report,
            "| nothing (baseline, run before each of the others) | {} | | | |{}",
            us(baseline),
            " |".repeat(self.columns().count())
        );
        for (variant, results) in self.variants.iter().zip(results) {
            let ns: String = self
                .columns()
                .map(|hook| {
                    let ns = results.ns_per_run.get(hook);
                    format!(
                        " {} |",
                        ns.map_or(String::new(), |ns| spread(ns, |v| format!("{v:.0}")))
                    )
                })
                .collect();
            let _ = writeln!(
                report,
                "| {} | {} | {} | {} | {} |{ns}",
                variant.label(),
                us(&results.us_per_op),
                spread(&results.vs_baseline, |v| format!("{v:+.1}%")),
                or_blank(&results.kernel_ns_per_op, |v| format!("{v:.0}")),
                or_blank(&results.kernel_vs_baseline, |v| format!("{v:.1}%")),
            );
        }
        self.summary(results, report);
    }

    /// Each program's ns/run as a multiple of the floor's on the same hook, and the targets.
    fn summary(&self, results: &[Results], report: &mut String) {
        let medians = |variant: &Alongside, measure: &Measure| {
            let results = &results[self.variants.iter().position(|v| v == variant)?];
            let values = match measure {
                Measure::NsPerRun(hook) => results.ns_per_run.get(hook)?,
                Measure::NsPerOp => &results.kernel_ns_per_op,
            };
            (!values.is_empty()).then(|| median(values))
        };
        let _ = writeln!(report);
        let fired: Vec<String> = self
            .columns()
            .filter_map(|hook| {
                let floor = &results[self.variants.iter().position(|v| *v == Alongside::Floor)?];
                Some(format!(
                    "`{hook}` {:.2}",
                    median(floor.runs_per_op.get(hook)?)
                ))
            })
            .collect();
        if !fired.is_empty() {
            let _ = writeln!(
                report,
                "- times each hook fired per operation during the floor's runs (medians; the \
                 whole machine's events, not only the workload's): {}",
                fired.join(", ")
            );
        }
        for hook in self.columns() {
            let Some(floor) = medians(&Alongside::Floor, &Measure::NsPerRun(hook)) else {
                continue;
            };
            let ratios: Vec<String> = self
                .variants
                .iter()
                .filter(|variant| **variant != Alongside::Floor)
                .filter_map(|variant| {
                    let ns = medians(variant, &Measure::NsPerRun(hook))?;
                    Some(format!("{} {:.1}x", variant.label(), ns / floor))
                })
                .collect();
            if !ratios.is_empty() {
                let _ = writeln!(
                    report,
                    "- `{hook}` against the empty program's {floor:.0} ns/run (medians): {}",
                    ratios.join(", ")
                );
            }
        }
        for target in &self.targets {
            let (unit, what) = match target.measure {
                Measure::NsPerRun(hook) => ("ns/run", format!("`{hook}`")),
                Measure::NsPerOp => ("ns/op", "in-kernel time per operation".to_owned()),
            };
            let verdict = match (
                medians(&target.row, &target.measure),
                medians(&target.against, &target.measure),
            ) {
                (Some(row), Some(against)) if against > 0.0 => {
                    let ratio = row / against;
                    format!(
                        "{what}: {row:.0} against {against:.0} {unit}, {ratio:.2}x (at most \
                         {:.2}x): **{}**",
                        target.at_most,
                        if ratio <= target.at_most {
                            "met"
                        } else {
                            "not met"
                        }
                    )
                }
                _ => format!("{what}: not measured in this run"),
            };
            let _ = writeln!(
                report,
                "- target \"{}\", {} against {}: {verdict}",
                target.goal,
                target.row.label(),
                target.against.label()
            );
        }
        if self.split_dispatch {
            self.dispatch(results, report);
        }
    }

    /// Per tracer with bpf_stats on, the dispatch and the bodies (see [`Split`]).
    fn dispatch(&self, results: &[Results], report: &mut String) {
        let Some(at) = self.variants.iter().position(|v| *v == Alongside::Floor) else {
            return;
        };
        let floor = &results[at];
        let Some(per_run) = PerRun::of_floor(floor) else {
            let _ = writeln!(
                report,
                "- dispatch and bodies: not told apart in this run (the floor's wall time added \
                 per operation, {} ns, is no more than the in-kernel time bpf_stats timed in its \
                 empty programs: lost in the wall-time noise; more `--runs` or `--seconds`)",
                spread(&floor.added_ns_per_op, |v| format!("{v:.0}"))
            );
            return;
        };
        let _ = writeln!(
            report,
            "- dispatch and bodies: bpf_stats times a program's body, not the tracepoint calling \
             it. The floor's empty programs added {} ns of wall time per operation for {:.2} \
             program runs: {:.0} ns per program run before doing any work (the dispatch, with \
             bpf_stats on as in every row with statistics), of which bpf_stats timed {:.0} ns in \
             the empty body. Per tracer, medians: dispatch = its program runs per operation x \
             {:.0} ns; bodies = its in-kernel ns/op - {:.0} ns per program run",
            spread(&floor.added_ns_per_op, |v| format!("{v:.0}")),
            median(&floor.program_runs_per_op),
            per_run.dispatch,
            per_run.timed,
            per_run.dispatch,
            per_run.timed
        );
        for (variant, results) in self.variants.iter().zip(results) {
            if *variant == Alongside::Floor {
                continue;
            }
            if let Some(split) = per_run.split(results) {
                let _ = writeln!(
                    report,
                    "  - {}: dispatch {:.0} ns/op ({:.2} program runs), bodies {:.0} ns/op: the \
                     bodies are {:.0}% of the {:.0} ns/op",
                    variant.label(),
                    split.dispatch,
                    split.runs,
                    split.bodies,
                    split.bodies_percent(),
                    split.dispatch + split.bodies
                );
            }
        }
    }

    /// The wall-time throughput loss of observer against a peer ([`Scenario::paired`]), each run
    /// without bpf_stats, in `pairs` pairs: each tracer's run right after a baseline run of its
    /// own, the two tracers in turn, the one that goes first swapping from pair to pair so that a
    /// trend in this VM's speed favours neither. A pair's ratio compares the time each adds per
    /// operation as a share of its own baseline: a change in the VM's speed between the two
    /// halves of a pair scales a baseline and the run after it alike, and cancels out.
    fn pairs(&self, binary: &Path, pairs: u32, report: &mut String) -> Result<()> {
        let Some(tracers) = &self.paired else {
            return Ok(());
        };
        let [ours, theirs] = tracers.each_ref().map(Alongside::label);
        println!("==> {ours} against {theirs}: {pairs} alternating pairs");
        let before = CpuUse::read()?;
        let mut rows = Vec::new();
        let mut disturbed = 0;
        for pair in 1..=pairs {
            // (baseline, traced) us/op of each tracer.
            let mut runs = [(0.0, 0.0); 2];
            let order = if pair % 2 == 1 { [0, 1] } else { [1, 0] };
            for i in order {
                if !other_bpf_links().is_empty() {
                    disturbed += 1;
                }
                let baseline = self.workload.run()?.us_per_op;
                let (sample, _) = self.traced_by(binary, &tracers[i])?;
                println!(
                    "  [{pair}/{pairs}] baseline {baseline:.3} us/op, then {}: {:.3} us/op",
                    tracers[i].label(),
                    sample.us_per_op
                );
                runs[i] = (baseline, sample.us_per_op);
            }
            rows.push(runs);
        }
        let busy = CpuUse::read()?.since(&before);
        let _ = writeln!(
            report,
            "\nwall-time throughput loss, {ours} against {theirs}: `{}`, {pairs} alternating \
             pair{}, each tracer run right after its own baseline run, {} first in odd pairs and \
             {} in even ones; meanwhile {busy}; another process held BPF links in {disturbed} of \
             the {} runs",
            self.workload.shown(),
            if pairs == 1 { "" } else { "s" },
            tracers[0].label(),
            tracers[1].label(),
            pairs * 2
        );
        let _ = writeln!(
            report,
            "\n| pair | baseline us/op | {ours} us/op | time added per op | baseline us/op | \
             {theirs} us/op | time added per op | ratio of the time added, as a share of each \
             baseline |"
        );
        let _ = writeln!(
            report,
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let added = |(baseline, traced): (f64, f64)| {
            format!(
                "{:+.0} ns ({:+.1}%)",
                (traced - baseline) * 1e3,
                (traced / baseline - 1.0) * 100.0
            )
        };
        let mut ratios = Vec::new();
        for (pair, [a, b]) in rows.iter().enumerate() {
            let ratio = loss_ratio(*a, *b);
            ratios.extend(ratio);
            let _ = writeln!(
                report,
                "| {} | {:.3} | {:.3} | {} | {:.3} | {:.3} | {} | {} |",
                pair + 1,
                a.0,
                a.1,
                added(*a),
                b.0,
                b.1,
                added(*b),
                ratio.map_or("none: it added no time".to_owned(), |r| format!("{r:.2}"))
            );
        }
        let _ = writeln!(
            report,
            "\n- ratio of the time added per operation, each as a share of its own baseline run, \
             {ours} over {theirs}: {} over {} of {pairs} pair{} (issue 14's goal: 0.5)",
            if ratios.is_empty() {
                "not measured".to_owned()
            } else {
                spread(&ratios, |v| format!("{v:.2}"))
            },
            ratios.len(),
            if pairs == 1 { "" } else { "s" },
        );
        Ok(())
    }
}

/// One pair's ratio: the time `ours` added per operation over the time `theirs` added, each as a
/// share of its own baseline, from (baseline, traced) us/op. None when `theirs` added no time (a
/// ratio to noise around zero means nothing).
fn loss_ratio(ours: (f64, f64), theirs: (f64, f64)) -> Option<f64> {
    let loss = |(baseline, traced): (f64, f64)| traced / baseline - 1.0;
    (loss(theirs) > 0.0).then(|| loss(ours) / loss(theirs))
}

/// Which part of a tracer's cost per operation is the tracepoint's dispatch, which any tracer
/// with as many programs on the same hooks pays, and which its programs' bodies. bpf_stats times
/// only the call of a program's body (with part of its own clock reads), so the dispatch (the
/// tracepoint calling each attached program in turn: the probe, the recursion guard, RCU, the
/// statistics' bookkeeping) shows only in wall time. The floor's programs do nothing, so its wall
/// time added per operation over its program runs per operation is what one program run costs
/// before doing any work: the dispatch, with bpf_stats on (as in every row with statistics; a
/// tracer without them pays a little less). A tracer pays it once per program run (two programs
/// on one hook are two calls, though the second skips the tracepoint's own work, so this
/// slightly overstates the dispatch of a tracer with several programs on a hook); its bodies are
/// its in-kernel time minus, per program run, what bpf_stats timed in the floor's empty body.
/// Medians over the runs; the floor's wall time is as noisy as every wall-time figure here,
/// which the report shows with its spread.
#[derive(Debug, PartialEq)]
struct Split {
    /// ns per operation.
    dispatch: f64,
    bodies: f64,
    /// Program runs per operation.
    runs: f64,
}

/// The floor's figures per program run, in ns.
#[derive(Debug, PartialEq)]
struct PerRun {
    /// Wall time added.
    dispatch: f64,
    /// What bpf_stats timed in the empty body.
    timed: f64,
}

impl Split {
    fn bodies_percent(&self) -> f64 {
        100.0 * self.bodies / (self.dispatch + self.bodies)
    }
}

impl PerRun {
    /// From the floor's runs; None when its wall time added is no more than what bpf_stats
    /// timed (wall-time noise swamped it).
    fn of_floor(floor: &Results) -> Option<Self> {
        let [added, timed, runs] = [
            &floor.added_ns_per_op,
            &floor.kernel_ns_per_op,
            &floor.program_runs_per_op,
        ]
        .map(|values| (!values.is_empty()).then(|| median(values)));
        let (added, timed, runs) = (added?, timed?, runs?);
        (runs > 0.0 && added > timed).then(|| Self {
            dispatch: added / runs,
            timed: timed / runs,
        })
    }

    /// A tracer's split (None without bpf_stats: no runs counted).
    fn split(&self, tracer: &Results) -> Option<Split> {
        if tracer.program_runs_per_op.is_empty() {
            return None;
        }
        let runs = median(&tracer.program_runs_per_op);
        Some(Split {
            dispatch: runs * self.dispatch,
            bodies: median(&tracer.kernel_ns_per_op) - runs * self.timed,
            runs,
        })
    }
}

/// Runs the workload while `observer ARGS` (`record ...` or `floor ...`) runs, then stops it as
/// Ctrl-C would; with `stats`, its programs' cost over the workload is read from /proc (observer
/// turns bpf_stats on itself: `record --stats`, `floor`).
fn observe(
    binary: &Path,
    args: &[&str],
    stats: bool,
    workload: &Workload,
) -> Result<(Sample, Option<Costs>)> {
    let mut command = Command::new(binary);
    // Longer than any workload: SIGINT ends it.
    command
        .args(args)
        .args(["--duration", "1h"])
        .stdout(Stdio::null());
    let mut observer = Background::spawn(command, "observer")?;
    observer.wait_attached()?;
    let measured = traced(observer.child.id(), stats, workload)?;
    observer.interrupt()?;
    Ok(measured)
}

/// Runs the workload while a libbpf-tools peer traces, then stops it as Ctrl-C would. The peers
/// have no --stats: with `stats`, bpf_stats is turned on around it.
fn with_peer(
    tool: &'static str,
    workload: &Workload,
    stats: bool,
) -> Result<(Sample, Option<Costs>)> {
    let _stats = stats.then(BpfStats::enable).transpose()?;
    let mut command = Command::new(tool);
    command.stdout(Stdio::null());
    let mut peer = Background::spawn(command, tool)?;
    peer.wait_attached()?;
    let measured = traced(peer.child.id(), stats, workload)?;
    peer.interrupt()?;
    Ok(measured)
}

/// Whether a peer can attach its programs on this kernel; if not, what it said.
fn peer_attaches(tool: &'static str) -> Result<Result<(), String>> {
    let mut command = Command::new(tool);
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut peer = Background::spawn(command, tool)?;
    if peer.wait_attached().is_ok() {
        peer.interrupt()?;
        return Ok(Ok(()));
    }
    let _ = peer.child.kill();
    let mut said = String::new();
    if let Some(mut stderr) = peer.child.stderr.take() {
        let _ = stderr.read_to_string(&mut said);
    }
    let lines: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Ok(Err(if lines.is_empty() {
        "nothing".to_owned()
    } else {
        lines.join(" / ")
    }))
}

/// Runs the workload while the tracer `pid` traces; with `stats` (bpf_stats on), also what its
/// programs did over exactly the workload, from /proc/<pid>/fdinfo before and after it.
fn traced(pid: u32, stats: bool, workload: &Workload) -> Result<(Sample, Option<Costs>)> {
    let before = stats.then(|| hook_runs(pid)).transpose()?;
    let sample = workload.run()?;
    let costs = match before {
        Some(before) => Some(Costs::between(&before, hook_runs(pid)?)),
        None => None,
    };
    Ok((sample, costs))
}

/// Per hook, (runs, run time in ns) summed over the programs attached there.
type HookRuns = BTreeMap<String, (u64, u64)>;

/// What a tracer's programs did during one workload run, by hook (bpf_stats).
struct Costs(HookRuns);

impl Costs {
    fn between(before: &HookRuns, after: HookRuns) -> Self {
        Self(
            after
                .into_iter()
                .map(|(hook, (runs, ns))| {
                    let (runs0, ns0) = before.get(&hook).copied().unwrap_or_default();
                    (hook, (runs.saturating_sub(runs0), ns.saturating_sub(ns0)))
                })
                .collect(),
        )
    }

    /// Whether the tracer has a program on `hook`.
    fn hooked(&self, hook: &str) -> bool {
        self.0.contains_key(hook)
    }

    /// Runs on `hook` (0 if nothing is attached there).
    fn runs(&self, hook: &str) -> u64 {
        self.0.get(hook).map_or(0, |&(runs, _)| runs)
    }

    /// Run time per run on `hook`; `None` without runs.
    fn ns_per_run(&self, hook: &str) -> Option<f64> {
        let &(runs, ns) = self.0.get(hook)?;
        (runs > 0).then(|| ns as f64 / runs as f64)
    }

    /// All programs' run time.
    fn total_ns(&self) -> u64 {
        self.0.values().map(|&(_, ns)| ns).sum()
    }

    /// All programs' runs.
    fn total_runs(&self) -> u64 {
        self.0.values().map(|&(runs, _)| runs).sum()
    }
}

/// `observer run` in the background with only a Prometheus endpoint on a free loopback port
/// (no OTLP: no `OTEL_*` variable reaches it), killed when dropped.
struct Agent {
    process: Background,
    addr: std::net::SocketAddr,
}

impl Agent {
    fn start(binary: &Path, config: &str) -> Result<Self> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free loopback port")?;
        let path = std::env::temp_dir().join(format!("observer-bench-{}.toml", std::process::id()));
        fs::write(
            &path,
            format!("{config}\n[otlp]\nenabled = false\n[prometheus]\nlisten = \"{addr}\"\n"),
        )?;
        let mut command = Command::new(binary);
        command
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OTEL_") {
                command.env_remove(key);
            }
        }
        let process = Background::spawn(command, "observer run")?;
        let agent = Self { process, addr };
        let start = Instant::now();
        while agent.scrape().is_err() {
            if start.elapsed() > ATTACH_TIMEOUT * 3 {
                bail!("observer run did not serve /metrics on {addr} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = fs::remove_file(&path);
        Ok(agent)
    }

    /// Stops it with SIGINT, as Ctrl-C would, and checks that it exited cleanly.
    fn stop(self) -> Result<()> {
        self.process.interrupt()
    }

    /// GET /metrics (Prometheus text format).
    fn scrape(&self) -> Result<String> {
        use std::io::Write as _;
        let mut stream = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
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

    /// The value of the one sample of `name` whose labels contain `labels`.
    fn value(&self, name: &str, labels: &str) -> Result<Option<f64>> {
        Ok(sample_value(&self.scrape()?, name, labels))
    }

    /// /proc/<pid>/stat utime + stime, in clock ticks (USER_HZ, 100 per second on Linux).
    fn cpu_ticks(&self) -> Result<u64> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.process.child.id()))?;
        stat.rsplit_once(") ")
            .context("no `(comm) ` in the agent's stat")?
            .1
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(str::parse::<u64>)
            .sum::<Result<_, _>>()
            .context("parsing the agent's stat")
    }

    /// A `VmRSS`-style line of /proc/<pid>/status, in kB.
    fn status_kb(&self, key: &str) -> Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.process.child.id()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {key} in the agent's status"))
    }
}

/// The value of the one sample of `name` in a Prometheus text exposition whose labels contain
/// `labels` (`""`: any).
fn sample_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let mut found = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && rest.contains(labels)).then(|| value.parse().ok())?
        });
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// What the agent is measured under: the machine as it is, or fork storms that keep its
/// per-process breakdown maps at capacity.
#[derive(Clone, Copy)]
pub enum AgentLoad {
    Normal,
    FullMaps,
}

/// What the agent cost over its measurement window, scraped every second.
pub struct AgentCost {
    cpu_s: f64,
    wall_s: f64,
    /// `VmRSS` at each scrape.
    rss_kb: Vec<u64>,
    /// `VmHWM` at the end: the peak since the agent started.
    hwm_kb: u64,
    /// `observer_collection_duration_seconds` at each scrape: the latest collection's time.
    collection_s: Vec<f64>,
    /// The run-queue per-process map's fullness, highest seen.
    fullness: f64,
}

impl AgentCost {
    pub fn cpu_percent(&self) -> f64 {
        100.0 * self.cpu_s / self.wall_s
    }

    pub fn rss_median_kb(&self) -> f64 {
        median(&self.rss_kb.iter().map(|&kb| kb as f64).collect::<Vec<_>>())
    }

    pub fn rss_max_kb(&self) -> u64 {
        self.rss_kb.iter().copied().max().unwrap_or_default()
    }

    pub fn hwm_kb(&self) -> u64 {
        self.hwm_kb
    }

    pub fn collection_median_ms(&self) -> f64 {
        1e3 * median(&self.collection_s)
    }

    pub fn collection_max_ms(&self) -> f64 {
        1e3 * self.collection_s.iter().copied().fold(0.0, f64::max)
    }

    /// One line of the report.
    fn shown(&self) -> String {
        format!(
            "{:.2}% of one CPU ({:.2} s of CPU in {:.1} s, {} scrapes; /proc/PID/stat at 10 ms \
             resolution); VmRSS median {:.0} kB ({}..{} kB), VmHWM {} kB; a collection took \
             {:.1} ms (median; at most {:.1} ms); run-queue per-process map at most {:.0}% full",
            self.cpu_percent(),
            self.cpu_s,
            self.wall_s,
            self.rss_kb.len(),
            self.rss_median_kb(),
            self.rss_kb.iter().min().copied().unwrap_or_default(),
            self.rss_max_kb(),
            self.hwm_kb,
            self.collection_median_ms(),
            self.collection_max_ms(),
            100.0 * self.fullness
        )
    }
}

/// `observer run` with every signal, collecting every second, scraped every second by the
/// bench (as Prometheus would), measured over a window after a warm-up, then stopped with
/// SIGINT (an instrumented build writes its profile at exit). At [`AgentLoad::FullMaps`],
/// `observer-loadgen storm` runs throughout, and the window starts once the run-queue map is
/// full.
pub fn agent_cost(binary: &Path, loadgen: &Path, load: AgentLoad) -> Result<AgentCost> {
    let agent = Agent::start(binary, "[agent]\ninterval = \"1s\"")?;
    let fullness = |body: &str| sample_value(body, "observer_map_utilization", RUNQ_MAP_LABEL);
    let (window, _storm) = match load {
        AgentLoad::Normal => {
            // Warm up: a few collections and scrapes.
            for _ in 0..3 {
                agent.scrape()?;
                std::thread::sleep(Duration::from_secs(1));
            }
            (AGENT_WINDOW, None)
        }
        AgentLoad::FullMaps => {
            let cgroups = CgroupDir::create("bench")?;
            let mut command = Command::new(loadgen);
            command
                .arg("storm")
                .arg(&cgroups.dir)
                .args([STORM_CGROUPS, STORM_PROCS, "600"])
                .stdout(Stdio::null());
            // Dropped in this order: the storm (its processes exit with it), then its cgroups.
            let storm = (
                Background::spawn(command, "observer-loadgen storm")?,
                cgroups,
            );
            let start = Instant::now();
            while fullness(&agent.scrape()?).unwrap_or_default() < FULL {
                if start.elapsed() > Duration::from_secs(60) {
                    bail!("the fork storm did not fill the run-queue map within 60 s");
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            (FULL_MAPS_WINDOW, Some(storm))
        }
    };
    let (ticks0, start) = (agent.cpu_ticks()?, Instant::now());
    let mut cost = AgentCost {
        cpu_s: 0.0,
        wall_s: 0.0,
        rss_kb: Vec::new(),
        hwm_kb: 0,
        collection_s: Vec::new(),
        fullness: 0.0,
    };
    while start.elapsed() < window {
        let body = agent.scrape()?;
        cost.rss_kb.push(agent.status_kb("VmRSS")?);
        cost.collection_s.extend(sample_value(
            &body,
            "observer_collection_duration_seconds",
            "",
        ));
        cost.fullness = cost.fullness.max(fullness(&body).unwrap_or_default());
        std::thread::sleep(Duration::from_secs(1));
    }
    cost.wall_s = start.elapsed().as_secs_f64();
    cost.cpu_s = (agent.cpu_ticks()? - ticks0) as f64 / 100.0;
    cost.hwm_kb = agent.status_kb("VmHWM")?;
    agent.stop()?;
    Ok(cost)
}

/// The overhead budget at work under the scheduler workload: the agent (run-queue signal only)
/// measures its programs' cost at start with a budget of 100% (measured, never reached: every
/// wait timed; without a budget nothing is measured); with a budget of half that cost it
/// samples, and its next measurement, one period later, gives the cost at the rate chosen.
fn budget_demo(binary: &Path, report: &mut String) -> Result<()> {
    println!("==> the overhead budget under `{}`", SCHED_PIPE.join(" "));
    // Long enough for two measurements, a measurement period apart; killed when done.
    let mut load = Command::new(SCHED_PIPE[0]);
    // perf reads -l into an int: a count over 2^31 wraps negative and it exits at once.
    load.args(&SCHED_PIPE[1..])
        .args(["-l", "2000000000"])
        .stdout(Stdio::null());
    let _load = Background::spawn(load, "perf bench sched pipe")?;
    let cost = |agent: &Agent| agent.value("observer_overhead_cpu_utilization", "runqueue");
    let sampling = |agent: &Agent| agent.value("observer_runqueue_sampling", "");
    let wait_for = |agent: &Agent, what: &str, done: &dyn Fn(&Agent) -> Result<bool>| {
        let start = Instant::now();
        loop {
            if done(agent)? {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(75) {
                bail!("observer run: {what} not seen within 75 s");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let config = |budget: f64| {
        format!(
            "[agent]\ninterval = \"1s\"\nsignals = [\"runqueue\"]\nmax_overhead_percent = {budget}"
        )
    };

    let agent = Agent::start(binary, &config(100.0))?;
    wait_for(&agent, "a first cost", &|a| Ok(cost(a)?.is_some()))?;
    let full = cost(&agent)?.unwrap_or_default() * 100.0;
    drop(agent);
    if full <= 0.0 {
        bail!("observer run measured no cost for the run-queue programs under the load");
    }
    let budget = full / 2.0;
    println!("  every wait timed: {full:.3}% of all CPUs' time; now with a budget of {budget:.3}%");
    let agent = Agent::start(binary, &config(budget))?;
    wait_for(&agent, "a first cost", &|a| Ok(cost(a)?.is_some()))?;
    let first = cost(&agent)?.unwrap_or_default() * 100.0;
    let chosen = sampling(&agent)?.unwrap_or(1.0);
    // The next measurement, one period later, is at the sampling chosen.
    wait_for(&agent, "a second measurement", &|a| {
        Ok(cost(a)?.is_some_and(|c| (c * 100.0 - first).abs() > f64::EPSILON))
    })?;
    let second = cost(&agent)?.unwrap_or_default() * 100.0;
    let after = sampling(&agent)?.unwrap_or(1.0);
    let _ = writeln!(
        report,
        "\noverhead budget under `{} -l ...` (running throughout; `observer run` with the \
         run-queue signal only, interval 1 s): every wait timed, the programs cost {full:.3}% of \
         all CPUs' time; with `max_overhead_percent = {budget:.3}` (half that) the first \
         measurement ({first:.3}%) made it time 1 in {chosen:.0} waits, and the next, {} s later, \
         measured {second:.3}% ({}), after which it times 1 in {after:.0}",
        SCHED_PIPE.join(" "),
        BUDGET_PERIOD_S,
        if second <= budget {
            "within the budget"
        } else {
            "still over the budget"
        }
    );
    Ok(())
}

/// The agent's measurement period at a 1 s interval (observer's agent::budget::PERIOD_MIN).
const BUDGET_PERIOD_S: u64 = 30;

/// kernel.bpf_stats_enabled turned on, and back to what it was when dropped.
struct BpfStats {
    previous: String,
}

impl BpfStats {
    fn enable() -> Result<Self> {
        let previous = fs::read_to_string(BPF_STATS_SYSCTL)
            .with_context(|| format!("reading {BPF_STATS_SYSCTL}"))?;
        fs::write(BPF_STATS_SYSCTL, "1")
            .with_context(|| format!("writing 1 to {BPF_STATS_SYSCTL}"))?;
        Ok(Self { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS_SYSCTL, self.previous.trim());
    }
}

/// A process's BPF programs' runs and run time by the hook they are attached to, from
/// /proc/<pid>/fdinfo (see [`parse_hook_runs`]).
fn hook_runs(pid: u32) -> Result<HookRuns> {
    let fdinfo = format!("/proc/{pid}/fdinfo");
    let mut entries = Vec::new();
    for entry in fs::read_dir(&fdinfo).with_context(|| format!("listing {fdinfo}"))? {
        // Skipped when closed since listed.
        if let Ok(text) = fs::read_to_string(entry?.path()) {
            entries.push(text);
        }
    }
    Ok(parse_hook_runs(&entries))
}

/// From a process's fdinfo entries: a link's entry names its program (`prog_id`) and, for a
/// tracepoint, its hook (`tp_name`); a program's entry holds bpf_stats' `run_cnt` and
/// `run_time_ns`. Programs on the same hook (runqueue's and futex's on sched_process_exec, say)
/// are summed.
fn parse_hook_runs(entries: &[String]) -> HookRuns {
    let mut links = Vec::new();
    let mut programs = BTreeMap::new();
    for text in entries {
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let number = |name: &str| field(name).and_then(|value| value.parse::<u64>().ok());
        if let (Some(link_type), Some(program)) = (field("link_type"), number("prog_id")) {
            // Tracepoint links name their hook; others (fentry, kprobe: a peer's) count under
            // their type and program, for the total.
            let hook = field("tp_name").map_or_else(
                || format!("{link_type} link of program {program}"),
                str::to_owned,
            );
            links.push((hook, program));
        } else if let (Some(program), Some(runs), Some(ns)) =
            (number("prog_id"), number("run_cnt"), number("run_time_ns"))
        {
            programs.insert(program, (runs, ns));
        }
    }
    let mut hooks = HookRuns::new();
    for (hook, program) in links {
        if let Some(&(runs, ns)) = programs.get(&program) {
            let sum = hooks.entry(hook).or_default();
            *sum = (sum.0 + runs, sum.1 + ns);
        }
    }
    hooks
}

/// A tracer running next to the workload (standard error inherited, so its errors show); killed
/// if the bench fails while it runs.
struct Background {
    child: Child,
    name: &'static str,
}

impl Background {
    fn spawn(mut command: Command, name: &'static str) -> Result<Self> {
        let child = command
            .spawn()
            .with_context(|| format!("could not start {name}"))?;
        Ok(Self { child, name })
    }

    /// Waits until the tracer's programs are attached: a workload started earlier would be
    /// partly unobserved.
    fn wait_attached(&mut self) -> Result<()> {
        let start = Instant::now();
        let (mut links, mut since) = (0, start);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before attaching its programs; its error is above",
                    self.name
                );
            }
            let now = bpf_links(self.child.id());
            if now != links {
                (links, since) = (now, Instant::now());
            } else if links > 0 && since.elapsed() >= ATTACH_SETTLE {
                return Ok(());
            }
            if start.elapsed() > ATTACH_TIMEOUT {
                bail!(
                    "{} attached no BPF links within {} s; `observer check -v` says whether \
                     this kernel can run its programs",
                    self.name,
                    ATTACH_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Background {
    /// Stops it as Ctrl-C would (observer and the peers report and exit cleanly on SIGINT) and
    /// checks that it did.
    fn interrupt(mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status}); its error is above", self.name);
        }
        Cmd::new("kill", &["-INT", &self.child.id().to_string()]).query()?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("{} failed ({status}); its error is above", self.name);
        }
        Ok(())
    }
}

impl Drop for Background {
    /// Kills its children first: `perf bench sched pipe` forks the pipe's other end, which
    /// would outlive its parent and spin on. (Not a process group of its own: Ctrl-C at the
    /// terminal must still reach everything the bench started.)
    fn drop(&mut self) {
        let _ = Cmd::new("pkill", &["-KILL", "-P", &self.child.id().to_string()]).query();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

/// `median (min to max)` as `show` prints each, or the one value of a single run.
fn spread(values: &[f64], show: impl Fn(f64) -> String) -> String {
    let median = median(values);
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.len() == 1 {
        show(median)
    } else {
        format!("{} ({} to {})", show(median), show(min), show(max))
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Alongside, Costs, Kind, Measure, PerRun, RUNQ_MAP_LABEL, Results, Scenario, Split, Target,
        Workload, loss_ratio, median, parse_fio_us_per_read, parse_hook_runs, parse_loadgen_ops,
        parse_us_per_op, sample_value, spread,
    };

    /// The scheduler scenario's hooks and a target: observer's run-queue signal starts waits at
    /// sched_waking, runqlat at sched_wakeup, and either is whole; one without a wakeup hook,
    /// or a floor missing any hook, is not.
    #[test]
    fn a_compared_tracer_needs_a_program_on_every_event() {
        let runqlat = || Alongside::Peer {
            tool: "runqlat",
            stats: true,
        };
        let scenario = Scenario {
            title: "scheduler",
            workload: Workload {
                kind: Kind::PerfBench(1),
                command: vec!["perf".to_owned()],
            },
            variants: Vec::new(),
            hooks: &[&["sched_switch"], &["sched_waking", "sched_wakeup"]],
            note: None,
            targets: vec![Target {
                goal: "cheaper",
                row: Alongside::Observer(&["--stats"]),
                against: runqlat(),
                measure: Measure::NsPerOp,
                at_most: 0.6,
            }],
            split_dispatch: true,
            paired: None,
        };
        let on = |hooks: &[&str]| {
            Costs(
                hooks
                    .iter()
                    .map(|hook| ((*hook).to_owned(), (1, 100)))
                    .collect(),
            )
        };
        let observer = Alongside::Observer(&["--stats"]);
        let waking = on(&["sched_switch", "sched_waking", "sched_process_exec"]);
        assert_eq!(scenario.unhooked(&observer, &waking), None);
        assert_eq!(
            scenario.unhooked(&runqlat(), &on(&["sched_wakeup", "sched_switch"])),
            None
        );
        assert_eq!(
            scenario
                .unhooked(&observer, &on(&["sched_switch"]))
                .as_deref(),
            Some("sched_waking or sched_wakeup")
        );
        // Compared by no target: anything goes.
        let futex = Alongside::Observer(&["--signals", "futex", "--stats"]);
        assert_eq!(scenario.unhooked(&futex, &on(&["sched_switch"])), None);
        assert_eq!(
            scenario.unhooked(&Alongside::Floor, &waking).as_deref(),
            Some("sched_wakeup")
        );
    }

    #[test]
    fn pair_ratio_compares_losses_against_each_baseline() {
        // observer +10% on a 4 us baseline, runqlat +25% on a 3 us one (the VM ran faster for
        // runqlat's half): 0.4, where the absolute times added (0.4 and 0.75 us) would say 0.53.
        let ratio = loss_ratio((4.0, 4.4), (3.0, 3.75)).unwrap();
        assert!((ratio - 0.4).abs() < 1e-9, "{ratio}");
        // observer faster than its baseline (noise): a negative ratio, kept.
        assert!(loss_ratio((4.0, 3.9), (4.0, 5.0)).unwrap() < 0.0);
        // runqlat no slower than its baseline: no ratio.
        assert_eq!(loss_ratio((4.0, 4.4), (4.0, 4.0)), None);
        assert_eq!(loss_ratio((4.0, 4.4), (4.0, 3.8)), None);
    }

    #[test]
    fn dispatch_and_bodies_from_the_floor() {
        let results = |added: &[f64], kernel: &[f64], runs: &[f64]| Results {
            added_ns_per_op: added.to_vec(),
            kernel_ns_per_op: kernel.to_vec(),
            program_runs_per_op: runs.to_vec(),
            ..Results::default()
        };
        // The floor: 300 ns/op of wall time and 100 ns/op timed, for 2 program runs per op.
        let floor = results(
            &[250.0, 300.0, 400.0],
            &[90.0, 100.0, 110.0],
            &[2.0, 2.0, 2.0],
        );
        let per_run = PerRun::of_floor(&floor).unwrap();
        assert_eq!(
            per_run,
            PerRun {
                dispatch: 150.0,
                timed: 50.0
            }
        );
        // Twice the floor's program runs (two programs on a hook): twice its dispatch; the
        // bodies are what bpf_stats timed beyond four empty programs.
        let tracer = results(&[900.0], &[500.0, 600.0, 700.0], &[4.0, 4.0, 4.0]);
        let split = per_run.split(&tracer).unwrap();
        assert_eq!(
            split,
            Split {
                dispatch: 600.0,
                bodies: 400.0,
                runs: 4.0
            }
        );
        assert_eq!(split.bodies_percent(), 40.0);
        // Without bpf_stats nothing was counted: no split.
        assert_eq!(per_run.split(&results(&[900.0], &[], &[])), None);
        // A floor whose wall time added is lost in the noise tells nothing.
        assert_eq!(
            PerRun::of_floor(&results(&[-50.0, 80.0, 90.0], &[100.0], &[2.0])),
            None
        );
    }

    #[test]
    fn reads_fio_json_as_us_per_read() {
        let output = "note: both iodepth >= 1 and synchronous I/O engine are selected\n\
                      {\"fio version\": \"fio-3.33\", \"jobs\": [{\"jobname\": \"x\", \
                      \"read\": {\"io_bytes\": 4096, \"iops\": 50000.0}}]}";
        assert_eq!(parse_fio_us_per_read(output), Some(20.0));
        assert_eq!(parse_fio_us_per_read("{\"jobs\": []}"), None);
        assert_eq!(parse_fio_us_per_read("fio: no such file"), None);
    }

    #[test]
    fn reads_one_prometheus_sample() {
        let text = "# TYPE a gauge\na 1.5\nb{observer_signal=\"runqueue\"} 0.25\n\
                    b{observer_signal=\"futex\"} 0.5\n";
        assert_eq!(sample_value(text, "a", ""), Some(1.5));
        assert_eq!(sample_value(text, "b", "runqueue"), Some(0.25));
        // Two samples match: ambiguous, so none.
        assert_eq!(sample_value(text, "b", ""), None);
        assert_eq!(sample_value(text, "c", ""), None);
    }

    #[test]
    fn reads_the_run_queue_maps_fullness_not_the_futex_one() {
        // As the agent exports it: one gauge per bounded map.
        let text = "observer_map_utilization{observer_map=\"FUTEX_BY_PROCESS\"} 0.5\n\
                    observer_map_utilization{observer_map=\"RUNQ_BY_PROCESS\"} 0.97\n\
                    observer_collection_duration_seconds 0.061\n";
        assert_eq!(
            sample_value(text, "observer_map_utilization", RUNQ_MAP_LABEL),
            Some(0.97)
        );
        assert_eq!(
            sample_value(text, "observer_collection_duration_seconds", ""),
            Some(0.061)
        );
    }

    #[test]
    fn reads_perf_bench_us_per_op() {
        let output = "# Running 'sched/pipe' benchmark:\n\
                      # Executed 200000 pipe operations between two processes\n\n     \
                      Total time: 0.899 [sec]\n\n       4.498690 usecs/op\n         \
                      222286 ops/sec\n";
        assert_eq!(parse_us_per_op(output), Some(4.498690));
        assert_eq!(
            parse_us_per_op("# Running 'syscall/basic' benchmark:\n"),
            None
        );
    }

    #[test]
    fn reads_loadgen_ops() {
        assert_eq!(parse_loadgen_ops("mmap_munmap 137060\n"), Some(137060));
        assert_eq!(parse_loadgen_ops("mmap_munmap x\n"), None);
        assert_eq!(parse_loadgen_ops(""), None);
    }

    /// Entries as /proc/<pid>/fdinfo shows them (kernel 6.18): two programs on sched_switch,
    /// one on sched_wakeup, a map and a program without a link, which count for nothing.
    #[test]
    fn reads_runs_by_hook_from_fdinfo() {
        let program = |id: u64, runs: u64, ns: u64| {
            format!(
                "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\nprog_type:\t26\n\
                 prog_jited:\t1\nprog_tag:\t532be08487957b83\nmemlock:\t4096\n\
                 prog_id:\t{id}\nrun_time_ns:\t{ns}\nrun_cnt:\t{runs}\n\
                 recursion_misses:\t0\nverified_insns:\t31\n"
            )
        };
        let link = |id: u64, hook: &str| {
            format!(
                "pos:\t0\nflags:\t02000000\nmnt_id:\t16\nino:\t1057\n\
                 link_type:\traw_tracepoint\nlink_id:\t7989\nprog_tag:\t532be08487957b83\n\
                 prog_id:\t{id}\ntp_name:\t{hook}\ncookie:\t0\n"
            )
        };
        let map = "pos:\t0\nmap_type:\t6\nkey_size:\t4\nmap_id:\t29020\n".to_owned();
        let entries = [
            program(11, 400, 80_000),
            link(11, "sched_switch"),
            map,
            program(12, 100, 30_000),
            link(12, "sched_switch"),
            program(13, 50, 5_000),
            link(13, "sched_wakeup"),
            program(14, 7, 700),
            program(15, 3, 900),
            "link_type:\ttracing\nlink_id:\t8000\nprog_tag:\t532be08487957b83\n\
             prog_id:\t15\nattach_type:\t24\ntarget_obj_id:\t1\ntarget_btf_id:\t9\n"
                .to_owned(),
        ];
        let runs = parse_hook_runs(&entries);
        assert_eq!(runs.len(), 3, "{runs:?}");
        assert_eq!(runs["tracing link of program 15"], (3, 900));
        assert_eq!(runs["sched_switch"], (500, 110_000));
        assert_eq!(runs["sched_wakeup"], (50, 5_000));

        let mut after = runs.clone();
        after.remove("tracing link of program 15");
        after.insert("sched_switch".to_owned(), (700, 150_000));
        // Attached after the first read: all its runs count.
        after.insert("sys_enter".to_owned(), (10, 500));
        let costs = Costs::between(&runs, after);
        assert_eq!(costs.ns_per_run("sched_switch"), Some(200.0));
        // Attached, but nothing ran: no figure rather than 0 ns.
        assert!(costs.hooked("sched_wakeup"));
        assert_eq!(costs.ns_per_run("sched_wakeup"), None);
        assert!(!costs.hooked("sys_exit"));
        assert_eq!(costs.total_ns(), 40_500);
        assert_eq!(
            (costs.runs("sched_switch"), costs.runs("sys_exit")),
            (200, 0)
        );
    }

    #[test]
    fn labels_say_which_signals() {
        assert_eq!(
            Alongside::Observer(&["--stats"]).label(),
            "`observer record --stats` (all signals)"
        );
        assert_eq!(
            Alongside::Observer(&[]).label(),
            "`observer record` (all signals)"
        );
        assert_eq!(
            Alongside::Observer(&["--signals", "lock"]).label(),
            "`observer record --signals lock`"
        );
    }

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(
            spread(&[4.5, -4.25, 5.0], |v| format!("{v:+.1}%")),
            "+4.5% (-4.2% to +5.0%)"
        );
        assert_eq!(spread(&[117.9], |v| format!("{v:.0}")), "118");
    }
}
