//! `observer run`: the long-running agent. A collector reads the kernel's maps every interval and
//! hands one immutable [`metrics::Snapshot`] to each sink; collection never waits on a sink. The
//! socket of `observer top` ([`socket`]) gets each interval's deltas instead.

pub mod budget;
pub mod collect;
pub mod metrics;
pub mod otlp;
pub mod prometheus;
pub mod resource;
pub mod run;
pub mod socket;

use std::sync::Arc;

use metrics::{Metric, Snapshot, Value};

/// A destination for snapshots (OTLP, Prometheus).
pub trait Sink: Send + Sync {
    /// Hands over the newest snapshot. Must return at once: a sink that cannot keep up queues
    /// (bounded) or drops, and counts what it dropped in [`Sink::metrics`].
    fn offer(&self, snapshot: Arc<Snapshot>);
    /// The sink's own metrics (exports by result, drops), added to the next snapshot.
    fn metrics(&self) -> Vec<Metric>;
}

/// What describes this agent in every export: OpenTelemetry resource attributes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resource {
    pub attributes: Vec<(String, Value)>,
}
