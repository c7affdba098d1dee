//! What each fuzz target does with its input, in one place: the targets in fuzz_targets/ call
//! these, and so does observer/tests/fuzz_regressions.rs, which replays the seeds and every input
//! that once crashed (fuzz/seeds/TARGET, fuzz/regressions/TARGET) in every test run. Each
//! function must return without panicking whatever its input.

use std::{path::Path, time::Duration};

use observer::{
    agent::socket::{parse_hello, parse_interval},
    config::{Config, Overrides},
    signals::Signal,
    top::app::{App, Source, Update},
};
use ratatui::{
    Terminal,
    backend::TestBackend,
    crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
};

/// What a target does with one input.
pub type Target = fn(&str);

/// Every target by name, as in fuzz/Cargo.toml.
pub const TARGETS: [(&str, Target); 6] = [
    ("config", config),
    ("env", env),
    ("duration", duration),
    ("pairs", pairs),
    ("socket_client", socket_client),
    ("prometheus_accept", prometheus_accept),
];

/// The configuration file, `[[rules]]` and `[tuning]` included, as `observer run --config` and
/// `observer config check` read it: refused with an error or accepted.
pub fn config(text: &str) {
    let result = Config::parse_with_rules(
        Path::new("fuzz.toml"),
        text.to_owned(),
        |_| None,
        &Overrides::default(),
    );
    // Errors are shown to the user: rendering them must not panic either.
    if let Err(e) = result {
        let _ = e.to_string();
    }
}

/// The OTEL_* environment variables the agent reads, one `NAME=value` per line.
pub fn env(text: &str) {
    let vars: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    let lookup = |name: &str| {
        vars.iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    };
    if let Err(e) = Config::load(None, lookup, &Overrides::default()) {
        let _ = e.to_string();
    }
}

/// Durations as the config file and the flags take them (`500ms`, `10s`, `1.5`).
pub fn duration(text: &str) {
    let _ = observer::config::parse_duration(text);
}

/// `k1=v1,k2=v2` lists with percent-decoded values (OTEL_EXPORTER_OTLP_HEADERS,
/// OTEL_RESOURCE_ATTRIBUTES).
pub fn pairs(text: &str) {
    let _ = observer::config::parse_pairs(text);
}

/// The one part of a scrape request the agent interprets itself, beyond what hyper parses: the
/// Accept header, which picks the text or the protobuf exposition.
pub fn prometheus_accept(accept: &str) {
    let _ = observer::agent::prometheus::wants_protobuf(Some(accept));
}

/// What `observer top` reads from the agent's socket: the first line is the hello, each later
/// line an interval, which top's screen takes and draws; a line `key:K` presses key K (so that
/// sorting, switching tables and drilling in run on what arrived). Whatever the lines, top shows
/// an error or the data.
pub fn socket_client(text: &str) {
    let mut lines = text.lines();
    let Some(Ok(hello)) = lines.next().map(parse_hello) else {
        return;
    };
    let Ok(signals) = observer::top::agent_signals(&hello, &Signal::ALL, Path::new("fuzz.sock"))
    else {
        return;
    };
    let mut app = App::new(
        signals,
        Duration::from_millis(hello.interval_ms),
        Source::Agent {
            pid: hello.pid,
            socket: "fuzz.sock".into(),
        },
    );
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).expect("test backend");
    for line in lines {
        if let Some(key) = line.strip_prefix("key:") {
            let code = match key {
                "tab" => KeyCode::Tab,
                "backtab" => KeyCode::BackTab,
                "up" => KeyCode::Up,
                "down" => KeyCode::Down,
                "enter" => KeyCode::Enter,
                "esc" => KeyCode::Esc,
                _ => match key.chars().next() {
                    Some(c) => KeyCode::Char(c),
                    None => continue,
                },
            };
            app.key(KeyEvent::new(code, KeyModifiers::NONE));
        } else {
            match parse_interval(line) {
                Ok(interval) => app.update(Update {
                    samples: interval.signals,
                    elapsed: Duration::from_nanos(interval.elapsed_ns),
                }),
                Err(e) => app.fail(format!("{e:?}")),
            }
        }
        terminal
            .draw(|frame| observer::top::view::render(&app, frame))
            .expect("drawing to the test backend");
    }
}
