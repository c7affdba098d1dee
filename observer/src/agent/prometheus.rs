//! The Prometheus endpoint: `GET /metrics` serves the newest snapshot, in the text format or, when
//! the scraper asks for it, in the protobuf format with native histograms.
//!
//! # Names
//!
//! The OpenTelemetry names translate the way the OpenTelemetry specification and Prometheus' own
//! OTLP receiver translate them: dots become underscores and the unit becomes a suffix. Durations
//! are exported in seconds, Prometheus' base unit (`observer.runqueue.wait.duration`, in ns,
//! becomes `observer_runqueue_wait_duration_seconds`; a gauge in `s` gets `_seconds`); counters
//! (monotonic sums) end in `_total`; annotation units such as `{retransmit}` add nothing, and
//! neither does the unit `1` (the specification's `_ratio` would misdescribe
//! `observer_signal_attached`, a 0/1 status). Attribute keys become labels, dots as
//! underscores; the description becomes `HELP`. Metrics that translate to the same name (two
//! sinks reporting `observer.export.batches`) share one family, since an exposition may name a
//! family only once.
//!
//! # The resource
//!
//! What describes the agent (OTLP's resource: service.name, service.instance.id, host.name...)
//! is the gauge `target_info`, always 1, whose labels are the resource's attributes and nothing
//! else, named as attribute keys are: the OpenTelemetry specification's form for an exporter
//! whose formats have no info type (neither the text format 0.0.4 nor the protobuf format
//! has one). Prometheus adds `job` and `instance` when it scrapes, so
//! `* on (job, instance) group_left (service_name) target_info` joins them to any series.
//!
//! # Classic histograms
//!
//! The `le` bounds are every power of two from 1 ns to 2^40 ns (18.3 minutes), in seconds, and
//! `+Inf`. A power of two is every fourth boundary of the kernel's scale-2 buckets, so each
//! cumulative count is exact: no kernel bucket straddles an `le`. The list is fixed, so every
//! scrape has the same series. Values of zero are counted in every bucket.
//!
//! # Native histograms
//!
//! When the scraper prefers `application/vnd.google.protobuf;
//! proto=io.prometheus.client.MetricFamily; encoding=delimited` (Prometheus with
//! `--enable-feature=native-histograms`), each latency histogram is exposed twice: the classic
//! `..._seconds` family above, so queries on `_seconds_bucket` work whichever format was
//! negotiated, and a native histogram `..._nanoseconds` holding exactly the kernel's buckets.
//!
//! The native family is in nanoseconds because native bucket boundaries are powers of
//! `2^(2^-schema)` *of the exported unit*. The kernel's boundaries are `2^(i/4)` ns, which in
//! seconds are `2^(i/4) * 10^-9`, and `log2(10^-9) = -29.897...` is not a multiple of 1/4: no
//! schema makes them native boundaries in seconds, and a native histogram in seconds would have to
//! split every kernel bucket between two native buckets by guessing. In nanoseconds they are
//! schema 2 exactly. Prometheus' native bucket `i` covers `(2^((i-1)/4), 2^(i/4)]`, OTLP's
//! bucket `j` covers `(2^(j/4), 2^((j+1)/4)]`, so native index = OTLP index + 1, which is the slot
//! in [`Hist::buckets`]. This is also what Prometheus' OTLP receiver (2.47 and later) makes of
//! the agent's OTLP exponential histograms (unit `ns` becomes `_nanoseconds`, scale becomes
//! schema, index + 1), so both paths give the same series.
//!
//! The zero bucket is `[-2^-128, 2^-128]` (client_golang's default threshold) rather than a
//! threshold of 0: values are whole nanoseconds, so it holds exactly the zero values either way,
//! and a positive threshold is what makes Prometheus 2.x (2.42 in Debian 12) parse a histogram
//! with no observations yet as native rather than classic.
//!
//! # HTTP
//!
//! `GET /metrics` answers 200. Before the collector's first snapshot the body holds only
//! `target_info`: a 503 would mark the target down for the first interval of every agent start.
//! Other paths answer 404, other methods 405. At most [`MAX_CONNECTIONS`] connections are served
//! at once (more are closed at once) and a request's headers must arrive within
//! [`HEADER_TIMEOUT`], so a stuck or hostile client cannot make memory grow.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    convert::Infallible,
    fmt, io,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use observer_common::{
    Hist,
    hist::{BUCKETS_PER_OCTAVE, SCALE, slot_index},
};
use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, NativeHistogram, NativeHistogramBuckets, NoLabelSet,
        prometheus_protobuf, prometheus_text,
    },
    metrics::MetricType,
    registry::{Registry, Unit},
};
use tokio::{net::TcpListener, task::JoinSet};

use super::{
    Resource, Sink,
    metrics::{Data, EXPORT_BATCHES_DESCRIPTION, Metric, Snapshot, SumPoint, Value, keys, names},
};

