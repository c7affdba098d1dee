//! The agent's TLS to the collector when something is wrong or changes, end to end: the real
//! `observer run` exporting every second through nginx (TLS, `tests/src/tls.rs`) to rotel,
//! with certificates made by `openssl`, configured only with the standard
//! `OTEL_EXPORTER_OTLP_*` variables.
//!
//! - A CA that did not sign the collector's certificate: nothing is sent, the agent says why
//!   once (however often it retries) and keeps its batches; once the CA file is right, without
//!   a restart, the queued batches arrive.
//! - Certificates rotated while the agent runs: a renewed client certificate is presented from
//!   the next export on, the collector's own connection kept; a collector that moves to a new
//!   CA fails once, and the agent's renewed files (swapped at once, as Kubernetes updates a
//!   mounted secret) are picked up.
//! - What gzip saves per export, measured as nginx counts the requests (README, docs/otlp.md).
//!
//! Every metric arriving over TLS is checked in `tests/agent.rs`. These need root and BPF,
//! rotel, nginx and openssl, and fail without them (outside CI, `OBSERVER_TESTS_ALLOW_SKIP=1`
//! skips).

use std::{
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use observer_tests::{
    agent::Agent,
    observer_ok, require_root,
    rotel::{self, Export, Rotel, TempDir},
    skip_or_fail,
    tls::{self, Mounted, Pki, Proxy, ProxyTls},
};

/// The reason a prerequisite is missing: a failure, or where allowed a skip.
macro_rules! need {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(reason) => skip_or_fail!("{reason}"),
        }
    };
}

/// Metrics only, on this host: what is exported does not matter here, only whether and how.
const CONFIG: &str = "[prometheus]\nenabled = false\n";

/// The agent's log line of a failure that starts (or whose reason changes).
const FAILED: &str = "OTLP export failed";
const RECOVERED: &str = "OTLP export recovered";

/// Prints a line that shows even where the harness captures a passing test's output.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// rotel, nginx in front of it, and what the agent is configured with.
struct Setup {
    dir: TempDir,
    rotel: Rotel,
    proxy: Proxy,
    config: String,
}

impl Setup {
    fn start(
        name: &str,
        proxy_tls: impl FnOnce(&Path) -> Result<ProxyTls, String>,
    ) -> Result<Self, String> {
        let bin = rotel::find_binary()?;
        let nginx = tls::nginx_binary()?;
        let dir = TempDir::new(name);
        let rotel = Rotel::start(&bin, &dir.0, "rotel", rotel::free_ports());
        let proxy = Proxy::start(&nginx, &dir.0, &rotel, &proxy_tls(&dir.0)?)?;
        let config = dir.0.join("observer.toml");
        std::fs::write(&config, CONFIG).unwrap();
        Ok(Self {
            config: path(&config),
            dir,
            rotel,
            proxy,
        })
    }

    /// The agent exporting every second over gRPC through the proxy, trusting `mounted`'s CA
    /// and presenting its client certificate if it has one.
    fn agent(
        &self,
        mounted: &Mounted,
        client: bool,
        extra: &[(&str, &str)],
    ) -> Result<Agent, observer_tests::Exited> {
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.proxy.grpc_endpoint()),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&mounted.ca())),
        ];
        if client {
            env.push((
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                path(&mounted.client_cert()),
            ));
            env.push(("OTEL_EXPORTER_OTLP_CLIENT_KEY", path(&mounted.client_key())));
        }
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra);
        Agent::start(&["--config", &self.config, "--interval", "1s"], &env).ready()
    }
}

/// Polls `done` every 50 ms for up to `timeout`; fails saying `what` and showing `state`.
fn wait_until(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
    state: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "no {what} within {timeout:?}:\n{}",
            state()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines of `log` that contain `what`.
fn lines<'a>(log: &'a str, what: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(what)).collect()
}

