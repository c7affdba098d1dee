//! `cargo xtask fuzz [--seconds N] [TARGET]`: runs the cargo-fuzz targets in fuzz/ (every parser
//! of user input), each for N seconds, starting from the seeds in the repository. A crash stops
//! it, naming the input that crashed (libFuzzer writes it under fuzz/artifacts/TARGET/).
//!
//! The pinned toolchain is stable; libFuzzer's instrumentation flags need nightly features,
//! which RUSTC_BOOTSTRAP=1 unlocks. No sanitizer: the code under test is safe Rust, where what
//! fuzzing finds is panics, and without AddressSanitizer each run is about twice as fast.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cmd::Cmd;
use crate::setup::{self, Scope};

/// Pinned like every other tool setup installs.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The targets in fuzz/Cargo.toml.
pub const TARGETS: [&str; 6] = [
    "config",
    "env",
    "duration",
    "pairs",
    "socket_client",
    "prometheus_accept",
];

pub fn run(root: &Path, seconds: u64, target: Option<&str>) -> Result<()> {
    if seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    let targets: Vec<&str> = match target {
        None => TARGETS.to_vec(),
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!("no fuzz target {t:?}; the targets: {}", TARGETS.join(", ")),
    };
    setup::run(root, Scope::Build)?;
    ensure_cargo_fuzz()?;
    for target in targets {
        let corpus = root.join("fuzz/corpus").join(target);
        fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
        let mut args: Vec<String> = ["fuzz", "run", "--sanitizer", "none", target]
            .map(str::to_owned)
            .to_vec();
        // libFuzzer writes what it finds into the first directory and only reads the others.
        args.extend(
            std::iter::once(corpus.clone())
                .chain(seeds(root, target, &corpus)?)
                .map(|d| d.to_string_lossy().into_owned()),
        );
        args.extend([
            "--".to_owned(),
            format!("-max_total_time={seconds}"),
            // A run's input is a config file or a few protocol lines; longer inputs only slow
            // the search down.
            "-max_len=8192".to_owned(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Cmd::cargo(&args)
            .env("RUSTC_BOOTSTRAP", "1")
            .current_dir(root)
            .run()
            .with_context(|| {
                format!(
                    "fuzz target {target} failed: the input is under fuzz/artifacts/{target}/; \
                     fix the panic and add the input to fuzz/regressions/{target}/ \
                     (observer/tests/fuzz_regressions.rs replays it in every test run)"
                )
            })?;
    }
    Ok(())
}

/// The directories a target starts from besides its corpus: fuzz/seeds/TARGET and
/// fuzz/regressions/TARGET, and for the config, every config file the repository has (the
/// malformed-config fixtures and the rule examples; observer.toml, a file, is copied into the
/// corpus).
fn seeds(root: &Path, target: &str, corpus: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = vec![
        root.join("fuzz/seeds").join(target),
        root.join("fuzz/regressions").join(target),
    ];
    if target == "config" {
        dirs.extend(
            [
                "observer/tests/invalid_configs",
                "observer/tests/invalid_rules",
                "examples/rules",
            ]
            .map(|d| root.join(d)),
        );
        fs::copy(root.join("observer.toml"), corpus.join("observer.toml"))
            .context("copying observer.toml into the config corpus")?;
    }
    Ok(dirs.into_iter().filter(|d| d.is_dir()).collect())
}

/// Installs cargo-fuzz unless this exact version is there.
fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Cmd::cargo(&["fuzz", "--version"]).query().ok();
    let wanted = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    if installed.as_deref().map(str::trim) == Some(wanted.as_str()) {
        return Ok(());
    }
    println!("{wanted} missing (found {installed:?}); installing it");
    Cmd::cargo(&[
        "install",
        "--locked",
        &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
    ])
    .run()
}
