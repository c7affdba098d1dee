//! `observer top` in a real terminal: tmux runs it under scheduler load, and the test reads the
//! screen with `capture-pane`, presses keys and checks that `q` leaves the terminal intact.

use std::{
    process::Command,
    thread::sleep,
    time::{Duration, Instant},
};

use observer_tests::{observer, require_root, skip_or_fail, unique_name};

const LOADGEN: &str = env!("CARGO_BIN_EXE_observer-loadgen");

/// A detached tmux session, killed (by its name, only it) when the test ends.
struct Session(String);

impl Session {
    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run tmux {args:?}: {e}"))
    }

    fn capture(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-t", &self.0]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        self.tmux(&["send-keys", "-t", &self.0, keys]);
    }

    /// Waits until the screen satisfies `ok`, and returns it (or the last one seen).
    fn wait_for(&self, timeout: Duration, ok: impl Fn(&str) -> bool) -> (bool, String) {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if ok(&screen) || start.elapsed() > timeout {
                return (ok(&screen), screen);
            }
            sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

/// The run-queue row of the summary: `1 runqueue <events/s> <p50> <p99> ...`.
fn runqueue_row(screen: &str) -> Option<Vec<String>> {
    screen.lines().find(|l| l.contains("1 runqueue")).map(|l| {
        l.trim_matches(|c: char| c == '│' || c.is_whitespace())
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    })
}

fn has_unit(s: &str) -> bool {
    ["ns", "us", "ms", "s"].iter().any(|u| s.ends_with(u))
        && s.starts_with(|c: char| c.is_ascii_digit())
}

#[test]
fn top_shows_live_runqueue_load_switches_views_and_quits_cleanly() {
    require_root!();
    if Command::new("tmux").arg("-V").output().is_err() {
        skip_or_fail!("tmux is not installed (apt-get install tmux)");
    }
    let bin = observer::bin();
    assert!(
        bin.exists(),
        "observer binary not found at {}",
        bin.display()
    );
    let session = Session(unique_name("observer-top"));
    // After observer exits, the shell prints the terminal's width and a marker: proof that the
    // terminal works again (raw mode off, main screen back) and how observer exited.
    let script = format!(
        "{} top --interval 1s; echo \"exit=$?\"; stty -a | grep -o -- '-\\?icanon' ; echo done; sleep 30",
        bin.display()
    );
    let out = session.tmux(&[
        "new-session",
        "-d",
        "-x",
        "120",
        "-y",
        "40",
        "-s",
        &session.0,
        &script,
    ]);
    assert!(out.status.success(), "tmux new-session: {out:?}");

    let load = observer_tests::loadgen_cmd(LOADGEN)
        .args(["sched", "8"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start load generator");
    let _load = observer_tests::ChildGuard::new(load);

    let (ok, screen) = session.wait_for(Duration::from_secs(15), |s| {
        runqueue_row(s).is_some_and(|r| {
            r.len() >= 5 && r[2].parse::<f64>().is_ok_and(|v| v > 0.0) && has_unit(&r[4])
        })
    });
    eprintln!("{screen}");
    if !ok && screen.contains("observer:") {
        skip_or_fail!("observer top could not start: {screen}");
    }
    assert!(ok, "no run-queue rate and p99 on screen:\n{screen}");
    assert!(
        screen.contains("programs loaded by this process"),
        "{screen}"
    );
    assert!(screen.contains("by processes"), "{screen}");

    session.keys("2");
    let (ok, screen) = session.wait_for(Duration::from_secs(5), |s| {
        s.contains("blockio histogram") && s.contains("disks x ops")
    });
    assert!(ok, "2 did not switch to blockio:\n{screen}");
    session.keys("5");
    let (ok, screen) = session.wait_for(Duration::from_secs(5), |s| s.contains("futex histogram"));
    assert!(ok, "5 did not switch to futex:\n{screen}");
    session.keys("?");
    let (ok, screen) = session.wait_for(Duration::from_secs(5), |s| s.contains("pause / resume"));
    assert!(ok, "? did not show the help:\n{screen}");
    session.keys("Escape");

    session.keys("q");
    let (ok, screen) = session.wait_for(Duration::from_secs(10), |s| s.contains("done"));
    eprintln!("{screen}");
    assert!(ok, "observer top did not exit on q:\n{screen}");
    assert!(screen.contains("exit=0"), "observer top failed:\n{screen}");
    // Canonical mode is back on (raw mode turns it off), and the UI is gone from the screen.
    assert!(
        screen.lines().any(|l| l.trim() == "icanon"),
        "terminal left in raw mode:\n{screen}"
    );
    assert!(
        !screen.contains("p99 history"),
        "alternate screen not left:\n{screen}"
    );
}

#[test]
fn top_without_a_terminal_points_to_record() {
    require_root!();
    let out = observer::run(&["top"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "observer top succeeded without a terminal"
    );
    assert!(
        stderr.contains("needs a terminal") && stderr.contains("observer record"),
        "{stderr}"
    );
}
