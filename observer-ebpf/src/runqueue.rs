//! Run-queue latency: from a task being queued (woken, new, preempted while runnable, or
//! yielding) to it getting the CPU, measured with the kernel's own stamps.
//!
//! With `CONFIG_SCHED_INFO` the kernel already times every wait (kernel/sched/stats.h):
//! enqueue_task stamps `p->sched_info.last_queued = rq_clock(rq)` (a preempted task is stamped
//! when it departs), and sched_info_arrive, run from prepare_task_switch *after* the
//! sched_switch tracepoint, adds `rq_clock(rq) - last_queued` to `run_delay`, counts the
//! arrival in `pcount` and clears the stamp. So at sched_switch, `next`'s stamp is still there
//! and `rq->clock` (reached as `next->se.cfs_rq->rq`, which needs `CONFIG_FAIR_GROUP_SCHED`) is
//! the value the kernel is about to use: the wait is exactly the kernel's own. No wakeup hook,
//! no clock helper, nothing to stamp when a task is preempted.
//!
//! The price is the run queue's clock, which is not read at every event: after a wakeup that
//! preempts the running task, the kernel skips the clock update of the schedule that follows
//! (wakeup_preempt → rq_clock_skip_update, RQCF_ACT_SKIP in __schedule), so the woken task's
//! wait ends at the last update, often the wakeup itself: 0; and a task preempted there is
//! stamped with that stale clock, so its next wait grows by the same gap. On `perf bench sched
//! pipe` over 40% of the waits are 0 that a clock read at wakeup sees as about 1 us; the mean
//! and the waits above about 16 us agree (README, Signals).
//!
//! One correction: a task moved to another CPU while queued (load balancing) is dequeued there,
//! which adds the part waited so far to `run_delay` and clears the stamp, and is stamped afresh
//! on the new CPU. Timing from the stamp alone would under-report exactly the long waits idle
//! balancing rescues, so the wait is `run_delay - snapshot + (rq->clock - last_queued)`, where
//! the snapshot is `run_delay` right after the task's previous arrival, kept in task storage.
//! `pcount` says whether the snapshot is from that arrival: when it is not (a task that was
//! running before the agent started: its first timed wait) only the part on the last CPU is
//! counted. The fields are plain loads through BTF pointers at offsets the agent resolves from
//! the kernel's BTF, through btf::field: no helper calls.
//!
//! Attribution happens at the task's next switch-out, when it is `current`: then
//! bpf_get_current_cgroup_id/pid_tgid/comm give its cgroup and process without reading any more
//! kernel struct fields. That switch-out is the next sched_switch on the same CPU (a running
//! task cannot move), so the wait waits in a per-CPU slot, not in task storage. The per-process
//! histograms are the only record of an attributed wait (one map update per wait, not two), and
//! RUNQ_HIST holds only the waits that were not attributed; the agent's total is their sum, so
//! the total and the breakdown always agree. (A wait thus lands in the histograms one time
//! slice after it ended.) Without breakdowns every wait goes to RUNQ_HIST at switch-in.
//!
//! Sampling (the agent's overhead budget): with a sample shift `k` > 0 in RUNQ_SAMPLING, a wait
//! is timed when a hash of the task and the arrival's number (`pcount`) draws 1 in 2^k. The draw
//! is a function of what the switch-in reads anyway, so the switch-in before a timed one knows
//! it must leave a snapshot: 2 switch-ins in 2^k touch task storage, the others only read three
//! fields of `next`.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, task_struct},
    btf_maps::{Array, HashMap, PerCpuArray},
    macros::{btf_map, btf_tracepoint},
    programs::BtfTracePointContext,
};
use observer_common::{
    Hist, ProcessHist, ProcessKey,
    runqueue::{BY_PROCESS_ENTRIES, COUNTERS, Counter, HIST_ENTRIES, PendingWait, TaskState},
};

use crate::{
    btf::field,
    hist::{current_process, record, record_process, rename_current_process, sample_shift},
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
static RUNQ_OFF_LAST_QUEUED: u32 = 0;
#[unsafe(no_mangle)]
static RUNQ_OFF_RUN_DELAY: u32 = 0;
#[unsafe(no_mangle)]
static RUNQ_OFF_PCOUNT: u32 = 0;
#[unsafe(no_mangle)]
static RUNQ_OFF_PID: u32 = 0;
#[unsafe(no_mangle)]
static RUNQ_OFF_CFS_RQ: u32 = 0;
#[unsafe(no_mangle)]
static RUNQ_OFF_RQ: u32 = 0;
#[unsafe(no_mangle)]
static RUNQ_OFF_CLOCK: u32 = 0;

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

/// Whether arrival number `pcount` of thread `pid` is timed: always with `shift` 0, else when a
/// hash of the two draws 1 in 2^`shift` (murmur3's finaliser, so consecutive arrivals of a
/// thread and neighbouring threads draw independently of each other). The thread id rather than
/// the task's address: the verifier allows no arithmetic on a kernel pointer.
#[inline(always)]
fn drawn(shift: u32, pid: u32, pcount: u64) -> bool {
    if shift == 0 {
        return true;
    }
    let mut x = u64::from(pid) ^ pcount.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x & ((1u64 << (shift & 63)) - 1) == 0
}

#[inline(always)]
fn try_sched_switch(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let next: *mut task_struct = ctx.arg(2);
    // Sidecar mode (observer_common::scope) judges the wait at the task's switch-out too, when
    // it is `current` and the check is one helper call: so with a scope the wait is kept until
    // then even without breakdowns.
    let deferred = attribute() || scope::on();
    if deferred {
        settle();
    }

    let task = next as u64;
    // 0 for the idle task (never queued) and for a task that arrives without having waited.
    let queued = field::<u64>(task, &RUNQ_OFF_LAST_QUEUED);
    if queued == 0 {
        return Ok(());
    }
    let pcount = field::<u64>(task, &RUNQ_OFF_PCOUNT);
    let shift = sample_shift(&RUNQ_SAMPLING);
    let pid = if shift == 0 {
        0
    } else {
        field::<u32>(task, &RUNQ_OFF_PID)
    };
    let timed = drawn(shift, pid, pcount);
    // Whether the task's next arrival (number pcount + 1) will be timed and needs a snapshot.
    let keep = drawn(shift, pid, pcount.wrapping_add(1));
    if !timed && !keep {
        return Ok(());
    }
    let rq = field::<u64>(field::<u64>(task, &RUNQ_OFF_CFS_RQ), &RUNQ_OFF_RQ);
    let last_part = field::<u64>(rq, &RUNQ_OFF_CLOCK).saturating_sub(queued);
    let run_delay = field::<u64>(task, &RUNQ_OFF_RUN_DELAY);
    let state = RUNQ_TASKS.get_or_create(next).ok_or(())?;
    // What the kernel added to run_delay since the previous arrival: the parts of this wait
    // spent queued on other CPUs. Without a snapshot from that arrival, the last part only.
    let wait = if state.pcount == pcount {
        run_delay.saturating_sub(state.run_delay_ns) + last_part
    } else {
        last_part
    };
    if keep {
        // What sched_info_arrive is about to make them.
        state.run_delay_ns = run_delay + last_part;
        state.pcount = pcount.wrapping_add(1);
    }
    if !timed {
        return Ok(());
    }
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
