//! OTLP metrics export, over gRPC or HTTP/protobuf.
//!
//! The OpenTelemetry SDK cannot export pre-aggregated histograms, so requests are built directly
//! from the snapshot with `opentelemetry-proto` ([`encode`]) and sent with tonic or hyper.
//!
//! Collection never waits on the collector: [`Sink::offer`] only pushes the snapshot into a
//! bounded queue, and one background task sends the queue in order. When the queue is full the OLDEST batch is dropped (and counted): with cumulative temporality
//! each snapshot holds everything since the start, so the newest ones matter most, yet an older
//! queued snapshot is still valid data and is sent too when the collector returns, keeping the
//! collector's view of time in order. A batch that fails for a retryable reason (collector
//! unreachable, timeout, gRPC UNAVAILABLE and the other retryable codes, HTTP 429/502/503/504)
//! goes back to the head of the queue and is retried after an exponential backoff (1 s doubling
//! to 30 s, or the collector's Retry-After); a batch the collector refuses is dropped and counted
//! as a failure. Memory is bounded by `queue` snapshots plus the one being sent.
//!
//! With delta temporality the difference is taken at send time against the last snapshot the
//! collector ACCEPTED, so a snapshot dropped from the queue or refused loses no counts: they are
//! in the next delta, over a longer interval.

mod encode;
mod transport;

use std::{
    collections::VecDeque,
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};

pub use encode::encode;
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};
use transport::{Client, SendError};

use super::{
    Resource, Sink,
    metrics::{Data, EXPORT_BATCHES_DESCRIPTION, Metric, Snapshot, SumPoint, keys, names},
};

/// First wait before retrying a failed send.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between retries: the collector is tried at least this often while it is down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The transport and temporality are the configuration's own types.
pub use crate::config::{Protocol, Temporality};

/// How and where to export.
#[derive(Clone)]
pub struct Settings {
    /// For gRPC the collector's base URL (`http://collector:4317`); for HTTP the full metrics
    /// URL (`http://collector:4318/v1/metrics`). Only `http://`: TLS is not supported yet.
    pub endpoint: String,
    pub protocol: Protocol,
    /// Sent with every request: gRPC metadata or HTTP headers (API keys, tenant ids).
    pub headers: Vec<(String, String)>,
    /// Deadline of one request, connecting included.
    pub timeout: Duration,
    pub temporality: Temporality,
    /// Batches held while the collector is unreachable (at least 1).
    pub queue: usize,
}

/// Header values are left out: they are often credentials, and settings end up in logs.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .field("temporality", &self.temporality)
            .field("queue", &self.queue)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error(
        "OTLP endpoint {endpoint:?} is not usable: {reason}; expected a URL like \
         http://collector:4317 (gRPC) or http://collector:4318/v1/metrics (HTTP)"
    )]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error(
        "OTLP endpoint {endpoint}: https (TLS) is not supported yet; use an http:// endpoint, for \
         example a collector on this host or a sidecar that forwards over TLS"
    )]
    TlsNotSupported { endpoint: String },
    #[error("OTLP header {name:?} for {endpoint} is not a valid header: {reason}")]
    InvalidHeader {
        endpoint: String,
        name: String,
        reason: String,
    },
    #[error("OTLP export to {endpoint}: {reason}")]
    InvalidSetting { endpoint: String, reason: String },
    #[error("the OTLP exporter for {endpoint} must be started from within a tokio runtime")]
    NoRuntime { endpoint: String },
    #[error(
        "{batches} batch(es) were not sent to {endpoint} within the shutdown deadline \
         ({deadline:?}): the collector is unreachable or too slow; check that it is running"
    )]
    Unflushed {
        endpoint: String,
        batches: usize,
        deadline: Duration,
    },
}

/// What happened to the batches offered so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Accepted by the collector.
    pub success: u64,
    /// Refused by the collector (not retryable).
    pub failure: u64,
    /// Dropped unsent: the queue was full, or shutdown came first.
    pub dropped: u64,
}

