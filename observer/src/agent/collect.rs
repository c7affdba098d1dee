//! The collector: reads the kernel's maps every interval, keeps cumulative counts since the
//! agent started, and bounds every breakdown to its top N series plus one "other" series.
//!
//! Series must stay monotonic for cumulative export, so a breakdown's membership is sticky: a key
//! enters while there is room, in order of activity, and leaves only after [`IDLE_INTERVALS`]
//! intervals without activity, when its counts are folded into "other". Nothing is ever lost: at
//! every snapshot the series of a metric add up to everything measured since the agent started.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant, SystemTime},
};

use observer_common::{
    Hist, ProcessKey,
    blockio::{BY_DISK_ENTRIES, DiskKey, OP_READ, OP_WRITE, OPS, STAGE_DEVICE, STAGE_QUEUE},
    lock::{CLASS_NAMES, CLASSES},
    tcp::RemoteKey,
};

use super::metrics::{
    Attributes, Data, GaugePoint, HistogramPoint, Metric, OTHER, Snapshot, SumPoint, keys, names,
};
use crate::{
    cgroup::{self, Workload},
    ebpf::Loaded,
    hist::{SparseHist, hist_add},
    record::{Deltas, Snapshot as Raw},
    signals::{Process, ReadError, Signal, blockio, process_name, tcp},
};

/// Intervals without activity after which a series leaves its breakdown (5 minutes at the
/// default 10 s interval).
pub const IDLE_INTERVALS: u32 = 30;

/// What a breakdown accumulates: a histogram or a count.
pub trait Accumulate: Clone {
    fn zero() -> Self;
    fn add(&mut self, other: &Self);
    /// How much happened, to rank keys by activity.
    fn weight(&self) -> u64;
}

impl Accumulate for Hist {
    fn zero() -> Self {
        Hist::ZERO
    }
    fn add(&mut self, other: &Self) {
        hist_add(self, other);
    }
    fn weight(&self) -> u64 {
        crate::hist::count(self)
    }
}

impl Accumulate for u64 {
    fn zero() -> Self {
        0
    }
    fn add(&mut self, other: &Self) {
        *self = self.wrapping_add(*other);
    }
    fn weight(&self) -> u64 {
        *self
    }
}

/// One key's growth in an interval, as a breakdown of `V`s takes it: a `V` itself, or a lighter
/// form (a run-queue interval with full maps has 4096 process deltas, which stay sparse: only the
/// keys that become series are made dense).
pub trait Delta<V> {
    /// How much happened, to rank keys by activity.
    fn weight(&self) -> u64;
    fn add_to(&self, value: &mut V);
    fn into_value(self) -> V;
}

impl<V: Accumulate> Delta<V> for V {
    fn weight(&self) -> u64 {
        Accumulate::weight(self)
    }
    fn add_to(&self, value: &mut V) {
        value.add(self);
    }
    fn into_value(self) -> V {
        self
    }
}

impl Delta<Hist> for &SparseHist {
    fn weight(&self) -> u64 {
        self.count()
    }
    fn add_to(&self, value: &mut Hist) {
        SparseHist::add_to(self, value);
    }
    fn into_value(self) -> Hist {
        self.to_dense()
    }
}

struct Tracked<V> {
    attributes: Attributes,
    value: V,
    start: SystemTime,
    idle: u32,
}

/// One breakdown: at most `top` tracked keys, and "other".
pub struct Breakdown<K, V> {
    top: usize,
    tracked: HashMap<K, Tracked<V>>,
    other: V,
    other_attributes: Attributes,
    start: SystemTime,
}

impl<K: Eq + Hash + Clone + Ord, V: Accumulate> Breakdown<K, V> {
    pub fn new(top: usize, start: SystemTime, other_attributes: Attributes) -> Self {
        Self {
            top,
            tracked: HashMap::new(),
            other: V::zero(),
            other_attributes,
            start,
        }
    }

