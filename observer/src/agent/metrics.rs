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
pub mod names {
    pub const RUNQUEUE_LATENCY: &str = "observer.runqueue.latency";
    pub const BLOCK_IO_DEVICE_TIME: &str = "observer.block_io.device_time";
    pub const BLOCK_IO_QUEUE_TIME: &str = "observer.block_io.queue_time";
    pub const TCP_RETRANSMITS: &str = "observer.tcp.retransmits";
    pub const TCP_RETRANSMIT_FAILURES: &str = "observer.tcp.retransmit_failures";
    pub const LOCK_CONTENTION_WAIT: &str = "observer.lock.contention_wait";
    pub const FUTEX_WAIT: &str = "observer.futex.wait";
    pub const DROPPED: &str = "observer.breakdown.dropped";
    pub const BLOCK_IO_UNTIMED: &str = "observer.block_io.untimed";
    pub const LOCK_MISMATCHED: &str = "observer.lock.mismatched";
    pub const SIGNAL_ATTACHED: &str = "observer.signal.attached";
    pub const SCOPE: &str = "observer.scope";
    pub const COLLECTION_DURATION: &str = "observer.collection.duration";
    pub const MAP_FULLNESS: &str = "observer.map.fullness";
    pub const EXPORT_BATCHES: &str = "observer.export.batches";
    pub const RUNQUEUE_SAMPLING: &str = "observer.runqueue.sampling";
    pub const FUTEX_SAMPLING: &str = "observer.futex.sampling";
    pub const OVERHEAD_CPU: &str = "observer.overhead.cpu_utilization";
}

/// The description of [`names::EXPORT_BATCHES`], which every sink reports: one text, so the
/// sinks' series carry the same metadata.
pub const EXPORT_BATCHES_DESCRIPTION: &str = "Batches of metrics (of log records for \
     exporter=otlp_logs) handled by an exporter: accepted by the collector (success), refused by \
     it (failure), or dropped unsent because the queue was full or shutdown came first \
     (dropped).";

/// Attribute keys (OpenTelemetry semantic conventions where one exists).
pub mod keys {
    pub const CGROUP_ID: &str = "cgroup.id";
    pub const CGROUP_PATH: &str = "cgroup.path";
    /// What a cgroup belongs to (crate::cgroup), when its path tells: container.id,
    /// container.runtime.name and k8s.pod.uid are semantic conventions; the conventions have no
    /// attribute for a pod's QoS class or a systemd unit, so these are named here after the
    /// Kubernetes API field (`status.qosClass`) and systemd's terms.
    pub const CONTAINER_ID: &str = "container.id";
    pub const CONTAINER_RUNTIME: &str = "container.runtime.name";
    pub const POD_UID: &str = "k8s.pod.uid";
    pub const POD_QOS_CLASS: &str = "k8s.pod.qos_class";
    /// With Kubernetes enrichment (crate::kubernetes), semantic conventions too.
    pub const POD_NAME: &str = "k8s.pod.name";
    pub const NAMESPACE_NAME: &str = "k8s.namespace.name";
    pub const CONTAINER_NAME: &str = "k8s.container.name";
    pub const SYSTEMD_UNIT: &str = "systemd.unit";
    pub const SYSTEMD_SLICE: &str = "systemd.slice";
    pub const PROCESS_PID: &str = "process.pid";
    pub const PROCESS_NAME: &str = "process.executable.name";
    pub const DISK_DEVICE: &str = "disk.device";
    pub const IO_OPERATION: &str = "disk.io.operation";
    pub const NETWORK_TYPE: &str = "network.type";
    pub const PEER_ADDRESS: &str = "network.peer.address";
    pub const PEER_PORT: &str = "network.peer.port";
    pub const LOCAL_PORT: &str = "network.local.port";
    pub const TCP_STATE: &str = "tcp.state";
    pub const LOCK_CLASS: &str = "lock.class";
    pub const SIGNAL: &str = "signal";
    pub const SCOPE: &str = "observer.scope";
    pub const MAP: &str = "map";
    pub const EXPORTER: &str = "exporter";
    pub const RESULT: &str = "result";
}

/// The value every attribute of a breakdown's "other" series takes: everything outside the top N.
pub const OTHER: &str = "other";
