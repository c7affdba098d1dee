//! The agent's configuration (`observer run`): a TOML file, the standard OpenTelemetry
//! environment variables, and command-line flags, resolved into one validated [`Config`].
//!
//! # Precedence
//!
//! Highest first: **command-line flags > environment (`OTEL_*`) > config file > defaults.**
//! Each setting is taken from the highest source that sets it, with three refinements:
//!
//! - The OTLP endpoint is decided as a whole by the highest source that sets *any* endpoint
//!   (`otlp.endpoint`/`otlp.metrics_endpoint`, `OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT`,
//!   `--otlp-endpoint`); within that source the metrics-specific URL wins over the base URL.
//!   Otherwise a file's `metrics_endpoint` would silently beat an `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   or a flag, against the precedence above. The endpoint of log records (the audit records
//!   of tuning decisions) is decided the same way, on its own, from the base URL and the
//!   logs-specific one (`otlp.logs_endpoint`, `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`): a
//!   metrics-specific URL never applies to logs, nor a logs-specific one to metrics.
//! - The client certificate and its key are taken as a pair from the highest source that sets
//!   either: a certificate from one source and a key from another would not match.
//! - `headers` and `resource_attributes` are merged key by key; a key set in a higher source
//!   replaces the same key from a lower one.
//! - Metrics and log records are configured each on their own in the environment
//!   (`OTEL_EXPORTER_OTLP_METRICS_*`, `OTEL_EXPORTER_OTLP_LOGS_*`, each over the general
//!   `OTEL_EXPORTER_OTLP_*`); the file's keys apply to both.
//! - `service.name` is `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`,
//!   else the file's `service_name`, else `service.name` in the file's `resource_attributes`,
//!   else `observer` (the OpenTelemetry rule that the dedicated variable beats the attribute list,
//!   applied within each source).
//!
//! As the OpenTelemetry specification requires, an environment variable set to the empty string
//! counts as unset; so does an empty string for a URL in the file.
//!
//! # Errors
//!
//! Nothing falls back to defaults when something is wrong: a file that cannot be read or parsed,
//! an unknown key, a value of the wrong type or out of range, or a malformed environment variable
//! is a [`ConfigError`] that names where the value came from (`file:line:column: key`, the
//! variable, or the flag), what was found, and what is expected.
//!
//! The example `observer.toml` at the root of the repository documents every key.

use std::{
    collections::BTreeMap,
    fmt, io,
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use serde::{Deserialize, de};
use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use crate::{
    kubernetes::{self, SERVICE_ACCOUNT_DIR},
    rules::spec::{self, Tuning},
    scope::ScopeSpec,
    signals::Signal,
};

mod resolved;

pub use resolved::Checked;

/// Shortest `agent.interval`: below this, reading every map costs more than it is worth.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Most series per breakdown (`agent.top`): bounds the agent's memory and the exported
/// cardinality.
pub const MAX_TOP: usize = 1000;
/// Most batches held for an unreachable collector (`otlp.queue`): bounds memory.
pub const MAX_QUEUE: usize = 10_000;
/// Where the agent serves `observer top` by default (`agent.socket`).
pub const DEFAULT_SOCKET: &str = "/run/observer/observer.sock";
/// The kernel's limit on a Unix socket path (`sun_path`, 108 bytes with its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// gRPC endpoint when none is configured (OpenTelemetry default).
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
/// OTLP/HTTP metrics URL when no endpoint is configured (OpenTelemetry default).
pub const DEFAULT_HTTP_METRICS_ENDPOINT: &str = "http://localhost:4318/v1/metrics";
/// OTLP/HTTP logs URL when no endpoint is configured (OpenTelemetry default).
pub const DEFAULT_HTTP_LOGS_ENDPOINT: &str = "http://localhost:4318/v1/logs";

/// The resolved, validated configuration of `observer run`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub agent: AgentConfig,
    pub otlp: OtlpConfig,
    pub prometheus: PrometheusConfig,
    /// `[kubernetes]`: pod names for the pod UIDs of cgroup paths; `None` (the default): off.
    pub kubernetes: Option<kubernetes::Settings>,
}

/// `[agent]`: what is measured and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// How often the kernel maps are read and a snapshot is exported (default 10 s; at least
    /// [`MIN_INTERVAL`]).
    pub interval: Duration,
    /// Signals to load, deduplicated, in [`Signal::ALL`] order (default: all).
    pub signals: Vec<Signal>,
    /// Sidecar mode: every signal restricted to this cgroup subtree (default `None`: the whole
    /// host). Resolved when the agent starts (`crate::scope`).
    pub scope: Option<ScopeSpec>,
    /// A signal that cannot load is fatal (default false: it is reported and the others run).
    pub strict: bool,
    /// Series per breakdown, the top N by activity, plus one "other" series (default 10;
    /// 1..=[`MAX_TOP`]).
    pub top: usize,
    /// The Unix socket `observer top` reads from (default [`DEFAULT_SOCKET`]; `None` when set
    /// to `""`: no socket).
    pub socket: Option<PathBuf>,
    /// The overhead budget: the most the kernel programs may cost, in percent of all CPUs'
    /// time, beyond which the run-queue and futex signals sample (`crate::agent::budget`). `None` (the
    /// file's 0, the default): no budget, every wait timed.
    pub max_overhead_percent: Option<Percent>,
}

/// A share of all CPUs' time in percent, above 0 and at most 100 (see [`check_overhead`]).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Percent(f64);

// Finite by construction, so equality is reflexive.
impl Eq for Percent {}

impl Percent {
    pub const fn get(self) -> f64 {
        self.0
    }
}

/// `agent.max_overhead_percent`: 0 is no budget.
fn check_overhead(v: f64) -> Result<Option<Percent>, String> {
    if v == 0.0 {
        Ok(None)
    } else if v.is_finite() && v > 0.0 && v <= 100.0 {
        Ok(Some(Percent(v)))
    } else {
        Err(format!(
            "{v} is out of range; use a percentage of all CPUs' time above 0 and at most 100 \
             (for example 0.5), or 0 for no budget"
        ))
    }
}

/// `[otlp]`: export over OTLP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    /// Export over OTLP. Default: true when an endpoint is set anywhere (file, environment or
    /// `--otlp-endpoint`); an explicit `enabled` in the file wins over an endpoint from the
    /// environment, and `--otlp-endpoint` turns it on whatever the file says.
    pub enabled: bool,
    /// Where and how metrics are sent (`OTEL_EXPORTER_OTLP_METRICS_*` over
    /// `OTEL_EXPORTER_OTLP_*`).
    pub metrics: Destination,
    /// Where and how log records (the audit records of tuning decisions) are sent
    /// (`OTEL_EXPORTER_OTLP_LOGS_*` over `OTEL_EXPORTER_OTLP_*`).
    pub logs: Destination,
    pub temporality: Temporality,
    /// Batches held while the collector is unreachable; beyond this the oldest is dropped and
    /// counted (default 64; 1..=[`MAX_QUEUE`]).
    pub queue: usize,
    /// The `service.name` resource attribute (default `observer`).
    pub service_name: String,
    /// Extra resource attributes. Never holds `service.name`: that is [`Self::service_name`].
    pub resource_attributes: BTreeMap<String, String>,
    /// Settings that are set but change nothing (a `TRACES_` variable, `insecure` next to a URL
    /// that names its scheme, a CA for an `http://` endpoint): the agent says so in its log at
    /// start, so that nothing is ignored silently.
    pub notes: Vec<String>,
}

/// Where and how one kind of data (metrics or log records) is exported: each setting from the
/// kind's own variable (`OTEL_EXPORTER_OTLP_METRICS_TIMEOUT`) if set, else the general one
/// (`OTEL_EXPORTER_OTLP_TIMEOUT`), as the OpenTelemetry specification says; the file's keys
/// apply to both kinds.
#[derive(Clone, PartialEq, Eq)]
pub struct Destination {
    /// The URL, resolved for [`Self::protocol`] by [`resolve_endpoint`] or
    /// [`resolve_logs_endpoint`]; always `http://` or `https://` (a gRPC endpoint given without
    /// a scheme gets `https://`, or `http://` with `insecure`).
    pub endpoint: String,
    pub protocol: Protocol,
    /// Sent with every export request (gRPC metadata or HTTP headers).
    pub headers: BTreeMap<String, String>,
    /// Deadline of one export request (default 10 s).
    pub timeout: Duration,
    /// Default none.
    pub compression: Compression,
    /// Certificates for an `https://` endpoint.
    pub tls: TlsFiles,
}

/// Header values are left out: they are often credentials, and settings end up in logs.
impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Destination")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("compression", &self.compression)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The PEM files of a TLS connection to the collector. They are read when a connection is made
/// and again before each export, so a renewed certificate is used without a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA bundle that verifies the collector's certificate (`OTEL_EXPORTER_OTLP_CERTIFICATE`,
    /// `otlp.certificate`). `None`: the system's bundle.
    pub certificate: Option<PathBuf>,
    /// The certificate (chain) and key this agent presents, when the collector asks for one
    /// (mutual TLS).
    pub client: Option<ClientFiles>,
}

/// A client certificate and its private key: set together or not at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFiles {
    /// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, `otlp.client_certificate`.
    pub certificate: PathBuf,
    /// `OTEL_EXPORTER_OTLP_CLIENT_KEY`, `otlp.client_key`.
    pub key: PathBuf,
}

/// `[prometheus]`: the scrape endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrometheusConfig {
    /// Serve `/metrics` (default true; `--prometheus-listen` turns it on).
    pub enabled: bool,
    /// Default 127.0.0.1:9464: loopback, so exposing the endpoint beyond the host is always an
    /// explicit choice.
    pub listen: SocketAddr,
}

/// OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`). `http/json` is not supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            "http/json" => Err(format!("{s:?} is not supported; use grpc or http/protobuf")),
            _ => Err(format!(
                "{s:?} is not a protocol; use grpc or http/protobuf"
            )),
        }
    }
}

/// Aggregation temporality of exported sums and histograms
/// (`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`, default cumulative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Temporality {
    Cumulative,
    Delta,
}

impl Temporality {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Cumulative => "cumulative",
            Self::Delta => "delta",
        }
    }
}

impl fmt::Display for Temporality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Temporality {
    type Err = String;

    /// Case-insensitive, as the specification says for the environment variable.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cumulative" => Ok(Self::Cumulative),
            "delta" => Ok(Self::Delta),
            // The spec's third value mixes temporalities by instrument kind; every metric here is
            // read from a cumulative kernel counter, so it would only be a confusing alias.
            "lowmemory" => Err(format!("{s:?} is not supported; use cumulative or delta")),
            _ => Err(format!(
                "{s:?} is not a temporality; use cumulative or delta"
            )),
        }
    }
}

/// Compression of export requests (`OTEL_EXPORTER_OTLP_COMPRESSION`): gzip is the only one the
/// specification names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

impl Compression {
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = String;

    /// Case-insensitive, like the other values of the specification's variables.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "gzip" => Ok(Self::Gzip),
            _ => Err(format!(
                "{s:?} is not a compression observer supports; use gzip or none"
            )),
        }
    }
}

/// What the flags of `observer run` can set; `None` leaves the setting to the environment, the
/// file or the default. Values are validated like the others (errors name the flag).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--interval`.
    pub interval: Option<Duration>,
    /// `--signals`.
    pub signals: Option<Vec<Signal>>,
    /// `--otlp-endpoint`: a base URL like `otlp.endpoint`; also turns OTLP on.
    pub otlp_endpoint: Option<String>,
    /// `--prometheus-listen`; also turns Prometheus on.
    pub prometheus_listen: Option<SocketAddr>,
    /// `--socket`: like `agent.socket`, an empty path turns the socket off.
    pub socket: Option<PathBuf>,
    /// `--cgroup`: like `agent.scope`, `""` is the whole host (whatever the file says).
    pub scope: Option<String>,
}

/// Why a configuration was refused. Every message says where the value came from, what was
/// found and what is expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{}: config file not found; check the path given to --config (the observer.toml at \
         the root of the observer repository is an example documenting every key)",
        path.display()
    )]
    NotFound { path: PathBuf },
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A problem at a place in the file; `key` is the dotted key path when there is one.
    #[error("{}:{line}:{column}: {}{message}", path.display(), key_prefix(key))]
    File {
        path: PathBuf,
        line: usize,
        column: usize,
        key: Option<String>,
        message: String,
    },
    #[error("{var}: {message}")]
    Env { var: &'static str, message: String },
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
}

fn key_prefix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default()
}

