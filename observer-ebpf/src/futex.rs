//! User-space futex waits: time a thread spends blocked in a waiting futex call (FUTEX_WAIT
//! family, futex_waitv, futex_wait), per process, from sched_switch alone.
//!
//! Why not sys_enter/sys_exit: those fire for every system call on the host, and reaching a
//! program there costs about 35 ns per hook even when it returns at once, which added 40% to a
//! bare getppid() loop. A futex wait that matters is one that blocks, and blocking is a context
//! switch: the waiter switches out asleep inside the call and switches in when woken. The
//! syscall a task is in is the number its entry saved in its user registers (`orig_ax` on
//! x86_64), which bpf_task_pt_regs reaches for any task, so sched_switch can tell a futex wait
//! from every other sleep without a syscall hook:
//! - switch-out (`prev` is current): asleep (not preempted, state not running) inside a waiting
//!   futex call starts a wait, in task storage;
//! - switch-in: a task inside a futex call is looked up, and a started wait ends; others cost
//!   one register load.
//!
//! A wait is one blocked stretch, switch-out to switch-in (so it includes the wait for a CPU
//! once woken, as the call's own duration would). A call that returns without blocking (the
//! futex word had changed, or the wake came first) is not a wait; one that blocks twice (a PI
//! lock stolen after the wake-up) is two.
//!
//! The woken task is not current at switch-in, so its process is read from its task_struct
//! (hist::task_process), not from the current-task helpers.
//!
//! Sampling (the agent's overhead budget): with a sample shift `k` > 0 in FUTEX_SAMPLING, a
//! blocking futex wait is timed only when its switch-out draws 1 in 2^k; an unsampled one stores
//! no start time, so its switch-in finds none.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, task_struct},
    btf_maps::{Array, HashMap, PerCpuArray},
    helpers::generated::{bpf_ktime_get_ns, bpf_task_pt_regs},
    macros::{btf_map, btf_tracepoint},
    programs::BtfTracePointContext,
};
use observer_common::{
    Hist, ProcessHist, ProcessKey,
    lock::futex::{BY_PROCESS_ENTRIES, COUNTERS, Counter, FutexWait, HIST_ENTRIES, is_wait},
};

use crate::{
    btf::field,
    hist::{
        record, record_process_of, rename_current_process, sample_shift, sampled, task_comm,
        task_process,
    },
    scope,
    task_storage::TaskStorage,
};

const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;

#[btf_map]
static FUTEX_HIST: PerCpuArray<Hist, { HIST_ENTRIES as usize }> = PerCpuArray::new();
#[btf_map]
static FUTEX_COUNTERS: PerCpuArray<u64, { COUNTERS as usize }> = PerCpuArray::new();
#[btf_map]
static FUTEX_BY_PROCESS: HashMap<
    ProcessKey,
    ProcessHist,
    { BY_PROCESS_ENTRIES as usize },
    NO_PREALLOC,
> = HashMap::new();
#[btf_map]
static FUTEX_TASKS: TaskStorage<FutexWait> = TaskStorage::new();
/// observer_common::lock::futex::SAMPLING_MAP: the sample shift, written by the agent.
#[btf_map]
static FUTEX_SAMPLING: Array<u32, 1> = Array::new();

// Set by the agent for this architecture (observer_common::lock::futex::GLOBAL_*); -1 for a
// syscall this kernel does not have.
#[unsafe(no_mangle)]
static FUTEX_NR_FUTEX: i64 = -1;
#[unsafe(no_mangle)]
static FUTEX_NR_FUTEX_WAITV: i64 = -1;
#[unsafe(no_mangle)]
static FUTEX_NR_FUTEX_WAIT: i64 = -1;
#[unsafe(no_mangle)]
static FUTEX_OFF_REGS_ARG1: u32 = 0;
#[unsafe(no_mangle)]
static FUTEX_OFF_REGS_NR: u32 = 0;

/// `TASK_RUNNING` (include/linux/sched.h).
const TASK_RUNNING: u32 = 0;

/// sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
#[btf_tracepoint(function = "sched_process_exec")]
pub fn futex_sched_process_exec(_ctx: BtfTracePointContext) -> i32 {
    rename_current_process(&FUTEX_BY_PROCESS);
    0
}

/// sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
/// unsigned int prev_state)
#[btf_tracepoint(function = "sched_switch")]
pub fn futex_sched_switch(ctx: BtfTracePointContext) -> i32 {
    match try_sched_switch(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// The syscall number `task` entered with (its saved user registers), and those registers.
#[inline(always)]
fn syscall_of(task: *mut task_struct) -> (i64, u64) {
    // SAFETY: `task` is a BTF task pointer (a tracepoint argument); the helper returns a BTF
    // pointer to its user registers, valid for any task (a kernel thread's are zeroed).
    let regs = unsafe { bpf_task_pt_regs(task) } as u64;
    (field::<u64>(regs, &FUTEX_OFF_REGS_NR) as i64, regs)
}

/// Whether `nr` is one of the futex syscalls this kernel has.
#[inline(always)]
fn is_futex(nr: i64) -> bool {
    // SAFETY: globals the loader initialised; volatile so the placeholders are not folded.
    let (nr_futex, nr_waitv, nr_wait) = unsafe {
        (
            core::ptr::read_volatile(&FUTEX_NR_FUTEX),
            core::ptr::read_volatile(&FUTEX_NR_FUTEX_WAITV),
            core::ptr::read_volatile(&FUTEX_NR_FUTEX_WAIT),
        )
    };
    nr == nr_futex || nr == nr_waitv || nr == nr_wait
}

#[inline(always)]
fn try_sched_switch(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let preempt: u64 = ctx.arg(0);
    let prev: *mut task_struct = ctx.arg(1);
    let next: *mut task_struct = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    if preempt & 1 == 0 && prev_state as u32 != TASK_RUNNING {
        start(prev);
    }
    end(next)
}

/// `prev` (current) goes to sleep: inside a waiting futex call, a wait starts.
#[inline(always)]
fn start(prev: *mut task_struct) {
    let (nr, regs) = syscall_of(prev);
    if !is_futex(nr) {
        return;
    }
    // SAFETY: a global the loader initialised.
    if nr == unsafe { core::ptr::read_volatile(&FUTEX_NR_FUTEX) }
        && !is_wait(field::<u64>(regs, &FUTEX_OFF_REGS_ARG1) as u32)
    {
        return;
    }
    // Sidecar mode: a wait outside the scope is never started, so its switch-in finds nothing.
    // Sampling: nor is a wait that does not draw its sample.
    if !scope::current_in_scope() || !sampled(sample_shift(&FUTEX_SAMPLING)) {
        return;
    }
    if let Some(wait) = FUTEX_TASKS.get_or_create(prev) {
        // SAFETY: a BPF helper with no preconditions.
        wait.start_ns = unsafe { bpf_ktime_get_ns() };
    }
}

/// `next` gets the CPU: a wait it started ends.
#[inline(always)]
fn end(next: *mut task_struct) -> Result<(), ()> {
    // Only a task inside a futex call can have started a wait; every other switch-in stops
    // here, before any task-storage lookup.
    if !is_futex(syscall_of(next).0) {
        return Ok(());
    }
    let wait = FUTEX_TASKS.get_existing(next).ok_or(())?;
    if wait.start_ns == 0 {
        return Ok(());
    }
    // SAFETY: a BPF helper with no preconditions.
    let waited = unsafe { bpf_ktime_get_ns() }.saturating_sub(wait.start_ns);
    wait.start_ns = 0;
    // FUTEX_HIST holds only the waits the per-process map had no room for; the agent adds the
    // two (see runqueue.rs).
    if !record_process_of(
        &FUTEX_BY_PROCESS,
        &task_process(next),
        waited,
        &FUTEX_COUNTERS,
        Counter::ProcessOverflow as u32,
        || task_comm(next),
    ) {
        record(&FUTEX_HIST, 0, waited);
    }
    Ok(())
}
