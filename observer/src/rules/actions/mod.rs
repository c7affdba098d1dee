//! Tuning actions: what a rule may do when its threshold is breached. Each kind of action is a
//! small module behind one trait, [`Action`]; an action only *plans* ([`Action::plan`]) and the
//! rule engine (`crate::rules`) decides whether to carry the plan out (dry-run or enforce), records
//! it, rate-limits it and puts things back.
//!
//! Everything an action changes is a [`Knob`]: a setting that can be read, written and written
//! back. Knobs are serializable because the engine persists each original value *before* changing
//! it, so a restart after a crash can restore it.

pub mod cgroup;
pub mod cpu_governor;
mod cpulist;
pub mod exec;
pub mod io_scheduler;
pub mod log;
pub mod process;
pub mod sysctl;

use std::{
    fmt,
    io::Write as _,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize, de};
use toml::Spanned;

use crate::signals::Signal;

pub use cpulist::CpuList;

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
    Cgroup {
        id: u64,
        path: String,
    },
    /// A process (thread group) and the cgroup it ran in.
    Process {
        pid: u32,
        name: String,
        cgroup_path: String,
    },
    /// A block device by kernel name (`sda`, `nvme0n1`, `loop3`).
    Disk {
        name: String,
    },
    /// A TCP peer address as exported (`10.0.0.1`, `::1`).
    Remote {
        address: String,
    },
    LockClass {
        class: String,
    },
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
    /// The capabilities carrying it out needs, each with why: the agent keeps these when it
    /// drops the rest after attaching ([`crate::caps`]). Most need none: the files they write
    /// belong to root, which the agent stays.
    fn capabilities(&self) -> Vec<(crate::caps::Cap, &'static str)> {
        Vec::new()
    }
}

/// Why an action or a knob failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("{0}")]
    Unavailable(String),
    /// The target is gone: the process exited (or its pid now belongs to another process), the
    /// cgroup or the device was removed. There is nothing to change, nor to put back.
    #[error("{0}")]
    Gone(String),
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

impl Knob {
    /// The current value, in the same text form [`Action::plan`] produces, so the engine can
    /// compare what it reads with what it set (whitespace runs are one space; see each kind for
    /// what else is normalised).
    pub fn read(&self) -> Result<String, ActionError> {
        match self {
            Self::Sysctl { key } => sysctl::read(key),
            Self::IoScheduler { device } => io_scheduler::read(device),
            Self::CpuGovernor { cpu } => cpu_governor::read(*cpu),
            Self::CgroupFile { path, file } => cgroup::read(path, file),
            Self::Nice { pid, start_time } => process::read_nice(*pid, *start_time),
            Self::Affinity { pid, start_time } => process::read_affinity(*pid, *start_time),
        }
    }

    /// Sets the knob to `value`: a value from [`Action::plan`] or one [`Knob::read`] returned
    /// (to put an original back).
    pub fn write(&self, value: &str) -> Result<(), ActionError> {
        match self {
            Self::Sysctl { key } => sysctl::write(key, value),
            Self::IoScheduler { device } => io_scheduler::write(device, value),
            Self::CpuGovernor { cpu } => cpu_governor::write(*cpu, value),
            Self::CgroupFile { path, file } => cgroup::write(path, file, value),
            Self::Nice { pid, start_time } => process::write_nice(*pid, *start_time, value),
            Self::Affinity { pid, start_time } => process::write_affinity(*pid, *start_time, value),
        }
    }
}

impl fmt::Display for Knob {
    /// `sysctl net.core.somaxconn`, `io_scheduler loop3`, `cpu_governor cpu0`,
    /// `cgroup /sys/fs/cgroup/x cpu.weight`, `nice pid 123`, `affinity pid 123`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sysctl { key } => write!(f, "sysctl {key}"),
            Self::IoScheduler { device } => write!(f, "io_scheduler {device}"),
            Self::CpuGovernor { cpu } => write!(f, "cpu_governor cpu{cpu}"),
            Self::CgroupFile { path, file } => write!(f, "cgroup {} {file}", path.display()),
            Self::Nice { pid, .. } => write!(f, "nice pid {pid}"),
            Self::Affinity { pid, .. } => write!(f, "affinity pid {pid}"),
        }
    }
}