impl Config {
    /// Loads the configuration: the file (optional), then the environment through `env` (a
    /// lookup function, `|k| std::env::var(k).ok()` in the agent, so tests need not touch the
    /// process environment), then `overrides`, with the precedence described in the
    /// [module documentation](self): flags > environment > file > defaults.
    ///
    /// Environment variables read: every `OTEL_EXPORTER_OTLP_*` variable of the OpenTelemetry
    /// specification ([`otlp_variables`]; for metrics the `METRICS_` ones win over the general
    /// ones, for log records the `LOGS_` ones; the `TRACES_` ones only give a note), and
    /// `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`. `docs/otlp.md` says what each does.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        Self::load_with_rules(file, env, overrides).map(|(config, _)| config)
    }

    /// [`Config::load`], and the `[tuning]` section and `[[rules]]` of the file (rules only come
    /// from the file).
    pub fn load_with_rules(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<(Config, Tuning), ConfigError> {
        let file = file.map(FileSource::read).transpose()?;
        Self::from_source(file, env, overrides)
    }

    /// [`Config::load_with_rules`] on the text of a file already read, `path` naming it in
    /// errors: what the fuzz targets (fuzz/) and the fixture tests drive, with no file system.
    pub fn parse_with_rules(
        path: &Path,
        text: String,
        env: impl Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<(Config, Tuning), ConfigError> {
        Self::from_source(Some(FileSource::parse(path, text)?), env, overrides)
    }

    fn from_source(
        file: Option<FileSource>,
        env: impl Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<(Config, Tuning), ConfigError> {
        let tuning = match &file {
            Some(f) => spec::tuning(&f.raw.tuning, &f.raw.rules)
                .map_err(|e| f.error(e.span, Some(e.key), e.message))?,
            None => Tuning::default(),
        };
        let file_layer = match &file {
            Some(f) => f.layer()?,
            None => Layer::default(),
        };
        let merged = flag_layer(overrides)?
            .over(env_layer(&env)?)
            .over(file_layer);
        let mut config = merged.resolve()?;
        if let Some(file) = &file {
            config.kubernetes = file.kubernetes(&env)?;
        }
        // Only the file can turn Prometheus off, so the file is where to point. An agent that
        // only serves `observer top` on its socket is allowed.
        if !config.otlp.enabled
            && !config.prometheus.enabled
            && config.agent.socket.is_none()
            && let Some(file) = &file
            && let Some(enabled) = &file.raw.prometheus.enabled
        {
            return Err(file.error(
                enabled.span(),
                Some("prometheus.enabled".into()),
                "false, and OTLP is not enabled either, so nothing would be exported; set \
                 otlp.endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT), enable [prometheus], or set \
                 agent.socket to serve `observer top` only"
                    .into(),
            ));
        }
        Ok((config, tuning))
    }
}

/// The URL to export to, per the OpenTelemetry specification:
/// - a metrics-specific URL (`metrics_endpoint`, `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`) is used
///   as-is, for either protocol;
/// - a base URL (`endpoint`, `OTEL_EXPORTER_OTLP_ENDPOINT`, `--otlp-endpoint`) is used as-is for
///   gRPC; for OTLP/HTTP, `v1/metrics` is appended as a path segment (`http://c:4318` and
///   `http://c:4318/` both give `http://c:4318/v1/metrics`; `http://c/otlp` gives
///   `http://c/otlp/v1/metrics`);
/// - with neither: `http://localhost:4317` for gRPC, `http://localhost:4318/v1/metrics` for HTTP.
pub fn resolve_endpoint(
    protocol: Protocol,
    base: Option<&str>,
    metrics_endpoint: Option<&str>,
) -> String {
    resolve(
        protocol,
        base,
        metrics_endpoint,
        ("v1/metrics", DEFAULT_HTTP_METRICS_ENDPOINT),
    )
}

/// The URL to export log records to, by the rules of [`resolve_endpoint`] with the
/// logs-specific URL (`logs_endpoint`, `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`) and `v1/logs`:
/// `http://localhost:4318/v1/logs` by default for HTTP.
pub fn resolve_logs_endpoint(
    protocol: Protocol,
    base: Option<&str>,
    logs_endpoint: Option<&str>,
) -> String {
    resolve(
        protocol,
        base,
        logs_endpoint,
        ("v1/logs", DEFAULT_HTTP_LOGS_ENDPOINT),
    )
}

/// `http_path` is what OTLP/HTTP appends to a base URL, and `http_default` the URL without one.
fn resolve(
    protocol: Protocol,
    base: Option<&str>,
    specific: Option<&str>,
    (http_path, http_default): (&str, &str),
) -> String {
    match (specific, base, protocol) {
        (Some(url), _, _) => url.to_owned(),
        (None, Some(base), Protocol::Grpc) => base.to_owned(),
        (None, Some(base), Protocol::HttpProtobuf) => {
            format!("{}/{http_path}", base.strip_suffix('/').unwrap_or(base))
        }
        (None, None, Protocol::Grpc) => DEFAULT_GRPC_ENDPOINT.to_owned(),
        (None, None, Protocol::HttpProtobuf) => http_default.to_owned(),
    }
}

/// A duration: a number of seconds (`10`, `1.5`) or a number with a unit: `500ms`, `10s`, `2m`,
/// `1h`. Zero is allowed here; callers check their own range.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{s:?} is not a duration; use a number of seconds or a number with a unit: \
             500ms, 10s, 2m"
        )
    };
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let nanos_per_unit = match unit {
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "" | "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return Err(bad()),
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    // Counted in whole nanoseconds so that "500ms" is exactly Duration::from_millis(500).
    let nanos = (n * nanos_per_unit).round();
    if nanos >= u64::MAX as f64 {
        return Err(format!("{s:?} is too long"));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// `k1=v1,k2=v2`, the format of `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES`
/// (W3C Baggage without properties): keys and values are trimmed, values are percent-decoded
/// (`%20` is a space, `+` stays a plus), empty list members are skipped.
pub fn parse_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    const HOW: &str = "use key=value pairs separated by commas, e.g. k1=v1,k2=v2";
    s.split(',')
        .map(str::trim)
        .filter(|member| !member.is_empty())
        .map(|member| {
            let (key, value) = member
                .split_once('=')
                .ok_or_else(|| format!("{member:?} has no \"=\"; {HOW}"))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(format!("{member:?} has an empty key; {HOW}"));
            }
            let value =
                percent_decode(value.trim()).map_err(|e| format!("{member:?}: the value {e}"))?;
            Ok((key.to_owned(), value))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    "has a % not followed by two hex digits; write a literal % as %25".to_owned()
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 once percent-decoded".to_owned())
}

/// Checks what an exporter needs from a URL, without a URL parser: an `http` or `https`
/// scheme, a host, and a numeric port if there is one.
fn check_url(s: &str) -> Result<(), String> {
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!(
            "{s:?} is not a URL; use http://{s} (or https:// for TLS)"
        ));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "{s:?} has the scheme {scheme:?}; use http:// or https://"
        ));
    }
    if s.chars().any(char::is_whitespace) {
        return Err(format!("{s:?} contains whitespace"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    check_host_port(s, host_port)
}

/// An OTLP endpoint: a URL ([`check_url`]), or a `host:port` without a scheme, which the
/// specification allows for gRPC (TLS unless `insecure`); whether the protocol is gRPC is known
/// once every source is merged ([`resolve_url`]).
fn check_endpoint(s: &str) -> Result<(), String> {
    let bare = !s.contains("://")
        && !s.contains(['/', '?', '#', '@'])
        && !s.chars().any(char::is_whitespace);
    if bare {
        check_host_port(s, s)
    } else {
        check_url(s)
    }
}

/// The `host[:port]` of `s`.
fn check_host_port(s: &str, host_port: &str) -> Result<(), String> {
    // An IPv6 literal is bracketed and has colons of its own.
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => return Err(format!("{s:?} has an unclosed [ in its host")),
        },
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Err(format!("{s:?} has no host; use e.g. http://collector:4317"));
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("{s:?} has an invalid port {port:?}"));
    }
    Ok(())
}

/// Header names must be HTTP tokens and values visible ASCII: anything else would only fail at
/// the first export, far from the configuration that caused it.
fn check_header(name: &str, value: &str) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!(
            "{name:?} is not a valid header name; use letters, digits and - (e.g. api-key)"
        ));
    }
    if !value
        .chars()
        .all(|c| c == ' ' || c == '\t' || c.is_ascii_graphic())
    {
        return Err(format!(
            "the value of header {name:?} must be printable ASCII"
        ));
    }
    Ok(())
}

fn check_interval(shown: &str, interval: Duration) -> Result<Duration, String> {
    if interval < MIN_INTERVAL {
        return Err(format!(
            "{shown} is too short; use at least {MIN_INTERVAL:?}"
        ));
    }
    Ok(interval)
}

fn check_timeout(shown: &str, timeout: Duration) -> Result<Duration, String> {
    if timeout.is_zero() {
        return Err(format!(
            "{shown} is not a timeout; use more than zero, e.g. 10s"
        ));
    }
    Ok(timeout)
}

/// `""` is no socket; anything else must be an absolute path that fits in a socket address.
fn check_socket(path: &Path) -> Result<Option<PathBuf>, String> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    if !path.is_absolute() {
        return Err(format!(
            "{path:?} is not an absolute path; use e.g. {DEFAULT_SOCKET:?}, or \"\" for no socket"
        ));
    }
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(format!(
            "{path:?} is {len} bytes; a Unix socket path can have at most {MAX_SOCKET_PATH}"
        ));
    }
    Ok(Some(path.to_owned()))
}

fn check_signals(signals: Vec<Signal>) -> Result<Vec<Signal>, String> {
    if signals.is_empty() {
        return Err(format!(
            "the list is empty; name at least one of: {}",
            Signal::ALL.map(Signal::name).join(", ")
        ));
    }
    let mut signals = signals;
    signals.sort_unstable();
    signals.dedup();
    Ok(signals)
}

/// Where a value was set, to name it in an error or a note that is found only once every
/// source is merged.
#[derive(Clone, Debug)]
enum Origin {
    Env(&'static str),
    Flag(&'static str),
    File {
        path: PathBuf,
        line: usize,
        column: usize,
        key: &'static str,
    },
}

impl Origin {
    /// The variable, flag or key.
    fn name(&self) -> &'static str {
        match self {
            Self::Env(name) | Self::Flag(name) | Self::File { key: name, .. } => name,
        }
    }

    fn error(&self, message: String) -> ConfigError {
        match self.clone() {
            Self::Env(var) => ConfigError::Env { var, message },
            Self::Flag(flag) => ConfigError::Flag { flag, message },
            Self::File {
                path,
                line,
                column,
                key,
            } => ConfigError::File {
                path,
                line,
                column,
                key: Some(key.to_owned()),
                message,
            },
        }
    }
}

/// A value and where it was set.
#[derive(Clone, Debug)]
struct Set<T> {
    value: T,
    origin: Origin,
}

/// What is exported over OTLP, each with settings of its own.
#[derive(Clone, Copy)]
enum Data {
    Metrics,
    Logs,
}

impl Data {
    /// For messages.
    const fn name(self) -> &'static str {
        match self {
            Self::Metrics => "metrics",
            Self::Logs => "log records",
        }
    }
}

/// Where the OTLP endpoint of one source points, for metrics or for logs: a base URL or a URL
/// for that kind of data only.
#[derive(Clone)]
enum Endpoint {
    Base(Set<String>),
    Specific(Set<String>),
}

impl Endpoint {
    /// The specific URL, else the base one, of one source.
    fn of(base: Option<&Set<String>>, specific: Option<Set<String>>) -> Option<Self> {
        specific
            .map(Self::Specific)
            .or_else(|| base.cloned().map(Self::Base))
    }

    fn url(&self) -> &Set<String> {
        match self {
            Self::Base(url) | Self::Specific(url) => url,
        }
    }
}

/// The URL `data` goes to, with its scheme. A gRPC endpoint given without one
/// (`collector:4317`) is TLS unless `insecure` is true; `insecure` applies to nothing else, and
/// OTLP/HTTP always needs the scheme (OpenTelemetry specification, "Insecure").
fn resolve_url(
    endpoint: Option<&Endpoint>,
    protocol: Protocol,
    data: Data,
    insecure: Option<&Set<bool>>,
    notes: &mut Vec<String>,
) -> Result<String, ConfigError> {
    let insecure_applies = match endpoint.map(Endpoint::url) {
        Some(url) => protocol == Protocol::Grpc && !url.value.contains("://"),
        None => false,
    };
    let url = |url: &str| match endpoint {
        Some(Endpoint::Specific(_)) => (None, Some(url.to_owned())),
        _ => (Some(url.to_owned()), None),
    };
    let (base, specific) = match endpoint.map(Endpoint::url) {
        None => (None, None),
        Some(set) if set.value.contains("://") => url(&set.value),
        Some(set) => match protocol {
            Protocol::Grpc => {
                let scheme = if insecure.is_some_and(|i| i.value) {
                    "http"
                } else {
                    "https"
                };
                url(&format!("{scheme}://{}", set.value))
            }
            Protocol::HttpProtobuf => {
                let bare = &set.value;
                return Err(set.origin.error(format!(
                    "{bare:?} has no scheme, which only a gRPC endpoint may omit; OTLP/HTTP needs \
                     a URL: use http://{bare} or https://{bare}"
                )));
            }
        },
    };
    let resolved = match data {
        Data::Metrics => resolve_endpoint(protocol, base.as_deref(), specific.as_deref()),
        Data::Logs => resolve_logs_endpoint(protocol, base.as_deref(), specific.as_deref()),
    };
    if let Some(insecure) = insecure
        && insecure.value
        && !insecure_applies
    {
        note(
            notes,
            format!(
                "{} is true but has no effect on {}: it applies only to a gRPC endpoint given \
                 without http:// or https://, and their endpoint is {resolved} (OpenTelemetry \
                 specification)",
                insecure.origin.name(),
                data.name()
            ),
        );
    }
    Ok(resolved)
}

/// Adds `text` to `notes` unless it is there already (a general variable applies to metrics
/// and log records alike, and says the same of both).
fn note(notes: &mut Vec<String>, text: String) {
    if !notes.contains(&text) {
        notes.push(text);
    }
}

/// What one source (file, environment or flags) sets for one kind of data, each validated;
/// `None` or an empty map means the source does not set it.
#[derive(Clone, Default)]
struct SignalLayer {
    endpoint: Option<Endpoint>,
    protocol: Option<Protocol>,
    headers: BTreeMap<String, String>,
    timeout: Option<Duration>,
    compression: Option<Compression>,
    certificate: Option<Set<PathBuf>>,
    /// The client certificate and its key, both from the same source (one is never taken from
    /// a source and the other from another: they must match).
    client: Option<(Set<PathBuf>, Set<PathBuf>)>,
    insecure: Option<Set<bool>>,
}