/// Connections served at once; Prometheus keeps one open per target.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The protobuf exposition format, as Prometheus asks for it and expects it back.
const PROTOBUF_MEDIA_TYPE: &str = "application/vnd.google.protobuf";
const PROTOBUF_PROTO: &str = "io.prometheus.client.MetricFamily";
const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Classic `le` bounds are `2^k` ns for these `k`: every fourth scale-2 boundary.
const CLASSIC_MAX_POWER: u32 = 40;
/// Nanoseconds per second. Dividing by it (rather than multiplying by 1e-9) rounds correctly,
/// so `2^k` ns prints as its exact decimal value in seconds.
const NS_PER_S: f64 = 1e9;
/// Native zero bucket half-width: client_golang's `DefNativeHistogramZeroThreshold`.
const ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;
/// The native histograms' unit: the kernel's (see the module docs).
const NATIVE_UNIT: &str = "nanoseconds";
/// The resource's family (see the module docs), as the OpenTelemetry specification names it.
const TARGET_INFO: &str = "target_info";

/// Errors starting the endpoint. Each names the address and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    #[error("cannot serve Prometheus metrics on {addr}: {hint}")]
    Bind {
        addr: SocketAddr,
        /// What to do about it.
        hint: &'static str,
        #[source]
        source: io::Error,
    },
}

impl PromError {
    fn bind(addr: SocketAddr, source: io::Error) -> Self {
        let hint = match source.kind() {
            io::ErrorKind::AddrInUse => {
                "the address is in use (another observer, or another exporter?); pick another \
                 with --prometheus-listen or `listen` in the [prometheus] section of the config"
            }
            io::ErrorKind::PermissionDenied => {
                "ports below 1024 need root or CAP_NET_BIND_SERVICE; pick a higher port with \
                 --prometheus-listen or `listen` in the [prometheus] section of the config"
            }
            io::ErrorKind::AddrNotAvailable => {
                "no interface of this host has that address; use 127.0.0.1, 0.0.0.0 or one of \
                 this host's addresses (--prometheus-listen or [prometheus] listen)"
            }
            _ => "check --prometheus-listen or `listen` in the [prometheus] section of the config",
        };
        Self::Bind { addr, hint, source }
    }
}

/// What the connection tasks share with the [`Server`] handle.
struct Shared {
    /// The newest snapshot. Held only to swap or clone the `Arc`, so neither the collector nor a
    /// scrape ever waits on the other's work.
    latest: Mutex<Option<Arc<Snapshot>>>,
    /// `GET /metrics` requests answered.
    scrapes: AtomicU64,
    started: SystemTime,
    /// The resource, as `target_info`'s labels.
    target: Labels,
}

impl Shared {
    fn latest(&self) -> Option<Arc<Snapshot>> {
        // A poisoned lock only means a thread panicked while swapping an `Arc`: the value is
        // still a whole snapshot.
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The Prometheus endpoint. Dropping it stops serving and closes its connections.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `listen` (the configuration's default is 127.0.0.1:9464) and serves
    /// `GET /metrics` on the current tokio runtime until the returned handle is dropped, with
    /// `resource` as `target_info`.
    pub async fn start(listen: SocketAddr, resource: &Resource) -> Result<Self, PromError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| PromError::bind(listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| PromError::bind(listen, e))?;
        let shared = Arc::new(Shared {
            latest: Mutex::new(None),
            scrapes: AtomicU64::new(0),
            started: SystemTime::now(),
            target: target_labels(resource),
        });
        let task = tokio::spawn(serve(listener, Arc::clone(&shared)));
        tracing::debug!("serving Prometheus metrics at http://{addr}/metrics");
        Ok(Self { addr, shared, task })
    }

    /// The address actually bound (the port is the kernel's choice when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The connection tasks live in the accept loop's JoinSet, so they end with it.
        self.task.abort();
    }
}

impl Sink for Server {
    fn offer(&self, snapshot: Arc<Snapshot>) {
        *self
            .shared
            .latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(snapshot);
    }

    fn metrics(&self) -> Vec<Metric> {
        vec![Metric {
            name: names::EXPORT_BATCHES,
            // A batch here is one scrape served.
            description: EXPORT_BATCHES_DESCRIPTION,
            unit: "{batch}",
            data: Data::Sum(vec![SumPoint {
                attributes: vec![
                    (keys::EXPORTER, "prometheus".into()),
                    (keys::RESULT, "success".into()),
                ],
                start: self.shared.started,
                value: self.shared.scrapes.load(Ordering::Relaxed),
            }]),
        }]
    }
}

