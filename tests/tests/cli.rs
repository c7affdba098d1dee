//! The command line: text output, bad input, `observer check`, defaults and duration units.

use std::time::{Duration, Instant};

use observer_tests::blockdev::{self, LoopDevice};
use observer_tests::{
    ChildGuard, Recording, SIGNAL_KEYS, SIGNALS, observer, observer_ok, require_root,
};

const LOADGEN: &str = env!("CARGO_BIN_EXE_observer-loadgen");

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A bad value must be refused before anything is loaded: non-zero exit, a message on stderr
/// that names the bad value and lists what is valid, and no panic or backtrace.
fn refused(args: &[&str], bad: &str, valid: &[&str]) {
    let t = Instant::now();
    let out = observer::run(args);
    let err = stderr(&out);
    eprintln!("observer {args:?} -> {}; stderr:\n{err}", out.status);
    assert!(
        !out.status.success(),
        "observer {args:?} exited 0; stdout: {}",
        stdout(&out)
    );
    assert!(
        err.contains(bad),
        "stderr does not name the bad value {bad:?}: {err}"
    );
    for v in valid {
        assert!(
            err.contains(v),
            "stderr does not list the valid value {v:?}: {err}"
        );
    }
    for p in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!err.contains(p), "stderr shows a panic ({p:?}): {err}");
    }
    assert!(
        stdout(&out).trim().is_empty(),
        "a refused command printed a result: {}",
        stdout(&out)
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "refusing bad input took {:?}",
        t.elapsed()
    );
}

#[test]
fn bad_duration_is_refused_naming_it() {
    refused(&["record", "--duration", "abc"], "abc", &["ms", "s", "m"]);
    refused(
        &["record", "--duration", "5parsecs"],
        "5parsecs",
        &["ms", "s", "m"],
    );
}

#[test]
fn bad_signal_is_refused_listing_the_valid_ones() {
    refused(
        &["record", "--duration", "1", "--signals", "bogus"],
        "bogus",
        &SIGNALS,
    );
    refused(
        &["record", "--duration", "1", "--signals", "runqueue,bogus2"],
        "bogus2",
        &SIGNALS,
    );
}

#[test]
fn bad_format_is_refused_listing_the_valid_ones() {
    refused(
        &["record", "--duration", "1", "--format", "xml"],
        "xml",
        &["text", "json"],
    );
}

