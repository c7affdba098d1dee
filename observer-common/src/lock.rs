//! Lock waits: kernel lock contention (lock:contention_begin/end) per lock class, and
//! user-space futex waits per process.

pub const HIST_MAP: &str = "LOCK_HIST";
pub const HIST_ENTRIES: u32 = CLASSES as u32;
pub const COUNTERS_MAP: &str = "LOCK_COUNTERS";

pub const PROGRAMS: &[(&str, &str)] = &[
    ("lock_contention_begin", "contention_begin"),
    ("lock_contention_end", "contention_end"),
];

/// `LCB_F_*` flags from include/trace/events/lock.h.
pub const LCB_F_SPIN: u32 = 1 << 0;
pub const LCB_F_READ: u32 = 1 << 1;
pub const LCB_F_WRITE: u32 = 1 << 2;
pub const LCB_F_RT: u32 = 1 << 3;
pub const LCB_F_PERCPU: u32 = 1 << 4;
pub const LCB_F_MUTEX: u32 = 1 << 5;

pub const CLASS_SPINLOCK: u32 = 0;
pub const CLASS_RWLOCK_READ: u32 = 1;
pub const CLASS_RWLOCK_WRITE: u32 = 2;
pub const CLASS_MUTEX: u32 = 3;
pub const CLASS_RWSEM_READ: u32 = 4;
pub const CLASS_RWSEM_WRITE: u32 = 5;
pub const CLASS_RTMUTEX: u32 = 6;
pub const CLASS_PERCPU_RWSEM_READ: u32 = 7;
pub const CLASS_PERCPU_RWSEM_WRITE: u32 = 8;
pub const CLASS_OTHER: u32 = 9;
pub const CLASSES: usize = 10;
pub const CLASS_NAMES: [&str; CLASSES] = [
    "spinlock",
    "rwlock_read",
    "rwlock_write",
    "mutex",
    "rwsem_read",
    "rwsem_write",
    "rt_mutex",
    "percpu_rwsem_read",
    "percpu_rwsem_write",
    "other",
];

/// Lock class from contention_begin's flags, following perf lock's reading of them
/// (tools/perf/util/bpf_skel/lock_contention.bpf.c). A mutex that first spins and then sleeps is
/// one mutex wait.
#[inline(always)]
pub const fn class(flags: u32) -> u32 {
    if flags & LCB_F_MUTEX != 0 {
        CLASS_MUTEX
    } else if flags & LCB_F_PERCPU != 0 {
        if flags & LCB_F_WRITE != 0 {
            CLASS_PERCPU_RWSEM_WRITE
        } else {
            CLASS_PERCPU_RWSEM_READ
        }
    } else if flags & LCB_F_RT != 0 {
        CLASS_RTMUTEX
    } else if flags & LCB_F_SPIN != 0 {
        if flags & LCB_F_READ != 0 {
            CLASS_RWLOCK_READ
        } else if flags & LCB_F_WRITE != 0 {
            CLASS_RWLOCK_WRITE
        } else {
            CLASS_SPINLOCK
        }
    } else if flags & LCB_F_READ != 0 {
        CLASS_RWSEM_READ
    } else if flags & LCB_F_WRITE != 0 {
        CLASS_RWSEM_WRITE
    } else {
        CLASS_OTHER
    }
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// contention_end for a lock other than the one the task began waiting on (nested waits
    /// are not expected; counted so they are visible rather than mis-timed).
    Mismatched = 0,
}
pub const COUNTERS: u32 = 1;

/// Per-task state for kernel lock waits (task storage, kernel-internal).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LockWait {
    pub lock: u64,
    pub start_ns: u64,
    pub flags: u32,
    pub _pad: u32,
}

pub mod futex {
    //! User-space futex waits (FUTEX_WAIT family), per process.

    /// Per-CPU array of [`crate::Hist`]: waits not in [`BY_PROCESS_MAP`] (it was full). The
    /// total is this plus every entry of [`BY_PROCESS_MAP`].
    pub const HIST_MAP: &str = "FUTEX_HIST";
    pub const HIST_ENTRIES: u32 = 1;
    pub const COUNTERS_MAP: &str = "FUTEX_COUNTERS";
    /// Hash [`crate::ProcessKey`] -> [`crate::ProcessHist`].
    pub const BY_PROCESS_MAP: &str = "FUTEX_BY_PROCESS";
    pub const BY_PROCESS_ENTRIES: u32 = 2048;

    /// One program on sched_switch (observer-ebpf's futex.rs says why not sys_enter/sys_exit).
    pub const PROGRAMS: &[(&str, &str)] = &[("futex_sched_switch", "sched_switch")];

    /// Globals set by the agent: this architecture's syscall numbers, and the offsets in
    /// `struct pt_regs` of the register holding a syscall's second argument (the futex op) and
    /// of the syscall number as the syscall entry saved it (`orig_ax` on x86_64), which tells
    /// which call a task is in. Attribution reads the woken task with [`crate::task`]'s.
    pub const GLOBAL_NR_FUTEX: &str = "FUTEX_NR_FUTEX";
    pub const GLOBAL_NR_FUTEX_WAITV: &str = "FUTEX_NR_FUTEX_WAITV";
    pub const GLOBAL_NR_FUTEX_WAIT: &str = "FUTEX_NR_FUTEX_WAIT";
    pub const GLOBAL_REGS_ARG1: &str = "FUTEX_OFF_REGS_ARG1";
    pub const GLOBAL_REGS_NR: &str = "FUTEX_OFF_REGS_NR";

    /// Array of one `u32`: the sample shift `k`, written by the agent's overhead budget as for
    /// the run-queue signal ([`crate::runqueue::SAMPLING_MAP`], same bound
    /// [`crate::runqueue::MAX_SAMPLE_SHIFT`]). 0 times every wait; `k` > 0 times a blocking
    /// futex wait only when its switch-out draws 1 in `2^k`, so its switch-in finds a start
    /// time and an unsampled wait's finds none. What it cannot cut: the program still runs on
    /// every context switch, and an unsampled wait still costs the draw and one task-storage
    /// lookup at its switch-in.
    pub const SAMPLING_MAP: &str = "FUTEX_SAMPLING";

    /// futex(2) commands that wait (include/uapi/linux/futex.h).
    pub const FUTEX_WAIT: u32 = 0;
    pub const FUTEX_LOCK_PI: u32 = 6;
    pub const FUTEX_WAIT_BITSET: u32 = 9;
    pub const FUTEX_WAIT_REQUEUE_PI: u32 = 11;
    pub const FUTEX_LOCK_PI2: u32 = 13;
    /// `FUTEX_CMD_MASK`: the op without FUTEX_PRIVATE_FLAG and FUTEX_CLOCK_REALTIME.
    pub const FUTEX_CMD_MASK: u32 = !(128 | 256);

    #[inline(always)]
    pub const fn is_wait(op: u32) -> bool {
        matches!(
            op & FUTEX_CMD_MASK,
            FUTEX_WAIT | FUTEX_LOCK_PI | FUTEX_WAIT_BITSET | FUTEX_WAIT_REQUEUE_PI | FUTEX_LOCK_PI2
        )
    }

    #[repr(u32)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Counter {
        /// Waits not attributed to a process because [`BY_PROCESS_MAP`] was full.
        ProcessOverflow = 0,
    }
    pub const COUNTERS: u32 = 1;

    /// Per-thread state (task storage, kernel-internal).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct FutexWait {
        /// When the thread blocked in a waiting futex call; 0 when it is not blocked in one.
        pub start_ns: u64,
    }
}
