//! Tuning actions: what a rule may do when its threshold is breached. Each kind of action is a
//! small module behind one trait, [`Action`]; an action only *plans* ([`Action::plan`]) and the
//! rule engine (`crate::rules`) decides whether to carry the plan out (dry-run or enforce), records
//! it, rate-limits it and puts things back.
//!
//! Everything an action changes is a [`Knob`]: a setting that can be read, written and written
//! back. Knobs are serializable because the engine persists each original value *before* changing
//! it, so a restart after a crash can restore it.

use std::{ops::Range, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::signals::Signal;

/// The breakdown a rule watches, so each target (a cgroup, a process, a disk...) is judged on
/// its own and the action knows whom to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Per {
    /// The whole host: one target.
    Host,
    Cgroup,
    Process,
    Disk,
    Remote,
    LockClass,
}

/// What a breach is about: the offender the action may act on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Host,
    /// A cgroup v2 id (its directory's inode) and its path under the cgroup2 mount, as `/a/b`.
    Cgroup { id: u64, path: String },
    /// A process (thread group) and the cgroup it ran in.
    Process { pid: u32, name: String, cgroup_path: String },
    /// A block device by kernel name (`sda`, `nvme0n1`, `loop3`).
    Disk { name: String },
    /// A TCP peer address as exported (`10.0.0.1`, `::1`).
    Remote { address: String },
    LockClass { class: String },
}

/// A breached rule, as handed to [`Action::plan`] and described to `exec` commands.
#[derive(Clone, Debug)]
pub struct Breach {
    pub rule: String,
    pub signal: Signal,
    /// `p50`, `p99`, `p999`, `rate`...
    pub statistic: String,
    /// The value observed over `window`, in `unit`.
    pub observed: f64,
    pub threshold: f64,
    /// `ns` for latencies, `1/s` for rates.
    pub unit: &'static str,
    pub window: Duration,
    pub target: Target,
}

/// A setting observer can change and put back. This is what the state file persists, so the
/// serialized form is part of observer's on-disk format: add variants, do not change them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Knob {
    /// `/proc/sys/<key with dots as slashes>`, in the network namespace of the agent.
    Sysctl { key: String },
    /// `/sys/block/<device>/queue/scheduler`.
    IoScheduler { device: String },
    /// `/sys/devices/system/cpu/cpu<cpu>/cpufreq/scaling_governor`.
    CpuGovernor { cpu: u32 },
    /// A file of a cgroup (`cpu.weight`, `io.weight`, `cpu.max`); `path` is absolute.
    CgroupFile { path: PathBuf, file: String },
    /// The nice value of every thread of a process. `start_time` (field 22 of
    /// `/proc/<pid>/stat`) tells a reused pid from the process we changed.
    Nice { pid: u32, start_time: u64 },
    /// The CPU affinity of every thread of a process, as a CPU list (`0-3,8`).
    Affinity { pid: u32, start_time: u64 },
}

/// One thing an action wants done for a breach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Set `knob` to `value` (in the knob's own text form, as [`Knob::read`] returns it).
    Set { knob: Knob, value: String },
    /// Run a command (never through a shell) with the breach in its environment.
    Run(Command),
    /// Record the breach only.
    Log,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Absolute path of the program, then its arguments, exactly as configured.
    pub argv: Vec<String>,
    pub timeout: Duration,
}

/// An action built from the config: plans the [`Step`]s for one breach.
pub trait Action: Send + Sync + std::fmt::Debug {
    /// The `type` it was configured with (`sysctl`, `io_scheduler`, ...).
    fn kind(&self) -> &'static str;
    /// What it does, for logs and audit records: `sysctl net.core.somaxconn=4096`.
    fn describe(&self) -> String;
    /// The steps for `breach`. Errors name what is missing on this machine (no such sysctl, no
    /// cpufreq, the process is gone) and how to fix it.
    fn plan(&self, breach: &Breach) -> Result<Vec<Step>, ActionError>;
}

/// Why an action or a knob failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A config error in an action, at `span` of the config file; `key` is the field (`value`,
/// `key`, ...) within the action.
#[derive(Debug)]
pub struct Invalid {
    pub span: Range<usize>,
    pub key: &'static str,
    pub message: String,
}
