//! `cargo xtask pgo`: what a profile-guided build would buy the agent. Builds observer
//! instrumented (`-Cprofile-generate`), trains it on the bench's two agent rows (the machine as
//! it is, then fork storms keeping the per-process maps full), merges the profiles with the
//! pinned toolchain's llvm-profdata, rebuilds with `-Cprofile-use`, then measures the release
//! build and the PGO build on the same rows, taking turns. Each build has a target directory of
//! its own under target/pgo/ (the flags apply to every crate, so all are rebuilt once), and the
//! flags go to the host target only (`--target`), not to build scripts or the eBPF object.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::bench::{self, AgentCost, AgentLoad, CpuUse};
use crate::cmd::{Cmd, is_root};
use crate::tasks::{self, Profile};
use crate::toolchain::Toolchain;

pub fn run(root: &Path, runs: u32) -> Result<()> {
    if !is_root()? {
        bail!("the agent loads BPF programs, which needs root: rerun as root");
    }
    tasks::build(root, Profile::Release)?;
    let loadgen = bench::build_loadgen(root)?;
    let toolchain = Toolchain::pinned(root)?;
    let profdata = toolchain.llvm_profdata()?;
    let host = toolchain.host()?;
    let dir = tasks::target_dir(root).join("pgo");
    let profiles = dir.join("profiles");
    // Profiles of an older build would be merged in too.
    let _ = fs::remove_dir_all(&profiles);
    let flag = |name: &str, path: &Path| format!("-C{name}={}", path.display());
    let instrumented = build(
        root,
        &host,
        &dir.join("generate"),
        &flag("profile-generate", &profiles),
    )?;
    println!("==> training the instrumented agent");
    for load in [AgentLoad::Normal, AgentLoad::FullMaps] {
        bench::agent_cost(&instrumented, &loadgen, load)?;
    }
    let merged = dir.join("merged.profdata");
    let shown = |path: &Path| path.to_string_lossy().into_owned();
    Cmd::new(
        &shown(&profdata),
        &["merge", "-o", &shown(&merged), &shown(&profiles)],
    )
    .run()?;
    let optimised = build(root, &host, &dir.join("use"), &flag("profile-use", &merged))?;
    let builds = [
        ("release", tasks::observer_binary(root, Profile::Release)),
        ("PGO", optimised),
    ];
    println!("\n==> results\n{}", compare(&builds, &loadgen, runs)?);
    Ok(())
}

/// Builds observer in release for `host` into `target_dir` with `flag` on every crate of the
/// host target; returns the binary.
fn build(root: &Path, host: &str, target_dir: &Path, flag: &str) -> Result<PathBuf> {
    let rustflags = format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        host.to_uppercase().replace('-', "_")
    );
    Cmd::cargo(&["build", "-p", "observer", "--release", "--target", host])
        .env("CARGO_TARGET_DIR", target_dir)
        .env(&rustflags, flag)
        .current_dir(root)
        .run()?;
    Ok(target_dir.join(host).join("release/observer"))
}

/// The agent rows for each build, `runs` times, the builds taking turns; a Markdown table.
/// How busy the machine was is the share of the CPUs' time other processes took during the
/// two rows (the load average would count the storm's own thousands of runnable processes).
pub fn compare(builds: &[(&str, PathBuf)], loadgen: &Path, runs: u32) -> Result<String> {
    let mut rows: Vec<(usize, [f64; 10])> = Vec::new();
    for run in 1..=runs {
        for (i, (name, binary)) in builds.iter().enumerate() {
            println!("==> run {run}: {name} ({})", binary.display());
            let before = CpuUse::read()?;
            let normal = bench::agent_cost(binary, loadgen, AgentLoad::Normal)?;
            let full = bench::agent_cost(binary, loadgen, AgentLoad::FullMaps)?;
            let others = CpuUse::read()?.others_percent(&before);
            rows.push((i, columns(others, &normal, &full)));
        }
    }
    let mut table = String::from(
        "| build | others' CPU share (%) | normal: CPU % | VmRSS median (kB) | collection \
         median (ms) | full maps: CPU % | VmRSS median (kB) | VmRSS max (kB) | VmHWM (kB) | \
         collection median (ms) | collection max (ms) |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (i, values) in &rows {
        table.push_str(&line(builds[*i].0, values));
    }
    let mut sizes = String::new();
    for (i, (name, binary)) in builds.iter().enumerate() {
        let all: Vec<&[f64; 10]> = rows
            .iter()
            .filter(|row| row.0 == i)
            .map(|row| &row.1)
            .collect();
        let medians = std::array::from_fn(|k| {
            bench::median(&all.iter().map(|values| values[k]).collect::<Vec<_>>())
        });
        table.push_str(&line(&format!("**{name}, median**"), &medians));
        let _ = writeln!(
            sizes,
            "- {name}: {} is {} bytes",
            binary.display(),
            fs::metadata(binary)?.len()
        );
    }
    Ok(format!("{table}\n{sizes}"))
}

fn columns(others: f64, normal: &AgentCost, full: &AgentCost) -> [f64; 10] {
    [
        others,
        normal.cpu_percent(),
        normal.rss_median_kb(),
        normal.collection_median_ms(),
        full.cpu_percent(),
        full.rss_median_kb(),
        full.rss_max_kb() as f64,
        full.hwm_kb() as f64,
        full.collection_median_ms(),
        full.collection_max_ms(),
    ]
}

fn line(name: &str, values: &[f64; 10]) -> String {
    let [
        others,
        n_cpu,
        n_rss,
        n_col,
        f_cpu,
        f_rss,
        f_max,
        f_hwm,
        f_col,
        f_colmax,
    ] = values;
    format!(
        "| {name} | {others:.0} | {n_cpu:.2} | {n_rss:.0} | {n_col:.2} | {f_cpu:.1} | {f_rss:.0} | \
         {f_max:.0} | {f_hwm:.0} | {f_col:.0} | {f_colmax:.0} |\n"
    )
}
