//! A real OTLP collector for the tests: `rotel-agent` (PyPI `rotel`) on loopback ports, with its
//! detailed debug log of every metric and log record it receives parsed back into values. The end-to-end tests
//! use it, and so do the observer crate's own exporter tests (`observer/tests/otlp.rs`, a
//! dev-dependency). It blocks: an async test calls it from its `block_on` thread of a
//! multi-thread runtime, so that what it tests keeps running on the workers.
//!
//! The log is rotel's text rendering (like the OpenTelemetry Collector's debug exporter); it
//! shows exponential buckets by their bounds, so the scale and the bucket indices are recovered
//! from the bounds rather than trusted from our own request. Log records are logged in the same
//! text ([`parse_logs`]); the two parsers each skip the other's sections.

use std::{
    fs,
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

/// How the project installs rotel (the lead's automatic setup runs the same).
pub const INSTALL: &str = "pip install rotel";

/// The `rotel-agent` binary: `$ROTEL_AGENT`, else on `PATH`, else inside the installed Python
/// package (pip puts it there, not on `PATH`).
pub fn find_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ROTEL_AGENT") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("ROTEL_AGENT={} is not a file", p.display()))
        };
    }
    if let Some(p) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("rotel-agent"))
        .find(|p| p.is_file())
    {
        return Ok(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .stderr(Stdio::null())
        .output();
    if let Ok(out) = out
        && out.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(format!(
        "rotel-agent (the OTLP collector these tests export to) is not installed: run `{INSTALL}` \
         or set ROTEL_AGENT to the binary"
    ))
}

/// A scratch directory for one test, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "observer-e2e-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Two free loopback ports (gRPC, HTTP), for rotel to bind once these listeners are closed.
/// Another process could take one in between; on a test machine that is unlikely enough.
pub fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let b = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// A running rotel-agent; killed (SIGKILL) on drop.
pub struct Rotel {
    child: Child,
    pub grpc_port: u16,
    pub http_port: u16,
    pub log: PathBuf,
}

impl Rotel {
    /// Starts rotel on 127.0.0.1 and waits until both receivers accept connections. Its debug
    /// log goes to `dir/<name>.log`.
    pub fn start(bin: &Path, dir: &Path, name: &str, (grpc_port, http_port): (u16, u16)) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = fs::File::create(&log).unwrap();
        let grpc = format!("127.0.0.1:{grpc_port}");
        let http = format!("127.0.0.1:{http_port}");
        let child = Command::new(bin)
            .arg("start")
            .args(["--otlp-grpc-endpoint", &grpc, "--otlp-http-endpoint", &http])
            .args([
                "--debug-log",
                "metrics",
                "--debug-log",
                "logs",
                "--debug-log-verbosity",
                "detailed",
            ])
            .args(["--exporter", "blackhole"])
            // Log each request as it arrives instead of batching for 200 ms.
            .arg("--disable-batching")
            // Without --daemon the log goes to stdout; these keep rotel's files out of /tmp.
            .arg("--log-file")
            .arg(dir.join(format!("{name}.file.log")))
            .arg("--pid-file")
            .arg(dir.join(format!("{name}.pid")))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let mut rotel = Self {
            child,
            grpc_port,
            http_port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [grpc_port, http_port] {
            while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
                if let Ok(Some(status)) = rotel.child.try_wait() {
                    panic!("rotel-agent exited ({status}):\n{}", rotel.log_text());
                }
                assert!(
                    Instant::now() < deadline,
                    "rotel-agent does not listen on 127.0.0.1:{port} after 10 s:\n{}",
                    rotel.log_text()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        rotel
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// The full OTLP/HTTP metrics URL.
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/metrics", self.http_port)
    }

    /// The full OTLP/HTTP logs URL.
    pub fn http_logs_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/logs", self.http_port)
    }

    /// The OTLP/HTTP base URL, to which a client appends `/v1/metrics` or `/v1/logs`.
    pub fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Everything received so far.
    pub fn exports(&self) -> Vec<Export> {
        parse(&self.log_text())
    }

    /// Every batch of log records received so far.
    pub fn log_exports(&self) -> Vec<LogExport> {
        parse_logs(&self.log_text())
    }

    /// Polls the log until `done` holds, failing the test (with the end of the log) after
    /// `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Export]) -> bool,
    ) -> Vec<Export> {
        self.poll(what, timeout, parse, done)
    }

    /// [`Rotel::wait_for`] for log records.
    pub fn wait_for_logs(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[LogExport]) -> bool,
    ) -> Vec<LogExport> {
        self.poll(what, timeout, parse_logs, done)
    }

    fn poll<T>(
        &self,
        what: &str,
        timeout: Duration,
        parse: fn(&str) -> Vec<T>,
        done: impl Fn(&[T]) -> bool,
    ) -> Vec<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let exports = parse(&self.log_text());
            if done(&exports) {
                return exports;
            }
            assert!(
                Instant::now() < deadline,
                "rotel did not receive {what} within {timeout:?} ({} exports logged); the end of \
                 its log:\n{}",
                exports.len(),
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything received so far, read once the log has not grown for 300 ms (waiting at most
    /// 5 s), so that the last export is not read half-written.
    pub fn settled_exports(&self) -> Vec<Export> {
        let len = || fs::metadata(&self.log).map_or(0, |m| m.len());
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = len();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let now = len();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= Duration::from_millis(300) {
                break;
            }
        }
        self.exports()
    }

    /// The last `lines` lines of the log, for failure messages (the whole log can be megabytes).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log_text();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// rotel's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills rotel at once (SIGKILL: no graceful drain, like a crash).
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One ResourceMetrics as rotel logged it.
#[derive(Debug, Default)]
pub struct Export {
    /// `key -> Str(v)` / `Int(v)` as logged.
    pub resource: Vec<(String, String)>,
    /// `name version`.
    pub scope: String,
    pub metrics: Vec<Logged>,
}

impl Export {
    /// The logged value of resource attribute `key`: `Str(v)`, `Int(v)`...
    pub fn resource_attr(&self, key: &str) -> Option<&str> {
        lookup(&self.resource, key)
    }

    pub fn metric(&self, name: &str) -> Option<&Logged> {
        self.metrics.iter().find(|m| m.name == name)
    }
}

#[derive(Debug, Default)]
pub struct Logged {
    pub name: String,
    pub description: String,
    pub unit: String,
    pub data_type: String,
    pub monotonic: Option<String>,
    pub temporality: Option<String>,
    pub points: Vec<Point>,
}

impl Logged {
    pub fn point(&self, attributes: &[(&str, &str)]) -> Option<&Point> {
        self.points.iter().find(|p| {
            p.attributes.len() == attributes.len()
                && attributes
                    .iter()
                    .all(|(k, v)| p.attributes.iter().any(|(pk, pv)| pk == k && pv == v))
        })
    }
}

#[derive(Debug, Default)]
pub struct Point {
    pub attributes: Vec<(String, String)>,
    pub start: u64,
    pub time: u64,
    pub count: Option<u64>,
    pub sum: Option<f64>,
    /// The `[0, 0]` bucket.
    pub zero_count: Option<u64>,
    /// `(lower, upper, count)` of each positive bucket, in log order.
    pub buckets: Vec<(f64, f64, u64)>,
    pub value: Option<String>,
}

/// Positive buckets read back from their bounds.
#[derive(Debug, PartialEq)]
pub struct Positive {
    pub scale: i32,
    pub offset: i32,
    pub counts: Vec<u64>,
}

impl Point {
    /// The logged value of attribute `key`: `Str(v)`, `Int(v)`...
    pub fn attr(&self, key: &str) -> Option<&str> {
        lookup(&self.attributes, key)
    }

    /// Recovers scale, offset and counts from the logged bounds: bucket `i` at scale `s` is
    /// `(2^(i/2^s), 2^((i+1)/2^s)]`. Fails if the bounds are not those of one exponential scale
    /// or the buckets are not contiguous.
    pub fn positive(&self) -> Option<Positive> {
        let &(lower, upper, _) = self.buckets.first()?;
        let scale = -(upper / lower).log2().log2();
        assert!(
            (scale - scale.round()).abs() < 1e-9,
            "bucket ({lower}, {upper}] is not exponential"
        );
        let scale = scale.round() as i32;
        let per = f64::from(1 << scale);
        let mut counts = Vec::new();
        let mut offset = None;
        for (n, &(lower, upper, count)) in self.buckets.iter().enumerate() {
            let index = (lower.log2() * per).round() as i32;
            let close = |a: f64, b: f64| ((a - b) / b).abs() < 1e-12;
            assert!(
                close(lower, (f64::from(index) / per).exp2())
                    && close(upper, (f64::from(index + 1) / per).exp2()),
                "bucket ({lower}, {upper}] is not bucket {index} of scale {scale}"
            );
            let first = *offset.get_or_insert(index);
            assert_eq!(index, first + n as i32, "buckets are not contiguous");
            counts.push(count);
        }
        Some(Positive {
            scale,
            offset: offset?,
            counts,
        })
    }
}

/// The value logged for `key` in `attributes`.
fn lookup<'a>(attributes: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Parses rotel's detailed metrics log. Only complete lines are read, so a log being written
/// is never half-parsed.
pub fn parse(log: &str) -> Vec<Export> {
    enum Section {
        None,
        Resource,
        Descriptor,
        PointAttributes,
    }
    let complete = &log[..log.rfind('\n').map_or(0, |i| i + 1)];
    let mut out: Vec<Export> = Vec::new();
    let mut section = Section::None;
    // Inside a batch of log records, whose lines (Timestamp, attributes) look like a point's.
    let mut in_logs = false;
    for line in complete.lines() {
        let t = line.trim();
        if t.starts_with("ResourceMetrics #") {
            out.push(Export::default());
            section = Section::None;
            in_logs = false;
            continue;
        }
        if t.starts_with("ResourceLog #") {
            in_logs = true;
        }
        if in_logs {
            continue;
        }
        let Some(export) = out.last_mut() else {
            continue;
        };
        if t == "Resource attributes:" {
            section = Section::Resource;
        } else if t == "Descriptor:" {
            section = Section::Descriptor;
        } else if t == "Data point attributes:" {
            section = Section::PointAttributes;
        } else if let Some(scope) = t.strip_prefix("InstrumentationScope ") {
            export.scope = scope.to_owned();
        } else if t.starts_with("Metric #") {
            export.metrics.push(Logged::default());
            section = Section::None;
        } else if t.starts_with("ExponentialHistogramDataPoints #")
            || t.starts_with("NumberDataPoints #")
        {
            if let Some(m) = export.metrics.last_mut() {
                m.points.push(Point::default());
            }
            section = Section::None;
        } else if let Some(kv) = t.strip_prefix("-> ") {
            let (k, v) = kv
                .split_once(": ")
                .unwrap_or((kv.trim_end_matches(':'), ""));
            let (k, v) = (k.to_owned(), v.to_owned());
            match section {
                Section::Resource => export.resource.push((k, v)),
                Section::PointAttributes => {
                    if let Some(p) = export.metrics.last_mut().and_then(|m| m.points.last_mut()) {
                        p.attributes.push((k, v));
                    }
                }
                Section::Descriptor => {
                    if let Some(m) = export.metrics.last_mut() {
                        match k.as_str() {
                            "Name" => m.name = v,
                            "Description" => m.description = v,
                            "Unit" => m.unit = v,
                            "DataType" => m.data_type = v,
                            "IsMonotonic" => m.monotonic = Some(v),
                            "AggregationTemporality" => m.temporality = Some(v),
                            _ => {}
                        }
                    }
                }
                Section::None => {}
            }
        } else if let Some(p) = export.metrics.last_mut().and_then(|m| m.points.last_mut()) {
            point_line(p, t);
        }
    }
    out
}

fn point_line(p: &mut Point, t: &str) {
    if let Some(v) = t.strip_prefix("StartTimestamp: ") {
        p.start = v.parse().unwrap();
    } else if let Some(v) = t.strip_prefix("Timestamp: ") {
        p.time = v.parse().unwrap();
    } else if let Some(v) = t.strip_prefix("Count: ") {
        p.count = Some(v.parse().unwrap());
    } else if let Some(v) = t.strip_prefix("Sum: ") {
        p.sum = Some(v.parse().unwrap());
    } else if let Some(v) = t.strip_prefix("Value: ") {
        p.value = Some(v.to_owned());
    } else if let Some(rest) = t.strip_prefix("Bucket ") {
        // "Bucket [0, 0], Count: 2" or "Bucket (861.07, 1024], Count: 3"
        let (bounds, count) = rest.split_once("], Count: ").unwrap();
        let count: u64 = count.parse().unwrap();
        if bounds == "[0, 0" {
            p.zero_count = Some(count);
        } else {
            let (lower, upper) = bounds.trim_start_matches('(').split_once(", ").unwrap();
            p.buckets
                .push((lower.parse().unwrap(), upper.parse().unwrap(), count));
        }
    }
}

/// One ResourceLogs as rotel logged it.
#[derive(Debug, Default)]
pub struct LogExport {
    /// `key -> Str(v)` / `Int(v)` as logged.
    pub resource: Vec<(String, String)>,
    /// `name version`.
    pub scope: String,
    /// The records logged in full (up to their `Flags:` line), in order.
    pub records: Vec<LoggedRecord>,
}

impl LogExport {
    /// The logged value of resource attribute `key`: `Str(v)`, `Int(v)`...
    pub fn resource_attr(&self, key: &str) -> Option<&str> {
        lookup(&self.resource, key)
    }
}

/// One log record as rotel logged it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoggedRecord {
    pub time: u64,
    pub observed_time: u64,
    pub severity_text: String,
    /// As logged: `SEVERITY_NUMBER_WARN(13)`.
    pub severity_number: String,
    /// Absent when the record has none.
    pub event_name: Option<String>,
    /// As logged: `Str(text)`, the text possibly spanning lines.
    pub body: String,
    pub attributes: Vec<(String, String)>,
}

impl LoggedRecord {
    /// The logged value of attribute `key`: `Str(v)`, `Int(v)`...
    pub fn attr(&self, key: &str) -> Option<&str> {
        lookup(&self.attributes, key)
    }
}

/// Parses rotel's detailed logs log, skipping metrics. Only complete records are returned: a
/// record is complete at its `Flags:` line, the last rotel writes for it.
///
/// ```text
/// ResourceLog #0
/// Resource attributes:
///      -> service.name: Str(svc)
/// ScopeLogs #0
/// InstrumentationScope observer 0.1.0
/// LogRecord #0
/// ObservedTimestamp: 1700000000000000001
/// Timestamp: 1700000000000000000
/// SeverityText: WARN
/// SeverityNumber: SEVERITY_NUMBER_WARN(13)
/// EventName: observer.rule.decision
/// Body: Str(line one
/// line two)
/// Attributes:
///      -> rule: Str(r1)
///     Trace ID       :
///     Span ID        :
/// Flags: 0
/// ```
pub fn parse_logs(log: &str) -> Vec<LogExport> {
    enum Section {
        None,
        Resource,
        Body,
        Attributes,
    }
    let complete = &log[..log.rfind('\n').map_or(0, |i| i + 1)];
    let mut out: Vec<LogExport> = Vec::new();
    let mut record: Option<LoggedRecord> = None;
    let mut section = Section::None;
    // Inside a batch of metrics, until the next batch of logs.
    let mut in_metrics = false;
    for line in complete.lines() {
        let t = line.trim();
        if t.starts_with("ResourceMetrics #") {
            in_metrics = true;
            record = None;
            continue;
        }
        if t.starts_with("ResourceLog #") {
            in_metrics = false;
            out.push(LogExport::default());
            record = None;
            section = Section::None;
            continue;
        }
        if in_metrics {
            continue;
        }
        let Some(export) = out.last_mut() else {
            continue;
        };
        if let Section::Body = section {
            // The body runs until the next field; it may span lines.
            if t != "Attributes:" && !t.starts_with("Trace ID") {
                if let Some(r) = record.as_mut() {
                    r.body.push('\n');
                    r.body.push_str(line);
                }
                continue;
            }
        }
        if t == "Resource attributes:" {
            section = Section::Resource;
        } else if let Some(scope) = t.strip_prefix("InstrumentationScope ") {
            export.scope = scope.to_owned();
            section = Section::None;
        } else if t.starts_with("LogRecord #") {
            record = Some(LoggedRecord::default());
            section = Section::None;
        } else if t == "Attributes:" {
            section = Section::Attributes;
        } else if let Some(kv) = t.strip_prefix("-> ") {
            let (k, v) = kv
                .split_once(": ")
                .unwrap_or((kv.trim_end_matches(':'), ""));
            let kv = (k.to_owned(), v.to_owned());
            match (&section, record.as_mut()) {
                (Section::Resource, _) => export.resource.push(kv),
                (Section::Attributes, Some(r)) => r.attributes.push(kv),
                _ => {}
            }
        } else if let Some(r) = record.as_mut() {
            section = Section::None;
            if let Some(v) = t.strip_prefix("ObservedTimestamp: ") {
                r.observed_time = v.parse().unwrap();
            } else if let Some(v) = t.strip_prefix("Timestamp: ") {
                r.time = v.parse().unwrap();
            } else if let Some(v) = t.strip_prefix("SeverityText: ") {
                r.severity_text = v.to_owned();
            } else if let Some(v) = t.strip_prefix("SeverityNumber: ") {
                r.severity_number = v.to_owned();
            } else if let Some(v) = t.strip_prefix("EventName: ") {
                r.event_name = Some(v.to_owned());
            } else if let Some(v) = line.trim_start().strip_prefix("Body: ") {
                r.body = v.to_owned();
                section = Section::Body;
            } else if t.starts_with("Flags:") {
                export.records.extend(record.take());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rotel 0.x's output for one metric batch between two log batches (captured by hand; the
    /// second body spans two lines).
    const LOG: &str = "\
ResourceLog #0
Resource SchemaURL: 
Resource attributes:
     -> service.name: Str(svc)
     -> n: Int(7)
ScopeLogs #0
ScopeLogs SchemaURL: 
InstrumentationScope observer 0.1.0
LogRecord #0
ObservedTimestamp: 1700000000000000001
Timestamp: 1700000000000000000
SeverityText: WARN
SeverityNumber: SEVERITY_NUMBER_WARN(13)
EventName: observer.rule.decision
Body: Str(line one
line two: x)
Attributes:
     -> rule: Str(r1)
     -> value: Int(42)
    Trace ID       : 
    Span ID        : 
Flags: 0
LogRecord #1
ObservedTimestamp: 0
Timestamp: 1700000000000000002
SeverityText: INFO
SeverityNumber: SEVERITY_NUMBER_INFO(9)
Body: Str()
    Trace ID       : 
    Span ID        : 
Flags: 0
ResourceMetrics #0
Resource attributes:
     -> service.name: Str(metrics)
ScopeMetrics #0
InstrumentationScope observer 0.1.0
Metric #0
Descriptor:
     -> Name: observer.collection.duration
     -> DataType: Gauge
NumberDataPoints #0
Timestamp: 5
Value: 0.25
ResourceLog #0
Resource attributes:
     -> service.name: Str(second)
ScopeLogs #0
InstrumentationScope observer 0.1.0
LogRecord #0
Timestamp: 3
SeverityText: ERROR
";

    #[test]
    fn logs_and_metrics_are_told_apart() {
        let logs = parse_logs(LOG);
        assert_eq!(logs.len(), 2, "{logs:?}");
        assert_eq!(logs[0].resource_attr("n"), Some("Int(7)"));
        assert_eq!(logs[0].scope, "observer 0.1.0");
        assert_eq!(
            logs[0].records,
            [
                LoggedRecord {
                    time: 1_700_000_000_000_000_000,
                    observed_time: 1_700_000_000_000_000_001,
                    severity_text: "WARN".into(),
                    severity_number: "SEVERITY_NUMBER_WARN(13)".into(),
                    event_name: Some("observer.rule.decision".into()),
                    body: "Str(line one\nline two: x)".into(),
                    attributes: vec![
                        ("rule".into(), "Str(r1)".into()),
                        ("value".into(), "Int(42)".into())
                    ],
                },
                LoggedRecord {
                    time: 1_700_000_000_000_000_002,
                    observed_time: 0,
                    severity_text: "INFO".into(),
                    severity_number: "SEVERITY_NUMBER_INFO(9)".into(),
                    event_name: None,
                    body: "Str()".into(),
                    attributes: Vec::new(),
                }
            ]
        );
        // The last record is still being written: not returned yet.
        assert_eq!(logs[1].resource_attr("service.name"), Some("Str(second)"));
        assert!(logs[1].records.is_empty());

        let metrics = parse(LOG);
        assert_eq!(metrics.len(), 1, "{metrics:?}");
        assert_eq!(
            metrics[0].resource,
            [("service.name".into(), "Str(metrics)".into())]
        );
        let p = &metrics[0]
            .metric("observer.collection.duration")
            .unwrap()
            .points[0];
        assert_eq!((p.time, p.value.as_deref()), (5, Some("0.25")));
    }
}