    /// Adds one interval's deltas. `since` is when the interval began (a new series counts
    /// from then); `label` names a key when it enters.
    pub fn update<D: Delta<V>>(
        &mut self,
        deltas: impl IntoIterator<Item = (K, D)>,
        unattributed: &V,
        since: SystemTime,
        label: impl Fn(&K) -> Attributes,
    ) {
        self.other.add(unattributed);
        let mut newcomers = Vec::new();
        for t in self.tracked.values_mut() {
            t.idle = t.idle.saturating_add(1);
        }
        for (key, delta) in deltas {
            match self.tracked.get_mut(&key) {
                Some(t) => {
                    delta.add_to(&mut t.value);
                    t.idle = 0;
                }
                None => newcomers.push((key, delta)),
            }
        }
        // Idle series make room before newcomers are considered.
        let idle: Vec<K> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.idle >= IDLE_INTERVALS)
            .map(|(k, _)| k.clone())
            .collect();
        for key in idle {
            if let Some(t) = self.tracked.remove(&key) {
                self.other.add(&t.value);
            }
        }
        // The busiest enter while there is room; ties by key so the choice is stable. Only
        // which ones enter matters, not their order: with a full map there are thousands of
        // newcomers and little or no room, so they are partitioned rather than sorted.
        let room = self.top.saturating_sub(self.tracked.len());
        if (1..newcomers.len()).contains(&room) {
            newcomers.select_nth_unstable_by(room - 1, |a, b| {
                b.1.weight().cmp(&a.1.weight()).then_with(|| a.0.cmp(&b.0))
            });
        }
        let rest = newcomers.split_off(room.min(newcomers.len()));
        for (key, delta) in newcomers {
            let attributes = label(&key);
            self.tracked.insert(
                key,
                Tracked {
                    attributes,
                    value: delta.into_value(),
                    start: since,
                    idle: 0,
                },
            );
        }
        for (_, delta) in rest {
            delta.add_to(&mut self.other);
        }
    }

    /// Lets `f` add to the attributes of tracked series (names that were not known when the
    /// series entered). Series are identified by their attributes downstream, so `f` should
    /// only ever add, and each attribute once.
    pub fn relabel(&mut self, mut f: impl FnMut(&K, &mut Attributes)) {
        for (key, t) in &mut self.tracked {
            f(key, &mut t.attributes);
        }
    }

    /// Every series: the tracked ones (in key order, for stable output) then "other".
    pub fn series(&self) -> impl Iterator<Item = (&Attributes, &V, SystemTime)> {
        let mut tracked: Vec<(&K, &Tracked<V>)> = self.tracked.iter().collect();
        tracked.sort_by(|a, b| a.0.cmp(b.0));
        tracked
            .into_iter()
            .map(|(_, t)| (&t.attributes, &t.value, t.start))
            .chain(std::iter::once((
                &self.other_attributes,
                &self.other,
                self.start,
            )))
    }
}

impl<K: Eq + Hash + Clone + Ord> Breakdown<K, Hist> {
    fn histograms(&self) -> Data {
        Data::Histogram(
            self.series()
                .map(|(a, h, start)| HistogramPoint {
                    attributes: a.clone(),
                    start,
                    hist: Box::new(*h),
                })
                .collect(),
        )
    }
}

/// Cumulative counters (not broken down).
#[derive(Default)]
struct Counters {
    tcp_failed: u64,
    lock_mismatched: u64,
    block_io_untimed: u64,
    dropped: HashMap<Signal, u64>,
}

/// Reads the kernel's maps and produces [`Snapshot`]s.
pub struct Collector {
    start: SystemTime,
    prev: Raw,
    prev_time: SystemTime,
    runqueue: Breakdown<ProcessKey, Hist>,
    futex: Breakdown<ProcessKey, Hist>,
    block_device: Breakdown<DiskKey, Hist>,
    block_queue: Breakdown<DiskKey, Hist>,
    tcp: Breakdown<RemoteKey, u64>,
    lock: [Hist; CLASSES],
    counters: Counters,
    /// The last collection's deltas and the time they cover, for `observer top` (its clients
    /// want intervals, not cumulative totals), until taken.
    interval: Option<(Deltas, Duration)>,
}

fn process_other() -> Attributes {
    vec![
        (keys::CGROUP_PATH, OTHER.into()),
        (keys::PROCESS_COMM, OTHER.into()),
    ]
}

impl Collector {
    /// Everything counted since the programs were attached is exported: the first collection
    /// is a delta from the maps as loaded ([`Raw::zero`]).
    pub fn new(loaded: &Loaded, top: usize) -> Self {
        let start = SystemTime::now() - loaded.attached.elapsed();
        let prev = Raw::zero(loaded);
        Self {
            start,
            prev,
            prev_time: start,
            runqueue: Breakdown::new(top, start, process_other()),
            futex: Breakdown::new(top, start, process_other()),
            // Disks are few and bounded by the kernel map: all of them are series.
            block_device: Breakdown::new(BY_DISK_ENTRIES as usize, start, Vec::new()),
            block_queue: Breakdown::new(BY_DISK_ENTRIES as usize, start, Vec::new()),
            tcp: Breakdown::new(top, start, vec![(keys::PEER_ADDRESS, OTHER.into())]),
            lock: [Hist::ZERO; CLASSES],
            counters: Counters::default(),
            interval: None,
        }
    }

