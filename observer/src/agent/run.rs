//! The agent's main loop: load the programs once, collect every interval, hand each snapshot to
//! every sink, and shut down cleanly on SIGTERM/SIGINT with a final collection and flush.

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use tokio::signal::unix::{SignalKind, signal};

use super::{Sink, collect::Collector, otlp, prometheus, resource, socket};
use crate::{
    check,
    config::{self, Config},
    ebpf::{self, Loaded},
    signals::Breakdowns,
};

/// How long the final OTLP flush may take at shutdown.
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(config: Config) -> anyhow::Result<()> {
    check::privileges()?;
    let loaded = ebpf::load(&config.agent.signals, &Breakdowns::ALL)?;
    for (signal, status) in &loaded.status {
        if let Err(e) = status {
            if config.agent.strict {
                bail!("signal {signal} cannot run: {e}");
            }
            tracing::warn!("signal {signal} cannot run: {e}");
        }
    }
    if loaded.running().next().is_none() {
        bail!("none of the requested signals can run here; `observer check -v` says why");
    }
    // Two workers: one may be busy reading the maps while the other serves a scrape or sends.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, loaded))
}

async fn serve(config: Config, mut loaded: Loaded) -> anyhow::Result<()> {
    // First: another agent already serving it is the clearest reason not to start.
    let socket = match &config.agent.socket {
        Some(path) => {
            let hello = socket::Hello::of_agent(config.agent.interval, &loaded.status);
            let server = socket::Server::start(path, hello).await?;
            tracing::info!("serving observer top on {}", path.display());
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
    let exporter = if config.otlp.enabled {
        let extra: Vec<(String, String)> = config
            .otlp
            .resource_attributes
            .clone()
            .into_iter()
            .collect();
        let resource = resource::detect(&config.otlp.service_name, &extra);
        let exporter = Arc::new(otlp::Exporter::start(
            otlp_settings(&config.otlp),
            resource,
        )?);
        tracing::info!(endpoint = %config.otlp.endpoint, protocol = %config.otlp.protocol, "exporting over OTLP");
        sinks.push(exporter.clone());
        Some(exporter)
    } else {
        None
    };
    if config.prometheus.enabled {
        let server = prometheus::Server::start(config.prometheus.listen).await?;
        tracing::info!(
            "serving Prometheus metrics on http://{}/metrics",
            server.local_addr()
        );
        sinks.push(Arc::new(server));
    }

    let mut collector = Collector::new(&loaded, config.agent.top)?;
    let mut tick = tokio::time::interval(config.agent.interval);
    // A late collection is not made up for with a burst: the next one simply covers more time.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tracing::info!(interval = ?config.agent.interval, "collecting");
    loop {
        tokio::select! {
            _ = tick.tick() => collect(&mut collector, &mut loaded, &sinks, socket.as_ref()),
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => tracing::warn!(
                "SIGHUP: reloading the configuration is not supported; restart observer to apply a new one"
            ),
        }
    }
    tracing::info!("shutting down: final collection and flush");
    collect(&mut collector, &mut loaded, &sinks, socket.as_ref());
    if let Some(exporter) = exporter
        && let Err(e) = exporter.shutdown(FLUSH_DEADLINE).await
    {
        tracing::warn!("final OTLP flush incomplete: {e}");
    }
    // Dropping `loaded` detaches the programs.
    Ok(())
}

/// One collection, offered to every sink. A failed read is logged and retried next interval:
/// the kernel keeps counting, so the next snapshot still holds everything. The socket of
/// `observer top` gets the interval's deltas rather than the snapshot (see [`socket`]).
fn collect(
    collector: &mut Collector,
    loaded: &mut Loaded,
    sinks: &[Arc<dyn Sink>],
    socket: Option<&socket::Server>,
) {
    let extra = sinks.iter().flat_map(|s| s.metrics()).collect();
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
        }
        Err(e) => tracing::error!("collection failed, retrying next interval: {e}"),
    }
}

fn otlp_settings(c: &config::OtlpConfig) -> otlp::Settings {
    otlp::Settings {
        endpoint: c.endpoint.clone(),
        protocol: c.protocol,
        headers: c.headers.clone().into_iter().collect(),
        timeout: c.timeout,
        temporality: c.temporality,
        queue: c.queue,
    }
}
