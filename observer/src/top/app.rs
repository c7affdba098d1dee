//! The state of `observer top` and what keys do to it. No terminal and no kernel here, so tests
//! can build an `App` from made-up samples and drive it key by key.

use std::{
    collections::{HashMap, VecDeque, hash_map::Entry},
    hash::Hash,
    path::PathBuf,
    time::Duration,
};

use observer_common::Hist;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde::{Deserialize, Serialize};

use crate::{
    hist::{Bucket, Latency, SparseHist, Summary, count},
    signals::Signal,
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
    /// The signals' samples of the interval, in [`Signal::ALL`] order.
    pub samples: Vec<Sample>,
    /// The time they cover (the interval as it actually ran).
    pub elapsed: Duration,
}

/// One signal's events in one interval, every row with its histogram: what this process's
/// collector and the agent (over its socket) both produce. The screen shows the
/// [`SignalView`] computed from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    #[serde(with = "crate::agent::socket::signal_name")]
    pub signal: Signal,
    pub count: u64,
    /// `None` for counted events (TCP retransmits).
    #[serde(with = "crate::agent::socket::sparse_hist")]
    pub hist: Option<Box<Hist>>,
    pub tables: Vec<SampleTable>,
    /// Events the breakdowns missed, worth a line under the table.
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleTable {
    /// "processes", "cgroups", ...
    pub title: String,
    /// At most [`TOP`], the most events first.
    pub rows: Vec<SampleRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleRow {
    pub name: String,
    pub count: u64,
    #[serde(with = "crate::agent::socket::sparse_hist")]
    pub hist: Option<Box<Hist>>,
}

impl Sample {
    /// A latency signal's sample: its histogram, tables and notes.
    pub fn latency(
        signal: Signal,
        total: &Hist,
        tables: Vec<SampleTable>,
        notes: Vec<String>,
    ) -> Self {
        Self {
            signal,
            count: count(total),
            hist: Some(Box::new(*total)),
            tables,
            notes,
        }
    }
}

/// Rows kept per breakdown table: more than fit on screen, so sorting by p50/p99 has some to
/// choose from.
pub const TOP: usize = 50;

/// A table of latency rows: `rows` summed by key, the [`TOP`] with the most events kept (ties by
/// key, so the choice is stable), then named (naming may read /proc or walk the cgroup tree, so
/// only the kept rows are).
///
/// Rows are summed sparse: with full kernel maps there are thousands of them (the agent makes
/// this table for its socket's clients every interval), and only the kept ones are made dense.
pub fn hist_table<K: Ord + Hash + Clone>(
    title: &str,
    rows: impl IntoIterator<Item = (K, SparseHist)>,
    names: impl FnOnce(&[K]) -> Vec<String>,
) -> SampleTable {
    let mut by_key: HashMap<K, SparseHist> = HashMap::new();
    for (k, h) in rows {
        match by_key.entry(k) {
            Entry::Occupied(mut e) => e.get_mut().add(&h),
            Entry::Vacant(e) => {
                e.insert(h);
            }
        }
    }
    let mut rows: Vec<(K, SparseHist, u64)> = by_key
        .into_iter()
        .map(|(k, h)| {
            let n = h.count();
            (k, h, n)
        })
        .filter(|r| r.2 > 0)
        .collect();
    rows.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(TOP);
    let keys: Vec<K> = rows.iter().map(|r| r.0.clone()).collect();
    SampleTable {
        title: title.to_owned(),
        rows: rows
            .into_iter()
            .zip(names(&keys))
            .map(|((_, h, n), name)| SampleRow {
                name,
                count: n,
                hist: Some(Box::new(h.to_dense())),
            })
            .collect(),
    }
}

/// A table of counted rows (TCP retransmits): summed by name, the [`TOP`] most first.
pub fn count_table(title: &str, rows: impl IntoIterator<Item = (String, u64)>) -> SampleTable {
    let mut by_name: HashMap<String, u64> = HashMap::new();
    for (name, n) in rows {
        *by_name.entry(name).or_default() += n;
    }
    let mut rows: Vec<SampleRow> = by_name
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, count)| SampleRow {
            name,
            count,
            hist: None,
        })
        .collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    rows.truncate(TOP);
    SampleTable {
        title: title.to_owned(),
        rows,
    }
}

