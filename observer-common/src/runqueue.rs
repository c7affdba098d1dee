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
/// budget, `agent.max_overhead_percent`). 0 times every wait; `k` > 0 times a wait only when the
/// event that starts it (a wakeup, or a preemption that leaves the task runnable) draws 1 in
/// `2^k`, so an unsampled wakeup touches no task storage. A map rather than a global: `.rodata`
/// is frozen at load, and the shift must change without reloading.
pub const SAMPLING_MAP: &str = "RUNQ_SAMPLING";
/// Largest sample shift: 1 in 1024 waits.
pub const MAX_SAMPLE_SHIFT: u32 = 10;

/// Globals set by the agent: offsets, from this kernel's BTF, of `task_struct.nvcsw` and
/// `task_struct.nivcsw`, the task's counts of voluntary and involuntary context switches. A
/// start of a wait carries their sum, so a start from before the task's last switch-out is
/// known to be stale (observer-ebpf/src/runqueue.rs).
pub const GLOBAL_NVCSW: &str = "RUNQ_OFF_NVCSW";
pub const GLOBAL_NIVCSW: &str = "RUNQ_OFF_NIVCSW";

/// Programs of this signal, as named in the object, with the tracepoint each attaches to.
pub const PROGRAMS: &[(&str, &str)] = &[
    ("runq_sched_waking", "sched_waking"),
    ("runq_sched_wakeup_new", "sched_wakeup_new"),
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

/// Per-task state, kept in task storage (not shared with user space): the start of the task's
/// current run-queue wait.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskState {
    /// When the task last became runnable (ns, CLOCK_MONOTONIC); 0 when not waiting.
    pub enqueued_ns: u64,
    /// The task's `nvcsw + nivcsw` then: a start is only for the wait that follows it if the
    /// task has not been switched out since.
    pub switches: u64,
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