/// When export `e` was collected (its gauge's timestamp), in ns since the epoch.
fn collected_at(e: &Export) -> Option<u64> {
    let m = e.metric("observer.collection.duration")?;
    m.points.first().map(|p| p.time)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn a_wrong_ca_sends_nothing_says_why_once_and_the_fixed_file_delivers_what_was_queued() {
    require_root!();
    let mut pki = None;
    let setup = need!(Setup::start("tls-wrong-ca", |dir| {
        let p = Pki::new(dir, "collector-ca")?;
        let server = p.server("collector")?;
        pki = Some(p);
        Ok(ProxyTls {
            server,
            client_ca: None,
        })
    }));
    let pki = pki.unwrap();
    let other = need!(Pki::new(&setup.dir.0, "other-ca"));
    let mut mounted = Mounted::new(&setup.dir.0.join("tls"), &other.ca.cert, None);
    let agent = observer_ok!(setup.agent(&mounted, false, &[]));
    let started = now_ns();
    // Long enough for several retries: after 1 s, then 0.5-1 s, 1-2 s, 2-4 s later.
    std::thread::sleep(Duration::from_secs(6));
    let log = agent.stderr_text();
    assert_eq!(
        setup.proxy.requests(),
        [],
        "nothing may reach the collector"
    );
    assert!(setup.rotel.exports().is_empty());
    let failed = lines(&log, FAILED);
    assert_eq!(failed.len(), 1, "said once, however often retried:\n{log}");
    let expected = format!(
        "invalid peer certificate: UnknownIssuer; the collector's certificate is not signed by \
         the CA in {}; set OTEL_EXPORTER_OTLP_CERTIFICATE (or otlp.certificate) to the CA that \
         signed it",
        path(&mounted.ca())
    );
    assert!(
        failed[0].contains(&expected),
        "{}\nexpected: {expected}",
        failed[0]
    );
    note(&format!(
        "the agent's one line for a wrong CA: {}",
        failed[0]
    ));

    // The right CA, without a restart: the batches kept since the start arrive.
    let fixed = now_ns();
    mounted.update(&pki.ca.cert, None);
    let exports = setup.rotel.wait_for(
        "exports after the CA file was fixed",
        Duration::from_secs(40),
        |e| e.iter().any(|e| collected_at(e).is_some_and(|t| t > fixed)),
    );
    let first = exports.iter().filter_map(collected_at).min().unwrap();
    assert!(
        first < started + 2_000_000_000,
        "the first export that arrived was collected {} ms after the agent started: the \
         batches of the outage were not kept",
        (first - started) / 1_000_000
    );
    // rotel logs a request before it answers, and the agent logs the recovery after.
    wait_until(
        "recovery in the agent's log",
        Duration::from_secs(5),
        || !lines(&agent.stderr_text(), RECOVERED).is_empty(),
        || agent.stderr_text(),
    );
    let log = agent.stderr_text();
    assert_eq!(lines(&log, FAILED).len(), 1, "{log}");
    assert_eq!(lines(&log, RECOVERED).len(), 1, "{log}");
    assert!(setup.proxy.requests().iter().all(|r| r.status == 200));
    agent.terminate_ok();
}

#[test]
fn renewed_client_certificates_and_a_new_ca_are_picked_up_without_a_restart() {
    require_root!();
    let mut pki = None;
    let mut setup = need!(Setup::start("tls-rotation", |dir| {
        let p = Pki::new(dir, "ca-1")?;
        let tls = ProxyTls {
            server: p.server("collector-1")?,
            client_ca: Some(p.ca.cert.clone()),
        };
        pki = Some(p);
        Ok(tls)
    }));
    let pki = pki.unwrap();
    let agent_1 = need!(pki.client("agent-1"));
    let mut mounted = Mounted::new(&setup.dir.0.join("tls"), &pki.ca.cert, Some(&agent_1));
    let agent = observer_ok!(setup.agent(&mounted, true, &[]));
    let clients = |proxy: &Proxy| -> Vec<(u16, String)> {
        proxy
            .requests()
            .into_iter()
            .map(|r| (r.status, r.client))
            .collect()
    };
    let seen = |proxy: &Proxy, client: &str| {
        proxy
            .requests()
            .iter()
            .any(|r| r.status == 200 && r.client == client)
    };
    wait_until(
        "export with agent-1's certificate",
        Duration::from_secs(10),
        || seen(&setup.proxy, "CN=agent-1"),
        || format!("{:?}", clients(&setup.proxy)),
    );

    // Renewed: the next export presents the new certificate, on a new connection, although
    // nginx would have kept the old one open; nothing fails on the way.
    let agent_2 = need!(pki.client("agent-2"));
    mounted.update(&pki.ca.cert, Some(&agent_2));
    let renewed = setup.proxy.requests().len();
    wait_until(
        "export with agent-2's certificate",
        Duration::from_secs(10),
        || seen(&setup.proxy, "CN=agent-2"),
        || format!("{:?}", clients(&setup.proxy)),
    );
    let after = &setup.proxy.requests()[renewed..];
    assert!(after.iter().all(|r| r.status == 200), "{after:?}");
    // At most the export already under way went out with the old certificate.
    let old = after.iter().filter(|r| r.client == "CN=agent-1").count();
    assert!(
        old <= 1,
        "{old} exports with the old certificate after the renewal: {after:?}"
    );
    let log = agent.stderr_text();
    assert_eq!(lines(&log, FAILED), Vec::<&str>::new(), "{log}");

    // The collector moves to a new CA (its certificate, and the CA its clients need): the
    // agent's files are still the old ones, so it fails, once; then its renewed files arrive.
    let pki_2 = need!(Pki::new(&setup.dir.0, "ca-2"));
    need!(setup.proxy.restart(&ProxyTls {
        server: need!(pki_2.server("collector-2")),
        client_ca: Some(pki_2.ca.cert.clone()),
    }));
    wait_until(
        "the failure to be logged",
        Duration::from_secs(10),
        || !lines(&agent.stderr_text(), FAILED).is_empty(),
        || agent.stderr_text(),
    );
    let agent_3 = need!(pki_2.client("agent-3"));
    mounted.update(&pki_2.ca.cert, Some(&agent_3));
    wait_until(
        "export with agent-3's certificate",
        Duration::from_secs(40),
        || seen(&setup.proxy, "CN=agent-3"),
        || format!("{:?}\n{}", clients(&setup.proxy), agent.stderr_text()),
    );
    // nginx logs a request once it relayed the answer, which the agent handles right after.
    wait_until(
        "recovery in the agent's log",
        Duration::from_secs(5),
        || !lines(&agent.stderr_text(), RECOVERED).is_empty(),
        || agent.stderr_text(),
    );
    let log = agent.stderr_text();
    let failed = lines(&log, FAILED);
    assert_eq!(failed.len(), 1, "{log}");
    assert!(failed[0].contains("UnknownIssuer"), "{}", failed[0]);
    assert_eq!(lines(&log, RECOVERED).len(), 1, "{log}");
    agent.terminate_ok();
}

/// The median of `v`.
fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
fn gzip_makes_every_export_several_times_smaller() {
    require_root!();
    let mut pki = None;
    let setup = need!(Setup::start("tls-gzip", |dir| {
        let p = Pki::new(dir, "ca")?;
        let tls = ProxyTls {
            server: p.server("collector")?,
            client_ca: Some(p.ca.cert.clone()),
        };
        pki = Some(p);
        Ok(tls)
    }));
    let pki = pki.unwrap();
    for protocol in ["grpc", "http/protobuf"] {
        // Two agents side by side, on the same host and the same load, told apart by their
        // client certificates: one compresses, the other does not.
        let mut agents = Vec::new();
        for compression in ["gzip", "none"] {
            let name = format!("{}-{compression}", protocol.replace('/', "-"));
            let client = need!(pki.client(&name));
            let mounted = Mounted::new(&setup.dir.0.join(&name), &pki.ca.cert, Some(&client));
            let mut extra = vec![
                ("OTEL_EXPORTER_OTLP_COMPRESSION", compression),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ];
            let http = setup.proxy.http_base();
            if protocol != "grpc" {
                extra.push(("OTEL_EXPORTER_OTLP_ENDPOINT", &http));
            }
            agents.push((name, observer_ok!(setup.agent(&mounted, true, &extra))));
        }
        let sizes = |name: &str| -> Vec<u64> {
            let cn = format!("CN={name}");
            setup
                .proxy
                .requests()
                .into_iter()
                // The first export of each agent holds less: the signals' maps are still
                // filling.
                .filter(|r| r.client == cn && r.status == 200)
                .map(|r| r.bytes)
                .skip(1)
                .collect()
        };
        wait_until(
            "5 exports of each agent",
            Duration::from_secs(20),
            || agents.iter().all(|(name, _)| sizes(name).len() >= 5),
            || format!("{:?}", setup.proxy.requests()),
        );
        let (gzip, none) = (sizes(&agents[0].0), sizes(&agents[1].0));
        let (gzip_median, none_median) = (median(gzip.clone()), median(none.clone()));
        note(&format!(
            "{protocol}: request bytes per export, gzip {gzip:?} (median {gzip_median}), none \
             {none:?} (median {none_median}): {:.1}x smaller",
            none_median as f64 / gzip_median as f64
        ));
        for (name, agent) in agents {
            let requests = setup.proxy.requests();
            let cn = format!("CN={name}");
            let encoding = if name.ends_with("gzip") { "gzip" } else { "" };
            assert!(
                requests
                    .iter()
                    .filter(|r| r.client == cn)
                    .all(|r| r.encoding == encoding),
                "{name}: {requests:?}"
            );
            agent.terminate_ok();
        }
        assert!(
            gzip_median * 2 < none_median,
            "{protocol}: gzip median {gzip_median} bytes, uncompressed {none_median}"
        );
    }
}
