use std::{process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};
use observer::{
    agent, check, config, ebpf, record, render, rules,
    scope::{Scope, ScopeSpec},
    signals::{Breakdowns, ReportOptions, Signal},
    top,
};

/// Every signal, as `--signals` takes them: the default.
const ALL_SIGNALS: &str = "runqueue,blockio,tcp,lock,futex";

/// A continuous performance observer for Linux: scheduler run-queue latency (runqueue), block
/// I/O latency (blockio), TCP retransmits (tcp), kernel lock contention (lock) and user-space
/// futex waits (futex), measured in the kernel with eBPF.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// More logging: -v info, -vv debug (`run` logs at info without it); with `check`, the
    /// verifier's log for programs the kernel rejects.
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
            default_value = ALL_SIGNALS
        )]
        signals: Vec<Signal>,
        /// Breakdowns to include, comma-separated: cgroup, process, disk, op, lock, remote
        /// (default: all).
        #[arg(short, long, value_delimiter = ',')]
        by: Vec<String>,
        /// Rows per breakdown.
        #[arg(short, long, default_value_t = 10)]
        top: usize,
        /// Output: text (histograms and tables) or json (one object with a schema_version).
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Fail if any requested signal cannot run (by default the others still run).
        #[arg(long)]
        strict: bool,
        /// Also report what each kernel program cost per run (enables kernel.bpf_stats while
        /// recording, which itself adds about 50 ns per run).
        #[arg(long)]
        stats: bool,
        /// Only what runs in this cgroup subtree: a path relative to the cgroup2 mount
        /// (`/system.slice/nginx.service`), `self` (observer's own cgroup) or `pod` (its
        /// Kubernetes pod).
        #[arg(long, value_name = "PATH")]
        cgroup: Option<ScopeSpec>,
    },
    /// Check what this kernel supports, signal by signal, by loading each for real.
    Check {
        /// Signals to check, comma-separated (default: all).
        #[arg(
            short,
            long,
            value_delimiter = ',',
            default_value = ALL_SIGNALS
        )]
        signals: Vec<Signal>,
    },
    /// Run the agent: collect continuously and export over OTLP and/or Prometheus until
    /// SIGTERM/SIGINT. Settings: flags > OTEL_* environment > --config file > defaults.
    Run {
        /// The configuration file (observer.toml in the repository documents every key).
        #[arg(short, long)]
        config: Option<std::path::PathBuf>,
        /// How often to read the kernel's maps and export.
        #[arg(long, value_parser = parse_duration)]
        interval: Option<Duration>,
        /// Signals to run, comma-separated: runqueue, blockio, tcp, lock, futex.
        #[arg(short, long, value_delimiter = ',')]
        signals: Option<Vec<Signal>>,
        /// OTLP collector endpoint (turns OTLP export on), like OTEL_EXPORTER_OTLP_ENDPOINT.
        #[arg(long)]
        otlp_endpoint: Option<String>,
        /// Address:port of the Prometheus endpoint (turns it on).
        #[arg(long)]
        prometheus_listen: Option<std::net::SocketAddr>,
        /// The Unix socket `observer top` reads from, like agent.socket ("" turns it off).
        // A String: clap refuses an empty PathBuf.
        #[arg(long)]
        socket: Option<String>,
        /// Sidecar mode, like agent.scope: only what runs in this cgroup subtree (a path
        /// relative to the cgroup2 mount, `self` or `pod`); "" is the whole host.
        #[arg(long, value_name = "PATH")]
        cgroup: Option<String>,
    },
    /// A live terminal view of every signal, from the running agent if there is one, else from
    /// programs it loads itself (q quits, ? helps).
    Top {
        /// How often to refresh: 250ms to 10s (+/- change it while running). With an agent,
        /// its collection interval.
        #[arg(short, long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Signals to show, comma-separated: runqueue, blockio, tcp, lock, futex.
        #[arg(
            short,
            long,
            value_delimiter = ',',
            default_value = ALL_SIGNALS
        )]
        signals: Vec<Signal>,
        /// The agent's socket: read from the agent listening there, if any.
        #[arg(long, default_value = config::DEFAULT_SOCKET)]
        socket: std::path::PathBuf,
        /// Load the programs in this process even when an agent is running.
        #[arg(long)]
        local: bool,
        /// Only what runs in this cgroup subtree (as `record --cgroup`); loads the programs in
        /// this process (an agent's view cannot be narrowed from here).
        #[arg(long, value_name = "PATH")]
        cgroup: Option<ScopeSpec>,
    },
    /// List the decisions of the agent's rules from its audit journal (tuning.journal).
    Actions {
        /// The agent's configuration file, to find the journal (default: the default path).
        #[arg(short, long)]
        config: Option<std::path::PathBuf>,
        /// The journal file itself (overrides --config).
        #[arg(long)]
        journal: Option<std::path::PathBuf>,
        /// Only this rule's decisions.
        #[arg(long)]
        rule: Option<String>,
        /// Only the last N decisions.
        #[arg(short = 'n', long)]
        last: Option<usize>,
        /// Output: text (a table) or json (the journal's records, a list of objects).
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Work with the agent's configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the completion script of a shell, e.g.
    /// `observer completions bash > /usr/share/bash-completion/completions/observer`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the manual page observer(1), or with --dir write it and one page per subcommand
    /// (observer-record(1), observer-run(1)...), e.g. `observer man --dir /usr/local/share/man/man1`.
    Man {
        /// The directory to write every page into (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
    /// For `cargo xtask bench` only: attach empty programs (`return 0`) to these hooks, turn on
    /// kernel.bpf_stats, and print what each cost per run as `record --stats --format json`
    /// does: the floor any program on those hooks pays.
    #[command(hide = true)]
    Floor {
        /// How long to measure (SIGINT or SIGTERM stops it earlier, still printing).
        #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Hooks, comma-separated: sched_switch, sched_wakeup, sched_waking, sys_enter, sys_exit,
        /// block_rq_issue, block_rq_complete, contention_begin, contention_end (default: all).
        #[arg(long, value_delimiter = ',', value_parser = parse_floor_hook)]
        hooks: Vec<&'static str>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (with the OTEL_* environment applied) and print the
    /// resolved settings as an observer.toml (every key, with the value the agent would use);
    /// exit non-zero naming the file, line and key of the first error.
    Check {
        /// The TOML file, e.g. observer.toml.
        file: std::path::PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// For people.
    Text,
    /// For programs.
    Json,
}

/// `8`, `8s`, `500ms`, `2m`, `1h`, more than zero.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = config::parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: it must be more than zero"));
    }
    Ok(d)
}

/// A hook the floor has an empty program for (observer_common::floor).
fn parse_floor_hook(s: &str) -> Result<&'static str, String> {
    let hooks = observer_common::floor::PROGRAMS
        .iter()
        .map(|&(_, hook)| hook);
    hooks.clone().find(|&hook| hook == s).ok_or_else(|| {
        format!(
            "no floor program for hook {s:?}; the hooks are: {}",
            hooks.collect::<Vec<_>>().join(", ")
        )
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The agent says at info what it attached and where it exports (once, at start) and what
    // its rules decide; the one-shot commands print their results and log only problems.
    let level = match (cli.verbose, matches!(cli.command, Command::Run { .. })) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    observer::logging::init(level);
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
            cgroup,
        } => {
            let by = if by.is_empty() {
                Breakdowns::ALL
            } else {
                Breakdowns::only(&by).map_err(anyhow::Error::msg)?
            };
            check::privileges()?;
            let scope = cgroup.as_ref().map(Scope::resolve).transpose()?;
            let loaded = ebpf::load_scoped(&dedup(signals), &by, scope.as_ref())?;
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
            let mut record = record::record(&loaded, duration, &opts, stats)
                .context("reading the kernel's histograms")?;
            record.scope = scope.as_ref().map(Scope::describe);
            match format {
                Format::Text => print!("{}", render::text(&record)),
                Format::Json => println!("{}", serde_json::to_string_pretty(&record)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            interval,
            signals,
            otlp_endpoint,
            prometheus_listen,
            socket,
            cgroup,
        } => {
            let overrides = config::Overrides {
                interval,
                signals: signals.map(dedup),
                otlp_endpoint,
                prometheus_listen,
                socket: socket.map(Into::into),
                scope: cgroup,
            };
            let (mut loaded, tuning) = config::Config::load_with_rules(
                config.as_deref(),
                |k| std::env::var(k).ok(),
                &overrides,
            )?;
            let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
            loaded
                .otlp
                .notes
                .extend(config::unknown_otlp_variables(names));
            if tuning.enforces()
                && let Some(path) = &config
            {
                rules::check_config_owner(path).map_err(anyhow::Error::msg)?;
            }
            agent::run::run(loaded, tuning)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Top {
            interval,
            signals,
            socket,
            local,
            cgroup,
        } => {
            let scope = cgroup.as_ref().map(Scope::resolve).transpose()?;
            top::run(&top::Options {
                interval,
                signals: dedup(signals),
                socket,
                local,
                scope,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Actions {
            config,
            journal,
            rule,
            last,
            format,
        } => {
            let path = match (journal, config) {
                (Some(j), _) => j,
                (None, Some(c)) => {
                    config::Config::load_with_rules(
                        Some(&c),
                        |_| None,
                        &config::Overrides::default(),
                    )?
                    .1
                    .journal
                }
                (None, None) => rules::spec::DEFAULT_JOURNAL.into(),
            };
            let mut records = Vec::new();
            for r in rules::journal::read(&path)? {
                match r {
                    Ok(r) => records.push(r),
                    Err(e) => eprintln!("observer: {e} (skipped)"),
                }
            }
            records.retain(|r| rule.as_ref().is_none_or(|name| &r.rule == name));
            if let Some(n) = last {
                records.drain(..records.len().saturating_sub(n));
            }
            match format {
                Format::Text => print!("{}", render::actions(&records)),
                Format::Json => println!("{}", serde_json::to_string_pretty(&records)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let checked = config::Config::check_file(&file, |k| std::env::var(k).ok())?;
            if checked.tuning.enforces() {
                rules::check_config_owner(&file).map_err(anyhow::Error::msg)?;
            }
            // A comment, so that the whole output is itself a valid observer.toml.
            println!(
                "# {}: ok. The settings the agent would use (this file, the OTEL_* environment \
                 and the defaults), as an observer.toml:",
                file.display()
            );
            print!("{}", checked.toml);
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "observer",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: None } => {
            // As generate_to does: `help` is a subcommand for the terminal, not a page.
            let cmd = Cli::command().disable_help_subcommand(true);
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating the directory {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing the manual pages into {}", dir.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Floor { duration, hooks } => {
            check::privileges()?;
            let hooks = if hooks.is_empty() {
                observer_common::floor::PROGRAMS
                    .iter()
                    .map(|&(_, hook)| hook)
                    .collect()
            } else {
                hooks
            };
            let ebpf = ebpf::load_floor(&hooks)?;
            let record = record::floor(&ebpf, duration)?;
            println!("{}", serde_json::to_string_pretty(&record)?);
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
        assert!(parse_duration("1.5").is_ok());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("0").is_err());
    }

    /// Every option and argument of every command says what it is for in `--help`, and so does
    /// every command (hidden ones included: `floor` is run by the bench).
    #[test]
    fn every_help_line_describes_its_option() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() && path != "observer" {
                missing.push(format!("{path}: the command"));
            }
            for arg in cmd.get_arguments() {
                if arg.get_help().is_none() && !arg.is_hide_set() {
                    missing.push(format!("{path}: {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut cmd = Cli::command();
        // Building adds what clap generates (--help, --version), which have their own help.
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "observer", &mut missing);
        assert!(missing.is_empty(), "no help for: {missing:?}");
    }

    /// `observer --help` names every signal there is, as `--signals` takes it.
    #[test]
    fn the_description_names_every_signal() {
        let about = Cli::command().get_about().unwrap().to_string();
        for signal in Signal::ALL {
            assert!(about.contains(&format!("({signal})")), "{signal}: {about}");
        }
    }

    #[test]
    fn floor_hooks() {
        assert_eq!(parse_floor_hook("sched_switch"), Ok("sched_switch"));
        let err = parse_floor_hook("sched_swtich").unwrap_err();
        assert!(
            err.contains("\"sched_swtich\"") && err.contains("contention_end"),
            "{err}"
        );
    }
}