#[test]
fn check_exits_zero_and_names_each_signal() {
    require_root!();
    let out = observer::run(&["check"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    eprintln!("observer check -> {}:\n{text}", out.status);
    if !out.status.success() {
        observer_tests::skip_or_fail!("observer check exited {}: {text}", out.status);
    }
    for (s, k) in SIGNALS.iter().zip(SIGNAL_KEYS) {
        assert!(
            text.contains(s) || text.contains(k),
            "observer check does not name signal {s}: {text}"
        );
    }
}

/// Without --signals every signal is recorded, and on this machine every one of them runs;
/// `--top 2` bounds every breakdown list (with load that gives several of them more than two
/// rows); a plain number of seconds is a duration.
#[test]
fn default_records_all_signals_and_top_bounds_every_list() {
    require_root!();
    let rec = observer_ok!(Recording::start(&["--duration", "2", "--top", "2"]).wait_attached());
    // Contention on several kinds of kernel lock (mmap_lock read and write, spinlocks), so that
    // more than two lock classes have waits, and more than two processes wait for a CPU.
    let out = ChildGuard::new(
        observer_tests::loadgen_cmd(LOADGEN)
            .args(["mmap", "8", "1"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start load generator"),
    )
    .wait_output(Duration::from_secs(20))
    .expect("load generator");
    assert!(out.status.success(), "load generator failed: {out:?}");
    let report = observer_ok!(rec.finish());
    report.assert_all_signals("signals in the default report");
    let lists = [
        ("runqueue_latency", "by_cgroup"),
        ("runqueue_latency", "by_process"),
        ("block_io_latency", "by_disk"),
        ("tcp_retransmits", "by_remote"),
        ("lock_contention", "by_class"),
        ("futex_wait", "by_process"),
    ];
    // More than two processes wait for a CPU (the load generator, this test, kernel threads).
    let procs = report.signal("runqueue_latency")["by_process"]
        .as_array()
        .unwrap();
    assert_eq!(procs.len(), 2, "--top 2 lists two processes: {procs:?}");
    let too_long: Vec<String> = lists
        .iter()
        .filter_map(|(sig, list)| {
            let l = report.signal(sig)[list]
                .as_array()
                .unwrap_or_else(|| panic!("{sig}.{list} is not a list"));
            (l.len() > 2).then(|| format!("{sig}.{list} has {} entries: {l:?}", l.len()))
        })
        .collect();
    assert!(
        too_long.is_empty(),
        "--top 2 does not bound every list: {too_long:#?}"
    );
}

/// A duration with a unit: 500ms records for half a second.
#[test]
fn duration_with_milliseconds() {
    require_root!();
    let t = Instant::now();
    let report =
        observer_ok!(Recording::start(&["--signals", "futex", "--duration", "500ms"]).finish());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "a 500ms recording finished in {took:?}"
    );
    assert_eq!(report.signal_keys(), ["futex_wait"]);
}

/// `--format text` prints one histogram per latency signal (and the TCP retransmit count).
/// Creates a little of each condition while it records, so that no histogram is empty: direct
/// reads on a loop device, mmap_lock contention and run-queue waits from many threads, and
/// futex waits.
#[test]
fn text_format_prints_a_histogram_for_each_signal() {
    require_root!();
    let dev = LoopDevice::create(16).expect("create loop device");
    let rec = observer_ok!(Recording::start_format("text", &["--duration", "3s"]).wait_attached());
    let f = dev.open_direct().expect("open loop device");
    blockdev::direct_reads(&f, 200, 4096, 16 << 20).expect("direct reads");
    let mmap = observer_tests::loadgen_cmd(LOADGEN)
        .args(["mmap", "8", "1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start load generator");
    let futex = observer_tests::loadgen_cmd(LOADGEN)
        .args(["futex", "20", "3"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start load generator");
    for child in [mmap, futex] {
        let out = ChildGuard::new(child)
            .wait_output(Duration::from_secs(20))
            .expect("load generator");
        assert!(out.status.success(), "load generator failed: {out:?}");
    }
    let text = observer_ok!(rec.finish_raw());
    eprintln!("observer record --format text:\n{text}");
    assert!(
        serde_json::from_str::<serde_json::Value>(text.trim()).is_err(),
        "--format text printed JSON"
    );
    // Blocks are separated by blank lines; each signal's starts with a line naming it. A
    // histogram row shows a bucket range and a bar.
    let blocks: Vec<&str> = text.split("\n\n").collect();
    let find = |names: &[&str]| -> Option<&str> {
        blocks.iter().copied().find(|b| {
            let head = b.trim_start().lines().next().unwrap_or("").to_lowercase();
            names.iter().any(|n| head.contains(n))
        })
    };
    let is_row = |l: &str| l.contains("->") && l.contains('|') && l.contains('*');
    for (names, what) in [
        (
            &["run-queue", "runqueue", "run queue"][..],
            "run-queue latency",
        ),
        (&["block i/o device", "block"][..], "block I/O latency"),
        (&["lock contention"][..], "kernel lock contention"),
        (&["futex"][..], "futex waits"),
    ] {
        let block = find(names).unwrap_or_else(|| panic!("no section for {what} in:\n{text}"));
        let rows = block.lines().filter(|l| is_row(l)).count();
        assert!(
            rows > 0,
            "the {what} section has no histogram rows:\n{block}"
        );
    }
    let tcp = find(&["tcp", "retransmit"])
        .unwrap_or_else(|| panic!("no TCP retransmit section in:\n{text}"));
    assert!(
        tcp.lines()
            .next()
            .is_some_and(|l| l.chars().any(|c| c.is_ascii_digit())),
        "the TCP retransmit section does not give a count: {tcp}"
    );
}

/// Ctrl-C (SIGINT) during a recording stops it early and still prints what was measured, over
/// the time it actually ran, with exit code 0: what runqlat users expect.
#[test]
fn sigint_stops_a_recording_early_with_its_report() {
    require_root!();
    let rec =
        observer_ok!(Recording::start(&["--duration", "60s", "--signals", "lock"]).wait_attached());
    std::thread::sleep(Duration::from_millis(500));
    observer_tests::signal_child(rec.pid(), libc::SIGINT);
    let t = Instant::now();
    let text = observer_ok!(rec.finish_raw());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "record took {:?} to stop after SIGINT",
        t.elapsed()
    );
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("no JSON report after SIGINT ({e}): {text}"));
    let measured = json["duration_s"].as_f64().expect("duration_s");
    assert!(
        (0.4..10.0).contains(&measured),
        "duration_s {measured} after SIGINT at ~0.5 s"
    );
    assert!(
        json["signals"]["lock_contention"]["count"].is_u64(),
        "{json}"
    );
}

/// The subcommands a person may run (`floor` is hidden: it exists for the bench).
const SUBCOMMANDS: [&str; 8] = [
    "record",
    "check",
    "run",
    "top",
    "actions",
    "config",
    "completions",
    "man",
];

/// Runs observer to completion with `env` added and `NO_COLOR`, `RUST_LOG` and every `OTEL_*`
/// variable of the test's own environment removed. `output()` reads stdout while it runs: a
/// completion script is larger than a pipe holds.
fn output(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = observer::command();
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("OTEL_") || k == "NO_COLOR" || k == "RUST_LOG" {
            cmd.env_remove(&*k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run observer")
}

/// A directory removed with its contents when the test ends.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(observer_tests::unique_name(what));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The long options `observer ARGS --help` lists (`duration` for `-d, --duration <DURATION>`).
fn long_options(args: &[&str]) -> Vec<String> {
    let mut help_args = args.to_vec();
    help_args.push("--help");
    let out = output(&help_args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            // `-d, --duration ...` or `--strict`.
            let long = match line.split_once(", ") {
                Some((short, rest)) if short.len() == 2 && short.starts_with('-') => rest,
                _ => line,
            };
            let name = long.strip_prefix("--")?;
            Some(name.split([' ', '.', '<']).next()?.to_owned())
        })
        .collect()
}

/// `observer completions SHELL` prints a script for each shell clap_complete knows, naming every
/// subcommand and option; bash's really completes (sourced into bash and asked, as the shell
/// does on Tab). An unknown shell is refused with the list.
#[test]
fn completions_for_every_shell_name_every_subcommand_and_bash_completes() {
    let record_options = long_options(&["record"]);
    assert!(
        record_options.contains(&"duration".to_owned()),
        "{record_options:?}"
    );
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = output(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for word in SUBCOMMANDS {
            assert!(script.contains(word), "{shell}: no {word} in:\n{script}");
        }
        for option in &record_options {
            assert!(script.contains(option.as_str()), "{shell}: no --{option}");
        }
    }
    refused(&["completions", "tcsh"], "tcsh", &["bash", "zsh", "fish"]);

    let scratch = Scratch::new("observer-completions");
    let script = scratch.0.join("observer.bash");
    std::fs::write(&script, stdout(&output(&["completions", "bash"], &[]))).unwrap();
    // What bash does on Tab: COMP_WORDS and COMP_CWORD set, the function called with the
    // command, the word being completed and the word before it; COMPREPLY is the answer.
    let complete = |words: &[&str]| -> Vec<String> {
        let cword = words.len() - 1;
        let program = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={cword}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; \
             COMP_POINT=${{#COMP_LINE}}; _observer observer '{}' '{}'; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            words[cword],
            words[cword - 1],
        );
        let out = std::process::Command::new("bash")
            .args(["--norc", "-c", &program])
            .output()
            .expect("bash");
        assert!(out.status.success(), "{program}: {}", stderr(&out));
        stdout(&out).lines().map(String::from).collect()
    };
    assert_eq!(complete(&["observer", "rec"]), ["record"]);
    assert_eq!(complete(&["observer", "record", "--for"]), ["--format"]);
    assert_eq!(
        complete(&["observer", "record", "--format", ""]),
        ["text", "json"]
    );
    let configs = complete(&["observer", "config", ""]);
    assert!(configs.contains(&"check".to_owned()), "{configs:?}");
    let shells = complete(&["observer", "completions", ""]);
    assert!(shells.contains(&"zsh".to_owned()), "{shells:?}");
}

/// `observer man --dir DIR` writes observer(1) and a page for every subcommand (the nested
/// `config check` too, the hidden `floor` not), each naming every option its --help lists, and
/// groff renders each without a warning; `observer man` prints observer(1) itself.
#[test]
fn man_pages_for_every_subcommand_render_without_warnings() {
    let scratch = Scratch::new("observer-man");
    let out = output(&["man", "--dir", scratch.0.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut pages: Vec<(String, Vec<&str>)> = vec![("observer".into(), vec![])];
    for sub in SUBCOMMANDS {
        pages.push((format!("observer-{sub}"), vec![sub]));
    }
    pages.push(("observer-config-check".into(), vec!["config", "check"]));
    let mut written: Vec<String> = std::fs::read_dir(&scratch.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    let mut expected: Vec<String> = pages.iter().map(|(name, _)| format!("{name}.1")).collect();
    expected.sort();
    assert_eq!(written, expected);
    for (name, args) in &pages {
        let path = scratch.0.join(format!("{name}.1"));
        let page = std::fs::read_to_string(&path).unwrap();
        assert!(
            page.starts_with(&format!(".TH {name} 1")) || page.contains(&format!("\n.TH {name} 1")),
            "{name}: no title line:\n{page}"
        );
        for option in long_options(args) {
            let roff = format!("\\-\\-{}", option.replace('-', "\\-"));
            assert!(
                page.contains(&roff),
                "{name} does not document --{option}:\n{page}"
            );
        }
        // -ww: every warning; -z: no output, only the check.
        let groff = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
            .expect("groff (Debian package groff-base) must be installed");
        assert!(
            groff.status.success() && groff.stderr.is_empty(),
            "{name}: {}",
            stderr(&groff)
        );
    }
    let printed = output(&["man"], &[]);
    assert!(printed.status.success());
    assert_eq!(
        stdout(&printed),
        std::fs::read_to_string(scratch.0.join("observer.1")).unwrap()
    );
}

/// `command` run on a terminal: script(1) (util-linux) gives it a pseudo-terminal, and what
/// it printed there comes back on script's stdout. `no_color`: the value of NO_COLOR, or unset.
fn on_a_terminal(command: &str, no_color: Option<&str>) -> String {
    let mut cmd = std::process::Command::new("script");
    cmd.args([
        "--quiet",
        "--return",
        "--flush",
        "--command",
        command,
        "/dev/null",
    ]);
    cmd.env_remove("NO_COLOR").env_remove("RUST_LOG");
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (Debian package bsdutils) must be installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const ESC: char = '\u{1b}';

/// On a terminal clap colours help and errors; with NO_COLOR set to anything but "" (the
/// no-color.org rule) nothing observer prints has an escape sequence.
#[test]
fn no_color_turns_colour_off_in_help_and_errors() {
    let bin = observer::bin();
    for args in ["--help", "record --duration abc"] {
        let command = format!("{} {args}", bin.display());
        let coloured = on_a_terminal(&command, None);
        assert!(
            coloured.contains(ESC),
            "{args}: no colour on a terminal: {coloured}"
        );
        assert!(
            on_a_terminal(&command, Some("")).contains(ESC),
            "NO_COLOR=\"\" is unset"
        );
        let plain = on_a_terminal(&command, Some("1"));
        assert!(!plain.contains(ESC), "{args} with NO_COLOR=1: {plain:?}");
        assert!(plain.contains("--help"), "{args}: {plain}");
    }
}

/// The agent's log lines are coloured on a terminal, and not with NO_COLOR=1.
#[test]
fn no_color_turns_colour_off_in_the_log() {
    require_root!();
    let command = format!(
        "timeout --signal INT 3 {} run --interval 1s --signals futex --prometheus-listen \
         127.0.0.1:0 --socket ''",
        observer::bin().display()
    );
    let coloured = on_a_terminal(&command, None);
    assert!(coloured.contains("collecting"), "{coloured}");
    assert!(
        coloured.contains(ESC),
        "no colour on a terminal: {coloured}"
    );
    let plain = on_a_terminal(&command, Some("1"));
    assert!(plain.contains("collecting"), "{plain}");
    assert!(!plain.contains(ESC), "with NO_COLOR=1: {plain:?}");
}

/// At the default level (no -v) a healthy agent logs one line at start, saying what it attached
/// and where it exports, and nothing while it collects; at SIGTERM one more, that it stops.
#[test]
fn a_healthy_run_says_once_what_it_attached_and_where_it_exports() {
    require_root!();
    let scratch = Scratch::new("observer-healthy");
    let log_path = scratch.0.join("stderr");
    let listen = observer_tests::agent::free_addr().to_string();
    let mut cmd = observer::command();
    cmd.args(["run", "--interval", "500ms", "--signals", "tcp,futex"])
        .args(["--prometheus-listen", &listen, "--socket", ""])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let agent = ChildGuard::new(cmd.spawn().unwrap());
    let log = || std::fs::read_to_string(&log_path).unwrap();
    let start = Instant::now();
    while !log().contains("collecting") {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Four collections.
    std::thread::sleep(Duration::from_secs(2));
    let lines: Vec<String> = log().lines().map(String::from).collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    for part in [
        " INFO observer::agent::run: collecting every 500ms: ",
        "attached tcp, futex on the whole host",
        &format!("exporting to Prometheus at http://{listen}/metrics"),
        "capabilities after attaching: CAP_DAC_READ_SEARCH",
    ] {
        assert!(lines[0].contains(part), "no {part:?} in {}", lines[0]);
    }
    observer_tests::signal_child(agent.id(), libc::SIGTERM);
    let out = agent.wait_output(Duration::from_secs(30)).unwrap();
    assert!(out.status.success(), "{}", log());
    let lines: Vec<String> = log().lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[1].contains("shutting down"), "{}", lines[1]);
}

/// `config check` prints the resolved settings as an observer.toml (a comment first, naming
/// the file): the OTEL_* environment it was run with is in it, and checking what it printed,
/// with no environment, prints the same settings again.
#[test]
fn config_check_prints_an_observer_toml_that_checks_the_same() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scratch = Scratch::new("observer-config-check");
    for file in ["observer.toml", "examples/rules/performance-guide.toml"] {
        let path = repo.join(file);
        let env = [
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=secret"),
            ("OTEL_SERVICE_NAME", "checkout"),
        ];
        let first = output(&["config", "check", path.to_str().unwrap()], &env);
        assert!(first.status.success(), "{file}: {}", stderr(&first));
        let printed = stdout(&first);
        assert!(
            printed.starts_with(&format!("# {}: ok.", path.display())),
            "{printed}"
        );
        for line in [
            "service_name = \"checkout\"",
            "api-key = \"secret\"",
            "[agent]",
        ] {
            assert!(
                printed.lines().any(|l| l == line),
                "{file}: no {line:?} in:\n{printed}"
            );
        }
        let again = scratch.0.join(file.replace('/', "-"));
        std::fs::write(&again, &printed).unwrap();
        let second = output(&["config", "check", again.to_str().unwrap()], &[]);
        assert!(
            second.status.success(),
            "what {file} printed is refused: {}\n{printed}",
            stderr(&second)
        );
        let body = |s: &str| s.split_once('\n').unwrap().1.to_owned();
        assert_eq!(body(&stdout(&second)), body(&printed));
    }
}

/// `record --format json` says which layout it has.
#[test]
fn record_json_has_a_schema_version() {
    require_root!();
    let report =
        observer_ok!(Recording::start(&["--signals", "futex", "--duration", "500ms"]).finish());
    assert_eq!(report.json["schema_version"], 1, "{}", report.json);
}
