//! Run-queue latency: from a task becoming runnable (sched_wakeup, sched_wakeup_new, or
//! preempted at sched_switch while still runnable) to it getting the CPU (sched_switch).
//!
//! The per-task enqueue time lives in task storage. The wait is measured when the task is
//! switched in, and attributed there and then to the task's cgroup and process, read from
//! `next` with plain loads the verifier checks against BTF (`next` is a BTF pointer, the field
//! offsets constants from the agent, see observer_common::runqueue::GLOBAL_TASK_TGID). The
//! per-process histograms are the only record of an attributed wait (one map update per wait),
//! and RUNQ_HIST holds only the waits that were not attributed; the agent's total is their sum,
//! so the total and the breakdown always agree. Without breakdowns every wait goes to RUNQ_HIST.
//!
//! `prev` is looked up only when it matters: when it goes back to the queue (a new wait starts),
//! under sampling (a stale stamp must go, see below), or in sidecar mode. There the wait's task
//! must be judged against the scope while it is `current` (bpf_current_task_under_cgroup), so the
//! wait is kept in its task storage as pending and recorded at the task's next switch-out, one
//! time slice after it ended.
//!
//! Sampling (the agent's overhead budget): with a sample shift `k` > 0 in RUNQ_SAMPLING, an
//! enqueue stamps the task only when it draws 1 in 2^k (bpf_get_prandom_u32), so an unsampled
//! wakeup touches no task storage and an unsampled wait is never attributed. The switch-in
//! needs no decision of its own: it times whatever stamp it finds. For that to be exactly the
//! sampled waits, a task going to sleep loses its stamp (a wakeup that came while it still ran
//! stamped it; with every wakeup sampled the next one overwrites it, so without sampling a
//! sleeping `prev` is not looked up at all).

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, task_struct},
    btf_maps::{Array, HashMap, PerCpuArray},
    helpers::{bpf_get_current_pid_tgid, generated::bpf_ktime_get_ns},
    macros::{btf_map, btf_tracepoint},
    programs::BtfTracePointContext,
};
use observer_common::{
    COMM_LEN, Hist, ProcessHist, ProcessKey,
    runqueue::{BY_PROCESS_ENTRIES, COUNTERS, Counter, HIST_ENTRIES, TaskState},
};

