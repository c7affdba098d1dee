//! OTLP export of metrics and log records, over gRPC or HTTP/protobuf.
//!
//! The OpenTelemetry SDK cannot export pre-aggregated histograms, so requests are built directly
//! from the snapshot with `opentelemetry-proto` ([`encode`], and [`encode_logs`] for the log
//! records) and sent with tonic or hyper.
//!
//! Collection never waits on the collector: [`Sink::offer`] only pushes the snapshot into a
//! bounded queue, and one background task sends the queue in order. When the queue is full the
//! OLDEST batch is dropped (and counted): with cumulative temporality each snapshot holds
//! everything since the start, so the newest ones matter most, yet an older queued snapshot is
//! still valid data and is sent too when the collector returns, keeping the collector's view of
//! time in order. A batch that fails for a retryable reason (collector unreachable, timeout, gRPC
//! UNAVAILABLE and the other retryable codes, HTTP 429/502/503/504, and TLS certificates that
//! cannot be read or do not verify) goes back to the head of the queue and is retried after an
//! exponential backoff with jitter (a random wait between half and all of 1 s doubling to 30 s,
//! so that agents restarted together do not retry in step; or the collector's Retry-After); a
//! batch the collector refuses is dropped and counted as a failure. A failure is logged when it
//! starts and again only when its reason changes, and the recovery too. Memory is bounded by
//! `queue` snapshots plus the one being sent.
//!
//! With delta temporality the difference is taken at send time against the last snapshot the
//! collector ACCEPTED, so a snapshot dropped from the queue or refused loses no counts: they are
//! in the next delta, over a longer interval.
//!
//! Log records ([`Exporter::offer_logs`], the audit records of tuning decisions) take the same
//! path through a queue and a task of their own, so an outage of one never delays the other:
//! each call is one batch, sent as one request (to `v1/logs` over HTTP, to the LogsService over
//! gRPC) with the same retries, the oldest batch dropped when `log_queue` batches wait, and a
//! dropped batch is also logged, since unlike a metrics snapshot no later batch holds its
//! records. [`Exporter::shutdown`] flushes both queues at once.

mod encode;
mod logs;
mod tls;
mod transport;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};

pub use encode::encode;
pub use logs::{LogRecord, Severity, encode_logs};
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};
use transport::{Client, Export, SendError};

use super::{
    Resource, Sink,
    metrics::{Data, EXPORT_BATCHES_DESCRIPTION, Metric, Snapshot, SumPoint, keys, names},
};

/// First wait before retrying a failed send.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between retries: the collector is tried at least this often while it is down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Batches of log records held while the collector is unreachable, by default. Audit records
/// are few (rules are rate-limited) and matter more than metrics, so this is far more than the
/// metrics queue holds.
pub const DEFAULT_LOG_QUEUE: usize = 1024;

/// The `exporter` attribute of `observer.export.batches` for metrics and for log records.
const METRICS_EXPORTER: &str = "otlp";
const LOGS_EXPORTER: &str = "otlp_logs";

/// Where and how each kind of data goes, and the temporality, are the configuration's own
/// types.
pub use crate::config::{ClientFiles, Compression, Destination, Protocol, Temporality, TlsFiles};