/// The note for events a full breakdown map could not attribute.
pub fn dropped(n: u64, what: &str) -> Option<String> {
    (n > 0).then(|| format!("{n} not attributed to a {what}: the breakdown map was full"))
}

/// The note for block I/O requests the in-flight map had no room for.
pub fn untimed(n: u64) -> Option<String> {
    (n > 0).then(|| format!("{n} requests not timed: the in-flight map was full"))
}

/// One row of a breakdown table as shown. `latency` is `None` for counted events (TCP
/// retransmits).
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub count: u64,
    /// The row's own histogram, shown when drilling into it.
    pub latency: Option<Latency>,
}

#[derive(Clone, Debug)]
pub struct Table {
    pub title: String,
    pub rows: Vec<Row>,
}

/// One signal's interval in the shape the screen shows: percentiles and buckets computed.
#[derive(Clone, Debug)]
pub struct SignalView {
    pub count: u64,
    /// `None` for counted events (TCP retransmits).
    pub latency: Option<Summary>,
    pub buckets: Vec<Bucket>,
    pub tables: Vec<Table>,
    pub notes: Vec<String>,
}

impl SignalView {
    pub fn of(s: &Sample) -> Self {
        let latency = s.hist.as_deref().map(Latency::of);
        Self {
            count: s.count,
            buckets: latency
                .as_ref()
                .map(|l| l.buckets.clone())
                .unwrap_or_default(),
            latency: latency.map(|l| l.summary),
            tables: s
                .tables
                .iter()
                .map(|t| Table {
                    title: t.title.clone(),
                    rows: t
                        .rows
                        .iter()
                        .map(|r| Row {
                            name: r.name.clone(),
                            count: r.count,
                            latency: r.hist.as_deref().map(Latency::of),
                        })
                        .collect(),
                })
                .collect(),
            notes: s.notes.clone(),
        }
    }
}

/// Where the numbers come from: said in the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// This process loaded the programs.
    Local,
    /// A running agent, read over its socket.
    Agent { pid: u32, socket: PathBuf },
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
            (Self::P50, Some(l)) => l.summary.p50_ns,
            (Self::P99, Some(l)) => l.summary.p99_ns,
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
    pub source: Source,
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
    /// The time the shown views cover.
    pub elapsed: Option<Duration>,
    /// The collector's last error, until the next good read.
    pub error: Option<String>,
    /// The cgroup every signal is restricted to (`--cgroup`); `None`: the whole host.
    pub scope: Option<String>,
    /// Whether the screen may use colour (not with `NO_COLOR`); bold, dim and reverse video
    /// are not colour and stay.
    pub colour: bool,
}

/// What the event loop should do after a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Quit,
}

impl App {
    /// `signals`: every requested signal, with why it is not running where it is not.
    /// `interval`: the refresh interval; with an agent, its collection interval, which `+`/`-`
    /// cannot change.
    pub fn new(signals: Vec<(Signal, Option<String>)>, interval: Duration, source: Source) -> Self {
        let interval = match source {
            Source::Local => clamp_interval(interval),
            Source::Agent { .. } => interval,
        };
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
            source,
            selected: 0,
            table: 0,
            row: 0,
            sort: Sort::Count,
            filter: None,
            paused: false,
            help: false,
            interval,
            elapsed: None,
            error: None,
            scope: None,
            colour: crate::logging::colour_allowed(),
        }
    }

    /// Takes one interval's views (dropped while paused, so the screen holds still).
    pub fn update(&mut self, u: Update) {
        if self.paused {
            return;
        }
        let secs = u.elapsed.as_secs_f64().max(f64::EPSILON);
        for sample in &u.samples {
            let Some(slot) = self.slots.iter_mut().find(|s| s.signal == sample.signal) else {
                continue;
            };
            let view = SignalView::of(sample);
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
            // With an agent, its collection interval is the refresh interval.
            KeyCode::Char('+' | '-') if self.source != Source::Local => {}
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
