//! Recording into the shared histogram layout (observer_common::hist) and counters.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use crate::btf::field;
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
    generated::{bpf_get_current_cgroup_id, bpf_get_prandom_u32},
};
use aya_ebpf::{
    bindings::{BPF_NOEXIST, task_struct},
    btf_maps::{Array, HashMap, PerCpuArray},
};
use observer_common::{
    COMM_LEN, Hist, ProcessHist, ProcessKey,
    hist::{BUCKETS, slot},
};

/// Adds `v` to a histogram only this CPU writes (a per-CPU map value): plain adds suffice.
#[inline(always)]
pub fn add_local(h: *mut Hist, v: u64) {
    // SAFETY: `h` comes from a successful per-CPU map lookup; programs on one CPU do not nest
    // for the same hook.
    let h = unsafe { &mut *h };
    if v == 0 {
        h.zero += 1;
    } else if let Some(b) = h.buckets.get_mut(verifier_visible(slot(v))) {
        *b += 1;
    }
    h.sum = h.sum.wrapping_add(v);
}

/// Returns `slot` through memory so LLVM cannot drop the bounds check that follows.
///
/// LLVM knows `slot()` is below [`BUCKETS`] and removes the check, but the verifier's range for
/// the expanded count-leading-zeros is looser (it sees up to 4 * 255) and rejects the access.
/// A stack round trip keeps the check; the verifier tracks the spilled value exactly.
#[inline(always)]
fn verifier_visible(slot: usize) -> usize {
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&slot) }
}

/// Adds `v` to a histogram shared by all CPUs (a hash map value): atomic adds, so concurrent
/// updates from other CPUs are not lost.
#[inline(always)]
pub fn add_shared(h: *mut Hist, v: u64) {
    // SAFETY: `h` comes from a successful map lookup and map values are 8-byte aligned.
    unsafe {
        if v == 0 {
            atomic_add(&raw mut (*h).zero, 1);
        } else {
            let s = verifier_visible(slot(v));
            if s < BUCKETS {
                atomic_add((&raw mut (*h).buckets).cast::<u64>().add(s), 1);
            }
        }
        atomic_add(&raw mut (*h).sum, v);
    }
}

/// An atomic add whose result is unused, which LLVM emits as one BPF atomic add instruction.
/// core's `AtomicU64::fetch_add` is not offered on the BPF target (it has no compare-and-swap),
/// hence the intrinsic.
///
/// # Safety
/// `p` must be valid and 8-byte aligned for the duration of the program (map values are).
#[inline(always)]
pub unsafe fn atomic_add(p: *mut u64, v: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

/// A signal's sample shift (the agent's overhead budget, e.g.
/// observer_common::runqueue::SAMPLING_MAP): 0, every event timed, unless the budget asked for
/// sampling. An array lookup with a constant key, which the verifier inlines: no helper call.
#[inline(always)]
pub fn sample_shift(map: &Array<u32, 1>) -> u32 {
    // SAFETY: a live array value; a plain aligned u32 the agent rewrites whole.
    map.get_ptr(0)
        .map_or(0, |p| unsafe { core::ptr::read_volatile(p) })
}

/// Whether an event starts a timed measurement: always with `shift` 0, else 1 in 2^`shift`.
#[inline(always)]
pub fn sampled(shift: u32) -> bool {
    // SAFETY: a BPF helper with no preconditions.
    shift == 0 || unsafe { bpf_get_prandom_u32() } & ((1u32 << (shift & 31)) - 1) == 0
}

/// Adds `v` to entry `index` of a per-CPU array of histograms.
#[inline(always)]
pub fn record<const N: usize>(hists: &PerCpuArray<Hist, N>, index: u32, v: u64) {
    if let Some(h) = hists.get_ptr_mut(index) {
        add_local(h, v);
    }
}

/// Increments counter `index` of a per-CPU array of counters.
#[inline(always)]
pub fn count<const N: usize>(counters: &PerCpuArray<u64, N>, index: u32, n: u64) {
    if let Some(c) = counters.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, see add_local.
        unsafe { *c += n };
    }
}

/// The value for `key` in a bounded hash map, inserting `zero` first if it is missing. `None`
/// when the map is full: the caller counts that as overflow, so nothing is silently lost.
#[inline(always)]
pub fn entry<K, V, const M: usize, const F: usize>(
    map: &HashMap<K, V, M, F>,
    key: &K,
    zero: &V,
) -> Option<*mut V> {
    if let Some(p) = map.get_ptr_mut(key) {
        return Some(p);
    }
    // Fails with EEXIST when another CPU inserted the key first; the lookup then finds it.
    let _ = map.insert(key, zero, BPF_NOEXIST.into());
    map.get_ptr_mut(key)
}

