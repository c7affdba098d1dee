//! Running the `observer` binary under test.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::report::Report;

/// The binary under test: `$OBSERVER_BIN` (set by the xtask runner), else
/// `<workspace>/target/debug/observer`.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OBSERVER_BIN") {
        return PathBuf::from(p);
    }
    let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| ws.join("target"), PathBuf::from);
    target.join("debug").join("observer")
}

/// A `Command` for the binary under test, failing the test with a clear message if it is absent.
pub fn command() -> Command {
    let bin = bin();
    assert!(
        bin.exists(),
        "observer binary not found at {} (build it with `cargo build -p observer`, or set OBSERVER_BIN)",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs observer with `args` to completion (for quick commands: check, bad input).
pub fn run(args: &[&str]) -> std::process::Output {
    let mut cmd = command();
    cmd.args(args);
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin().display()));
    let out = crate::ChildGuard::new(child)
        .wait_output(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("observer {args:?}: {e}"));
    eprintln!(
        "observer {args:?} took {:.2?} ({})",
        start.elapsed(),
        out.status
    );
    out
}

/// observer exited non-zero: the environment cannot run it (or observer has a bug). The test
/// fails on this, or skips where the developer opted in (see [`crate::skip_allowed`]).
#[derive(Debug)]
pub struct Exited {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stderr: String,
}

impl std::fmt::Display for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "observer {:?} exited with {}: {}",
            self.args,
            self.status,
            self.stderr.trim()
        )
    }
}

/// One `observer record` running in the background while a test creates a condition.
pub struct Recording {
    args: Vec<String>,
    child: Option<Child>,
    duration: Duration,
    started: Instant,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
}

/// Parses a `--duration` value the way the spec defines it (only what the tests pass).
fn parse_duration(s: &str) -> Duration {
    if let Some(ms) = s.strip_suffix("ms") {
        Duration::from_millis(ms.parse().expect("duration"))
    } else if let Some(m) = s.strip_suffix('m') {
        Duration::from_secs(60 * m.parse::<u64>().expect("duration"))
    } else {
        Duration::from_secs_f64(s.trim_end_matches('s').parse().expect("duration"))
    }
}

impl Recording {
    /// Starts `observer record --format json <args>`. `args` must include `--duration`.
    pub fn start(args: &[&str]) -> Self {
        Self::start_format("json", args)
    }

    /// Starts `observer record --format <format> <args>`. `args` must include `--duration`.
    pub fn start_format(format: &str, args: &[&str]) -> Self {
        let pos = args
            .iter()
            .position(|a| *a == "--duration")
            .expect("tests always pass --duration");
        let duration = parse_duration(args[pos + 1]);
        let mut full = vec!["record".to_string(), "--format".into(), format.into()];
        full.extend(args.iter().map(|s| s.to_string()));
        let mut cmd = command();
        cmd.args(&full)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin().display()));
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            buf
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        eprintln!("started observer {full:?} (pid {})", child.id());
        Self {
            args: full,
            child: Some(child),
            duration,
            started: Instant::now(),
            stdout: Some(stdout),
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until observer has attached its programs, so that a condition created afterwards is
    /// inside the recording. observer prints nothing until the end, so this watches its open BPF
    /// links (one per attached program): ready when at least one exists and their number has not
    /// changed for 500 ms, plus a 300 ms margin for reading its starting counters.
    ///
    /// Returns `Err` when observer exited (it could not run); panics when it neither attaches
    /// nor exits within 30 s.
    pub fn wait_attached(mut self) -> Result<Self, Exited> {
        let mut last = 0;
        let mut stable_since = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                return Err(self.exited(status));
            }
            let n = crate::bpf_links(self.pid());
            if n != last {
                last = n;
                stable_since = Instant::now();
            } else if n > 0 && stable_since.elapsed() >= Duration::from_millis(500) {
                break;
            }
            if self.started.elapsed() > Duration::from_secs(30) {
                panic!(
                    "observer {:?} did not attach any BPF program within 30 s (links held: {n}); stderr: {}",
                    self.args,
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        eprintln!(
            "observer attached {last} BPF links after {:.2?}",
            self.started.elapsed()
        );
        Ok(self)
    }

    /// Time left before observer's `--duration` is over, counted from when it was started (an
    /// upper bound: its recording starts after loading).
    pub fn remaining(&self) -> Duration {
        self.duration.saturating_sub(self.started.elapsed())
    }

    fn exited(&mut self, status: ExitStatus) -> Exited {
        if let Some(h) = self.stderr_reader.take() {
            let _ = h.join();
        }
        Exited {
            args: self.args.clone(),
            status,
            stderr: self.stderr_text(),
        }
    }

    /// Waits for observer to finish and parses its one JSON object.
    pub fn finish(self) -> Result<Report, Exited> {
        let duration = self.duration;
        let stdout = self.finish_raw()?;
        Ok(Report::new(json_object(&stdout), duration))
    }

    /// Stops the recording now with SIGINT, as Ctrl-C does, and parses its report: what it
    /// measured over the time it actually ran (`duration_s`), less than its `--duration`.
    pub fn interrupt(self) -> Result<Report, Exited> {
        let duration = self.duration;
        // Our own child, not yet reaped: self owns it until finish_raw.
        crate::signal_child(self.pid(), libc::SIGINT);
        let json = json_object(&self.finish_raw()?);
        let ran = json["duration_s"].as_f64().unwrap_or(f64::NAN);
        assert!(
            ran > 0.0 && ran <= duration.as_secs_f64(),
            "interrupted with duration {duration:?}, report says it ran {ran} s: {json}"
        );
        Ok(Report { json })
    }

    /// Waits for observer to finish and returns what it printed on stdout.
    pub fn finish_raw(mut self) -> Result<String, Exited> {
        let deadline = self.duration + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                break status;
            }
            if self.started.elapsed() > deadline {
                panic!(
                    "observer {:?} still running {deadline:?} after start (duration {:?}); stderr: {}",
                    self.args,
                    self.duration,
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let elapsed = self.started.elapsed();
        let stdout = self.stdout.take().unwrap().join().unwrap();
        if !status.success() {
            return Err(self.exited(status));
        }
        if let Some(h) = self.stderr_reader.take() {
            let _ = h.join();
        }
        let stdout = String::from_utf8(stdout).expect("observer's stdout is UTF-8");
        eprintln!(
            "observer {:?} finished after {elapsed:.2?}; stderr: {:?}",
            self.args,
            self.stderr_text()
        );
        Ok(stdout)
    }
}

fn json_object(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("observer --format json did not print one JSON object ({e}): {stdout:?}")
    })
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