use crate::{
    hist::{
        current_comm, current_process, record, record_process, rename_current_process,
        sample_shift, sampled,
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

// Offsets set by the agent from BTF when attributing (observer_common::runqueue::GLOBAL_*).
#[unsafe(no_mangle)]
static RUNQ_OFF_TASK_TGID: u32 = 0;
#[unsafe(no_mangle)]
static RUNQ_OFF_TASK_COMM: u32 = 0;
#[unsafe(no_mangle)]
static RUNQ_OFF_TASK_CGROUPS: u32 = 0;
#[unsafe(no_mangle)]
static RUNQ_OFF_CSS_SET_DFL_CGRP: u32 = 0;
#[unsafe(no_mangle)]
static RUNQ_OFF_CGROUP_KN: u32 = 0;
#[unsafe(no_mangle)]
static RUNQ_OFF_KN_ID: u32 = 0;

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

    // Preempted, or yielding while runnable: `prev` goes straight back to the queue (a new
    // wait, sampled like a wakeup). Going to sleep: any stamp is stale (see the module doc).
    let requeued = preempt & 1 != 0 || prev_state as u32 as u64 == TASK_RUNNING;
    let shift = sample_shift(&RUNQ_SAMPLING);
    // `prev` is still `current` here. The idle task (pid 0) never waits in a run queue.
    if (requeued || shift != 0 || scope::on())
        && bpf_get_current_pid_tgid() as u32 != 0
        && let Some(state) = RUNQ_TASKS.get_or_create(prev)
    {
        // Only in sidecar mode (see below): without a scope the verifier prunes this block.
        if scope::on() && state.pending != 0 {
            state.pending = 0;
            let wait = state.pending_wait_ns;
            // A wait of a task outside the scope is dropped. Attributed, to the task's process,
            // or the histogram when the map is full (or without attribution).
            if scope::current_in_scope()
                && (!attribute()
                    || !record_process(
                        &RUNQ_BY_PROCESS,
                        &current_process(),
                        wait,
                        &RUNQ_COUNTERS,
                        Counter::ProcessOverflow as u32,
                        current_comm,
                    ))
            {
                record(&RUNQ_HIST, 0, wait);
            }
        }
        state.enqueued_ns = if requeued && sampled(shift) {
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
    if scope::on() {
        // Sidecar mode (observer_common::scope) judges the wait at the task's next switch-out,
        // when it is `current` and the check is one helper call.
        state.pending_wait_ns = wait;
        state.pending = 1;
    } else if !attribute()
        || !record_process(
            &RUNQ_BY_PROCESS,
            &task_process(next as u64),
            wait,
            &RUNQ_COUNTERS,
            Counter::ProcessOverflow as u32,
            || Some(task_comm(next as u64)),
        )
    {
        record(&RUNQ_HIST, 0, wait);
    }
    Ok(())
}

/// A field of a task (or of what it points to) at an offset from a global: a plain load the
/// verifier checks against BTF, since the base is a BTF pointer and the offset a constant to it
/// (frozen `.rodata`). A NULL or bad base reads 0 instead of faulting.
///
/// # Safety
/// `base` must be a BTF pointer (a tp_btf argument, or a pointer field loaded from one) and
/// `T` the size of the field at `off`.
#[inline(always)]
unsafe fn field<T>(base: u64, off: &u32) -> T {
    // SAFETY: see above; volatile so the offset is not folded and the field is read as one
    // load of its own size, the access the verifier accepts.
    unsafe {
        let off = core::ptr::read_volatile(off) as u64;
        core::ptr::read_volatile((base + off) as *const T)
    }
}

/// A task's (cgroup, process): `tgid`, and the id of its cgroup v2 as
/// bpf_get_current_cgroup_id gives it (`cgroups->dfl_cgrp->kn->id`).
#[inline(always)]
fn task_process(task: u64) -> ProcessKey {
    // SAFETY: `task` is sched_switch's `next` and each pointer is loaded from the field before
    // it (see `field`).
    unsafe {
        let tgid: u32 = field(task, &RUNQ_OFF_TASK_TGID);
        let cgroups: u64 = field(task, &RUNQ_OFF_TASK_CGROUPS);
        let cgroup = if cgroups == 0 {
            0
        } else {
            let cgrp: u64 = field(cgroups, &RUNQ_OFF_CSS_SET_DFL_CGRP);
            let kn: u64 = field(cgrp, &RUNQ_OFF_CGROUP_KN);
            field(kn, &RUNQ_OFF_KN_ID)
        };
        ProcessKey {
            cgroup,
            tgid,
            _pad: 0,
        }
    }
}

/// A task's `comm`, as two 8-byte loads (the verifier allows any load inside a scalar array).
#[inline(always)]
fn task_comm(task: u64) -> [u8; COMM_LEN] {
    // SAFETY: as in task_process; `comm` is 16 bytes.
    let (lo, hi): (u64, u64) = unsafe {
        let off = core::ptr::read_volatile(&RUNQ_OFF_TASK_COMM) as u64;
        (
            core::ptr::read_volatile((task + off) as *const u64),
            core::ptr::read_volatile((task + off + 8) as *const u64),
        )
    };
    let mut comm = [0; COMM_LEN];
    comm[..8].copy_from_slice(&lo.to_le_bytes());
    comm[8..].copy_from_slice(&hi.to_le_bytes());
    comm
}

/// Whether waits are attributed to (cgroup, process) (observer_common::runqueue::GLOBAL_ATTRIBUTE).
#[inline(always)]
fn attribute() -> bool {
    // SAFETY: a global the loader initialised; volatile so its placeholder is not folded.
    unsafe { core::ptr::read_volatile(&RUNQ_ATTRIBUTE) != 0 }
}
