//! Run-queue latency: from a task becoming runnable (sched_waking, sched_wakeup_new, or
//! preempted at sched_switch while still runnable) to it getting the CPU (sched_switch), timed
//! with bpf_ktime_get_ns: the definition of `perf sched timehist`, and the latency an
//! application feels. On an idle CPU it includes the time the CPU takes to get the woken task
//! running (the wakeup IPI, leaving halt or a C-state), which two cheaper starts miss:
//! - `sched_wakeup` (runqlat's start): try_to_wake_up queues a wakeup for an idle CPU that
//!   shares the waker's cache on that CPU's wake list and sends an IPI (ttwu_queue_cond,
//!   kernel/sched/core.c); `sched_wakeup` fires there, when the IPI is handled, after the CPU
//!   has left idle. `sched_waking` fires on the waker's CPU before any of that, for the same
//!   wakeups (both follow the same state match; ttwu_runnable ends in ttwu_do_wakeup too).
//! - the kernel's own `sched_info` accounting: after a wakeup that preempts the running task
//!   (there, the idle task) the kernel skips the next rq clock update, so `run_delay` reads 0
//!   for exactly the waits C-states lengthen.
//!
//! The start time lives in task storage, so it follows a task that load balancing moves to
//! another CPU while it waits: the wait is whole wherever it ends.
//!
//! Attribution happens at the task's next switch-out, when it is `current`: then
//! bpf_get_current_cgroup_id/pid_tgid/comm give its cgroup and process without reading kernel
//! struct fields. That switch-out is the next sched_switch on the same CPU (a running task
//! cannot move), so the measured wait waits in a per-CPU slot, not in task storage. The
//! per-process histograms are the only record of an attributed wait (one map update per wait,
//! not two), and RUNQ_HIST holds only the waits that were not attributed; the agent's total is
//! their sum, so the total and the breakdown always agree. (A wait thus lands in the histograms
//! one time slice after it ended.) Without breakdowns every wait goes to RUNQ_HIST at switch-in.
//!
//! A wakeup of a task that is already waiting (preempted while it was about to sleep, then
//! woken before it ran again) keeps the start of that wait: the task has been runnable since.
//!
//! Per switch: one clock read at most, shared by `prev`'s start and `next`'s end; a `prev` going
//! to sleep costs nothing (its wait starts at its wakeup); `next` costs one task-storage lookup.
//!
//! Sampling (the agent's overhead budget): with a sample shift `k` > 0 in RUNQ_SAMPLING, a wait
//! is timed when the event that starts it draws 1 in 2^k, so an unsampled wakeup returns after
//! one map load and a draw, touching no task storage. The switch-in times whatever start it
//! finds, so a start must never outlive its wait: a task woken while still running (a wakeup
//! racing its way to sleep) keeps the start of a wait that never happened, and with every
//! wakeup sampled the next wakeup overwrites it, but an unsampled one would not. Each start
//! therefore carries the task's count of context switches (`nvcsw + nivcsw`, bumped at every
//! switch-out before the tracepoint): a start made before the task's last switch-out is stale
//! and is dropped, for the price of two loads at each end.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, task_struct},
    btf_maps::{Array, HashMap, PerCpuArray},
    helpers::{bpf_get_current_pid_tgid, generated::bpf_ktime_get_ns},
    macros::{btf_map, btf_tracepoint},
    programs::BtfTracePointContext,
};
use observer_common::{
    Hist, ProcessHist, ProcessKey,
    runqueue::{BY_PROCESS_ENTRIES, COUNTERS, Counter, HIST_ENTRIES, PendingWait, TaskState},
};

use crate::{
    btf::field,
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
/// The wait of the task last switched in on this CPU, until its switch-out.
#[btf_map]
static RUNQ_PENDING: PerCpuArray<PendingWait, 1> = PerCpuArray::new();
/// observer_common::runqueue::SAMPLING_MAP: the sample shift, written by the agent.
#[btf_map]
static RUNQ_SAMPLING: Array<u32, 1> = Array::new();

/// observer_common::runqueue::GLOBAL_ATTRIBUTE.
#[unsafe(no_mangle)]
static RUNQ_ATTRIBUTE: u32 = 1;

// Offsets from this kernel's BTF (observer_common::runqueue::GLOBAL_*).
#[unsafe(no_mangle)]
static RUNQ_OFF_NVCSW: u32 = 0;
#[unsafe(no_mangle)]
static RUNQ_OFF_NIVCSW: u32 = 0;

/// `TASK_RUNNING` (include/linux/sched.h).
const TASK_RUNNING: u32 = 0;

/// sched_waking(struct task_struct *p)
#[btf_tracepoint(function = "sched_waking")]
pub fn runq_sched_waking(ctx: BtfTracePointContext) -> i32 {
    match try_wakeup(ctx.arg(0)) {
        Ok(()) | Err(()) => 0,
    }
}

/// sched_wakeup_new(struct task_struct *p): a new task has no sched_waking.
#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn runq_sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    match try_wakeup(ctx.arg(0)) {
        Ok(()) | Err(()) => 0,
    }
}

/// sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
#[btf_tracepoint(function = "sched_process_exec")]
pub fn runq_sched_process_exec(_ctx: BtfTracePointContext) -> i32 {
    rename_current_process(&RUNQ_BY_PROCESS);
    0
}

/// sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
/// unsigned int prev_state)
#[btf_tracepoint(function = "sched_switch")]
pub fn runq_sched_switch(ctx: BtfTracePointContext) -> i32 {
    match try_sched_switch(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// How many times `task` has been switched out: the stamp that tells a start made for the
/// current stretch off the CPU from a stale one (see the module doc).
#[inline(always)]
fn switches(task: *mut task_struct) -> u64 {
    let task = task as u64;
    field::<u64>(task, &RUNQ_OFF_NVCSW).wrapping_add(field::<u64>(task, &RUNQ_OFF_NIVCSW))
}

/// Starts a wait of `task` at `now`.
#[inline(always)]
fn start(task: *mut task_struct, now: u64) -> Result<(), ()> {
    let state = RUNQ_TASKS.get_or_create(task).ok_or(())?;
    state.enqueued_ns = now;
    state.switches = switches(task);
    Ok(())
}

#[inline(always)]
fn try_wakeup(task: *mut task_struct) -> Result<(), ()> {
    if !sampled(sample_shift(&RUNQ_SAMPLING)) {
        return Ok(());
    }
    let state = RUNQ_TASKS.get_or_create(task).ok_or(())?;
    let switches = switches(task);
    // Already waiting since it was preempted: that wait goes on.
    if state.enqueued_ns != 0 && state.switches == switches {
        return Ok(());
    }
    // SAFETY: a BPF helper with no preconditions.
    state.enqueued_ns = unsafe { bpf_ktime_get_ns() };
    state.switches = switches;
    Ok(())
}

#[inline(always)]
fn try_sched_switch(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let preempt: u64 = ctx.arg(0);
    let prev: *mut task_struct = ctx.arg(1);
    let next: *mut task_struct = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    // Sidecar mode (observer_common::scope) judges the wait at the task's switch-out too, when
    // it is `current` and the check is one helper call: so with a scope the wait is kept until
    // then even without breakdowns.
    let deferred = attribute() || scope::on();
    if deferred {
        settle();
    }
    // One clock read per switch at most, shared by both ends, and none when neither needs it.
    let mut now = 0;
    let mut clock = || {
        if now == 0 {
            // SAFETY: a BPF helper with no preconditions.
            now = unsafe { bpf_ktime_get_ns() };
        }
        now
    };

    // Preempted, or yielding while runnable: `prev` goes straight back to the queue, a new
    // wait. Going to sleep: nothing to do, its wait starts when it is woken. The idle task
    // (pid 0, always "running") never waits in a run queue.
    if (preempt & 1 != 0 || prev_state as u32 == TASK_RUNNING)
        && bpf_get_current_pid_tgid() as u32 != 0
        && sampled(sample_shift(&RUNQ_SAMPLING))
    {
        start(prev, clock())?;
    }

    let state = RUNQ_TASKS.get_existing(next).ok_or(())?;
    let enqueued = state.enqueued_ns;
    if enqueued == 0 {
        return Ok(());
    }
    state.enqueued_ns = 0;
    if state.switches != switches(next) {
        // A start from before the task's last switch-out: a wait that never happened.
        return Ok(());
    }
    let wait = clock().saturating_sub(enqueued);
    if deferred {
        if let Some(pending) = RUNQ_PENDING.get_ptr_mut(0) {
            // SAFETY: this CPU's slot; sched_switch programs on one CPU do not nest.
            unsafe {
                (*pending).wait_ns = wait;
                (*pending).pending = 1;
            }
        }
    } else {
        record(&RUNQ_HIST, 0, wait);
    }
    Ok(())
}

/// Records the wait of `prev`, the task switched in last on this CPU (every switch runs this
/// program, and a running task stays on its CPU), now that it is `current` for the last time in
/// this slice.
#[inline(always)]
fn settle() {
    let Some(pending) = RUNQ_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot, as above.
    let pending = unsafe { &mut *pending };
    if pending.pending == 0 {
        return;
    }
    pending.pending = 0;
    let wait = pending.wait_ns;
    // Sidecar mode drops a wait of a task outside the scope. Pending without attribution (only
    // in sidecar mode) goes to the histogram; attributed, to the task's process, or the
    // histogram when the map is full.
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

/// Whether waits are attributed to (cgroup, process) (observer_common::runqueue::GLOBAL_ATTRIBUTE).
#[inline(always)]
fn attribute() -> bool {
    // SAFETY: a global the loader initialised; volatile so its placeholder is not folded.
    unsafe { core::ptr::read_volatile(&RUNQ_ATTRIBUTE) != 0 }
}
