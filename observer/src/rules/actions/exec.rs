//! `exec`: runs a configured command when a rule is breached, with the breach described in its
//! environment.
//!
//! Safety: never through a shell (the program and its arguments are passed as they are); the
//! program is an absolute path to an existing executable file, checked when the config is
//! loaded and again before each run; the environment is cleared except a fixed `PATH` and the
//! `OBSERVER_*` variables; stdin is /dev/null; stdout and stderr are captured, the first
//! [`CAPTURE_LIMIT`] bytes of each kept. The command runs in a process group of its own, which
//! is killed when the timeout expires and, so nothing it started outlives it, when it exits.

use std::{
    io::Read,
    ops::Range,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    Action, ActionError, Breach, Command, FileAction, Invalid, Scalar, Step, Target, required,
};

/// The timeout when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest timeout accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of stdout and of stderr is kept.
pub const CAPTURE_LIMIT: usize = 4096;
/// The `PATH` the command gets.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long, after the command ended, to wait for its output pipes to close (a process that
/// left its process group could hold them open forever).
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal (this number) killed it.
    Signaled(i32),
    /// It was still running after the timeout; its process group was killed.
    TimedOut,
}

/// The result of [`run`].
#[derive(Clone, Debug)]
pub struct ExecOutcome {
    pub status: ExecStatus,
    /// The first [`CAPTURE_LIMIT`] bytes of stdout (invalid UTF-8 replaced).
    pub stdout: String,
    /// The first [`CAPTURE_LIMIT`] bytes of stderr.
    pub stderr: String,
    /// Whether stdout had more than was kept.
    pub stdout_truncated: bool,
    /// Whether stderr had more than was kept.
    pub stderr_truncated: bool,
    /// From start to exit, or to the kill on timeout.
    pub duration: Duration,
}

impl ExecOutcome {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.status == ExecStatus::Exited(0)
    }
}

/// Checks that `program` is an absolute path to an existing executable file.
pub fn check_program(program: &str) -> Result<(), String> {
    if !program.starts_with('/') {
        return Err(format!(
            "the program {program:?} must be an absolute path (commands never go through a \
             shell or a PATH search), e.g. \"/usr/local/bin/{program}\""
        ));
    }
    let meta = std::fs::metadata(program)
        .map_err(|e| format!("the program {program} cannot be used: {e}"))?;
    if !meta.is_file() {
        return Err(format!("the program {program} is not a file"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "the program {program} is not executable (chmod +x {program})"
        ));
    }
    Ok(())
}

/// The environment of a command run for `breach`: `PATH` and the `OBSERVER_*` variables.
pub fn environment(breach: &Breach, audit_id: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("PATH", PATH.to_owned()),
        ("OBSERVER_RULE", breach.rule.clone()),
        ("OBSERVER_SIGNAL", breach.signal.name().to_owned()),
        ("OBSERVER_STATISTIC", breach.statistic.clone()),
        ("OBSERVER_OBSERVED", breach.observed.to_string()),
        ("OBSERVER_THRESHOLD", breach.threshold.to_string()),
        ("OBSERVER_UNIT", breach.unit.to_owned()),
        (
            "OBSERVER_WINDOW_SECONDS",
            breach.window.as_secs_f64().to_string(),
        ),
        ("OBSERVER_AUDIT_ID", audit_id.to_owned()),
    ];
    let target = match &breach.target {
        Target::Host => "host",
        Target::Cgroup { id, path } => {
            env.push(("OBSERVER_CGROUP_ID", id.to_string()));
            env.push(("OBSERVER_CGROUP_PATH", path.clone()));
            "cgroup"
        }
        Target::Process {
            pid,
            name,
            cgroup_path,
        } => {
            env.push(("OBSERVER_PID", pid.to_string()));
            env.push(("OBSERVER_PROCESS_NAME", name.clone()));
            env.push(("OBSERVER_CGROUP_PATH", cgroup_path.clone()));
            "process"
        }
        Target::Disk { name } => {
            env.push(("OBSERVER_DISK", name.clone()));
            "disk"
        }
        Target::Remote { address } => {
            env.push(("OBSERVER_REMOTE_ADDRESS", address.clone()));
            "remote"
        }
        Target::LockClass { class } => {
            env.push(("OBSERVER_LOCK_CLASS", class.clone()));
            "lock_class"
        }
    };
    env.push(("OBSERVER_TARGET", target.to_owned()));
    env
}

