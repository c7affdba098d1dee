//! Run-queue latency: from a task becoming runnable (sched_wakeup, sched_wakeup_new, or
//! preempted at sched_switch while still runnable) to it getting the CPU (sched_switch).
//!
//! The per-task enqueue time lives in task storage. The wait is measured when the task is
//! switched in, and recorded at its next switch-out, when it is `current`: then
//! bpf_get_current_cgroup_id/pid_tgid/comm give its cgroup and process without reading any kernel
//! struct field. The per-process histograms are the only record of an attributed wait (one map
//! update per wait, not two), and RUNQ_HIST holds only the waits that were not attributed; the
//! agent's total is their sum, so the total and the breakdown always agree. (A wait thus lands
//! in the histograms one time slice after it ended.) Without breakdowns every wait goes to
//! RUNQ_HIST at switch-in and the switch-out work is skipped.
//!
//! Sampling (the agent's overhead budget): with a sample shift `k` > 0 in RUNQ_SAMPLING, an
//! enqueue stamps the task only when it draws 1 in 2^k (bpf_get_prandom_u32), so an unsampled
//! wakeup touches no task storage and an unsampled wait is never attributed. The switch-in
//! needs no decision of its own: it times whatever stamp it finds. For that to be exactly the
//! sampled waits, a task going to sleep loses its stamp (a wakeup that came while it still ran
//! stamped it; with every wakeup sampled the next one overwrote it, with sampling it might not).

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, task_struct},
    btf_maps::{Array, HashMap, PerCpuArray},
    helpers::{bpf_get_current_pid_tgid, generated::bpf_ktime_get_ns},
    macros::{btf_map, btf_tracepoint},
    programs::BtfTracePointContext,
};
use observer_common::{
    Hist, ProcessHist, ProcessKey,
    runqueue::{BY_PROCESS_ENTRIES, COUNTERS, Counter, HIST_ENTRIES, TaskState},
};

use crate::{
    hist::{
        current_process, record, record_process, rename_current_process, sample_shift, sampled,
    },
    scope,
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
/// observer_common::runqueue::SAMPLING_MAP: the sample shift, written by the agent.
#[btf_map]
static RUNQ_SAMPLING: Array<u32, 1> = Array::new();

/// observer_common::runqueue::GLOBAL_ATTRIBUTE.
#[unsafe(no_mangle)]
static RUNQ_ATTRIBUTE: u32 = 1;

/// `TASK_RUNNING` (include/linux/sched.h).
const TASK_RUNNING: u64 = 0;

#[btf_tracepoint(function = "sched_wakeup")]
pub fn runq_sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    match try_enqueue(ctx.arg(0)) {
        Ok(()) | Err(()) => 0,
    }
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn runq_sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    match try_enqueue(ctx.arg(0)) {
        Ok(()) | Err(()) => 0,
    }
}

/// sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
/// unsigned int prev_state)
/// sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
#[btf_tracepoint(function = "sched_process_exec")]
pub fn runq_sched_process_exec(_ctx: BtfTracePointContext) -> i32 {
    rename_current_process(&RUNQ_BY_PROCESS);
    0
}

#[btf_tracepoint(function = "sched_switch")]
pub fn runq_sched_switch(ctx: BtfTracePointContext) -> i32 {
    match try_sched_switch(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// sched_wakeup(struct task_struct *p) and sched_wakeup_new(struct task_struct *p)
#[inline(always)]
fn try_enqueue(task: *mut task_struct) -> Result<(), ()> {
    if !sampled(sample_shift(&RUNQ_SAMPLING)) {
        return Ok(());
    }
    // SAFETY: a BPF helper with no preconditions.
    RUNQ_TASKS.get_or_create(task).ok_or(())?.enqueued_ns = unsafe { bpf_ktime_get_ns() };
    Ok(())
}

#[inline(always)]
fn try_sched_switch(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let preempt: u64 = ctx.arg(0);
    let prev: *mut task_struct = ctx.arg(1);
    let next: *mut task_struct = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    // Read once, and only when a stamp is set or a wait ends: most switches under sampling do
    // neither.
    let mut now = 0;
    let mut clock = || {
        if now == 0 {
            // SAFETY: a BPF helper with no preconditions.
            now = unsafe { bpf_ktime_get_ns() };
        }
        now
    };

    // `prev` is still `current` here. The idle task (pid 0) never waits in a run queue.
    if bpf_get_current_pid_tgid() as u32 != 0
        && let Some(state) = RUNQ_TASKS.get_or_create(prev)
    {
        if state.pending != 0 {
            state.pending = 0;
            let wait = state.pending_wait_ns;
            // Sidecar mode drops a wait of a task outside the scope. Pending without
            // attribution (only in sidecar mode) goes to the histogram; attributed, to the
            // task's process, or the histogram when the map is full.
            if scope::current_in_scope()
                && (!attribute()
                    || !record_process(
                        &RUNQ_BY_PROCESS,
                        &current_process(),
                        wait,
                        &RUNQ_COUNTERS,
                        Counter::ProcessOverflow as u32,
                    ))
            {
                record(&RUNQ_HIST, 0, wait);
            }
        }
        // Preempted, or yielding while runnable: it goes straight back to the queue (a new
        // wait, sampled like a wakeup). Going to sleep: any stamp is stale (see the module doc).
        state.enqueued_ns = if (preempt & 1 != 0 || prev_state as u32 as u64 == TASK_RUNNING)
            && sampled(sample_shift(&RUNQ_SAMPLING))
        {
            clock()
        } else {
            0
        };
    }

    let state = RUNQ_TASKS.get_existing(next).ok_or(())?;
    if state.enqueued_ns == 0 {
        return Ok(());
    }
    let wait = clock().saturating_sub(state.enqueued_ns);
    state.enqueued_ns = 0;
    // Sidecar mode (observer_common::scope) judges the wait at the task's next switch-out
    // too, when it is `current` and the check is one helper call: so with a scope the
    // switch-out path runs even without breakdowns.
    if attribute() || scope::on() {
        state.pending_wait_ns = wait;
        state.pending = 1;
    } else {
        record(&RUNQ_HIST, 0, wait);
    }
    Ok(())
}

/// Whether waits are attributed to (cgroup, process) (observer_common::runqueue::GLOBAL_ATTRIBUTE).
#[inline(always)]
fn attribute() -> bool {
    // SAFETY: a global the loader initialised; volatile so its placeholder is not folded.
    unsafe { core::ptr::read_volatile(&RUNQ_ATTRIBUTE) != 0 }
}
