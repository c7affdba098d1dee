//! The contract between observer's kernel programs (`observer-ebpf`) and its agent (`observer`).
//!
//! Everything both sides must agree on lives here and only here: map names, the layout of every
//! key and value, the histogram bucket layout, and the names of the globals the agent fills in at
//! load time. Each signal has its own module with the same shape: a per-CPU array of histograms
//! (`*_HIST`), a per-CPU array of counters (`*_COUNTERS`), and bounded breakdown maps whose
//! overflow is counted rather than lost.
#![no_std]

pub mod blockio;
pub mod floor;
pub mod hist;
pub mod lock;
pub mod runqueue;
pub mod scope;
pub mod tcp;

pub use hist::Hist;

/// Length of a task's `comm`, as in the kernel's `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;

/// Globals for reading a task other than the current one (its process, as [`ProcessKey`], and
/// its name): offsets the agent resolves from the running kernel's BTF, for signals that
/// attribute an event to a task that is not current (a futex wait ends as its task is switched
/// in, while the task switched out is still current).
pub mod task {
    /// `task_struct.tgid`.
    pub const GLOBAL_TGID: &str = "TASK_OFF_TGID";
    /// `task_struct.comm`.
    pub const GLOBAL_COMM: &str = "TASK_OFF_COMM";
    /// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.kn`, `kernfs_node.id`: the cgroup v2
    /// id, as bpf_get_current_cgroup_id reads it for the current task.
    pub const GLOBAL_CGROUPS: &str = "TASK_OFF_CGROUPS";
    pub const GLOBAL_CSS_SET_DFL_CGRP: &str = "TASK_OFF_CSS_SET_DFL_CGRP";
    pub const GLOBAL_CGROUP_KN: &str = "TASK_OFF_CGROUP_KN";
    pub const GLOBAL_KN_ID: &str = "TASK_OFF_KN_ID";
}

/// A process (thread group) in a cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessKey {
    /// cgroup v2 id (the inode number of the cgroup's directory).
    pub cgroup: u64,
    pub tgid: u32,
    pub _pad: u32,
}

/// A histogram attributed to one process (thread group), with the name it had when first seen.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessHist {
    pub comm: [u8; COMM_LEN],
    pub hist: Hist,
}

impl ProcessHist {
    pub const ZERO: Self = Self {
        comm: [0; COMM_LEN],
        hist: Hist::ZERO,
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], contain only integers and arrays of integers, and have
    // no implicit padding (checked by the const asserts next to each type).
    unsafe impl aya::Pod for crate::Hist {}
    unsafe impl aya::Pod for crate::ProcessHist {}
    unsafe impl aya::Pod for crate::ProcessKey {}
    unsafe impl aya::Pod for crate::blockio::DiskKey {}
    unsafe impl aya::Pod for crate::blockio::DiskHists {}
    unsafe impl aya::Pod for crate::tcp::RemoteKey {}
}

const _: () =
    assert!(core::mem::size_of::<ProcessHist>() == COMM_LEN + core::mem::size_of::<Hist>());