    /// Reads the maps and returns everything measured since the agent started.
    pub fn collect(
        &mut self,
        loaded: &mut Loaded,
        extra: Vec<Metric>,
    ) -> Result<Snapshot, ReadError> {
        let began = Instant::now();
        // Replaced below anyway: dropped first, so that with full maps the last interval's deltas
        // are not held alongside the new read, the previous one and the new deltas (a copy of a
        // full per-process map is 4096 entries, each a sparse histogram).
        self.interval = None;
        let mut cur = Raw::read(loaded)?;
        let now = SystemTime::now();
        let d = Deltas::between(&cur, &self.prev);
        let since = self.prev_time;
        // Every cgroup of the interval in one batch: without file handles the resolver walks the
        // hierarchy at most once a second, so one id at a time would leave all but the first
        // new cgroup unnamed (and a series keeps the attributes it entered with).
        let cgroup_ids: Vec<u64> = [
            d.runqueue.as_ref().map(|d| &d.by_process),
            d.futex.as_ref().map(|d| &d.by_process),
        ]
        .into_iter()
        .flatten()
        .flat_map(|m| m.keys().map(|k| k.cgroup))
        .collect::<std::collections::BTreeSet<u64>>()
        .into_iter()
        .collect();
        let workloads = cgroup::resolve_all(&cgroup_ids);

        if let Some(d) = &d.runqueue {
            let procs = d.by_process.iter().map(|(k, p)| (*k, &p.hist));
            self.runqueue.update(procs, &d.unattributed, since, |k| {
                process_attributes(k, &d.by_process, &workloads)
            });
            self.runqueue.relabel(|k, a| add_names(a, &workloads, k));
            *self.counters.dropped.entry(Signal::Runqueue).or_default() += d.dropped;
        }
        if let Some(d) = &d.futex {
            let procs = d.by_process.iter().map(|(k, p)| (*k, &p.hist));
            self.futex.update(procs, &d.unattributed, since, |k| {
                process_attributes(k, &d.by_process, &workloads)
            });
            self.futex.relabel(|k, a| add_names(a, &workloads, k));
            *self.counters.dropped.entry(Signal::Futex).or_default() += d.dropped;
        }
        if let Some(d) = &d.blockio {
            // The unattributed latencies of each operation are one "other disk" key per op.
            let other = |op: usize| DiskKey {
                dev: u32::MAX,
                op: op as u32,
            };
            let device = d
                .by_disk
                .iter()
                .map(|(k, h)| (*k, h.device))
                .chain((0..OPS).map(|op| (other(op), d.unattributed[STAGE_DEVICE][op])));
            let queue = d
                .by_disk
                .iter()
                .map(|(k, h)| (*k, h.queue))
                .chain((0..OPS).map(|op| (other(op), d.unattributed[STAGE_QUEUE][op])));
            let device: Vec<_> = device.filter(|(_, h)| crate::hist::count(h) > 0).collect();
            let queue: Vec<_> = queue.filter(|(_, h)| crate::hist::count(h) > 0).collect();
            self.block_device
                .update(device, &Hist::ZERO, since, disk_attributes);
            self.block_queue
                .update(queue, &Hist::ZERO, since, disk_attributes);
            self.counters.block_io_untimed += d.dropped_inflight;
            *self.counters.dropped.entry(Signal::BlockIo).or_default() += d.dropped_by_disk;
        }
        if let Some(d) = &d.tcp {
            self.tcp.update(
                d.by_remote.iter().map(|(k, n)| (*k, *n)),
                &d.unattributed,
                since,
                remote_attributes,
            );
            self.counters.tcp_failed += d.failed;
            *self.counters.dropped.entry(Signal::Tcp).or_default() += d.unattributed;
        }
        if let Some(d) = &d.lock {
            for (total, delta) in self.lock.iter_mut().zip(&d.by_class) {
                hist_add(total, delta);
            }
            self.counters.lock_mismatched += d.mismatched;
        }
        // After the deltas: the exited processes' and idle peers' last counts are in them.
        cur.forget_stale(&mut loaded.ebpf, &self.prev)?;
        let fullness = cur
            .map_entries()
            .into_iter()
            .map(|(map, entries, capacity)| GaugePoint {
                attributes: vec![(keys::MAP, map.into())],
                value: entries as f64 / f64::from(capacity),
            })
            .collect();
        self.prev = cur;
        self.prev_time = now;
        self.interval = Some((d, now.duration_since(since).unwrap_or_default()));

        let mut metrics = self.metrics(loaded);
        metrics.push(Metric {
            name: names::MAP_UTILIZATION,
            description: "How full each bounded breakdown map in the kernel is (entries / capacity); when full, new keys go to \"other\".",
            unit: "1",
            data: Data::Gauge(fullness),
        });
        metrics.push(Metric {
            name: names::COLLECTION_DURATION,
            description: "Time taken to read the kernel's maps and build this snapshot.",
            unit: "s",
            data: Data::Gauge(vec![GaugePoint {
                attributes: Vec::new(),
                value: began.elapsed().as_secs_f64(),
            }]),
        });
        metrics.extend(extra);
        Ok(Snapshot { time: now, metrics })
    }

