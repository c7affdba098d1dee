//! Rules as written in the config file (`[tuning]` and `[[rules]]`), validated into [`Tuning`]
//! and [`Rule`]s. Every error points at the value in the file and says what is expected.

use std::{fmt, ops::Range, path::PathBuf, time::Duration};

use serde::{Deserialize, de};
use toml::Spanned;

use super::actions::{self, Action, FileAction, Per};
use crate::{config::FileDuration, signals::Signal};

/// Where the journal of decisions goes unless `tuning.journal` says otherwise.
pub const DEFAULT_JOURNAL: &str = "/var/lib/observer/actions.jsonl";
/// Where the original values of changed settings are kept until they are restored.
pub const DEFAULT_STATE: &str = "/var/lib/observer/managed.json";
/// Fewest events in a window for a percentile to be judged: the p99 of three events says
/// nothing.
pub const DEFAULT_MIN_EVENTS: u64 = 20;
const MAX_CHANGES_PER_HOUR: i64 = 3600;

/// Dry-run computes and records every decision and changes nothing; enforce carries them out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    DryRun,
    Enforce,
}

impl Mode {
    pub const fn name(self) -> &'static str {
        match self {
            Self::DryRun => "dry-run",
            Self::Enforce => "enforce",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "dry-run" => Ok(Self::DryRun),
            "enforce" => Ok(Self::Enforce),
            _ => Err(format!(
                "{s:?} is not a mode; use \"dry-run\" (decide and record, change nothing) or \
                 \"enforce\""
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The histogram or counter a rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Watched {
    Runqueue,
    /// Block I/O device time (issue to completion).
    BlockIo,
    /// Block I/O queue time (insert to issue).
    BlockIoQueue,
    Tcp,
    Lock,
    Futex,
}

impl Watched {
    const ALL: [(&'static str, Self); 6] = [
        ("runqueue", Self::Runqueue),
        ("blockio", Self::BlockIo),
        ("blockio_queue", Self::BlockIoQueue),
        ("tcp", Self::Tcp),
        ("lock", Self::Lock),
        ("futex", Self::Futex),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, w)| *w == self)
            .map_or("?", |(n, _)| n)
    }

    pub const fn signal(self) -> Signal {
        match self {
            Self::Runqueue => Signal::Runqueue,
            Self::BlockIo | Self::BlockIoQueue => Signal::BlockIo,
            Self::Tcp => Signal::Tcp,
            Self::Lock => Signal::Lock,
            Self::Futex => Signal::Futex,
        }
    }

    /// Whether it is a latency histogram (else a counter: TCP retransmits).
    pub const fn is_latency(self) -> bool {
        !matches!(self, Self::Tcp)
    }

    /// The breakdowns a rule on it may be judged per.
    const fn pers(self) -> &'static [Per] {
        match self {
            Self::Runqueue | Self::Futex => &[Per::Host, Per::Cgroup, Per::Process],
            Self::BlockIo | Self::BlockIoQueue => &[Per::Host, Per::Disk],
            Self::Tcp => &[Per::Host, Per::Remote],
            Self::Lock => &[Per::Host, Per::LockClass],
        }
    }
}

/// What is computed over a rule's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Statistic {
    /// A percentile (0.5, 0.99...) of a latency histogram.
    Percentile(Quantile),
    /// Mean latency.
    Mean,
    /// Events per second.
    Rate,
}

/// A percentile, kept as its name so it compares and prints exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantile {
    P50,
    P90,
    P99,
    P999,
}

impl Quantile {
    pub const fn fraction(self) -> f64 {
        match self {
            Self::P50 => 0.5,
            Self::P90 => 0.9,
            Self::P99 => 0.99,
            Self::P999 => 0.999,
        }
    }
}

impl Statistic {
    const NAMES: [(&'static str, Self); 6] = [
        ("p50", Self::Percentile(Quantile::P50)),
        ("p90", Self::Percentile(Quantile::P90)),
        ("p99", Self::Percentile(Quantile::P99)),
        ("p999", Self::Percentile(Quantile::P999)),
        ("mean", Self::Mean),
        ("rate", Self::Rate),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("?", |(n, _)| n)
    }

    /// The unit of its values: nanoseconds or events per second.
    pub const fn unit(self) -> &'static str {
        match self {
            Self::Rate => "1/s",
            _ => "ns",
        }
    }
}

/// Which side of the threshold is a breach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Above,
    Below,
}

