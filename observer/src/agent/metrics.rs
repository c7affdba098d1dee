//! What the agent exports: one immutable snapshot of every metric per collection, handed to each
//! sink (OTLP, Prometheus). Sinks only translate; every number is computed here or in the
//! collector.

use std::time::SystemTime;

use observer_common::Hist;

/// An attribute value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Str(String),
    Int(i64),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::Str(s)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

/// Attributes of one series, in a fixed order per metric.
pub type Attributes = Vec<(&'static str, Value)>;

/// One exported metric.
#[derive(Clone, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub description: &'static str,
    /// UCUM unit: "ns" for the latency histograms, "{retransmit}" and the like for counts.
    pub unit: &'static str,
    pub data: Data,
}

#[derive(Clone, Debug)]
pub enum Data {
    /// Exponential histograms at scale 2 (observer_common::hist), cumulative.
    Histogram(Vec<HistogramPoint>),
    /// Monotonic counters, cumulative.
    Sum(Vec<SumPoint>),
    Gauge(Vec<GaugePoint>),
}

#[derive(Clone, Debug)]
pub struct HistogramPoint {
    pub attributes: Attributes,
    /// Since when this series counts (agent start, or when the series was first exported).
    pub start: SystemTime,
    pub hist: Box<Hist>,
}

#[derive(Clone, Debug)]
pub struct SumPoint {
    pub attributes: Attributes,
    pub start: SystemTime,
    pub value: u64,
}

#[derive(Clone, Debug)]
pub struct GaugePoint {
    pub attributes: Attributes,
    pub value: f64,
}

/// Every metric at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// When the maps were read.
    pub time: SystemTime,
    pub metrics: Vec<Metric>,
}

/// The catalog: every metric the agent exports, with its unit and meaning (listed in the README).
///
/// Named by the OpenTelemetry semantic conventions' naming rules (docs/general/naming.md in
/// open-telemetry/semantic-conventions): a histogram of how long something took is
/// `{operation}.duration`, a fraction of a limit `{entity}.utilization`, counts of a countable
/// thing are plural; all under the `observer.` namespace, since the conventions define none of
/// these metrics.
pub mod names {
    pub const RUNQUEUE_WAIT_DURATION: &str = "observer.runqueue.wait.duration";
    pub const BLOCK_IO_DEVICE_DURATION: &str = "observer.block_io.device.duration";
    pub const BLOCK_IO_QUEUE_DURATION: &str = "observer.block_io.queue.duration";
    pub const TCP_RETRANSMITS: &str = "observer.tcp.retransmits";
    pub const TCP_RETRANSMIT_FAILURES: &str = "observer.tcp.retransmit_failures";
    pub const LOCK_CONTENTION_DURATION: &str = "observer.lock.contention.duration";
    pub const FUTEX_WAIT_DURATION: &str = "observer.futex.wait.duration";
    pub const DROPPED: &str = "observer.breakdown.dropped";
    pub const BLOCK_IO_UNTIMED: &str = "observer.block_io.untimed";
    pub const LOCK_MISMATCHED: &str = "observer.lock.mismatched";
    pub const SIGNAL_ATTACHED: &str = "observer.signal.attached";
    pub const SCOPE: &str = "observer.scope";
    pub const COLLECTION_DURATION: &str = "observer.collection.duration";
    pub const MAP_UTILIZATION: &str = "observer.map.utilization";
    pub const EXPORT_BATCHES: &str = "observer.export.batches";
    pub const RUNQUEUE_SAMPLING: &str = "observer.runqueue.sampling";
    pub const FUTEX_SAMPLING: &str = "observer.futex.sampling";
    pub const OVERHEAD_CPU: &str = "observer.overhead.cpu.utilization";
}

