//! The resolved settings written back as an observer.toml (`observer config check`): every key
//! of `[agent]`, `[otlp]`, `[prometheus]`, `[kubernetes]` and `[tuning]` with the value the
//! agent would use, whether it came from the file, the environment or a default, and the file's
//! `[[rules]]` as written (rules come from the file alone, and it is the form people edit).
//!
//! The output is itself a valid observer.toml that loads into the same settings: a resolved
//! value is written in a form that resolves to itself (the OTLP URLs as the metrics- and
//! logs-specific ones, which are used as they are; a pod list's server and node rather than the
//! list's URL). The structs below are the file's layout; each takes its section apart field by
//! field, so a setting added to [`Config`] does not compile until it is written here too.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde::Serialize;

use super::{
    AgentConfig, Config, ConfigError, FileSource, OtlpConfig, Overrides, PrometheusConfig,
};
use crate::{kubernetes, rules::spec::Tuning};

/// A config file that passed every check, and its settings as an observer.toml.
pub struct Checked {
    pub config: Config,
    pub tuning: Tuning,
    /// The settings as an observer.toml, ending with a summary of the rules in comments.
    pub toml: String,
}

impl Config {
    /// Loads `path` as [`Config::load_with_rules`] does with no flags, and writes the result
    /// back as an observer.toml.
    pub fn check_file(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Checked, ConfigError> {
        let file = FileSource::read(path)?;
        // The same text parsed without a schema: the rules as written. It parsed above, so an
        // error here is only reported the same way, never expected.
        let mut document: toml::Table =
            toml::from_str(&file.text).map_err(|e| file.toml_error(&e))?;
        let rules = document.remove("rules");
        let (config, tuning) = Self::from_source(Some(file), env, &Overrides::default())?;
        let toml = render(&config, &tuning, rules.as_ref());
        Ok(Checked {
            config,
            tuning,
            toml,
        })
    }
}

/// The settings as an observer.toml, then what observer made of each rule, as comments.
fn render(config: &Config, tuning: &Tuning, rules: Option<&toml::Value>) -> String {
    let Config {
        agent,
        otlp,
        prometheus,
        kubernetes,
    } = config;
    let (otlp, comments) = Otlp::of(otlp);
    let file = File {
        agent: Agent::from(agent),
        otlp,
        prometheus: Prometheus::from(prometheus),
        kubernetes: Kubernetes::from(kubernetes.as_ref()),
        tuning: TuningSection::from(tuning),
        rules,
    };
    let mut out = String::new();
    for comment in comments {
        out.push_str("# ");
        out.push_str(&comment);
        out.push('\n');
    }
    // Serializing plain strings, numbers, lists and tables cannot fail.
    out.push_str(&toml::to_string(&file).unwrap_or_else(|e| format!("# not printable: {e}\n")));
    let summary = crate::render::rules(tuning);
    if !summary.is_empty() {
        out.push_str("\n# What observer understood of the rules above:\n");
        for line in summary.lines() {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[derive(Serialize)]
struct File<'a> {
    agent: Agent,
    otlp: Otlp<'a>,
    prometheus: Prometheus,
    kubernetes: Kubernetes<'a>,
    tuning: TuningSection,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<&'a toml::Value>,
}

#[derive(Serialize)]
struct Agent {
    interval: String,
    signals: Vec<&'static str>,
    /// `""`: the whole host.
    scope: String,
    strict: bool,
    top: usize,
    /// `""`: no socket.
    socket: String,
    /// 0: no budget.
    max_overhead_percent: f64,
}

impl From<&AgentConfig> for Agent {
    fn from(c: &AgentConfig) -> Self {
        let AgentConfig {
            interval,
            signals,
            scope,
            strict,
            top,
            socket,
            max_overhead_percent,
        } = c;
        Self {
            interval: duration(*interval),
            signals: signals.iter().map(|s| s.name()).collect(),
            scope: scope.as_ref().map(ToString::to_string).unwrap_or_default(),
            strict: *strict,
            top: *top,
            socket: socket
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            max_overhead_percent: max_overhead_percent.map_or(0.0, |p| p.get()),
        }
    }
}

#[derive(Serialize)]
struct Otlp<'a> {
    enabled: bool,
    /// The resolved URLs are written as the data-specific ones, which are used as they are: a
    /// base `endpoint` would get `v1/metrics` appended again over HTTP. They always name their
    /// scheme, so `insecure` is never needed.
    metrics_endpoint: &'a str,
    logs_endpoint: &'a str,
    protocol: &'static str,
    timeout: String,
    compression: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_certificate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key: Option<String>,
    temporality: &'static str,
    queue: usize,
    service_name: &'a str,
    headers: &'a BTreeMap<String, String>,
    resource_attributes: &'a BTreeMap<String, String>,
}

impl<'a> Otlp<'a> {
    /// The section, and what it cannot say as comments: the settings that change nothing
    /// ([`OtlpConfig::notes`]), and log-record settings that differ from the metrics' (only
    /// `OTEL_EXPORTER_OTLP_LOGS_*` variables can do that; a file's keys apply to both kinds,
    /// so the metrics' are written).
    fn of(c: &'a OtlpConfig) -> (Self, Vec<String>) {
        let OtlpConfig {
            enabled,
            metrics,
            logs,
            temporality,
            queue,
            service_name,
            resource_attributes,
            notes,
        } = c;
        let path = |p: &Path| p.display().to_string();
        let mut comments: Vec<String> = notes.iter().map(|n| format!("note: {n}")).collect();
        let same_but_endpoint = super::Destination {
            endpoint: metrics.endpoint.clone(),
            ..logs.clone()
        } == *metrics;
        if !same_but_endpoint {
            comments.push(
                "log records are exported with settings of their own (OTEL_EXPORTER_OTLP_LOGS_* \
                 variables) that a file cannot hold apart from the metrics'; [otlp] below has \
                 the metrics'"
                    .into(),
            );
        }
        let otlp = Self {
            enabled: *enabled,
            metrics_endpoint: &metrics.endpoint,
            logs_endpoint: &logs.endpoint,
            protocol: metrics.protocol.name(),
            timeout: duration(metrics.timeout),
            compression: metrics.compression.name(),
            certificate: metrics.tls.certificate.as_deref().map(path),
            client_certificate: metrics.tls.client.as_ref().map(|c| path(&c.certificate)),
            client_key: metrics.tls.client.as_ref().map(|c| path(&c.key)),
            temporality: temporality.name(),
            queue: *queue,
            service_name,
            headers: &metrics.headers,
            resource_attributes,
        };
        (otlp, comments)
    }
}

#[derive(Serialize)]
struct Prometheus {
    enabled: bool,
    listen: String,
}

impl From<&PrometheusConfig> for Prometheus {
    fn from(c: &PrometheusConfig) -> Self {
        let PrometheusConfig { enabled, listen } = c;
        Self {
            enabled: *enabled,
            listen: listen.to_string(),
        }
    }
}

/// `enrich = "off"` alone when pod names are off.
#[derive(Serialize)]
struct Kubernetes<'a> {
    enrich: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_name: Option<&'a str>,
    /// `""`: no token is sent; `""` for the CA: any certificate (with insecure_skip_verify).
    #[serde(skip_serializing_if = "Option::is_none")]
    token_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    insecure_skip_verify: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh: Option<String>,
}

impl<'a> From<Option<&'a kubernetes::Settings>> for Kubernetes<'a> {
    fn from(settings: Option<&'a kubernetes::Settings>) -> Self {
        let Some(kubernetes::Settings {
            source,
            url,
            token_file,
            ca_file,
            insecure_skip_verify,
            refresh,
        }) = settings
        else {
            return Self {
                enrich: "off",
                url: None,
                node_name: None,
                token_file: None,
                ca_file: None,
                insecure_skip_verify: None,
                refresh: None,
            };
        };
        // The list's URL is the server's and the source's path (with the node, for the API
        // server): split where the path begins, as the file says them.
        let (server, node) = url.rsplit_once(source.list_path()).unwrap_or((url, ""));
        let path = |p: &Option<std::path::PathBuf>| {
            Some(
                p.as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            )
        };
        Self {
            enrich: source.name(),
            url: Some(server),
            node_name: (!node.is_empty()).then_some(node),
            token_file: path(token_file),
            ca_file: path(ca_file),
            insecure_skip_verify: Some(*insecure_skip_verify),
            refresh: Some(duration(*refresh)),
        }
    }
}

