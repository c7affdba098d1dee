//! Kernel lock contention: wait time from lock:contention_begin to lock:contention_end, per lock
//! class (from the flags contention_begin reports).

use aya_ebpf::{
    btf_maps::PerCpuArray,
    helpers::generated::{bpf_get_current_task_btf, bpf_ktime_get_ns},
    macros::{btf_map, btf_tracepoint},
    programs::BtfTracePointContext,
};
use observer_common::{
    Hist,
    lock::{COUNTERS, Counter, HIST_ENTRIES, LockWait, class},
};

use crate::{
    hist::{count, record},
    scope,
    task_storage::TaskStorage,
};

#[btf_map]
static LOCK_HIST: PerCpuArray<Hist, { HIST_ENTRIES as usize }> = PerCpuArray::new();
#[btf_map]
static LOCK_COUNTERS: PerCpuArray<u64, { COUNTERS as usize }> = PerCpuArray::new();
#[btf_map]
static LOCK_TASKS: TaskStorage<LockWait> = TaskStorage::new();

/// contention_begin(void *lock, unsigned int flags)
#[btf_tracepoint(function = "contention_begin")]
pub fn lock_contention_begin(ctx: BtfTracePointContext) -> i32 {
    match try_begin(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// contention_end(void *lock, int ret)
#[btf_tracepoint(function = "contention_end")]
pub fn lock_contention_end(ctx: BtfTracePointContext) -> i32 {
    match try_end(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

#[inline(always)]
fn try_begin(ctx: &BtfTracePointContext) -> Result<(), ()> {
    // Sidecar mode: the waiter is current. A wait outside the scope is never started, so its
    // contention_end finds nothing.
    if !scope::current_in_scope() {
        return Ok(());
    }
    let lock: u64 = ctx.arg(0);
    let flags: u64 = ctx.arg(1);
    // SAFETY: BPF helpers with no preconditions.
    let (task, now) = unsafe { (bpf_get_current_task_btf(), bpf_ktime_get_ns()) };
    let wait = LOCK_TASKS.get_or_create(task).ok_or(())?;
    // A mutex reports contention_begin twice for one wait (optimistic spin, then sleep): the
    // wait started at the first.
    if wait.start_ns != 0 && wait.lock == lock {
        return Ok(());
    }
    wait.lock = lock;
    wait.flags = flags as u32;
    wait.start_ns = now;
    Ok(())
}

#[inline(always)]
fn try_end(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let lock: u64 = ctx.arg(0);
    // SAFETY: BPF helpers with no preconditions.
    let (task, now) = unsafe { (bpf_get_current_task_btf(), bpf_ktime_get_ns()) };
    let wait = LOCK_TASKS.get_existing(task).ok_or(())?;
    if wait.start_ns == 0 {
        return Ok(());
    }
    let start = wait.start_ns;
    wait.start_ns = 0;
    if wait.lock != lock {
        count(&LOCK_COUNTERS, Counter::Mismatched as u32, 1);
        return Ok(());
    }
    record(&LOCK_HIST, class(wait.flags), now.saturating_sub(start));
    Ok(())
}
