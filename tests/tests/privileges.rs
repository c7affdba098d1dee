//! Privileges: as a user without any, observer refuses to record with one clear line saying what
//! it needs (root, or CAP_BPF and CAP_PERFMON, and how to grant them with setcap), and `observer
//! check` reports the missing privileges while still checking each signal's tracepoints; with
//! only the CAP_BPF and CAP_PERFMON file capabilities (no root), check and record both work.
//!
//! The test process runs as root and drops to uid/gid 65534 with `setpriv` (util-linux). Each
//! test runs its own copy of the binary, in a fresh directory that uid 65534 can reach, so that
//! the capabilities it grants with `setcap` (libcap2-bin) never touch the binary under test.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use observer_tests::{ChildGuard, SIGNAL_KEYS, SIGNALS, observer, require_root, skip_or_fail};

/// The unprivileged user the tests run observer as (`nobody` on Debian).
const NOBODY: &str = "65534";

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Finds a tool on PATH or in the sbin directories (which a test's PATH may lack).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether uid 65534 can reach entries of `dir`: every directory from the root down to it must
/// be searchable by others.
fn reachable_by_others(dir: &Path) -> bool {
    dir.ancestors().all(|d| {
        std::fs::metadata(d).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
    })
}

/// Whether the filesystem holding `dir` is mounted nosuid, where the kernel ignores file
/// capabilities.
fn on_nosuid_mount(dir: &Path) -> bool {
    let c = CString::new(dir.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: statvfs is plain old data, for which all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid statvfs to write into.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_flag & libc::ST_NOSUID != 0
}

/// A directory that is removed with everything in it when the test ends, however it ends.
struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory, mode 0755, in the first candidate temporary directory that uid
    /// 65534 can reach and whose mount honours file capabilities.
    fn create() -> Result<Self, String> {
        let candidates = [
            std::env::temp_dir(),
            PathBuf::from("/var/tmp"),
            PathBuf::from("/tmp"),
        ];
        let base = candidates
            .iter()
            .find(|d| reachable_by_others(d) && !on_nosuid_mount(d))
            .ok_or_else(|| {
                format!(
                    "none of {candidates:?} is both reachable by uid {NOBODY} and on a mount \
                     without nosuid (where file capabilities work)"
                )
            })?;
        let dir = base.join(observer_tests::unique_name("observer-privileges"));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let guard = Self(dir);
        std::fs::set_permissions(&guard.0, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot chmod {}: {e}", guard.0.display()))?;
        Ok(guard)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("cannot remove {}: {e}", self.0.display());
        }
    }
}

/// A private copy of the binary under test, executable by uid 65534, optionally with the
/// CAP_BPF and CAP_PERFMON file capabilities. Removed (with its directory) on drop.
struct BinCopy {
    path: PathBuf,
    _dir: TempDir,
}

impl BinCopy {
    fn new(setcap: Option<&Path>) -> Result<Self, String> {
        let src = observer::bin();
        if !src.exists() {
            return Err(format!(
                "observer binary not found at {} (build it with `cargo build -p observer`, or set OBSERVER_BIN)",
                src.display()
            ));
        }
        let dir = TempDir::create()?;
        let path = dir.0.join("observer");
        std::fs::copy(&src, &path)
            .map_err(|e| format!("cannot copy {} to {}: {e}", src.display(), path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
        if let Some(setcap) = setcap {
            observer_tests::run_ok(
                Command::new(setcap)
                    .arg("cap_bpf,cap_perfmon+ep")
                    .arg(&path),
            )
            .map_err(|e| format!("cannot grant the capabilities: {e}"))?;
        }
        Ok(Self { path, _dir: dir })
    }
}

/// The command that runs `program args` as uid/gid 65534 with no supplementary groups and no
/// inherited or ambient capabilities (only file capabilities can give it any), from `/`, with
/// backtraces enabled so that a normal error that prints one shows up.
fn as_nobody(setpriv: &Path, program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(setpriv);
    cmd.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
        .args(["--inh-caps=-all", "--ambient-caps=-all"])
        .arg(program)
        .args(args)
        .current_dir("/")
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `program args` as uid 65534 (see [`as_nobody`]) to completion, within 60 s.
fn run_as_nobody(setpriv: &Path, program: &Path, args: &[&str]) -> Output {
    let start = Instant::now();
    let child = as_nobody(setpriv, program, args)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", setpriv.display()));
    let out = ChildGuard::new(child)
        .wait_output(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{} {args:?} as uid {NOBODY}: {e}", program.display()));
    eprintln!(
        "{} {args:?} as uid {NOBODY} took {:.2?} ({})\nstdout:\n{}\nstderr:\n{}",
        program.display(),
        start.elapsed(),
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

/// Checks that setpriv really leaves the process as uid/gid 65534 with no capability at all, so
/// that what observer reports below is what an unprivileged user sees.
fn assert_setpriv_drops_everything(setpriv: &Path) {
    let out = run_as_nobody(setpriv, Path::new("/bin/cat"), &["/proc/self/status"]);
    assert!(out.status.success(), "setpriv failed: {}", stderr(&out));
    let status = stdout(&out);
    let field = |name: &str| -> Vec<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status: {status}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    for f in ["Uid:", "Gid:"] {
        assert!(
            field(f).iter().all(|id| id == NOBODY),
            "setpriv did not switch every id to {NOBODY}: {f} {:?}",
            field(f)
        );
    }
    assert!(field("Groups:").is_empty(), "setpriv left groups");
    for f in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
        assert!(
            field(f)
                .iter()
                .all(|v| v.trim_start_matches('0').is_empty()),
            "the process has capabilities after setpriv: {f} {:?}",
            field(f)
        );
    }
}

/// stderr shows no panic and no backtrace.
fn assert_no_panic(what: &str, err: &str) {
    let lower = err.to_lowercase();
    for p in ["panicked", "backtrace", "rust_backtrace", "stack backtrace"] {
        assert!(
            !lower.contains(p),
            "{what}: stderr shows a panic ({p:?}): {err}"
        );
    }
}

/// Finds the setpriv and setcap tools, failing (or skipping where allowed) without them.
macro_rules! tools {
    () => {{
        let Some(setpriv) = find_tool("setpriv") else {
            skip_or_fail!("setpriv not found: install util-linux");
        };
        let Some(setcap) = find_tool("setcap") else {
            skip_or_fail!("setcap not found: install libcap2-bin");
        };
        (setpriv, setcap)
    }};
}

/// An unprivileged `record` is refused before anything is recorded: non-zero exit, nothing on
/// stdout, and exactly one line on stderr naming what is needed (root, or CAP_BPF and
/// CAP_PERFMON) and how to grant it (setcap), with no panic or backtrace even though
/// RUST_BACKTRACE=1.
#[test]
fn unprivileged_record_is_refused_with_one_line_naming_what_is_needed() {
    require_root!();
    let (setpriv, _) = tools!();
    assert_setpriv_drops_everything(&setpriv);
    let bin = BinCopy::new(None).unwrap_or_else(|e| panic!("{e}"));
    for args in [
        &["record", "-d", "1"][..],
        &["record", "--duration", "10s", "--format", "json"][..],
    ] {
        let t = Instant::now();
        let out = run_as_nobody(&setpriv, &bin.path, args);
        let took = t.elapsed();
        let err = stderr(&out);
        assert!(
            !out.status.success(),
            "unprivileged observer {args:?} exited 0; stdout: {}; stderr: {err}",
            stdout(&out)
        );
        assert!(
            out.status.code().is_some(),
            "unprivileged observer {args:?} was killed by a signal ({}): {err}",
            out.status
        );
        assert!(
            stdout(&out).is_empty(),
            "unprivileged observer {args:?} printed on stdout: {}",
            stdout(&out)
        );
        assert_no_panic(&format!("observer {args:?}"), &err);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "unprivileged observer {args:?} should print exactly one line on stderr: {err}"
        );
        let line = lines[0];
        assert!(
            line.starts_with("observer: "),
            "the message does not start with \"observer: \": {line}"
        );
        for word in ["CAP_BPF", "CAP_PERFMON", "root", "setcap"] {
            assert!(
                line.contains(word),
                "the message does not name {word}: {line}"
            );
        }
        assert!(
            took < Duration::from_secs(5),
            "refusing took {took:?}: observer should refuse before recording"
        );
    }
}

/// An unprivileged `check` exits 1, reports the missing privileges (naming CAP_BPF and
/// CAP_PERFMON) and still lists every signal as `ok?`: tracepoints and struct fields present,
/// loading not tried.
#[test]
fn unprivileged_check_exits_1_reporting_missing_privileges_and_every_signal() {
    require_root!();
    let (setpriv, _) = tools!();
    assert_setpriv_drops_everything(&setpriv);
    let bin = BinCopy::new(None).unwrap_or_else(|e| panic!("{e}"));
    let out = run_as_nobody(&setpriv, &bin.path, &["check"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        out.status.code(),
        Some(1),
        "unprivileged observer check should exit 1: {text}"
    );
    assert_no_panic("observer check", &stderr(&out));
    let privileges = text
        .lines()
        .find(|l| l.starts_with("privileges:"))
        .unwrap_or_else(|| panic!("no privileges: line in: {text}"));
    assert!(
        privileges.starts_with("privileges: MISSING"),
        "privileges not reported missing: {privileges}"
    );
    for word in ["CAP_BPF", "CAP_PERFMON"] {
        assert!(
            privileges.contains(word),
            "the privileges line does not name {word}: {privileges}"
        );
    }
    for s in SIGNALS {
        let status = signal_status(&text, s);
        assert_eq!(
            status, "ok?",
            "unprivileged check: signal {s} should be ok? (present, loading not tried): {text}"
        );
    }
}

/// The status word on `check`'s line for signal `name` (`<name>  <status>  <description>`).
fn signal_status<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next().unwrap_or(""))
        })
        .unwrap_or_else(|| panic!("observer check has no line for signal {name}: {text}"))
}

/// Whether observer can load its programs as root; when not, the machine cannot run BPF and a
/// capability-only failure says nothing about observer.
fn check_as_root() -> Result<(), String> {
    let out = observer::run(&["check"]);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "observer check as root exited {}: {}{}",
            out.status,
            stdout(&out),
            stderr(&out)
        ))
    }
}