/// The current task's (cgroup, process).
#[inline(always)]
pub fn current_process() -> ProcessKey {
    ProcessKey {
        // SAFETY: a BPF helper with no preconditions.
        cgroup: unsafe { bpf_get_current_cgroup_id() },
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
    }
}

/// Renames the current process's entry after an exec, so a breakdown shows what the process
/// runs now rather than the name it had before (e.g. the shell that started it).
#[inline(always)]
pub fn rename_current_process<const M: usize, const F: usize>(
    map: &HashMap<ProcessKey, ProcessHist, M, F>,
) {
    if let Some(p) = map.get_ptr_mut(&current_process())
        && let Ok(comm) = bpf_get_current_comm()
    {
        // SAFETY: a live map value.
        unsafe { (*p).comm = comm };
    }
}

/// Template for new per-process entries (in .rodata, so it can be passed to map updates).
static ZERO_PROCESS: ProcessHist = ProcessHist::ZERO;

/// Adds `v` to the current task's process in a (cgroup, process) map, naming a new entry after
/// the current task. When the map is full it counts `overflow` in `counters` and returns false:
/// the caller then records `v` in its histogram of unattributed values, so nothing is lost.
#[inline(always)]
pub fn record_process<const M: usize, const F: usize, const C: usize>(
    map: &HashMap<ProcessKey, ProcessHist, M, F>,
    key: &ProcessKey,
    v: u64,
    counters: &PerCpuArray<u64, C>,
    overflow: u32,
) -> bool {
    record_process_of(map, key, v, counters, overflow, || {
        bpf_get_current_comm().ok()
    })
}

/// [`record_process`] for any task's process: `comm` names a new entry.
#[inline(always)]
pub fn record_process_of<const M: usize, const F: usize, const C: usize>(
    map: &HashMap<ProcessKey, ProcessHist, M, F>,
    key: &ProcessKey,
    v: u64,
    counters: &PerCpuArray<u64, C>,
    overflow: u32,
    comm: impl FnOnce() -> Option<[u8; COMM_LEN]>,
) -> bool {
    let Some(p) = entry(map, key, &ZERO_PROCESS) else {
        count(counters, overflow, 1);
        return false;
    };
    // SAFETY: a live map value.
    let p = unsafe { &mut *p };
    if p.comm[0] == 0
        && let Some(comm) = comm()
    {
        p.comm = comm;
    }
    add_shared(&raw mut p.hist, v);
    true
}

// Offsets in the running kernel's structs, set by the agent from its BTF
// (observer_common::task::GLOBAL_*), for reading a task that is not current.
#[unsafe(no_mangle)]
static TASK_OFF_TGID: u32 = 0;
#[unsafe(no_mangle)]
static TASK_OFF_COMM: u32 = 0;
#[unsafe(no_mangle)]
static TASK_OFF_CGROUPS: u32 = 0;
#[unsafe(no_mangle)]
static TASK_OFF_CSS_SET_DFL_CGRP: u32 = 0;
#[unsafe(no_mangle)]
static TASK_OFF_CGROUP_KN: u32 = 0;
#[unsafe(no_mangle)]
static TASK_OFF_KN_ID: u32 = 0;

/// `task`'s (cgroup, process), as [`current_process`] gives them for the current task:
/// `task->tgid`, and the id of its cgroup v2 cgroup, `task->cgroups->dfl_cgrp->kn->id`, which
/// is what bpf_get_current_cgroup_id returns.
#[inline(always)]
pub fn task_process(task: *mut task_struct) -> ProcessKey {
    let task = task as u64;
    let css_set: u64 = field(task, &TASK_OFF_CGROUPS);
    let cgroup: u64 = field(css_set, &TASK_OFF_CSS_SET_DFL_CGRP);
    let kn: u64 = field(cgroup, &TASK_OFF_CGROUP_KN);
    ProcessKey {
        cgroup: field(kn, &TASK_OFF_KN_ID),
        tgid: field(task, &TASK_OFF_TGID),
        _pad: 0,
    }
}

/// `task->comm`.
#[inline(always)]
pub fn task_comm(task: *mut task_struct) -> Option<[u8; COMM_LEN]> {
    // SAFETY: a global the loader initialised.
    let off = unsafe { core::ptr::read_volatile(&TASK_OFF_COMM) } as u64;
    // SAFETY: bpf_probe_read_kernel checks the address; `task` is a live task.
    unsafe { bpf_probe_read_kernel((task as u64 + off) as *const [u8; COMM_LEN]) }.ok()
}
