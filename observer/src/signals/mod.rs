//! The five signals: runqueue, blockio, tcp, lock and futex (see [`Signal`]). Each
//! module has the same shape: `globals` (what the programs need from this kernel's BTF),
//! `Raw` + `read` (one read of its maps), and `report` (the delta between two reads, as
//! printed and exported).

pub mod blockio;
pub mod futex;
pub mod lock;
pub mod runqueue;
pub mod tcp;

use std::{collections::HashMap, fmt, hash::Hash, str::FromStr};

use aya::{
    Ebpf, Pod,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray},
};
use observer_common::{COMM_LEN, Hist, ProcessHist, ProcessKey};

use crate::{
    btf::{Btf, BtfError},
    hist::SparseHist,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Runqueue,
    BlockIo,
    Tcp,
    Lock,
    Futex,
}

impl Signal {
    pub const ALL: [Self; 5] = [
        Self::Runqueue,
        Self::BlockIo,
        Self::Tcp,
        Self::Lock,
        Self::Futex,
    ];

    /// Name on the command line and in `observer check`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Runqueue => "runqueue",
            Self::BlockIo => "blockio",
            Self::Tcp => "tcp",
            Self::Lock => "lock",
            Self::Futex => "futex",
        }
    }

    /// Key in the JSON report.
    pub const fn key(self) -> &'static str {
        match self {
            Self::Runqueue => "runqueue_latency",
            Self::BlockIo => "block_io_latency",
            Self::Tcp => "tcp_retransmits",
            Self::Lock => "lock_contention",
            Self::Futex => "futex_wait",
        }
    }

    pub const fn description(self) -> &'static str {
        match self {
            Self::Runqueue => "run-queue latency, wakeup to running (sched_waking, sched_switch)",
            Self::BlockIo => "block I/O queue and device latency (block_rq_*)",
            Self::Tcp => "TCP retransmits (tcp_retransmit_skb)",
            Self::Lock => "kernel lock contention (lock:contention_begin/end)",
            Self::Futex => "user-space futex waits (sched_switch, in a futex wait call)",
        }
    }

    /// (program name in the object, BTF tracepoint it attaches to).
    pub const fn programs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Runqueue => observer_common::runqueue::PROGRAMS,
            Self::BlockIo => observer_common::blockio::PROGRAMS,
            Self::Tcp => observer_common::tcp::PROGRAMS,
            Self::Lock => observer_common::lock::PROGRAMS,
            Self::Futex => observer_common::lock::futex::PROGRAMS,
        }
    }

    /// Values for the programs' globals: struct offsets resolved from this kernel's BTF, and
    /// switches for in-kernel work only the requested breakdowns need.
    pub fn globals(self, btf: &Btf, by: &Breakdowns) -> Result<Vec<Global>, GlobalsError> {
        match self {
            Self::Runqueue => runqueue::globals(btf, by),
            Self::Lock => Ok(Vec::new()),
            Self::BlockIo => blockio::globals(btf),
            Self::Tcp => tcp::globals(btf),
            Self::Futex => futex::globals(btf),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Signal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|sig| sig.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown signal {s:?}; valid signals are: {}",
                    Self::ALL.map(Self::name).join(", ")
                )
            })
    }
}

/// A value for one of the programs' globals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    U32(&'static str, u32),
    U64(&'static str, u64),
    I64(&'static str, i64),
}

/// A field offset as a `U32` global, checking the field is as wide as the program reads it.
pub(crate) fn offset_global(
    btf: &Btf,
    global: &'static str,
    strukt: &str,
    path: &str,
    size: u32,
) -> Result<Global, GlobalsError> {
    let actual = btf.member_size(strukt, path)?;
    if actual != size {
        return Err(GlobalsError::UnexpectedSize {
            strukt: strukt.to_owned(),
            member: path.to_owned(),
            expected: size,
            actual,
        });
    }
    Ok(Global::U32(global, btf.member_offset(strukt, path)?))
}

/// A field the programs read could not be located in this kernel.
#[derive(Debug, thiserror::Error)]
pub enum GlobalsError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(
        "{strukt}.{member} is {actual} bytes on this kernel where observer reads {expected}: \
         this kernel's layout is not supported yet; please report it with `uname -r`"
    )]
    UnexpectedSize {
        strukt: String,
        member: String,
        expected: u32,
        actual: u32,
    },
}

/// Reading a map failed: named, so a broken read says which map.
#[derive(Debug, thiserror::Error)]
#[error("reading map {map}: {source}")]
pub struct ReadError {
    pub map: &'static str,
    #[source]
    pub source: MapError,
}

