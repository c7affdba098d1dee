//! The state of `observer top` and what keys do to it. No terminal and no kernel here, so tests
//! can build an `App` from made-up reports and drive it key by key.

use std::{collections::VecDeque, time::Duration};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::{
    hist::{Bucket, Latency, Summary},
    record::Reports,
    signals::{Signal, runqueue::ProcessRow},
};

/// How many past intervals the p99 history keeps (a minute at the default interval).
pub const HISTORY: usize = 60;
/// Refresh intervals `+`/`-` step through. The collector reads the kernel's maps once per
/// interval: below 250 ms the per-interval counts get too small to mean much.
pub const INTERVALS: [Duration; 6] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

/// An interval within the range `+`/`-` allow.
pub fn clamp_interval(d: Duration) -> Duration {
    d.clamp(INTERVALS[0], INTERVALS[INTERVALS.len() - 1])
}

/// What the collector thread sends once per interval.
pub struct Update {
    pub reports: Reports,
    /// The time the reports cover (the interval as it actually ran).
    pub elapsed: Duration,
}

/// One row of a breakdown table. `latency` is `None` for counted events (TCP retransmits).
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub count: u64,
    pub latency: Option<Summary>,
}

#[derive(Clone, Debug)]
pub struct Table {
    /// "processes", "cgroups", ...
    pub title: &'static str,
    pub rows: Vec<Row>,
}

/// One signal's report for one interval, in the shape the screen shows.
#[derive(Clone, Debug)]
pub struct SignalView {
    pub count: u64,
    /// `None` for counted events (TCP retransmits).
    pub latency: Option<Summary>,
    pub buckets: Vec<Bucket>,
    pub tables: Vec<Table>,
    /// Events the breakdowns missed, worth a line under the table.
    pub notes: Vec<String>,
}

/// A table of latency rows, if the report has that breakdown.
fn latency_table<T>(
    title: &'static str,
    rows: Option<&Vec<T>>,
    row: impl Fn(&T) -> (String, &Summary),
) -> Option<Table> {
    rows.map(|rows| Table {
        title,
        rows: rows
            .iter()
            .map(|r| {
                let (name, s) = row(r);
                Row {
                    name,
                    count: s.count,
                    latency: Some(s.clone()),
                }
            })
            .collect(),
    })
}

/// A latency signal's view: its histogram and the tables it has.
fn latency_view(
    l: &Latency,
    tables: impl IntoIterator<Item = Option<Table>>,
    notes: impl IntoIterator<Item = Option<String>>,
) -> SignalView {
    SignalView {
        count: l.summary.count,
        latency: Some(l.summary.clone()),
        buckets: l.buckets.clone(),
        tables: tables.into_iter().flatten().collect(),
        notes: notes.into_iter().flatten().collect(),
    }
}

/// The note for events a full breakdown map could not attribute.
fn dropped(n: u64, what: &str) -> Option<String> {
    (n > 0).then(|| format!("{n} not attributed to a {what}: the breakdown map was full"))
}

fn process(p: &ProcessRow) -> (String, &Summary) {
    (format!("{} {}", p.tgid, p.comm), &p.summary)
}

