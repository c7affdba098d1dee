//! Rendering from made-up kernel deltas, with ratatui's test backend: no kernel, no terminal.

use std::{collections::HashMap, time::Duration};

use observer_common::{
    Hist, ProcessHist, ProcessKey,
    blockio::{DiskHists, DiskKey, OPS, STAGES},
    hist::slot,
    lock::CLASSES,
    tcp::{AF_INET, RemoteKey},
};
use ratatui::{
    Terminal,
    backend::TestBackend,
    crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
    style::Color,
};

use super::{
    app::{Action, App, Sample, Source, Update},
    local,
    view::render,
};
use crate::{
    record::Deltas,
    render::ns,
    signals::{Process, Signal, blockio, futex, lock, runqueue, tcp},
};

fn hist(values: &[u64]) -> Hist {
    let mut h = Hist::ZERO;
    for &v in values {
        h.buckets[slot(v)] += 1;
        h.sum += v;
    }
    h
}

/// Process ids above PID_MAX_LIMIT, so names come from the given comm, not /proc.
fn process(tgid: u32, comm: &str, values: &[u64]) -> (ProcessKey, Process) {
    let mut p = ProcessHist::ZERO;
    p.comm[..comm.len()].copy_from_slice(comm.as_bytes());
    p.hist = hist(values);
    let key = ProcessKey {
        cgroup: 1,
        tgid,
        _pad: 0,
    };
    (key, Process::of(&p))
}

/// Runs of `n` copies of `v`.
fn many(v: u64, n: usize) -> Vec<u64> {
    vec![v; n]
}

fn deltas() -> Deltas {
    let mut slow = many(40_000, 90);
    slow.extend(many(3_000_000, 10));
    let runqueue = runqueue::Delta {
        unattributed: hist(&many(500, 5)),
        by_process: HashMap::from([
            process(4_000_000_001, "stress-ng", &slow),
            process(4_000_000_002, "postgres", &many(2_000, 30)),
        ]),
        dropped: 0,
    };
    let mut by_disk = HashMap::new();
    by_disk.insert(
        DiskKey {
            dev: 8 << 20,
            op: 0,
        },
        DiskHists {
            queue: hist(&many(10_000, 4)),
            device: hist(&many(150_000, 4)),
        },
    );
    let blockio = blockio::Delta {
        unattributed: [[Hist::ZERO; OPS]; STAGES],
        by_disk,
        dropped_by_disk: 0,
        dropped_inflight: 0,
    };
    let mut raddr = [0; 16];
    raddr[..4].copy_from_slice(&[10, 0, 0, 7]);
    let tcp = tcp::Delta {
        unattributed: 0,
        by_remote: HashMap::from([(
            RemoteKey {
                raddr,
                family: AF_INET,
                rport: 5432,
                lport: 40000,
                state: 1,
                _pad: 0,
            },
            3,
        )]),
        failed: 0,
    };
    let mut by_class = vec![Hist::ZERO; CLASSES];
    by_class[0] = hist(&many(7_000, 12));
    let lock = lock::Delta {
        by_class,
        mismatched: 0,
    };
    let futex = futex::Delta {
        unattributed: Hist::ZERO,
        by_process: HashMap::from([process(4_000_000_003, "java", &many(250_000, 20))]),
        dropped: 0,
    };
    Deltas {
        runqueue: Some(runqueue),
        blockio: Some(blockio),
        tcp: Some(tcp),
        lock: Some(lock),
        futex: Some(futex),
    }
}

fn samples() -> Vec<Sample> {
    local::samples(&deltas())
}

fn app() -> App {
    let mut signals: Vec<_> = Signal::ALL.iter().map(|&s| (s, None)).collect();
    signals[3].1 = Some("no lock:contention_begin here".to_owned());
    let mut app = App::new(signals, Duration::from_secs(1), Source::Local);
    for _ in 0..3 {
        app.update(Update {
            samples: samples(),
            elapsed: Duration::from_secs(1),
        });
    }
    app
}

fn screen(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test backend");
    terminal
        .draw(|frame| render(app, frame))
        .expect("drawing to the test backend");
    let buffer = terminal.backend().buffer();
    (0..height)
        .map(|y| {
            (0..width)
                .map(|x| buffer[(x, y)].symbol())
                .collect::<String>()
                + "\n"
        })
        .collect()
}