/// The OTLP sink. Dropping it stops the sending task at once; [`Exporter::shutdown`] flushes
/// first.
pub struct Exporter {
    shared: Arc<Shared>,
    closing: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Exporter {
    /// Checks the settings and spawns the sending task on the current tokio runtime. The
    /// collector is not contacted yet: one that is down at start is retried like any outage.
    pub fn start(settings: Settings, resource: Resource) -> Result<Self, OtlpError> {
        let invalid = |reason: &str| OtlpError::InvalidSetting {
            endpoint: settings.endpoint.clone(),
            reason: reason.to_owned(),
        };
        if settings.queue == 0 {
            return Err(invalid("the queue must hold at least one batch"));
        }
        if settings.timeout.is_zero() {
            return Err(invalid("the timeout must be longer than zero"));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OtlpError::NoRuntime {
            endpoint: settings.endpoint.clone(),
        })?;
        let client = Client::new(&settings)?;
        let shared = Arc::new(Shared {
            endpoint: settings.endpoint,
            capacity: settings.queue,
            started: SystemTime::now(),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        });
        let (closing, closing_rx) = watch::channel(false);
        let task = runtime.spawn(run(
            Arc::clone(&shared),
            client,
            resource,
            settings.temporality,
            closing_rx,
        ));
        Ok(Self {
            shared,
            closing,
            task: Mutex::new(Some(task)),
        })
    }

    /// Sends what is queued, waiting at most `deadline`, then stops: the final flush at
    /// SIGTERM. Later offers are dropped (counted). What could not be sent in time is counted as
    /// dropped and reported in the error. Calling it again returns at once.
    pub async fn shutdown(&self, deadline: Duration) -> Result<(), OtlpError> {
        let Some(mut task) = lock(&self.task).take() else {
            return Ok(());
        };
        self.shared.state().closing = true;
        // Cuts a backoff wait short: the collector gets one immediate try at shutdown.
        self.closing.send_replace(true);
        self.shared.wake.notify_one();
        if tokio::time::timeout(deadline, &mut task).await.is_ok() {
            return Ok(());
        }
        task.abort();
        // Wait for the abort to land, so the task cannot count the in-flight batch afterwards.
        let _ = task.await;
        let mut state = self.shared.state();
        let batches = state.queue.len() + usize::from(state.in_flight);
        state.queue.clear();
        state.in_flight = false;
        state.counts.dropped += batches as u64;
        Err(OtlpError::Unflushed {
            endpoint: self.shared.endpoint.clone(),
            batches,
            deadline,
        })
    }

    /// Batches by outcome so far (also exported as `observer.export.batches`).
    pub fn counts(&self) -> Counts {
        self.shared.state().counts
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

impl Sink for Exporter {
    fn offer(&self, snapshot: Arc<Snapshot>) {
        let mut state = self.shared.state();
        if state.closing {
            state.counts.dropped += 1;
            return;
        }
        if state.queue.len() >= self.shared.capacity {
            state.queue.pop_front();
            state.counts.dropped += 1;
        }
        state.queue.push_back(snapshot);
        drop(state);
        self.shared.wake.notify_one();
    }

    fn metrics(&self) -> Vec<Metric> {
        let counts = self.counts();
        let point = |result: &str, value: u64| SumPoint {
            attributes: vec![
                (keys::EXPORTER, "otlp".into()),
                (keys::RESULT, result.into()),
            ],
            start: self.shared.started,
            value,
        };
        vec![Metric {
            name: names::EXPORT_BATCHES,
            description: EXPORT_BATCHES_DESCRIPTION,
            unit: "{batch}",
            data: Data::Sum(vec![
                point("success", counts.success),
                point("failure", counts.failure),
                point("dropped", counts.dropped),
            ]),
        }]
    }
}

struct Shared {
    endpoint: String,
    capacity: usize,
    started: SystemTime,
    state: Mutex<State>,
    /// Signalled on every offer and at shutdown; one permit is kept if the task is busy, so no
    /// wake-up is lost.
    wake: Notify,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Arc<Snapshot>>,
    /// A batch has left the queue and is being sent.
    in_flight: bool,
    closing: bool,
    counts: Counts,
}

/// Critical sections never panic, so a poisoned lock still holds consistent state.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The oldest queued batch, waiting for one; `None` once shutting down with nothing left.
    async fn next(&self) -> Option<Arc<Snapshot>> {
        loop {
            {
                let mut state = self.state();
                if let Some(batch) = state.queue.pop_front() {
                    state.in_flight = true;
                    return Some(batch);
                }
                if state.closing {
                    return None;
                }
            }
            self.wake.notified().await;
        }
    }

    fn finish(&self, sent: bool) {
        let mut state = self.state();
        state.in_flight = false;
        if sent {
            state.counts.success += 1;
        } else {
            state.counts.failure += 1;
        }
    }

    /// Puts a batch whose send will be retried back at the head of the queue, unless newer
    /// batches filled the queue meanwhile: then it is the oldest and is dropped.
    fn requeue(&self, batch: Arc<Snapshot>) {
        let mut state = self.state();
        state.in_flight = false;
        if state.queue.len() >= self.capacity {
            state.counts.dropped += 1;
        } else {
            state.queue.push_front(batch);
        }
    }
}

/// The sending task: one batch at a time, in order.
async fn run(
    shared: Arc<Shared>,
    mut client: Client,
    resource: Resource,
    temporality: Temporality,
    mut closing: watch::Receiver<bool>,
) {
    // The last snapshot the collector accepted, the base of delta points (kept only for delta).
    let mut accepted: Option<Arc<Snapshot>> = None;
    let mut backoff = INITIAL_BACKOFF;
    let mut failing = false;
    while let Some(batch) = shared.next().await {
        let request = encode(&batch, &resource, temporality, accepted.as_deref());
        match client.send(request).await {
            Ok(partial) => {
                shared.finish(true);
                if failing {
                    tracing::info!(endpoint = %shared.endpoint, "OTLP export recovered");
                    failing = false;
                }
                if let Some(p) = partial {
                    tracing::warn!(
                        endpoint = %shared.endpoint,
                        rejected_data_points = p.rejected_data_points,
                        "the OTLP collector accepted the batch but dropped part of it: {}",
                        p.message
                    );
                }
                backoff = INITIAL_BACKOFF;
                if temporality == Temporality::Delta {
                    accepted = Some(batch);
                }
            }
            Err(SendError::Rejected { reason }) => {
                shared.finish(false);
                tracing::warn!(
                    endpoint = %shared.endpoint,
                    "the OTLP collector refused a batch, dropping it: {reason}"
                );
            }
            Err(SendError::Retryable {
                reason,
                retry_after,
            }) => {
                shared.requeue(batch);
                let wait = retry_after.unwrap_or(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                failing = true;
                tracing::warn!(
                    endpoint = %shared.endpoint,
                    "OTLP export failed, retrying in {wait:?}: {reason}"
                );
                if *closing.borrow() {
                    tokio::time::sleep(wait).await;
                } else {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = closing.wait_for(|c| *c) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: &str, protocol: Protocol) -> Settings {
        Settings {
            endpoint: endpoint.into(),
            protocol,
            headers: vec![("Authorization".into(), "secret".into())],
            timeout: Duration::from_secs(1),
            temporality: Temporality::Cumulative,
            queue: 2,
        }
    }

    fn start(s: Settings) -> Result<Exporter, OtlpError> {
        Exporter::start(s, Resource::default())
    }

    #[tokio::test]
    async fn bad_settings_are_refused_with_the_endpoint_named() {
        let e = start(settings("https://c:4317", Protocol::Grpc))
            .err()
            .unwrap();
        assert!(matches!(e, OtlpError::TlsNotSupported { .. }), "{e}");
        assert!(e.to_string().contains("https://c:4317") && e.to_string().contains("TLS"));
        let e = start(settings("https://c/v1/metrics", Protocol::HttpProtobuf))
            .err()
            .unwrap();
        assert!(matches!(e, OtlpError::TlsNotSupported { .. }), "{e}");
        for bad in ["c:4317", "ftp://c", "http://", "not a url"] {
            let e = start(settings(bad, Protocol::Grpc)).err().unwrap();
            assert!(matches!(e, OtlpError::InvalidEndpoint { .. }), "{bad}: {e}");
        }
        let mut s = settings("http://c:4317", Protocol::Grpc);
        s.headers = vec![("bad header".into(), "v".into())];
        let e = start(s).err().unwrap();
        assert!(e.to_string().contains("\"bad header\""), "{e}");
        let mut s = settings("http://c:4318/v1/metrics", Protocol::HttpProtobuf);
        s.headers = vec![("x".into(), "line\nbreak".into())];
        assert!(matches!(start(s), Err(OtlpError::InvalidHeader { .. })));
        let mut s = settings("http://c:4317", Protocol::Grpc);
        s.queue = 0;
        assert!(matches!(start(s), Err(OtlpError::InvalidSetting { .. })));
    }

    #[test]
    fn start_needs_a_runtime() {
        let e = start(settings("http://c:4317", Protocol::Grpc))
            .err()
            .unwrap();
        assert!(matches!(e, OtlpError::NoRuntime { .. }), "{e}");
    }

    #[test]
    fn settings_debug_hides_header_values() {
        let s = format!("{:?}", settings("http://c:4317", Protocol::Grpc));
        assert!(s.contains("Authorization") && !s.contains("secret"), "{s}");
    }

    #[tokio::test]
    async fn queue_drops_the_oldest_and_shutdown_counts_what_is_left() {
        // Nothing listens on port 1: every send fails and is retried, so batches pile up.
        let x = start(settings("http://127.0.0.1:1", Protocol::Grpc)).unwrap();
        let snap = |secs| {
            Arc::new(Snapshot {
                time: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
                metrics: Vec::new(),
            })
        };
        for i in 0..5 {
            x.offer(snap(i));
        }
        // Queue of 2, at most one more in flight: 2 or 3 dropped so far.
        let dropped = x.counts().dropped;
        assert!((2..=3).contains(&dropped), "{dropped}");
        let e = x.shutdown(Duration::from_millis(300)).await.unwrap_err();
        let OtlpError::Unflushed { batches, .. } = e else {
            panic!("{e}")
        };
        assert_eq!(x.counts().dropped, 5);
        assert_eq!(dropped + batches as u64, 5);
        x.offer(snap(9));
        assert_eq!(
            x.counts(),
            Counts {
                success: 0,
                failure: 0,
                dropped: 6
            }
        );
        let m = x.metrics();
        assert_eq!(m[0].name, names::EXPORT_BATCHES);
        let Data::Sum(points) = &m[0].data else {
            panic!()
        };
        let dropped_point = &points[2];
        assert_eq!(
            dropped_point.attributes,
            [
                (keys::EXPORTER, "otlp".into()),
                (keys::RESULT, "dropped".into())
            ]
        );
        assert_eq!(dropped_point.value, 6);
        // A second shutdown has nothing left to do.
        x.shutdown(Duration::from_millis(1)).await.unwrap();
    }
}
