//! The OTLP exporter against a real collector (rotel-agent, PyPI `rotel`): every metric type
//! over gRPC and HTTP, with and without gzip, checked value by value in the collector's own
//! log; a collector that is absent at start, one killed and restarted mid-run, and delta
//! temporality. Log records (the audit records of tuning decisions) likewise: every field over
//! both transports, with and without gzip, records queued
//! through an outage, the queue bound, and the final flush at shutdown.
//!
//! rotel-agent missing fails these tests, except outside CI with `OBSERVER_TESTS_ALLOW_SKIP=1`,
//! where they print `SKIPPED: <reason>`.
//!
//! The collector harness (`observer_tests::rotel`, shared with the end-to-end tests) polls its
//! log with blocking sleeps. That is fine here: each test body runs on its own thread (the
//! runtime's `block_on`), while the exporter under test runs on the two worker threads.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use observer::agent::{
    Resource, Sink,
    metrics::{Data, GaugePoint, HistogramPoint, Metric, Snapshot, SumPoint, Value, keys, names},
    otlp::{
        Compression, Counts, DEFAULT_LOG_QUEUE, Destination, Exporter, LogRecord, Protocol,
        Settings, Severity, Temporality, TlsFiles,
    },
};
use observer_common::{Hist, hist::slot};
use observer_tests::rotel::{self, Export, LogExport, Logged, Positive, Rotel, TempDir};

/// How long the collector may take to log what was sent.
const RECEIVED_WITHIN: Duration = Duration::from_secs(10);

