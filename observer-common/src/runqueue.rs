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
/// enqueue that starts it (a wakeup, or a preemption that leaves the task runnable) draws 1 in
/// `2^k`, so the switch-in that ends a sampled wait always finds its stamp and an unsampled one
/// finds none. A map rather than a global: `.rodata` is frozen at load, and the shift must change
/// without reloading.
pub const SAMPLING_MAP: &str = "RUNQ_SAMPLING";
/// Largest sample shift: 1 in 1024 wakeups.
pub const MAX_SAMPLE_SHIFT: u32 = 10;

/// Programs of this signal, as named in the object, with the tracepoint each attaches to.
pub const PROGRAMS: &[(&str, &str)] = &[
    ("runq_sched_wakeup", "sched_wakeup"),
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

/// Per-task state, kept in task storage (not shared with user space).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskState {
    /// When the task last became runnable (ns, CLOCK_MONOTONIC); 0 when not queued.
    pub enqueued_ns: u64,
    /// The wait measured when the task last got the CPU, attributed to its cgroup and process
    /// at its next switch-out, when it is `current` and both can be read without touching
    /// kernel structs. 0 when nothing is pending.
    pub pending_wait_ns: u64,
    /// Whether `pending_wait_ns` holds a measurement (a wait of 0 ns is possible).
    pub pending: u32,
    pub _pad: u32,
}
