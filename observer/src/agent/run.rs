//! The agent's main loop: load the programs once, collect every interval, hand each snapshot to
//! every sink, and shut down cleanly on SIGTERM/SIGINT with a final collection and flush.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use tokio::signal::unix::{SignalKind, signal};

use super::{
    Sink,
    budget::Budget,
    collect::Collector,
    metrics::{Snapshot, Value},
    otlp, prometheus, resource, socket,
};
use crate::{
    caps, check,
    config::{self, Config},
    ebpf::{self, Loaded},
    rules::{
        engine::Engine,
        journal::{Outcome, Record},
        spec::{Mode, Tuning},
    },
    scope::Scope,
    signals::Breakdowns,
};

/// How long the final OTLP flush may take at shutdown.
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// How long running `exec` actions may take to finish at shutdown.
const EXEC_DEADLINE: Duration = Duration::from_secs(5);

/// Runs the agent until SIGTERM or SIGINT, judging `tuning`'s rules on every snapshot.
pub fn run(config: Config, tuning: Tuning) -> anyhow::Result<()> {
    check::privileges()?;
    // Settings that change nothing are said, never ignored silently.
    for note in &config.otlp.notes {
        tracing::warn!("{note}");
    }
    // Before loading anything: the journal and the state must be usable, and what a previous
    // run left changed is put back first.
    let mut recovered = Vec::new();
    let engine = if tuning.rules.is_empty() {
        None
    } else {
        let mut engine = Engine::new(tuning)?;
        recovered = engine.recover();
        tracing::debug!(rules = engine.rules().len(), "rules loaded");
        Some(engine)
    };
    // Sidecar mode: resolved before loading, so a scope that does not resolve stops the agent
    // rather than silently watching the whole host.
    let scope = config
        .agent
        .scope
        .as_ref()
        .map(Scope::resolve)
        .transpose()?;
    if let Some(scope) = &scope {
        tracing::debug!(scope = %scope.describe(), id = scope.id, "every signal restricted to this cgroup");
    }
    let loaded = ebpf::load_scoped(&config.agent.signals, &Breakdowns::ALL, scope.as_ref())?;
    for (signal, status) in &loaded.status {
        if let Err(e) = status {
            if config.agent.strict {
                bail!("signal {signal} cannot run: {e}");
            }
            tracing::warn!("signal {signal} cannot run: {e}");
            // The message points at -v for the kernel's reasons: -v shows info.
            if let Some(log) = e.verifier_log() {
                tracing::info!("verifier log of signal {signal}:\n{log}");
            }
        }
    }
    if loaded.running().next().is_none() {
        bail!("none of the requested signals can run here; `observer check -v` says why");
    }
    let started = Started {
        attached: attached(&loaded, scope.as_ref()),
        kept: drop_capabilities(&config, engine.as_ref()),
    };
    // Two workers: one may be busy reading the maps while the other serves a scrape or sends.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, loaded, engine, recovered, started))
}

/// `attached runqueue, futex on the whole host` (or `in cgroup PATH (id N)`), and the signals
/// that could not run (already logged with why).
fn attached(loaded: &Loaded, scope: Option<&Scope>) -> String {
    let running: Vec<&str> = loaded.running().map(|s| s.name()).collect();
    let mut text = format!("attached {}", running.join(", "));
    match scope {
        Some(scope) => text.push_str(&format!(
            " in cgroup {} (id {}): every signal restricted to this cgroup",
            scope.describe(),
            scope.id
        )),
        None => text.push_str(" on the whole host"),
    }
    let failed: Vec<&str> = loaded
        .status
        .iter()
        .filter(|(_, status)| status.is_err())
        .map(|(signal, _)| signal.name())
        .collect();
    if !failed.is_empty() {
        text.push_str(&format!(" (not {}: see above)", failed.join(", ")));
    }
    text
}

/// What was done before the runtime started, for the line that says, once and at info, what
/// this agent attached and where it exports.
struct Started {
    /// From [`attached`].
    attached: String,
    /// From [`drop_capabilities`].
    kept: Option<String>,
}