impl SignalLayer {
    /// `self` over `lower`: what `self` sets wins; headers are merged key by key.
    fn over(self, lower: Self) -> Self {
        let mut headers = lower.headers;
        headers.extend(self.headers);
        Self {
            endpoint: self.endpoint.or(lower.endpoint),
            protocol: self.protocol.or(lower.protocol),
            headers,
            timeout: self.timeout.or(lower.timeout),
            compression: self.compression.or(lower.compression),
            certificate: self.certificate.or(lower.certificate),
            client: self.client.or(lower.client),
            insecure: self.insecure.or(lower.insecure),
        }
    }

    /// Fills in the defaults.
    fn resolve(self, data: Data, notes: &mut Vec<String>) -> Result<Destination, ConfigError> {
        let protocol = self.protocol.unwrap_or(Protocol::Grpc);
        let endpoint = resolve_url(
            self.endpoint.as_ref(),
            protocol,
            data,
            self.insecure.as_ref(),
            notes,
        )?;
        if !endpoint.to_ascii_lowercase().starts_with("https://") {
            let files = self.certificate.iter().chain(
                self.client
                    .iter()
                    .flat_map(|(certificate, key)| [certificate, key]),
            );
            for file in files {
                note(
                    notes,
                    format!(
                        "{} has no effect on {}: their endpoint {endpoint} is not https://, so \
                         no TLS is spoken; use an https:// endpoint to use it",
                        file.origin.name(),
                        data.name()
                    ),
                );
            }
        }
        Ok(Destination {
            endpoint,
            protocol,
            headers: self.headers,
            timeout: self.timeout.unwrap_or(Duration::from_secs(10)),
            compression: self.compression.unwrap_or(Compression::None),
            tls: TlsFiles {
                certificate: self.certificate.map(|c| c.value),
                client: self.client.map(|(certificate, key)| ClientFiles {
                    certificate: certificate.value,
                    key: key.value,
                }),
            },
        })
    }
}

/// The settings one source (file, environment or flags) gives, each validated; `None` or an
/// empty map means the source does not set it.
#[derive(Default)]
struct Layer {
    interval: Option<Duration>,
    signals: Option<Vec<Signal>>,
    /// `Some(None)`: the source says the whole host (`scope = ""`).
    scope: Option<Option<ScopeSpec>>,
    strict: Option<bool>,
    top: Option<usize>,
    /// `Some(None)`: set to `""`, no socket.
    socket: Option<Option<PathBuf>>,
    /// `Some(None)`: the source says no budget.
    max_overhead_percent: Option<Option<Percent>>,
    otlp_enabled: Option<bool>,
    metrics: SignalLayer,
    logs: SignalLayer,
    temporality: Option<Temporality>,
    queue: Option<usize>,
    service_name: Option<String>,
    resource_attributes: BTreeMap<String, String>,
    /// What the source sets that changes nothing ([`OtlpConfig::notes`]).
    notes: Vec<String>,
    prometheus_enabled: Option<bool>,
    listen: Option<SocketAddr>,
}

impl Layer {
    /// `self` over `lower`: what `self` sets wins.
    fn over(self, lower: Layer) -> Layer {
        let mut resource_attributes = lower.resource_attributes;
        resource_attributes.extend(self.resource_attributes);
        let mut notes = lower.notes;
        notes.extend(self.notes);
        Layer {
            interval: self.interval.or(lower.interval),
            signals: self.signals.or(lower.signals),
            scope: self.scope.or(lower.scope),
            strict: self.strict.or(lower.strict),
            top: self.top.or(lower.top),
            socket: self.socket.or(lower.socket),
            max_overhead_percent: self.max_overhead_percent.or(lower.max_overhead_percent),
            otlp_enabled: self.otlp_enabled.or(lower.otlp_enabled),
            metrics: self.metrics.over(lower.metrics),
            logs: self.logs.over(lower.logs),
            temporality: self.temporality.or(lower.temporality),
            queue: self.queue.or(lower.queue),
            service_name: self.service_name.or(lower.service_name),
            resource_attributes,
            notes,
            prometheus_enabled: self.prometheus_enabled.or(lower.prometheus_enabled),
            listen: self.listen.or(lower.listen),
        }
    }

    /// Within one source, `service_name` beats a `service.name` resource attribute; the
    /// attribute never stays in the map, so `service.name` has one home.
    fn take_service_name(&mut self) {
        let attribute = self.resource_attributes.remove("service.name");
        self.service_name = self.service_name.take().or(attribute);
    }

    /// Fills in the defaults. Fails only for what needs every source to be known: an endpoint
    /// without a scheme is an error for OTLP/HTTP, whose protocol may come from another source.
    fn resolve(self) -> Result<Config, ConfigError> {
        let enabled = self
            .otlp_enabled
            .unwrap_or(self.metrics.endpoint.is_some() || self.logs.endpoint.is_some());
        let mut notes = Vec::new();
        for text in self.notes {
            note(&mut notes, text);
        }
        let metrics = self.metrics.resolve(Data::Metrics, &mut notes)?;
        let logs = self.logs.resolve(Data::Logs, &mut notes)?;
        Ok(Config {
            agent: AgentConfig {
                interval: self.interval.unwrap_or(Duration::from_secs(10)),
                signals: self.signals.unwrap_or_else(|| Signal::ALL.to_vec()),
                scope: self.scope.flatten(),
                strict: self.strict.unwrap_or(false),
                top: self.top.unwrap_or(10),
                socket: self
                    .socket
                    .unwrap_or_else(|| Some(PathBuf::from(DEFAULT_SOCKET))),
                max_overhead_percent: self.max_overhead_percent.flatten(),
            },
            otlp: OtlpConfig {
                enabled,
                metrics,
                logs,
                temporality: self.temporality.unwrap_or(Temporality::Cumulative),
                queue: self.queue.unwrap_or(64),
                service_name: self.service_name.unwrap_or_else(|| "observer".to_owned()),
                resource_attributes: self.resource_attributes,
                notes,
            },
            prometheus: PrometheusConfig {
                enabled: self.prometheus_enabled.unwrap_or(true),
                listen: self
                    .listen
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9464))),
            },
            // Only from the file (FileSource::kubernetes).
            kubernetes: None,
        })
    }
}

fn flag_layer(o: &Overrides) -> Result<Layer, ConfigError> {
    let flag = |flag| move |message| ConfigError::Flag { flag, message };
    let mut layer = Layer::default();
    if let Some(interval) = o.interval {
        layer.interval =
            Some(check_interval(&format!("{interval:?}"), interval).map_err(flag("--interval"))?);
    }
    if let Some(signals) = &o.signals {
        layer.signals = Some(check_signals(signals.clone()).map_err(flag("--signals"))?);
    }
    if let Some(url) = &o.otlp_endpoint {
        check_endpoint(url).map_err(flag("--otlp-endpoint"))?;
        let url = Set {
            value: url.clone(),
            origin: Origin::Flag("--otlp-endpoint"),
        };
        layer.metrics.endpoint = Some(Endpoint::Base(url.clone()));
        layer.logs.endpoint = Some(Endpoint::Base(url));
        layer.otlp_enabled = Some(true);
    }
    if let Some(listen) = o.prometheus_listen {
        layer.listen = Some(listen);
        layer.prometheus_enabled = Some(true);
    }
    if let Some(path) = &o.socket {
        layer.socket = Some(check_socket(path).map_err(flag("--socket"))?);
    }
    if let Some(scope) = &o.scope {
        layer.scope = Some(match scope.as_str() {
            "" => None,
            s => Some(s.parse().map_err(flag("--cgroup"))?),
        });
    }
    Ok(layer)
}

/// The per-signal variables of the OpenTelemetry specification ("OTLP Exporter
/// Configuration"), for one kind of data or for all (the general ones).
struct Vars {
    endpoint: &'static str,
    insecure: &'static str,
    certificate: &'static str,
    client_key: &'static str,
    client_certificate: &'static str,
    headers: &'static str,
    compression: &'static str,
    timeout: &'static str,
    protocol: &'static str,
}

impl Vars {
    const fn all(&self) -> [&'static str; 9] {
        [
            self.endpoint,
            self.insecure,
            self.certificate,
            self.client_key,
            self.client_certificate,
            self.headers,
            self.compression,
            self.timeout,
            self.protocol,
        ]
    }
}

/// `OTEL_EXPORTER_OTLP_{NAME}`, and the same for one kind of data `OTEL_EXPORTER_OTLP_{KIND}_{NAME}`.
macro_rules! vars {
    ($($kind:literal)?) => {
        Vars {
            endpoint: concat!("OTEL_EXPORTER_OTLP_", $($kind, "_",)? "ENDPOINT"),
            insecure: concat!("OTEL_EXPORTER_OTLP_", $($kind, "_",)? "INSECURE"),
            certificate: concat!("OTEL_EXPORTER_OTLP_", $($kind, "_",)? "CERTIFICATE"),
            client_key: concat!("OTEL_EXPORTER_OTLP_", $($kind, "_",)? "CLIENT_KEY"),
            client_certificate: concat!(
                "OTEL_EXPORTER_OTLP_", $($kind, "_",)? "CLIENT_CERTIFICATE"
            ),
            headers: concat!("OTEL_EXPORTER_OTLP_", $($kind, "_",)? "HEADERS"),
            compression: concat!("OTEL_EXPORTER_OTLP_", $($kind, "_",)? "COMPRESSION"),
            timeout: concat!("OTEL_EXPORTER_OTLP_", $($kind, "_",)? "TIMEOUT"),
            protocol: concat!("OTEL_EXPORTER_OTLP_", $($kind, "_",)? "PROTOCOL"),
        }
    };
}

const GENERAL_VARS: Vars = vars!();
const METRICS_VARS: Vars = vars!("METRICS");
const LOGS_VARS: Vars = vars!("LOGS");
/// observer exports no traces: these are said to have no effect.
const TRACES_VARS: Vars = vars!("TRACES");
/// The specification's obsolete names for `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_INSECURE`.
const SPAN_INSECURE: &str = "OTEL_EXPORTER_OTLP_SPAN_INSECURE";
const METRIC_INSECURE: &str = "OTEL_EXPORTER_OTLP_METRIC_INSECURE";
const TEMPORALITY_PREFERENCE: &str = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";
const HISTOGRAM_AGGREGATION: &str = "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION";

/// Every `OTEL_EXPORTER_OTLP_*` variable of the OpenTelemetry specification: each is either
/// honoured, refused with a reason, or (the traces ones) said to have no effect.
pub fn otlp_variables() -> Vec<&'static str> {
    let mut all = Vec::new();
    for vars in [&GENERAL_VARS, &METRICS_VARS, &LOGS_VARS, &TRACES_VARS] {
        all.extend(vars.all());
    }
    all.extend([
        SPAN_INSECURE,
        METRIC_INSECURE,
        TEMPORALITY_PREFERENCE,
        HISTOGRAM_AGGREGATION,
    ]);
    all
}

/// A note ([`OtlpConfig::notes`]) for each of `names` (the environment's variables) that
/// starts with `OTEL_EXPORTER_OTLP_` but is no variable of the specification: a misspelt
/// `OTEL_EXPORTER_OTLP_CERTIFICATES` would otherwise change nothing without a word.
pub fn unknown_otlp_variables(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let known = otlp_variables();
    let mut unknown: Vec<String> = names
        .into_iter()
        .filter(|n| n.starts_with("OTEL_EXPORTER_OTLP_") && !known.contains(&n.as_str()))
        .collect();
    unknown.sort_unstable();
    unknown
        .into_iter()
        .map(|name| {
            format!(
                "{name} is set but is no variable of the OpenTelemetry specification's OTLP \
                 exporter, so it has no effect (misspelt?)"
            )
        })
        .collect()
}

/// A Boolean variable of the specification: `true` or `false`, in any case. The specification
/// reads anything else as false with a warning; a typo here would turn TLS on or off unseen, so
/// it is refused.
fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{s:?} is not a Boolean; use true or false")),
    }
}

