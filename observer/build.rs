//! Builds the kernel programs (observer-ebpf) for the BPF target; src/ebpf.rs embeds the object.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// The workspace's pinned toolchain: bpf-linker is built against its LLVM, so the eBPF crate
/// must be compiled by exactly it, whatever toolchain runs this build script.
const TOOLCHAIN_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../rust-toolchain.toml");

fn main() -> anyhow::Result<()> {
    println!("cargo::rerun-if-changed={TOOLCHAIN_FILE}");
    let toolchain_file = std::fs::read_to_string(TOOLCHAIN_FILE).context(TOOLCHAIN_FILE)?;
    let channel = toolchain_file
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("channel")?
                .trim()
                .strip_prefix('=')?
                .trim()
                .strip_prefix('"')?
                .strip_suffix('"')
        })
        .ok_or_else(|| anyhow!("{TOOLCHAIN_FILE} has no `channel = \"...\"` line"))?;

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
        Toolchain::Custom(channel),
    )
    .context("building the eBPF programs (`./x setup` installs bpf-linker)")
}