/// How and where to export.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where metrics go. For gRPC the collector's base URL (`https://collector:4317`); for HTTP
    /// the full metrics URL (`https://collector:4318/v1/metrics`).
    pub metrics: Destination,
    /// Where log records go: for gRPC usually the same URL as metrics; for HTTP the full logs
    /// URL (`https://collector:4318/v1/logs`).
    pub logs: Destination,
    pub temporality: Temporality,
    /// Batches held while the collector is unreachable (at least 1).
    pub queue: usize,
    /// Batches of log records held while the collector is unreachable (at least 1; usually
    /// [`DEFAULT_LOG_QUEUE`]).
    pub log_queue: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error(
        "OTLP endpoint {endpoint:?} is not usable: {reason}; expected a URL like \
         http://collector:4317 (gRPC; https:// for TLS) or http://collector:4318/v1/metrics \
         (HTTP; /v1/logs for log records)"
    )]
    InvalidEndpoint { endpoint: String, reason: String },
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
        "{batches} batch(es) of metrics and {log_batches} batch(es) of log records were not sent \
         to {endpoint} within the shutdown deadline ({deadline:?}): the collector is unreachable \
         or too slow; check that it is running"
    )]
    Unflushed {
        /// The metrics endpoint, and the logs endpoint too when it differs.
        endpoint: String,
        batches: usize,
        log_batches: usize,
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

/// The OTLP sink. Dropping it stops the sending tasks at once; [`Exporter::shutdown`] flushes
/// first.
pub struct Exporter {
    metrics: Arc<Queue<Arc<Snapshot>>>,
    logs: Arc<Queue<Vec<LogRecord>>>,
    started: SystemTime,
    closing: watch::Sender<bool>,
    /// The metrics and the logs sending tasks.
    tasks: Mutex<Option<[JoinHandle<()>; 2]>>,
}

impl Exporter {
    /// Checks the settings and spawns the sending tasks on the current tokio runtime. The
    /// collector is not contacted yet: one that is down at start is retried like any outage.
    pub fn start(settings: Settings, resource: Resource) -> Result<Self, OtlpError> {
        let invalid = |reason: &str| OtlpError::InvalidSetting {
            endpoint: settings.metrics.endpoint.clone(),
            reason: reason.to_owned(),
        };
        if settings.queue == 0 {
            return Err(invalid("the queue must hold at least one batch"));
        }
        if settings.log_queue == 0 {
            return Err(invalid("the log queue must hold at least one batch"));
        }
        if settings.metrics.timeout.is_zero() || settings.logs.timeout.is_zero() {
            return Err(invalid("the timeout must be longer than zero"));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OtlpError::NoRuntime {
            endpoint: settings.metrics.endpoint.clone(),
        })?;
        let metrics_client = Client::new(&settings.metrics)?;
        let logs_client = Client::new(&settings.logs)?;
        let metrics = Arc::new(Queue::new(settings.metrics.endpoint, settings.queue));
        let logs = Arc::new(Queue::new(settings.logs.endpoint, settings.log_queue));
        let (closing, closing_rx) = watch::channel(false);
        let tasks = [
            runtime.spawn(run(
                Arc::clone(&metrics),
                metrics_client,
                MetricsEncoder {
                    resource: resource.clone(),
                    temporality: settings.temporality,
                    accepted: None,
                },
                closing_rx.clone(),
            )),
            runtime.spawn(run(
                Arc::clone(&logs),
                logs_client,
                LogsEncoder { resource },
                closing_rx,
            )),
        ];
        Ok(Self {
            metrics,
            logs,
            started: SystemTime::now(),
            closing,
            tasks: Mutex::new(Some(tasks)),
        })
    }

    /// Queues `records` to be sent as one batch, and returns at once. When [`Settings::log_queue`]
    /// batches already wait (the collector is down), the oldest is dropped, logged and counted;
    /// after [`Exporter::shutdown`] the batch itself is.
    pub fn offer_logs(&self, records: Vec<LogRecord>) {
        if !records.is_empty() {
            self.logs.push(records);
        }
    }

    /// Sends what is queued, metrics and log records at once, waiting at most `deadline`, then
    /// stops: the final flush at SIGTERM. Later offers are dropped (counted). What could not be
    /// sent in time is counted as dropped and reported in the error. Calling it again returns at
    /// once.
    pub async fn shutdown(&self, deadline: Duration) -> Result<(), OtlpError> {
        let Some(mut tasks) = lock(&self.tasks).take() else {
            return Ok(());
        };
        self.metrics.close();
        self.logs.close();
        // Cuts a backoff wait short: the collector gets one immediate try at shutdown.
        self.closing.send_replace(true);
        let [metrics, logs] = &mut tasks;
        let both = async {
            let _ = tokio::join!(metrics, logs);
        };
        if tokio::time::timeout(deadline, both).await.is_ok() {
            return Ok(());
        }
        for task in tasks {
            if !task.is_finished() {
                task.abort();
                // Wait for the abort to land, so the task cannot count the in-flight batch
                // afterwards.
                let _ = task.await;
            }
        }
        let mut endpoint = self.metrics.endpoint.clone();
        if self.logs.endpoint != endpoint {
            endpoint = format!("{endpoint} (log records: {})", self.logs.endpoint);
        }
        Err(OtlpError::Unflushed {
            endpoint,
            batches: self.metrics.abandon(),
            log_batches: self.logs.abandon(),
            deadline,
        })
    }

    /// Batches of metrics by outcome so far (also exported as `observer.export.batches` with
    /// `observer.exporter="otlp"`).
    pub fn counts(&self) -> Counts {
        self.metrics.state().counts
    }

    /// Batches of log records by outcome so far (also exported as `observer.export.batches`
    /// with `observer.exporter="otlp_logs"`).
    pub fn log_counts(&self) -> Counts {
        self.logs.state().counts
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        for task in lock(&self.tasks).take().into_iter().flatten() {
            task.abort();
        }
    }
}

impl Sink for Exporter {
    fn offer(&self, snapshot: Arc<Snapshot>) {
        self.metrics.push(snapshot);
    }

    fn metrics(&self) -> Vec<Metric> {
        let point = |exporter: &str, result: &str, value: u64| SumPoint {
            attributes: vec![
                (keys::EXPORTER, exporter.into()),
                (keys::RESULT, result.into()),
            ],
            start: self.started,
            value,
        };
        let mut points = Vec::with_capacity(6);
        for (exporter, counts) in [
            (METRICS_EXPORTER, self.counts()),
            (LOGS_EXPORTER, self.log_counts()),
        ] {
            points.extend([
                point(exporter, "success", counts.success),
                point(exporter, "failure", counts.failure),
                point(exporter, "dropped", counts.dropped),
            ]);
        }
        vec![Metric {
            name: names::EXPORT_BATCHES,
            description: EXPORT_BATCHES_DESCRIPTION,
            unit: "{batch}",
            data: Data::Sum(points),
        }]
    }
}

/// What a queue holds: the data of one export request.
trait Batch: Send + Sync + 'static {
    /// Reports that this batch was dropped unsent because of `why` (it is counted in any case).
    fn dropped(&self, endpoint: &str, why: &str);
}