/// The screen with runs of spaces squeezed to one, to find a row's cells in order.
fn squeezed(screen: &str) -> String {
    screen
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn press(app: &mut App, code: KeyCode) -> Action {
    app.key(KeyEvent::new(code, KeyModifiers::NONE))
}

#[test]
fn the_summary_and_the_selected_signal_render_at_80x24_and_200x50() {
    let app = app();
    let rq_p99 = ns(app.slots[0]
        .view
        .as_ref()
        .and_then(|v| v.latency.as_ref())
        .expect("run-queue latency")
        .p99_ns);
    for (w, h) in [(80, 24), (200, 50)] {
        let s = screen(&app, w, h);
        eprintln!("{s}");
        for name in ["runqueue", "blockio", "tcp", "lock", "futex"] {
            assert!(s.contains(name), "{name} missing at {w}x{h}:\n{s}");
        }
        assert!(s.contains("programs loaded by this process"), "{s}");
        assert!(s.contains(&rq_p99), "p99 {rq_p99} missing at {w}x{h}:\n{s}");
        assert!(s.contains("stress-ng"), "process missing at {w}x{h}:\n{s}");
        assert!(s.contains("not running"), "{s}");
        // 135 waits in the one-second interval.
        assert!(s.contains("135"), "{s}");
    }
}

#[test]
fn tiny_terminals_do_not_panic() {
    let mut app = app();
    for (w, h) in [(1, 1), (20, 5), (40, 10), (80, 12)] {
        screen(&app, w, h);
        app.help = true;
        screen(&app, w, h);
        app.help = false;
    }
}

#[test]
fn keys_switch_signals_tables_sort_and_drill_down() {
    let mut app = app();
    let s = screen(&app, 80, 24);
    assert!(s.contains("by processes"), "{s}");

    press(&mut app, KeyCode::Char('5'));
    let s = screen(&app, 80, 24);
    assert!(s.contains("futex histogram") && s.contains("java"), "{s}");
    assert!(!s.contains("stress-ng"), "{s}");

    press(&mut app, KeyCode::Tab);
    assert_eq!(app.selected, 0, "Tab wraps around");
    press(&mut app, KeyCode::Char('2'));
    let s = screen(&app, 80, 24);
    assert!(s.contains("disks x ops") && s.contains("8:0 read"), "{s}");
    press(&mut app, KeyCode::Char('3'));
    let s = screen(&app, 80, 24);
    assert!(s.contains("10.0.0.7:5432"), "{s}");

    press(&mut app, KeyCode::Char('1'));
    press(&mut app, KeyCode::Char('b'));
    assert!(screen(&app, 80, 24).contains("by cgroups"));
    press(&mut app, KeyCode::Char('b'));

    // By count stress-ng (100 waits) leads; by p50 postgres (2us) is below it (40us), by p99
    // too: the order stays, so check the sort column named in the title.
    assert_eq!(app.rows()[0].name, "4000000001 stress-ng");
    press(&mut app, KeyCode::Char('s'));
    assert!(screen(&app, 80, 24).contains("sort p50"));
    press(&mut app, KeyCode::Char('s'));
    press(&mut app, KeyCode::Char('s'));
    assert!(screen(&app, 80, 24).contains("sort count"));

    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.filter.as_deref(), Some("4000000002 postgres"));
    let s = screen(&app, 80, 24);
    assert!(s.contains("> 4000000002 postgres: 30/s"), "{s}");
    // The drill-down survives a refresh.
    app.update(Update {
        samples: samples(),
        elapsed: Duration::from_secs(2),
    });
    assert!(screen(&app, 80, 24).contains("> 4000000002 postgres: 15/s"));
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.filter, None);
}

/// The foreground colours on the screen other than the terminal's own.
fn colours(app: &App) -> Vec<Color> {
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("test backend");
    terminal
        .draw(|frame| render(app, frame))
        .expect("drawing to the test backend");
    let buffer = terminal.backend().buffer();
    buffer
        .content()
        .iter()
        .map(|cell| cell.fg)
        .filter(|&fg| fg != Color::Reset)
        .collect()
}

