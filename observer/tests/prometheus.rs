//! The Prometheus endpoint against a real Prometheus (Debian's `prometheus` package): it scrapes
//! a known snapshot, and its queries must give back exactly what was offered.
//!
//! Without Prometheus these tests fail, except outside CI with `OBSERVER_TESTS_ALLOW_SKIP=1`,
//! where they print `SKIPPED: <reason>` and pass.
//!
//! The Prometheus harness (`observer_tests::prom`, shared with the end-to-end tests) and the
//! HTTP client block. That is fine here: each test body runs on its own thread (the runtime's
//! `block_on`), while the endpoint under test runs on the worker thread.

use std::{
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use observer::{
    agent::{
        Resource, Sink,
        metrics::{
            Data, GaugePoint, HistogramPoint, Metric, Snapshot, SumPoint, Value, keys, names,
        },
        prometheus::{PromError, Server},
    },
    hist,
};
use observer_common::{Hist, hist::slot};
use observer_tests::prom::{self, Prometheus, http_get};
use serde_json::Value as Json;

/// How long Prometheus may take to scrape once it is ready (it scrapes every second).
const SCRAPED_WITHIN: Duration = Duration::from_secs(15);

/// A label value with every character the text format escapes.
const AWKWARD_CGROUP: &str = "/system.slice/a \"quoted\" \\ path\nwith a newline";

/// 5 zero values, 1000 of 1 ms and 10 of 100 ms.
fn latencies() -> Hist {
    let mut h = Hist::ZERO;
    h.zero = 5;
    h.buckets[slot(1_000_000)] = 1000;
    h.buckets[slot(100_000_000)] = 10;
    h.sum = 1000 * 1_000_000 + 10 * 100_000_000;
    h
}

fn snapshot(retransmits: u64) -> Snapshot {
    let start = SystemTime::now();
    Snapshot {
        time: start,
        metrics: vec![
            Metric {
                name: names::RUNQUEUE_WAIT_DURATION,
                description: "Time tasks spent runnable, waiting for a CPU.",
                unit: "ns",
                data: Data::Histogram(vec![HistogramPoint {
                    attributes: vec![
                        (keys::CGROUP_PATH, AWKWARD_CGROUP.into()),
                        (keys::PROCESS_COMM, "nginx".into()),
                        (keys::PROCESS_PID, Value::Int(1234)),
                    ],
                    start,
                    hist: Box::new(latencies()),
                }]),
            },
            Metric {
                name: names::TCP_RETRANSMITS,
                description: "TCP segments retransmitted.",
                unit: "{retransmit}",
                data: Data::Sum(vec![SumPoint {
                    attributes: vec![
                        (keys::PEER_ADDRESS, "10.0.0.2".into()),
                        (keys::PEER_PORT, Value::Int(443)),
                    ],
                    start,
                    value: retransmits,
                }]),
            },
            Metric {
                name: names::SIGNAL_ATTACHED,
                description: "Whether each signal's programs are attached.",
                unit: "1",
                data: Data::Gauge(vec![GaugePoint {
                    attributes: vec![(keys::SIGNAL, "runqueue".into())],
                    value: 1.0,
                }]),
            },
            Metric {
                name: names::COLLECTION_DURATION,
                description: "Time taken to read the maps.",
                unit: "s",
                data: Data::Gauge(vec![GaugePoint {
                    attributes: Vec::new(),
                    value: 0.25,
                }]),
            },
        ],
    }
}

/// Prometheus' binary, or the reason the test cannot run: a failure, or where allowed a skip.
macro_rules! prometheus_or_skip {
    () => {
        match prom::binary() {
            Some(path) => path,
            None => observer_tests::skip_or_fail!(
                "prometheus not found (install Debian's package: {}; or set PROMETHEUS to the \
                 server's path)",
                prom::INSTALL
            ),
        }
    };
}

/// The resource every endpoint here describes, as `target_info`.
fn resource() -> Resource {
    Resource {
        attributes: vec![
            ("service.name".into(), "observer".into()),
            (
                "service.instance.id".into(),
                "9d8987cf-62e7-5c7e-90d6-cd284b1fc479".into(),
            ),
            ("test.run".into(), Value::Int(7)),
        ],
    }
}

/// The endpoint on a free loopback port.
async fn endpoint() -> Server {
    Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), &resource())
        .await
        .expect("start the endpoint")
}

/// The one series of an instant query's result, as a number.
fn number(result: &Json) -> f64 {
    let series = result.as_array().expect("a vector");
    assert_eq!(series.len(), 1, "expected one series: {result}");
    string_number(&series[0]["value"][1])
}