/// Whitespace runs (spaces, tabs, newlines) as one space, without leading or trailing
/// whitespace: the kernel separates `tcp_rmem`'s numbers with tabs and ends files with a newline.
pub fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads a kernel file (procfs, sysfs, cgroupfs); `what` names it in the error.
fn read_file(path: &Path, what: &str) -> Result<String, ActionError> {
    std::fs::read_to_string(path).map_err(|source| ActionError::Io {
        what: format!("read {what} ({})", path.display()),
        source,
    })
}

/// Writes `value` to an existing kernel file in one write(2), as procfs and sysfs expect (a
/// value split over two writes is two values). Never creates the file.
fn write_file(path: &Path, value: &str, what: &str) -> Result<(), ActionError> {
    let io = |source| ActionError::Io {
        what: format!("write {value:?} to {what} ({})", path.display()),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io)?;
    let written = file.write(value.as_bytes()).map_err(io)?;
    if written != value.len() {
        return Err(io(std::io::Error::other(format!(
            "the kernel took {written} of {} bytes",
            value.len()
        ))));
    }
    Ok(())
}

/// The kinds of action, as written in `type`.
pub const KINDS: [&str; 8] = [
    "sysctl",
    "io_scheduler",
    "cpu_governor",
    "cgroup",
    "nice",
    "affinity",
    "exec",
    "log",
];

/// The fields each kind takes besides `type`, the first ones required (see [`build`]).
fn fields_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "sysctl" => &["key", "value"],
        "io_scheduler" => &["scheduler", "device"],
        "cpu_governor" => &["governor", "cpus"],
        "cgroup" => &["file", "value", "path"],
        "nice" => &["value"],
        "affinity" => &["cpus"],
        "exec" => &["command", "timeout"],
        _ => &[],
    }
}

/// One action as written in a rule's `actions` array. Every field of every kind is here (which
/// kind takes which is checked by [`build`], with a message naming the kind a stray field
/// belongs to): a serde tagged enum would lose the spans, which `toml::Spanned` cannot keep
/// through serde's buffering of tagged enums.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAction {
    /// The kind: one of [`KINDS`].
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    /// `sysctl`: the key, as `sysctl` names it (`net.core.somaxconn`).
    pub key: Option<Spanned<String>>,
    /// `sysctl`, `cgroup`: the value to set; `nice`: the nice value.
    pub value: Option<Spanned<Scalar>>,
    /// `io_scheduler`: the scheduler (`none`, `mq-deadline`, `kyber`, `bfq`).
    pub scheduler: Option<Spanned<String>>,
    /// `io_scheduler`: the device's kernel name (`sda`); default: the offending disk.
    pub device: Option<Spanned<String>>,
    /// `cpu_governor`: the governor (`performance`, `schedutil`...).
    pub governor: Option<Spanned<String>>,
    /// `cpu_governor`: which CPUs (default: all online); `affinity`: the CPUs to allow.
    pub cpus: Option<Spanned<Scalar>>,
    /// `cgroup`: the interface file (`cpu.weight`, `cpu.weight.nice`, `io.weight`, `cpu.max`).
    pub file: Option<Spanned<String>>,
    /// `cgroup`: a cgroup under the cgroup2 mount (`system.slice/db.service`); default: the
    /// offending one.
    pub path: Option<Spanned<String>>,
    /// `exec`: the program (an absolute path) and its arguments.
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    /// `exec`: how long the command may run: seconds or `"500ms"`, `"10s"`, `"2m"`.
    pub timeout: Option<Spanned<Scalar>>,
}

impl FileAction {
    /// The fields present (besides `type`), with the span of their value.
    fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        let mut present = Vec::new();
        let mut add = |name, span: Option<Range<usize>>| {
            if let Some(span) = span {
                present.push((name, span));
            }
        };
        add("key", self.key.as_ref().map(Spanned::span));
        add("value", self.value.as_ref().map(Spanned::span));
        add("scheduler", self.scheduler.as_ref().map(Spanned::span));
        add("device", self.device.as_ref().map(Spanned::span));
        add("governor", self.governor.as_ref().map(Spanned::span));
        add("cpus", self.cpus.as_ref().map(Spanned::span));
        add("file", self.file.as_ref().map(Spanned::span));
        add("path", self.path.as_ref().map(Spanned::span));
        add("command", self.command.as_ref().map(Spanned::span));
        add("timeout", self.timeout.as_ref().map(Spanned::span));
        present
    }
}