/// The first [`CAPTURE_LIMIT`] bytes read from a pipe, and whether there was more.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
    closed: bool,
}

/// Reads `pipe` to its end on a thread, keeping the start (reading on, so the command never
/// blocks on a full pipe).
fn capture(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<Captured>> {
    let captured = Arc::new(Mutex::new(Captured::default()));
    let shared = Arc::clone(&captured);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut c = shared.lock().unwrap_or_else(|p| p.into_inner());
            let room = CAPTURE_LIMIT - c.bytes.len();
            c.bytes.extend_from_slice(&buf[..n.min(room)]);
            c.truncated |= n > room;
        }
        shared.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
    });
    captured
}

/// Waits (without reaping) for `pid` to exit, for at most until `deadline`. True if it exited.
fn exited_by(pid: libc::pid_t, deadline: Instant) -> Result<bool, std::io::Error> {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // WNOWAIT leaves the child a zombie, so its pid, which is also its process group's id,
        // cannot be reused before we have killed the group.
        // SAFETY: `info` is a valid siginfo_t.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: waitid filled si_pid (0 when no child has changed state).
        if unsafe { info.si_pid() } != 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `cmd` for `breach` and waits for it, at most its timeout (blocking: call it off the
/// async runtime). `audit_id` is the audit record's id, given to the command as
/// `OBSERVER_AUDIT_ID`.
pub fn run(cmd: &Command, breach: &Breach, audit_id: &str) -> Result<ExecOutcome, ActionError> {
    let (program, args) = cmd
        .argv
        .split_first()
        .ok_or_else(|| ActionError::Unavailable("an empty command".to_owned()))?;
    check_program(program).map_err(ActionError::Unavailable)?;
    let started = Instant::now();
    let mut child = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(environment(breach, audit_id))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| ActionError::Io {
            what: format!("start {program}"),
            source,
        })?;
    let stdout = child.stdout.take().map(capture);
    let stderr = child.stderr.take().map(capture);
    let pid = child.id() as libc::pid_t;
    let finished = exited_by(pid, started + cmd.timeout).map_err(|source| ActionError::Io {
        what: format!("wait for {program}"),
        source,
    });
    // Kill the group whether the command finished or not: on timeout that is the point, and
    // after an exit it ends what the command left running. The leader is not reaped yet, so
    // the group id is still ours.
    // SAFETY: kill has no memory preconditions; -pid is the command's own process group.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let status = child.wait().map_err(|source| ActionError::Io {
        what: format!("wait for {program}"),
        source,
    })?;
    let duration = started.elapsed();
    let status = if !finished? {
        ExecStatus::TimedOut
    } else {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ExecStatus::Exited(code),
            (None, Some(signal)) => ExecStatus::Signaled(signal),
            (None, None) => ExecStatus::Signaled(0),
        }
    };
    let drained_by = Instant::now() + DRAIN_GRACE;
    let take = |captured: Option<Arc<Mutex<Captured>>>| {
        let Some(captured) = captured else {
            return (String::new(), false);
        };
        while Instant::now() < drained_by
            && !captured.lock().unwrap_or_else(|p| p.into_inner()).closed
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let c = captured.lock().unwrap_or_else(|p| p.into_inner());
        (String::from_utf8_lossy(&c.bytes).into_owned(), c.truncated)
    };
    let (stdout, stdout_truncated) = take(stdout);
    let (stderr, stderr_truncated) = take(stderr);
    Ok(ExecOutcome {
        status,
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        duration,
    })
}

/// A timeout as configured: seconds, or a duration string (`"500ms"`, `"30s"`, `"2m"`).
fn parse_timeout(value: &Scalar) -> Result<Duration, String> {
    let timeout = match value {
        Scalar::Integer(n) => u64::try_from(*n)
            .map(Duration::from_secs)
            .map_err(|_| format!("{n} is negative; use a duration such as \"10s\""))?,
        Scalar::Text(s) => crate::config::parse_duration(s)?,
    };
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(format!(
            "the timeout must be more than 0 and at most {}s (5 minutes)",
            MAX_TIMEOUT.as_secs()
        ));
    }
    Ok(timeout)
}

