//! Helpers shared by the end-to-end tests: running `observer record` around a load, checking the
//! shape and internal consistency of its JSON report, and RAII guards for what the tests create
//! (loop devices, network namespaces) so they are removed even when a test fails.
//!
//! Every test must run as root with BPF available. A test that cannot run fails, except that a
//! developer may opt in to skipping: with `CI` unset and `OBSERVER_TESTS_ALLOW_SKIP=1`, a test
//! that cannot run prints `SKIPPED: <reason>` to stderr and returns.

pub mod agent;
pub mod blockdev;
pub mod cgroup;
pub mod hist;
pub mod kubelet;
pub mod netns;
pub mod observer;
pub mod prom;
pub mod report;
pub mod rotel;
pub mod runqlat;
pub mod tls;

pub use observer::{Exited, Recording};
pub use report::{Bucket, Report, SIGNAL_KEYS, SIGNALS, Summary};

/// Whether a test that cannot run may skip instead of failing (never under CI).
pub fn skip_allowed() -> bool {
    std::env::var_os("CI").is_none()
        && std::env::var("OBSERVER_TESTS_ALLOW_SKIP").is_ok_and(|v| v == "1")
}

/// Fails the test with the reason, or (where [`skip_allowed`]) prints `SKIPPED: <reason>` to
/// stderr and returns from the calling test.
#[macro_export]
macro_rules! skip_or_fail {
    ($($arg:tt)*) => {{
        let reason = format!($($arg)*);
        if $crate::skip_allowed() {
            $crate::report_skip(&reason);
            return;
        }
        panic!("{reason}");
    }};
}

/// Every test starts with this: the tests need root (BPF, loop devices, network namespaces).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            $crate::skip_or_fail!(
                "these end-to-end tests must run as root (effective uid is {})",
                // SAFETY: geteuid has no preconditions.
                unsafe { libc::geteuid() }
            );
        }
    };
}

/// Unwraps the result of running observer; when observer itself exited non-zero (no BPF, no BTF,
/// not root...), the test fails, or skips where [`skip_allowed`].
#[macro_export]
macro_rules! observer_ok {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(exited) => $crate::skip_or_fail!("{exited}"),
        }
    };
}

/// Prints `SKIPPED: <reason>` straight to the process's stderr, so that it shows even where the
/// test harness captures a passing test's output.
pub fn report_skip(reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {reason}");
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// BPF links a process holds: one per attached program (0 once it has exited).
pub fn bpf_links(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy() == "anon_inode:bpf_link")
                .count()
        })
        .unwrap_or(0)
}

/// Sends `sig` to `pid`, a child of this test that it has not reaped (so the pid is still that
/// child's), and fails if kill(2) does.
pub fn signal_child(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid the caller owns, see above.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Path of the load-generator binary built from this crate (see src/bin/loadgen.rs). Only
/// integration tests get `CARGO_BIN_EXE_*`, so they pass it in.
pub fn loadgen_cmd(exe: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(exe);
    cmd.stdin(std::process::Stdio::null());
    cmd
}

/// Runs the load generator `exe` with `args` to completion (at most 30 s) and returns its
/// process id, which is the tgid its events are attributed to, with its output; fails if it
/// does not succeed.
pub fn run_loadgen(exe: &str, args: &[&str]) -> (u64, std::process::Output) {
    let child = loadgen_cmd(exe)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start load generator");
    let child = ChildGuard::new(child);
    let tgid = u64::from(child.id());
    let out = child
        .wait_output(std::time::Duration::from_secs(30))
        .expect("load generator");
    assert!(out.status.success(), "load generator failed: {out:?}");
    (tgid, out)
}

/// Runs a command to completion and fails with its output when it does not succeed.
pub fn run_ok(cmd: &mut std::process::Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{:?} failed ({}): {}{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A name that is unique to this test process and call, for files and namespaces we create.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A child process that is killed (by its pid, and only it) if the test ends before it exits.
pub struct ChildGuard(pub Option<std::process::Child>);

impl ChildGuard {
    pub fn new(child: std::process::Child) -> Self {
        Self(Some(child))
    }
    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("child already taken").id()
    }
    /// Waits for the child to exit by itself, for at most `timeout`; kills it then.
    pub fn wait_output(
        mut self,
        timeout: std::time::Duration,
    ) -> anyhow::Result<std::process::Output> {
        let mut child = self.0.take().expect("child already taken");
        let start = std::time::Instant::now();
        loop {
            if child.try_wait()?.is_some() {
                return Ok(child.wait_with_output()?);
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let out = child.wait_with_output()?;
                anyhow::bail!(
                    "child did not exit within {timeout:?}; killed it. stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