/// Accepts connections until the [`Server`] is dropped.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        tracing::warn!(
                            %peer,
                            "Prometheus endpoint: {MAX_CONNECTIONS} connections open, closing a new one"
                        );
                        continue; // Dropping `stream` closes it.
                    }
                    let shared = Arc::clone(&shared);
                    let connection = http.serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |request| {
                            let response = respond(&shared, &request);
                            async move { Ok::<_, Infallible>(response) }
                        }),
                    );
                    connections.spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(%peer, "Prometheus endpoint connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors, typically: retrying at once would spin.
                    tracing::warn!("Prometheus endpoint cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reaps finished connections so the set only holds open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The answer to one request. Rendering happens here, per scrape, from the shared snapshot: a
/// scrape every few seconds costs less than rendering every snapshot in both formats up front.
fn respond<B>(shared: &Shared, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    let accept = request.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    let snapshot = shared.latest();
    let (content_type, body) = if wants_protobuf(accept) {
        let body = match encode_protobuf(&shared.target, snapshot.as_deref()) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot encode the Prometheus protobuf exposition: {e}");
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot encode the metrics; see the agent's log\n",
                );
            }
        };
        (PROTOBUF_CONTENT_TYPE, Bytes::from(body))
    } else {
        let body = render_text(&shared.target, snapshot.as_deref());
        (prometheus_text::CONTENT_TYPE, Bytes::from(body))
    };
    shared.scrapes.fetch_add(1, Ordering::Relaxed);
    let mut response = Response::new(Full::new(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Whether the `Accept` header prefers the protobuf format to every other type it offers (all
/// of which get the text format).
pub fn wants_protobuf(accept: Option<&str>) -> bool {
    let (mut protobuf, mut other) = (0.0_f64, 0.0_f64);
    for range in accept.unwrap_or_default().split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media_type = parts.next().unwrap_or_default();
        if media_type.is_empty() {
            continue;
        }
        let (mut q, mut proto, mut encoding) = (1.0, "", "");
        for parameter in parts {
            let Some((name, value)) = parameter.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "q" => q = value.parse().unwrap_or(0.0),
                "proto" => proto = value,
                "encoding" => encoding = value,
                _ => {}
            }
        }
        if media_type.eq_ignore_ascii_case(PROTOBUF_MEDIA_TYPE)
            && proto == PROTOBUF_PROTO
            && encoding == "delimited"
        {
            protobuf = protobuf.max(q);
        } else {
            other = other.max(q);
        }
    }
    protobuf > 0.0 && protobuf >= other
}

/// `target_info` with labels `target` (none when empty), then the snapshot, in the Prometheus
/// text format (version 0.0.4): classic histograms only.
fn render_text(target: &Labels, snapshot: Option<&Snapshot>) -> String {
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry(families(target, snapshot, false)))
        .expect("the text encoder only fails when its writer does, and a String never does");
    out
}

/// As [`render_text`], in the length-delimited protobuf format, with native histograms.
fn encode_protobuf(
    target: &Labels,
    snapshot: Option<&Snapshot>,
) -> Result<Vec<u8>, prometheus_protobuf::EncodeError> {
    prometheus_protobuf::encode_to_vec(&registry(families(target, snapshot, true)))
}

fn registry(families: Vec<Family>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition(families)));
    registry
}

/// Label names and values of one series.
type Labels = Vec<(String, String)>;

/// One exposed metric family: what a snapshot's metric becomes.
#[derive(Debug)]
struct Family {
    /// Without the unit suffix and `_total`, which the encoder appends.
    name: String,
    unit: Option<Cow<'static, str>>,
    help: Cow<'static, str>,
    series: Series,
}

impl Family {
    /// The name as exposed (for counters, the name of the `_total` sample).
    fn exposed_name(&self) -> String {
        let mut name = self.name.clone();
        if let Some(unit) = &self.unit {
            name.push('_');
            name.push_str(unit);
        }
        if matches!(self.series, Series::Counter(_)) {
            name.push_str("_total");
        }
        name
    }
}

#[derive(Debug)]
enum Series {
    Counter(Vec<(Labels, Number)>),
    Gauge(Vec<(Labels, f64)>),
    Classic(Vec<(Labels, Classic)>),
    Native(Vec<(Labels, Native)>),
}

impl Series {
    fn metric_type(&self) -> MetricType {
        match self {
            Self::Counter(_) => MetricType::Counter,
            Self::Gauge(_) => MetricType::Gauge,
            Self::Classic(_) | Self::Native(_) => MetricType::Histogram,
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Self::Counter(v) => v.is_empty(),
            Self::Gauge(v) => v.is_empty(),
            Self::Classic(v) => v.is_empty(),
            Self::Native(v) => v.is_empty(),
        }
    }

    /// Appends `other`'s series when it is of the same kind; gives it back otherwise.
    fn append(&mut self, other: Self) -> Result<(), Self> {
        match (self, other) {
            (Self::Counter(a), Self::Counter(b)) => a.extend(b),
            (Self::Gauge(a), Self::Gauge(b)) => a.extend(b),
            (Self::Classic(a), Self::Classic(b)) => a.extend(b),
            (Self::Native(a), Self::Native(b)) => a.extend(b),
            (_, other) => return Err(other),
        }
        Ok(())
    }
}

/// A counter value: whole counts stay integers (exact beyond 2^53); converted units are floats.
#[derive(Debug)]
enum Number {
    Int(u64),
    Float(f64),
}

/// A classic histogram: per-`le` counts (the encoder accumulates them), in seconds.
#[derive(Debug)]
struct Classic {
    sum: f64,
    count: u64,
    /// `(le, values in (previous le, le])`; `+Inf` is implicit (the encoder adds it from
    /// `count`, and the protobuf format leaves it out).
    buckets: Vec<(f64, u64)>,
}

impl Classic {
    fn of(h: &Hist) -> Self {
        let buckets = (0..=CLASSIC_MAX_POWER)
            .map(|k| {
                // With P buckets per octave, slot P*k is the bucket whose upper bound is 2^k ns
                // and slots P*(k-1)+1..=P*k make up (2^(k-1), 2^k]. Below 1 ns there is only
                // zero and slot 0, which holds exactly 1 ns.
                let k = k as usize;
                let slots = if k == 0 {
                    0..=0
                } else {
                    BUCKETS_PER_OCTAVE * (k - 1) + 1..=BUCKETS_PER_OCTAVE * k
                };
                let mut n = h.buckets[slots]
                    .iter()
                    .fold(0u64, |n, c| n.wrapping_add(*c));
                if k == 0 {
                    n = n.wrapping_add(h.zero);
                }
                ((1u64 << k) as f64 / NS_PER_S, n)
            })
            .collect();
        Self {
            sum: h.sum as f64 / NS_PER_S,
            count: crate::hist::count(h),
            buckets,
        }
    }
}