/// Runs a command for each breach.
#[derive(Debug)]
pub struct Exec {
    command: Command,
}

impl Exec {
    pub(super) fn build(action: &FileAction, at: &Range<usize>) -> Result<Self, Invalid> {
        let example = "{ type = \"exec\", command = [\"/usr/local/bin/notify\", \"--rule\"], \
                       timeout = \"10s\" }";
        let command = required(&action.command, "command", "exec", at, example)?;
        let Some(program) = command.get_ref().first() else {
            return Err(Invalid::new(
                command.span(),
                "command",
                format!("the command is empty; give the program and its arguments, e.g. {example}"),
            ));
        };
        check_program(program.get_ref()).map_err(|m| Invalid::new(program.span(), "command", m))?;
        if let Some(arg) = command
            .get_ref()
            .iter()
            .find(|a| a.get_ref().contains('\0'))
        {
            return Err(Invalid::new(
                arg.span(),
                "command",
                "an argument contains a NUL character, which a command line cannot carry",
            ));
        }
        let timeout = action
            .timeout
            .as_ref()
            .map(|t| parse_timeout(t.get_ref()).map_err(|m| Invalid::new(t.span(), "timeout", m)))
            .transpose()?
            .unwrap_or(DEFAULT_TIMEOUT);
        Ok(Self {
            command: Command {
                argv: command
                    .get_ref()
                    .iter()
                    .map(|a| a.get_ref().clone())
                    .collect(),
                timeout,
            },
        })
    }
}

