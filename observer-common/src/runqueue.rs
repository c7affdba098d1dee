//! Run-queue (scheduler) latency: time from a task becoming runnable to it running.

/// Per-CPU array of [`crate::Hist`] with one entry: the waits not in [`BY_PROCESS_MAP`] (all of
/// them when breakdowns are off, else those the map had no room for). The total is this plus
/// every entry of [`BY_PROCESS_MAP`].
pub const HIST_MAP: &str = "RUNQ_HIST";
pub const HIST_ENTRIES: u32 = 1;
/// Per-CPU array of `u64` counters, indexed by [`Counter`].
pub const COUNTERS_MAP: &str = "RUNQ_COUNTERS";
/// Hash [`crate::ProcessKey`] -> [`crate::ProcessHist`], bounded by [`BY_PROCESS_ENTRIES`].
/// One map keyed by (cgroup, process) rather than one per breakdown: sched_switch then pays
/// for one hash update instead of two, and the agent sums it either way.
pub const BY_PROCESS_MAP: &str = "RUNQ_BY_PROCESS";
pub const BY_PROCESS_ENTRIES: u32 = 4096;

/// Global set by the agent: 1 to attribute waits to (cgroup, process), 0 when neither
/// breakdown was asked for. Attribution is most of sched_switch's cost (a hash update per wait),
/// so a user who wants only the histogram does not pay for it.
pub const GLOBAL_ATTRIBUTE: &str = "RUNQ_ATTRIBUTE";

/// Array of one `u32`: the sample shift `k`, written by the agent at run time (its overhead
/// budget, `agent.max_overhead_percent`). 0 times every wait; `k` > 0 times 1 in `2^k` of them,
/// drawn at the switch-in that ends the wait from a hash of the task and its count of arrivals
/// (the kernel's `sched_info.pcount`), so the switch-in before a timed one knows to keep what
/// the timed one needs. A map rather than a global: `.rodata` is frozen at load, and the shift
/// must change without reloading.
pub const SAMPLING_MAP: &str = "RUNQ_SAMPLING";
/// Largest sample shift: 1 in 1024 wakeups.
pub const MAX_SAMPLE_SHIFT: u32 = 10;

/// Globals set by the agent: offsets, from this kernel's BTF, of the fields sched_switch reads
/// (see observer-ebpf/src/runqueue.rs). `task_struct.sched_info` exists only with
/// `CONFIG_SCHED_INFO`, `sched_entity.cfs_rq` and `cfs_rq.rq` only with
/// `CONFIG_FAIR_GROUP_SCHED`.
pub const GLOBAL_LAST_QUEUED: &str = "RUNQ_OFF_LAST_QUEUED";
pub const GLOBAL_RUN_DELAY: &str = "RUNQ_OFF_RUN_DELAY";
pub const GLOBAL_PCOUNT: &str = "RUNQ_OFF_PCOUNT";
/// `task_struct.pid`, which keys the sampling draw.
pub const GLOBAL_PID: &str = "RUNQ_OFF_PID";
pub const GLOBAL_CFS_RQ: &str = "RUNQ_OFF_CFS_RQ";
pub const GLOBAL_RQ: &str = "RUNQ_OFF_RQ";
pub const GLOBAL_CLOCK: &str = "RUNQ_OFF_CLOCK";

/// Programs of this signal, as named in the object, with the tracepoint each attaches to.
pub const PROGRAMS: &[(&str, &str)] = &[
    ("runq_sched_switch", "sched_switch"),
    ("runq_sched_process_exec", "sched_process_exec"),
];

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Waits not attributed to a cgroup and process because [`BY_PROCESS_MAP`] was full.
    ProcessOverflow = 0,
}
pub const COUNTERS: u32 = 1;

/// Per-task state, kept in task storage (not shared with user space): what the task's
/// `sched_info` said right after an arrival (switch-in) observer saw, so that the next wait
/// can add what the kernel accounted while the task was queued on another CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskState {
    /// `sched_info.run_delay` (ns) after that arrival.
    pub run_delay_ns: u64,
    /// `sched_info.pcount` after that arrival. A fresh entry (0, 0) is exactly right for a task
    /// that has never run: the kernel zeroes `sched_info` at fork.
    pub pcount: u64,
}

/// The wait of the task last switched in on a CPU, kept in a per-CPU array (not shared with
/// user space) until that task's switch-out, which is the next switch on that CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PendingWait {
    pub wait_ns: u64,
    /// Whether `wait_ns` holds a measurement (a wait of 0 ns is possible).
    pub pending: u32,
    pub _pad: u32,
}