/// A native histogram of schema 2 in nanoseconds: the kernel's buckets as they are.
#[derive(Debug)]
struct Native {
    sum: f64,
    count: u64,
    zero: u64,
    /// `(offset, length)`: the first offset is the first bucket's index, later ones the gap
    /// after the previous span. Runs of non-empty buckets, so no count is spent on empty ones.
    spans: Vec<(i32, u32)>,
    /// Each bucket's count minus the previous bucket's (the first minus zero), across spans.
    deltas: Vec<i64>,
    start: SystemTime,
}

impl Native {
    fn of(h: &Hist, start: SystemTime) -> Self {
        let mut spans: Vec<(i32, u32)> = Vec::new();
        let mut deltas = Vec::new();
        // Index one past the last bucket of the previous span, and that bucket's count.
        let (mut end, mut previous) = (None::<i32>, 0i64);
        for (slot, &count) in h.buckets.iter().enumerate().filter(|(_, c)| **c > 0) {
            // Prometheus' bucket i is (2^((i-1)/4), 2^(i/4)], OTLP's j is (2^(j/4), 2^((j+1)/4)].
            let index = slot_index(slot) + 1;
            match (end, spans.last_mut()) {
                (Some(e), Some(span)) if e == index => span.1 += 1,
                (Some(e), _) => spans.push((index - e, 1)),
                (None, _) => spans.push((index, 1)),
            }
            end = Some(index + 1);
            // Counts of one interval's worth of events stay far below 2^63.
            let count = count as i64;
            deltas.push(count - previous);
            previous = count;
        }
        Self {
            sum: h.sum as f64,
            count: crate::hist::count(h),
            zero: h.zero,
            spans,
            deltas,
            start,
        }
    }
}

/// `target_info` (when `target` has labels: the specification leaves an empty resource out),
/// then the snapshot as Prometheus families, in snapshot order. `native` adds the native
/// histogram families (protobuf only: the text format cannot carry them).
fn families(target: &Labels, snapshot: Option<&Snapshot>, native: bool) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::new();
    if !target.is_empty() {
        out.push(Family {
            name: TARGET_INFO.to_owned(),
            unit: None,
            help: Cow::Borrowed("Target metadata: the OpenTelemetry resource of this agent."),
            series: Series::Gauge(vec![(target.clone(), 1.0)]),
        });
    }
    for metric in snapshot.iter().flat_map(|s| &s.metrics) {
        for family in translate(metric, native) {
            if family.series.is_empty() {
                // A family without samples is noise in the exposition.
                continue;
            }
            let exposed = family.exposed_name();
            match out.iter_mut().find(|f| f.exposed_name() == exposed) {
                None => out.push(family),
                Some(existing) => {
                    if existing.series.append(family.series).is_err() {
                        // Not in the catalog; only a sink's self-metric could cause it.
                        tracing::warn!(
                            "two metrics of different types are both named {exposed}: exporting the first only"
                        );
                    }
                }
            }
        }
    }
    out
}

fn translate(metric: &Metric, native: bool) -> Vec<Family> {
    let name = sanitize(metric.name);
    let help = Cow::Borrowed(metric.description);
    match &metric.data {
        Data::Histogram(points) => {
            // A `Hist` counts nanoseconds (observer_common::hist).
            debug_assert_eq!(
                metric.unit, "ns",
                "{} is a Hist, so its unit is ns",
                metric.name
            );
            let classic = Series::Classic(
                points
                    .iter()
                    .map(|p| (labels(&p.attributes), Classic::of(&p.hist)))
                    .collect(),
            );
            let mut out = vec![family(&name, Some("seconds".into()), help.clone(), classic)];
            if native {
                let series = Series::Native(
                    points
                        .iter()
                        .map(|p| (labels(&p.attributes), Native::of(&p.hist, p.start)))
                        .collect(),
                );
                let help = format!(
                    "{help} The kernel's exact buckets, in nanoseconds (native histogram)."
                );
                out.push(family(&name, Some(NATIVE_UNIT.into()), help.into(), series));
            }
            out
        }
        Data::Sum(points) => {
            let (unit, per_unit) = prometheus_unit(metric.unit);
            let series = Series::Counter(
                points
                    .iter()
                    .map(|p| {
                        let value = if per_unit == 1.0 {
                            Number::Int(p.value)
                        } else {
                            Number::Float(p.value as f64 / per_unit)
                        };
                        (labels(&p.attributes), value)
                    })
                    .collect(),
            );
            vec![family(&name, unit, help, series)]
        }
        Data::Gauge(points) => {
            let (unit, per_unit) = prometheus_unit(metric.unit);
            let series = Series::Gauge(
                points
                    .iter()
                    .map(|p| (labels(&p.attributes), p.value / per_unit))
                    .collect(),
            );
            vec![family(&name, unit, help, series)]
        }
    }
}

fn family(
    name: &str,
    unit: Option<Cow<'static, str>>,
    help: Cow<'static, str>,
    series: Series,
) -> Family {
    let name = match &unit {
        Some(u) => strip_unit(name, u),
        None => name.to_owned(),
    };
    Family {
        name,
        unit,
        help,
        series,
    }
}

