//! The views of one interval from a running agent's snapshots (see [`crate::agent::socket`]).
//!
//! The agent sends cumulative series: per breakdown its `agent.top` busiest keys, sticky, plus
//! one "other" series. One interval is the difference between two consecutive snapshots, series
//! by series (matched by their attributes). A series that is new counts from the previous
//! collection, so all of it is new. A series that vanished was idle for 30 intervals and folded
//! into "other", whose growth then includes that series' old total: it is taken off again, so
//! "other" shows only what happened in the interval. Totals are exact; tables have at most
//! `agent.top` rows plus "other" (the agent's cardinality bound), and "other" is a row of its own.

use std::{collections::HashMap, time::Duration};

use observer_common::Hist;

use super::{
    app::{SignalView, Update, count_table, dropped, hist_table, untimed},
    local::remote_name,
};
use crate::{
    agent::{
        metrics::{OTHER, keys, names},
        socket::{Attr, Attributes, HistogramPoint, WireMetric, WireSnapshot},
    },
    hist::{hist_add, hist_delta},
    signals::{Signal, tcp::RemoteRow},
};

/// Turns the agent's snapshots into per-interval views.
#[derive(Default)]
pub struct Remote {
    prev: Option<WireSnapshot>,
}

impl Remote {
    /// The interval since the previous snapshot; `None` for the first (the baseline). An error
    /// means the agent sent a histogram this observer cannot read.
    pub fn update(&mut self, cur: WireSnapshot) -> Result<Option<Update>, String> {
        let Some(prev) = self.prev.replace(cur) else {
            return Ok(None);
        };
        let cur = self.prev.as_ref().expect("just stored");
        let diff = Diff { cur, prev: &prev };
        Ok(Some(Update {
            views: diff.views()?,
            elapsed: Duration::from_nanos(cur.time_ns.saturating_sub(prev.time_ns)),
        }))
    }
}

/// Two consecutive snapshots.
struct Diff<'a> {
    cur: &'a WireSnapshot,
    prev: &'a WireSnapshot,
}

fn metric<'a>(s: &'a WireSnapshot, name: &str) -> Option<&'a WireMetric> {
    s.metrics.iter().find(|m| m.name() == name)
}

/// The series every breakdown folds the rest into: its attribute values are all "other" (for
/// block I/O it has no attributes); of several such, the one with the fewest attributes (a
/// block I/O series of the "other" disk can have the operation "other").
fn other_series<'a>(attributes: impl Iterator<Item = &'a Attributes>) -> Option<&'a Attributes> {
    attributes
        .filter(|a| a.values().all(|v| *v == Attr::Str(OTHER.into())))
        .min_by_key(|a| a.len())
}

/// `a - b`, bucket by bucket, never below zero.
fn saturating_sub(a: &Hist, b: &Hist) -> Hist {
    let mut out = *a;
    out.zero = out.zero.saturating_sub(b.zero);
    out.sum = out.sum.saturating_sub(b.sum);
    for (o, b) in out.buckets.iter_mut().zip(&b.buckets) {
        *o = o.saturating_sub(*b);
    }
    out
}

fn points(m: Option<&WireMetric>) -> &[HistogramPoint] {
    match m {
        Some(WireMetric::Histogram { points, .. }) => points,
        _ => &[],
    }
}

/// A string attribute, or "other" when absent (the "other" series of block I/O has none).
fn text(a: &Attributes, key: &str) -> String {
    match a.get(key) {
        Some(Attr::Str(s)) => s.clone(),
        Some(Attr::Int(i)) => i.to_string(),
        None => OTHER.to_owned(),
    }
}

fn is_other(a: &Attributes) -> bool {
    a.values().all(|v| *v == Attr::Str(OTHER.into()))
}