fn missing(map: &'static str) -> ReadError {
    ReadError {
        map,
        source: MapError::InvalidName { name: map.into() },
    }
}

/// Every entry of a per-CPU array: `[index][cpu]`.
pub(crate) fn read_percpu<V: Pod>(
    ebpf: &Ebpf,
    map: &'static str,
) -> Result<Vec<Vec<V>>, ReadError> {
    let err = |source| ReadError { map, source };
    let array: PerCpuArray<&MapData, V> =
        PerCpuArray::try_from(ebpf.map(map).ok_or_else(|| missing(map))?).map_err(err)?;
    (0..array.len())
        .map(|i| array.get(&i, 0).map(|v| v.to_vec()).map_err(err))
        .collect()
}

/// Every entry of a hash map.
pub(crate) fn read_hash<K: Pod + Eq + Hash, V: Pod>(
    ebpf: &Ebpf,
    map: &'static str,
) -> Result<HashMap<K, V>, ReadError> {
    let err = |source| ReadError { map, source };
    let hash: BpfHashMap<&MapData, K, V> =
        BpfHashMap::try_from(ebpf.map(map).ok_or_else(|| missing(map))?).map_err(err)?;
    hash.iter().map(|r| r.map_err(err)).collect()
}

/// One (cgroup, process) entry of a breakdown map as user space keeps it: the name the kernel
/// recorded, and the histogram without its empty buckets (see [`SparseHist`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub comm: [u8; COMM_LEN],
    pub hist: SparseHist,
}

impl Process {
    pub fn of(p: &ProcessHist) -> Self {
        Self {
            comm: p.comm,
            hist: SparseHist::of(&p.hist),
        }
    }
}

/// Every entry of a (cgroup, process) map, each made sparse as it is read: a full map is never
/// held in its dense form (4096 entries of 2 KB).
fn read_processes(
    ebpf: &Ebpf,
    map: &'static str,
) -> Result<HashMap<ProcessKey, Process>, ReadError> {
    let err = |source| ReadError { map, source };
    let hash: BpfHashMap<&MapData, ProcessKey, ProcessHist> =
        BpfHashMap::try_from(ebpf.map(map).ok_or_else(|| missing(map))?).map_err(err)?;
    hash.iter()
        .map(|r| r.map(|(k, p)| (k, Process::of(&p))).map_err(err))
        .collect()
}

/// One read of a signal whose breakdown is a (cgroup, process) map (runqueue, futex): the
/// per-CPU histogram of what the map missed, the counters, and the map.
pub struct ProcessRaw {
    pub(crate) hist: Vec<Vec<Hist>>,
    pub(crate) counters: Vec<Vec<u64>>,
    pub(crate) by_process: HashMap<ProcessKey, Process>,
    by_process_map: &'static str,
}

impl ProcessRaw {
    pub(crate) fn read(
        ebpf: &Ebpf,
        hist_map: &'static str,
        counters_map: &'static str,
        by_process_map: &'static str,
    ) -> Result<Self, ReadError> {
        Ok(Self {
            hist: read_percpu(ebpf, hist_map)?,
            counters: read_percpu(ebpf, counters_map)?,
            by_process: read_processes(ebpf, by_process_map)?,
            by_process_map,
        })
    }

    /// The maps as the kernel created them: nothing counted yet.
    pub(crate) fn zero(by_process_map: &'static str) -> Self {
        Self {
            hist: Vec::new(),
            counters: Vec::new(),
            by_process: HashMap::new(),
            by_process_map,
        }
    }

    /// Deletes the kernel's entries for processes that have exited (see [`forget_exited`]).
    pub fn forget_exited(&mut self, ebpf: &mut Ebpf) -> Result<usize, ReadError> {
        forget_exited(ebpf, self.by_process_map, &mut self.by_process)
    }

    /// Entries in the bounded breakdown map.
    pub fn entries(&self) -> usize {
        self.by_process.len()
    }
}

/// Deletes from a (cgroup, process) map the entries of processes that have exited, once their
/// last counts have been read (they are in `entries`, which loses them too, so the next delta
/// does not see them vanish). Without this a long-running agent would fill the bounded map with
/// the dead and attribute nothing new. Returns how many were deleted.
pub(crate) fn forget_exited(
    ebpf: &mut Ebpf,
    map: &'static str,
    entries: &mut HashMap<ProcessKey, Process>,
) -> Result<usize, ReadError> {
    let err = |source| ReadError { map, source };
    let mut hash: BpfHashMap<&mut MapData, ProcessKey, ProcessHist> =
        BpfHashMap::try_from(ebpf.map_mut(map).ok_or_else(|| missing(map))?).map_err(err)?;
    let exited: Vec<ProcessKey> = entries
        .keys()
        .filter(|k| !process_exists(k.tgid))
        .copied()
        .collect();
    for key in &exited {
        match hash.remove(key) {
            // Already gone is as good as deleted.
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(err(e)),
        }
        entries.remove(key);
    }
    Ok(exited.len())
}