/// The histogram's bars and the row drilled into are in colour, unless NO_COLOR turned colour
/// off: then the screen has the terminal's colours only (bold and reverse video stay).
#[test]
fn no_colour_when_colour_is_off() {
    let mut app = app();
    press(&mut app, KeyCode::Enter);
    assert!(app.filter.is_some(), "drilled into the first row");
    app.colour = true;
    let shown = colours(&app);
    assert!(
        shown.contains(&Color::Yellow) && shown.contains(&Color::Cyan),
        "{shown:?}"
    );
    app.colour = false;
    assert_eq!(colours(&app), []);
}

#[test]
fn help_pause_interval_and_quit() {
    let mut app = app();
    press(&mut app, KeyCode::Char('?'));
    let s = screen(&app, 80, 24);
    assert!(s.contains("keys") && s.contains("pause / resume"), "{s}");
    assert_eq!(press(&mut app, KeyCode::Char('x')), Action::Continue);
    assert!(!app.help, "any key closes the help");

    press(&mut app, KeyCode::Char('p'));
    assert!(screen(&app, 80, 24).contains("PAUSED"));
    let before = app.slots[0].history.len();
    app.update(Update {
        samples: samples(),
        elapsed: Duration::from_secs(1),
    });
    assert_eq!(
        app.slots[0].history.len(),
        before,
        "paused: updates dropped"
    );
    press(&mut app, KeyCode::Char(' '));
    assert!(!app.paused);

    for _ in 0..10 {
        press(&mut app, KeyCode::Char('+'));
    }
    assert_eq!(app.interval, Duration::from_secs(10));
    for _ in 0..10 {
        press(&mut app, KeyCode::Char('-'));
    }
    assert_eq!(app.interval, Duration::from_millis(250));

    assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(app.key(ctrl_c), Action::Quit);
}

#[test]
fn history_keeps_the_last_minute() {
    let mut app = app();
    for _ in 0..100 {
        app.update(Update {
            samples: samples(),
            elapsed: Duration::from_secs(1),
        });
    }
    assert_eq!(app.slots[0].history.len(), super::app::HISTORY);
}

#[test]
fn the_header_says_where_the_numbers_come_from() {
    let mut app = app();
    assert!(
        screen(&app, 80, 24)
            .starts_with("observer top  every 1s  source: programs loaded by this process  ? help")
    );
    app.source = Source::Agent {
        pid: 4242,
        socket: "/run/observer/observer.sock".into(),
    };
    let s = screen(&app, 200, 50);
    assert!(
        s.contains("source: agent pid 4242 (/run/observer/observer.sock)"),
        "{s}"
    );
    // The default socket fits at 80 columns.
    assert!(
        screen(&app, 80, 24)
            .contains("every 1s  source: agent pid 4242 (/run/observer/observer.sock)")
    );
    // The agent's interval is the refresh interval: + and - leave it alone.
    press(&mut app, KeyCode::Char('+'));
    assert_eq!(app.interval, Duration::from_secs(1));
}

#[test]
fn futex_waits_have_processes_and_cgroups() {
    let mut app = app();
    press(&mut app, KeyCode::Char('5'));
    assert!(screen(&app, 80, 24).contains("by processes (1/2"));
    press(&mut app, KeyCode::Char('b'));
    let s = squeezed(&screen(&app, 80, 24));
    // The test processes' cgroup has id 1: the root, or no cgroup (`?`) where that differs.
    let cgroup = crate::cgroup::resolve_all(&[1])
        .get(&1)
        .map_or_else(|| "?".into(), |w| w.name());
    assert!(
        s.contains("by cgroups (2/2") && s.contains(&format!("│{cgroup} 20 ")),
        "{s}"
    );
}

#[test]
fn drilling_into_a_row_shows_its_own_histogram() {
    let mut app = app();
    let s = screen(&app, 80, 24);
    // The whole signal: stress-ng's 40us and 3ms waits and postgres's 2us ones.
    assert!(
        s.contains("runqueue histogram") && s.contains("32.8us-65.5us      90"),
        "{s}"
    );
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Enter);
    let s = screen(&app, 80, 24);
    assert!(s.contains("4000000002 postgres histogram"), "{s}");
    assert!(s.contains("1.02us-2.05us      30"), "{s}");
    assert!(!s.contains("32.8us-65.5us"), "only postgres's waits:\n{s}");
    press(&mut app, KeyCode::Esc);
    assert!(screen(&app, 80, 24).contains("runqueue histogram"));
}