async fn serve(
    config: Config,
    mut loaded: Loaded,
    mut engine: Option<Engine>,
    recovered: Vec<Record>,
    started: Started,
) -> anyhow::Result<()> {
    // Where this agent exports, in the order the line says it.
    let mut exports = Vec::new();
    let mut top = None;
    // First: another agent already serving it is the clearest reason not to start.
    let socket = match &config.agent.socket {
        Some(path) => {
            let mut hello = socket::Hello::of_agent(config.agent.interval, &loaded.status);
            hello.scope = loaded.scope.clone();
            let server = socket::Server::start(path, hello).await?;
            top = Some(format!("serving observer top at {}", path.display()));
            if !config.otlp.enabled && !config.prometheus.enabled {
                tracing::warn!(
                    "OTLP and Prometheus are both off: only observer top, on {}, sees what \
                     this agent collects",
                    path.display()
                );
            }
            Some(server)
        }
        None => None,
    };
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
    // What describes this agent: OTLP's resource, Prometheus' target_info.
    let extra: Vec<(String, String)> = config
        .otlp
        .resource_attributes
        .clone()
        .into_iter()
        .collect();
    let resource = resource::detect(&config.otlp.service_name, loaded.scope.as_deref(), &extra);
    let exporter = if config.otlp.enabled {
        let exporter = Arc::new(otlp::Exporter::start(
            otlp_settings(&config.otlp),
            resource.clone(),
        )?);
        let (metrics, logs) = (&config.otlp.metrics, &config.otlp.logs);
        exports.push(format!(
            "over OTLP ({}, compression {}) to {}",
            metrics.protocol, metrics.compression, metrics.endpoint
        ));
        if engine.is_some() {
            exports.push(format!(
                "rule decisions as OTLP log records to {}",
                logs.endpoint
            ));
        }
        sinks.push(exporter.clone());
        Some(exporter)
    } else {
        None
    };
    if config.prometheus.enabled {
        let server = prometheus::Server::start(config.prometheus.listen, &resource).await?;
        exports.push(format!(
            "to Prometheus at http://{}/metrics",
            server.local_addr()
        ));
        sinks.push(Arc::new(server));
    }
    let mut line = vec![started.attached];
    if !exports.is_empty() {
        line.push(format!("exporting {}", exports.join(", ")));
    }
    line.extend(top);

    // Pod names: listed in the background; series get them once the first list is in.
    if let Some(settings) = &config.kubernetes {
        line.push(format!(
            "pod names from the {} at {} every {:?}",
            settings.source, settings.url, settings.refresh
        ));
        crate::kubernetes::install(crate::kubernetes::start(settings.clone())?);
    }
    if let Some(engine) = &engine {
        let enforce = engine
            .rules()
            .iter()
            .filter(|r| r.mode == Mode::Enforce)
            .count();
        line.push(format!(
            "{} rules ({enforce} in enforce mode)",
            engine.rules().len()
        ));
    }
    // What the start-up restored, now that it can be exported.
    report(recovered, exporter.as_deref());
    let mut collector = Collector::new(&loaded, config.agent.top);
    // Its first measurement window opens now and closes before the first collection.
    let mut budget = Budget::new(
        &loaded,
        config.agent.interval,
        config.agent.max_overhead_percent.map(config::Percent::get),
    );
    budget.poll(&mut loaded);
    let mut tick = tokio::time::interval(config.agent.interval);
    // A late collection is not made up for with a burst: the next one simply covers more time.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    // The one line a healthy start logs at the default level (the tests wait for "collecting").
    line.extend(started.kept);
    tracing::info!(
        "collecting every {:?}: {}",
        config.agent.interval,
        line.join("; ")
    );
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(budget.deadline().into()) => budget.poll(&mut loaded),
            _ = tick.tick() => {
                budget.poll(&mut loaded);
                if let Some(snapshot) = collect(&mut collector, &mut loaded, &budget, &sinks, socket.as_ref())
                    && let Some(engine) = &mut engine
                {
                    report(engine.evaluate(&snapshot, Instant::now()), exporter.as_deref());
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => tracing::warn!(
                "SIGHUP: reloading the configuration is not supported; restart observer to apply a new one"
            ),
        }
    }
    tracing::info!("shutting down: final collection and flush");
    collect(
        &mut collector,
        &mut loaded,
        &budget,
        &sinks,
        socket.as_ref(),
    );
    if let Some(engine) = &mut engine {
        // Every change is put back before the final flush, so the records of that go out too.
        report(engine.shutdown(EXEC_DEADLINE), exporter.as_deref());
    }
    if let Some(exporter) = exporter
        && let Err(e) = exporter.shutdown(FLUSH_DEADLINE).await
    {
        tracing::warn!("final OTLP flush incomplete: {e}");
    }
    // Dropping `loaded` detaches the programs.
    Ok(())
}

/// Least privilege: with the programs attached and what a previous run changed restored, keep
/// only the capabilities the rest of the run needs (see [`caps`]). Returns what was kept, for
/// the line at start; a capability needed but not held is a warning naming what will fail.
fn drop_capabilities(config: &Config, engine: Option<&Engine>) -> Option<String> {
    let actions = || {
        engine
            .into_iter()
            .flat_map(|e| e.rules())
            .flat_map(|r| r.actions.iter())
    };
    let needs = caps::Needs {
        bpf_stats: config.agent.max_overhead_percent.is_some(),
        actions: actions().flat_map(|a| a.capabilities()).collect(),
        exec: actions().any(|a| a.kind() == "exec"),
        low_port: config.prometheus.enabled && (1..1024).contains(&config.prometheus.listen.port()),
    };
    let keep = caps::needed(&needs);
    let list: Vec<caps::Cap> = keep.iter().map(|(c, _)| *c).collect();
    match caps::drop_all_but(&list, needs.exec) {
        Ok(after) => {
            tracing::debug!(
                bounding = %caps::names(after.bounding),
                "capabilities dropped after attaching"
            );
            for (cap, why) in keep {
                if after.effective & (1 << cap.0) == 0 {
                    tracing::warn!(
                        "this process does not have {cap}, needed for {why}: that will fail. \
                         Grant it where observer is started (systemd: a drop-in of \
                         deploy/observer.service.d/; Kubernetes: an overlay of \
                         deploy/kubernetes/overlays/)"
                    );
                } else {
                    tracing::debug!("keeping {cap}: {why}");
                }
            }
            Some(format!(
                "capabilities after attaching: {}",
                caps::names(after.effective)
            ))
        }
        Err(e) => {
            tracing::warn!("{e}; running with the capabilities it started with");
            None
        }
    }
}