/// The per-signal views of one set of reports, in the fixed signal order.
pub fn views(r: &Reports) -> Vec<(Signal, SignalView)> {
    let mut out = Vec::new();
    if let Some(r) = &r.runqueue {
        let tables = [
            latency_table("processes", r.by_process.as_ref(), process),
            latency_table("cgroups", r.by_cgroup.as_ref(), |c| {
                (c.workload.name(), &c.summary)
            }),
        ];
        let notes = [dropped(r.dropped.by_process, "process")];
        out.push((Signal::Runqueue, latency_view(&r.latency, tables, notes)));
    }
    if let Some(r) = &r.blockio {
        let tables = [
            latency_table("disks x ops (device time)", r.by_disk.as_ref(), |d| {
                (format!("{} {}", d.disk, d.op), &d.device)
            }),
            latency_table("ops (device time)", r.by_op.as_ref(), |o| {
                (o.op.to_owned(), &o.device)
            }),
        ];
        let notes = [
            dropped(r.dropped.by_disk, "disk"),
            (r.dropped.inflight > 0).then(|| {
                format!(
                    "{} requests not timed: the in-flight map was full",
                    r.dropped.inflight
                )
            }),
        ];
        out.push((Signal::BlockIo, latency_view(&r.device, tables, notes)));
    }
    if let Some(r) = &r.tcp {
        let tables = r
            .by_remote
            .iter()
            .map(|rows| Table {
                title: "remote endpoints",
                rows: rows
                    .iter()
                    .map(|e| Row {
                        name: format!("{} :{} {}", e.endpoint(), e.local_port, e.state),
                        count: e.count,
                        latency: None,
                    })
                    .collect(),
            })
            .collect();
        out.push((
            Signal::Tcp,
            SignalView {
                count: r.count,
                latency: None,
                buckets: Vec::new(),
                tables,
                notes: dropped(r.dropped.by_remote, "remote endpoint")
                    .into_iter()
                    .collect(),
            },
        ));
    }
    if let Some(r) = &r.lock {
        let tables = [latency_table("lock classes", r.by_class.as_ref(), |c| {
            (c.class.to_owned(), &c.summary)
        })];
        out.push((Signal::Lock, latency_view(&r.latency, tables, [])));
    }
    if let Some(r) = &r.futex {
        let tables = [latency_table("processes", r.by_process.as_ref(), process)];
        let notes = [dropped(r.dropped.by_process, "process")];
        out.push((Signal::Futex, latency_view(&r.latency, tables, notes)));
    }
    out
}

/// The column a breakdown table is sorted by (highest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    Count,
    P50,
    P99,
}

impl Sort {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::P50 => "p50",
            Self::P99 => "p99",
        }
    }

    const fn next(self) -> Self {
        match self {
            Self::Count => Self::P50,
            Self::P50 => Self::P99,
            Self::P99 => Self::Count,
        }
    }

    fn key(self, row: &Row) -> f64 {
        match (self, &row.latency) {
            (Self::P50, Some(s)) => s.p50_ns,
            (Self::P99, Some(s)) => s.p99_ns,
            _ => row.count as f64,
        }
    }
}

/// One signal on screen: whether it runs, its latest view and its history.
pub struct Slot {
    pub signal: Signal,
    /// Why it is not running, if it is not.
    pub error: Option<String>,
    pub view: Option<SignalView>,
    /// p99 in ns per interval (events per second for TCP, which has no latency), oldest first.
    pub history: VecDeque<f64>,
}

pub struct App {
    pub slots: Vec<Slot>,
    /// Index into `slots`.
    pub selected: usize,
    /// Which breakdown table of the selected signal.
    pub table: usize,
    /// Selected row of that table, in sorted order.
    pub row: usize,
    pub sort: Sort,
    /// The row being drilled into, by name (names survive refreshes, positions do not).
    pub filter: Option<String>,
    pub paused: bool,
    pub help: bool,
    pub interval: Duration,
    /// The time the shown reports cover.
    pub elapsed: Option<Duration>,
    /// The collector's last error, until the next good read.
    pub error: Option<String>,
    /// The cgroup every signal is restricted to (`--cgroup`); `None`: the whole host.
    pub scope: Option<String>,
}

/// What the event loop should do after a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Quit,
}

impl App {
    /// `signals`: every requested signal, with why it is not running where it is not.
    pub fn new(signals: Vec<(Signal, Option<String>)>, interval: Duration) -> Self {
        Self {
            slots: signals
                .into_iter()
                .map(|(signal, error)| Slot {
                    signal,
                    error,
                    view: None,
                    history: VecDeque::with_capacity(HISTORY),
                })
                .collect(),
            selected: 0,
            table: 0,
            row: 0,
            sort: Sort::Count,
            filter: None,
            paused: false,
            help: false,
            interval: clamp_interval(interval),
            elapsed: None,
            error: None,
            scope: None,
        }
    }

