//! User-space futex waits: time spent inside a waiting futex call (FUTEX_WAIT family,
//! futex_waitv, futex_wait), per process, from the raw syscall tracepoints.
//!
//! sys_enter/sys_exit fire for every system call, so both return after a load of the syscall
//! number and three comparisons for anything that is not a futex call: the number is in the
//! tracepoint's arguments at enter, and read from `regs` (a BTF pointer, so a plain load the
//! verifier checks, no helper call) at exit.
//!
//! Sampling (the agent's overhead budget): with a sample shift `k` > 0 in FUTEX_SAMPLING, a
//! futex wait is timed only when its sys_enter draws 1 in 2^k; an unsampled one stores no start
//! time, so its sys_exit finds none and returns after the task-storage lookup.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{Array, HashMap, PerCpuArray},
    helpers::generated::{bpf_get_current_task_btf, bpf_ktime_get_ns},
    macros::{btf_map, btf_tracepoint},
    programs::BtfTracePointContext,
};
use observer_common::{
    Hist, ProcessHist, ProcessKey,
    lock::futex::{
        BY_PROCESS_ENTRIES, COUNTERS, Counter, EAGAIN, FutexWait, HIST_ENTRIES, is_wait,
    },
};

use crate::{
    hist::{
        count, current_process, record, record_process, rename_current_process, sample_shift,
        sampled,
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

/// sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
#[btf_tracepoint(function = "sched_process_exec")]
pub fn futex_sched_process_exec(_ctx: BtfTracePointContext) -> i32 {
    rename_current_process(&FUTEX_BY_PROCESS);
    0
}

/// sys_enter(struct pt_regs *regs, long id)
#[btf_tracepoint(function = "sys_enter")]
pub fn futex_sys_enter(ctx: BtfTracePointContext) -> i32 {
    match try_enter(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// sys_exit(struct pt_regs *regs, long ret)
#[btf_tracepoint(function = "sys_exit")]
pub fn futex_sys_exit(ctx: BtfTracePointContext) -> i32 {
    match try_exit(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// Whether `id` is one of the futex syscalls this kernel has.
#[inline(always)]
fn is_futex(id: i64) -> bool {
    // SAFETY: globals the loader initialised; volatile so the placeholders are not folded.
    let (nr_futex, nr_waitv, nr_wait) = unsafe {
        (
            core::ptr::read_volatile(&FUTEX_NR_FUTEX),
            core::ptr::read_volatile(&FUTEX_NR_FUTEX_WAITV),
            core::ptr::read_volatile(&FUTEX_NR_FUTEX_WAIT),
        )
    };
    id == nr_futex || id == nr_waitv || id == nr_wait
}

/// A field of `struct pt_regs` at an offset from a global. `regs` is a BTF pointer (a tp_btf
/// argument) and the offset a constant to the verifier (frozen `.rodata`): a plain load, which
/// it checks against the kernel's BTF, instead of a bpf_probe_read_kernel call.
#[inline(always)]
fn regs_field(regs: u64, off: &u32) -> u64 {
    // SAFETY: BTF-checked loads (see above); volatile so the offset is not folded and the
    // field is read as one 8-byte load, the only access the verifier accepts.
    unsafe {
        let off = core::ptr::read_volatile(off) as u64;
        core::ptr::read_volatile((regs + off) as *const u64)
    }
}

#[inline(always)]
fn try_enter(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let id: i64 = ctx.arg(1);
    if !is_futex(id) {
        return Ok(());
    }
    // SAFETY: a global the loader initialised.
    if id == unsafe { core::ptr::read_volatile(&FUTEX_NR_FUTEX) }
        && !is_wait(regs_field(ctx.arg(0), &FUTEX_OFF_REGS_ARG1) as u32)
    {
        return Ok(());
    }
    // Sidecar mode: a wait outside the scope is never started, so its exit finds nothing.
    // Sampling: nor is a wait that does not draw its sample.
    if !scope::current_in_scope() || !sampled(sample_shift(&FUTEX_SAMPLING)) {
        return Ok(());
    }
    // SAFETY: BPF helpers with no preconditions.
    let (task, now) = unsafe { (bpf_get_current_task_btf(), bpf_ktime_get_ns()) };
    FUTEX_TASKS.get_or_create(task).ok_or(())?.start_ns = now;
    Ok(())
}

#[inline(always)]
fn try_exit(ctx: &BtfTracePointContext) -> Result<(), ()> {
    // The syscall number saved at entry: only a futex call can have started a wait. (Signal
    // restarts change the registers after this tracepoint, on the way back to user space.)
    if !is_futex(regs_field(ctx.arg(0), &FUTEX_OFF_REGS_NR) as i64) {
        return Ok(());
    }
    // SAFETY: a BPF helper with no preconditions.
    let task = unsafe { bpf_get_current_task_btf() };
    let wait = FUTEX_TASKS.get_existing(task).ok_or(())?;
    if wait.start_ns == 0 {
        return Ok(());
    }
    // SAFETY: a BPF helper with no preconditions.
    let waited = unsafe { bpf_ktime_get_ns() }.saturating_sub(wait.start_ns);
    wait.start_ns = 0;
    let ret: i64 = ctx.arg(1);
    if ret == EAGAIN {
        count(&FUTEX_COUNTERS, Counter::NotWaited as u32, 1);
        return Ok(());
    }
    // FUTEX_HIST holds only the waits the per-process map had no room for; the agent adds the
    // two (see runqueue.rs).
    if !record_process(
        &FUTEX_BY_PROCESS,
        &current_process(),
        waited,
        &FUTEX_COUNTERS,
        Counter::ProcessOverflow as u32,
    ) {
        record(&FUTEX_HIST, 0, waited);
    }
    Ok(())
}
