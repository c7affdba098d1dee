use std::{process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use observer::{
    check, ebpf, record, render,
    signals::{Breakdowns, ReportOptions, Signal},
};

/// A continuous performance observer for Linux: run-queue latency, block I/O latency, TCP
/// retransmits and lock waits, measured in the kernel with eBPF.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// More logging; with `check`, the verifier's log for programs the kernel rejects.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure for a while, then print histograms and breakdowns.
    Record {
        /// How long to measure: seconds (`8`) or with a unit (`500ms`, `8s`, `2m`, `1h`).
        #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Signals to measure, comma-separated: runqueue, blockio, tcp, lock, futex.
        #[arg(
            short,
            long,
            value_delimiter = ',',
            default_value = "runqueue,blockio,tcp,lock,futex"
        )]
        signals: Vec<Signal>,
        /// Breakdowns to include, comma-separated: cgroup, process, disk, op, lock, remote
        /// (default: all).
        #[arg(short, long, value_delimiter = ',')]
        by: Vec<String>,
        /// Rows per breakdown.
        #[arg(short, long, default_value_t = 10)]
        top: usize,
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Fail if any requested signal cannot run (by default the others still run).
        #[arg(long)]
        strict: bool,
        /// Also report what each kernel program cost per run (enables kernel.bpf_stats while
        /// recording, which itself adds about 50 ns per run).
        #[arg(long)]
        stats: bool,
    },
    /// Check what this kernel supports, signal by signal, by loading each for real.
    Check {
        /// Signals to check, comma-separated (default: all).
        #[arg(
            short,
            long,
            value_delimiter = ',',
            default_value = "runqueue,blockio,tcp,lock,futex"
        )]
        signals: Vec<Signal>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// `8`, `8s`, `500ms`, `2m`, `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let err = || {
        format!(
            "invalid duration {s:?}: use seconds (8) or a number with a unit: 500ms, 8s, 2m, 1h"
        )
    };
    let n: f64 = number.parse().map_err(|_| err())?;
    let seconds = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(err()),
    };
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!("invalid duration {s:?}: it must be more than zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // The whole chain, once, on one line: what failed and why.
            eprintln!("observer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Record {
            duration,
            signals,
            by,
            top,
            format,
            strict,
            stats,
        } => {
            let by = if by.is_empty() {
                Breakdowns::ALL
            } else {
                Breakdowns::only(&by).map_err(anyhow::Error::msg)?
            };
            check::privileges()?;
            let loaded = ebpf::load(&dedup(signals), &by)?;
            for (signal, status) in &loaded.status {
                if let Err(e) = status {
                    if strict {
                        bail!("signal {signal} cannot run: {e}");
                    }
                    tracing::warn!("signal {signal} cannot run: {e}");
                }
            }
            if loaded.running().next().is_none() {
                bail!("none of the requested signals can run here; `observer check -v` says why");
            }
            let opts = ReportOptions { top, by };
            let record = record::record(&loaded, duration, &opts, stats)
                .context("reading the kernel's histograms")?;
            match format {
                Format::Text => print!("{}", render::text(&record)),
                Format::Json => println!("{}", serde_json::to_string_pretty(&record)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { signals } => {
            let outcome = check::check(&dedup(signals), cli.verbose > 0)?;
            print!("{}", outcome.text);
            Ok(if outcome.all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn dedup(mut signals: Vec<Signal>) -> Vec<Signal> {
    signals.sort_unstable();
    signals.dedup();
    signals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("8"), Ok(Duration::from_secs(8)));
        assert_eq!(parse_duration("8s"), Ok(Duration::from_secs(8)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("abc").unwrap_err().contains("\"abc\""));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("0").is_err());
    }
}
