//! observer's kernel programs. Each signal is one module with the same shape: its maps (named in
//! `observer_common::<signal>`), thin `#[btf_tracepoint]` entry points that delegate to `try_*`
//! functions, and in-kernel aggregation into histograms; nothing crosses to user space per event.
#![no_std]
#![no_main]
// Atomic adds on shared map values (see hist::atomic_add); built with RUSTC_BOOTSTRAP=1.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd is the only atomic add on the BPF target"
)]

mod blockio;
mod btf;
mod floor;
mod futex;
mod hist;
mod lock;
mod runqueue;
mod scope;
mod task_storage;
mod tcp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program; the verifier rejects any path that could get here.
    loop {}
}

/// GPL-compatible: bpf_probe_read_kernel and task storage are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