/// Whether a process (thread group) exists, in the agent's PID namespace: what `/proc/<tgid>`
/// existing tells, zombies included, without a path lookup in /proc (a stat of `/proc/<tgid>`
/// for each of a full map's 4096 entries was a third of the agent's CPU in a fork storm).
fn process_exists(tgid: u32) -> bool {
    let Some(pid) = libc::pid_t::try_from(tgid).ok().filter(|p| *p > 0) else {
        // Not a process id /proc could list (0 is the idle task, and `kill(0)` would mean our
        // own process group).
        return false;
    };
    // SAFETY: signal 0 sends nothing; kill only checks that the process exists and may be
    // signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    // EPERM: it exists, we may not signal it (the agent may have dropped CAP_KILL).
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A per-CPU counter array read at two points: the growth of counter `index`.
pub(crate) fn counter(cur: &[Vec<u64>], prev: &[Vec<u64>], index: u32) -> u64 {
    let i = index as usize;
    crate::hist::percpu_counter_delta(
        cur.get(i).map_or(&[][..], Vec::as_slice),
        prev.get(i).map_or(&[][..], Vec::as_slice),
    )
}

/// A per-CPU histogram array read at two points: the growth of entry `index`.
pub(crate) fn hist_at(cur: &[Vec<Hist>], prev: &[Vec<Hist>], index: u32) -> Hist {
    let i = index as usize;
    crate::hist::percpu_hist_delta(
        cur.get(i).map_or(&[][..], Vec::as_slice),
        prev.get(i).map_or(&[][..], Vec::as_slice),
    )
}

/// Keeps the `top` rows with the highest count, highest first (ties broken by key order so the
/// output is stable).
pub(crate) fn top_by<T, K: Ord>(
    mut rows: Vec<T>,
    top: usize,
    count: impl Fn(&T) -> u64,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    rows.sort_by(|a, b| count(b).cmp(&count(a)).then_with(|| key(a).cmp(&key(b))));
    rows.truncate(top);
    rows
}

/// A process name from the kernel's fixed-size `comm`, preferring the live process's current
/// name (the kernel recorded the name of the first thread it saw).
pub(crate) fn process_name(tgid: u32, comm: &[u8]) -> String {
    if let Ok(name) = std::fs::read_to_string(format!("/proc/{tgid}/comm")) {
        return name.trim_end().to_owned();
    }
    let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Which breakdowns a report includes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breakdowns {
    pub cgroup: bool,
    pub process: bool,
    pub disk: bool,
    pub op: bool,
    pub lock: bool,
    pub remote: bool,
}

impl Breakdowns {
    pub const ALL: Self = Self {
        cgroup: true,
        process: true,
        disk: true,
        op: true,
        lock: true,
        remote: true,
    };
    pub const NAMES: [&'static str; 6] = ["cgroup", "process", "disk", "op", "lock", "remote"];

    /// Only the named breakdowns.
    pub fn only(names: &[String]) -> Result<Self, String> {
        let mut by = Self {
            cgroup: false,
            process: false,
            disk: false,
            op: false,
            lock: false,
            remote: false,
        };
        for name in names {
            let flag = match name.as_str() {
                "cgroup" => &mut by.cgroup,
                "process" => &mut by.process,
                "disk" => &mut by.disk,
                "op" => &mut by.op,
                "lock" => &mut by.lock,
                "remote" => &mut by.remote,
                other => {
                    return Err(format!(
                        "unknown breakdown {other:?}; valid breakdowns are: {}",
                        Self::NAMES.join(", ")
                    ));
                }
            };
            *flag = true;
        }
        Ok(by)
    }
}

/// Options that shape every report.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    pub top: usize,
    pub by: Breakdowns,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_exists_until_reaped_as_proc_lists_it() {
        assert!(process_exists(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // A zombie (exited, not yet reaped) is still in /proc, and exists.
        while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap()
            .contains(") Z ")
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(process_exists(pid));
        child.wait().unwrap();
        assert!(!process_exists(pid));
        // Ids no process can have.
        assert!(!process_exists(0));
        assert!(!process_exists(u32::MAX));
    }
}
