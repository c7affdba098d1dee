//! The commands built on setup: build, run, lint and test.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{Cmd, is_root};
use crate::setup::{self, Scope};

/// The package holding the end-to-end tests, which drive the built observer binary.
const E2E_PACKAGE: &str = "observer-tests";
/// The eBPF crate only compiles for the BPF target (host builds fail on duplicate lang items), so
/// host-wide commands leave it out and `lint` checks it on its own target.
const EBPF_PACKAGE: &str = "observer-ebpf";

#[derive(Clone, Copy)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    pub fn from_release(release: bool) -> Self {
        if release { Self::Release } else { Self::Debug }
    }

    /// The directory under target/ that cargo builds this profile into.
    fn dir(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Release => "release",
        }
    }
}

pub fn build(root: &Path, profile: Profile) -> Result<()> {
    setup::run(root, Scope::Build)?;
    build_observer(profile).current_dir(root).run()
}

/// Builds observer and replaces this process with it, so its stdio, signals and exit code are
/// the caller's directly.
pub fn run(root: &Path, profile: Profile, args: &[OsString]) -> Result<()> {
    build(root, profile)?;
    let binary = observer_binary(root, profile);
    let shown: Vec<_> = args.iter().map(|arg| arg.to_string_lossy()).collect();
    println!("==> {} {}", binary.display(), shown.join(" "));
    let error = Command::new(&binary).args(args).exec();
    Err(error).with_context(|| format!("could not start {}", binary.display()))
}

pub fn lint(root: &Path) -> Result<()> {
    let mut steps = Steps::new(root);
    steps.setup(Scope::Build)?;
    lint_steps(&mut steps)?;
    steps.finish();
    Ok(())
}

/// Everything CI runs. The end-to-end tests load BPF programs and create real load (network
/// namespaces, loop devices), so they need root and run one at a time.
pub fn test(root: &Path, unit_only: bool) -> Result<()> {
    if !unit_only && !is_root()? {
        bail!(
            "the end-to-end tests load BPF programs and need root: rerun as root, or pass \
             --unit-only for the lints and unit tests alone"
        );
    }
    let mut steps = Steps::new(root);
    // Full even for --unit-only: the observer crate's export tests drive a real rotel and a
    // real Prometheus.
    steps.setup(Scope::Full)?;
    lint_steps(&mut steps)?;
    steps.run_tests(Cmd::cargo(&[
        "test",
        "--workspace",
        "--exclude",
        EBPF_PACKAGE,
        "--exclude",
        E2E_PACKAGE,
    ]))?;
    if !unit_only {
        steps.run(build_observer(Profile::Debug))?;
        let binary = observer_binary(root, Profile::Debug);
        steps.run_tests(
            Cmd::cargo(&[
                "test",
                "-p",
                E2E_PACKAGE,
                "--no-fail-fast",
                "--",
                "--test-threads=1",
            ])
            .env("OBSERVER_BIN", binary),
        )?;
    }
    steps.finish();
    Ok(())
}

fn lint_steps(steps: &mut Steps) -> Result<()> {
    steps.run(Cmd::cargo(&["fmt", "--all", "--check"]))?;
    steps.run(Cmd::cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        EBPF_PACKAGE,
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // -Z build-std needs unstable cargo features; the pinned toolchain is stable, and
    // RUSTC_BOOTSTRAP=1 unlocks them the same way observer/build.rs does for the real build.
    steps.run(
        Cmd::cargo(&[
            "clippy",
            "-p",
            EBPF_PACKAGE,
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ])
        .env("RUSTC_BOOTSTRAP", "1"),
    )
}

pub(crate) fn build_observer(profile: Profile) -> Cmd {
    match profile {
        Profile::Debug => Cmd::cargo(&["build", "-p", "observer"]),
        Profile::Release => Cmd::cargo(&["build", "-p", "observer", "--release"]),
    }
}

pub(crate) fn observer_binary(root: &Path, profile: Profile) -> PathBuf {
    target_dir(root).join(profile.dir()).join("observer")
}

/// Where cargo puts build output: `$CARGO_TARGET_DIR` (relative to the workspace root) or
/// `target/`.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Runs steps from the workspace root, timing each, and totals the tests cargo reports.
struct Steps<'a> {
    root: &'a Path,
    timings: Vec<(String, Duration)>,
    tests: TestCounts,
}

impl<'a> Steps<'a> {
    fn new(root: &'a Path) -> Self {
        Self {
            root,
            timings: Vec::new(),
            tests: TestCounts::default(),
        }
    }

    fn setup(&mut self, scope: Scope) -> Result<()> {
        let root = self.root;
        self.time("cargo xtask setup".to_owned(), || setup::run(root, scope))
    }

    fn run(&mut self, cmd: Cmd) -> Result<()> {
        let cmd = cmd.current_dir(self.root);
        self.time(cmd.shown().to_owned(), || cmd.run())
    }

    fn run_tests(&mut self, cmd: Cmd) -> Result<()> {
        let cmd = cmd.current_dir(self.root);
        let mut counts = TestCounts::default();
        self.time(cmd.shown().to_owned(), || {
            cmd.run_teeing(|line| counts.add_line(line))
        })?;
        self.tests.add(counts);
        Ok(())
    }

    fn time(&mut self, name: String, step: impl FnOnce() -> Result<()>) -> Result<()> {
        let start = Instant::now();
        let result = step();
        let took = start.elapsed();
        result.with_context(|| format!("step failed after {:.1} s", took.as_secs_f64()))?;
        println!("    ok in {:.1} s", took.as_secs_f64());
        self.timings.push((name, took));
        Ok(())
    }

    /// Prints the time each step took, then (last, where CI reads it) the test totals.
    fn finish(self) {
        println!("==> timings");
        for (name, took) in &self.timings {
            println!("{:>8.1} s  {name}", took.as_secs_f64());
        }
        let total: Duration = self.timings.iter().map(|(_, took)| *took).sum();
        println!("{:>8.1} s  total", total.as_secs_f64());
        if self.tests.ran_any {
            let TestCounts {
                passed,
                failed,
                ignored,
                ..
            } = self.tests;
            println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
        }
    }
}

/// Totals of libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; ...` lines.
#[derive(Default, Clone, Copy)]
struct TestCounts {
    ran_any: bool,
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestCounts {
    fn add_line(&mut self, line: &str) {
        let Some(result) = line.strip_prefix("test result: ") else {
            return;
        };
        self.ran_any = true;
        for part in result.split([';', '.']) {
            let Some((count, word)) = part.trim().split_once(' ') else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match word {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }

    fn add(&mut self, other: Self) {
        self.ran_any |= other.ran_any;
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

#[cfg(test)]
mod tests {
    use super::TestCounts;

    #[test]
    fn totals_libtest_result_lines() {
        let mut counts = TestCounts::default();
        counts.add_line("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        counts.add_line("running 2 tests");
        counts.add_line("test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.50s");
        assert!(counts.ran_any);
        assert_eq!((counts.passed, counts.failed, counts.ignored), (4, 1, 1));
    }
}