    /// Takes one interval's reports (dropped while paused, so the screen holds still).
    pub fn update(&mut self, u: Update) {
        if self.paused {
            return;
        }
        let secs = u.elapsed.as_secs_f64().max(f64::EPSILON);
        for (signal, view) in views(&u.reports) {
            let Some(slot) = self.slots.iter_mut().find(|s| s.signal == signal) else {
                continue;
            };
            let value = view
                .latency
                .as_ref()
                .map_or(view.count as f64 / secs, |s| s.p99_ns);
            if slot.history.len() == HISTORY {
                slot.history.pop_front();
            }
            slot.history.push_back(value);
            slot.view = Some(view);
        }
        self.elapsed = Some(u.elapsed);
        self.error = None;
        self.row = self.row.min(self.rows().len().saturating_sub(1));
    }

    pub fn fail(&mut self, error: String) {
        self.error = Some(error);
    }

    /// Events per second over the shown interval.
    pub fn rate(&self, count: u64) -> f64 {
        self.elapsed
            .map_or(0.0, |e| count as f64 / e.as_secs_f64().max(f64::EPSILON))
    }

    pub fn current(&self) -> &Slot {
        &self.slots[self.selected]
    }

    /// The selected breakdown table of the selected signal.
    pub fn current_table(&self) -> Option<&Table> {
        self.current().view.as_ref()?.tables.get(self.table)
    }

    /// The rows of the selected table, sorted by the sort column.
    pub fn rows(&self) -> Vec<&Row> {
        let mut rows: Vec<&Row> = self
            .current_table()
            .map(|t| t.rows.iter().collect())
            .unwrap_or_default();
        rows.sort_by(|a, b| self.sort.key(b).total_cmp(&self.sort.key(a)));
        rows
    }

    /// The row being drilled into, if it had events in the shown interval.
    pub fn filtered(&self) -> Option<&Row> {
        let name = self.filter.as_ref()?;
        self.current_table()?.rows.iter().find(|r| &r.name == name)
    }

    fn select(&mut self, index: usize) {
        if index < self.slots.len() {
            self.selected = index;
            self.table = 0;
            self.row = 0;
            self.filter = None;
        }
    }

    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) {
            // Raw mode turns Ctrl-C into a key press instead of SIGINT.
            return if key.code == KeyCode::Char('c') {
                Action::Quit
            } else {
                Action::Continue
            };
        }
        if self.help {
            // Any key leaves the help screen; q still quits.
            self.help = false;
            return if key.code == KeyCode::Char('q') {
                Action::Quit
            } else {
                Action::Continue
            };
        }
        let n = self.slots.len();
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('?' | 'h') => self.help = true,
            KeyCode::Char('p' | ' ') => self.paused = !self.paused,
            KeyCode::Char('+') => {
                self.interval = INTERVALS
                    .into_iter()
                    .find(|&d| d > self.interval)
                    .unwrap_or(self.interval);
            }
            KeyCode::Char('-') => {
                self.interval = INTERVALS
                    .into_iter()
                    .rev()
                    .find(|&d| d < self.interval)
                    .unwrap_or(self.interval);
            }
            KeyCode::Tab | KeyCode::Right => self.select((self.selected + 1) % n),
            KeyCode::BackTab | KeyCode::Left => self.select((self.selected + n - 1) % n),
            KeyCode::Char(c @ '1'..='9') => self.select(c as usize - '1' as usize),
            KeyCode::Char('b') => {
                let tables = self.current().view.as_ref().map_or(0, |v| v.tables.len());
                if tables > 0 {
                    self.table = (self.table + 1) % tables;
                    self.row = 0;
                    self.filter = None;
                }
            }
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Up => self.row = self.row.saturating_sub(1),
            KeyCode::Down => {
                self.row = (self.row + 1).min(self.rows().len().saturating_sub(1));
            }
            KeyCode::Enter => self.filter = self.rows().get(self.row).map(|r| r.name.clone()),
            KeyCode::Esc => self.filter = None,
            _ => {}
        }
        Action::Continue
    }
}
