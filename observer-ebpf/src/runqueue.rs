//! Run-queue latency: from a task becoming runnable (sched_wakeup, sched_wakeup_new, or
//! preempted at sched_switch while still runnable) to it getting the CPU (sched_switch).
//!
//! The per-task enqueue time lives in task storage. The wait is recorded in the global histogram
//! when the task is switched in, and attributed to its cgroup and process at its next switch-out,
//! when it is `current`: then bpf_get_current_cgroup_id/pid_tgid/comm give both without reading
//! any kernel struct field.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, task_struct},
    btf_maps::{HashMap, PerCpuArray},
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    },
    macros::{btf_map, btf_tracepoint},
    programs::BtfTracePointContext,
};
use observer_common::{
    Hist, ProcessHist, ProcessKey,
    runqueue::{BY_PROCESS_ENTRIES, COUNTERS, Counter, HIST_ENTRIES, TaskState},
};

use crate::{
    hist::{record, record_process},
    task_storage::TaskStorage,
};

const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;

#[btf_map]
static RUNQ_HIST: PerCpuArray<Hist, { HIST_ENTRIES as usize }> = PerCpuArray::new();
#[btf_map]
static RUNQ_COUNTERS: PerCpuArray<u64, { COUNTERS as usize }> = PerCpuArray::new();
#[btf_map]
static RUNQ_BY_PROCESS: HashMap<
    ProcessKey,
    ProcessHist,
    { BY_PROCESS_ENTRIES as usize },
    NO_PREALLOC,
> = HashMap::new();
#[btf_map]
static RUNQ_TASKS: TaskStorage<TaskState> = TaskStorage::new();

/// observer_common::runqueue::GLOBAL_ATTRIBUTE.
#[unsafe(no_mangle)]
static RUNQ_ATTRIBUTE: u32 = 1;

/// `TASK_RUNNING` (include/linux/sched.h).
const TASK_RUNNING: u64 = 0;

#[btf_tracepoint(function = "sched_wakeup")]
pub fn runq_sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    enqueued(ctx.arg(0))
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn runq_sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    enqueued(ctx.arg(0))
}

/// sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
/// unsigned int prev_state)
#[btf_tracepoint(function = "sched_switch")]
pub fn runq_sched_switch(ctx: BtfTracePointContext) -> i32 {
    match try_sched_switch(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

#[inline(always)]
fn enqueued(task: *mut task_struct) -> i32 {
    if let Some(state) = RUNQ_TASKS.get_or_create(task) {
        // SAFETY: a BPF helper with no preconditions.
        state.enqueued_ns = unsafe { bpf_ktime_get_ns() };
    }
    0
}

#[inline(always)]
fn try_sched_switch(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let preempt: u64 = ctx.arg(0);
    let prev: *mut task_struct = ctx.arg(1);
    let next: *mut task_struct = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    // SAFETY: BPF helpers with no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };

    // `prev` is still `current` here. The idle task (pid 0) never waits in a run queue.
    let pid_tgid = bpf_get_current_pid_tgid();
    if pid_tgid as u32 != 0
        && let Some(state) = RUNQ_TASKS.get_or_create(prev)
    {
        if state.pending != 0 {
            state.pending = 0;
            attribute(pid_tgid, state.pending_wait_ns);
        }
        // Preempted, or yielding while runnable: it goes straight back to the queue.
        if preempt & 1 != 0 || prev_state as u32 as u64 == TASK_RUNNING {
            state.enqueued_ns = now;
        }
    }

    let state = RUNQ_TASKS.get_existing(next).ok_or(())?;
    if state.enqueued_ns == 0 {
        return Ok(());
    }
    let wait = now.saturating_sub(state.enqueued_ns);
    state.enqueued_ns = 0;
    // SAFETY: a global the loader initialised; volatile so its placeholder is not folded.
    if unsafe { core::ptr::read_volatile(&RUNQ_ATTRIBUTE) } != 0 {
        state.pending_wait_ns = wait;
        state.pending = 1;
    }
    record(&RUNQ_HIST, 0, wait);
    Ok(())
}

/// Attributes a wait of the current task to its cgroup and process.
#[inline(always)]
fn attribute(pid_tgid: u64, wait: u64) {
    let key = ProcessKey {
        // SAFETY: a BPF helper with no preconditions.
        cgroup: unsafe { bpf_get_current_cgroup_id() },
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
    };
    record_process(
        &RUNQ_BY_PROCESS,
        &key,
        wait,
        &RUNQ_COUNTERS,
        Counter::ProcessOverflow as u32,
    );
}