    /// What the last collection read, if not taken yet: the deltas since the one before, and
    /// the time between.
    pub fn take_interval(&mut self) -> Option<(Deltas, Duration)> {
        self.interval.take()
    }

    fn metrics(&self, loaded: &Loaded) -> Vec<Metric> {
        let running: Vec<Signal> = loaded.running().collect();
        let has = |s| running.contains(&s);
        let sum = |attributes: Attributes, value: u64| SumPoint {
            attributes,
            start: self.start,
            value,
        };
        let mut out = Vec::new();
        if has(Signal::Runqueue) {
            out.push(Metric {
                name: names::RUNQUEUE_WAIT_DURATION,
                description: "Time tasks spent runnable, waiting for a CPU, by cgroup and process.",
                unit: "ns",
                data: self.runqueue.histograms(),
            });
        }
        if has(Signal::BlockIo) {
            out.push(Metric {
                name: names::BLOCK_IO_DEVICE_DURATION,
                description: "Block I/O time from issue to the device to completion, by disk and operation.",
                unit: "ns",
                data: self.block_device.histograms(),
            });
            out.push(Metric {
                name: names::BLOCK_IO_QUEUE_DURATION,
                description: "Block I/O time in the I/O scheduler queue (insert to issue), by disk and operation.",
                unit: "ns",
                data: self.block_queue.histograms(),
            });
            out.push(Metric {
                name: names::BLOCK_IO_UNTIMED,
                description: "Block I/O requests not timed because the in-flight map was full.",
                unit: "{request}",
                data: Data::Sum(vec![sum(Vec::new(), self.counters.block_io_untimed)]),
            });
        }
        if has(Signal::Tcp) {
            out.push(Metric {
                name: names::TCP_RETRANSMITS,
                description: "TCP segments (skbs) retransmitted, by remote endpoint, local port and state.",
                unit: "{retransmit}",
                data: Data::Sum(
                    self.tcp
                        .series()
                        .map(|(a, n, start)| SumPoint {
                            attributes: a.clone(),
                            start,
                            value: *n,
                        })
                        .collect(),
                ),
            });
            out.push(Metric {
                name: names::TCP_RETRANSMIT_FAILURES,
                description: "TCP retransmit attempts that failed to send.",
                unit: "{attempt}",
                data: Data::Sum(vec![sum(Vec::new(), self.counters.tcp_failed)]),
            });
        }
        if has(Signal::Lock) {
            out.push(Metric {
                name: names::LOCK_CONTENTION_DURATION,
                description: "Time kernel code waited for contended locks, by lock class.",
                unit: "ns",
                data: Data::Histogram(
                    self.lock
                        .iter()
                        .zip(CLASS_NAMES)
                        .map(|(h, class)| HistogramPoint {
                            attributes: vec![(keys::LOCK_CLASS, class.into())],
                            start: self.start,
                            hist: Box::new(*h),
                        })
                        .collect(),
                ),
            });
            out.push(Metric {
                name: names::LOCK_MISMATCHED,
                description: "Lock waits that ended on a different lock than they began on (not timed).",
                unit: "{wait}",
                data: Data::Sum(vec![sum(Vec::new(), self.counters.lock_mismatched)]),
            });
        }
        if has(Signal::Futex) {
            out.push(Metric {
                name: names::FUTEX_WAIT_DURATION,
                description: "Time threads spent blocked in futex wait calls (user-space locks, condition variables), by cgroup and process.",
                unit: "ns",
                data: self.futex.histograms(),
            });
        }
        let mut dropped: Vec<(Signal, u64)> = self
            .counters
            .dropped
            .iter()
            .map(|(s, n)| (*s, *n))
            .collect();
        dropped.sort();
        out.push(Metric {
            name: names::DROPPED,
            description: "Events the kernel could not attribute to a breakdown because its map was full (they are in the \"other\" series).",
            unit: "{event}",
            data: Data::Sum(
                dropped
                    .into_iter()
                    .map(|(s, n)| sum(vec![(keys::SIGNAL, s.name().into())], n))
                    .collect(),
            ),
        });
        out.push(Metric {
            name: names::SIGNAL_ATTACHED,
            description: "Whether each requested signal's programs are attached (1) or not (0).",
            unit: "1",
            data: Data::Gauge(
                loaded
                    .status
                    .iter()
                    .map(|(s, status)| GaugePoint {
                        attributes: vec![(keys::SIGNAL, s.name().into())],
                        value: if status.is_ok() { 1.0 } else { 0.0 },
                    })
                    .collect(),
            ),
        });
        out.push(Metric {
            name: names::SCOPE,
            description: "What every signal is restricted to (sidecar mode), always 1: \
                          observer.scope names the cgroup, or is \"host\" for the whole host.",
            unit: "1",
            data: Data::Gauge(vec![GaugePoint {
                attributes: vec![(
                    keys::SCOPE,
                    loaded.scope.as_deref().unwrap_or("host").into(),
                )],
                value: 1.0,
            }]),
        });
        out
    }
}