impl Direction {
    /// Whether `value` is past `threshold` on this side (strictly).
    pub fn past(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Above => value > threshold,
            Self::Below => value < threshold,
        }
    }
}

/// When a change is put back (it always is on exit and after a crash).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollback {
    /// When the rule clears.
    OnClear,
    /// Only when observer exits (or restarts after a crash).
    OnExit,
}

/// Experiment mode: after a change, compare the statistic over `window` before and after it,
/// and undo the change if it got worse by more than `worse_by` (a fraction: 0.1 = 10%).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Experiment {
    pub window: Duration,
    pub worse_by: f64,
}

/// One validated rule.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub watched: Watched,
    pub statistic: Statistic,
    pub per: Per,
    pub direction: Direction,
    /// In the statistic's unit (ns, or events per second).
    pub threshold: f64,
    /// The rule clears when the statistic is back past this (hysteresis); defaults to
    /// `threshold`.
    pub clear: f64,
    /// How long the breach must hold before the rule fires (`for`).
    pub hold: Duration,
    /// How long the clear condition must hold before the rule clears.
    pub clear_for: Duration,
    /// The statistic is computed over this trailing window.
    pub window: Duration,
    /// Fewer events than this in the window: a percentile or mean is not judged.
    pub min_events: u64,
    pub mode: Mode,
    /// Least time between two firings of this rule for one target.
    pub min_interval: Duration,
    /// Firings of this rule in any hour, all targets together.
    pub max_changes_per_hour: u32,
    pub rollback: Rollback,
    pub experiment: Option<Experiment>,
    pub actions: Vec<Box<dyn Action>>,
}

impl Rule {
    /// Whether the clear condition holds for `value`.
    pub fn clears(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value <= self.clear,
            Direction::Below => value >= self.clear,
        }
    }

    /// `runqueue p99 per cgroup > 5ms`: the condition as a person would write it.
    pub fn condition(&self) -> String {
        let op = match self.direction {
            Direction::Above => ">",
            Direction::Below => "<",
        };
        let per = match self.per {
            Per::Host => String::new(),
            p => format!(" per {}", per_name(p)),
        };
        format!(
            "{} {}{per} {op} {}",
            self.watched.name(),
            self.statistic.name(),
            show(self.threshold, self.statistic)
        )
    }
}

/// A value in a statistic's unit, for messages: `5ms`, `12.5/s`.
pub fn show(value: f64, statistic: Statistic) -> String {
    match statistic {
        Statistic::Rate => format!("{}/s", trim(value)),
        _ => crate::render::ns(value),
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

const PERS: [(&str, Per); 6] = [
    ("host", Per::Host),
    ("cgroup", Per::Cgroup),
    ("process", Per::Process),
    ("disk", Per::Disk),
    ("remote", Per::Remote),
    ("lock_class", Per::LockClass),
];

pub fn per_name(per: Per) -> &'static str {
    PERS.iter().find(|(_, p)| *p == per).map_or("?", |(n, _)| n)
}

/// The `[tuning]` section and the rules: everything the rule engine needs.
#[derive(Debug)]
pub struct Tuning {
    /// The default mode of every rule.
    pub mode: Mode,
    pub journal: PathBuf,
    pub state: PathBuf,
    /// Changes across all rules in any hour.
    pub max_changes_per_hour: u32,
    pub rules: Vec<Rule>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            mode: Mode::DryRun,
            journal: DEFAULT_JOURNAL.into(),
            state: DEFAULT_STATE.into(),
            max_changes_per_hour: 20,
            rules: Vec::new(),
        }
    }
}

impl Tuning {
    /// Whether any rule may change something.
    pub fn enforces(&self) -> bool {
        self.rules.iter().any(|r| r.mode == Mode::Enforce)
    }
}

/// `[tuning]` as written.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FileTuning {
    mode: Option<Spanned<String>>,
    journal: Option<Spanned<String>>,
    state: Option<Spanned<String>>,
    max_changes_per_hour: Option<Spanned<i64>>,
}