impl Batch for Arc<Snapshot> {
    /// Only counted: a later cumulative snapshot holds the same counts, and a line per interval
    /// during an outage would flood the log.
    fn dropped(&self, _endpoint: &str, _why: &str) {}
}

impl Batch for Vec<LogRecord> {
    /// Logged: no later batch holds these records.
    fn dropped(&self, endpoint: &str, why: &str) {
        tracing::warn!(
            endpoint,
            records = self.len(),
            "{why}: dropped a batch of {} log record(s) unsent",
            self.len()
        );
    }
}

/// One kind of data, its own queue and its own sending task.
struct Queue<B> {
    endpoint: String,
    capacity: usize,
    state: Mutex<State<B>>,
    /// Signalled on every offer and at shutdown; one permit is kept if the task is busy, so no
    /// wake-up is lost.
    wake: Notify,
}

struct State<B> {
    queue: VecDeque<B>,
    /// A batch has left the queue and is being sent.
    in_flight: bool,
    closing: bool,
    counts: Counts,
}

/// Critical sections never panic, so a poisoned lock still holds consistent state.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<B: Batch> Queue<B> {
    fn new(endpoint: String, capacity: usize) -> Self {
        Self {
            endpoint,
            capacity,
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(capacity.min(64)),
                in_flight: false,
                closing: false,
                counts: Counts::default(),
            }),
            wake: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<B>> {
        lock(&self.state)
    }

    /// Queues `batch`, dropping the oldest if the queue is full (or `batch` itself once
    /// closing).
    fn push(&self, batch: B) {
        let mut state = self.state();
        let (dropped, why) = if state.closing {
            (Some(batch), "the exporter is shut down")
        } else {
            let oldest = if state.queue.len() >= self.capacity {
                state.queue.pop_front()
            } else {
                None
            };
            state.queue.push_back(batch);
            (
                oldest,
                "the OTLP queue is full (the collector is down or too slow)",
            )
        };
        if dropped.is_some() {
            state.counts.dropped += 1;
        }
        drop(state);
        if let Some(batch) = dropped {
            batch.dropped(&self.endpoint, why);
        }
        self.wake.notify_one();
    }

    fn close(&self) {
        self.state().closing = true;
        self.wake.notify_one();
    }

    /// The oldest queued batch, waiting for one; `None` once shutting down with nothing left.
    async fn next(&self) -> Option<B> {
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
    fn requeue(&self, batch: B) {
        let mut state = self.state();
        state.in_flight = false;
        if state.queue.len() >= self.capacity {
            state.counts.dropped += 1;
            drop(state);
            batch.dropped(
                &self.endpoint,
                "the OTLP queue filled up while the collector was down",
            );
        } else {
            state.queue.push_front(batch);
        }
    }

    /// After the sending task was stopped: counts what is left (queued or in flight) as dropped
    /// and returns how many batches that was.
    fn abandon(&self) -> usize {
        let mut state = self.state();
        let batches = state.queue.len() + usize::from(state.in_flight);
        state.queue.clear();
        state.in_flight = false;
        state.counts.dropped += batches as u64;
        batches
    }
}

