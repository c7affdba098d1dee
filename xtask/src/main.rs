//! Project automation, run as `cargo xtask <command>` (alias in .cargo/config.toml).
//!
//! Developers and CI go through the same commands, so a fresh machine needs nothing but rustup:
//! `setup` installs the pinned toolchain, a bpf-linker built against that toolchain's LLVM and the
//! Debian packages the end-to-end tests drive, and every other command runs it first.

mod bench;
mod cmd;
mod fuzz;
mod host;
mod linker;
mod packages;
mod pgo;
mod python;
mod setup;
mod soak;
mod tasks;
mod toolchain;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    about = "Set up, build, run and test observer",
    disable_version_flag = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need (idempotent; fast when all is there).
    Setup,
    /// Set up, then build observer (debug unless --release).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build observer (release unless --debug), then run it: `cargo xtask run -- record`.
    Run {
        /// Build and run the debug profile instead of release.
        #[arg(long)]
        debug: bool,
        /// Arguments for observer.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// What CI runs: setup, lints, unit tests, then the end-to-end tests one at a time (as root).
    Test {
        /// Only lints and unit tests: no root needed, no Debian packages installed.
        #[arg(long)]
        unit_only: bool,
    },
    /// rustfmt check, clippy on the host crates and clippy on the eBPF crate.
    Lint,
    /// Measure what observer (next to an empty program and libbpf-tools' runqlat and
    /// biolatency) costs scheduler-, syscall-, block-I/O- and lock-heavy workloads, and print
    /// the tables of BENCHMARKS.md (root; about 10 minutes by default).
    Bench {
        /// Runs of each measurement; the tables show median, min and max.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
        /// Seconds each workload run lasts unobserved (its loop count is calibrated to this).
        #[arg(long, default_value_t = 1.5)]
        seconds: f64,
        /// Alternating pairs (observer with all signals, then runqlat, each after its own
        /// baseline run) for the wall-time loss ratio on the scheduler workload.
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
        pairs: u32,
    },
    /// Build observer with profile-guided optimisation (instrument, train on the agent at normal
    /// load and at full maps, merge, rebuild) and measure it against the release build on the
    /// agent's bench rows (root; about 25 minutes, most of it the two full builds).
    Pgo {
        /// Runs of each build on each row, taking turns.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
    },
    /// Fuzz every parser of user input (cargo fuzz; targets in fuzz/), each target for --seconds.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// One target (default: all): config, env, duration, pairs, socket_client,
        /// prometheus_accept.
        target: Option<String>,
    },
    /// Run the release agent for an hour (all signals, 1 s interval, OTLP to a collector that
    /// goes down now and then) under a cycling mixed load; record its RSS, CPU, fds and own
    /// counters to soak/soak.csv and a summary to SOAK.md (root).
    Soak {
        /// How long: 90, 90s, 3m, 1h, 1h30m.
        #[arg(long, default_value = "1h", value_parser = soak::parse_duration)]
        duration: std::time::Duration,
        /// How often a row is recorded.
        #[arg(long, default_value = "10s", value_parser = soak::parse_duration)]
        every: std::time::Duration,
    },
}

fn main() -> ExitCode {
    // xtask lives one level below the workspace root; every command runs from there.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace");
    let result = match Cli::parse().command {
        Command::Setup => setup::run(root, setup::Scope::Full),
        Command::Build { release } => tasks::build(root, tasks::Profile::from_release(release)),
        Command::Run { debug, args } => {
            tasks::run(root, tasks::Profile::from_release(!debug), &args)
        }
        Command::Test { unit_only } => tasks::test(root, unit_only),
        Command::Lint => tasks::lint(root),
        Command::Bench {
            runs,
            seconds,
            pairs,
        } => bench::run(root, runs, seconds, pairs),
        Command::Pgo { runs } => pgo::run(root, runs),
        Command::Fuzz { seconds, target } => fuzz::run(root, seconds, target.as_deref()),
        Command::Soak { duration, every } => soak::run(root, duration, every),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the context chain on one line and, unlike anyhow's Debug output, no
            // backtrace even when RUST_BACKTRACE is set.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