/// The description of [`names::EXPORT_BATCHES`], which every sink reports: one text, so the
/// sinks' series carry the same metadata.
pub const EXPORT_BATCHES_DESCRIPTION: &str = "Batches of metrics (of log records for \
     exporter=otlp_logs) handled by an exporter: accepted by the collector (success), refused by \
     it (failure), or dropped unsent because the queue was full or shutdown came first \
     (dropped).";

/// Attribute keys. Those of the OpenTelemetry semantic conventions' registry
/// (open-telemetry/semantic-conventions, model/*/registry.yaml) where it defines one with the
/// same meaning; the others under `observer.`, since the conventions advise against
/// application-specific names in their own namespaces (docs/general/naming.md). CHANGELOG.md
/// lists the earlier names.
pub mod keys {
    /// The cgroup v2 id and path of a series. The registry's `process.linux.cgroup` is the text
    /// of /proc/PID/cgroup (every hierarchy, with its `0::` prefix), not one cgroup's path.
    pub const CGROUP_ID: &str = "observer.cgroup.id";
    pub const CGROUP_PATH: &str = "observer.cgroup.path";
    /// What a cgroup belongs to (crate::cgroup), when its path tells: container.id,
    /// container.runtime.name and k8s.pod.uid are in the registry; it has no attribute for a
    /// pod's QoS class or a systemd unit, so these are named after the Kubernetes API field
    /// (`status.qosClass`) and systemd's terms.
    pub const CONTAINER_ID: &str = "container.id";
    pub const CONTAINER_RUNTIME: &str = "container.runtime.name";
    pub const POD_UID: &str = "k8s.pod.uid";
    pub const POD_QOS_CLASS: &str = "observer.k8s.pod.qos_class";
    /// With Kubernetes enrichment (crate::kubernetes), in the registry too.
    pub const POD_NAME: &str = "k8s.pod.name";
    pub const NAMESPACE_NAME: &str = "k8s.namespace.name";
    pub const CONTAINER_NAME: &str = "k8s.container.name";
    pub const SYSTEMD_UNIT: &str = "observer.systemd.unit";
    pub const SYSTEMD_SLICE: &str = "observer.systemd.slice";
    pub const PROCESS_PID: &str = "process.pid";
    /// The kernel's name of the process (`comm`, /proc/PID/comm: at most 15 bytes, set at exec
    /// from the file name and changeable by the process). Not `process.executable.name`, which
    /// the registry defines as the base name of /proc/PID/exe's target, nor `process.command`,
    /// argv[0]: the registry has no attribute for it.
    pub const PROCESS_COMM: &str = "observer.process.comm";
    /// A disk, by its `major:minor` device number: the registry's device identifier, which its
    /// `system.disk.*` metrics key disks by.
    pub const DEVICE: &str = "system.device";
    /// Reads and writes: the registry's `disk.io.direction` (its values are `read` and `write`).
    pub const IO_DIRECTION: &str = "disk.io.direction";
    /// Block operations that move no data one way or the other (`flush`, `discard`, `other`),
    /// which `disk.io.direction` does not cover. A series has one of the two.
    pub const IO_OPERATION: &str = "observer.disk.io.operation";
    pub const NETWORK_TYPE: &str = "network.type";
    pub const PEER_ADDRESS: &str = "network.peer.address";
    pub const PEER_PORT: &str = "network.peer.port";
    pub const LOCAL_PORT: &str = "network.local.port";
    /// The TCP state, with the registry's values (RFC 9293's states, as `syn_sent`...).
    pub const CONNECTION_STATE: &str = "network.connection.state";
    pub const LOCK_CLASS: &str = "observer.lock.class";
    pub const SIGNAL: &str = "observer.signal";
    /// The agent's scope (sidecar mode): on the `observer.scope` gauge and in the resource.
    pub const SCOPE: &str = "observer.scope";
    pub const MAP: &str = "observer.map";
    pub const EXPORTER: &str = "observer.exporter";
    pub const RESULT: &str = "observer.result";
}

/// The value every attribute of a breakdown's "other" series takes: everything outside the top N.
pub const OTHER: &str = "other";