#[derive(Serialize)]
struct TuningSection {
    mode: &'static str,
    journal: String,
    state: String,
    max_changes_per_hour: u32,
}

impl From<&Tuning> for TuningSection {
    fn from(t: &Tuning) -> Self {
        let Tuning {
            mode,
            journal,
            state,
            max_changes_per_hour,
            // Written as they are in the file (`File::rules`).
            rules: _,
        } = t;
        Self {
            mode: mode.name(),
            journal: journal.display().to_string(),
            state: state.display().to_string(),
            max_changes_per_hour: *max_changes_per_hour,
        }
    }
}

/// A duration as the file takes it, exactly: in the largest unit that divides it (`10s`, `2m`,
/// `1500ms`).
fn duration(d: Duration) -> String {
    const UNITS: [(&str, u128); 6] = [
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let nanos = d.as_nanos();
    let (unit, per) = UNITS
        .into_iter()
        .find(|(_, per)| nanos.is_multiple_of(*per))
        .unwrap_or(("ns", 1));
    format!("{}{unit}", nanos / per)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

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

    /// A directory of its own for each call, as tests run in parallel; removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "observer-resolved-test-{}-{call}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn file(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Checks `text` (in `env`), then checks what that printed with no environment at all: the
    /// same settings, the same rules, and the same text again (printing is a fixed point).
    fn round_trip(text: &str, env: &[(&str, &str)]) -> String {
        let scratch = Scratch::new();
        let first = Config::check_file(&scratch.file("observer.toml", text), env_of(env))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let printed = scratch.file("printed.toml", &first.toml);
        let second = Config::check_file(&printed, env_of(&[])).unwrap_or_else(|e| {
            panic!("what config check printed is refused: {e}\n{}", first.toml)
        });
        assert_eq!(first.config, second.config, "{}", first.toml);
        assert_eq!(
            crate::render::rules(&first.tuning),
            crate::render::rules(&second.tuning)
        );
        assert_eq!(first.toml, second.toml);
        first.toml
    }

    #[test]
    fn defaults_print_every_key() {
        let toml = round_trip("", &[]);
        for line in [
            "[agent]",
            "interval = \"10s\"",
            "signals = [\"runqueue\", \"blockio\", \"tcp\", \"lock\", \"futex\"]",
            "scope = \"\"",
            "socket = \"/run/observer/observer.sock\"",
            "max_overhead_percent = 0.0",
            "[otlp]",
            "enabled = false",
            "metrics_endpoint = \"http://localhost:4317\"",
            "protocol = \"grpc\"",
            "timeout = \"10s\"",
            "[prometheus]",
            "listen = \"127.0.0.1:9464\"",
            "[kubernetes]",
            "enrich = \"off\"",
            "[tuning]",
            "mode = \"dry-run\"",
        ] {
            assert!(toml.lines().any(|l| l == line), "no {line:?} in:\n{toml}");
        }
    }

    /// Every setting away from its default, from the file and from the environment.
    #[test]
    fn every_setting_survives_the_round_trip() {
        let text = r#"
            [agent]
            interval = "1500ms"
            signals = ["futex", "tcp"]
            scope = "/system.slice/nginx.service"
            strict = true
            top = 3
            socket = ""
            max_overhead_percent = 0.5

            [otlp]
            endpoint = "http://collector:4318/otlp"
            protocol = "http/protobuf"
            headers = { "api-key" = "secret" }
            timeout = 2
            temporality = "delta"
            queue = 7
            resource_attributes = { "deployment.environment" = "test", "service.name" = "svc" }

            [prometheus]
            enabled = false

            [kubernetes]
            enrich = "api-server"
            token_file = ""
            refresh = "2m"

            [tuning]
            max_changes_per_hour = 5
        "#;
        let env = [
            ("NODE_NAME", "node-1"),
            ("KUBERNETES_SERVICE_HOST", "fd00::1"),
            ("KUBERNETES_SERVICE_PORT", "6443"),
            (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                "http://logs:4318/v1/logs",
            ),
        ];
        let toml = round_trip(text, &env);
        for line in [
            "interval = \"1500ms\"",
            "signals = [\"tcp\", \"futex\"]",
            "metrics_endpoint = \"http://collector:4318/otlp/v1/metrics\"",
            "logs_endpoint = \"http://logs:4318/v1/logs\"",
            "url = \"https://[fd00::1]:6443\"",
            "node_name = \"node-1\"",
            "token_file = \"\"",
            "refresh = \"2m\"",
            "service_name = \"svc\"",
        ] {
            assert!(toml.lines().any(|l| l == line), "no {line:?} in:\n{toml}");
        }
    }

    #[test]
    fn the_kubelet_without_a_ca_round_trips() {
        round_trip(
            "[kubernetes]\nenrich = \"kubelet\"\nca_file = \"\"\ninsecure_skip_verify = true\n",
            &[("NODE_NAME", "node-2")],
        );
    }

    /// observer.toml and every example of examples/rules, rules included (written as they are,
    /// and what observer understood of them the same after the round trip).
    #[test]
    fn the_repository_s_configurations_round_trip() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = vec![root.join("observer.toml")];
        for entry in std::fs::read_dir(root.join("examples/rules")).unwrap() {
            files.push(entry.unwrap().path());
        }
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let toml = round_trip(&text, &[]);
            let document: toml::Table = toml::from_str(&text).unwrap();
            if document.contains_key("rules") {
                assert!(toml.contains("[[rules]]"), "{}: {toml}", file.display());
                assert!(toml.contains("# rule "), "{}: {toml}", file.display());
            }
        }
    }

    #[test]
    fn durations_are_written_in_the_largest_exact_unit() {
        for (d, text) in [
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_micros(3), "3us"),
            (Duration::from_nanos(1_000_000_001), "1000000001ns"),
        ] {
            assert_eq!(duration(d), text);
            assert_eq!(super::super::parse_duration(text), Ok(d));
        }
    }
}