/// One collection, offered to every sink. A failed read is logged and retried next interval:
/// the kernel keeps counting, so the next snapshot still holds everything. The socket of
/// `observer top` gets the interval's deltas rather than the snapshot (see [`socket`]).
fn collect(
    collector: &mut Collector,
    loaded: &mut Loaded,
    budget: &Budget,
    sinks: &[Arc<dyn Sink>],
    socket: Option<&socket::Server>,
) -> Option<Arc<Snapshot>> {
    let extra = budget
        .metrics()
        .into_iter()
        .chain(sinks.iter().flat_map(|s| s.metrics()))
        .collect();
    match collector.collect(loaded, extra) {
        Ok(snapshot) => {
            let snapshot = Arc::new(snapshot);
            for sink in sinks {
                sink.offer(snapshot.clone());
            }
            if let Some(socket) = socket
                && let Some((deltas, elapsed)) = collector.take_interval()
            {
                socket.offer(deltas, elapsed, snapshot.time);
            }
            Some(snapshot)
        }
        Err(e) => {
            tracing::error!("collection failed, retrying next interval: {e}");
            None
        }
    }
}

/// Each decision (already in the journal) as one log line and as an OTLP log record.
fn report(records: Vec<Record>, exporter: Option<&otlp::Exporter>) {
    if records.is_empty() {
        return;
    }
    for r in &records {
        let line = format!(
            "rule {} [{}] {} {}: {} {}",
            r.rule,
            r.mode,
            r.event,
            r.target,
            r.decision(),
            r.message
        );
        // Fields left empty leave runs of spaces.
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if r.outcome.is_some_and(Outcome::is_problem) {
            tracing::warn!(id = %r.id, "{line}");
        } else {
            tracing::info!(id = %r.id, "{line}");
        }
    }
    if let Some(exporter) = exporter {
        exporter.offer_logs(records.iter().map(decision_log).collect());
    }
}

/// The OTLP event name of the rules' decisions.
pub const DECISION_EVENT: &str = "observer.tuning.decision";

/// An audit record as an OTLP log record: the same fields as in the journal, as attributes.
fn decision_log(r: &Record) -> otlp::LogRecord {
    let outcome = r.outcome.map_or("", Outcome::name);
    let mut attributes: Vec<(String, Value)> = vec![
        ("observer.decision.id".into(), r.id.clone().into()),
        ("observer.rule".into(), r.rule.clone().into()),
        ("observer.mode".into(), r.mode.clone().into()),
        ("observer.event".into(), r.event.clone().into()),
        ("observer.outcome".into(), outcome.into()),
    ];
    let texts = [
        ("observer.condition", &r.condition),
        ("observer.target", &r.target),
        ("observer.action", &r.action),
        ("observer.knob", &r.knob),
        ("observer.unit", &r.unit),
    ];
    for (key, value) in texts {
        if !value.is_empty() {
            attributes.push((key.into(), value.clone().into()));
        }
    }
    for (key, value) in [("observer.before", &r.before), ("observer.after", &r.after)] {
        if let Some(v) = value {
            attributes.push((key.into(), v.clone().into()));
        }
    }
    // Numbers as text: the attribute model here has no floats, and the journal keeps them exact.
    for (key, value) in [
        ("observer.observed", r.observed),
        ("observer.threshold", r.threshold),
        ("observer.window_seconds", r.window_seconds),
    ] {
        if let Some(v) = value {
            attributes.push((key.into(), v.to_string().into()));
        }
    }
    if let Some(e) = &r.experiment {
        attributes.push(("observer.experiment".into(), e.to_string().into()));
    }
    let body = format!(
        "rule {} {} {}: {}{}",
        r.rule,
        r.event,
        r.target,
        r.decision(),
        if r.message.is_empty() {
            String::new()
        } else {
            format!(": {}", r.message)
        }
    );
    otlp::LogRecord {
        time: SystemTime::now(),
        severity: if r.outcome.is_some_and(Outcome::is_problem) {
            otlp::Severity::Warn
        } else {
            otlp::Severity::Info
        },
        event_name: DECISION_EVENT,
        body,
        attributes,
    }
}

fn otlp_settings(c: &config::OtlpConfig) -> otlp::Settings {
    otlp::Settings {
        metrics: c.metrics.clone(),
        logs: c.logs.clone(),
        temporality: c.temporality,
        queue: c.queue,
        log_queue: otlp::DEFAULT_LOG_QUEUE,
    }
}
