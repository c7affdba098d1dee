//! From the agent's snapshots to what rules judge: the change of each target's histogram (or
//! counter) over one interval, and statistics over a trailing window of those changes.
//!
//! Snapshots are cumulative, with a sticky top N of series per breakdown plus one "other"
//! series. A series that goes idle is folded into "other", so the sum of a cgroup's process
//! series can shrink; changes are therefore taken per series and then added up per target. The
//! host total is the difference of the sums of every series, which folding does not change.

use std::collections::{HashMap, VecDeque};

use observer_common::Hist;

use super::{
    actions::{Per, Target},
    spec::{Statistic, Watched},
};
use crate::{
    agent::metrics::{Attributes, Data, OTHER, Snapshot, Value, keys, names},
    hist::{self, count, hist_add, hist_delta},
};

/// A histogram or a count of events.
#[derive(Clone, Debug, PartialEq)]
pub enum Sample {
    Hist(Box<Hist>),
    Count(u64),
}

impl Sample {
    fn zero(watched: Watched) -> Self {
        if watched.is_latency() {
            Self::Hist(Box::new(Hist::ZERO))
        } else {
            Self::Count(0)
        }
    }

    pub fn add(&mut self, other: &Sample) {
        match (self, other) {
            (Self::Hist(a), Self::Hist(b)) => hist_add(a, b),
            (Self::Count(a), Self::Count(b)) => *a += b,
            _ => {}
        }
    }

    fn minus(&self, earlier: &Sample) -> Sample {
        match (self, earlier) {
            (Self::Hist(a), Self::Hist(b)) => Self::Hist(Box::new(hist_delta(a, b))),
            (Self::Count(a), Self::Count(b)) => Self::Count(a.saturating_sub(*b)),
            _ => self.clone(),
        }
    }

    pub fn events(&self) -> u64 {
        match self {
            Self::Hist(h) => count(h),
            Self::Count(n) => *n,
        }
    }

    /// The statistic over `seconds`; `None` when fewer than `min_events` events make it
    /// meaningless.
    pub fn statistic(&self, statistic: Statistic, seconds: f64, min_events: u64) -> Option<f64> {
        let events = self.events();
        if events < min_events {
            return None;
        }
        match (statistic, self) {
            (Statistic::Rate, _) => Some(events as f64 / seconds.max(1e-9)),
            (_, Self::Count(_)) => None,
            (_, Self::Hist(_)) if events == 0 => None,
            (Statistic::Mean, Self::Hist(h)) => Some(h.sum as f64 / events as f64),
            (Statistic::Percentile(q), Self::Hist(h)) => Some(hist::percentile(h, q.fraction())),
        }
    }

    /// p50/p99/p99.9 and the count, for audit records of experiments.
    pub fn summary(&self) -> serde_json::Value {
        match self {
            Self::Hist(h) => serde_json::json!({
                "count": count(h),
                "p50_ns": hist::percentile(h, 0.5),
                "p99_ns": hist::percentile(h, 0.99),
                "p999_ns": hist::percentile(h, 0.999),
            }),
            Self::Count(n) => serde_json::json!({ "count": n }),
        }
    }
}

/// The metric a watched signal is exported as.
fn metric(watched: Watched) -> &'static str {
    match watched {
        Watched::Runqueue => names::RUNQUEUE_WAIT_DURATION,
        Watched::BlockIo => names::BLOCK_IO_DEVICE_DURATION,
        Watched::BlockIoQueue => names::BLOCK_IO_QUEUE_DURATION,
        Watched::Tcp => names::TCP_RETRANSMITS,
        Watched::Lock => names::LOCK_CONTENTION_DURATION,
        Watched::Futex => names::FUTEX_WAIT_DURATION,
    }
}

fn attribute<'a>(attributes: &'a Attributes, key: &str) -> Option<&'a Value> {
    attributes.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn text(attributes: &Attributes, key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        Value::Str(s) if s != OTHER => Some(s.clone()),
        Value::Str(_) => None,
        Value::Int(n) => Some(n.to_string()),
    }
}

fn int(attributes: &Attributes, key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        Value::Int(n) => Some(*n),
        Value::Str(_) => None,
    }
}