/// Turns the batches of one queue into requests.
trait Encoder: Send + 'static {
    type Batch: Batch;
    type Request: Export;
    /// What is sent, for log messages.
    const DATA: &'static str;
    fn encode(&self, batch: &Self::Batch) -> Self::Request;
    /// The collector accepted `batch`.
    fn accepted(&mut self, batch: Self::Batch);
}

struct MetricsEncoder {
    resource: Resource,
    temporality: Temporality,
    /// The last snapshot the collector accepted, the base of delta points (kept only for
    /// delta).
    accepted: Option<Arc<Snapshot>>,
}

impl Encoder for MetricsEncoder {
    type Batch = Arc<Snapshot>;
    type Request = ExportMetricsServiceRequest;
    const DATA: &'static str = "metrics";

    fn encode(&self, batch: &Arc<Snapshot>) -> ExportMetricsServiceRequest {
        encode(
            batch,
            &self.resource,
            self.temporality,
            self.accepted.as_deref(),
        )
    }

    fn accepted(&mut self, batch: Arc<Snapshot>) {
        if self.temporality == Temporality::Delta {
            self.accepted = Some(batch);
        }
    }
}

struct LogsEncoder {
    resource: Resource,
}

impl Encoder for LogsEncoder {
    type Batch = Vec<LogRecord>;
    type Request = ExportLogsServiceRequest;
    const DATA: &'static str = "log records";

    fn encode(&self, batch: &Vec<LogRecord>) -> ExportLogsServiceRequest {
        encode_logs(batch, &self.resource)
    }

    fn accepted(&mut self, _batch: Vec<LogRecord>) {}
}