impl Diff<'_> {
    /// What each series of a histogram metric gained in the interval.
    fn hists(&self, name: &str) -> Result<Vec<(Attributes, Hist)>, String> {
        let read = |p: &HistogramPoint| p.hist().map_err(|e| format!("{name}: {e}"));
        let cur = points(metric(self.cur, name));
        let prev: HashMap<&Attributes, &HistogramPoint> = points(metric(self.prev, name))
            .iter()
            .map(|p| (&p.attributes, p))
            .collect();
        let mut out = Vec::with_capacity(cur.len());
        for p in cur {
            let before = prev.get(&p.attributes).map(|p| read(p)).transpose()?;
            out.push((
                p.attributes.clone(),
                hist_delta(&read(p)?, &before.unwrap_or(Hist::ZERO)),
            ));
        }
        let mut vanished = Hist::ZERO;
        for p in prev.values() {
            if !cur.iter().any(|c| c.attributes == p.attributes) {
                hist_add(&mut vanished, &read(p)?);
            }
        }
        if let Some(other) = other_series(out.iter().map(|(a, _)| a)).cloned()
            && let Some((_, h)) = out.iter_mut().find(|(a, _)| *a == other)
        {
            *h = saturating_sub(h, &vanished);
        }
        Ok(out)
    }

    /// What each series of a sum metric gained, as [`Self::hists`] does.
    fn sums(&self, name: &str) -> Vec<(Attributes, u64)> {
        let sums = |s| match metric(s, name) {
            Some(WireMetric::Sum { points, .. }) => points
                .iter()
                .map(|p| (p.attributes.clone(), p.value))
                .collect(),
            _ => Vec::new(),
        };
        let (cur, prev): (Vec<(Attributes, u64)>, Vec<(Attributes, u64)>) =
            (sums(self.cur), sums(self.prev));
        let before: HashMap<&Attributes, u64> = prev.iter().map(|(a, n)| (a, *n)).collect();
        let vanished: u64 = prev
            .iter()
            .filter(|(a, _)| !cur.iter().any(|(c, _)| c == a))
            .map(|(_, n)| *n)
            .sum();
        let other = other_series(cur.iter().map(|(a, _)| a)).cloned();
        cur.iter()
            .map(|(a, n)| {
                let mut d = n.saturating_sub(before.get(a).copied().unwrap_or(0));
                if Some(a) == other.as_ref() {
                    d = d.saturating_sub(vanished);
                }
                (a.clone(), d)
            })
            .collect()
    }

    /// The growth of one unbroken-down counter, or of one `signal` series of a counter.
    fn counter(&self, name: &str, signal: Option<Signal>) -> u64 {
        self.sums(name)
            .into_iter()
            .filter(|(a, _)| {
                signal.is_none_or(|s| a.get(keys::SIGNAL) == Some(&Attr::Str(s.name().into())))
            })
            .map(|(_, n)| n)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        metric(self.cur, name).is_some()
    }

    fn views(&self) -> Result<Vec<(Signal, SignalView)>, String> {
        let mut out = Vec::new();
        if self.has(names::RUNQUEUE_LATENCY) {
            let notes = dropped(
                self.counter(names::DROPPED, Some(Signal::Runqueue)),
                "process",
            );
            let view = self.process_view(names::RUNQUEUE_LATENCY, notes)?;
            out.push((Signal::Runqueue, view));
        }
        if self.has(names::BLOCK_IO_DEVICE_TIME) {
            let series = self.hists(names::BLOCK_IO_DEVICE_TIME)?;
            let tables = vec![
                hist_table(
                    "disks x ops (device time)",
                    series.iter().map(|(a, h)| {
                        let name = if a.is_empty() {
                            OTHER.to_owned()
                        } else {
                            format!(
                                "{} {}",
                                text(a, keys::DISK_DEVICE),
                                text(a, keys::IO_OPERATION)
                            )
                        };
                        (name, *h)
                    }),
                    <[String]>::to_vec,
                ),
                hist_table(
                    "ops (device time)",
                    series
                        .iter()
                        .map(|(a, h)| (text(a, keys::IO_OPERATION), *h)),
                    <[String]>::to_vec,
                ),
            ];
            let notes = [
                dropped(self.counter(names::DROPPED, Some(Signal::BlockIo)), "disk"),
                untimed(self.counter(names::BLOCK_IO_UNTIMED, None)),
            ];
            out.push((
                Signal::BlockIo,
                SignalView::latency(
                    &total(&series),
                    tables,
                    notes.into_iter().flatten().collect(),
                ),
            ));
        }
        if self.has(names::TCP_RETRANSMITS) {
            let series = self.sums(names::TCP_RETRANSMITS);
            let count = series.iter().map(|(_, n)| n).sum();
            let rows = series.iter().map(|(a, n)| (endpoint(a), *n));
            let notes = dropped(
                self.counter(names::DROPPED, Some(Signal::Tcp)),
                "remote endpoint",
            );
            out.push((
                Signal::Tcp,
                SignalView {
                    count,
                    latency: None,
                    buckets: Vec::new(),
                    tables: vec![count_table("remote endpoints", rows)],
                    notes: notes.into_iter().collect(),
                },
            ));
        }
        if self.has(names::LOCK_CONTENTION_WAIT) {
            let series = self.hists(names::LOCK_CONTENTION_WAIT)?;
            let table = hist_table(
                "lock classes",
                series.iter().map(|(a, h)| (text(a, keys::LOCK_CLASS), *h)),
                <[String]>::to_vec,
            );
            out.push((
                Signal::Lock,
                SignalView::latency(&total(&series), vec![table], Vec::new()),
            ));
        }
        if self.has(names::FUTEX_WAIT) {
            let notes = dropped(self.counter(names::DROPPED, Some(Signal::Futex)), "process");
            out.push((Signal::Futex, self.process_view(names::FUTEX_WAIT, notes)?));
        }
        Ok(out)
    }

    /// Run-queue latency and futex waits: series by (cgroup, process), shown as tables of
    /// processes and of cgroups.
    fn process_view(&self, name: &str, note: Option<String>) -> Result<SignalView, String> {
        let series = self.hists(name)?;
        let process = |a: &Attributes| {
            if is_other(a) {
                OTHER.to_owned()
            } else {
                format!(
                    "{} {}",
                    text(a, keys::PROCESS_PID),
                    text(a, keys::PROCESS_NAME)
                )
            }
        };
        let tables = vec![
            hist_table(
                "processes",
                series.iter().map(|(a, h)| (process(a), *h)),
                <[String]>::to_vec,
            ),
            hist_table(
                "cgroups",
                series.iter().map(|(a, h)| (text(a, keys::CGROUP_PATH), *h)),
                <[String]>::to_vec,
            ),
        ];
        Ok(SignalView::latency(
            &total(&series),
            tables,
            note.into_iter().collect(),
        ))
    }
}

fn total(series: &[(Attributes, Hist)]) -> Hist {
    let mut total = Hist::ZERO;
    series.iter().for_each(|(_, h)| hist_add(&mut total, h));
    total
}

/// A TCP series' row name, as the local view names it.
fn endpoint(a: &Attributes) -> String {
    if is_other(a) {
        return OTHER.to_owned();
    }
    let port = |key| match a.get(key) {
        Some(Attr::Int(p)) => u16::try_from(*p).unwrap_or(0),
        _ => 0,
    };
    let row = RemoteRow {
        family: if text(a, keys::NETWORK_TYPE) == "ipv6" {
            "ipv6"
        } else {
            "ipv4"
        },
        remote_addr: text(a, keys::PEER_ADDRESS),
        remote_port: port(keys::PEER_PORT),
        local_port: port(keys::LOCAL_PORT),
        // Only the endpoint is used: the state comes as text.
        state: "",
        count: 0,
    };
    remote_name(&row.endpoint(), row.local_port, &text(a, keys::TCP_STATE))
}