/// The target a series belongs to for a breakdown; `None` for "other" and series the breakdown
/// cannot name.
fn target(attributes: &Attributes, per: Per) -> Option<Target> {
    match per {
        Per::Host => Some(Target::Host),
        Per::Cgroup => Some(Target::Cgroup {
            id: u64::try_from(int(attributes, keys::CGROUP_ID)?).ok()?,
            path: text(attributes, keys::CGROUP_PATH).unwrap_or_default(),
        }),
        Per::Process => Some(Target::Process {
            pid: u32::try_from(int(attributes, keys::PROCESS_PID)?).ok()?,
            name: text(attributes, keys::PROCESS_COMM).unwrap_or_default(),
            cgroup_path: text(attributes, keys::CGROUP_PATH).unwrap_or_default(),
        }),
        Per::Disk => Some(Target::Disk {
            name: text(attributes, keys::DEVICE)?,
        }),
        Per::Remote => Some(Target::Remote {
            address: text(attributes, keys::PEER_ADDRESS)?,
        }),
        Per::LockClass => Some(Target::LockClass {
            class: text(attributes, keys::LOCK_CLASS)?,
        }),
    }
}

/// The series of one metric in a snapshot, cumulative.
fn series(snapshot: &Snapshot, watched: Watched) -> Vec<(&Attributes, Sample)> {
    let Some(m) = snapshot.metrics.iter().find(|m| m.name == metric(watched)) else {
        return Vec::new();
    };
    match &m.data {
        Data::Histogram(points) => points
            .iter()
            .map(|p| (&p.attributes, Sample::Hist(p.hist.clone())))
            .collect(),
        Data::Sum(points) => points
            .iter()
            .map(|p| (&p.attributes, Sample::Count(p.value)))
            .collect(),
        Data::Gauge(_) => Vec::new(),
    }
}

/// Turns consecutive snapshots into per-interval changes, per series.
#[derive(Default)]
pub struct Changes {
    /// The previous snapshot's cumulative value of every series, per watched metric.
    previous: HashMap<Watched, HashMap<Attributes, Sample>>,
}

impl Changes {
    /// The change of every target of `per` since the previous snapshot. The first snapshot of
    /// a metric only sets the baseline (and gives nothing).
    pub fn update(
        &mut self,
        snapshot: &Snapshot,
        watched: Watched,
        pers: &[Per],
    ) -> HashMap<Per, HashMap<Target, Sample>> {
        let now: HashMap<Attributes, Sample> = series(snapshot, watched)
            .into_iter()
            .map(|(a, s)| (a.clone(), s))
            .collect();
        let previous = self.previous.insert(watched, now);
        let (Some(previous), Some(now)) = (previous, self.previous.get(&watched)) else {
            return HashMap::new();
        };
        let mut out: HashMap<Per, HashMap<Target, Sample>> = HashMap::new();
        for &per in pers {
            let targets = out.entry(per).or_default();
            if per == Per::Host {
                let mut total = Sample::zero(watched);
                let mut before = Sample::zero(watched);
                now.values().for_each(|s| total.add(s));
                previous.values().for_each(|s| before.add(s));
                targets.insert(Target::Host, total.minus(&before));
                continue;
            }
            for (attributes, cumulative) in now {
                let Some(target) = target(attributes, per) else {
                    continue;
                };
                // A series absent before started within this interval: all of it is new.
                let change = match previous.get(attributes) {
                    Some(before) => cumulative.minus(before),
                    None => cumulative.clone(),
                };
                targets
                    .entry(target)
                    .or_insert_with(|| Sample::zero(watched))
                    .add(&change);
            }
        }
        out
    }
}

/// The last changes of one target, each with the time it was observed, newest last.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<(std::time::Instant, f64, Sample)>,
}

