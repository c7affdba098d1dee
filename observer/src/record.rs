//! One measurement: read every running signal's maps twice and report what happened between.

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

use crate::{
    ebpf::Loaded,
    signals::{ReadError, ReportOptions, Signal, blockio, futex, lock, runqueue, tcp},
};

/// One read of the maps of the running signals.
#[derive(Default)]
pub struct Snapshot {
    runqueue: Option<runqueue::Raw>,
    blockio: Option<blockio::Raw>,
    tcp: Option<tcp::Raw>,
    lock: Option<lock::Raw>,
    futex: Option<futex::Raw>,
}

impl Snapshot {
    pub fn read(loaded: &Loaded) -> Result<Self, ReadError> {
        let ebpf = &loaded.ebpf;
        let mut s = Self::default();
        for signal in loaded.running() {
            match signal {
                Signal::Runqueue => s.runqueue = Some(runqueue::read(ebpf)?),
                Signal::BlockIo => s.blockio = Some(blockio::read(ebpf)?),
                Signal::Tcp => s.tcp = Some(tcp::read(ebpf)?),
                Signal::Lock => s.lock = Some(lock::read(ebpf)?),
                Signal::Futex => s.futex = Some(futex::read(ebpf)?),
            }
        }
        Ok(s)
    }
}

/// The reports of the signals that ran, in a fixed order.
#[derive(Debug, Default, Serialize)]
pub struct Reports {
    #[serde(rename = "runqueue_latency", skip_serializing_if = "Option::is_none")]
    pub runqueue: Option<runqueue::Report>,
    #[serde(rename = "block_io_latency", skip_serializing_if = "Option::is_none")]
    pub blockio: Option<blockio::Report>,
    #[serde(rename = "tcp_retransmits", skip_serializing_if = "Option::is_none")]
    pub tcp: Option<tcp::Report>,
    #[serde(rename = "lock_contention", skip_serializing_if = "Option::is_none")]
    pub lock: Option<lock::Report>,
    #[serde(rename = "futex_wait", skip_serializing_if = "Option::is_none")]
    pub futex: Option<futex::Report>,
}

impl Reports {
    /// What happened between two snapshots.
    pub fn between(cur: &Snapshot, prev: &Snapshot, opts: &ReportOptions) -> Self {
        fn both<'a, T>(a: &'a Option<T>, b: &'a Option<T>) -> Option<(&'a T, &'a T)> {
            a.as_ref().zip(b.as_ref())
        }
        Self {
            runqueue: both(&cur.runqueue, &prev.runqueue)
                .map(|(c, p)| runqueue::report(c, p, opts)),
            blockio: both(&cur.blockio, &prev.blockio).map(|(c, p)| blockio::report(c, p, opts)),
            tcp: both(&cur.tcp, &prev.tcp).map(|(c, p)| tcp::report(c, p, opts)),
            lock: both(&cur.lock, &prev.lock).map(|(c, p)| lock::report(c, p, opts)),
            futex: both(&cur.futex, &prev.futex).map(|(c, p)| futex::report(c, p, opts)),
        }
    }
}

/// The result of `observer record`, as printed (`--format json` is this, serialised).
#[derive(Debug, Serialize)]
pub struct Record {
    pub duration_s: f64,
    pub signals: Reports,
    /// Signals that were requested but could not run, with why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<&'static str, String>,
}

/// Measures for `duration`, from an already loaded set of programs.
pub fn record(
    loaded: &Loaded,
    duration: Duration,
    opts: &ReportOptions,
) -> Result<Record, ReadError> {
    let start = Snapshot::read(loaded)?;
    let began = std::time::Instant::now();
    std::thread::sleep(duration);
    let end = Snapshot::read(loaded)?;
    let errors = loaded
        .status
        .iter()
        .filter_map(|(sig, s)| s.as_ref().err().map(|e| (sig.key(), e.to_string())))
        .collect();
    Ok(Record {
        duration_s: began.elapsed().as_secs_f64(),
        signals: Reports::between(&end, &start, opts),
        errors,
    })
}
