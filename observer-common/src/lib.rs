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