/// A (cgroup, process) series: the cgroup's path and id, the process, and what the cgroup
/// belongs to when its path tells (container, pod, systemd unit and slice).
fn process_attributes(
    k: &ProcessKey,
    procs: &HashMap<ProcessKey, Process>,
    workloads: &HashMap<u64, Workload>,
) -> Attributes {
    let comm = procs.get(k).map(|p| p.comm).unwrap_or_default();
    let w = workloads
        .get(&k.cgroup)
        .cloned()
        .unwrap_or_else(Workload::unknown);
    let mut attributes = vec![
        (keys::CGROUP_PATH, w.path.clone().into()),
        (keys::PROCESS_COMM, process_name(k.tgid, &comm).into()),
        (
            keys::CGROUP_ID,
            i64::try_from(k.cgroup).unwrap_or(i64::MAX).into(),
        ),
        (keys::PROCESS_PID, i64::from(k.tgid).into()),
    ];
    if let Some(c) = &w.container {
        attributes.push((keys::CONTAINER_ID, c.id.clone().into()));
        if let Some(runtime) = c.runtime {
            attributes.push((keys::CONTAINER_RUNTIME, runtime.name().into()));
        }
    }
    if let Some(pod) = &w.pod {
        attributes.push((keys::POD_UID, pod.uid.clone().into()));
        attributes.push((keys::POD_QOS_CLASS, pod.qos_class.name().into()));
    }
    if let Some(unit) = &w.systemd_unit {
        attributes.push((keys::SYSTEMD_UNIT, unit.clone().into()));
    }
    if let Some(slice) = &w.systemd_slice {
        attributes.push((keys::SYSTEMD_SLICE, slice.clone().into()));
    }
    names(&mut attributes, &w);
    attributes
}

/// The Kubernetes names of a tracked series' cgroup, once the pod list has them (the series
/// may have entered before: the agent had just started, or the pod is newer than the list).
fn add_names(attributes: &mut Attributes, workloads: &HashMap<u64, Workload>, k: &ProcessKey) {
    if let Some(w) = workloads.get(&k.cgroup) {
        names(attributes, w);
    }
}

/// Adds the pod's name and namespace and the container's name where known and not there yet.
/// They never change for a pod UID or a container id, so a series gains them once.
fn names(attributes: &mut Attributes, w: &Workload) {
    let pod = w.pod.as_ref();
    for (key, value) in [
        (keys::POD_NAME, pod.and_then(|p| p.name.as_ref())),
        (keys::NAMESPACE_NAME, pod.and_then(|p| p.namespace.as_ref())),
        (
            keys::CONTAINER_NAME,
            w.container.as_ref().and_then(|c| c.name.as_ref()),
        ),
    ] {
        if let Some(value) = value
            && !attributes.iter().any(|(k, _)| *k == key)
        {
            attributes.push((key, value.clone().into()));
        }
    }
}