impl Action for Exec {
    fn kind(&self) -> &'static str {
        "exec"
    }

    fn describe(&self) -> String {
        format!(
            "exec {:?} (timeout {:?})",
            self.command.argv, self.command.timeout
        )
    }

    fn plan(&self, _breach: &Breach) -> Result<Vec<Step>, ActionError> {
        // Checked again here so a dry run reports a program that has gone since the config was
        // loaded.
        if let Some(program) = self.command.argv.first() {
            check_program(program).map_err(ActionError::Unavailable)?;
        }
        Ok(vec![Step::Run(self.command.clone())])
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::Per;
    use super::super::testing::{breach, built, invalid};
    use super::*;

    fn command(argv: &[&str], timeout: Duration) -> Command {
        Command {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            timeout,
        }
    }

    fn process_breach() -> Breach {
        breach(Target::Process {
            pid: 4242,
            name: "db worker".to_owned(),
            cgroup_path: "/system.slice/db.service".to_owned(),
        })
    }

    /// A file in /tmp the test writes, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str, mode: u32) -> Self {
            let path = std::env::temp_dir().join(observer_tests::unique_name("exec-test"));
            std::fs::write(&path, contents).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            Self(path)
        }
        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn commands_and_timeouts_are_checked() {
        let plain = TempFile::new("#!/bin/sh\n", 0o644);
        let not_executable = format!(r#"{{ type = "exec", command = ["{}"] }}"#, plain.path());
        let p = plain.path();
        for (snippet, field, message, at) in [
            (
                r#"{ type = "exec", command = ["notify-send", "hi"] }"#.to_owned(),
                "command",
                "the program \"notify-send\" must be an absolute path (commands never go \
                 through a shell or a PATH search), e.g. \"/usr/local/bin/notify-send\""
                    .to_owned(),
                "\"notify-send\"",
            ),
            (
                r#"{ type = "exec", command = ["/no/such/program"] }"#.to_owned(),
                "command",
                "the program /no/such/program cannot be used: No such file or directory (os \
                 error 2)"
                    .to_owned(),
                "\"/no/such/program\"",
            ),
            (
                r#"{ type = "exec", command = ["/usr/bin"] }"#.to_owned(),
                "command",
                "the program /usr/bin is not a file".to_owned(),
                "\"/usr/bin\"",
            ),
            (
                not_executable,
                "command",
                format!("the program {p} is not executable (chmod +x {p})"),
                &format!("\"{p}\""),
            ),
            (
                r#"{ type = "exec", command = [] }"#.to_owned(),
                "command",
                "the command is empty; give the program and its arguments, e.g. { type = \
                 \"exec\", command = [\"/usr/local/bin/notify\", \"--rule\"], timeout = \"10s\" }"
                    .to_owned(),
                "[]",
            ),
            (
                r#"{ type = "exec", command = ["/bin/true", "a\u0000b"] }"#.to_owned(),
                "command",
                "an argument contains a NUL character, which a command line cannot carry"
                    .to_owned(),
                "\"a\\u0000b\"",
            ),
            (
                r#"{ type = "exec", command = ["/bin/true"], timeout = "6m" }"#.to_owned(),
                "timeout",
                "the timeout must be more than 0 and at most 300s (5 minutes)".to_owned(),
                "\"6m\"",
            ),
            (
                r#"{ type = "exec", command = ["/bin/true"], timeout = 0 }"#.to_owned(),
                "timeout",
                "the timeout must be more than 0 and at most 300s (5 minutes)".to_owned(),
                "0",
            ),
            (
                r#"{ type = "exec", command = ["/bin/true"], timeout = -1 }"#.to_owned(),
                "timeout",
                "-1 is negative; use a duration such as \"10s\"".to_owned(),
                "-1",
            ),
            (
                r#"{ type = "exec", command = ["/bin/true"], timeout = "soon" }"#.to_owned(),
                "timeout",
                "\"soon\" is not a duration; use a number of seconds or a number with a unit: \
                 500ms, 10s, 2m"
                    .to_owned(),
                "\"soon\"",
            ),
            (
                r#"{ type = "exec", timeout = "1s" }"#.to_owned(),
                "command",
                "an exec action needs `command`, e.g. { type = \"exec\", command = \
                 [\"/usr/local/bin/notify\", \"--rule\"], timeout = \"10s\" }"
                    .to_owned(),
                r#"{ type = "exec", timeout = "1s" }"#,
            ),
        ] {
            assert_eq!(
                invalid(&snippet, Per::Host),
                (field, message, at.to_owned()),
                "{snippet}"
            );
        }
        let default = built(r#"{ type = "exec", command = ["/bin/true"] }"#, Per::Host);
        assert_eq!(
            default.plan(&breach(Target::Host)).unwrap(),
            [Step::Run(command(&["/bin/true"], DEFAULT_TIMEOUT))]
        );
    }

    /// /usr/bin/env prints exactly PATH and the OBSERVER_* variables: nothing of the test's own
    /// environment (HOME, USER, CARGO_*...) reaches the command.
    #[test]
    fn the_command_gets_the_breach_and_nothing_else_in_its_environment() {
        let outcome = run(
            &command(&["/usr/bin/env"], Duration::from_secs(10)),
            &process_breach(),
            "audit-7",
        )
        .unwrap();
        assert_eq!(outcome.status, ExecStatus::Exited(0));
        assert!(outcome.success());
        let mut got: Vec<&str> = outcome.stdout.lines().collect();
        got.sort_unstable();
        let mut expected = vec![
            format!("PATH={PATH}"),
            "OBSERVER_AUDIT_ID=audit-7".to_owned(),
            "OBSERVER_CGROUP_PATH=/system.slice/db.service".to_owned(),
            "OBSERVER_OBSERVED=75.5".to_owned(),
            "OBSERVER_PID=4242".to_owned(),
            "OBSERVER_PROCESS_NAME=db worker".to_owned(),
            "OBSERVER_RULE=test".to_owned(),
            "OBSERVER_SIGNAL=tcp".to_owned(),
            "OBSERVER_STATISTIC=rate".to_owned(),
            "OBSERVER_TARGET=process".to_owned(),
            "OBSERVER_THRESHOLD=50".to_owned(),
            "OBSERVER_UNIT=1/s".to_owned(),
            "OBSERVER_WINDOW_SECONDS=30".to_owned(),
        ];
        expected.sort_unstable();
        assert_eq!(got, expected);
        assert_eq!(outcome.stderr, "");
        // There was something to leak: the test's own environment has other variables.
        assert!(
            std::env::vars().any(|(k, _)| k != "PATH" && !k.starts_with("OBSERVER_")),
            "the test runs with an empty environment"
        );

        let disk = run(
            &command(&["/usr/bin/env"], Duration::from_secs(10)),
            &breach(Target::Disk {
                name: "loop3".to_owned(),
            }),
            "a",
        )
        .unwrap();
        assert!(disk.stdout.lines().any(|l| l == "OBSERVER_DISK=loop3"));
        assert!(disk.stdout.lines().any(|l| l == "OBSERVER_TARGET=disk"));
    }

    #[test]
    fn exit_codes_output_and_truncation_are_reported() {
        let b = breach(Target::Host);
        let outcome = run(
            &command(
                &["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
                Duration::from_secs(10),
            ),
            &b,
            "a",
        )
        .unwrap();
        assert_eq!(outcome.status, ExecStatus::Exited(3));
        assert!(!outcome.success());
        assert_eq!(
            (outcome.stdout.as_str(), outcome.stderr.as_str()),
            ("out\n", "err\n")
        );
        assert!(!outcome.stdout_truncated && !outcome.stderr_truncated);

        let big = run(
            &command(
                &["/bin/sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"],
                Duration::from_secs(10),
            ),
            &b,
            "a",
        )
        .unwrap();
        assert_eq!(big.status, ExecStatus::Exited(0));
        assert_eq!(big.stdout, "x".repeat(CAPTURE_LIMIT));
        assert!(big.stdout_truncated);

        let killed = run(
            &command(&["/bin/sh", "-c", "kill -TERM $$"], Duration::from_secs(10)),
            &b,
            "a",
        )
        .unwrap();
        assert_eq!(killed.status, ExecStatus::Signaled(libc::SIGTERM));
    }

    /// Whether `pid` is still a live process: /proc/<pid> exists and is not a zombie.
    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
    }

    fn wait_dead(pid: u32) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if !alive(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn a_command_that_outlives_its_timeout_is_killed_with_its_process_group() {
        let b = breach(Target::Host);
        let outcome = run(
            &command(&["/bin/sleep", "30"], Duration::from_millis(200)),
            &b,
            "a",
        )
        .unwrap();
        assert_eq!(outcome.status, ExecStatus::TimedOut);
        assert!(
            outcome.duration >= Duration::from_millis(200)
                && outcome.duration < Duration::from_secs(3),
            "{:?}",
            outcome.duration
        );

        // A shell that started a background sleep and waits: both are killed.
        let outcome = run(
            &command(
                &["/bin/sh", "-c", "/bin/sleep 30 & echo $!; wait"],
                Duration::from_millis(300),
            ),
            &b,
            "a",
        )
        .unwrap();
        assert_eq!(outcome.status, ExecStatus::TimedOut);
        let grandchild: u32 = outcome.stdout.trim().parse().unwrap();
        assert!(wait_dead(grandchild), "the background sleep survived");
    }

    #[test]
    fn what_a_command_leaves_running_ends_with_it() {
        let started = Instant::now();
        let outcome = run(
            &command(
                &["/bin/sh", "-c", "/bin/sleep 30 & echo $!"],
                Duration::from_secs(10),
            ),
            &breach(Target::Host),
            "a",
        )
        .unwrap();
        assert_eq!(outcome.status, ExecStatus::Exited(0));
        let left: u32 = outcome.stdout.trim().parse().unwrap();
        assert!(wait_dead(left), "the background sleep survived");
        // The sleep held stdout open; killing it closed the pipe, so run did not wait for it.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_program_removed_after_loading_is_refused_before_running() {
        let script = TempFile::new("#!/bin/sh\necho ran\n", 0o755);
        let action = built(
            &format!(r#"{{ type = "exec", command = ["{}"] }}"#, script.path()),
            Per::Host,
        );
        let steps = action.plan(&breach(Target::Host)).unwrap();
        let [Step::Run(cmd)] = &steps[..] else {
            panic!("{steps:?}")
        };
        // A fork elsewhere in this multi-threaded test binary may briefly hold the script's
        // write descriptor (until its exec closes it), making exec fail with ETXTBSY.
        let outcome = (0..50)
            .find_map(|_| match run(cmd, &breach(Target::Host), "a") {
                Err(ActionError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::ETXTBSY) =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                    None
                }
                other => Some(other),
            })
            .expect("the script stayed busy")
            .unwrap();
        assert_eq!(outcome.stdout, "ran\n");
        let path = script.path().to_owned();
        drop(script);
        let gone =
            format!("the program {path} cannot be used: No such file or directory (os error 2)");
        assert_eq!(
            run(cmd, &breach(Target::Host), "a")
                .unwrap_err()
                .to_string(),
            gone
        );
        assert_eq!(
            action.plan(&breach(Target::Host)).unwrap_err().to_string(),
            gone
        );
    }
}