/// One `[[rules]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRule {
    name: Spanned<String>,
    signal: Spanned<String>,
    statistic: Spanned<String>,
    per: Option<Spanned<String>>,
    above: Option<Spanned<FileValue>>,
    below: Option<Spanned<FileValue>>,
    clear_below: Option<Spanned<FileValue>>,
    clear_above: Option<Spanned<FileValue>>,
    #[serde(rename = "for")]
    hold: Option<Spanned<FileDuration>>,
    clear_for: Option<Spanned<FileDuration>>,
    window: Option<Spanned<FileDuration>>,
    min_events: Option<Spanned<i64>>,
    mode: Option<Spanned<String>>,
    min_interval: Option<Spanned<FileDuration>>,
    max_changes_per_hour: Option<Spanned<i64>>,
    rollback: Option<Spanned<String>>,
    experiment: Option<Spanned<FileExperiment>>,
    #[serde(default)]
    actions: Vec<Spanned<FileAction>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileExperiment {
    window: Spanned<FileDuration>,
    worse_by: Spanned<String>,
}

/// A threshold as written: a number, or a string with a unit (`"5ms"`).
pub(crate) enum FileValue {
    Number(f64),
    Text(String),
}

impl<'de> Deserialize<'de> for FileValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = FileValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number (a rate per second) or a duration such as \"5ms\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FileValue, E> {
                Ok(FileValue::Text(s.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<FileValue, E> {
                Ok(FileValue::Number(n as f64))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<FileValue, E> {
                Ok(FileValue::Number(n))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A problem at `span` of the file; `key` is the dotted path (`rules[1].above`).
#[derive(Debug)]
pub(crate) struct SpecError {
    pub span: Range<usize>,
    pub key: String,
    pub message: String,
}

type SpecResult<T> = std::result::Result<T, SpecError>;

fn err<T>(span: Range<usize>, key: impl Into<String>, message: impl Into<String>) -> SpecResult<T> {
    Err(SpecError {
        span,
        key: key.into(),
        message: message.into(),
    })
}

fn duration(v: &Spanned<FileDuration>, key: &str) -> SpecResult<Duration> {
    v.get_ref()
        .parse()
        .map(|(d, _)| d)
        .or_else(|m| err(v.span(), key, m))
}

fn count(v: &Spanned<i64>, key: &str, min: i64, max: i64) -> SpecResult<i64> {
    let n = *v.get_ref();
    if n < min || n > max {
        return err(
            v.span(),
            key,
            format!("{n} is out of range; use {min} to {max}"),
        );
    }
    Ok(n)
}

/// Validates `[tuning]` and `[[rules]]`.
pub(crate) fn tuning(file: &FileTuning, rules: &[Spanned<FileRule>]) -> SpecResult<Tuning> {
    let mut t = Tuning::default();
    if let Some(v) = &file.mode {
        t.mode = Mode::parse(v.get_ref()).or_else(|m| err(v.span(), "tuning.mode", m))?;
    }
    for (v, key, out) in [
        (&file.journal, "tuning.journal", &mut t.journal),
        (&file.state, "tuning.state", &mut t.state),
    ] {
        if let Some(v) = v {
            let path = PathBuf::from(v.get_ref());
            if !path.is_absolute() {
                return err(
                    v.span(),
                    key,
                    format!(
                        "{:?} is not an absolute path; use one such as /var/lib/observer/...",
                        v.get_ref()
                    ),
                );
            }
            *out = path;
        }
    }
    if t.journal == t.state {
        let span = file.state.as_ref().map_or(0..0, |v| v.span());
        return err(
            span,
            "tuning.state",
            "is the same file as tuning.journal; give each its own file",
        );
    }
    if let Some(v) = &file.max_changes_per_hour {
        t.max_changes_per_hour =
            count(v, "tuning.max_changes_per_hour", 1, MAX_CHANGES_PER_HOUR)? as u32;
    }
    for (i, raw) in rules.iter().enumerate() {
        let rule = rule(raw.get_ref(), i, t.mode)?;
        if let Some(j) = t.rules.iter().position(|r| r.name == rule.name) {
            return err(
                raw.get_ref().name.span(),
                format!("rules[{i}].name"),
                format!(
                    "{:?} is also the name of rules[{j}]; rule names must be unique (they \
                     identify the rule in the journal)",
                    rule.name
                ),
            );
        }
        t.rules.push(rule);
    }
    Ok(t)
}

fn one_of<T: Copy>(
    v: &Spanned<String>,
    key: &str,
    what: &str,
    options: &[(&str, T)],
) -> SpecResult<T> {
    match options.iter().find(|(n, _)| *n == v.get_ref().as_str()) {
        Some((_, t)) => Ok(*t),
        None => err(
            v.span(),
            key,
            format!(
                "unknown {what} {:?}; use one of: {}",
                v.get_ref(),
                options
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}

fn rule(r: &FileRule, i: usize, default_mode: Mode) -> SpecResult<Rule> {
    let key = |field: &str| format!("rules[{i}].{field}");
    let name = r.name.get_ref();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return err(
            r.name.span(),
            key("name"),
            format!(
                "{name:?} is not a rule name; use letters, digits, '-', '_' and '.' (it names \
                 the rule in the journal and in exported records)"
            ),
        );
    }
    let watched = one_of(&r.signal, &key("signal"), "signal", &Watched::ALL)?;
    let statistic = one_of(
        &r.statistic,
        &key("statistic"),
        "statistic",
        &Statistic::NAMES,
    )?;
    if !watched.is_latency() && statistic != Statistic::Rate {
        return err(
            r.statistic.span(),
            key("statistic"),
            format!(
                "{:?} needs a latency histogram, and {} counts events; use \"rate\" (per second)",
                r.statistic.get_ref(),
                watched.name()
            ),
        );
    }
    let per = match &r.per {
        Some(v) => {
            let per = one_of(v, &key("per"), "breakdown", &PERS)?;
            if !watched.pers().contains(&per) {
                return err(
                    v.span(),
                    key("per"),
                    format!(
                        "{} has no per-{} breakdown; use one of: {}",
                        watched.name(),
                        v.get_ref(),
                        watched
                            .pers()
                            .iter()
                            .map(|p| per_name(*p))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            per
        }
        None => Per::Host,
    };
    let value = |v: &Spanned<FileValue>, field: &str| -> SpecResult<f64> {
        let n = match (v.get_ref(), statistic) {
            (FileValue::Number(n), Statistic::Rate) => *n,
            (FileValue::Text(s), Statistic::Rate) => {
                return err(
                    v.span(),
                    key(field),
                    format!("{s:?} is not a rate; give a number of events per second, e.g. 50"),
                );
            }
            (FileValue::Text(s), _) => match crate::config::parse_duration(s) {
                Ok(d) => d.as_nanos() as f64,
                Err(m) => return err(v.span(), key(field), m),
            },
            (FileValue::Number(n), _) => {
                return err(
                    v.span(),
                    key(field),
                    format!(
                        "{n} has no unit; {} is a latency, so give a duration such as \"5ms\" \
                         or \"250us\"",
                        statistic.name()
                    ),
                );
            }
        };
        if !n.is_finite() || n < 0.0 {
            return err(v.span(), key(field), format!("{n} must be zero or more"));
        }
        Ok(n)
    };
    let (direction, threshold, at) = match (&r.above, &r.below) {
        (Some(v), None) => (Direction::Above, value(v, "above")?, v.span()),
        (None, Some(v)) => (Direction::Below, value(v, "below")?, v.span()),
        (Some(_), Some(v)) => {
            return err(
                v.span(),
                key("below"),
                "a rule has one threshold: set either above or below, not both",
            );
        }
        (None, None) => {
            return err(
                r.name.span(),
                key("above"),
                format!("rule {name:?} has no threshold; add above = ... (or below = ...)"),
            );
        }
    };
    let clear = match (direction, &r.clear_below, &r.clear_above) {
        (Direction::Above, Some(v), None) => {
            let c = value(v, "clear_below")?;
            if c > threshold {
                return err(
                    v.span(),
                    key("clear_below"),
                    format!(
                        "{} is above the threshold {}: the rule would clear while still \
                         breached; use a value at or below it",
                        show(c, statistic),
                        show(threshold, statistic)
                    ),
                );
            }
            c
        }
        (Direction::Below, None, Some(v)) => {
            let c = value(v, "clear_above")?;
            if c < threshold {
                return err(
                    v.span(),
                    key("clear_above"),
                    format!(
                        "{} is below the threshold {}: the rule would clear while still \
                         breached; use a value at or above it",
                        show(c, statistic),
                        show(threshold, statistic)
                    ),
                );
            }
            c
        }
        (_, None, None) => threshold,
        (Direction::Above, None, Some(v)) => {
            return err(
                v.span(),
                key("clear_above"),
                "the rule fires above its threshold, so it clears below: use clear_below",
            );
        }
        (Direction::Below, Some(v), _) => {
            return err(
                v.span(),
                key("clear_below"),
                "the rule fires below its threshold, so it clears above: use clear_above",
            );
        }
        (Direction::Above, Some(_), Some(v)) => {
            return err(v.span(), key("clear_above"), "use clear_below only");
        }
    };
    let _ = at;
    let hold = r
        .hold
        .as_ref()
        .map(|v| duration(v, &key("for")))
        .transpose()?
        .unwrap_or(Duration::ZERO);
    let clear_for = r
        .clear_for
        .as_ref()
        .map(|v| duration(v, &key("clear_for")))
        .transpose()?
        .unwrap_or(hold);
    let window = match &r.window {
        Some(v) => {
            let w = duration(v, &key("window"))?;
            if w < Duration::from_secs(1) {
                return err(v.span(), key("window"), "must be at least 1s");
            }
            w
        }
        None => Duration::from_secs(10),
    };
    let min_events = match &r.min_events {
        Some(v) => count(v, &key("min_events"), 0, i64::MAX)? as u64,
        None if statistic == Statistic::Rate => 0,
        None => DEFAULT_MIN_EVENTS,
    };
    let mode = match &r.mode {
        Some(v) => Mode::parse(v.get_ref()).or_else(|m| err(v.span(), key("mode"), m))?,
        None => default_mode,
    };
    let min_interval = r
        .min_interval
        .as_ref()
        .map(|v| duration(v, &key("min_interval")))
        .transpose()?
        .unwrap_or(Duration::from_secs(300));
    let max_changes_per_hour = match &r.max_changes_per_hour {
        Some(v) => count(v, &key("max_changes_per_hour"), 1, MAX_CHANGES_PER_HOUR)? as u32,
        None => 6,
    };
    let rollback = match &r.rollback {
        Some(v) => one_of(
            v,
            &key("rollback"),
            "rollback",
            &[
                ("on-clear", Rollback::OnClear),
                ("on-exit", Rollback::OnExit),
            ],
        )?,
        None => Rollback::OnClear,
    };
    let experiment = match &r.experiment {
        Some(e) => {
            let e = e.get_ref();
            let window = duration(&e.window, &key("experiment.window"))?;
            if window < Duration::from_secs(1) {
                return err(
                    e.window.span(),
                    key("experiment.window"),
                    "must be at least 1s",
                );
            }
            let worse_by = percent(e.worse_by.get_ref())
                .or_else(|m| err(e.worse_by.span(), key("experiment.worse_by"), m))?;
            Some(Experiment { window, worse_by })
        }
        None => None,
    };
    if r.actions.is_empty() {
        return err(
            r.name.span(),
            key("actions"),
            format!(
                "rule {name:?} has no actions; add at least one, e.g. actions = [{{ type = \
                 \"log\" }}]"
            ),
        );
    }
    let mut actions = Vec::new();
    for (j, a) in r.actions.iter().enumerate() {
        actions.push(actions::build(a, per).or_else(|e| {
            err(
                e.span,
                format!("rules[{i}].actions[{j}].{}", e.key),
                e.message,
            )
        })?);
    }
    Ok(Rule {
        name: name.clone(),
        watched,
        statistic,
        per,
        direction,
        threshold,
        clear,
        hold,
        clear_for,
        window,
        min_events,
        mode,
        min_interval,
        max_changes_per_hour,
        rollback,
        experiment,
        actions,
    })
}

/// `"10%"` as 0.1.
fn percent(s: &str) -> std::result::Result<f64, String> {
    let bad = || format!("{s:?} is not a percentage; use one such as \"10%\"");
    let n: f64 = s
        .strip_suffix('%')
        .ok_or_else(bad)?
        .trim()
        .parse()
        .map_err(|_| bad())?;
    if !(0.0..=1000.0).contains(&n) {
        return Err(format!("{s:?} is out of range; use 0% to 1000%"));
    }
    Ok(n / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(percent("10%"), Ok(0.1));
        assert_eq!(percent("0%"), Ok(0.0));
        assert!(percent("10").unwrap_err().contains("\"10%\""));
        assert!(percent("-5%").is_err());
    }

    #[test]
    fn conditions_read_like_the_rule() {
        let raw: FileRule = toml::from_str(
            "name = \"r\"\nsignal = \"runqueue\"\nstatistic = \"p99\"\nper = \"cgroup\"\n\
             above = \"5ms\"\nactions = [{ type = \"log\" }]\n",
        )
        .unwrap();
        let r = rule(&raw, 0, Mode::DryRun).unwrap();
        assert_eq!(r.condition(), "runqueue p99 per cgroup > 5.00ms");
        assert_eq!(r.threshold, 5e6);
        assert_eq!(r.clear, 5e6);
        assert_eq!(r.mode, Mode::DryRun);
        assert_eq!(r.min_events, DEFAULT_MIN_EVENTS);
    }
}
