//! libbpf-tools' `runqlat` (Debian package libbpf-tools, installed by `./x setup`), the peer the
//! run-queue signal is checked against: started, run for a window and stopped with SIGINT as a
//! user would run it, and its histogram read.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ChildGuard, bpf_links};

pub const BINARY: &str = "/usr/sbin/runqlat";
pub const INSTALL: &str = "apt-get install -y --no-install-recommends libbpf-tools";

/// runqlat's programs, on sched_wakeup, sched_wakeup_new and sched_switch: one BPF link each.
const PROGRAMS: usize = 3;

/// One row of runqlat's histogram: the waits whose length in whole microseconds (truncated) is
/// from `low_us` to `high_us`, both included. Row k > 0 is [2^k, 2^(k+1) - 1]; row 0 is [0, 1],
/// that is waits under 2000 ns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slot {
    pub low_us: u64,
    pub high_us: u64,
    pub count: u64,
}

/// A running runqlat, killed (by its pid) if the test ends before [`Runqlat::finish`].
pub struct Runqlat {
    child: ChildGuard,
}

impl Runqlat {
    /// Starts `runqlat ARGS` and returns once its programs are attached, so that what happens
    /// afterwards is in its histogram. Err says why it cannot run: not installed, or exited
    /// without attaching (no BPF).
    pub fn start(args: &[&str]) -> Result<Self, String> {
        if !Path::new(BINARY).is_file() {
            return Err(format!(
                "{BINARY} not found: install libbpf-tools (`{INSTALL}`; `./x setup` does)"
            ));
        }
        let child = Command::new(BINARY)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {BINARY}: {e}"))?;
        let mut child = ChildGuard::new(child);
        let started = Instant::now();
        // runqlat's "Tracing..." line comes after the attach, but its stdout is a pipe and
        // buffered: count its links instead.
        while bpf_links(child.id()) < PROGRAMS {
            let exited = child.0.as_mut().expect("running").try_wait();
            if let Ok(Some(status)) = exited {
                let out = child
                    .wait_output(Duration::from_secs(1))
                    .map_err(|e| e.to_string())?;
                return Err(format!(
                    "{BINARY} {args:?} exited before attaching ({status}): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "{BINARY} {args:?} did not attach its {PROGRAMS} programs within 30 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "runqlat (pid {}) attached after {:.2?}",
            child.id(),
            started.elapsed()
        );
        Ok(Self { child })
    }

    /// SIGINT, as Ctrl-C: runqlat stops, prints its histogram of everything since it attached,
    /// and exits.
    pub fn interrupt(&self) {
        // Our own child, not yet reaped: the guard owns it.
        crate::signal_child(self.child.id(), libc::SIGINT);
    }

    /// After [`Runqlat::interrupt`]: waits for runqlat to exit and reads its histogram.
    pub fn finish(self) -> Result<Vec<Slot>, String> {
        let out = self
            .child
            .wait_output(Duration::from_secs(10))
            .map_err(|e| format!("runqlat after SIGINT: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "runqlat exited with {}: {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        parse(&stdout)
    }
}

/// Reads the histogram runqlat prints without `-m`, `-P` or `-L`: a `usecs` header, then rows
/// `LOW -> HIGH : COUNT |stars|`.
pub fn parse(text: &str) -> Result<Vec<Slot>, String> {
    if !text.lines().any(|l| l.trim_start().starts_with("usecs")) {
        return Err(format!(
            "no histogram in microseconds in runqlat's output: {text:?}"
        ));
    }
    text.lines()
        .filter(|l| l.contains("->"))
        .map(|l| {
            let row = || -> Option<Slot> {
                let (range, rest) = l.split_once(':')?;
                let (low, high) = range.split_once("->")?;
                Some(Slot {
                    low_us: low.trim().parse().ok()?,
                    high_us: high.trim().parse().ok()?,
                    count: rest.split_whitespace().next()?.parse().ok()?,
                })
            };
            row().ok_or_else(|| format!("unexpected row in runqlat's histogram: {l:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_histogram_runqlat_prints_on_sigint() {
        let text = [
            "Tracing run queue latency... Hit Ctrl-C to end.",
            "^C",
            "     usecs               : count    distribution",
            "         0 -> 1          : 985      |****************************************|",
            "         2 -> 3          : 157      |******                                  |",
            "      1024 -> 2047       : 7        |                                        |",
        ]
        .join("\n");
        let slot = |low_us, high_us, count| Slot {
            low_us,
            high_us,
            count,
        };
        assert_eq!(
            parse(&text).unwrap(),
            [slot(0, 1, 985), slot(2, 3, 157), slot(1024, 2047, 7)]
        );
        assert!(parse("     msecs : count\n 0 -> 1 : 3 |*|\n").is_err());
    }
}
