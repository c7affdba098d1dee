//! Builds the kernel programs (observer-ebpf) for the BPF target; src/ebpf.rs embeds the object.

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

/// The toolchain pinned in rust-toolchain.toml; bpf-linker is built against its LLVM.
const TOOLCHAIN: &str = "1.98.0";

fn main() -> anyhow::Result<()> {
    // -Z build-std=core needs unstable features, and the pinned toolchain is stable:
    // RUSTC_BOOTSTRAP=1 is how aya-build is told to pass -Z build-std anyway. It is set only in
    // this build script's environment, which the eBPF cargo invocation inherits.
    // SAFETY: the build script is single-threaded here.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf(
        [Package {
            name: "observer-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../observer-ebpf"),
            ..Default::default()
        }],
        Toolchain::Custom(TOOLCHAIN),
    )
    .context("building the eBPF programs (`cargo xtask setup` installs bpf-linker)")
}
