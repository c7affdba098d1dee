//! `observer top`: a live terminal view of every signal. A collector thread sends one update
//! per interval over a channel; the UI thread owns all state ([`app::App`]), handles keys and
//! draws with a pure function ([`view::render`]).
//!
//! The numbers come from a running agent when there is one: `top` connects to its socket
//! ([`crate::agent::socket`]), which sends the samples of every interval. Otherwise (or with
//! `--local`) this process loads the programs and reads the kernel's maps itself. Either way the
//! samples are made by [`local::samples`] from the deltas between two reads.

pub mod app;
pub mod local;
pub mod view;

use std::{
    io::{self, IsTerminal as _, Stdout},
    net::Shutdown,
    path::PathBuf,
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
    agent::socket::{Connection, Hello},
    check, ebpf,
    ebpf::Loaded,
    record::{Deltas, Snapshot},
    scope::Scope,
    signals::{Breakdowns, Signal},
};
use app::{Action, App, Source, Update};

/// How long the UI waits for a key before looking at the channel and signals again.
const TICK: Duration = Duration::from_millis(100);

/// What `observer top` was asked for.
pub struct Options {
    /// The refresh interval when this process loads the programs.
    pub interval: Duration,
    pub signals: Vec<Signal>,
    /// The agent's socket: read from it when an agent is there.
    pub socket: PathBuf,
    /// Always load the programs in this process, even with an agent running.
    pub local: bool,
    /// Restrict every signal to this cgroup subtree (`--cgroup`): loads the programs in this
    /// process, as `local`.
    pub scope: Option<Scope>,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    if !io::stdout().is_terminal() {
        bail!(
            "observer top needs a terminal; use `observer record` for a one-shot measurement \
             (text or JSON)"
        );
    }
    let agent = if opts.local || opts.scope.is_some() {
        None
    } else {
        Connection::connect(&opts.socket)?
    };
    let stop = Arc::new(AtomicBool::new(false));
    // The refresh interval, which `+`/`-` change while the collector runs.
    let interval_ms = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    let (mut app, collector, closer) = match agent {
        Some(connection) => {
            let app = agent_app(&connection.hello, &opts.signals, &opts.socket)?;
            // Shutting the socket down at the end wakes the reader blocked on it.
            let closer = connection
                .closer()
                .context("preparing the agent connection")?;
            let collector = thread::Builder::new()
                .name("top-agent".into())
                .spawn(move || follow(connection, &tx))
                .context("starting the reader thread")?;
            (app, collector, Some(closer))
        }
        None => {
            check::privileges()?;
            let loaded = ebpf::load_scoped(&opts.signals, &Breakdowns::ALL, opts.scope.as_ref())?;
            if loaded.running().next().is_none() {
                bail!("none of the requested signals can run here; `observer check -v` says why");
            }
            let statuses = loaded
                .status
                .iter()
                .map(|(s, r)| (*s, r.as_ref().err().map(ToString::to_string)))
                .collect();
            let mut app = App::new(statuses, opts.interval, Source::Local);
            app.scope = loaded.scope.clone();
            interval_ms.store(app.interval.as_millis() as u64, Ordering::Relaxed);
            let (interval_ms, stop) = (Arc::clone(&interval_ms), Arc::clone(&stop));
            let collector = thread::Builder::new()
                .name("top-collector".into())
                .spawn(move || collect(loaded, &interval_ms, &stop, &tx))
                .context("starting the collector thread")?;
            (app, collector, None)
        }
    };
    catch_termination().context("installing signal handlers")?;
    let result = Screen::enter()
        .context("setting up the terminal")
        .and_then(|mut screen| ui(&mut screen.terminal, &mut app, &rx, &interval_ms));
    stop.store(true, Ordering::Relaxed);
    if let Some(closer) = closer {
        let _ = closer.shutdown(Shutdown::Both);
    }
    // A collector that panicked has already said why (the panic hook restored the terminal).
    let _ = collector.join();
    result
}