/// The agent's socket to the screen: what the agent serves is what `top` shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intervals_from_the_agent_socket_render_like_local_ones() {
    use crate::agent::socket::{Connection, Hello, Server};

    let dir = std::env::temp_dir().join(format!("observer-top-agent-{}", std::process::id()));
    let path = dir.join("observer.sock");
    let status = std::collections::BTreeMap::from([(Signal::Runqueue, Ok::<(), String>(()))]);
    let server = Server::start(&path, Hello::of_agent(Duration::from_secs(1), &status))
        .await
        .unwrap();
    server.offer(
        deltas(),
        Duration::from_secs(1),
        std::time::SystemTime::now(),
    );
    let p = path.clone();
    let (hello, update) = tokio::task::spawn_blocking(move || {
        let mut c = Connection::connect(&p).unwrap().expect("the agent");
        let i = c.receive().unwrap();
        (
            c.hello.clone(),
            Update {
                samples: i.signals,
                elapsed: Duration::from_nanos(i.elapsed_ns),
            },
        )
    })
    .await
    .unwrap();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    let mut app = App::new(
        vec![(Signal::Runqueue, None)],
        Duration::from_millis(hello.interval_ms),
        Source::Agent {
            pid: hello.pid,
            socket: path,
        },
    );
    app.update(update);
    let s = squeezed(&screen(&app, 120, 30));
    assert!(
        s.contains(&format!("source: agent pid {}", std::process::id())),
        "{s}"
    );
    // 135 waits in the one-second interval, and the busiest process first.
    assert!(s.contains("1 runqueue 135"), "{s}");
    assert!(s.contains("4000000001 stress-ng 100"), "{s}");
}

#[test]
fn signals_the_agent_does_not_run_say_why_and_none_at_all_points_to_local() {
    use crate::agent::socket::Hello;

    let status = std::collections::BTreeMap::from([
        (Signal::Runqueue, Ok(())),
        (
            Signal::Lock,
            Err("no lock:contention_begin here".to_owned()),
        ),
    ]);
    let hello = Hello::of_agent(Duration::from_secs(10), &status);
    let socket = std::path::Path::new("/run/observer/observer.sock");
    let signals = super::agent_signals(
        &hello,
        &[Signal::Runqueue, Signal::Lock, Signal::Futex],
        socket,
    )
    .unwrap();
    assert_eq!(signals[0], (Signal::Runqueue, None));
    assert_eq!(
        signals[1].1.as_deref(),
        Some("no lock:contention_begin here")
    );
    assert!(
        signals[2]
            .1
            .as_deref()
            .is_some_and(|e| e.contains("agent.signals") && e.contains("--local")),
        "{signals:?}"
    );
    let e = super::agent_signals(&hello, &[Signal::Futex], socket).unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "the observer agent (pid {}, /run/observer/observer.sock) runs none of the requested \
             signals; use --local",
            std::process::id()
        )),
        "{e}"
    );
}

#[test]
fn the_header_names_the_scope() {
    let mut app = app();
    assert!(!screen(&app, 80, 24).contains("cgroup "));
    app.scope = Some("/system.slice/nginx.service".to_owned());
    let s = screen(&app, 120, 24);
    assert!(s.contains("cgroup /system.slice/nginx.service"), "{s}");
}

#[test]
fn the_header_names_a_sidecar_agents_scope_from_its_hello() {
    use crate::agent::socket::Hello;

    let status = std::collections::BTreeMap::from([(Signal::Runqueue, Ok::<(), String>(()))]);
    let mut hello = Hello::of_agent(Duration::from_secs(1), &status);
    let socket = std::path::Path::new("/run/observer/observer.sock");
    let host = super::agent_app(&hello, &[Signal::Runqueue], socket).unwrap();
    assert!(!screen(&host, 120, 24).contains("cgroup "));
    hello.scope = Some("/kubepods.slice/kubepods-pod1.slice".into());
    let sidecar = super::agent_app(&hello, &[Signal::Runqueue], socket).unwrap();
    let s = screen(&sidecar, 160, 24);
    assert!(
        s.contains(&format!(
            "cgroup /kubepods.slice/kubepods-pod1.slice  source: agent pid {}",
            std::process::id()
        )),
        "{s}"
    );
}