fn env_layer(env: &impl Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
    // Empty means unset (OpenTelemetry specification, "Configuration: Environment Variables").
    let get = |var: &'static str| env(var).filter(|v| !v.trim().is_empty()).map(|v| (var, v));
    let err = |var| move |message| ConfigError::Env { var, message };

    let mut layer = Layer::default();
    let url = |var| {
        get(var)
            .map(|(var, url)| {
                check_endpoint(&url).map_err(err(var)).map(|()| Set {
                    value: url,
                    origin: Origin::Env(var),
                })
            })
            .transpose()
    };
    let base = url(GENERAL_VARS.endpoint)?;
    for (own, signal) in [
        (&METRICS_VARS, &mut layer.metrics),
        (&LOGS_VARS, &mut layer.logs),
    ] {
        // The variable of this kind of data, if set, replaces the general one.
        let either =
            |name: fn(&Vars) -> &'static str| get(name(own)).or_else(|| get(name(&GENERAL_VARS)));
        signal.endpoint = Endpoint::of(base.as_ref(), url(own.endpoint)?);
        if let Some((var, v)) = either(|v| v.protocol) {
            signal.protocol = Some(v.parse().map_err(err(var))?);
        }
        if let Some((var, v)) = either(|v| v.headers) {
            for (name, value) in parse_pairs(&v).map_err(err(var))? {
                check_header(&name, &value).map_err(err(var))?;
                signal.headers.insert(name, value);
            }
        }
        if let Some((var, v)) = either(|v| v.timeout) {
            // Milliseconds, per the specification: "10s" here is a mistake worth naming.
            let ms: u64 = v.trim().parse().map_err(|_| ConfigError::Env {
                var,
                message: format!(
                    "{v:?} is not a whole number of milliseconds; this variable is in \
                     milliseconds (OpenTelemetry specification), e.g. 10000 for 10 s"
                ),
            })?;
            signal.timeout =
                Some(check_timeout(&format!("{ms}"), Duration::from_millis(ms)).map_err(err(var))?);
        }
        if let Some((var, v)) = either(|v| v.compression) {
            signal.compression = Some(v.parse().map_err(err(var))?);
        }
        if let Some((var, v)) = either(|v| v.insecure) {
            signal.insecure = Some(Set {
                value: parse_bool(&v).map_err(err(var))?,
                origin: Origin::Env(var),
            });
        }
        let path = |(var, v): (&'static str, String)| Set {
            value: PathBuf::from(v),
            origin: Origin::Env(var),
        };
        signal.certificate = either(|v| v.certificate).map(path);
        signal.client = match (
            either(|v| v.client_certificate).map(path),
            either(|v| v.client_key).map(path),
        ) {
            (Some(certificate), Some(key)) => Some((certificate, key)),
            (None, None) => None,
            (Some(certificate), None) => {
                return Err(certificate.origin.error(format!(
                    "a client certificate needs its private key: set {} (or {}) to the key's \
                     PEM file too",
                    GENERAL_VARS.client_key, own.client_key
                )));
            }
            (None, Some(key)) => {
                return Err(key.origin.error(format!(
                    "a client key needs its certificate: set {} (or {}) to the certificate's \
                     PEM file too",
                    GENERAL_VARS.client_certificate, own.client_certificate
                )));
            }
        };
    }
    if get(METRIC_INSECURE).is_some() {
        return Err(err(METRIC_INSECURE)(format!(
            "is the obsolete name of {} (OpenTelemetry specification); use that instead",
            METRICS_VARS.insecure
        )));
    }
    for var in TRACES_VARS.all().into_iter().chain([SPAN_INSECURE]) {
        if get(var).is_some() {
            layer.notes.push(format!(
                "{var} is set but has no effect: observer exports metrics and log records, no \
                 traces"
            ));
        }
    }
    if let Some((var, v)) = get(HISTOGRAM_AGGREGATION) {
        match v.trim().to_ascii_lowercase().as_str() {
            // What observer exports anyway: the kernel's buckets are base-2 exponential ones.
            "base2_exponential_bucket_histogram" => {}
            "explicit_bucket_histogram" => {
                return Err(err(var)(format!(
                    "{v:?} is not supported: observer exports the kernel's own buckets, which \
                     are base-2 exponential ones (scale 2); unset it or set \
                     base2_exponential_bucket_histogram"
                )));
            }
            _ => {
                return Err(err(var)(format!(
                    "{v:?} is not a histogram aggregation; use \
                     base2_exponential_bucket_histogram"
                )));
            }
        }
    }
    if let Some((var, v)) = get(TEMPORALITY_PREFERENCE) {
        layer.temporality = Some(v.parse().map_err(err(var))?);
    }
    if let Some((var, v)) = get("OTEL_RESOURCE_ATTRIBUTES") {
        layer
            .resource_attributes
            .extend(parse_pairs(&v).map_err(err(var))?);
    }
    layer.take_service_name();
    if let Some((_, name)) = get("OTEL_SERVICE_NAME") {
        layer.service_name = Some(name.trim().to_owned());
    }
    Ok(layer)
}

/// The file as written, before validation. Values that need checking are kept with their
/// span, so an error can point at them.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    #[serde(deserialize_with = "section")]
    agent: FileAgent,
    #[serde(deserialize_with = "section")]
    kubernetes: FileKubernetes,
    #[serde(deserialize_with = "section")]
    otlp: FileOtlp,
    #[serde(deserialize_with = "section")]
    prometheus: FilePrometheus,
    #[serde(deserialize_with = "section")]
    tuning: spec::FileTuning,
    rules: Vec<Spanned<spec::FileRule>>,
}