/// A sending task: one batch at a time, in order.
async fn run<E: Encoder>(
    queue: Arc<Queue<E::Batch>>,
    mut client: Client,
    mut encoder: E,
    mut closing: watch::Receiver<bool>,
) {
    let endpoint = queue.endpoint.as_str();
    let data = E::DATA;
    let mut backoff = INITIAL_BACKOFF;
    // The reason of the failure going on, as last logged.
    let mut failing: Option<String> = None;
    while let Some(batch) = queue.next().await {
        match client.send(encoder.encode(&batch)).await {
            Ok(partial) => {
                queue.finish(true);
                if failing.take().is_some() {
                    tracing::info!(endpoint, data, "OTLP export recovered");
                }
                if let Some(p) = partial {
                    tracing::warn!(
                        endpoint,
                        data,
                        rejected = p.rejected,
                        "the OTLP collector accepted the batch but dropped {} of its {}: {}",
                        p.rejected,
                        <E::Request as Export>::ITEMS,
                        p.message
                    );
                }
                backoff = INITIAL_BACKOFF;
                encoder.accepted(batch);
            }
            Err(SendError::Rejected { reason }) => {
                queue.finish(false);
                tracing::warn!(
                    endpoint,
                    data,
                    "the OTLP collector refused a batch, dropping it: {reason}"
                );
            }
            Err(SendError::Retryable {
                reason,
                retry_after,
            }) => {
                queue.requeue(batch);
                let wait = retry_after.unwrap_or_else(|| jitter(backoff));
                backoff = (backoff * 2).min(MAX_BACKOFF);
                // Said once, not at every retry: an outage of an hour would otherwise fill the
                // log with the same line.
                if failing.as_deref() == Some(reason.as_str()) {
                    tracing::debug!(
                        endpoint,
                        data,
                        "OTLP export still failing, retrying in {wait:?}: {reason}"
                    );
                } else {
                    tracing::warn!(
                        endpoint,
                        data,
                        "OTLP export failed, retrying with backoff (up to every \
                         {MAX_BACKOFF:?}; said again only when the reason changes): {reason}"
                    );
                    failing = Some(reason);
                }
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

/// A random wait between half of `backoff` and all of it ("equal jitter"): agents that lost
/// the collector at the same moment spread their retries, and the wait never exceeds the
/// backoff, so [`MAX_BACKOFF`] still bounds it.
fn jitter(backoff: Duration) -> Duration {
    backoff.mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(endpoint: &str, protocol: Protocol) -> Destination {
        Destination {
            endpoint: endpoint.into(),
            protocol,
            headers: [("Authorization".to_owned(), "secret".to_owned())].into(),
            timeout: Duration::from_secs(1),
            compression: Compression::None,
            tls: TlsFiles::default(),
        }
    }

    fn settings(endpoint: &str, protocol: Protocol) -> Settings {
        let logs_endpoint = match endpoint.strip_suffix("/v1/metrics") {
            Some(base) => format!("{base}/v1/logs"),
            None => endpoint.to_owned(),
        };
        Settings {
            metrics: destination(endpoint, protocol),
            logs: destination(&logs_endpoint, protocol),
            temporality: Temporality::Cumulative,
            queue: 2,
            log_queue: 2,
        }
    }

    fn start(s: Settings) -> Result<Exporter, OtlpError> {
        Exporter::start(s, Resource::default())
    }

    #[tokio::test]
    async fn bad_settings_are_refused_with_the_endpoint_named() {
        // TLS endpoints start: their certificates are read at the first send.
        start(settings("https://c:4317", Protocol::Grpc)).unwrap();
        start(settings("https://c/v1/metrics", Protocol::HttpProtobuf)).unwrap();
        for bad in ["c:4317", "ftp://c", "http://", "not a url"] {
            let e = start(settings(bad, Protocol::Grpc)).err().unwrap();
            assert!(matches!(e, OtlpError::InvalidEndpoint { .. }), "{bad}: {e}");
        }
        let mut s = settings("http://c:4317", Protocol::Grpc);
        s.metrics.headers = [("bad header".to_owned(), "v".to_owned())].into();
        let e = start(s).err().unwrap();
        assert!(e.to_string().contains("\"bad header\""), "{e}");
        let mut s = settings("http://c:4318/v1/metrics", Protocol::HttpProtobuf);
        s.logs.headers = [("x".to_owned(), "line\nbreak".to_owned())].into();
        assert!(matches!(start(s), Err(OtlpError::InvalidHeader { .. })));
        let mut s = settings("http://c:4317", Protocol::Grpc);
        s.queue = 0;
        assert!(matches!(start(s), Err(OtlpError::InvalidSetting { .. })));
        let mut s = settings("http://c:4317", Protocol::Grpc);
        s.log_queue = 0;
        let e = start(s).err().unwrap();
        assert!(e.to_string().contains("log queue"), "{e}");
        let mut s = settings("http://c:4317", Protocol::Grpc);
        s.logs.timeout = Duration::ZERO;
        let e = start(s).err().unwrap();
        assert!(e.to_string().contains("timeout"), "{e}");
        // The logs endpoint is checked as strictly as the metrics one, and named.
        let mut s = settings("http://c:4318/v1/metrics", Protocol::HttpProtobuf);
        s.logs.endpoint = "c:4318/v1/logs".into();
        let e = start(s).err().unwrap();
        assert!(
            matches!(&e, OtlpError::InvalidEndpoint { endpoint, .. } if endpoint == "c:4318/v1/logs"),
            "{e}"
        );
    }

    #[test]
    fn the_backoff_is_jittered_between_half_and_all_of_it() {
        // The generator of this test's thread, seeded: the draws are the same at every run.
        fastrand::seed(15);
        let backoff = Duration::from_secs(8);
        let waits: Vec<Duration> = (0..1000).map(|_| jitter(backoff)).collect();
        assert!(
            waits.iter().all(|w| (backoff / 2..=backoff).contains(w)),
            "{waits:?}"
        );
        // Spread over the range, not one value.
        let (min, max) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
        assert!(*min < Duration::from_millis(4040), "{min:?}");
        assert!(*max > Duration::from_millis(7960), "{max:?}");
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
        let OtlpError::Unflushed {
            batches,
            log_batches,
            ..
        } = e
        else {
            panic!("{e}")
        };
        assert_eq!(log_batches, 0);
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

    fn record(body: &str) -> LogRecord {
        LogRecord {
            time: SystemTime::UNIX_EPOCH,
            severity: Severity::Info,
            event_name: "test",
            body: body.into(),
            attributes: Vec::new(),
        }
    }

    #[tokio::test]
    async fn log_queue_drops_the_oldest_and_shutdown_reports_both_kinds() {
        // Nothing listens on port 1, as above.
        let x = start(settings(
            "http://127.0.0.1:1/v1/metrics",
            Protocol::HttpProtobuf,
        ))
        .unwrap();
        // An empty offer is no batch at all.
        x.offer_logs(Vec::new());
        assert_eq!(x.log_counts(), Counts::default());
        for i in 0..5 {
            x.offer_logs(vec![record(&i.to_string()), record("second")]);
        }
        x.offer(Arc::new(Snapshot {
            time: SystemTime::UNIX_EPOCH,
            metrics: Vec::new(),
        }));
        let dropped = x.log_counts().dropped;
        assert!((2..=3).contains(&dropped), "{dropped}");
        assert_eq!(x.counts().dropped, 0, "the metrics queue is a separate one");
        let e = x.shutdown(Duration::from_millis(300)).await.unwrap_err();
        let OtlpError::Unflushed {
            endpoint,
            batches,
            log_batches,
            ..
        } = &e
        else {
            panic!("{e}")
        };
        assert_eq!(*batches, 1);
        assert_eq!(dropped + *log_batches as u64, 5);
        assert_eq!(
            endpoint,
            "http://127.0.0.1:1/v1/metrics (log records: http://127.0.0.1:1/v1/logs)"
        );
        assert!(e.to_string().contains("1 batch(es) of metrics and"), "{e}");
        x.offer_logs(vec![record("late")]);
        assert_eq!(
            x.log_counts(),
            Counts {
                success: 0,
                failure: 0,
                dropped: 6
            }
        );
        let Data::Sum(points) = &x.metrics()[0].data else {
            panic!()
        };
        let logs_dropped = points
            .iter()
            .find(|p| {
                p.attributes
                    == [
                        (keys::EXPORTER, "otlp_logs".into()),
                        (keys::RESULT, "dropped".into()),
                    ]
            })
            .expect("the logs' dropped point");
        assert_eq!(logs_dropped.value, 6);
        assert_eq!(points.len(), 6);
    }
}