/// The screen's state for an agent's hello: its pid, interval, signals and scope.
fn agent_app(hello: &Hello, requested: &[Signal], socket: &std::path::Path) -> anyhow::Result<App> {
    let source = Source::Agent {
        pid: hello.pid,
        socket: socket.to_owned(),
    };
    let signals = agent_signals(hello, requested, socket)?;
    let mut app = App::new(signals, Duration::from_millis(hello.interval_ms), source);
    // A sidecar agent's view is its scope's: the header says so, as for `--cgroup`.
    app.scope = hello.scope.clone();
    Ok(app)
}

/// Every requested signal, with why it does not run in the agent where it does not. None
/// running is an error that points to `--local`.
pub fn agent_signals(
    hello: &Hello,
    requested: &[Signal],
    socket: &std::path::Path,
) -> anyhow::Result<Vec<(Signal, Option<String>)>> {
    let signals: Vec<(Signal, Option<String>)> = requested
        .iter()
        .map(|&signal| {
            let status = hello.signals.iter().find(|s| s.signal == signal.name());
            let error = match status {
                Some(s) if s.running => None,
                Some(s) => Some(
                    s.error
                        .clone()
                        .unwrap_or_else(|| "it does not run in the agent".into()),
                ),
                None => Some("the agent does not run it (agent.signals); --local loads it".into()),
            };
            (signal, error)
        })
        .collect();
    if signals.iter().all(|(_, e)| e.is_some()) {
        bail!(
            "the observer agent (pid {}, {}) runs none of the requested signals; use --local to \
             load them in this process",
            hello.pid,
            socket.display()
        );
    }
    Ok(signals)
}

/// Reads the agent's intervals and sends them on, until the agent or the UI goes away.
fn follow(mut connection: Connection, tx: &Sender<Result<Update, String>>) {
    loop {
        let update = connection.receive().map(|interval| Update {
            samples: interval.signals,
            elapsed: Duration::from_nanos(interval.elapsed_ns),
        });
        match update {
            Ok(update) => {
                if tx.send(Ok(update)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        }
    }
}

/// Reads the maps every interval and sends what happened in it, until `stop` or the UI is gone.
fn collect(
    mut loaded: Loaded,
    interval_ms: &AtomicU64,
    stop: &AtomicBool,
    tx: &Sender<Result<Update, String>>,
) {
    let mut prev = Snapshot::zero(&loaded);
    let mut at = loaded.attached;
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
        let samples = local::samples(&Deltas::between(&cur, &prev));
        // Otherwise the bounded breakdown maps fill with exited processes and idle peers over
        // a long session, and new ones go unattributed.
        if let Err(e) = cur.forget_stale(&mut loaded.ebpf, &prev) {
            tracing::debug!("forgetting exited processes and idle peers: {e}");
        }
        let update = Update {
            samples,
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
                // After saying why (the agent went away): the screen keeps the last numbers
                // and the reason.
                Err(TryRecvError::Disconnected) if app.error.is_some() => break,
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

extern "C" fn on_signal(signal: libc::c_int) {
    // SIGHUP from a terminal that hung up (tmux session killed, ssh gone): there is nothing
    // left to restore, and crossterm (0.29) spins forever reading the end of file of a hung-up
    // terminal, so the UI loop would never see the flag. The kernel hangs the terminal's files
    // up before it signals, so stdout is no longer a terminal by now.
    // SAFETY: isatty (an ioctl) and _exit are async-signal-safe.
    if signal == libc::SIGHUP && unsafe { libc::isatty(libc::STDOUT_FILENO) } == 0 {
        unsafe { libc::_exit(128 + libc::SIGHUP) };
    }
    TERMINATED.store(true, Ordering::Relaxed);
}

fn catch_termination() -> io::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        // SAFETY: a zeroed sigaction with an empty mask and a handler that only makes
        // async-signal-safe calls and stores to an atomic.
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