/// A UCUM unit as a Prometheus name suffix, and how many of it make one of that suffix's unit
/// (the value is divided by it): times in seconds, bytes in bytes; counts and ratios have none.
fn prometheus_unit(ucum: &str) -> (Option<Cow<'static, str>>, f64) {
    match ucum {
        "ns" => (Some("seconds".into()), 1e9),
        "us" => (Some("seconds".into()), 1e6),
        "ms" => (Some("seconds".into()), 1e3),
        "s" => (Some("seconds".into()), 1.0),
        "By" => (Some("bytes".into()), 1.0),
        "" | "1" => (None, 1.0),
        u if u.starts_with('{') && u.ends_with('}') => (None, 1.0),
        u => (Some(sanitize(u).into()), 1.0),
    }
}

/// `name` without a trailing `_<unit>`, which the encoder appends (so a name that already
/// states its unit does not state it twice).
fn strip_unit(name: &str, unit: &str) -> String {
    name.strip_suffix(unit)
        .and_then(|n| n.strip_suffix('_'))
        .filter(|n| !n.is_empty())
        .unwrap_or(name)
        .to_owned()
}

/// A Prometheus metric or label name: characters other than ASCII letters, digits and `_`
/// become `_`, and a leading digit gets a `_` before it.
fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    out
}