fn string_number(v: &Json) -> f64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The classic bucket `(2^(k-1), 2^k]` ns holding `ns`.
fn classic_bucket(ns: f64) -> (f64, f64) {
    let k = ns.log2().ceil();
    ((k - 1.0).exp2(), k.exp2())
}

/// Starts the endpoint with the known snapshot and a Prometheus (`binary`) scraping it, and
/// checks what every format carries: the classic histogram, counters, gauges and labels. The
/// endpoint is returned too, so that it keeps serving while the test goes on querying.
async fn scrape(binary: &Path, native_histograms: bool) -> (Prometheus, Server) {
    let server = endpoint().await;
    server.offer(Arc::new(snapshot(42)));
    let prometheus = Prometheus::start(binary, server.local_addr(), native_histograms);
    prometheus.wait_for("observer_tcp_retransmits_total", SCRAPED_WITHIN);

    // Counters and gauges, with their labels.
    let retransmits = prometheus
        .query(r#"observer_tcp_retransmits_total{network_peer_address="10.0.0.2",network_peer_port="443"}"#);
    assert_eq!(number(&retransmits), 42.0);
    assert_eq!(
        number(&prometheus.query(r#"observer_signal_attached{observer_signal="runqueue"}"#)),
        1.0
    );
    assert_eq!(
        number(&prometheus.query("observer_collection_duration_seconds")),
        0.25
    );

    // The resource: target_info, 1, labelled with the resource's attributes (and the job and
    // instance Prometheus adds to every series it scrapes).
    let info = prometheus.query("target_info");
    assert_eq!(number(&info), 1.0);
    let labels = &info[0]["metric"];
    assert_eq!(labels["service_name"], "observer", "{labels}");
    assert_eq!(
        labels["service_instance_id"], "9d8987cf-62e7-5c7e-90d6-cd284b1fc479",
        "{labels}"
    );
    assert_eq!(labels["test_run"], "7", "{labels}");
    assert_eq!(
        labels.as_object().map(|l| l.len()),
        Some(6),
        "__name__, job, instance and the three attributes: {labels}"
    );

    // The classic histogram: labels survive escaping, counts are exact at each le.
    let count = prometheus.query("observer_runqueue_wait_duration_seconds_count");
    let labels = &count[0]["metric"];
    assert_eq!(labels["observer_cgroup_path"], AWKWARD_CGROUP, "{labels}");
    assert_eq!(labels["observer_process_comm"], "nginx", "{labels}");
    assert_eq!(labels["process_pid"], "1234", "{labels}");
    assert_eq!(number(&count), 1015.0);
    assert_eq!(
        number(&prometheus.query("observer_runqueue_wait_duration_seconds_sum")),
        2.0
    );
    assert_eq!(
        number(&prometheus.query("count(observer_runqueue_wait_duration_seconds_bucket)")),
        42.0,
        "41 powers of two and +Inf"
    );
    for (le, cumulative) in [
        ("1e-09", 5.0),
        ("0.000524288", 5.0),
        ("0.001048576", 1005.0),
        ("0.067108864", 1005.0),
        ("0.134217728", 1015.0),
        ("+Inf", 1015.0),
    ] {
        let q = format!(r#"observer_runqueue_wait_duration_seconds_bucket{{le="{le}"}}"#);
        assert_eq!(number(&prometheus.query(&q)), cumulative, "{q}");
    }

    // The median Prometheus computes lies in the same classic bucket as the agent's own.
    let agent_p50 = hist::percentile(&latencies(), 0.5);
    let (lower, upper) = classic_bucket(agent_p50);
    let p50 = number(&prometheus.query(
        "histogram_quantile(0.5, sum by (le) (observer_runqueue_wait_duration_seconds_bucket))",
    )) * 1e9;
    assert!(
        lower < p50 && p50 <= upper * (1.0 + 1e-12),
        "Prometheus' median {p50} ns is outside ({lower}, {upper}] ns, the bucket of the agent's {agent_p50} ns"
    );
    (prometheus, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn prometheus_scrapes_the_text_format() {
    let binary = prometheus_or_skip!();
    let (prometheus, _endpoint) = scrape(&binary, false).await;
    // Text cannot carry native histograms.
    assert_eq!(
        prometheus.query("observer_runqueue_wait_duration_nanoseconds"),
        Json::Array(Vec::new())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn prometheus_scrapes_native_histograms_with_the_kernel_buckets() {
    let binary = prometheus_or_skip!();
    let (prometheus, _endpoint) = scrape(&binary, true).await;
    let result = prometheus.wait_for(
        "observer_runqueue_wait_duration_nanoseconds",
        SCRAPED_WITHIN,
    );
    assert_eq!(result[0]["metric"]["observer_cgroup_path"], AWKWARD_CGROUP);
    let h = &result[0]["histogram"][1];
    assert_eq!(string_number(&h["count"]), 1015.0, "{h}");
    assert_eq!(string_number(&h["sum"]), 2e9, "{h}");

    // Each bucket as Prometheus understands it: [boundary rule, lower, upper, count]. Rule 0 is
    // (lower, upper], rule 3 is [lower, upper] (the zero bucket).
    let buckets: Vec<(i64, f64, f64, f64)> = h["buckets"]
        .as_array()
        .unwrap_or_else(|| panic!("no buckets: {h}"))
        .iter()
        .map(|b| {
            (
                b[0].as_i64().expect("boundary rule"),
                string_number(&b[1]),
                string_number(&b[2]),
                string_number(&b[3]),
            )
        })
        .collect();
    let zero = 2f64.powi(-128);
    let kernel = |ns: u64| hist::bucket_bounds(slot(ns));
    let expected = [
        (3, -zero, zero, 5.0),
        (0, kernel(1_000_000).0, kernel(1_000_000).1, 1000.0),
        (0, kernel(100_000_000).0, kernel(100_000_000).1, 10.0),
    ];
    assert_eq!(buckets.len(), expected.len(), "{h}");
    let close = |a: f64, b: f64| (a - b).abs() <= a.abs().max(b.abs()) * 1e-12;
    for (got, want) in buckets.iter().zip(&expected) {
        assert!(
            got.0 == want.0 && close(got.1, want.1) && close(got.2, want.2) && got.3 == want.3,
            "Prometheus has bucket {got:?}, the kernel {want:?}"
        );
    }

    // The native median is exact to the kernel bucket, not just the power of two.
    let (lower, upper) = kernel(1_000_000);
    let p50 = number(
        &prometheus
            .query("histogram_quantile(0.5, sum(observer_runqueue_wait_duration_nanoseconds))"),
    );
    assert!(
        lower <= p50 && p50 <= upper,
        "native median {p50} ns is outside the kernel bucket ({lower}, {upper}]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn endpoint_serves_the_newest_snapshot() {
    let server = endpoint().await;
    let addr = server.local_addr();
    let get = |path: &str, accept: Option<&str>| http_get(addr, path, accept).expect("GET");

    // Before the first snapshot: 200 and only the resource.
    let (status, head, body) = get("/metrics", None);
    assert_eq!(status, 200, "{head}");
    let text = String::from_utf8(body).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        [
            r#"target_info{service_instance_id="9d8987cf-62e7-5c7e-90d6-cd284b1fc479",service_name="observer",test_run="7"} 1.0"#
        ],
        "{text}"
    );
    assert_eq!(get("/", None).0, 404);
    assert_eq!(get("/metric", None).0, 404);

    server.offer(Arc::new(snapshot(1)));
    let text = String::from_utf8(get("/metrics", None).2).unwrap();
    assert!(text.contains("\nobserver_tcp_retransmits_total{network_peer_address=\"10.0.0.2\",network_peer_port=\"443\"} 1\n"), "{text}");
    server.offer(Arc::new(snapshot(2)));
    let (_, head, body) = get("/metrics", Some("text/plain;version=0.0.4"));
    let text = String::from_utf8(body).unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(text.contains("\"} 2\n"), "{text}");
    assert!(!text.contains("nanoseconds"), "{text}");

    let (status, head, body) = get(
        "/metrics",
        Some(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
        ),
    );
    assert_eq!(status, 200);
    assert!(
        head.contains("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"),
        "{head}"
    );
    // Length-delimited MetricFamily messages; the names are plain strings inside.
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("observer_runqueue_wait_duration_nanoseconds"));
    assert!(body.contains("observer_runqueue_wait_duration_seconds"));

    // Four GET /metrics so far, counted in the sink's own metric.
    let metrics = server.metrics();
    let Data::Sum(points) = &metrics[0].data else {
        panic!("{metrics:?}")
    };
    assert_eq!(
        (metrics[0].name, points[0].value),
        (names::EXPORT_BATCHES, 4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn bind_errors_name_the_address_and_what_to_do() {
    let first = endpoint().await;
    let addr = first.local_addr();
    let err = match Server::start(addr, &resource()).await {
        Ok(_) => panic!("a second endpoint bound {addr}"),
        Err(e) => e,
    };
    assert!(matches!(err, PromError::Bind { .. }));
    let message = err.to_string();
    assert!(message.contains(&addr.to_string()), "{message}");
    assert!(message.contains("in use"), "{message}");
    assert!(message.contains("--prometheus-listen"), "{message}");
    assert!(message.contains("[prometheus]"), "{message}");
}
