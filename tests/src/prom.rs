//! A real Prometheus server for the tests: Debian's `prometheus` (or `$PROMETHEUS`), started on
//! loopback with its own configuration and storage in a temporary directory, scraping one target
//! every second. Dropping it kills that process (by its pid) and removes the directory. The
//! end-to-end tests use it, and so do the observer crate's own endpoint tests
//! (`observer/tests/prometheus.rs`, a dev-dependency). Like [`crate::rotel`], it blocks.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::rotel::TempDir;

/// Where Debian's `prometheus` package puts the server.
const DEBIAN_BINARY: &str = "/usr/bin/prometheus";

/// What to install when the server is missing.
pub const INSTALL: &str = "apt-get install -y --no-install-recommends prometheus";

/// The Prometheus server: `$PROMETHEUS`, else Debian's, else the first `prometheus` on `PATH`.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PROMETHEUS") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"));
    std::iter::once(PathBuf::from(DEBIAN_BINARY))
        .chain(on_path)
        .find(|p| p.is_file())
}

/// A child process killed (by its pid, and only it) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Prometheus {
    // Fields drop in order: the server is killed before its directory is removed.
    _server: Killed,
    addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts a server scraping `target`'s `/metrics` every second and waits until it is ready.
    /// `native_histograms` turns on the feature flag, with which Prometheus 2.x asks for the
    /// protobuf format.
    pub fn start(binary: &Path, target: SocketAddr, native_histograms: bool) -> Self {
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: observer\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .expect("write the Prometheus config");
        let log = dir.0.join("prometheus.log");
        // A free port can be taken between our probe and Prometheus' bind: try a few.
        for _ in 0..3 {
            let addr = free_loopback_port();
            let out = fs::File::create(&log).expect("create the Prometheus log");
            let err = out.try_clone().expect("clone the log file handle");
            let mut cmd = Command::new(binary);
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.0.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            if native_histograms {
                cmd.arg("--enable-feature=native-histograms");
            }
            let mut server = Killed(
                cmd.spawn()
                    .unwrap_or_else(|e| panic!("cannot run {binary:?}: {e}")),
            );
            match wait_ready(&mut server.0, addr, Duration::from_secs(15)) {
                Ok(()) => {
                    return Self {
                        _server: server,
                        addr,
                        log,
                        _dir: dir,
                    };
                }
                Err(why) => {
                    let tail = log_tail(&log);
                    if !tail.contains("address already in use") {
                        panic!("{why}:\n{tail}");
                    }
                }
            }
        }
        panic!("Prometheus found no free loopback port in 3 attempts");
    }

    /// The `data.result` of an instant query.
    pub fn query(&self, promql: &str) -> Value {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        self.api(&path, &format!("query {promql}"))["result"].clone()
    }

    /// `data` of `/api/v1/metadata`: for each metric family scraped, its type, help and unit.
    pub fn metadata(&self) -> Value {
        self.api("/api/v1/metadata", "metadata")
    }

    /// The `data` of a successful answer from the HTTP API at `path`; `what` names the request
    /// in failure messages.
    fn api(&self, path: &str, what: &str) -> Value {
        let (status, _, body) = http_get(self.addr, path, None)
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", self.log_tail()));
        let mut v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{what}: HTTP {status}, not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        assert_eq!(v["status"], "success", "{what}: {v}");
        v["data"].take()
    }

    /// The value of an instant query that returns one sample, `None` while it returns none.
    pub fn query_value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql);
        let series = result.as_array()?;
        assert!(
            series.len() <= 1,
            "{promql} returned {} series, expected one: {result}",
            series.len()
        );
        let v = series.first()?["value"][1]
            .as_str()
            .unwrap_or_else(|| panic!("{promql}: no value in {result}"));
        Some(
            v.parse()
                .unwrap_or_else(|e| panic!("{promql}: value {v:?} is not a number: {e}")),
        )
    }

    /// Polls `promql` until it returns at least one series.
    pub fn wait_for(&self, promql: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let result = self.query(promql);
            if result.as_array().is_some_and(|r| !r.is_empty()) {
                return result;
            }
            if start.elapsed() > timeout {
                let targets = http_get(self.addr, "/api/v1/targets", None)
                    .map(|(_, _, b)| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_else(|e| e);
                panic!(
                    "{promql} returned nothing for {timeout:?}.\ntargets: {targets}\nlog:\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

fn wait_ready(server: &mut Child, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = server.try_wait() {
            return Err(format!("Prometheus exited ({status}) before it was ready"));
        }
        if matches!(http_get(addr, "/-/ready", None), Ok((200, _, _))) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(format!("Prometheus not ready after {timeout:?}"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines of the server's log, for failure messages.
fn log_tail(log: &Path) -> String {
    let log = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A port nobody listens on right now.
fn free_loopback_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
}

/// `GET path` over HTTP/1.0 (so the reply is neither chunked nor kept alive): status, headers
/// and body.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> Result<(u16, String, Vec<u8>), String> {
    let fail = |e: std::io::Error| format!("GET http://{addr}{path}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(fail)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(fail)?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n"
    )
    .map_err(fail)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).map_err(fail)?;
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("GET http://{addr}{path}: no end of headers"))?;
    let head = String::from_utf8_lossy(&reply[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET http://{addr}{path}: bad status line in {head:?}"))?;
    Ok((status, head, reply[split + 4..].to_vec()))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