/// A value written either as a string or as an integer (`value = 4096` or `value = "4096"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scalar {
    /// A TOML string.
    Text(String),
    /// A TOML integer.
    Integer(i64),
}

impl Scalar {
    /// The value as text: the string, or the integer in decimal.
    pub fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Integer(n) => n.to_string(),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(s.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar, E> {
                Ok(Scalar::Integer(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar, E> {
                i64::try_from(n)
                    .map(Scalar::Integer)
                    .map_err(|_| E::custom(format!("{n} is too large")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Invalid {
    fn new(span: Range<usize>, key: &'static str, message: impl Into<String>) -> Self {
        Self {
            span,
            key,
            message: message.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for Invalid {}

/// The name of `per` as the config writes it.
fn per_name(per: Per) -> &'static str {
    match per {
        Per::Host => "host",
        Per::Cgroup => "cgroup",
        Per::Process => "process",
        Per::Disk => "disk",
        Per::Remote => "remote",
        Per::LockClass => "lock_class",
    }
}

/// "a" or "an", for a message about a `kind` action.
fn a(kind: &str) -> &'static str {
    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// A field a kind requires: its value, or an error at the action (`at`) naming it.
fn required<'a, T>(
    field: &'a Option<Spanned<T>>,
    name: &'static str,
    kind: &str,
    at: &Range<usize>,
    example: &str,
) -> Result<&'a Spanned<T>, Invalid> {
    field.as_ref().ok_or_else(|| {
        Invalid::new(
            at.clone(),
            name,
            format!("{} {kind} action needs `{name}`, e.g. {example}", a(kind)),
        )
    })
}

/// Validates one configured action for a rule whose breakdown is `per`, and builds it.
///
/// Checks, each with an error at the offending value: the `type` is known, the kind's required
/// fields are there and no field of another kind is, every value parses and is within its
/// bounds, and the kind can act on what the rule watches (`nice` and `affinity` need
/// `per = "process"`, `cgroup` a per-cgroup or per-process rule or a `path`, `io_scheduler` a
/// `device` or `per = "disk"`).
pub fn build(raw: &Spanned<FileAction>, per: Per) -> Result<Box<dyn Action>, Invalid> {
    let at = raw.span();
    let action = raw.get_ref();
    let kinds = KINDS.join(", ");
    let Some(kind) = &action.kind else {
        return Err(Invalid::new(
            at,
            "type",
            format!("an action needs a `type`, one of: {kinds} (e.g. {{ type = \"log\" }})"),
        ));
    };
    let name = kind.get_ref().as_str();
    if !KINDS.contains(&name) {
        return Err(Invalid::new(
            kind.span(),
            "type",
            format!("unknown action type {name:?}; the types are: {kinds}"),
        ));
    }
    let takes = fields_of(name);
    for (field, span) in action.present() {
        if takes.contains(&field) {
            continue;
        }
        let owners: Vec<_> = KINDS
            .iter()
            .filter(|k| fields_of(k).contains(&field))
            .copied()
            .collect();
        let fields = if takes.is_empty() {
            "no other field".to_owned()
        } else {
            format!("only: {}", takes.join(", "))
        };
        return Err(Invalid::new(
            span,
            field,
            format!(
                "`{field}` is a field of {} actions, not of {name} actions; {} {name} action \
                 takes {fields}",
                owners.join(" and "),
                a(name)
            ),
        ));
    }
    // `nice` and `affinity` act on the offending process.
    let needs_process = || -> Result<(), Invalid> {
        if per == Per::Process {
            return Ok(());
        }
        Err(Invalid::new(
            kind.span(),
            "type",
            format!(
                "{} {name} action acts on the offending process, so its rule needs per = \
                 \"process\" (this rule has per = \"{}\")",
                a(name),
                per_name(per)
            ),
        ))
    };
    Ok(match name {
        "sysctl" => Box::new(sysctl::Sysctl::build(action, &at)?),
        "io_scheduler" => {
            let built = io_scheduler::IoScheduler::build(action, &at)?;
            if action.device.is_none() && per != Per::Disk {
                return Err(Invalid::new(
                    at,
                    "device",
                    format!(
                        "an io_scheduler action needs a `device` (e.g. device = \"sda\") unless \
                         its rule has per = \"disk\", where it acts on the offending disk (this \
                         rule has per = \"{}\")",
                        per_name(per)
                    ),
                ));
            }
            Box::new(built)
        }
        "cpu_governor" => Box::new(cpu_governor::CpuGovernor::build(action, &at)?),
        "cgroup" => {
            let built = cgroup::CgroupAction::build(action, &at)?;
            if action.path.is_none() && !matches!(per, Per::Cgroup | Per::Process) {
                return Err(Invalid::new(
                    at,
                    "path",
                    format!(
                        "a cgroup action acts on the offending cgroup, so its rule needs \
                         per = \"cgroup\" or per = \"process\", or the action a `path` (e.g. \
                         path = \"system.slice/db.service\") (this rule has per = \"{}\")",
                        per_name(per)
                    ),
                ));
            }
            Box::new(built)
        }
        "nice" => {
            needs_process()?;
            Box::new(process::Nice::build(action, &at)?)
        }
        "affinity" => {
            needs_process()?;
            Box::new(process::Affinity::build(action, &at)?)
        }
        "exec" => Box::new(exec::Exec::build(action, &at)?),
        "log" => Box::new(log::Log),
        _ => unreachable!("checked against KINDS above"),
    })
}

/// What the modules' tests share: actions parsed from TOML snippets, and breaches.
#[cfg(test)]
pub(crate) mod testing {
    use std::time::Duration;

    use toml::Spanned;

    use super::{Action, Breach, FileAction, Per, Target, build};
    use crate::signals::Signal;

    #[derive(serde::Deserialize)]
    struct One {
        action: Spanned<FileAction>,
    }

    /// Builds `action = <snippet>` for a rule with `per`.
    pub fn built(snippet: &str, per: Per) -> Box<dyn Action> {
        let text = format!("action = {snippet}");
        let one: One = toml::from_str(&text).unwrap_or_else(|e| panic!("{snippet}: {e}"));
        build(&one.action, per).unwrap_or_else(|e| panic!("{snippet}: {e}"))
    }

    /// The error of building `action = <snippet>`: the field, the message, and the text its
    /// span covers.
    pub fn invalid(snippet: &str, per: Per) -> (&'static str, String, String) {
        let text = format!("action = {snippet}");
        let one: One = toml::from_str(&text).unwrap_or_else(|e| panic!("{snippet}: {e}"));
        match build(&one.action, per) {
            Ok(action) => panic!("{snippet} was accepted: {}", action.describe()),
            Err(e) => (e.key, e.message, text[e.span].to_owned()),
        }
    }

    /// A breach of rule "test" about `target`.
    pub fn breach(target: Target) -> Breach {
        Breach {
            rule: "test".to_owned(),
            signal: Signal::Tcp,
            statistic: "rate".to_owned(),
            observed: 75.5,
            threshold: 50.0,
            unit: "1/s",
            window: Duration::from_secs(30),
            target,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{breach, built, invalid};
    use super::*;

    #[test]
    fn every_kind_builds_and_describes_itself() {
        for (snippet, per, kind, described) in [
            (
                r#"{ type = "sysctl", key = "net.core.somaxconn", value = 4096 }"#,
                Per::Host,
                "sysctl",
                "sysctl net.core.somaxconn=4096",
            ),
            (
                r#"{ type = "io_scheduler", scheduler = "bfq" }"#,
                Per::Disk,
                "io_scheduler",
                "io_scheduler bfq on the offending disk",
            ),
            (
                r#"{ type = "io_scheduler", scheduler = "none", device = "vda" }"#,
                Per::Host,
                "io_scheduler",
                "io_scheduler none on vda",
            ),
            (
                r#"{ type = "cpu_governor", governor = "performance" }"#,
                Per::Host,
                "cpu_governor",
                "cpu_governor performance on every online CPU",
            ),
            (
                r#"{ type = "cpu_governor", governor = "performance", cpus = 0 }"#,
                Per::Host,
                "cpu_governor",
                "cpu_governor performance on CPUs 0",
            ),
            (
                r#"{ type = "cgroup", file = "cpu.weight", value = 50 }"#,
                Per::Cgroup,
                "cgroup",
                "cgroup cpu.weight=50 of the offending cgroup",
            ),
            (
                r#"{ type = "cgroup", file = "cpu.max", value = "50000 100000", path = "/a/b/" }"#,
                Per::Host,
                "cgroup",
                "cgroup cpu.max=50000 100000 of /a/b",
            ),
            (
                r#"{ type = "nice", value = 10 }"#,
                Per::Process,
                "nice",
                "nice 10 for the offending process",
            ),
            (
                r#"{ type = "affinity", cpus = "0" }"#,
                Per::Process,
                "affinity",
                "affinity 0 for the offending process",
            ),
            (
                r#"{ type = "exec", command = ["/bin/true", "x"], timeout = "2s" }"#,
                Per::Host,
                "exec",
                r#"exec ["/bin/true", "x"] (timeout 2s)"#,
            ),
            (r#"{ type = "log" }"#, Per::Remote, "log", "log"),
        ] {
            let action = built(snippet, per);
            assert_eq!(action.kind(), kind, "{snippet}");
            assert_eq!(action.describe(), described, "{snippet}");
        }
    }

    #[test]
    fn kinds_and_fields_are_checked_with_the_fix_in_the_message() {
        let types = "sysctl, io_scheduler, cpu_governor, cgroup, nice, affinity, exec, log";
        for (snippet, per, key, message, at) in [
            (
                r#"{ value = 1 }"#.to_owned(),
                Per::Host,
                "type",
                format!("an action needs a `type`, one of: {types} (e.g. {{ type = \"log\" }})"),
                "{ value = 1 }",
            ),
            (
                r#"{ type = "reboot" }"#.to_owned(),
                Per::Host,
                "type",
                format!("unknown action type \"reboot\"; the types are: {types}"),
                "\"reboot\"",
            ),
            (
                r#"{ type = "log", key = "vm.swappiness" }"#.to_owned(),
                Per::Host,
                "key",
                "`key` is a field of sysctl actions, not of log actions; a log action takes no \
                 other field"
                    .to_owned(),
                "\"vm.swappiness\"",
            ),
            (
                r#"{ type = "nice", value = 5, cpus = "0" }"#.to_owned(),
                Per::Process,
                "cpus",
                "`cpus` is a field of cpu_governor and affinity actions, not of nice actions; a \
                 nice action takes only: value"
                    .to_owned(),
                "\"0\"",
            ),
            (
                r#"{ type = "sysctl", key = "vm.swappiness", device = "sda" }"#.to_owned(),
                Per::Host,
                "device",
                "`device` is a field of io_scheduler actions, not of sysctl actions; a sysctl \
                 action takes only: key, value"
                    .to_owned(),
                "\"sda\"",
            ),
            (
                r#"{ type = "nice", value = 5 }"#.to_owned(),
                Per::Cgroup,
                "type",
                "a nice action acts on the offending process, so its rule needs per = \
                 \"process\" (this rule has per = \"cgroup\")"
                    .to_owned(),
                "\"nice\"",
            ),
            (
                r#"{ type = "affinity", cpus = "0" }"#.to_owned(),
                Per::Host,
                "type",
                "an affinity action acts on the offending process, so its rule needs per = \
                 \"process\" (this rule has per = \"host\")"
                    .to_owned(),
                "\"affinity\"",
            ),
            (
                r#"{ type = "io_scheduler", scheduler = "bfq" }"#.to_owned(),
                Per::Cgroup,
                "device",
                "an io_scheduler action needs a `device` (e.g. device = \"sda\") unless its \
                 rule has per = \"disk\", where it acts on the offending disk (this rule has \
                 per = \"cgroup\")"
                    .to_owned(),
                r#"{ type = "io_scheduler", scheduler = "bfq" }"#,
            ),
            (
                r#"{ type = "cgroup", file = "cpu.weight", value = 50 }"#.to_owned(),
                Per::Disk,
                "path",
                "a cgroup action acts on the offending cgroup, so its rule needs per = \
                 \"cgroup\" or per = \"process\", or the action a `path` (e.g. path = \
                 \"system.slice/db.service\") (this rule has per = \"disk\")"
                    .to_owned(),
                r#"{ type = "cgroup", file = "cpu.weight", value = 50 }"#,
            ),
        ] {
            assert_eq!(
                invalid(&snippet, per),
                (key, message, at.to_owned()),
                "{snippet}"
            );
        }
    }

    #[test]
    fn unknown_fields_and_wrong_value_types_fail_to_parse() {
        #[derive(Debug, serde::Deserialize)]
        #[expect(dead_code, reason = "only whether it parses matters")]
        struct One {
            action: Spanned<FileAction>,
        }
        let err = toml::from_str::<One>(r#"action = { type = "log", bogus = 1 }"#).unwrap_err();
        assert!(err.message().contains("unknown field `bogus`"), "{err}");
        let err = toml::from_str::<One>(r#"action = { type = "nice", value = 1.5 }"#).unwrap_err();
        assert!(err.message().contains("a string or an integer"), "{err}");
    }

    #[test]
    fn actions_parse_from_inline_tables_and_from_array_of_tables() {
        #[derive(serde::Deserialize)]
        struct Rule {
            actions: Vec<Spanned<FileAction>>,
        }
        #[derive(serde::Deserialize)]
        struct File {
            rules: Vec<Rule>,
        }
        let text = r#"
[[rules]]
actions = [
  { type = "sysctl", key = "net.core.somaxconn", value = "4096" },
  { type = "log" },
]

[[rules]]
[[rules.actions]]
type = "sysctl"
key = "net.core.somaxconn"
value = "8192"
"#;
        let file: File = toml::from_str(text).unwrap();
        let described: Vec<Vec<String>> = file
            .rules
            .iter()
            .map(|r| {
                r.actions
                    .iter()
                    .map(|a| build(a, Per::Host).unwrap().describe())
                    .collect()
            })
            .collect();
        assert_eq!(
            described,
            [
                vec!["sysctl net.core.somaxconn=4096", "log"],
                vec!["sysctl net.core.somaxconn=8192"]
            ]
        );
        // The span of a field in a [[rules.actions]] table points at its value.
        let value = file.rules[1].actions[0].get_ref().value.as_ref().unwrap();
        assert_eq!(&text[value.span()], "\"8192\"");
    }

    #[test]
    fn knobs_display_and_keep_their_serialized_form() {
        let knobs = [
            (
                Knob::Sysctl {
                    key: "net.core.somaxconn".into(),
                },
                "sysctl net.core.somaxconn",
                r#"{"kind":"sysctl","key":"net.core.somaxconn"}"#,
            ),
            (
                Knob::IoScheduler {
                    device: "loop3".into(),
                },
                "io_scheduler loop3",
                r#"{"kind":"io_scheduler","device":"loop3"}"#,
            ),
            (
                Knob::CpuGovernor { cpu: 1 },
                "cpu_governor cpu1",
                r#"{"kind":"cpu_governor","cpu":1}"#,
            ),
            (
                Knob::CgroupFile {
                    path: "/sys/fs/cgroup/x".into(),
                    file: "cpu.weight".into(),
                },
                "cgroup /sys/fs/cgroup/x cpu.weight",
                r#"{"kind":"cgroup_file","path":"/sys/fs/cgroup/x","file":"cpu.weight"}"#,
            ),
            (
                Knob::Nice {
                    pid: 123,
                    start_time: 9,
                },
                "nice pid 123",
                r#"{"kind":"nice","pid":123,"start_time":9}"#,
            ),
            (
                Knob::Affinity {
                    pid: 123,
                    start_time: 9,
                },
                "affinity pid 123",
                r#"{"kind":"affinity","pid":123,"start_time":9}"#,
            ),
        ];
        for (knob, shown, json) in knobs {
            assert_eq!(knob.to_string(), shown);
            assert_eq!(serde_json::to_string(&knob).unwrap(), json);
            assert_eq!(serde_json::from_str::<Knob>(json).unwrap(), knob);
        }
    }

    #[test]
    fn normalise_collapses_whitespace() {
        assert_eq!(normalise("4096\t87380\t16777216\n"), "4096 87380 16777216");
        assert_eq!(normalise("  default   100 \n"), "default 100");
        assert_eq!(normalise("\n"), "");
    }

    #[test]
    fn log_plans_a_log_step() {
        let log = built(r#"{ type = "log" }"#, Per::Host);
        assert_eq!(log.plan(&breach(Target::Host)).unwrap(), [Step::Log]);
    }

    /// Every example in examples/rules parses, and each of its actions builds for its rule.
    #[test]
    fn the_examples_build() {
        // Each example is a whole config file, validated as `observer config check` does.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rules");
        let mut kinds = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let (_, tuning) = crate::config::Config::load_with_rules(
                Some(&path),
                |_| None,
                &crate::config::Overrides::default(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(!tuning.rules.is_empty(), "{}: no rules", path.display());
            for rule in &tuning.rules {
                kinds.extend(rule.actions.iter().map(|a| a.kind()));
            }
        }
        assert_eq!(kinds, KINDS.into_iter().collect());
    }
}