fn disk_attributes(k: &DiskKey) -> Attributes {
    let disk = if k.dev == u32::MAX {
        OTHER.to_owned()
    } else {
        blockio::disk_name(k.dev).0
    };
    // disk.io.direction has the values read and write; flush, discard and the rest have no
    // direction, and are named by observer.disk.io.operation instead.
    let op = match k.op {
        OP_READ | OP_WRITE => keys::IO_DIRECTION,
        _ => keys::IO_OPERATION,
    };
    vec![
        (keys::DEVICE, disk.into()),
        (op, blockio::op_name(k.op).into()),
    ]
}

fn remote_attributes(k: &RemoteKey) -> Attributes {
    let mut attributes = vec![
        (keys::PEER_ADDRESS, tcp::address(k).into()),
        (keys::PEER_PORT, i64::from(k.rport).into()),
        (keys::LOCAL_PORT, i64::from(k.lport).into()),
        (keys::NETWORK_TYPE, tcp::family(k).into()),
    ];
    if let Some(state) = tcp::connection_state(k) {
        attributes.push((keys::CONNECTION_STATE, state.into()));
    }
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::metrics::Value;

    fn label(k: &u32) -> Attributes {
        vec![("k", i64::from(*k).into())]
    }

    fn values(b: &Breakdown<u32, u64>) -> Vec<(Option<i64>, u64)> {
        b.series()
            .map(|(a, v, _)| {
                let k = a.first().and_then(|(_, v)| match v {
                    Value::Int(i) => Some(*i),
                    Value::Str(_) => None,
                });
                (k, *v)
            })
            .collect()
    }

    #[test]
    fn top_n_is_sticky_and_the_rest_goes_to_other() {
        let t0 = SystemTime::now();
        let mut b: Breakdown<u32, u64> = Breakdown::new(2, t0, vec![("k", OTHER.into())]);
        b.update([(1, 5), (2, 50), (3, 20)], &7, t0, label);
        // 2 and 3 are the busiest; 1 and the unattributed 7 are "other".
        assert_eq!(values(&b), [(Some(2), 50), (Some(3), 20), (None, 12)]);
        // A newcomer busier than everyone does not displace a tracked key.
        b.update([(4, 1000), (2, 1)], &0, t0, label);
        assert_eq!(values(&b), [(Some(2), 51), (Some(3), 20), (None, 1012)]);
        // Series only grow, and everything is accounted for.
        let total: u64 = values(&b).iter().map(|v| v.1).sum();
        assert_eq!(total, 5 + 50 + 20 + 7 + 1000 + 1);
    }

    #[test]
    fn the_busiest_newcomers_enter_ties_by_key() {
        let t0 = SystemTime::now();
        let mut b: Breakdown<u32, u64> = Breakdown::new(3, t0, vec![("k", OTHER.into())]);
        b.update(
            [(5, 10), (1, 10), (9, 30), (2, 1), (7, 10), (3, 0)],
            &0,
            t0,
            label,
        );
        // 9, then of the three with 10 the lowest keys; the rest is "other".
        assert_eq!(
            values(&b),
            [(Some(1), 10), (Some(5), 10), (Some(9), 30), (None, 11)]
        );
        // Full: every newcomer goes to "other".
        b.update([(4, 100), (1, 1)], &0, t0, label);
        assert_eq!(values(&b)[3], (None, 111));
    }

    #[test]
    fn idle_series_fold_into_other_and_make_room() {
        let t0 = SystemTime::now();
        let mut b: Breakdown<u32, u64> = Breakdown::new(1, t0, vec![("k", OTHER.into())]);
        b.update([(1, 10)], &0, t0, label);
        for _ in 0..IDLE_INTERVALS - 1 {
            b.update([(2, 1)], &0, t0, label);
        }
        assert_eq!(values(&b)[0], (Some(1), 10));
        // Idle long enough: 1 leaves (its 10 go to other) and 2 takes its place.
        b.update([(2, 1)], &0, t0, label);
        let v = values(&b);
        assert_eq!(v[0], (Some(2), 1));
        assert_eq!(v[1], (None, 10 + u64::from(IDLE_INTERVALS - 1)));
    }
}
