//! The rule engine: judges every rule on every snapshot, per target, and decides.
//!
//! Per rule and target, a small state machine: *idle* until the statistic is past the
//! threshold for `for`, then it *fires* (subject to the rate limits) and stays *firing* until
//! the clear condition (hysteresis) holds for `clear_for`. Every decision is an audit record,
//! appended to the journal before anything is exported.
//!
//! Safety: in dry-run nothing is changed. In enforce, the original value of a setting is
//! persisted before it is changed; while it is managed, a different value read back means
//! someone else changed it, and observer lets go of it (recorded, not restored); changes are put
//! back when the rule clears (rollback = "on-clear"), when an experiment finds the target got
//! worse, on exit, and at the next start after a crash.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::mpsc,
    time::{Duration, Instant, SystemTime},
};

use super::{
    actions::{self, Breach, Knob, Per, Step, Target},
    journal::{Journal, JournalError, Outcome, Record, rfc3339},
    spec::{Direction, Mode, Rollback, Rule, Tuning, Watched, show},
    stat::{Changes, History, Sample},
    state::{Managed, State, StateError},
};
use crate::agent::metrics::Snapshot;

const HOUR: Duration = Duration::from_secs(3600);

/// Why the engine cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("tuning.journal: {0}")]
    Journal(#[from] JournalError),
    #[error("tuning.state: {0}")]
    State(#[from] StateError),
}

/// A pending experiment: the statistic's window before the change, waiting for the window
/// after it.
struct Pending {
    applied: Instant,
    before: Option<(Sample, f64)>,
}

/// The state of one rule for one target.
#[derive(Default)]
struct Track {
    history: History,
    /// Since when the breach has held (not firing).
    breach_since: Option<Instant>,
    /// Since when the clear condition has held (firing).
    clear_since: Option<Instant>,
    firing: bool,
    /// A rate-limited decision was recorded for the current breach: not again until it ends.
    limited: bool,
    /// Settings this track changed and still manages.
    knobs: Vec<Knob>,
    experiment: Option<Pending>,
    /// When the target was last in a snapshot.
    seen: Option<Instant>,
    /// When the rule last fired for this target: `min_interval` is per target, so one
    /// offender does not shield the others.
    last_fired: Option<Instant>,
}

/// Per-rule rate-limit bookkeeping.
#[derive(Default)]
struct RuleLimits {
    changes: VecDeque<Instant>,
}

/// An `exec` action running on its own thread; its record is written when it ends.
type ExecDone = (
    Record,
    Result<actions::exec::ExecOutcome, actions::ActionError>,
);

pub struct Engine {
    tuning: Tuning,
    changes: Changes,
    tracks: HashMap<(usize, Target), Track>,
    limits: Vec<RuleLimits>,
    /// Changes made by any rule in the last hour.
    changes_made: VecDeque<Instant>,
    journal: Journal,
    state: State,
    last: Option<Instant>,
    exec_tx: mpsc::Sender<ExecDone>,
    exec_rx: mpsc::Receiver<ExecDone>,
    running: usize,
}

impl Engine {
    /// Opens the journal and the state. Call [`Engine::recover`] next.
    pub fn new(tuning: Tuning) -> Result<Self, EngineError> {
        let journal = Journal::open(&tuning.journal)?;
        let state = State::open(&tuning.state)?;
        let (exec_tx, exec_rx) = mpsc::channel();
        Ok(Self {
            limits: tuning.rules.iter().map(|_| RuleLimits::default()).collect(),
            tuning,
            changes: Changes::default(),
            tracks: HashMap::new(),
            changes_made: VecDeque::new(),
            journal,
            state,
            last: None,
            exec_tx,
            exec_rx,
            running: 0,
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.tuning.rules
    }

    /// Puts back what a previous run changed and did not restore (it was killed, or the host
    /// went down), unless someone changed it since.
    pub fn recover(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        for m in self.state.managed().to_vec() {
            let mut r = self.record(&m.rule, Mode::Enforce, "startup");
            r.knob = m.knob.to_string();
            r.message = format!("left changed by the observer run of change {}", m.id);
            match m.knob.read() {
                Ok(current) if current == m.set => match m.knob.write(&m.original) {
                    Ok(()) => {
                        r.outcome = Some(Outcome::Restored);
                        r.before = Some(current);
                        r.after = m.knob.read().ok();
                    }
                    Err(e) => {
                        r.outcome = Some(Outcome::Failed);
                        r.before = Some(current);
                        r.message = format!("cannot restore {}: {e}", m.original);
                    }
                },
                Ok(current) => {
                    r.outcome = Some(Outcome::OutsideChange);
                    r.before = Some(m.set.clone());
                    r.after = Some(current);
                    r.message = format!(
                        "changed by someone else since observer set it; left as it is (the \
                         original was {:?})",
                        m.original
                    );
                }
                Err(e @ actions::ActionError::Gone(_)) => {
                    r.outcome = Some(Outcome::Cleared);
                    r.message = format!("nothing to restore: {e}");
                }
                Err(e) => {
                    r.outcome = Some(Outcome::Failed);
                    r.message = format!("cannot read it to restore {:?}: {e}", m.original);
                }
            }
            // A failed restore stays in the state, to be tried again at the next start.
            if r.outcome != Some(Outcome::Failed) {
                self.forget(&m.knob);
            }
            self.emit(r, &mut out);
        }
        out
    }

    /// Judges every rule on `snapshot`, taken at `now`, and acts. Returns the decisions (each
    /// already in the journal).
    pub fn evaluate(&mut self, snapshot: &Snapshot, now: Instant) -> Vec<Record> {
        let mut out = Vec::new();
        self.finished_execs(&mut out);
        let seconds = self
            .last
            .map_or(0.0, |last| now.duration_since(last).as_secs_f64());
        self.last = Some(now);

        let mut pers: HashMap<Watched, HashSet<Per>> = HashMap::new();
        for r in &self.tuning.rules {
            pers.entry(r.watched).or_default().insert(r.per);
        }
        let mut changes = HashMap::new();
        for (watched, per) in pers {
            let per: Vec<Per> = per.into_iter().collect();
            changes.insert(watched, self.changes.update(snapshot, watched, &per));
        }
        if seconds == 0.0 {
            // The first snapshot is the baseline.
            return out;
        }

        for i in 0..self.tuning.rules.len() {
            let rule = &self.tuning.rules[i];
            let keep = rule
                .window
                .max(rule.experiment.map_or(Duration::ZERO, |e| e.window))
                + rule.window;
            let empty = HashMap::new();
            let targets = changes
                .get(&rule.watched)
                .and_then(|c| c.get(&rule.per))
                .unwrap_or(&empty);
            for (target, sample) in targets {
                let track = self.tracks.entry((i, target.clone())).or_default();
                track.history.push(now, seconds, sample.clone(), keep);
                track.seen = Some(now);
            }
            // Targets not seen this time had no events.
            let zero = if rule.watched.is_latency() {
                Sample::Hist(Box::new(observer_common::Hist::ZERO))
            } else {
                Sample::Count(0)
            };
            for ((_, target), track) in self.tracks.iter_mut().filter(|((r, _), _)| *r == i) {
                if !targets.contains_key(target) {
                    track.history.push(now, seconds, zero.clone(), keep);
                }
            }
        }

        let keys: Vec<(usize, Target)> = self.tracks.keys().cloned().collect();
        for key in keys {
            self.judge(&key, now, &mut out);
        }
        // Targets gone from the snapshots for a window are forgotten, so the map follows the
        // live processes and cgroups (snapshots hold a bounded top N of them).
        let rules = &self.tuning.rules;
        self.tracks.retain(|(i, _), t| {
            t.firing
                || t.breach_since.is_some()
                || !t.knobs.is_empty()
                || t.seen
                    .is_some_and(|s| now.duration_since(s) < rules[*i].window)
                || t.last_fired
                    .is_some_and(|f| now.duration_since(f) < rules[*i].min_interval)
        });
        out
    }

    /// Puts back every change (observer is exiting) and waits up to `deadline` for running
    /// commands.
    pub fn shutdown(&mut self, deadline: Duration) -> Vec<Record> {
        let mut out = Vec::new();
        let keys: Vec<(usize, Target)> = self.tracks.keys().cloned().collect();
        for key in keys {
            let undo = Undo {
                event: "exit",
                why: "observer is exiting",
                outcome: Outcome::RolledBack,
                experiment: None,
            };
            self.rollback(&key, &undo, &mut out);
        }
        let end = Instant::now() + deadline;
        while self.running > 0 {
            let left = end.saturating_duration_since(Instant::now());
            match self.exec_rx.recv_timeout(left) {
                Ok(done) => self.exec_finished(done, &mut out),
                Err(_) => break,
            }
        }
        out
    }

    fn judge(&mut self, key: &(usize, Target), now: Instant, out: &mut Vec<Record>) {
        let rule = &self.tuning.rules[key.0];
        let track = self.tracks.get_mut(key).expect("judged keys exist");
        let window = track.history.between(now - rule.window, now);
        let value = window
            .as_ref()
            .and_then(|(s, secs)| s.statistic(rule.statistic, *secs, rule.min_events));
        let breached = value.is_some_and(|v| rule.direction.past(v, rule.threshold));
        // Too few events to judge counts as clear: quiet is not a breach.
        let clear = value.is_none_or(|v| rule.clears(v));

        if !track.firing {
            if !breached {
                track.breach_since = None;
                track.limited = false;
                return;
            }
            let since = *track.breach_since.get_or_insert(now);
            if now.duration_since(since) >= rule.hold {
                self.fire(key, value.unwrap_or_default(), now, out);
            }
            return;
        }

        self.watch(key, out);
        self.experiment(key, now, out);
        let rule = &self.tuning.rules[key.0];
        let track = self.tracks.get_mut(key).expect("judged keys exist");
        if !clear {
            track.clear_since = None;
            return;
        }
        let since = *track.clear_since.get_or_insert(now);
        if now.duration_since(since) < rule.clear_for {
            return;
        }
        track.firing = false;
        track.clear_since = None;
        track.breach_since = None;
        track.experiment = None;
        let mut r = self.breach_record(key, value, "clear");
        r.outcome = Some(Outcome::Cleared);
        self.emit(r, out);
        if self.tuning.rules[key.0].rollback == Rollback::OnClear {
            let undo = Undo {
                event: "clear",
                why: "the rule cleared",
                outcome: Outcome::RolledBack,
                experiment: None,
            };
            self.rollback(key, &undo, out);
        }
    }

    /// The rule breached for long enough: carry out its actions, if the rate limits allow.
    fn fire(&mut self, key: &(usize, Target), observed: f64, now: Instant, out: &mut Vec<Record>) {
        let rule = &self.tuning.rules[key.0];
        let limits = &mut self.limits[key.0];
        while limits
            .changes
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            limits.changes.pop_front();
        }
        while self
            .changes_made
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            self.changes_made.pop_front();
        }
        let last_fired = self.tracks.get(key).and_then(|t| t.last_fired);
        let limited = if let Some(last) = last_fired
            && now.duration_since(last) < rule.min_interval
        {
            Some(format!(
                "fired {:.0}s ago; min_interval is {:?}",
                now.duration_since(last).as_secs_f64(),
                rule.min_interval
            ))
        } else if limits.changes.len() >= rule.max_changes_per_hour as usize {
            Some(format!(
                "{} changes in the last hour; the rule's max_changes_per_hour is {}",
                limits.changes.len(),
                rule.max_changes_per_hour
            ))
        } else if rule.mode == Mode::Enforce
            && self.changes_made.len() >= self.tuning.max_changes_per_hour as usize
        {
            Some(format!(
                "{} changes by all rules in the last hour; tuning.max_changes_per_hour is {}",
                self.changes_made.len(),
                self.tuning.max_changes_per_hour
            ))
        } else {
            None
        };
        if let Some(why) = limited {
            let track = self.tracks.get_mut(key).expect("fired keys exist");
            if !track.limited {
                track.limited = true;
                let mut r = self.breach_record(key, Some(observed), "fire");
                r.outcome = Some(Outcome::RateLimited);
                r.message = why;
                self.emit(r, out);
            }
            return;
        }
        limits.changes.push_back(now);
        let track = self.tracks.get_mut(key).expect("fired keys exist");
        track.last_fired = Some(now);
        track.firing = true;
        track.limited = false;
        track.breach_since = None;

        let rule = &self.tuning.rules[key.0];
        let breach = Breach {
            rule: rule.name.clone(),
            signal: rule.watched.signal(),
            statistic: rule.statistic.name().to_owned(),
            observed,
            threshold: rule.threshold,
            unit: rule.statistic.unit(),
            window: rule.window,
            target: key.1.clone(),
        };
        let mode = rule.mode;
        let plans: Vec<(String, Result<Vec<Step>, actions::ActionError>)> = rule
            .actions
            .iter()
            .map(|a| (a.describe(), a.plan(&breach)))
            .collect();
        let mut changed = false;
        for (action, plan) in plans {
            let steps = match plan {
                Ok(steps) => steps,
                Err(e) => {
                    let mut r = self.breach_record(key, Some(observed), "fire");
                    r.action = action;
                    r.outcome = Some(Outcome::Failed);
                    r.message = e.to_string();
                    self.emit(r, out);
                    continue;
                }
            };
            for step in steps {
                let mut r = self.breach_record(key, Some(observed), "fire");
                r.action.clone_from(&action);
                match step {
                    Step::Log => r.outcome = Some(Outcome::Logged),
                    Step::Run(cmd) if mode == Mode::Enforce => {
                        // The record is written when the command ends.
                        let tx = self.exec_tx.clone();
                        let breach = breach.clone();
                        self.running += 1;
                        std::thread::spawn(move || {
                            let result = actions::exec::run(&cmd, &breach, &r.id);
                            let _ = tx.send((r, result));
                        });
                        continue;
                    }
                    Step::Run(_) => {
                        r.outcome = Some(Outcome::DryRun);
                        r.message = "dry-run: the command was not run".into();
                    }
                    Step::Set { knob, value } => {
                        changed |= self.set(key, mode, &knob, &value, &mut r, now);
                    }
                }
                self.emit(r, out);
            }
        }
        let rule = &self.tuning.rules[key.0];
        if changed && let Some(e) = rule.experiment {
            let track = self.tracks.get_mut(key).expect("fired keys exist");
            track.experiment = Some(Pending {
                applied: now,
                before: track.history.between(now - e.window, now),
            });
        }
    }

    /// One change, recorded in `r`. Returns whether something changed.
    fn set(
        &mut self,
        key: &(usize, Target),
        mode: Mode,
        knob: &Knob,
        value: &str,
        r: &mut Record,
        now: Instant,
    ) -> bool {
        r.knob = knob.to_string();
        if let Some(m) = self.state.get(knob) {
            r.outcome = Some(Outcome::Conflict);
            r.message = format!(
                "already changed by rule {:?} (change {}); one rule manages a setting at a time",
                m.rule, m.id
            );
            return false;
        }
        let before = match knob.read() {
            Ok(v) => v,
            Err(e) => {
                r.outcome = Some(Outcome::Failed);
                r.message = e.to_string();
                return false;
            }
        };
        r.before = Some(before.clone());
        r.after = Some(value.to_owned());
        if before == value {
            r.outcome = Some(Outcome::Unchanged);
            return false;
        }
        if mode == Mode::DryRun {
            r.outcome = Some(Outcome::DryRun);
            return false;
        }
        // The original is on disk before the change, so a crash cannot lose it.
        let entry = Managed {
            knob: knob.clone(),
            original: before,
            set: value.to_owned(),
            rule: self.tuning.rules[key.0].name.clone(),
            id: r.id.clone(),
        };
        if let Err(e) = self.state.add(entry) {
            r.outcome = Some(Outcome::Failed);
            r.message = format!("not changed: the original cannot be saved: {e}");
            return false;
        }
        if let Err(e) = knob.write(value) {
            r.outcome = Some(Outcome::Failed);
            r.message = e.to_string();
            let _ = self.state.remove(knob);
            return false;
        }
        // What the kernel reports back is what later reads are compared with.
        let after = knob.read().unwrap_or_else(|_| value.to_owned());
        if let Err(e) = self.state.set_value(knob, after.clone()) {
            tracing::warn!("{e}");
        }
        r.after = Some(after);
        r.outcome = Some(Outcome::Applied);
        self.changes_made.push_back(now);
        self.tracks
            .get_mut(key)
            .expect("fired keys exist")
            .knobs
            .push(knob.clone());
        true
    }

    /// Checks that the settings this track manages still have the values observer set.
    fn watch(&mut self, key: &(usize, Target), out: &mut Vec<Record>) {
        let knobs = self.tracks[key].knobs.clone();
        for knob in knobs {
            let Some(m) = self.state.get(&knob).cloned() else {
                continue;
            };
            let current = knob.read();
            if current.as_ref().is_ok_and(|c| *c == m.set) {
                continue;
            }
            let mut r = self.breach_record(key, None, "watch");
            r.knob = knob.to_string();
            r.before = Some(m.set.clone());
            match current {
                Ok(c) => {
                    r.outcome = Some(Outcome::OutsideChange);
                    r.after = Some(c);
                    r.message = format!(
                        "changed by someone else; observer no longer manages it and will not \
                         restore the original {:?}",
                        m.original
                    );
                }
                Err(e) => {
                    r.outcome = Some(Outcome::Failed);
                    r.message = format!("no longer readable ({e}); no longer managed");
                }
            }
            self.forget(&knob);
            self.emit(r, out);
        }
    }

    /// Experiment mode: once the window after the change has passed, compare it with the
    /// window before, and undo the change if the target got worse.
    fn experiment(&mut self, key: &(usize, Target), now: Instant, out: &mut Vec<Record>) {
        let rule = &self.tuning.rules[key.0];
        let Some(e) = rule.experiment else { return };
        let track = self.tracks.get_mut(key).expect("judged keys exist");
        let Some(pending) = &track.experiment else {
            return;
        };
        if now.duration_since(pending.applied) < e.window {
            return;
        }
        let after = track.history.between(pending.applied, now);
        let before = pending.before.clone();
        track.experiment = None;
        let stat = |w: &Option<(Sample, f64)>| {
            w.as_ref()
                .and_then(|(s, secs)| s.statistic(rule.statistic, *secs, rule.min_events))
        };
        let (b, a) = (stat(&before), stat(&after));
        let worse = match (b, a) {
            (Some(b), Some(a)) => Some(match rule.direction {
                Direction::Above => a > b * (1.0 + e.worse_by),
                Direction::Below => a < b * (1.0 - e.worse_by),
            }),
            _ => None,
        };
        let summary = |w: &Option<(Sample, f64)>, v: Option<f64>| {
            serde_json::json!({
                "value": v,
                "seconds": w.as_ref().map(|(_, s)| *s),
                "histogram": w.as_ref().map(|(s, _)| s.summary()),
            })
        };
        let verdict = serde_json::json!({
            "statistic": rule.statistic.name(),
            "unit": rule.statistic.unit(),
            "worse_by": e.worse_by,
            "before": summary(&before, b),
            "after": summary(&after, a),
        });
        let shown = |v: Option<f64>| v.map_or("too few events".into(), |v| show(v, rule.statistic));
        let message = format!(
            "{} {} before the change, {} after",
            rule.statistic.name(),
            shown(b),
            shown(a)
        );
        if worse == Some(true) {
            let why = format!("experiment: the target got worse: {message}");
            let undo = Undo {
                event: "experiment",
                why: &why,
                outcome: Outcome::Reverted,
                experiment: Some(verdict),
            };
            self.rollback(key, &undo, out);
        } else {
            let mut r = self.breach_record(key, a, "experiment");
            r.outcome = Some(Outcome::Kept);
            r.message = match worse {
                Some(_) => format!(
                    "experiment: not worse by more than {:.0}%: {message}",
                    e.worse_by * 100.0
                ),
                None => format!("experiment: inconclusive, the change stays: {message}"),
            };
            r.experiment = Some(verdict);
            self.emit(r, out);
        }
    }

    /// Puts back every setting this track changed.
    fn rollback(&mut self, key: &(usize, Target), undo: &Undo<'_>, out: &mut Vec<Record>) {
        let Undo {
            event,
            why,
            outcome,
            ..
        } = *undo;
        let Some(track) = self.tracks.get_mut(key) else {
            return;
        };
        let knobs = std::mem::take(&mut track.knobs);
        track.experiment = None;
        for knob in knobs {
            let Some(m) = self.state.get(&knob).cloned() else {
                continue;
            };
            let mut r = self.breach_record(key, None, event);
            r.knob = knob.to_string();
            r.message = why.to_owned();
            r.experiment.clone_from(&undo.experiment);
            match knob.read() {
                Ok(current) if current != m.set => {
                    r.outcome = Some(Outcome::OutsideChange);
                    r.before = Some(m.set.clone());
                    r.after = Some(current);
                    r.message = format!(
                        "{why}, but someone else changed it since: left as it is (the original \
                         was {:?})",
                        m.original
                    );
                    self.forget(&knob);
                }
                Ok(current) => match knob.write(&m.original) {
                    Ok(()) => {
                        r.outcome = Some(outcome);
                        r.before = Some(current);
                        r.after = Some(knob.read().unwrap_or(m.original.clone()));
                        self.forget(&knob);
                    }
                    Err(e) => {
                        // Kept in the state: the next start tries again.
                        r.outcome = Some(Outcome::Failed);
                        r.before = Some(current);
                        r.message = format!("{why}, but {:?} cannot be restored: {e}", m.original);
                    }
                },
                Err(e) => {
                    r.outcome = Some(Outcome::Failed);
                    r.message = format!("{why}, but it cannot be read: {e}; no longer managed");
                    self.forget(&knob);
                }
            }
            self.emit(r, out);
        }
    }

    /// Stops managing `knob`.
    fn forget(&mut self, knob: &Knob) {
        for t in self.tracks.values_mut() {
            t.knobs.retain(|k| k != knob);
        }
        if let Err(e) = self.state.remove(knob) {
            tracing::error!("{e}");
        }
    }

    fn finished_execs(&mut self, out: &mut Vec<Record>) {
        while let Ok(done) = self.exec_rx.try_recv() {
            self.exec_finished(done, out);
        }
    }

    fn exec_finished(&mut self, (mut r, result): ExecDone, out: &mut Vec<Record>) {
        self.running -= 1;
        match result {
            Ok(o) => {
                r.outcome = Some(if o.success() {
                    Outcome::Ran
                } else {
                    Outcome::Failed
                });
                r.message = exec_message(&o);
            }
            Err(e) => {
                r.outcome = Some(Outcome::Failed);
                r.message = e.to_string();
            }
        }
        self.emit(r, out);
    }

    /// A record about `key`'s rule with a fresh id.
    fn breach_record(
        &mut self,
        key: &(usize, Target),
        observed: Option<f64>,
        event: &str,
    ) -> Record {
        let rule = &self.tuning.rules[key.0];
        let (name, mode) = (rule.name.clone(), rule.mode);
        let mut r = self.record(&name, mode, event);
        let rule = &self.tuning.rules[key.0];
        r.condition = rule.condition();
        r.target = target_name(&key.1);
        r.observed = observed;
        r.threshold = Some(rule.threshold);
        r.unit = rule.statistic.unit().to_owned();
        r.window_seconds = Some(rule.window.as_secs_f64());
        r
    }

    fn record(&mut self, rule: &str, mode: Mode, event: &str) -> Record {
        Record {
            id: self.journal.id(),
            time: rfc3339(SystemTime::now()),
            rule: rule.to_owned(),
            mode: mode.name().to_owned(),
            event: event.to_owned(),
            ..Record::default()
        }
    }

    /// Journals `r` (before anything else sees it) and hands it out.
    fn emit(&mut self, r: Record, out: &mut Vec<Record>) {
        if let Err(e) = self.journal.append(&r) {
            tracing::error!("audit record {} not journaled: {e}", r.id);
        }
        out.push(r);
    }
}

/// How a command ended, and the start of what it printed.
fn exec_message(o: &actions::exec::ExecOutcome) -> String {
    use actions::exec::ExecStatus;
    let mut m = match o.status {
        ExecStatus::Exited(code) => format!("exited with status {code} after {:.2?}", o.duration),
        ExecStatus::Signaled(sig) => format!("killed by signal {sig} after {:.2?}", o.duration),
        ExecStatus::TimedOut => format!(
            "timed out after {:.2?}; its process group was killed",
            o.duration
        ),
    };
    for (name, text, cut) in [
        ("stdout", &o.stdout, o.stdout_truncated),
        ("stderr", &o.stderr, o.stderr_truncated),
    ] {
        if !text.trim().is_empty() {
            m += &format!(
                "; {name}: {}{}",
                text.trim(),
                if cut { " [...]" } else { "" }
            );
        }
    }
    m
}

/// Why changes are being put back, for their records.
struct Undo<'a> {
    event: &'static str,
    why: &'a str,
    outcome: Outcome,
    experiment: Option<serde_json::Value>,
}

/// `host`, `cgroup /a/b`, `process 123 (nginx)`, `disk sda`...
pub fn target_name(t: &Target) -> String {
    match t {
        Target::Host => "host".into(),
        Target::Cgroup { path, id } => format!("cgroup {path} (id {id})"),
        Target::Process { pid, name, .. } => format!("process {pid} ({name})"),
        Target::Disk { name } => format!("disk {name}"),
        Target::Remote { address } => format!("remote {address}"),
        Target::LockClass { class } => format!("lock class {class}"),
    }
}
