//! Block I/O latency: queue time (insert -> issue) and device time (issue -> complete).

/// Per-CPU array of [`crate::Hist`], indexed by [`hist_index`] (stage, operation): latencies
/// [`BY_DISK_MAP`] had no room for. A total is this plus the disk map's entries.
pub const HIST_MAP: &str = "BIO_HIST";
pub const HIST_ENTRIES: u32 = (STAGES * OPS) as u32;
/// Per-CPU array of `u64` counters, indexed by [`Counter`].
pub const COUNTERS_MAP: &str = "BIO_COUNTERS";
/// Hash [`DiskKey`] -> [`DiskHists`], bounded by [`BY_DISK_ENTRIES`].
pub const BY_DISK_MAP: &str = "BIO_BY_DISK";
pub const BY_DISK_ENTRIES: u32 = 256;
/// Hash request pointer -> [`Inflight`]: requests between insert/issue and completion.
pub const INFLIGHT_MAP: &str = "BIO_INFLIGHT";
pub const INFLIGHT_ENTRIES: u32 = 16384;

pub const PROGRAMS: &[(&str, &str)] = &[
    ("bio_rq_insert", "block_rq_insert"),
    ("bio_rq_issue", "block_rq_issue"),
    ("bio_rq_complete", "block_rq_complete"),
];

/// Globals the agent sets from the running kernel's BTF: byte offsets of the fields read from a
/// `struct request` and what it points to.
pub const GLOBAL_RQ_Q: &str = "BIO_OFF_RQ_Q";
pub const GLOBAL_RQ_CMD_FLAGS: &str = "BIO_OFF_RQ_CMD_FLAGS";
pub const GLOBAL_Q_DISK: &str = "BIO_OFF_Q_DISK";
pub const GLOBAL_DISK_MAJOR: &str = "BIO_OFF_DISK_MAJOR";
pub const GLOBAL_DISK_FIRST_MINOR: &str = "BIO_OFF_DISK_FIRST_MINOR";

/// `REQ_OP_MASK` from include/linux/blk_types.h: the low 8 bits of `cmd_flags` are the op.
pub const REQ_OP_MASK: u32 = 0xff;

pub const STAGE_QUEUE: usize = 0;
pub const STAGE_DEVICE: usize = 1;
pub const STAGES: usize = 2;

/// Operation classes, from `enum req_op` (REQ_OP_READ = 0, WRITE = 1, FLUSH = 2, DISCARD = 3).
pub const OP_READ: u32 = 0;
pub const OP_WRITE: u32 = 1;
pub const OP_FLUSH: u32 = 2;
pub const OP_DISCARD: u32 = 3;
pub const OP_OTHER: u32 = 4;
pub const OPS: usize = 5;
pub const OP_NAMES: [&str; OPS] = ["read", "write", "flush", "discard", "other"];

/// Maps a kernel `req_op` to one of our operation classes.
#[inline(always)]
pub const fn op_class(cmd_flags: u32) -> u32 {
    let op = cmd_flags & REQ_OP_MASK;
    if op <= OP_DISCARD { op } else { OP_OTHER }
}

#[inline(always)]
pub const fn hist_index(stage: usize, op: u32) -> u32 {
    (stage * OPS) as u32 + op
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Requests not timed because [`INFLIGHT_MAP`] was full.
    InflightOverflow = 0,
    /// Requests not attributed to a disk because [`BY_DISK_MAP`] was full.
    DiskOverflow = 1,
}
pub const COUNTERS: u32 = 2;

/// A disk and an operation class.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiskKey {
    /// Device number as the kernel's `MKDEV`: `major << 20 | minor`.
    pub dev: u32,
    pub op: u32,
}

/// `MINORBITS` from include/linux/kdev_t.h.
pub const MINOR_BITS: u32 = 20;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DiskHists {
    pub queue: crate::Hist,
    pub device: crate::Hist,
}

impl DiskHists {
    pub const ZERO: Self = Self {
        queue: crate::Hist::ZERO,
        device: crate::Hist::ZERO,
    };
}

/// One request in flight (kernel-internal).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Inflight {
    /// When the request was inserted into the scheduler queue; 0 if it was issued directly.
    pub inserted_ns: u64,
    /// When it was issued to the device; 0 until then.
    pub issued_ns: u64,
    /// Read from the request at issue, for its completion.
    pub disk: DiskKey,
}

/// `Inflight::inserted_ns` of a request inserted by a task outside the scope (sidecar mode,
/// [`crate::scope`]): its issue, which may run in another task's context, then drops it
/// instead of judging it again by whoever happens to be current.
pub const OUT_OF_SCOPE: u64 = u64::MAX;

const _: () = assert!(core::mem::size_of::<DiskKey>() == 8);