/// A section must be a table. serde's derived structs also accept a list of their fields in
/// order, so without this `agent = ["5s"]` (or `[[agent]]`) would quietly set `agent.interval`.
fn section<'de, D: de::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    struct Visitor<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> de::Visitor<'de> for Visitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table (a [section])")
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(Visitor(std::marker::PhantomData))
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileAgent {
    interval: Option<Spanned<FileDuration>>,
    signals: Option<Spanned<Vec<Spanned<String>>>>,
    scope: Option<Spanned<String>>,
    strict: Option<bool>,
    top: Option<Spanned<i64>>,
    socket: Option<Spanned<String>>,
    max_overhead_percent: Option<Spanned<f64>>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileOtlp {
    enabled: Option<bool>,
    endpoint: Option<Spanned<String>>,
    metrics_endpoint: Option<Spanned<String>>,
    logs_endpoint: Option<Spanned<String>>,
    protocol: Option<Spanned<String>>,
    headers: BTreeMap<Spanned<String>, Spanned<String>>,
    timeout: Option<Spanned<FileDuration>>,
    temporality: Option<Spanned<String>>,
    queue: Option<Spanned<i64>>,
    service_name: Option<Spanned<String>>,
    resource_attributes: BTreeMap<String, String>,
    compression: Option<Spanned<String>>,
    certificate: Option<Spanned<String>>,
    client_certificate: Option<Spanned<String>>,
    client_key: Option<Spanned<String>>,
    insecure: Option<Spanned<bool>>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FilePrometheus {
    enabled: Option<Spanned<bool>>,
    listen: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileKubernetes {
    enrich: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    node_name: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    insecure_skip_verify: Option<bool>,
    refresh: Option<Spanned<FileDuration>>,
}

/// Shortest `kubernetes.refresh`: the pod list is a large answer, and new pods are listed
/// sooner anyway (`kubernetes::MIN_GAP`).
pub const MIN_KUBERNETES_REFRESH: Duration = Duration::from_secs(1);

/// A duration as written in the file: a string (`"10s"`) or whole seconds (`10`).
pub(crate) enum FileDuration {
    Text(String),
    Seconds(i64),
}

impl<'de> Deserialize<'de> for FileDuration {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = FileDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration: a number of seconds, or a string such as \"500ms\", \"10s\", \
                     \"2m\"",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FileDuration, E> {
                Ok(FileDuration::Text(s.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<FileDuration, E> {
                Ok(FileDuration::Seconds(n))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl FileDuration {
    /// The duration, and how to show the value in a message.
    pub(crate) fn parse(&self) -> Result<(Duration, String), String> {
        match self {
            Self::Text(s) => Ok((parse_duration(s)?, format!("{s:?}"))),
            Self::Seconds(n) => match u64::try_from(*n) {
                Ok(n) => Ok((Duration::from_secs(n), n.to_string())),
                Err(_) => Err(format!("{n} is negative; use a duration such as 10s")),
            },
        }
    }
}

/// A config file read into memory, and what was parsed from it.
struct FileSource {
    path: PathBuf,
    text: String,
    raw: FileConfig,
}

impl FileSource {
    fn read(path: &Path) -> Result<FileSource, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => ConfigError::NotFound { path: path.into() },
            _ => ConfigError::Read {
                path: path.into(),
                source,
            },
        })?;
        Self::parse(path, text)
    }

    fn parse(path: &Path, text: String) -> Result<FileSource, ConfigError> {
        let mut file = FileSource {
            path: path.into(),
            text,
            raw: FileConfig::default(),
        };
        file.raw = toml::from_str(&file.text).map_err(|e| file.toml_error(&e))?;
        Ok(file)
    }

    /// An error at `span` in the file.
    fn error(&self, span: Range<usize>, key: Option<String>, message: String) -> ConfigError {
        let (line, column) = self.position(&span);
        ConfigError::File {
            path: self.path.clone(),
            line,
            column,
            key,
            message,
        }
    }

    /// The value at `span`, named `key`, for a later error or note.
    fn origin(&self, span: Range<usize>, key: &'static str) -> Origin {
        let (line, column) = self.position(&span);
        Origin::File {
            path: self.path.clone(),
            line,
            column,
            key,
        }
    }

    /// The line and column (from 1) where `span` starts.
    fn position(&self, span: &Range<usize>) -> (usize, usize) {
        let before = &self.text[..self.text.floor_char_boundary(span.start)];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (
            before.matches('\n').count() + 1,
            before[line_start..].chars().count() + 1,
        )
    }

    /// Turns a `toml` error into one that names the key and says what is expected.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let document = match DeTable::parse(&self.text) {
            Ok(document) => document,
            Err(_) => {
                // A syntax error: what the parser could recover may still name the key.
                let (partial, _) = DeTable::parse_recoverable(&self.text);
                let key = path_at(partial.get_ref(), &span).map(|(path, _)| join_path(&path));
                return self.error(span, key, format!("invalid TOML: {}", e.message()));
            }
        };
        let Some((path, is_table)) = path_at(document.get_ref(), &span) else {
            return self.error(span, None, e.message().to_owned());
        };
        match unknown_field(e.message()) {
            // The message names the key itself.
            Some((name, valid)) => {
                let message = unknown_key_message(&path, is_table, name, &valid)
                    .unwrap_or_else(|| e.message().to_owned());
                self.error(span, None, message)
            }
            None => self.error(span, Some(join_path(&path)), humanize(e.message())),
        }
    }

    /// Validates every value the file sets, pointing at the value when it is wrong.
    fn layer(&self) -> Result<Layer, ConfigError> {
        let at = |span: Range<usize>, key: &str, message: String| {
            self.error(span, Some(key.to_owned()), message)
        };
        let (agent, otlp, prometheus) = (&self.raw.agent, &self.raw.otlp, &self.raw.prometheus);
        let mut layer = Layer::default();

        if let Some(v) = &agent.interval {
            let key = "agent.interval";
            let (d, shown) = v.get_ref().parse().map_err(|m| at(v.span(), key, m))?;
            layer.interval = Some(check_interval(&shown, d).map_err(|m| at(v.span(), key, m))?);
        }
        if let Some(list) = &agent.signals {
            let mut signals = Vec::new();
            for s in list.get_ref() {
                signals.push(
                    s.get_ref()
                        .parse()
                        .map_err(|m| at(s.span(), "agent.signals", m))?,
                );
            }
            layer.signals =
                Some(check_signals(signals).map_err(|m| at(list.span(), "agent.signals", m))?);
        }
        if let Some(v) = &agent.scope {
            layer.scope = Some(match v.get_ref().as_str() {
                "" => None,
                s => Some(s.parse().map_err(|m| at(v.span(), "agent.scope", m))?),
            });
        }
        layer.strict = agent.strict;
        if let Some(v) = &agent.top {
            layer.top =
                Some(in_range(*v.get_ref(), 1, MAX_TOP).map_err(|m| at(v.span(), "agent.top", m))?);
        }
        if let Some(v) = &agent.socket {
            layer.socket = Some(
                check_socket(Path::new(v.get_ref()))
                    .map_err(|m| at(v.span(), "agent.socket", m))?,
            );
        }
        if let Some(v) = &agent.max_overhead_percent {
            layer.max_overhead_percent = Some(
                check_overhead(*v.get_ref())
                    .map_err(|m| at(v.span(), "agent.max_overhead_percent", m))?,
            );
        }

        layer.otlp_enabled = otlp.enabled;
        let set = |v: &Spanned<String>, key: &'static str| Set {
            value: v.get_ref().clone(),
            origin: self.origin(v.span(), key),
        };
        let url = |v: &Option<Spanned<String>>,
                   key: &'static str|
         -> Result<Option<Set<String>>, ConfigError> {
            match v {
                Some(v) if !v.get_ref().is_empty() => {
                    check_endpoint(v.get_ref()).map_err(|m| at(v.span(), key, m))?;
                    Ok(Some(set(v, key)))
                }
                _ => Ok(None),
            }
        };
        let base = url(&otlp.endpoint, "otlp.endpoint")?;
        let metrics = url(&otlp.metrics_endpoint, "otlp.metrics_endpoint")?;
        let logs = url(&otlp.logs_endpoint, "otlp.logs_endpoint")?;
        // The rest applies to metrics and log records alike.
        let mut both = SignalLayer::default();
        if let Some(v) = &otlp.protocol {
            both.protocol = Some(
                v.get_ref()
                    .parse()
                    .map_err(|m| at(v.span(), "otlp.protocol", m))?,
            );
        }
        for (name, value) in &otlp.headers {
            let key = format!("otlp.headers.{}", key_segment(name.get_ref()));
            check_header(name.get_ref(), value.get_ref()).map_err(|m| at(name.span(), &key, m))?;
            both.headers
                .insert(name.get_ref().clone(), value.get_ref().clone());
        }
        if let Some(v) = &otlp.timeout {
            let key = "otlp.timeout";
            let (d, shown) = v.get_ref().parse().map_err(|m| at(v.span(), key, m))?;
            both.timeout = Some(check_timeout(&shown, d).map_err(|m| at(v.span(), key, m))?);
        }
        if let Some(v) = &otlp.compression {
            both.compression = Some(
                v.get_ref()
                    .parse()
                    .map_err(|m| at(v.span(), "otlp.compression", m))?,
            );
        }
        if let Some(v) = &otlp.insecure {
            both.insecure = Some(Set {
                value: *v.get_ref(),
                origin: self.origin(v.span(), "otlp.insecure"),
            });
        }
        // "" is unset, like a URL.
        let path = |v: &Option<Spanned<String>>, key: &'static str| {
            v.as_ref().filter(|v| !v.get_ref().is_empty()).map(|v| {
                let Set { value, origin } = set(v, key);
                Set {
                    value: PathBuf::from(value),
                    origin,
                }
            })
        };
        both.certificate = path(&otlp.certificate, "otlp.certificate");
        both.client = match (
            path(&otlp.client_certificate, "otlp.client_certificate"),
            path(&otlp.client_key, "otlp.client_key"),
        ) {
            (Some(certificate), Some(key)) => Some((certificate, key)),
            (None, None) => None,
            (Some(certificate), None) => {
                return Err(certificate.origin.error(
                    "a client certificate needs its private key: set otlp.client_key to the \
                     key's PEM file too"
                        .into(),
                ));
            }
            (None, Some(key)) => {
                return Err(key.origin.error(
                    "a client key needs its certificate: set otlp.client_certificate to the \
                     certificate's PEM file too"
                        .into(),
                ));
            }
        };
        layer.metrics = SignalLayer {
            endpoint: Endpoint::of(base.as_ref(), metrics),
            ..both.clone()
        };
        layer.logs = SignalLayer {
            endpoint: Endpoint::of(base.as_ref(), logs),
            ..both
        };
        if let Some(v) = &otlp.temporality {
            let parsed = v
                .get_ref()
                .parse()
                .map_err(|m| at(v.span(), "otlp.temporality", m))?;
            layer.temporality = Some(parsed);
        }
        if let Some(v) = &otlp.queue {
            layer.queue = Some(
                in_range(*v.get_ref(), 1, MAX_QUEUE).map_err(|m| at(v.span(), "otlp.queue", m))?,
            );
        }
        if let Some(v) = &otlp.service_name {
            if v.get_ref().trim().is_empty() {
                return Err(at(
                    v.span(),
                    "otlp.service_name",
                    "\"\" is not a service name; leave the key out for the default, observer"
                        .into(),
                ));
            }
            layer.service_name = Some(v.get_ref().clone());
        }
        layer.resource_attributes = otlp.resource_attributes.clone();
        layer.take_service_name();

        layer.prometheus_enabled = prometheus.enabled.as_ref().map(|v| *v.get_ref());
        if let Some(v) = &prometheus.listen {
            let addr = v.get_ref().parse().map_err(|_| {
                at(v.span(), "prometheus.listen", format!(
                    "{:?} is not an IP address and port; use e.g. 127.0.0.1:9464, [::1]:9464, or \
                     0.0.0.0:9464 to listen on every interface",
                    v.get_ref()
                ))
            })?;
            layer.listen = Some(addr);
        }
        Ok(layer)
    }
}

impl FileSource {
    /// The `[kubernetes]` section, with the in-cluster defaults taken from `env` (the pod's
    /// environment: `NODE_NAME` from the downward API, `KUBERNETES_SERVICE_HOST`/`_PORT` set by
    /// the kubelet in every container). `None` when enrichment is off.
    fn kubernetes(
        &self,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<kubernetes::Settings>, ConfigError> {
        let k = &self.raw.kubernetes;
        let at = |span: Range<usize>, key: &str, message: String| {
            self.error(span, Some(key.to_owned()), message)
        };
        let Some(enrich) = &k.enrich else {
            return Ok(None);
        };
        let source = match enrich.get_ref().as_str() {
            "off" => return Ok(None),
            "kubelet" => kubernetes::Source::Kubelet,
            "api-server" => kubernetes::Source::ApiServer,
            other => {
                return Err(at(
                    enrich.span(),
                    "kubernetes.enrich",
                    format!(
                        "{other:?} is not a source of pod names; use \"kubelet\" (this node's \
                         kubelet), \"api-server\" or \"off\""
                    ),
                ));
            }
        };
        let env = |var: &str| {
            env(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let set = |v: &Option<Spanned<String>>| {
            v.as_ref()
                .filter(|v| !v.get_ref().is_empty())
                .map(|v| (v.get_ref().clone(), v.span()))
        };
        // The node: its kubelet, or the filter of the API server's list.
        let node = match set(&k.node_name) {
            Some((node, _)) => Some(node),
            None => env("NODE_NAME"),
        };
        let need_node = |what: &str| {
            at(
                enrich.span(),
                "kubernetes.enrich",
                format!(
                    "{:?} needs {what}, and NODE_NAME is not set (nor kubernetes.node_name); \
                     set NODE_NAME from the downward API (env: - name: NODE_NAME, valueFrom: \
                     fieldRef: fieldPath: spec.nodeName), as deploy/kubernetes/base/daemonset.yaml \
                     does",
                    source.name()
                ),
            )
        };
        let server = match (set(&k.url), source) {
            (Some((url, span)), _) => {
                check_url(&url)
                    .and_then(|()| {
                        if url.to_ascii_lowercase().starts_with("https://") {
                            Ok(())
                        } else {
                            Err(format!(
                                "{url:?} is not https://; the service account token is only \
                                 sent over TLS"
                            ))
                        }
                    })
                    .map_err(|m| at(span, "kubernetes.url", m))?;
                url.trim_end_matches('/').to_owned()
            }
            (None, kubernetes::Source::Kubelet) => {
                let node = node
                    .clone()
                    .ok_or_else(|| need_node("the node's name to reach its kubelet"))?;
                format!("https://{node}:10250")
            }
            (None, kubernetes::Source::ApiServer) => {
                let (Some(host), Some(port)) = (
                    env("KUBERNETES_SERVICE_HOST"),
                    env("KUBERNETES_SERVICE_PORT"),
                ) else {
                    return Err(at(
                        enrich.span(),
                        "kubernetes.enrich",
                        "\"api-server\" needs the API server's address, and \
                         KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set (the \
                         kubelet sets them in every container); outside a pod, set \
                         kubernetes.url (e.g. https://api.example:6443)"
                            .into(),
                    ));
                };
                // An IPv6 service address is bracketed in a URL.
                if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        };
        let url = match source {
            kubernetes::Source::Kubelet => format!("{server}{}", source.list_path()),
            kubernetes::Source::ApiServer => {
                let node =
                    node.ok_or_else(|| need_node("the node's name to list only its pods"))?;
                if !node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                {
                    return Err(at(
                        k.node_name.as_ref().map_or(enrich.span(), Spanned::span),
                        "kubernetes.node_name",
                        format!(
                            "{node:?} is not a Kubernetes node name (letters, digits, - and .)"
                        ),
                    ));
                }
                format!("{server}{}{node}", source.list_path())
            }
        };
        let path = |v: &Option<Spanned<String>>, file: &str| match v {
            Some(v) if v.get_ref().is_empty() => None,
            Some(v) => Some(PathBuf::from(v.get_ref())),
            None => Some(Path::new(SERVICE_ACCOUNT_DIR).join(file)),
        };
        let insecure_skip_verify = k.insecure_skip_verify.unwrap_or(false);
        let ca_file = path(&k.ca_file, "ca.crt");
        if ca_file.is_none() && !insecure_skip_verify {
            let span = k.ca_file.as_ref().map_or(enrich.span(), Spanned::span);
            return Err(at(
                span,
                "kubernetes.ca_file",
                "\"\" leaves no CA to verify the server with; name the CA bundle (PEM), or set \
                 insecure_skip_verify = true to accept any certificate"
                    .into(),
            ));
        }
        let refresh = match &k.refresh {
            Some(v) => {
                let key = "kubernetes.refresh";
                let (d, shown) = v.get_ref().parse().map_err(|m| at(v.span(), key, m))?;
                if d < MIN_KUBERNETES_REFRESH {
                    return Err(at(
                        v.span(),
                        key,
                        format!("{shown} is too short; use at least {MIN_KUBERNETES_REFRESH:?}"),
                    ));
                }
                d
            }
            None => Duration::from_secs(30),
        };
        Ok(Some(kubernetes::Settings {
            source,
            url,
            token_file: path(&k.token_file, "token"),
            ca_file,
            insecure_skip_verify,
            refresh,
        }))
    }
}

fn in_range(n: i64, min: usize, max: usize) -> Result<usize, String> {
    usize::try_from(n)
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("{n} is out of range; use {min} to {max}"))
}

/// The key path of the entry that `span` (of a `toml` error) points at, and whether that entry
/// is a table: its key, the value itself, or else the innermost value around it. Errors from
/// `toml` carry a span but not the key, so the key is found again in the parsed document.
fn path_at(table: &DeTable<'_>, span: &Range<usize>) -> Option<(Vec<String>, bool)> {
    table.iter().find_map(|(key, value)| {
        let here = |inner: Vec<String>| {
            let mut path = vec![key.get_ref().to_string()];
            path.extend(inner);
            path
        };
        if key.span().contains(&span.start) || value.span() == *span {
            return Some((here(Vec::new()), value.get_ref().is_table()));
        }
        if let Some((inner, is_table)) = path_in_value(value.get_ref(), span) {
            return Some((here(inner), is_table));
        }
        value
            .span()
            .contains(&span.start)
            .then(|| (here(Vec::new()), value.get_ref().is_table()))
    })
}

fn path_in_value(value: &DeValue<'_>, span: &Range<usize>) -> Option<(Vec<String>, bool)> {
    match value {
        DeValue::Table(table) => path_at(table, span),
        DeValue::Array(array) => array.iter().enumerate().find_map(|(i, item)| {
            let mut path = vec![format!("[{i}]")];
            if item.span() != *span
                && let Some((inner, is_table)) = path_in_value(item.get_ref(), span)
            {
                path.extend(inner);
                return Some((path, is_table));
            }
            item.span()
                .contains(&span.start)
                .then(|| (path, item.get_ref().is_table()))
        }),
        _ => None,
    }
}

/// `["otlp", "resource_attributes", "a.b"]` -> `otlp.resource_attributes."a.b"`;
/// `["agent", "signals", "[1]"]` -> `agent.signals[1]`.
fn join_path(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if !out.is_empty() && !segment.starts_with('[') {
            out.push('.');
        }
        if segment.starts_with('[') {
            out.push_str(segment);
        } else {
            out.push_str(&key_segment(segment));
        }
    }
    out
}

/// A key as it would be written in TOML: bare if it can be, quoted otherwise.
fn key_segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" (deny_unknown_fields): the field, and
/// the valid ones.
fn unknown_field(message: &str) -> Option<(&str, Vec<&str>)> {
    let (head, expected) = message.split_once(", expected ")?;
    let name = head.strip_prefix("unknown field `")?.strip_suffix('`')?;
    let valid = expected.split('`').skip(1).step_by(2).collect();
    Some((name, valid))
}

/// "unknown key agent.intreval (did you mean interval?); valid keys in [agent]: ...", from the
/// unknown key's path in the document and the valid names serde listed.
fn unknown_key_message(
    path: &[String],
    is_table: bool,
    name: &str,
    valid: &[&str],
) -> Option<String> {
    let key = join_path(path);
    let (_, section) = path.split_last()?;
    if !section.is_empty() {
        let hint = did_you_mean(name, valid)
            .map(|v| format!(" (did you mean {v}?)"))
            .unwrap_or_default();
        let section = join_path(section);
        return Some(format!(
            "unknown key {key}{hint}; valid keys in [{section}]: {}",
            valid.join(", ")
        ));
    }
    // At the top level, the valid names are the sections.
    let hint = did_you_mean(name, valid)
        .map(|v| format!(" (did you mean [{v}]?)"))
        .unwrap_or_default();
    let sections = valid
        .iter()
        .map(|v| format!("[{v}]"))
        .collect::<Vec<_>>()
        .join(", ");
    if is_table {
        return Some(format!(
            "unknown section [{key}]{hint}; valid sections: {sections}"
        ));
    }
    // A key written above its section header: say which section it belongs to.
    Some(
        match valid
            .iter()
            .find(|s| section_keys(s).iter().any(|k| k == name))
        {
            Some(home) => format!(
                "unknown key {key} at the top level; it belongs in [{home}], so write it after \
                 the [{home}] line"
            ),
            None => format!(
                "unknown key {key} at the top level{hint}; keys go in a section: {sections}"
            ),
        },
    )
}

/// The keys valid in `[section]`, as serde lists them for an unknown one: the structs are the
/// single list of keys.
fn section_keys(section: &str) -> Vec<String> {
    let probe = format!("[{section}]\n\"\" = 0");
    let Err(e) = toml::from_str::<FileConfig>(&probe) else {
        return Vec::new();
    };
    unknown_field(e.message()).map_or_else(Vec::new, |(_, valid)| {
        valid.into_iter().map(String::from).collect()
    })
}

/// The valid name closest to a misspelt one, if it is close (at most 2 edits).
fn did_you_mean<'a>(name: &str, valid: &[&'a str]) -> Option<&'a str> {
    let distance = |a: &str, b: &str| {
        // Levenshtein distance, one row at a time.
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut diagonal = row[0];
            row[0] = i + 1;
            for (j, &cb) in b.iter().enumerate() {
                let next = (diagonal + usize::from(ca != cb))
                    .min(row[j] + 1)
                    .min(row[j + 1] + 1);
                diagonal = row[j + 1];
                row[j + 1] = next;
            }
        }
        row[b.len()]
    };
    valid
        .iter()
        .map(|v| (distance(name, v), *v))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, v)| v)
}