/// The collector, or the reason the test cannot run: a failure, or where allowed a skip.
macro_rules! rotel_or_skip {
    () => {
        match rotel::find_binary() {
            Ok(bin) => bin,
            Err(reason) => observer_tests::skip_or_fail!("{reason}"),
        }
    };
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Values recorded `n` times each: 0 (zero_count), 1 ns (index -1), 1024 ns = 2^10 (an exact
/// power of two: the upper edge of index 39), 1025 ns (index 40), 1500 ns (index 42).
const VALUES: [(u64, u64); 5] = [(0, 2), (1, 1), (1024, 3), (1025, 2), (1500, 1)];

fn hist(n: u64) -> Hist {
    let mut h = Hist::ZERO;
    for (v, times) in VALUES {
        let times = times * n;
        if v == 0 {
            h.zero += times;
        } else {
            h.buckets[slot(v)] += times;
        }
        h.sum += v * times;
    }
    h
}

/// What the collector must show for `hist(n)`, written out from the OTLP definition rather than
/// computed by the code under test.
fn expected_buckets(n: u64) -> Positive {
    // Indices -1 ..= 42.
    let mut counts = vec![0; 44];
    for (index, times) in [(-1, 1), (39, 3), (40, 2), (42, 1)] {
        counts[(index + 1) as usize] = times * n;
    }
    Positive {
        scale: 2,
        offset: -1,
        counts,
    }
}

const HIST_SUM: u64 = 1 + 3 * 1024 + 2 * 1025 + 1500;
const HIST_COUNT: u64 = 2 + 1 + 3 + 2 + 1;

const HIST_DESCRIPTION: &str = "Run-queue latency (test)";

/// The attributes of the histogram's process series, as rotel logs them.
const PROCESS_SERIES: &[(&str, &str)] = &[
    (keys::CGROUP_PATH, "Str(/test.slice)"),
    ("process.pid", "Int(42)"),
];

/// The counts of an exporter that sent its one batch.
const SENT_ONE: Counts = Counts {
    success: 1,
    failure: 0,
    dropped: 0,
};

/// Logged temporalities.
const CUMULATIVE: Option<&str> = Some("AGGREGATION_TEMPORALITY_CUMULATIVE");
const DELTA: Option<&str> = Some("AGGREGATION_TEMPORALITY_DELTA");

/// A snapshot like the collector's: a histogram with a process series and an "other" series
/// holding only zeros, a counter, a gauge, and the exporter's own metrics. `n` scales every
/// count, so a later snapshot is a valid cumulative successor of an earlier one; the counter is
/// `42 * n`, which identifies the snapshot in the collector's log.
fn snapshot(time: SystemTime, start: SystemTime, n: u64, extra: Vec<Metric>) -> Arc<Snapshot> {
    let mut other = Hist::ZERO;
    other.zero = 5 * n;
    let mut metrics = vec![
        Metric {
            name: names::RUNQUEUE_WAIT_DURATION,
            description: HIST_DESCRIPTION,
            unit: "ns",
            data: Data::Histogram(vec![
                HistogramPoint {
                    attributes: vec![
                        (keys::CGROUP_PATH, "/test.slice".into()),
                        (keys::PROCESS_PID, 42.into()),
                    ],
                    start,
                    hist: Box::new(hist(n)),
                },
                HistogramPoint {
                    attributes: vec![(keys::CGROUP_PATH, "other".into())],
                    start,
                    hist: Box::new(other),
                },
            ]),
        },
        Metric {
            name: names::TCP_RETRANSMITS,
            description: "Retransmits (test)",
            unit: "{retransmit}",
            data: Data::Sum(vec![SumPoint {
                attributes: vec![
                    (keys::PEER_ADDRESS, "10.0.0.2".into()),
                    (keys::PEER_PORT, 443.into()),
                ],
                start,
                value: 42 * n,
            }]),
        },
        Metric {
            name: names::COLLECTION_DURATION,
            description: "Collection time (test)",
            unit: "s",
            data: Data::Gauge(vec![GaugePoint {
                attributes: Vec::new(),
                value: 0.25,
            }]),
        },
    ];
    metrics.extend(extra);
    Arc::new(Snapshot { time, metrics })
}

/// Settings for `endpoint` (for HTTP the metrics URL; log records go to `v1/logs` beside it).
fn settings(endpoint: String, protocol: Protocol) -> Settings {
    let logs_endpoint = match endpoint.strip_suffix("/v1/metrics") {
        Some(base) => format!("{base}/v1/logs"),
        None => endpoint.clone(),
    };
    let destination = |endpoint| Destination {
        endpoint,
        protocol,
        headers: [("x-observer-test".to_owned(), "1".to_owned())].into(),
        timeout: Duration::from_secs(2),
        compression: Compression::None,
        tls: TlsFiles::default(),
    };
    Settings {
        metrics: destination(endpoint),
        logs: destination(logs_endpoint),
        temporality: Temporality::Cumulative,
        queue: 8,
        log_queue: DEFAULT_LOG_QUEUE,
    }
}

/// [`settings`], gzip-compressed.
fn gzip(endpoint: String, protocol: Protocol) -> Settings {
    let mut s = settings(endpoint, protocol);
    s.metrics.compression = Compression::Gzip;
    s.logs.compression = Compression::Gzip;
    s
}

/// Each transport with and without gzip: `(name, settings)`, the name in the resource.
fn transports(collector: &Rotel) -> [(&'static str, Settings); 4] {
    [
        ("grpc", settings(collector.grpc_endpoint(), Protocol::Grpc)),
        (
            "http",
            settings(collector.http_endpoint(), Protocol::HttpProtobuf),
        ),
        ("grpc+gzip", gzip(collector.grpc_endpoint(), Protocol::Grpc)),
        (
            "http+gzip",
            gzip(collector.http_endpoint(), Protocol::HttpProtobuf),
        ),
    ]
}

fn resource(transport: &str) -> Resource {
    Resource {
        attributes: vec![
            ("service.name".into(), "observer-test".into()),
            ("test.transport".into(), transport.into()),
            ("test.run".into(), Value::Int(7)),
        ],
    }
}

/// The export from `transport` whose counter says it is snapshot `n`.
fn find<'a>(exports: &'a [Export], transport: &str, n: u64) -> Option<&'a Export> {
    let want = format!("Str({transport})");
    exports.iter().find(|e| {
        e.resource_attr("test.transport") == Some(want.as_str())
            && e.metric(names::TCP_RETRANSMITS)
                .and_then(|m| m.points.first())
                .and_then(|p| p.value.as_deref())
                == Some((42 * n).to_string().as_str())
            // The gauge is logged last: once it is there, the whole request is.
            && e.metric(names::COLLECTION_DURATION).is_some_and(|m| {
                m.points.first().is_some_and(|p| p.value.is_some())
            })
    })
}

/// The counter values (`42 * n` -> n) of every export from `transport`, in arrival order.
fn arrivals(exports: &[Export], transport: &str) -> Vec<u64> {
    let want = format!("Str({transport})");
    exports
        .iter()
        .filter(|e| e.resource_attr("test.transport") == Some(want.as_str()))
        .filter_map(|e| {
            e.metric(names::TCP_RETRANSMITS)?
                .points
                .first()?
                .value
                .clone()
        })
        .map(|v| v.parse::<u64>().unwrap() / 42)
        .collect()
}

/// Checks that `m` is a monotonic sum in `unit`.
fn assert_monotonic_sum(m: &Logged, unit: &str) {
    assert_eq!(
        (
            m.unit.as_str(),
            m.data_type.as_str(),
            m.monotonic.as_deref()
        ),
        (unit, "Sum", Some("true")),
        "{}",
        m.name
    );
}

/// Checks one cumulative export of `snapshot(time, start, 1, exporter metrics)` field by field.
fn check_cumulative(e: &Export, transport: &str, time: SystemTime, start: SystemTime) {
    assert_eq!(e.resource_attr("service.name"), Some("Str(observer-test)"));
    assert_eq!(
        e.resource_attr("test.transport"),
        Some(format!("Str({transport})").as_str())
    );
    assert_eq!(e.resource_attr("test.run"), Some("Int(7)"));
    assert_eq!(e.scope, format!("observer {}", env!("CARGO_PKG_VERSION")));
    let (time, start) = (nanos(time), nanos(start));

    let h = e.metric(names::RUNQUEUE_WAIT_DURATION).expect("histogram");
    assert_eq!(
        (
            h.description.as_str(),
            h.unit.as_str(),
            h.data_type.as_str()
        ),
        (HIST_DESCRIPTION, "ns", "ExponentialHistogram")
    );
    assert_eq!(h.temporality.as_deref(), CUMULATIVE);
    assert_eq!(h.points.len(), 2);
    let p = h.point(PROCESS_SERIES).expect("the process series");
    assert_eq!((p.start, p.time), (start, time));
    assert_eq!(p.count, Some(HIST_COUNT));
    assert_eq!(p.sum, Some(HIST_SUM as f64));
    assert_eq!(p.zero_count, Some(2));
    assert_eq!(p.positive(), Some(expected_buckets(1)));
    let other = h
        .point(&[(keys::CGROUP_PATH, "Str(other)")])
        .expect("the other series");
    assert_eq!(
        (other.count, other.sum, other.zero_count),
        (Some(5), Some(0.0), Some(5))
    );
    assert_eq!(other.positive(), None, "only zeros: no positive bucket");

    let s = e.metric(names::TCP_RETRANSMITS).expect("sum");
    assert_monotonic_sum(s, "{retransmit}");
    assert_eq!(s.temporality.as_deref(), CUMULATIVE);
    let sp = s
        .point(&[
            ("network.peer.address", "Str(10.0.0.2)"),
            ("network.peer.port", "Int(443)"),
        ])
        .expect("the retransmit series");
    assert_eq!(
        (sp.start, sp.time, sp.value.as_deref()),
        (start, time, Some("42"))
    );

    let g = e.metric(names::COLLECTION_DURATION).expect("gauge");
    assert_eq!((g.unit.as_str(), g.data_type.as_str()), ("s", "Gauge"));
    assert_eq!(g.points.len(), 1);
    assert_eq!(
        (g.points[0].time, g.points[0].value.as_deref()),
        (time, Some("0.25"))
    );

    let b = e.metric(names::EXPORT_BATCHES).expect("self-metrics");
    assert_monotonic_sum(b, "{batch}");
    for result in ["success", "failure", "dropped"] {
        let r = format!("Str({result})");
        let p = b
            .point(&[(keys::EXPORTER, "Str(otlp)"), (keys::RESULT, &r)])
            .unwrap_or_else(|| panic!("no {result} point"));
        assert_eq!(p.value.as_deref(), Some("0"), "{result}");
    }
}

/// Polls `done` for up to 5 s, then fails showing `state`.
async fn wait_until(done: impl Fn() -> bool, state: impl Fn() -> Counts) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out at {:?}", state());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_arrives_over_grpc_and_http_with_and_without_gzip() {
    let bin = rotel_or_skip!();
    let dir = TempDir::new("both");
    let collector = Rotel::start(&bin, &dir.0, "rotel", rotel::free_ports());
    let time = SystemTime::now();
    let start = time - Duration::from_secs(10);
    let transports = transports(&collector);
    for (transport, settings) in transports.clone() {
        let exporter = Exporter::start(settings, resource(transport)).unwrap();
        exporter.offer(snapshot(time, start, 1, exporter.metrics()));
        exporter.shutdown(Duration::from_secs(5)).await.unwrap();
        assert_eq!(exporter.counts(), SENT_ONE, "{transport}");
    }
    let names = transports.map(|(name, _)| name);
    let exports = collector.wait_for("every export", RECEIVED_WITHIN, |e| {
        names.iter().all(|t| find(e, t, 1).is_some())
    });
    for transport in names {
        check_cumulative(
            find(&exports, transport, 1).unwrap(),
            transport,
            time,
            start,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_absent_at_start_then_started() {
    let bin = rotel_or_skip!();
    let dir = TempDir::new("absent");
    let ports = rotel::free_ports();
    let endpoint = format!("http://127.0.0.1:{}/v1/metrics", ports.1);
    let exporter = Exporter::start(settings(endpoint, Protocol::HttpProtobuf), resource("http"))
        .expect("a collector that is down is not an error at start");
    let time = SystemTime::now();
    let start = time - Duration::from_secs(10);
    exporter.offer(snapshot(time, start, 1, exporter.metrics()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(exporter.counts(), Counts::default(), "nothing sent yet");

    let collector = Rotel::start(&bin, &dir.0, "rotel", ports);
    let began = Instant::now();
    let exports = collector.wait_for("the retried batch", RECEIVED_WITHIN, |e| {
        find(e, "http", 1).is_some()
    });
    eprintln!("arrived {:?} after the collector started", began.elapsed());
    check_cumulative(find(&exports, "http", 1).unwrap(), "http", time, start);
    exporter.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(exporter.counts(), SENT_ONE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_killed_and_restarted_resumes_and_counts_drops() {
    let bin = rotel_or_skip!();
    let dir = TempDir::new("restart");
    let ports = rotel::free_ports();
    let first = Rotel::start(&bin, &dir.0, "first", ports);
    let mut s = settings(first.grpc_endpoint(), Protocol::Grpc);
    s.queue = 2;
    let exporter = Exporter::start(s, resource("grpc")).unwrap();
    let start = SystemTime::now();
    let at = |n: u64| start + Duration::from_secs(n);
    exporter.offer(snapshot(at(1), start, 1, Vec::new()));
    first.wait_for("the first batch", RECEIVED_WITHIN, |e| {
        find(e, "grpc", 1).is_some()
    });
    // rotel logs a request before it answers: killing it now could lose the answer, and the
    // batch would be sent again (at-least-once delivery), which this test is not about.
    wait_until(|| exporter.counts().success == 1, || exporter.counts()).await;
    first.kill();

    // Five snapshots while the collector is down, into a queue of two: the three oldest are
    // dropped, whether or not one of them was being sent when the next arrived.
    for n in 2..=6 {
        exporter.offer(snapshot(at(n), start, n, Vec::new()));
    }
    wait_until(|| exporter.counts().dropped == 3, || exporter.counts()).await;
    assert_eq!(
        exporter.counts(),
        Counts {
            success: 1,
            failure: 0,
            dropped: 3
        }
    );

    let second = Rotel::start(&bin, &dir.0, "second", ports);
    let exports = second.wait_for("the queued batches", RECEIVED_WITHIN, |e| {
        find(e, "grpc", 5).is_some() && find(e, "grpc", 6).is_some()
    });
    // In order, and nothing of what was dropped.
    assert_eq!(arrivals(&exports, "grpc"), [5, 6]);
    let p = find(&exports, "grpc", 6)
        .unwrap()
        .metric(names::RUNQUEUE_WAIT_DURATION)
        .unwrap()
        .point(PROCESS_SERIES)
        .unwrap();
    assert_eq!(p.positive(), Some(expected_buckets(6)));
    exporter.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        exporter.counts(),
        Counts {
            success: 3,
            failure: 0,
            dropped: 3,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_temporality_sends_differences() {
    let bin = rotel_or_skip!();
    let dir = TempDir::new("delta");
    let collector = Rotel::start(&bin, &dir.0, "rotel", rotel::free_ports());
    let mut s = settings(collector.http_endpoint(), Protocol::HttpProtobuf);
    s.temporality = Temporality::Delta;
    let exporter = Exporter::start(s, resource("http")).unwrap();
    let start = SystemTime::now() - Duration::from_secs(30);
    let (t1, t2) = (
        start + Duration::from_secs(10),
        start + Duration::from_secs(20),
    );
    exporter.offer(snapshot(t1, start, 1, Vec::new()));
    exporter.offer(snapshot(t2, start, 3, Vec::new()));
    exporter.shutdown(Duration::from_secs(5)).await.unwrap();
    // The second export carries the difference, 2 * the base counts: its counter reads 84.
    let exports = collector.wait_for("both deltas", RECEIVED_WITHIN, |e| {
        find(e, "http", 1).is_some() && find(e, "http", 2).is_some()
    });
    for (n, from, to, times) in [(1, start, t1, 1), (2, t1, t2, 2)] {
        let e = find(&exports, "http", n).unwrap();
        let h = e.metric(names::RUNQUEUE_WAIT_DURATION).unwrap();
        assert_eq!(h.temporality.as_deref(), DELTA);
        let p = h.point(PROCESS_SERIES).unwrap();
        assert_eq!((p.start, p.time), (nanos(from), nanos(to)), "export {n}");
        assert_eq!(p.count, Some(HIST_COUNT * times));
        assert_eq!(p.sum, Some((HIST_SUM * times) as f64));
        assert_eq!(p.zero_count, Some(2 * times));
        assert_eq!(p.positive(), Some(expected_buckets(times)));
        let other = h.point(&[(keys::CGROUP_PATH, "Str(other)")]).unwrap();
        assert_eq!(other.zero_count, Some(5 * times));
        let s = e.metric(names::TCP_RETRANSMITS).unwrap();
        assert_eq!(s.temporality.as_deref(), DELTA);
        assert_eq!(s.points[0].start, nanos(from));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batch_is_dropped_and_counted_as_failure() {
    let bin = rotel_or_skip!();
    let dir = TempDir::new("refused");
    let collector = Rotel::start(&bin, &dir.0, "rotel", rotel::free_ports());
    // rotel has no receiver at this path: a final answer, not worth retrying.
    let endpoint = format!("http://127.0.0.1:{}/v1/nothing", collector.http_port);
    let exporter =
        Exporter::start(settings(endpoint, Protocol::HttpProtobuf), resource("http")).unwrap();
    let time = SystemTime::now();
    exporter.offer(snapshot(time, time, 1, Vec::new()));
    // Well within the first backoff (1 s): a retry would still be pending.
    exporter.shutdown(Duration::from_millis(500)).await.unwrap();
    assert_eq!(
        exporter.counts(),
        Counts {
            failure: 1,
            ..Counts::default()
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Log records.

/// The attribute that numbers a batch of records, to find it in the collector's log.
const BATCH: &str = "test.batch";

/// Batch `n`: a decision (WARN, string and int attributes), a cleared rule (INFO) and a failed
/// action (ERROR, a body with a colon and quotes), one millisecond apart from `time`.
fn records(time: SystemTime, n: i64) -> Vec<LogRecord> {
    let ms = Duration::from_millis(1);
    vec![
        LogRecord {
            time,
            severity: Severity::Warn,
            event_name: "observer.rule.decision",
            body: format!("rule tcp-retransmits: rate 12/s above 5/s for 30s (batch {n})"),
            attributes: vec![
                ("test.rule".into(), "tcp-retransmits".into()),
                ("test.observed".into(), Value::Int(12)),
                (BATCH.into(), Value::Int(n)),
            ],
        },
        LogRecord {
            time: time + ms,
            severity: Severity::Info,
            event_name: "observer.rule.cleared",
            body: "cleared".into(),
            attributes: vec![(BATCH.into(), Value::Int(n))],
        },
        LogRecord {
            time: time + 2 * ms,
            severity: Severity::Error,
            event_name: "observer.action.failed",
            body: "sysctl net.core.somaxconn: \"permission denied\"".into(),
            attributes: vec![(BATCH.into(), Value::Int(n))],
        },
    ]
}

/// The complete batch `n` from `transport`.
fn find_logs<'a>(exports: &'a [LogExport], transport: &str, n: i64) -> Option<&'a LogExport> {
    let want = format!("Str({transport})");
    let batch = format!("Int({n})");
    exports.iter().find(|e| {
        e.resource_attr("test.transport") == Some(want.as_str())
            && e.records.len() == 3
            && e.records
                .iter()
                .all(|r| r.attr(BATCH) == Some(batch.as_str()))
    })
}

/// The batch numbers of every batch of records from `transport`, in arrival order.
fn log_arrivals(exports: &[LogExport], transport: &str) -> Vec<i64> {
    let want = format!("Str({transport})");
    exports
        .iter()
        .filter(|e| e.resource_attr("test.transport") == Some(want.as_str()))
        .filter_map(|e| {
            let v = e.records.first()?.attr(BATCH)?;
            v.strip_prefix("Int(")?.strip_suffix(')')?.parse().ok()
        })
        .collect()
}

/// Checks batch `n` sent at `time` from `transport` field by field.
fn check_logs(e: &LogExport, transport: &str, time: SystemTime, n: i64) {
    assert_eq!(e.resource_attr("service.name"), Some("Str(observer-test)"));
    assert_eq!(
        e.resource_attr("test.transport"),
        Some(format!("Str({transport})").as_str())
    );
    assert_eq!(e.resource_attr("test.run"), Some("Int(7)"));
    assert_eq!(e.scope, format!("observer {}", env!("CARGO_PKG_VERSION")));
    let t = nanos(time);
    let batch = (BATCH.to_owned(), format!("Int({n})"));
    let expected = [
        (
            t,
            "WARN",
            "SEVERITY_NUMBER_WARN(13)",
            "observer.rule.decision",
            format!("Str(rule tcp-retransmits: rate 12/s above 5/s for 30s (batch {n}))"),
            vec![
                ("test.rule".to_owned(), "Str(tcp-retransmits)".to_owned()),
                ("test.observed".to_owned(), "Int(12)".to_owned()),
                batch.clone(),
            ],
        ),
        (
            t + 1_000_000,
            "INFO",
            "SEVERITY_NUMBER_INFO(9)",
            "observer.rule.cleared",
            "Str(cleared)".to_owned(),
            vec![batch.clone()],
        ),
        (
            t + 2_000_000,
            "ERROR",
            "SEVERITY_NUMBER_ERROR(17)",
            "observer.action.failed",
            "Str(sysctl net.core.somaxconn: \"permission denied\")".to_owned(),
            vec![batch],
        ),
    ];
    assert_eq!(e.records.len(), expected.len());
    for (r, (time, text, number, event, body, attributes)) in e.records.iter().zip(expected) {
        assert_eq!((r.time, r.observed_time), (time, time), "{r:?}");
        assert_eq!(
            (r.severity_text.as_str(), r.severity_number.as_str()),
            (text, number)
        );
        assert_eq!(r.event_name.as_deref(), Some(event));
        assert_eq!(r.body, body);
        assert_eq!(r.attributes, attributes);
    }
}

/// What an exporter that sent `n` batches without trouble reports.
fn sent(n: u64) -> Counts {
    Counts {
        success: n,
        ..Counts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_records_arrive_over_grpc_and_http_with_and_without_gzip() {
    let bin = rotel_or_skip!();
    let dir = TempDir::new("logs");
    let collector = Rotel::start(&bin, &dir.0, "rotel", rotel::free_ports());
    let time = SystemTime::now();
    let transports = transports(&collector);
    for (transport, settings) in transports.clone() {
        let exporter = Exporter::start(settings, resource(transport)).unwrap();
        // Metrics and records side by side, each to its own service.
        exporter.offer(snapshot(time, time, 1, Vec::new()));
        exporter.offer_logs(records(time, 1));
        // Sent by the final flush at the latest.
        exporter.shutdown(Duration::from_secs(5)).await.unwrap();
        assert_eq!(exporter.log_counts(), SENT_ONE, "{transport}");
        assert_eq!(exporter.counts(), SENT_ONE, "{transport}");
    }
    let names = transports.map(|(name, _)| name);
    let exports = collector.wait_for_logs("every batch of records", RECEIVED_WITHIN, |e| {
        names.iter().all(|t| find_logs(e, t, 1).is_some())
    });
    for transport in names {
        check_logs(
            find_logs(&exports, transport, 1).unwrap(),
            transport,
            time,
            1,
        );
        assert_eq!(log_arrivals(&exports, transport), [1], "sent once");
    }
    // The metrics went to the metrics service, not mixed into the logs.
    let metrics = collector.wait_for("every snapshot", RECEIVED_WITHIN, |e| {
        names.iter().all(|t| find(e, t, 1).is_some())
    });
    assert_eq!(metrics.len(), names.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_records_queued_while_the_collector_is_down_all_arrive() {
    let bin = rotel_or_skip!();
    let dir = TempDir::new("logs-outage");
    let ports = rotel::free_ports();
    let first = Rotel::start(&bin, &dir.0, "first", ports);
    let mut s = settings(first.grpc_endpoint(), Protocol::Grpc);
    s.log_queue = 4;
    let exporter = Exporter::start(s, resource("grpc")).unwrap();
    let start = SystemTime::now();
    let at = |n: i64| start + Duration::from_secs(n as u64);
    exporter.offer_logs(records(at(1), 1));
    first.wait_for_logs("the first batch", RECEIVED_WITHIN, |e| {
        find_logs(e, "grpc", 1).is_some()
    });
    // As for metrics: kill only once the answer is in, or the batch could be sent twice.
    wait_until(
        || exporter.log_counts().success == 1,
        || exporter.log_counts(),
    )
    .await;
    first.kill();

    // Three batches while it is down, within the bound of four; a snapshot too.
    for n in 2..=4 {
        exporter.offer_logs(records(at(n), n));
    }
    exporter.offer(snapshot(at(4), start, 4, Vec::new()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(exporter.log_counts(), sent(1), "nothing sent or dropped");

    let second = Rotel::start(&bin, &dir.0, "second", ports);
    let began = Instant::now();
    let exports = second.wait_for_logs("the queued batches", RECEIVED_WITHIN, |e| {
        (2..=4).all(|n| find_logs(e, "grpc", n).is_some())
    });
    eprintln!(
        "the queued records arrived {:?} after the collector restarted",
        began.elapsed()
    );
    // Each once, in order.
    assert_eq!(log_arrivals(&exports, "grpc"), [2, 3, 4]);
    for n in 2..=4 {
        check_logs(find_logs(&exports, "grpc", n).unwrap(), "grpc", at(n), n);
    }
    second.wait_for("the queued snapshot", RECEIVED_WITHIN, |e| {
        find(e, "grpc", 4).is_some()
    });
    exporter.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(exporter.log_counts(), sent(4));
    assert_eq!(exporter.counts(), sent(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_queue_bound_drops_the_oldest_batches_and_counts_them() {
    let bin = rotel_or_skip!();
    let dir = TempDir::new("logs-bound");
    let ports = rotel::free_ports();
    let mut s = settings(
        format!("http://127.0.0.1:{}/v1/metrics", ports.1),
        Protocol::HttpProtobuf,
    );
    s.log_queue = 2;
    let exporter = Exporter::start(s, resource("http")).unwrap();
    let start = SystemTime::now();
    let at = |n: i64| start + Duration::from_secs(n as u64);
    // Five batches for a collector that is not there, into a queue of two: the three oldest are
    // dropped, whether or not one of them was being sent when the next arrived.
    for n in 1..=5 {
        exporter.offer_logs(records(at(n), n));
    }
    wait_until(
        || exporter.log_counts().dropped == 3,
        || exporter.log_counts(),
    )
    .await;

    let collector = Rotel::start(&bin, &dir.0, "rotel", ports);
    let exports = collector.wait_for_logs("the two newest batches", RECEIVED_WITHIN, |e| {
        find_logs(e, "http", 4).is_some() && find_logs(e, "http", 5).is_some()
    });
    assert_eq!(log_arrivals(&exports, "http"), [4, 5]);
    check_logs(find_logs(&exports, "http", 5).unwrap(), "http", at(5), 5);
    let counts = Counts {
        success: 2,
        failure: 0,
        dropped: 3,
    };
    wait_until(|| exporter.log_counts() == counts, || exporter.log_counts()).await;

    // The drops reach the collector as the exporter's own metric.
    exporter.offer(snapshot(at(6), start, 1, exporter.metrics()));
    exporter.shutdown(Duration::from_secs(5)).await.unwrap();
    let metrics = collector.wait_for("the self-metrics", RECEIVED_WITHIN, |e| {
        find(e, "http", 1).is_some()
    });
    let b = find(&metrics, "http", 1)
        .unwrap()
        .metric(names::EXPORT_BATCHES)
        .expect("self-metrics");
    for (result, value) in [("success", "2"), ("failure", "0"), ("dropped", "3")] {
        let r = format!("Str({result})");
        let p = b
            .point(&[(keys::EXPORTER, "Str(otlp_logs)"), (keys::RESULT, &r)])
            .unwrap_or_else(|| panic!("no otlp_logs {result} point"));
        assert_eq!(p.value.as_deref(), Some(value), "{result}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_the_backoff_short_and_flushes_log_records() {
    let bin = rotel_or_skip!();
    let dir = TempDir::new("logs-flush");
    let ports = rotel::free_ports();
    let exporter = Exporter::start(
        settings(format!("http://127.0.0.1:{}", ports.0), Protocol::Grpc),
        resource("grpc"),
    )
    .unwrap();
    let time = SystemTime::now();
    exporter.offer_logs(records(time, 1));
    // Tries at 0 s, 1 s and 3 s fail; the next would be at 7 s.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(exporter.log_counts(), Counts::default(), "nothing sent yet");
    let collector = Rotel::start(&bin, &dir.0, "rotel", ports);
    let began = Instant::now();
    exporter.shutdown(Duration::from_secs(5)).await.unwrap();
    let took = began.elapsed();
    assert_eq!(exporter.log_counts(), SENT_ONE);
    assert!(
        took < Duration::from_secs(2),
        "the flush waited out the backoff: {took:?}"
    );
    let exports = collector.wait_for_logs("the flushed batch", RECEIVED_WITHIN, |e| {
        find_logs(e, "grpc", 1).is_some()
    });
    check_logs(find_logs(&exports, "grpc", 1).unwrap(), "grpc", time, 1);
}