fn labels(attributes: &[(&'static str, Value)]) -> Labels {
    attributes
        .iter()
        .map(|(key, value)| (sanitize(key), text(value)))
        .collect()
}

fn text(value: &Value) -> String {
    match value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
    }
}

/// The resource as `target_info`'s labels. Its attributes come partly from the user
/// (OTEL_RESOURCE_ATTRIBUTES), so two may become the same label (`a.b` and `a_b`): as the
/// specification says, they then share it, their values joined by `;` in the order of the
/// attributes' names (a label twice in a series would make Prometheus refuse the scrape).
fn target_labels(resource: &Resource) -> Labels {
    let mut by_label: BTreeMap<String, BTreeMap<&str, String>> = BTreeMap::new();
    for (key, value) in &resource.attributes {
        by_label
            .entry(sanitize(key))
            .or_default()
            .insert(key, text(value));
    }
    by_label
        .into_iter()
        .map(|(label, values)| (label, values.into_values().collect::<Vec<_>>().join(";")))
        .collect()
}

/// The families of one scrape, encoded by prometheus-client in whichever format was asked for.
#[derive(Debug)]
struct Exposition(Vec<Family>);

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for family in &self.0 {
            let unit = family.unit.as_deref().map(|u| Unit::Other(u.to_owned()));
            let mut metric = encoder.encode_descriptor(
                &family.name,
                &family.help,
                unit.as_ref(),
                family.series.metric_type(),
            )?;
            match &family.series {
                Series::Counter(points) => {
                    for (labels, value) in points {
                        let mut m = metric.encode_family(labels)?;
                        match value {
                            Number::Int(n) => m.encode_counter::<NoLabelSet, _, u64>(n, None)?,
                            Number::Float(x) => m.encode_counter::<NoLabelSet, _, f64>(x, None)?,
                        }
                    }
                }
                Series::Gauge(points) => {
                    for (labels, value) in points {
                        metric.encode_family(labels)?.encode_gauge(value)?;
                    }
                }
                Series::Classic(points) => {
                    for (labels, h) in points {
                        metric
                            .encode_family(labels)?
                            .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
                    }
                }
                Series::Native(points) => {
                    for (labels, h) in points {
                        let native = NativeHistogram {
                            schema: SCALE,
                            zero_threshold: ZERO_THRESHOLD,
                            zero_count: h.zero,
                            negative: NativeHistogramBuckets {
                                spans: &[],
                                deltas: &[],
                            },
                            positive: NativeHistogramBuckets {
                                spans: &h.spans,
                                deltas: &h.deltas,
                            },
                            created: Some(h.start),
                        };
                        metric
                            .encode_family(labels)?
                            .encode_histogram_with_native::<NoLabelSet>(
                                h.sum,
                                h.count,
                                &[],
                                None,
                                native,
                            )?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use observer_common::hist::slot;
    use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as proto;

    use super::*;
    use crate::agent::metrics::{GaugePoint, HistogramPoint};

    fn snapshot(metrics: Vec<Metric>) -> Snapshot {
        Snapshot {
            time: UNIX_EPOCH,
            metrics,
        }
    }

    fn histogram(
        name: &'static str,
        attributes: super::super::metrics::Attributes,
        h: Hist,
    ) -> Metric {
        Metric {
            name,
            description: "Test latency.",
            unit: "ns",
            data: Data::Histogram(vec![HistogramPoint {
                attributes,
                start: UNIX_EPOCH,
                hist: Box::new(h),
            }]),
        }
    }

    fn sum(name: &'static str, unit: &'static str, value: u64) -> Metric {
        Metric {
            name,
            description: "Test count.",
            unit,
            data: Data::Sum(vec![SumPoint {
                attributes: vec![("test.kind", "a".into())],
                start: UNIX_EPOCH,
                value,
            }]),
        }
    }

    fn gauge(name: &'static str, unit: &'static str, value: f64) -> Metric {
        Metric {
            name,
            description: "Test gauge.",
            unit,
            data: Data::Gauge(vec![GaugePoint {
                attributes: Vec::new(),
                value,
            }]),
        }
    }

    /// Every classic `le`, as exposed: 2^k ns in seconds for k = 0..=40.
    const LE: [&str; 41] = [
        "1e-09",
        "2e-09",
        "4e-09",
        "8e-09",
        "1.6e-08",
        "3.2e-08",
        "6.4e-08",
        "1.28e-07",
        "2.56e-07",
        "5.12e-07",
        "1.024e-06",
        "2.048e-06",
        "4.096e-06",
        "8.192e-06",
        "1.6384e-05",
        "3.2768e-05",
        "6.5536e-05",
        "0.000131072",
        "0.000262144",
        "0.000524288",
        "0.001048576",
        "0.002097152",
        "0.004194304",
        "0.008388608",
        "0.016777216",
        "0.033554432",
        "0.067108864",
        "0.134217728",
        "0.268435456",
        "0.536870912",
        "1.073741824",
        "2.147483648",
        "4.294967296",
        "8.589934592",
        "17.179869184",
        "34.359738368",
        "68.719476736",
        "137.438953472",
        "274.877906944",
        "549.755813888",
        "1099.511627776",
    ];

    #[test]
    fn classic_buckets_are_exact_at_every_power_of_two() {
        let mut h = Hist::ZERO;
        // Values at and just around boundaries: an exact power of two belongs below it.
        let values: [(u64, u64); 6] = [
            (0, 2),             // zero: in every bucket
            (1, 3),             // le 1 ns
            (2, 1),             // le 2 ns (upper-inclusive)
            (3, 4),             // le 4 ns
            (1 << 20, 5),       // le 2^20 ns
            ((1 << 40) + 1, 6), // above the last le: +Inf only
        ];
        for (v, n) in values {
            if v == 0 {
                h.zero += n;
            } else {
                h.buckets[slot(v)] += n;
            }
            h.sum += v * n;
        }
        let text = render_text(
            &Labels::new(),
            Some(&snapshot(vec![histogram(
                names::RUNQUEUE_WAIT_DURATION,
                Vec::new(),
                h,
            )])),
        );
        let cumulative = |k: usize| -> u64 {
            values
                .iter()
                .filter(|(v, _)| *v <= 1 << k)
                .map(|(_, n)| n)
                .sum()
        };
        let mut expected = vec![
            "# HELP observer_runqueue_wait_duration_seconds Test latency.".to_owned(),
            "# TYPE observer_runqueue_wait_duration_seconds histogram".to_owned(),
        ];
        for (k, le) in LE.iter().enumerate() {
            expected.push(format!(
                "observer_runqueue_wait_duration_seconds_bucket{{le=\"{le}\"}} {}",
                cumulative(k)
            ));
        }
        let sum_s = h.sum as f64 / 1e9;
        expected.extend([
            "observer_runqueue_wait_duration_seconds_bucket{le=\"+Inf\"} 21".to_owned(),
            format!("observer_runqueue_wait_duration_seconds_sum {sum_s}"),
            "observer_runqueue_wait_duration_seconds_count 21".to_owned(),
        ]);
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
        // Spot-check the cumulative counts the loop computed.
        assert!(text.contains("_bucket{le=\"1e-09\"} 5\n"));
        assert!(text.contains("_bucket{le=\"2e-09\"} 6\n"));
        assert!(text.contains("_bucket{le=\"4e-09\"} 10\n"));
        assert!(text.contains("_bucket{le=\"0.000524288\"} 10\n"));
        assert!(text.contains("_bucket{le=\"0.001048576\"} 15\n"));
        assert!(text.contains("_bucket{le=\"1099.511627776\"} 15\n"));
    }

    #[test]
    fn le_values_are_the_exact_decimal_seconds_of_powers_of_two() {
        let classic = Classic::of(&Hist::ZERO);
        assert_eq!(classic.buckets.len(), LE.len());
        for (k, ((le, _), text)) in classic.buckets.iter().zip(LE).enumerate() {
            assert_eq!(*le, text.parse::<f64>().unwrap(), "le of 2^{k} ns");
        }
    }

    #[test]
    fn counters_gauges_names_help_and_labels() {
        let metrics = vec![
            sum(names::TCP_RETRANSMITS, "{retransmit}", 42),
            gauge(names::SIGNAL_ATTACHED, "1", 1.0),
            gauge(names::COLLECTION_DURATION, "s", 0.25),
            // A counter of nanoseconds is exported in seconds.
            sum("test.busy_time", "ns", 1_500_000_000),
        ];
        let text = render_text(&Labels::new(), Some(&snapshot(metrics)));
        let expected = "\
# HELP observer_tcp_retransmits_total Test count.
# TYPE observer_tcp_retransmits_total counter
observer_tcp_retransmits_total{test_kind=\"a\"} 42
# HELP observer_signal_attached Test gauge.
# TYPE observer_signal_attached gauge
observer_signal_attached 1.0
# HELP observer_collection_duration_seconds Test gauge.
# TYPE observer_collection_duration_seconds gauge
observer_collection_duration_seconds 0.25
# HELP test_busy_time_seconds_total Test count.
# TYPE test_busy_time_seconds_total counter
test_busy_time_seconds_total{test_kind=\"a\"} 1.5
";
        assert_eq!(text, expected);
    }

    #[test]
    fn label_values_are_escaped_and_keys_sanitized() {
        let attributes = vec![
            (keys::CGROUP_PATH, "/a \"b\" \\c\nd".into()),
            (keys::PROCESS_PID, 1234.into()),
        ];
        let text = render_text(
            &Labels::new(),
            Some(&snapshot(vec![histogram(
                names::FUTEX_WAIT_DURATION,
                attributes,
                Hist::ZERO,
            )])),
        );
        let first = text.lines().nth(2).unwrap();
        assert_eq!(
            first,
            r#"observer_futex_wait_duration_seconds_bucket{observer_cgroup_path="/a \"b\" \\c\nd",process_pid="1234",le="1e-09"} 0"#
        );
    }

    #[test]
    fn the_resource_is_target_info_in_both_formats() {
        let resource = Resource {
            attributes: vec![
                ("service.name".into(), "observer".into()),
                (
                    "service.instance.id".into(),
                    "9d8987cf-62e7-5c7e-90d6-cd284b1fc479".into(),
                ),
                ("test.run".into(), Value::Int(7)),
                // Three keys that become one label: their values in the order of the keys.
                ("a_b".into(), "2".into()),
                ("a.b".into(), "1".into()),
                ("a-b".into(), "0".into()),
            ],
        };
        let target = target_labels(&resource);
        let s = snapshot(vec![sum(names::TCP_RETRANSMITS, "{retransmit}", 3)]);
        let text = render_text(&target, Some(&s));
        let info = "\
# HELP target_info Target metadata: the OpenTelemetry resource of this agent.
# TYPE target_info gauge
target_info{a_b=\"0;1;2\",service_instance_id=\"9d8987cf-62e7-5c7e-90d6-cd284b1fc479\",service_name=\"observer\",test_run=\"7\"} 1.0
# HELP observer_tcp_retransmits_total";
        assert!(text.starts_with(info), "{text}");
        // Before the first snapshot: target_info alone; with an empty resource, nothing.
        assert!(render_text(&target, None).starts_with(info.rsplit_once('#').unwrap().0));
        assert_eq!(render_text(&target, None).matches("# TYPE").count(), 1);
        assert_eq!(render_text(&Labels::new(), None), "");

        let families =
            prometheus_protobuf::encode(&registry(families(&target, None, true))).unwrap();
        let [info] = &families[..] else {
            panic!("{families:?}")
        };
        assert_eq!(
            (info.name.as_str(), info.r#type),
            ("target_info", proto::MetricType::Gauge as i32)
        );
        let labels: Vec<(&str, &str)> = info.metric[0]
            .label
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("a_b", "0;1;2"),
                (
                    "service_instance_id",
                    "9d8987cf-62e7-5c7e-90d6-cd284b1fc479"
                ),
                ("service_name", "observer"),
                ("test_run", "7")
            ]
        );
        assert_eq!(info.metric[0].gauge.as_ref().map(|g| g.value), Some(1.0));
    }

    #[test]
    fn help_is_escaped() {
        let mut m = gauge("test.g", "1", 0.0);
        m.description = "line one\\two\nthree";
        let text = render_text(&Labels::new(), Some(&snapshot(vec![m])));
        assert!(
            text.starts_with("# HELP test_g line one\\\\two\\nthree\n"),
            "{text}"
        );
    }

    #[test]
    fn units_and_names_translate_the_standard_way() {
        assert_eq!(prometheus_unit("ns"), (Some("seconds".into()), 1e9));
        assert_eq!(prometheus_unit("By"), (Some("bytes".into()), 1.0));
        assert_eq!(prometheus_unit("{request}"), (None, 1.0));
        assert_eq!(prometheus_unit("1"), (None, 1.0));
        assert_eq!(prometheus_unit("m/s"), (Some("m_s".into()), 1.0));
        assert_eq!(
            sanitize("observer.block_io.device.duration"),
            "observer_block_io_device_duration"
        );
        assert_eq!(sanitize("9lives-x"), "_9lives_x");
        assert_eq!(strip_unit("a_duration_seconds", "seconds"), "a_duration");
        assert_eq!(strip_unit("seconds", "seconds"), "seconds");
        assert_eq!(strip_unit("a_nanoseconds", "seconds"), "a_nanoseconds");
    }

    #[test]
    fn same_name_metrics_share_one_family_and_empty_ones_are_left_out() {
        let mut a = sum(names::EXPORT_BATCHES, "{batch}", 1);
        let Data::Sum(points) = &mut a.data else {
            unreachable!()
        };
        points[0].attributes = vec![(keys::EXPORTER, "otlp".into())];
        let b = sum(names::EXPORT_BATCHES, "{batch}", 2);
        let empty = Metric {
            name: names::DROPPED,
            description: "x",
            unit: "{event}",
            data: Data::Sum(Vec::new()),
        };
        let text = render_text(&Labels::new(), Some(&snapshot(vec![a, empty, b])));
        assert_eq!(text.matches("# TYPE").count(), 1, "{text}");
        assert!(text.contains("observer_export_batches_total{observer_exporter=\"otlp\"} 1\n"));
        assert!(text.contains("observer_export_batches_total{test_kind=\"a\"} 2\n"));
        assert!(!text.contains("dropped"));
    }

    #[test]
    fn native_buckets_are_the_kernel_slots_with_spans_and_deltas() {
        let mut h = Hist::ZERO;
        h.zero = 7;
        for (s, n) in [(0, 3), (1, 5), (5, 2), (6, 2), (200, 9)] {
            h.buckets[s] = n;
        }
        h.sum = 12345;
        let n = Native::of(&h, UNIX_EPOCH);
        assert_eq!(n.spans, [(0, 2), (3, 2), (193, 1)]);
        assert_eq!(n.deltas, [3, 2, -3, 0, 7]);
        assert_eq!((n.zero, n.count, n.sum), (7, 28, 12345.0));
        assert!(Native::of(&Hist::ZERO, UNIX_EPOCH).spans.is_empty());
    }

    #[test]
    fn native_index_follows_prometheus_bucket_definition() {
        // Prometheus schema 2: bucket i covers (2^((i-1)/4), 2^(i/4)]. Check a value at, just
        // above and just below a power of two, and one inside an octave.
        for v in [1u64, 2, 3, 1 << 20, (1 << 20) + 1, 1_000_000] {
            let mut h = Hist::ZERO;
            h.buckets[slot(v)] = 1;
            let index = Native::of(&h, UNIX_EPOCH).spans[0].0;
            let (lower, upper) = (
                (f64::from(index - 1) / 4.0).exp2(),
                (f64::from(index) / 4.0).exp2(),
            );
            let v = v as f64;
            assert!(
                lower < v && v <= upper * (1.0 + 1e-15),
                "{v} in bucket {index}"
            );
        }
    }

    #[test]
    fn protobuf_has_classic_seconds_and_native_nanoseconds() {
        let mut h = Hist::ZERO;
        h.zero = 1;
        h.buckets[slot(1_000_000)] = 10;
        h.sum = 10_000_000;
        let attributes = vec![(keys::LOCK_CLASS, "mutex".into())];
        let s = snapshot(vec![
            histogram(names::LOCK_CONTENTION_DURATION, attributes, h),
            sum(names::TCP_RETRANSMITS, "{retransmit}", 3),
        ]);
        let families =
            prometheus_protobuf::encode(&registry(families(&Labels::new(), Some(&s), true)))
                .unwrap();
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "observer_lock_contention_duration_seconds",
                "observer_lock_contention_duration_nanoseconds",
                "observer_tcp_retransmits_total"
            ]
        );
        let classic = families[0].metric[0].histogram.as_ref().unwrap();
        assert_eq!(families[0].unit, "seconds");
        assert_eq!((classic.schema, classic.zero_threshold), (0, 0.0));
        assert!(classic.positive_span.is_empty());
        assert_eq!(classic.bucket.len(), LE.len());
        assert_eq!(classic.bucket[20].cumulative_count, 11);
        assert_eq!(classic.bucket[19].cumulative_count, 1);

        let native_family = &families[1];
        assert_eq!(native_family.r#type, proto::MetricType::Histogram as i32);
        assert_eq!(native_family.unit, "nanoseconds");
        let metric = &native_family.metric[0];
        assert_eq!(metric.label[0].name, "observer_lock_class");
        assert_eq!(metric.label[0].value, "mutex");
        let native = metric.histogram.as_ref().unwrap();
        assert!(native.bucket.is_empty());
        assert_eq!(native.schema, 2);
        assert_eq!(native.zero_threshold, ZERO_THRESHOLD);
        assert_eq!(ZERO_THRESHOLD, (-128f64).exp2());
        assert_eq!((native.zero_count, native.sample_count), (1, 11));
        assert_eq!(native.sample_sum, 1e7);
        let index = slot(1_000_000) as i32;
        assert_eq!(native.positive_span.len(), 1);
        assert_eq!(
            (
                native.positive_span[0].offset,
                native.positive_span[0].length
            ),
            (index, 1)
        );
        assert_eq!(native.positive_delta, [10]);
    }

    #[test]
    fn content_negotiation() {
        // What Prometheus 2.42 sends with and without --enable-feature=native-histograms.
        let with_native = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let without = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_protobuf(Some(with_native)));
        assert!(!wants_protobuf(Some(without)));
        assert!(!wants_protobuf(None));
        assert!(!wants_protobuf(Some("*/*")));
        assert!(!wants_protobuf(Some("application/vnd.google.protobuf")));
        assert!(!wants_protobuf(Some(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"
        )));
        assert!(!wants_protobuf(Some(
            "text/plain,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5"
        )));
        assert!(wants_protobuf(Some(
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; q=0.9, text/plain; q=0.2"
        )));
    }

    #[test]
    fn requests() {
        let shared = Shared {
            latest: Mutex::new(None),
            scrapes: AtomicU64::new(0),
            started: UNIX_EPOCH,
            target: Labels::new(),
        };
        let get = |path: &str| Request::get(path).body(()).unwrap();
        assert_eq!(respond(&shared, &get("/")).status(), StatusCode::NOT_FOUND);
        assert_eq!(
            respond(&shared, &get("/metrics/x")).status(),
            StatusCode::NOT_FOUND
        );
        let post = Request::post("/metrics").body(()).unwrap();
        let r = respond(&shared, &post);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET");
        // Before the first snapshot: 200, no metrics (and no target_info: no resource here).
        let r = respond(&shared, &get("/metrics?x=1"));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], prometheus_text::CONTENT_TYPE);
        assert_eq!(shared.scrapes.load(Ordering::Relaxed), 1);
    }
}