/// serde's "invalid type: string \"x\", expected i64" in the words of a config file:
/// "expected an integer, found string \"x\"".
fn humanize(message: &str) -> String {
    let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|m| m.rsplit_once(", expected "))
    else {
        return message.to_owned();
    };
    let expected = match expected {
        "i64" => "an integer",
        "f64" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "a list, e.g. [\"a\", \"b\"]",
        "a map" => "a table, e.g. { key = \"value\" }",
        e => e,
    };
    let found = match found {
        "sequence" => "a list",
        "map" => "a table",
        found => found,
    };
    format!("expected {expected}, found {found}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| {
            vars.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        }
    }

    /// Writes `text` to a temporary file named `name` and loads it. Each call has a directory of
    /// its own, as tests run in parallel.
    fn load_text(
        name: &str,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "observer-config-test-{}-{call}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let result = Config::load(Some(&path), env, overrides);
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    fn err_text(name: &str, text: &str) -> String {
        load_text(name, text, no_env, &Overrides::default())
            .expect_err("this config must be refused")
            .to_string()
    }

    /// The defaults, as observer.toml documents them.
    fn defaults() -> Config {
        Config {
            agent: AgentConfig {
                interval: Duration::from_secs(10),
                signals: Signal::ALL.to_vec(),
                scope: None,
                strict: false,
                top: 10,
                socket: Some(DEFAULT_SOCKET.into()),
                max_overhead_percent: None,
            },
            otlp: OtlpConfig {
                enabled: false,
                metrics: destination("http://localhost:4317"),
                logs: destination("http://localhost:4317"),
                temporality: Temporality::Cumulative,
                queue: 64,
                service_name: "observer".into(),
                resource_attributes: BTreeMap::new(),
                notes: Vec::new(),
            },
            prometheus: PrometheusConfig {
                enabled: true,
                listen: "127.0.0.1:9464".parse().unwrap(),
            },
            kubernetes: None,
        }
    }

    /// The default destination, at `endpoint`.
    fn destination(endpoint: &str) -> Destination {
        Destination {
            endpoint: endpoint.into(),
            protocol: Protocol::Grpc,
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            compression: Compression::None,
            tls: TlsFiles::default(),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_without_file_env_or_flags() {
        let config = Config::load(None, no_env, &Overrides::default()).unwrap();
        assert_eq!(config, defaults());
        // An empty file is the defaults too, not an error.
        assert_eq!(
            load_text("empty.toml", "# nothing\n", no_env, &Overrides::default()).unwrap(),
            defaults()
        );
    }

    #[test]
    fn missing_file_names_the_path_and_the_fix() {
        let path = Path::new("/nonexistent/observer.toml");
        let e = Config::load(Some(path), no_env, &Overrides::default()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("/nonexistent/observer.toml: config file not found"),
            "{text}"
        );
        assert!(text.contains("--config"), "{text}");
    }

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../observer.toml");

    #[test]
    fn example_file_parses_to_what_it_documents() {
        let (config, tuning) =
            Config::load_with_rules(Some(Path::new(EXAMPLE)), no_env, &Overrides::default())
                .unwrap_or_else(|e| panic!("{e}"));
        // The example is the defaults, plus OTLP to a local collector.
        let mut expected = defaults();
        expected.otlp.enabled = true;
        assert_eq!(config, expected);
        let default = Tuning::default();
        assert_eq!(
            (tuning.mode, &tuning.journal, &tuning.state),
            (default.mode, &default.journal, &default.state)
        );
        assert_eq!(tuning.max_changes_per_hour, default.max_changes_per_hour);
        assert!(tuning.rules.is_empty());
    }

    /// Each key's comment in the example says `Default: VALUE`, and the key is set to exactly
    /// that, so the comments cannot drift from the code (checked by the test above).
    #[test]
    fn example_file_values_are_its_documented_defaults() {
        let text = std::fs::read_to_string(EXAMPLE).unwrap();
        let mut comment = String::new();
        let mut keys = 0;
        for line in text.lines() {
            if let Some(c) = line.strip_prefix('#') {
                comment.push_str(c.trim());
                comment.push(' ');
                continue;
            }
            if let Some((key, value)) = line.split_once(" = ") {
                assert!(
                    comment.contains(&format!("Default: {value}")),
                    "observer.toml: the comment above {key} does not say `Default: {value}`"
                );
                keys += 1;
            }
            comment.clear();
        }
        assert_eq!(keys, 36, "keys set in observer.toml");
    }

    #[test]
    fn example_file_documents_every_key() {
        let text = std::fs::read_to_string(EXAMPLE).unwrap();
        let document = DeTable::parse(&text).unwrap();
        let mut sections: Vec<&str> = document
            .get_ref()
            .keys()
            .map(|k| k.get_ref().as_ref())
            .collect();
        let e = toml::from_str::<FileConfig>("no_such_section = 1")
            .err()
            .unwrap();
        // [[rules]] is an array of tables, shown commented out: rules are off by default.
        let mut expected = unknown_field(e.message()).unwrap().1;
        expected.retain(|s| *s != "rules");
        // The file's order is the reader's; the set is what counts.
        sections.sort_unstable();
        expected.sort_unstable();
        assert_eq!(sections, expected);
        for section in sections {
            let keys: Vec<&str> = document.get_ref()[section]
                .get_ref()
                .as_table()
                .unwrap()
                .keys()
                .map(|k| k.get_ref().as_ref())
                .collect();
            let mut keys = keys;
            let mut expected = section_keys(section);
            keys.sort_unstable();
            expected.sort_unstable();
            assert_eq!(keys, expected, "[{section}] in observer.toml");
        }
    }

    #[test]
    fn every_value_from_the_file() {
        let text = r#"
            [agent]
            interval = 2
            signals = ["tcp", "runqueue", "tcp"]
            scope = "/system.slice/nginx.service/"
            strict = true
            top = 3
            max_overhead_percent = 0.25
            [otlp]
            enabled = true
            endpoint = "https://collector.example:4318/otlp/"
            protocol = "http/protobuf"
            headers = { "api-key" = "secret" }
            timeout = "1500ms"
            compression = "gzip"
            certificate = "/etc/observer/ca.pem"
            client_certificate = "/etc/observer/client.pem"
            client_key = "/etc/observer/client.key"
            insecure = false
            temporality = "delta"
            queue = 5
            resource_attributes = { "service.name" = "svc", "deployment.environment" = "prod" }
            [prometheus]
            enabled = false
            listen = "0.0.0.0:9000"
        "#;
        let config = load_text("all.toml", text, no_env, &Overrides::default()).unwrap();
        let https = Destination {
            endpoint: String::new(),
            protocol: Protocol::HttpProtobuf,
            headers: map(&[("api-key", "secret")]),
            timeout: Duration::from_millis(1500),
            compression: Compression::Gzip,
            tls: TlsFiles {
                certificate: Some("/etc/observer/ca.pem".into()),
                client: Some(ClientFiles {
                    certificate: "/etc/observer/client.pem".into(),
                    key: "/etc/observer/client.key".into(),
                }),
            },
        };
        assert_eq!(
            config,
            Config {
                agent: AgentConfig {
                    interval: Duration::from_secs(2),
                    signals: vec![Signal::Runqueue, Signal::Tcp],
                    scope: Some(ScopeSpec::Path("/system.slice/nginx.service".into())),
                    strict: true,
                    top: 3,
                    socket: Some(DEFAULT_SOCKET.into()),
                    max_overhead_percent: Some(Percent(0.25)),
                },
                otlp: OtlpConfig {
                    enabled: true,
                    metrics: Destination {
                        endpoint: "https://collector.example:4318/otlp/v1/metrics".into(),
                        ..https.clone()
                    },
                    logs: Destination {
                        endpoint: "https://collector.example:4318/otlp/v1/logs".into(),
                        ..https
                    },
                    temporality: Temporality::Delta,
                    queue: 5,
                    service_name: "svc".into(),
                    resource_attributes: map(&[("deployment.environment", "prod")]),
                    notes: Vec::new(),
                },
                prometheus: PrometheusConfig {
                    enabled: false,
                    listen: "0.0.0.0:9000".parse().unwrap(),
                },
                kubernetes: None,
            }
        );
    }

    #[test]
    fn environment_overrides_file() {
        let text = r#"
            [otlp]
            endpoint = "http://file:4317"
            metrics_endpoint = "http://file:4318/custom"
            protocol = "grpc"
            headers = { "api-key" = "file", "x-file" = "1" }
            timeout = "3s"
            temporality = "delta"
            service_name = "from-file"
            resource_attributes = { "a" = "file", "b" = "file" }
        "#;
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=env"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "250"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                "Cumulative",
            ),
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_RESOURCE_ATTRIBUTES", "b=env,c=env"),
        ]);
        let otlp = load_text("env.toml", text, env, &Overrides::default())
            .unwrap()
            .otlp;
        // The environment's base endpoint replaces both of the file's URLs (module docs).
        assert_eq!(otlp.metrics.endpoint, "http://env:4318/v1/metrics");
        assert_eq!(otlp.logs.endpoint, "http://env:4318/v1/logs");
        assert!(otlp.enabled);
        assert_eq!(otlp.metrics.protocol, Protocol::HttpProtobuf);
        assert_eq!(
            otlp.metrics.headers,
            map(&[("api-key", "env"), ("x-file", "1")])
        );
        assert_eq!(otlp.metrics.timeout, Duration::from_millis(250));
        assert_eq!(otlp.temporality, Temporality::Cumulative);
        assert_eq!(otlp.service_name, "from-env");
        assert_eq!(
            otlp.resource_attributes,
            map(&[("a", "file"), ("b", "env"), ("c", "env")])
        );
    }

    #[test]
    fn empty_environment_values_are_unset() {
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            ("OTEL_SERVICE_NAME", " "),
        ]);
        assert_eq!(
            Config::load(None, env, &Overrides::default()).unwrap(),
            defaults()
        );
    }

    #[test]
    fn explicit_enabled_false_in_file_beats_endpoint_from_environment() {
        let env = env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317")]);
        let config = load_text(
            "off.toml",
            "[otlp]\nenabled = false\n",
            env,
            &Overrides::default(),
        );
        assert!(!config.unwrap().otlp.enabled);
    }

    #[test]
    fn flags_override_environment_and_file() {
        let text = "[agent]\ninterval = \"5s\"\nsignals = [\"lock\"]\n\
                    [otlp]\nenabled = false\nmetrics_endpoint = \"http://file/v1/metrics\"\n\
                    [prometheus]\nenabled = false\n";
        let env = env_of(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://env:4317")]);
        let flags = Overrides {
            interval: Some(Duration::from_secs(1)),
            signals: Some(vec![Signal::Futex, Signal::BlockIo]),
            otlp_endpoint: Some("http://flag:4317".into()),
            prometheus_listen: Some("[::1]:9999".parse().unwrap()),
            socket: None,
            scope: None,
        };
        let config = load_text("flags.toml", text, env, &flags).unwrap();
        assert_eq!(config.agent.interval, Duration::from_secs(1));
        assert_eq!(config.agent.signals, vec![Signal::BlockIo, Signal::Futex]);
        assert!(config.otlp.enabled);
        assert_eq!(config.otlp.metrics.endpoint, "http://flag:4317");
        assert_eq!(config.otlp.logs.endpoint, "http://flag:4317");
        assert!(config.prometheus.enabled);
        assert_eq!(config.prometheus.listen, "[::1]:9999".parse().unwrap());
    }

    #[test]
    fn the_cgroup_flag_overrides_the_scope_of_the_file() {
        let text = "[agent]\nscope = \"pod\"\n";
        let scope = |flag: Option<&str>| {
            let flags = Overrides {
                scope: flag.map(Into::into),
                ..Overrides::default()
            };
            load_text("scope.toml", text, no_env, &flags)
                .map(|c| c.agent.scope)
                .map_err(|e| e.to_string())
        };
        assert_eq!(scope(None), Ok(Some(ScopeSpec::Pod)));
        assert_eq!(scope(Some("self")), Ok(Some(ScopeSpec::Own)));
        assert_eq!(
            scope(Some("/system.slice/nginx.service/")),
            Ok(Some(ScopeSpec::Path("/system.slice/nginx.service".into())))
        );
        // "" is the whole host, as `agent.scope = ""`.
        assert_eq!(scope(Some("")), Ok(None));
        let e = scope(Some("system.slice")).unwrap_err();
        assert!(
            e.starts_with("--cgroup: invalid scope \"system.slice\": use \"self\""),
            "{e}"
        );
    }

    #[test]
    fn kubernetes_enrichment_takes_the_in_cluster_defaults_from_the_pods_environment() {
        let pod = env_of(&[
            ("NODE_NAME", "node-1"),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
        ]);
        let k8s = |text: &str, env: &dyn Fn(&str) -> Option<String>| {
            load_text("k8s.toml", text, env, &Overrides::default())
                .unwrap_or_else(|e| panic!("{e}"))
                .kubernetes
        };
        // Off unless asked for.
        assert_eq!(k8s("", &pod), None);
        assert_eq!(k8s("[kubernetes]\nenrich = \"off\"\n", &pod), None);
        let sa = Path::new(SERVICE_ACCOUNT_DIR);
        assert_eq!(
            k8s("[kubernetes]\nenrich = \"kubelet\"\n", &pod),
            Some(kubernetes::Settings {
                source: kubernetes::Source::Kubelet,
                url: "https://node-1:10250/pods".into(),
                token_file: Some(sa.join("token")),
                ca_file: Some(sa.join("ca.crt")),
                insecure_skip_verify: false,
                refresh: Duration::from_secs(30),
            })
        );
        let api = k8s("[kubernetes]\nenrich = \"api-server\"\n", &pod).unwrap();
        assert_eq!(
            api.url,
            "https://10.96.0.1:443/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1"
        );
        let v6 = env_of(&[
            ("NODE_NAME", "node-1"),
            ("KUBERNETES_SERVICE_HOST", "fd00::1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
        ]);
        assert!(
            k8s("[kubernetes]\nenrich = \"api-server\"\n", &v6)
                .unwrap()
                .url
                .starts_with("https://[fd00::1]:443/api/v1/pods?")
        );
        // Everything set in the file: no environment needed.
        let text = "[kubernetes]\nenrich = \"api-server\"\nurl = \"https://api.example:6443/\"\n\
                    node_name = \"worker-2\"\ntoken_file = \"\"\nca_file = \"\"\n\
                    insecure_skip_verify = true\nrefresh = \"2m\"\n";
        assert_eq!(
            k8s(text, &no_env),
            Some(kubernetes::Settings {
                source: kubernetes::Source::ApiServer,
                url: "https://api.example:6443/api/v1/pods?fieldSelector=spec.nodeName%3Dworker-2"
                    .into(),
                token_file: None,
                ca_file: None,
                insecure_skip_verify: true,
                refresh: Duration::from_secs(120),
            })
        );
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let flags = Overrides {
            interval: Some(Duration::from_millis(50)),
            ..Overrides::default()
        };
        let e = Config::load(None, no_env, &flags).unwrap_err().to_string();
        assert_eq!(e, "--interval: 50ms is too short; use at least 100ms");
        let flags = Overrides {
            otlp_endpoint: Some("collector:4317/otlp".into()),
            ..Overrides::default()
        };
        let e = Config::load(None, no_env, &flags).unwrap_err().to_string();
        assert_eq!(
            e,
            "--otlp-endpoint: \"collector:4317/otlp\" is not a URL; use \
             http://collector:4317/otlp (or https:// for TLS)"
        );
    }

    #[test]
    fn headers_and_resource_attributes_from_environment() {
        let env = env_of(&[
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                " api-key = a%20b%2Cc , authorization=Basic%20dXNlcjpwYXNz,,x-plus=1+1",
            ),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,team=caf%C3%A9,service.name=from-attrs",
            ),
        ]);
        let otlp = Config::load(None, env, &Overrides::default()).unwrap().otlp;
        assert_eq!(
            otlp.metrics.headers,
            map(&[
                ("api-key", "a b,c"),
                ("authorization", "Basic dXNlcjpwYXNz"),
                ("x-plus", "1+1"),
            ])
        );
        assert_eq!(
            otlp.resource_attributes,
            map(&[("deployment.environment", "prod"), ("team", "café")])
        );
        assert_eq!(otlp.service_name, "from-attrs");

        // The metrics-specific variable replaces the general one.
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "b=2"),
        ]);
        let otlp = Config::load(None, env, &Overrides::default()).unwrap().otlp;
        assert_eq!(otlp.metrics.headers, map(&[("b", "2")]));
    }

    #[test]
    fn bad_pairs_are_clear_errors() {
        let cases = [
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "a=1,api-key",
                "OTEL_EXPORTER_OTLP_HEADERS: \"api-key\" has no \"=\"; use key=value pairs \
                 separated by commas, e.g. k1=v1,k2=v2",
            ),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "=x",
                "OTEL_RESOURCE_ATTRIBUTES: \"=x\" has an empty key; use key=value pairs \
                 separated by commas, e.g. k1=v1,k2=v2",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "k=100%",
                "OTEL_EXPORTER_OTLP_HEADERS: \"k=100%\": the value has a % not followed by two \
                 hex digits; write a literal % as %25",
            ),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "k=%FF",
                "OTEL_RESOURCE_ATTRIBUTES: \"k=%FF\": the value is not UTF-8 once percent-decoded",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "bad header=1",
                "OTEL_EXPORTER_OTLP_HEADERS: \"bad header\" is not a valid header name; use \
                 letters, digits and - (e.g. api-key)",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "k=a%0Ab",
                "OTEL_EXPORTER_OTLP_HEADERS: the value of header \"k\" must be printable ASCII",
            ),
        ];
        for (var, value, expected) in cases {
            let e = Config::load(None, env_of(&[(var, value)]), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert_eq!(e, expected, "{var}={value}");
        }
    }

    #[test]
    fn timeout_from_environment_is_milliseconds() {
        let load = |ms: &str| {
            Config::load(
                None,
                env_of(&[("OTEL_EXPORTER_OTLP_TIMEOUT", ms)]),
                &Overrides::default(),
            )
        };
        assert_eq!(
            load("1500").unwrap().otlp.metrics.timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(
            load("10s").unwrap_err().to_string(),
            "OTEL_EXPORTER_OTLP_TIMEOUT: \"10s\" is not a whole number of milliseconds; this \
             variable is in milliseconds (OpenTelemetry specification), e.g. 10000 for 10 s"
        );
        assert!(
            load("0")
                .unwrap_err()
                .to_string()
                .contains("use more than zero")
        );
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "2000"),
        ]);
        let config = Config::load(None, env, &Overrides::default()).unwrap();
        assert_eq!(config.otlp.metrics.timeout, Duration::from_secs(2));
    }

    #[test]
    fn bad_environment_values() {
        let cases = [
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "http/json",
                "OTEL_EXPORTER_OTLP_PROTOCOL: \"http/json\" is not supported; use grpc or \
                 http/protobuf",
            ),
            (
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                "lowmemory",
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: \"lowmemory\" is not \
                 supported; use cumulative or delta",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "ftp://collector",
                "OTEL_EXPORTER_OTLP_ENDPOINT: \"ftp://collector\" has the scheme \"ftp\"; use \
                 http:// or https://",
            ),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://:4318/v1/metrics",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: \"http://:4318/v1/metrics\" has no host; \
                 use e.g. http://collector:4317",
            ),
        ];
        for (var, value, expected) in cases {
            let e = Config::load(None, env_of(&[(var, value)]), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert_eq!(e, expected);
        }
    }

    #[test]
    fn endpoint_resolution() {
        use Protocol::{Grpc, HttpProtobuf as Http};
        let cases = [
            // (protocol, base, metrics endpoint, resolved)
            (Grpc, None, None, "http://localhost:4317"),
            (Http, None, None, "http://localhost:4318/v1/metrics"),
            (Grpc, Some("http://c:4317"), None, "http://c:4317"),
            (Grpc, Some("https://c:443/"), None, "https://c:443/"),
            (
                Http,
                Some("http://c:4318"),
                None,
                "http://c:4318/v1/metrics",
            ),
            (
                Http,
                Some("http://c:4318/"),
                None,
                "http://c:4318/v1/metrics",
            ),
            (
                Http,
                Some("https://c/otlp"),
                None,
                "https://c/otlp/v1/metrics",
            ),
            (
                Http,
                Some("https://c/otlp/"),
                None,
                "https://c/otlp/v1/metrics",
            ),
            (
                Http,
                Some("http://c:4318"),
                Some("http://m/custom/"),
                "http://m/custom/",
            ),
            (Http, None, Some("http://m:4318/x"), "http://m:4318/x"),
            (
                Grpc,
                Some("http://c:4317"),
                Some("http://m:4317"),
                "http://m:4317",
            ),
        ];
        for (protocol, base, metrics, expected) in cases {
            assert_eq!(
                resolve_endpoint(protocol, base, metrics),
                expected,
                "{protocol} {base:?} {metrics:?}"
            );
        }
        // Through the environment, as users set it.
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ]);
        let otlp = Config::load(None, env, &Overrides::default()).unwrap().otlp;
        assert_eq!(otlp.metrics.endpoint, "http://collector:4318/v1/metrics");
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://other:4318/metrics",
            ),
        ]);
        let otlp = Config::load(None, env, &Overrides::default()).unwrap().otlp;
        assert_eq!(otlp.metrics.endpoint, "http://other:4318/metrics");
        // metrics_endpoint = "" in the file is unset, so `endpoint` is the base.
        let text = "[otlp]\nprotocol = \"http/protobuf\"\nendpoint = \"http://c:4318\"\n\
                    metrics_endpoint = \"\"\n";
        let otlp = load_text("empty-url.toml", text, no_env, &Overrides::default())
            .unwrap()
            .otlp;
        assert_eq!(otlp.metrics.endpoint, "http://c:4318/v1/metrics");
    }

    #[test]
    fn logs_endpoint_resolution() {
        use Protocol::{Grpc, HttpProtobuf as Http};
        let cases = [
            // (protocol, base, logs endpoint, resolved)
            (Grpc, None, None, "http://localhost:4317"),
            (Http, None, None, "http://localhost:4318/v1/logs"),
            (Grpc, Some("http://c:4317"), None, "http://c:4317"),
            (Http, Some("http://c:4318/"), None, "http://c:4318/v1/logs"),
            (Http, Some("https://c/otlp"), None, "https://c/otlp/v1/logs"),
            (
                Http,
                Some("http://c:4318"),
                Some("http://l/custom"),
                "http://l/custom",
            ),
            (Grpc, None, Some("http://l:4317"), "http://l:4317"),
        ];
        for (protocol, base, logs, expected) in cases {
            assert_eq!(
                resolve_logs_endpoint(protocol, base, logs),
                expected,
                "{protocol} {base:?} {logs:?}"
            );
        }
        // A metrics-specific URL does not apply to logs, nor a logs-specific one to metrics.
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://m:4318/metrics",
            ),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://l:4318/logs"),
        ]);
        let otlp = Config::load(None, env, &Overrides::default()).unwrap().otlp;
        assert_eq!(
            (otlp.metrics.endpoint.as_str(), otlp.logs.endpoint.as_str()),
            ("http://m:4318/metrics", "http://l:4318/logs")
        );
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://m:4318/metrics",
            ),
        ]);
        let otlp = Config::load(None, env, &Overrides::default()).unwrap().otlp;
        assert_eq!(otlp.logs.endpoint, "http://collector:4318/v1/logs");
        // Decided per kind by the highest source that sets a URL for it: the environment's
        // metrics URL leaves the logs to the file's base URL.
        let text = "[otlp]\nprotocol = \"http/protobuf\"\nendpoint = \"http://file:4318\"\n";
        let env = env_of(&[(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "http://m:4318/metrics",
        )]);
        let otlp = load_text("logs.toml", text, env, &Overrides::default())
            .unwrap()
            .otlp;
        assert_eq!(
            (otlp.metrics.endpoint.as_str(), otlp.logs.endpoint.as_str()),
            ("http://m:4318/metrics", "http://file:4318/v1/logs")
        );
        // A logs URL in the file beats the file's base URL, but not the environment's.
        let text =
            "[otlp]\nendpoint = \"http://file:4317\"\nlogs_endpoint = \"http://file-logs:4317\"\n";
        let otlp = load_text("logs.toml", text, no_env, &Overrides::default())
            .unwrap()
            .otlp;
        assert!(otlp.enabled);
        assert_eq!(
            (otlp.metrics.endpoint.as_str(), otlp.logs.endpoint.as_str()),
            ("http://file:4317", "http://file-logs:4317")
        );
        let env = env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317")]);
        let otlp = load_text("logs.toml", text, env, &Overrides::default())
            .unwrap()
            .otlp;
        assert_eq!(otlp.logs.endpoint, "http://env:4317");
        // A logs URL alone turns OTLP on.
        let env = env_of(&[("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://l:4317")]);
        let otlp = Config::load(None, env, &Overrides::default()).unwrap().otlp;
        assert!(otlp.enabled);
        assert_eq!(
            (otlp.metrics.endpoint.as_str(), otlp.logs.endpoint.as_str()),
            ("http://localhost:4317", "http://l:4317")
        );
        // Malformed, it is refused with its source named.
        let e = Config::load(
            None,
            env_of(&[("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "l:4317/logs")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: "), "{e}");
        let e = err_text("bad-logs.toml", "[otlp]\nlogs_endpoint = \"ftp://l\"\n");
        assert!(
            e.ends_with(
                "bad-logs.toml:2:17: otlp.logs_endpoint: \"ftp://l\" has the scheme \"ftp\"; \
                 use http:// or https://"
            ),
            "{e}"
        );
    }

    /// The PEM files of one kind of data, as set.
    fn tls(ca: Option<&str>, client: Option<(&str, &str)>) -> TlsFiles {
        TlsFiles {
            certificate: ca.map(Into::into),
            client: client.map(|(certificate, key)| ClientFiles {
                certificate: certificate.into(),
                key: key.into(),
            }),
        }
    }

    #[test]
    fn tls_and_compression_from_the_environment_for_each_kind_of_data() {
        // The general variables apply to metrics and log records alike.
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "GZIP"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/client.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/client.key"),
        ]);
        let otlp = Config::load(None, env, &Overrides::default()).unwrap().otlp;
        for d in [&otlp.metrics, &otlp.logs] {
            assert_eq!(d.endpoint, "https://collector:4317");
            assert_eq!(d.compression, Compression::Gzip);
            assert_eq!(
                d.tls,
                tls(Some("/ca.pem"), Some(("/client.pem", "/client.key")))
            );
        }
        assert_eq!(otlp.notes, Vec::<String>::new());
        // A kind's own variable replaces the general one for that kind only, each setting on
        // its own (OpenTelemetry specification: every option can be overridden per signal).
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "/metrics-ca.pem"),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "https://logs:4317"),
            ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "b=2"),
            ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "2000"),
            ("OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE", "/logs.pem"),
            ("OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY", "/logs.key"),
        ]);
        let otlp = Config::load(None, env, &Overrides::default()).unwrap().otlp;
        assert_eq!(
            otlp.metrics,
            Destination {
                endpoint: "https://collector:4318/v1/metrics".into(),
                protocol: Protocol::HttpProtobuf,
                headers: map(&[("a", "1")]),
                timeout: Duration::from_secs(1),
                compression: Compression::None,
                tls: tls(Some("/metrics-ca.pem"), None),
            }
        );
        assert_eq!(
            otlp.logs,
            Destination {
                endpoint: "https://logs:4317".into(),
                protocol: Protocol::Grpc,
                headers: map(&[("b", "2")]),
                timeout: Duration::from_secs(2),
                compression: Compression::Gzip,
                tls: tls(Some("/ca.pem"), Some(("/logs.pem", "/logs.key"))),
            }
        );
    }

    #[test]
    fn tls_keys_of_the_file_and_the_environment_over_them() {
        let text = "[otlp]\nendpoint = \"https://file:4317\"\ncertificate = \"/file-ca.pem\"\n\
                    client_certificate = \"/file.pem\"\nclient_key = \"/file.key\"\n\
                    compression = \"gzip\"\n";
        let otlp = load_text("tls.toml", text, no_env, &Overrides::default())
            .unwrap()
            .otlp;
        let file = tls(Some("/file-ca.pem"), Some(("/file.pem", "/file.key")));
        assert_eq!((&otlp.metrics.tls, &otlp.logs.tls), (&file, &file));
        assert_eq!(otlp.logs.compression, Compression::Gzip);
        // The client certificate and key are taken as a pair from the highest source that sets
        // either: a certificate from one source and a key from another would not match.
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/env.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/env.key"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
        ]);
        let otlp = load_text("tls.toml", text, env, &Overrides::default())
            .unwrap()
            .otlp;
        assert_eq!(
            otlp.metrics.tls,
            tls(Some("/file-ca.pem"), Some(("/env.pem", "/env.key")))
        );
        assert_eq!(otlp.metrics.compression, Compression::None);
        // "" in the file is unset.
        let text = "[otlp]\nendpoint = \"https://file:4317\"\ncertificate = \"\"\n\
                    client_certificate = \"\"\nclient_key = \"\"\n";
        let otlp = load_text("empty.toml", text, no_env, &Overrides::default())
            .unwrap()
            .otlp;
        assert_eq!(otlp.metrics.tls, TlsFiles::default());
    }

    #[test]
    fn insecure_applies_only_to_a_grpc_endpoint_without_a_scheme() {
        let load = |vars: &[(&str, &str)]| {
            Config::load(None, env_of(vars), &Overrides::default()).map(|c| c.otlp)
        };
        // host:port is TLS for gRPC, unless insecure.
        let otlp = load(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]).unwrap();
        assert_eq!(otlp.metrics.endpoint, "https://collector:4317");
        assert_eq!(otlp.logs.endpoint, "https://collector:4317");
        let otlp = load(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "TRUE"),
            ("OTEL_EXPORTER_OTLP_LOGS_INSECURE", "false"),
        ])
        .unwrap();
        assert_eq!(otlp.metrics.endpoint, "http://collector:4317");
        assert_eq!(otlp.logs.endpoint, "https://collector:4317");
        assert_eq!(otlp.notes, Vec::<String>::new());
        let otlp = load(&[
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "[::1]:4317"),
            ("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "true"),
        ])
        .unwrap();
        assert_eq!(otlp.metrics.endpoint, "http://[::1]:4317");
        // A scheme says it itself, and then insecure is said to have no effect.
        let otlp = load(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
        ])
        .unwrap();
        assert_eq!(otlp.metrics.endpoint, "https://collector:4317");
        assert_eq!(
            otlp.notes,
            [
                "OTEL_EXPORTER_OTLP_INSECURE is true but has no effect on metrics: it applies \
                 only to a gRPC endpoint given without http:// or https://, and their endpoint \
                 is https://collector:4317 (OpenTelemetry specification)",
                "OTEL_EXPORTER_OTLP_INSECURE is true but has no effect on log records: it \
                 applies only to a gRPC endpoint given without http:// or https://, and their \
                 endpoint is https://collector:4317 (OpenTelemetry specification)"
            ]
        );
        // OTLP/HTTP always needs the scheme: the variable that lacks it is named, whichever
        // source sets the protocol.
        let e = load(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "OTEL_EXPORTER_OTLP_ENDPOINT: \"collector:4318\" has no scheme, which only a gRPC \
             endpoint may omit; OTLP/HTTP needs a URL: use http://collector:4318 or \
             https://collector:4318"
        );
        let e = err_text(
            "http.toml",
            "[otlp]\nprotocol = \"http/protobuf\"\nendpoint = \"collector:4318\"\n",
        );
        assert!(
            e.ends_with("http.toml:3:12: otlp.endpoint: \"collector:4318\" has no scheme, which only a gRPC endpoint may omit; OTLP/HTTP needs a URL: use http://collector:4318 or https://collector:4318"),
            "{e}"
        );
        // The file's insecure, and the flag's endpoint.
        let flags = Overrides {
            otlp_endpoint: Some("collector:4317".into()),
            ..Overrides::default()
        };
        let otlp = load_text("insecure.toml", "[otlp]\ninsecure = true\n", no_env, &flags)
            .unwrap()
            .otlp;
        assert_eq!(otlp.metrics.endpoint, "http://collector:4317");
    }

    #[test]
    fn tls_compression_and_aggregation_values_are_checked() {
        let cases = [
            (
                "OTEL_EXPORTER_OTLP_COMPRESSION",
                "zstd",
                "OTEL_EXPORTER_OTLP_COMPRESSION: \"zstd\" is not a compression observer \
                 supports; use gzip or none",
            ),
            (
                "OTEL_EXPORTER_OTLP_LOGS_INSECURE",
                "yes",
                "OTEL_EXPORTER_OTLP_LOGS_INSECURE: \"yes\" is not a Boolean; use true or false",
            ),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                "/client.pem",
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: a client certificate needs its private \
                 key: set OTEL_EXPORTER_OTLP_CLIENT_KEY (or OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY) \
                 to the key's PEM file too",
            ),
            (
                "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY",
                "/client.key",
                "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY: a client key needs its certificate: set \
                 OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE (or \
                 OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE) to the certificate's PEM file too",
            ),
            (
                "OTEL_EXPORTER_OTLP_METRIC_INSECURE",
                "true",
                "OTEL_EXPORTER_OTLP_METRIC_INSECURE: is the obsolete name of \
                 OTEL_EXPORTER_OTLP_METRICS_INSECURE (OpenTelemetry specification); use that \
                 instead",
            ),
            (
                "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
                "explicit_bucket_histogram",
                "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION: \
                 \"explicit_bucket_histogram\" is not supported: observer exports the kernel's \
                 own buckets, which are base-2 exponential ones (scale 2); unset it or set \
                 base2_exponential_bucket_histogram",
            ),
            (
                "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
                "exponential",
                "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION: \"exponential\" is \
                 not a histogram aggregation; use base2_exponential_bucket_histogram",
            ),
        ];
        for (var, value, expected) in cases {
            let e = Config::load(None, env_of(&[(var, value)]), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert_eq!(e, expected, "{var}={value}");
        }
        // What observer does anyway is accepted.
        let env = env_of(&[(
            "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
            "Base2_Exponential_Bucket_Histogram",
        )]);
        assert_eq!(
            Config::load(None, env, &Overrides::default()).unwrap(),
            defaults()
        );
        let e = err_text(
            "key.toml",
            "[otlp]\nendpoint = \"https://c:4317\"\nclient_key = \"/k.pem\"\n",
        );
        assert!(
            e.ends_with(
                "key.toml:3:14: otlp.client_key: a client key needs its certificate: set \
                 otlp.client_certificate to the certificate's PEM file too"
            ),
            "{e}"
        );
    }

    #[test]
    fn settings_that_change_nothing_are_noted() {
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://tempo:4317"),
            ("OTEL_EXPORTER_OTLP_SPAN_INSECURE", "true"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
        ]);
        let config = Config::load(None, env, &Overrides::default()).unwrap();
        assert_eq!(
            config.otlp.notes,
            [
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set but has no effect: observer exports \
                 metrics and log records, no traces",
                "OTEL_EXPORTER_OTLP_SPAN_INSECURE is set but has no effect: observer exports \
                 metrics and log records, no traces",
                "OTEL_EXPORTER_OTLP_CERTIFICATE has no effect on metrics: their endpoint \
                 http://localhost:4317 is not https://, so no TLS is spoken; use an https:// \
                 endpoint to use it",
                "OTEL_EXPORTER_OTLP_CERTIFICATE has no effect on log records: their endpoint \
                 http://localhost:4317 is not https://, so no TLS is spoken; use an https:// \
                 endpoint to use it",
            ]
        );
        let names = [
            "OTEL_EXPORTER_OTLP_CERTIFICATES",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "PATH",
            "OTEL_SERVICE_NAME",
        ];
        assert_eq!(
            unknown_otlp_variables(names.map(String::from)),
            [
                "OTEL_EXPORTER_OTLP_CERTIFICATES is set but is no variable of the OpenTelemetry \
              specification's OTLP exporter, so it has no effect (misspelt?)"
            ]
        );
    }

    /// The issue's promise: every `OTEL_EXPORTER_OTLP_*` variable of the specification is
    /// honoured (the configuration differs from the defaults), refused with an error that names
    /// it, or said to have no effect in a note that names it; none is ignored silently.
    #[test]
    fn no_variable_of_the_specification_is_ignored_silently() {
        let all = otlp_variables();
        assert_eq!(all.len(), 4 * 9 + 4, "{all:?}");
        for var in all {
            // A value unlike the default, valid where possible.
            let value = match var.rsplit('_').next().unwrap() {
                "ENDPOINT" => "https://collector:4317",
                "INSECURE" => "true",
                "CERTIFICATE" | "KEY" => "/tls.pem",
                "HEADERS" => "api-key=1",
                "COMPRESSION" => "gzip",
                "TIMEOUT" => "1234",
                "PROTOCOL" => "http/protobuf",
                "PREFERENCE" => "delta",
                "AGGREGATION" => "explicit_bucket_histogram",
                other => panic!("{var}: no value for {other}"),
            };
            match Config::load(None, env_of(&[(var, value)]), &Overrides::default()) {
                Err(e) => assert!(e.to_string().starts_with(var), "{var}: {e}"),
                Ok(config) if !config.otlp.notes.is_empty() => assert!(
                    config.otlp.notes.iter().all(|n| n.starts_with(var)),
                    "{var}: {:?}",
                    config.otlp.notes
                ),
                Ok(config) => assert_ne!(config, defaults(), "{var}={value} changed nothing"),
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("8"), Ok(Duration::from_secs(8)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "10x", "-1s", "1 s", "1.2.3s", "99999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn path_of_a_value_in_a_list_and_a_quoted_key() {
        let e = err_text("list.toml", "[agent]\nsignals = [\"tcp\", 5]\n");
        assert!(
            e.ends_with("list.toml:2:19: agent.signals[1]: expected a string, found integer `5`"),
            "{e}"
        );
        let e = err_text(
            "attr.toml",
            "[otlp]\nresource_attributes = { \"a.b\" = 1 }\n",
        );
        assert!(
            e.ends_with(
                "attr.toml:2:33: otlp.resource_attributes.\"a.b\": expected a string, found \
                 integer `1`"
            ),
            "{e}"
        );
    }

    #[test]
    fn nothing_to_export_points_at_prometheus_enabled() {
        let e = err_text(
            "off.toml",
            "[agent]\nsocket = \"\"\n[prometheus]\nenabled = false\n",
        );
        assert!(
            e.ends_with(
                ":4:11: prometheus.enabled: false, and OTLP is not enabled either, so \
                         nothing would be exported; set otlp.endpoint (or \
                         OTEL_EXPORTER_OTLP_ENDPOINT), enable [prometheus], or set \
                         agent.socket to serve `observer top` only"
            ),
            "{e}"
        );
    }

    #[test]
    fn socket_only_agent_and_socket_paths() {
        let text = "[agent]\nsocket = \"/tmp/o.sock\"\n[prometheus]\nenabled = false\n";
        let config = load_text("sock.toml", text, no_env, &Overrides::default()).unwrap();
        assert_eq!(config.agent.socket, Some(PathBuf::from("/tmp/o.sock")));
        let off = load_text(
            "off.toml",
            "[agent]\nsocket = \"\"\n",
            no_env,
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(off.agent.socket, None);
        let e = err_text("rel.toml", "[agent]\nsocket = \"observer.sock\"\n");
        assert!(
            e.contains(":2:10: agent.socket: \"observer.sock\" is not an absolute path"),
            "{e}"
        );
        let long = format!("/{}", "x".repeat(120));
        let e = err_text("long.toml", &format!("[agent]\nsocket = {long:?}\n"));
        assert!(e.contains("at most 107"), "{e}");
        // The flag wins over the file, and "" turns the socket off.
        let flags = Overrides {
            socket: Some(PathBuf::new()),
            ..Overrides::default()
        };
        let config = load_text("sock.toml", text, no_env, &flags);
        assert!(
            config
                .unwrap_err()
                .to_string()
                .contains("nothing would be exported"),
            "an agent with nothing to export or serve is refused"
        );
    }

    /// Every file in tests/invalid_configs is refused with the message its `# expect:` lines
    /// give (each a substring; `{file}` stands for the fixture's path).
    #[test]
    fn invalid_config_fixtures() {
        invalid_fixtures("tests/invalid_configs");
    }

    /// The same for `[tuning]` and `[[rules]]`: tests/invalid_rules.
    #[test]
    fn invalid_rule_fixtures() {
        invalid_fixtures("tests/invalid_rules");
    }

    fn invalid_fixtures(folder: &str) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
        let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        fixtures.sort();
        assert!(fixtures.len() >= 10, "fixtures in {}", dir.display());
        for fixture in fixtures {
            let text = std::fs::read_to_string(&fixture).unwrap();
            let expects: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix("# expect: "))
                .map(|e| e.replace("{file}", &fixture.display().to_string()))
                .collect();
            assert!(
                !expects.is_empty(),
                "{}: no `# expect:` line",
                fixture.display()
            );
            let e = match Config::load(Some(&fixture), no_env, &Overrides::default()) {
                Ok(_) => panic!("{}: accepted", fixture.display()),
                Err(e) => e.to_string(),
            };
            for expect in expects {
                assert!(
                    e.contains(&expect),
                    "{}:\n  error:    {e}\n  expected: {expect}",
                    fixture.display()
                );
            }
        }
    }
}