/// With only the CAP_BPF and CAP_PERFMON file capabilities, as uid 65534, `check` exits 0 with
/// `privileges: ok` and every signal `ok`.
#[test]
fn check_with_only_capabilities_passes() {
    require_root!();
    let (setpriv, setcap) = tools!();
    let bin = BinCopy::new(Some(&setcap)).unwrap_or_else(|e| panic!("{e}"));
    let out = run_as_nobody(&setpriv, &bin.path, &["check"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    if !out.status.success() {
        if let Err(e) = check_as_root() {
            skip_or_fail!("BPF does not work on this machine: {e}");
        }
        panic!(
            "observer check with CAP_BPF and CAP_PERFMON only exited {} (it passes as root): {text}",
            out.status
        );
    }
    assert_no_panic("observer check", &stderr(&out));
    assert!(
        text.lines().any(|l| l.trim() == "privileges: ok"),
        "no `privileges: ok` line: {text}"
    );
    for s in SIGNALS {
        assert_eq!(
            signal_status(&text, s),
            "ok",
            "signal {s} not ok with the capabilities: {text}"
        );
    }
}

/// With only the CAP_BPF and CAP_PERFMON file capabilities, as uid 65534, `record --format json`
/// records every signal, with no errors.
#[test]
fn record_with_only_capabilities_reports_every_signal() {
    require_root!();
    let (setpriv, setcap) = tools!();
    let bin = BinCopy::new(Some(&setcap)).unwrap_or_else(|e| panic!("{e}"));
    let out = run_as_nobody(
        &setpriv,
        &bin.path,
        &["record", "-d", "1", "--format", "json"],
    );
    if !out.status.success() {
        if let Err(e) = check_as_root() {
            skip_or_fail!("BPF does not work on this machine: {e}");
        }
        panic!(
            "observer record with CAP_BPF and CAP_PERFMON only exited {} (check passes as root): {}",
            out.status,
            stderr(&out)
        );
    }
    assert_no_panic("observer record", &stderr(&out));
    let text = stdout(&out);
    let json: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("observer record did not print one JSON object ({e}): {text}"));
    let report = observer_tests::Report::new(json, Duration::from_secs(1));
    report.assert_all_signals("signals recorded with the capabilities");
    for k in SIGNAL_KEYS {
        report.signal(k);
    }
}

/// Least privilege: once `observer run` has attached its programs, it keeps only the
/// capabilities the rest of the run needs (cgroup naming by file handle, with this
/// configuration), in every set including the bounding set, and still collects and serves.
#[test]
fn the_agent_drops_capabilities_after_attaching() {
    observer_tests::require_root!();
    let dir = std::env::temp_dir().join(observer_tests::unique_name("observer-caps"));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut guard = observer_tests::ChildGuard::new(
        observer_tests::observer::command()
            .args(["-v", "run", "--interval", "1s", "--signals", "runqueue"])
            .args(["--prometheus-listen", "127.0.0.1:0", "--socket", ""])
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let guard_pid = guard.id();
    let child = guard.0.as_mut().unwrap();
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&log_path)
        .unwrap()
        .contains("collecting")
    {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "exited {status}: {}",
                std::fs::read_to_string(&log_path).unwrap()
            );
        }
        assert!(start.elapsed().as_secs() < 30);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = std::fs::read_to_string(format!("/proc/{guard_pid}/status")).unwrap();
    let field = |name: &str| {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim();
        u64::from_str_radix(hex, 16).unwrap()
    };
    const DAC_READ_SEARCH: u64 = 1 << 2;
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(field(set), DAC_READ_SEARCH, "{set} in {status}");
    }
    assert_eq!(field("CapInh:"), 0);
    assert_eq!(field("CapAmb:"), 0);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("; capabilities after attaching: CAP_DAC_READ_SEARCH\n"),
        "{log}"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(guard_pid as libc::pid_t, libc::SIGTERM) };
    assert!(
        child.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(&log_path).unwrap()
    );
    std::fs::remove_dir_all(dir).unwrap();
}
