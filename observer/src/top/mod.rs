//! `observer top`: a live terminal view of every signal. A collector thread reads the kernel's
//! maps once per interval and sends reports over a channel; the UI thread owns all state
//! ([`app::App`]), handles keys and draws with a pure function ([`view::render`]).
//!
//! The programs are loaded by this process (reading from a running agent is not done yet).

pub mod app;
pub mod view;

use std::{
    io::{self, IsTerminal as _, Stdout},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, Receiver, Sender, TryRecvError},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor::{Hide, Show},
        event::{self, Event, KeyEventKind},
        execute,
        terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
    },
};

use crate::{
    check, ebpf,
    ebpf::Loaded,
    record::{Deltas, Reports, Snapshot},
    scope::Scope,
    signals::{Breakdowns, ReportOptions, Signal},
};
use app::{Action, App, Update};

/// Rows kept per breakdown: more than fit on screen, so sorting by p50/p99 has some to choose
/// from (the kernel's reports keep the top rows by count).
const TOP: usize = 50;
/// How long the UI waits for a key before looking at the channel and signals again.
const TICK: Duration = Duration::from_millis(100);

/// `scope`: restrict every signal to that cgroup subtree (`--cgroup`).
pub fn run(interval: Duration, signals: &[Signal], scope: Option<&Scope>) -> anyhow::Result<()> {
    if !io::stdout().is_terminal() {
        bail!(
            "observer top needs a terminal; use `observer record` for a one-shot measurement \
             (text or JSON)"
        );
    }
    check::privileges()?;
    let loaded = ebpf::load_scoped(signals, &Breakdowns::ALL, scope)?;
    if loaded.running().next().is_none() {
        bail!("none of the requested signals can run here; `observer check -v` says why");
    }
    let statuses = loaded
        .status
        .iter()
        .map(|(s, r)| (*s, r.as_ref().err().map(ToString::to_string)))
        .collect();
    let mut app = App::new(statuses, interval);
    app.scope = loaded.scope.clone();
    let interval_ms = Arc::new(AtomicU64::new(app.interval.as_millis() as u64));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let collector = {
        let (interval_ms, stop) = (Arc::clone(&interval_ms), Arc::clone(&stop));
        thread::Builder::new()
            .name("top-collector".into())
            .spawn(move || collect(loaded, &interval_ms, &stop, &tx))
            .context("starting the collector thread")?
    };
    catch_termination().context("installing signal handlers")?;
    let result = Screen::enter()
        .context("setting up the terminal")
        .and_then(|mut screen| ui(&mut screen.terminal, &mut app, &rx, &interval_ms));
    stop.store(true, Ordering::Relaxed);
    // A collector that panicked has already said why (the panic hook restored the terminal).
    let _ = collector.join();
    result
}

/// Reads the maps every interval and sends what happened in it, until `stop` or the UI is gone.
fn collect(
    mut loaded: Loaded,
    interval_ms: &AtomicU64,
    stop: &AtomicBool,
    tx: &Sender<Result<Update, String>>,
) {
    let opts = ReportOptions {
        top: TOP,
        by: Breakdowns::ALL,
    };
    let mut prev = match Snapshot::read(&loaded) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Err(format!("reading the kernel's maps: {e}")));
            return;
        }
    };
    let mut at = Instant::now();
    loop {
        // Short sleeps, so that quitting and a changed interval take effect promptly.
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let deadline = at + Duration::from_millis(interval_ms.load(Ordering::Relaxed));
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            thread::sleep(left.min(Duration::from_millis(50)));
        }
        let mut cur = match Snapshot::read(&loaded) {
            Ok(s) => s,
            Err(e) => {
                // Maybe transient: say so, and try again next interval from the same start.
                if tx
                    .send(Err(format!("reading the kernel's maps: {e}")))
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        let now = Instant::now();
        let reports = Reports::of(&Deltas::between(&cur, &prev), &opts);
        // Otherwise the bounded per-process maps fill with exited processes over a long
        // session, and new ones go unattributed.
        if let Err(e) = cur.forget_exited(&mut loaded.ebpf) {
            tracing::debug!("forgetting exited processes: {e}");
        }
        let update = Update {
            reports,
            elapsed: now - at,
        };
        if tx.send(Ok(update)).is_err() {
            return;
        }
        (prev, at) = (cur, now);
    }
}

fn ui(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    app: &mut App,
    rx: &Receiver<Result<Update, String>>,
    interval_ms: &AtomicU64,
) -> anyhow::Result<()> {
    loop {
        if TERMINATED.load(Ordering::Relaxed) {
            return Ok(());
        }
        loop {
            match rx.try_recv() {
                Ok(Ok(update)) => app.update(update),
                Ok(Err(e)) => app.fail(e),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => bail!("the collector thread stopped"),
            }
        }
        terminal.draw(|frame| view::render(app, frame))?;
        if !event::poll(TICK)? {
            continue;
        }
        if let Event::Key(key) = event::read()?
            && key.kind == KeyEventKind::Press
        {
            if app.key(key) == Action::Quit {
                return Ok(());
            }
            interval_ms.store(app.interval.as_millis() as u64, Ordering::Relaxed);
        }
    }
}

/// The terminal in raw mode on the alternate screen, restored when dropped (on return and on
/// error) and by a panic hook (on panic, also with panic = "abort", where nothing is dropped).
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    fn enter() -> io::Result<Self> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        enable_raw_mode()?;
        // From here on, a failure must restore what was already changed: the guard does it.
        let mut screen = Self {
            terminal: Terminal::new(CrosstermBackend::new(io::stdout()))?,
        };
        execute!(screen.terminal.backend_mut(), EnterAlternateScreen, Hide)?;
        screen.terminal.clear()?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode and the alternate screen and shows the cursor; best effort, since it runs
/// while already failing or quitting.
fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
}

/// Set by SIGTERM, SIGHUP or SIGINT: the UI loop then returns normally, so the terminal is
/// restored instead of the process dying in raw mode.
static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    TERMINATED.store(true, Ordering::Relaxed);
}

fn catch_termination() -> io::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        // SAFETY: a zeroed sigaction with an empty mask and a handler that only stores to an
        // atomic, which is async-signal-safe.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