impl History {
    /// Adds the change over the `seconds` before `at`, and forgets what is older than `keep`.
    pub fn push(
        &mut self,
        at: std::time::Instant,
        seconds: f64,
        sample: Sample,
        keep: std::time::Duration,
    ) {
        self.samples.push_back((at, seconds, sample));
        while let Some((t, _, _)) = self.samples.front() {
            if at.duration_since(*t) >= keep {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// The sum of the changes observed in `(from, to]`, and the seconds they cover.
    pub fn between(
        &self,
        from: std::time::Instant,
        to: std::time::Instant,
    ) -> Option<(Sample, f64)> {
        let mut it = self
            .samples
            .iter()
            .filter(|(t, _, _)| *t > from && *t <= to);
        let (_, first_seconds, first) = it.next()?;
        let mut sum = first.clone();
        let mut seconds = *first_seconds;
        for (_, s, sample) in it {
            sum.add(sample);
            seconds += s;
        }
        Some((sum, seconds))
    }

    /// The last observation's time.
    pub fn last(&self) -> Option<std::time::Instant> {
        self.samples.back().map(|(t, _, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime};

    use super::*;
    use crate::agent::metrics::{HistogramPoint, Metric};

    fn hist(values: &[(u64, u64)]) -> Box<Hist> {
        let mut h = Box::new(Hist::ZERO);
        for &(v, n) in values {
            h.buckets[observer_common::hist::slot(v)] += n;
            h.sum += v * n;
        }
        h
    }

    fn snapshot(points: Vec<(Attributes, Box<Hist>)>) -> Snapshot {
        Snapshot {
            time: SystemTime::now(),
            metrics: vec![Metric {
                name: names::RUNQUEUE_WAIT_DURATION,
                description: "",
                unit: "ns",
                data: Data::Histogram(
                    points
                        .into_iter()
                        .map(|(attributes, hist)| HistogramPoint {
                            attributes,
                            start: SystemTime::UNIX_EPOCH,
                            hist,
                        })
                        .collect(),
                ),
            }],
        }
    }

    fn process(cgroup: i64, pid: i64) -> Attributes {
        vec![
            (keys::CGROUP_PATH, format!("/cg{cgroup}").into()),
            (keys::PROCESS_COMM, "p".into()),
            (keys::CGROUP_ID, cgroup.into()),
            (keys::PROCESS_PID, pid.into()),
        ]
    }

    fn other() -> Attributes {
        vec![
            (keys::CGROUP_PATH, OTHER.into()),
            (keys::PROCESS_COMM, OTHER.into()),
        ]
    }

    #[test]
    fn changes_per_target_survive_a_series_folded_into_other() {
        let mut c = Changes::default();
        let pers = [Per::Host, Per::Cgroup];
        let first = snapshot(vec![
            (process(7, 1), hist(&[(1000, 10)])),
            (process(7, 2), hist(&[(1000, 5)])),
            (other(), hist(&[])),
        ]);
        assert!(c.update(&first, Watched::Runqueue, &pers).is_empty());
        // pid 2 idles out: its 5 events move to "other"; pid 1 gets 3 more; a new pid 3 in
        // cgroup 8 has 4.
        let second = snapshot(vec![
            (process(7, 1), hist(&[(1000, 13)])),
            (process(8, 3), hist(&[(2000, 4)])),
            (other(), hist(&[(1000, 5)])),
        ]);
        let out = c.update(&second, Watched::Runqueue, &pers);
        assert_eq!(out[&Per::Host][&Target::Host].events(), 7);
        let cg = |id: u64| Target::Cgroup {
            id,
            path: format!("/cg{id}"),
        };
        assert_eq!(out[&Per::Cgroup][&cg(7)].events(), 3);
        assert_eq!(out[&Per::Cgroup][&cg(8)].events(), 4);
        assert_eq!(out[&Per::Cgroup].len(), 2, "other is not a target");
    }

    #[test]
    fn windows_add_up_the_changes_inside_them() {
        let t0 = Instant::now();
        let mut h = History::default();
        let keep = Duration::from_secs(30);
        for i in 1..=5u64 {
            h.push(
                t0 + Duration::from_secs(i * 10),
                10.0,
                Sample::Count(i),
                keep,
            );
        }
        // Only the samples at 30, 40 and 50 s are kept (less than 30 s before the last).
        let (sum, seconds) = h.between(t0, t0 + Duration::from_secs(50)).unwrap();
        assert_eq!((sum, seconds), (Sample::Count(3 + 4 + 5), 30.0));
        let (sum, _) = h
            .between(t0 + Duration::from_secs(35), t0 + Duration::from_secs(50))
            .unwrap();
        assert_eq!(sum, Sample::Count(9));
        assert!(
            h.between(t0 + Duration::from_secs(50), t0 + Duration::from_secs(60))
                .is_none()
        );
        let rate = Sample::Count(9).statistic(Statistic::Rate, 20.0, 0);
        assert_eq!(rate, Some(0.45));
    }

    #[test]
    fn percentiles_need_enough_events() {
        let s = Sample::Hist(hist(&[(1_000_000, 30)]));
        let q = Statistic::Percentile(super::super::spec::Quantile::P99);
        assert!(s.statistic(q, 10.0, 31).is_none());
        let p99 = s.statistic(q, 10.0, 20).unwrap();
        // 1 ms is in the bucket (2^19.75, 2^20] ns.
        assert!(p99 > 880_000.0 && p99 <= 1_048_576.0, "{p99}");
        assert_eq!(s.statistic(Statistic::Rate, 10.0, 0), Some(3.0));
    }
}
