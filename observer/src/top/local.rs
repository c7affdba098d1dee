//! The samples of one interval from the deltas between two reads of the kernel's maps: every
//! key of every breakdown map counts, and each row keeps its own histogram. `observer top` makes
//! them from its own reads, and the agent from its (for the `top` clients of its socket).

use std::collections::HashMap;

use observer_common::{
    Hist, ProcessKey,
    blockio::{OPS, STAGE_DEVICE},
    lock::CLASS_NAMES,
};

use super::app::{Sample, SampleTable, count_table, dropped, hist_table, untimed};
use crate::{
    hist::{SparseHist, hist_add},
    record::Deltas,
    signals::{
        Process, Signal, blockio, process_name, runqueue,
        tcp::{self, RemoteRow},
    },
};

/// The per-signal samples of one interval's deltas, in [`Signal::ALL`] order.
pub fn samples(d: &Deltas) -> Vec<Sample> {
    let mut out = Vec::new();
    if let Some(d) = &d.runqueue {
        let notes = dropped(d.dropped, "process").into_iter().collect();
        out.push(process_sample(
            Signal::Runqueue,
            &d.unattributed,
            &d.by_process,
            notes,
        ));
    }
    if let Some(d) = &d.blockio {
        let by_op = d.by_op();
        let mut total = Hist::ZERO;
        by_op[STAGE_DEVICE]
            .iter()
            .for_each(|h| hist_add(&mut total, h));
        let tables = vec![
            hist_table(
                "disks x ops (device time)",
                d.by_disk
                    .iter()
                    .map(|(k, h)| ((k.dev, k.op), SparseHist::of(&h.device))),
                |keys| {
                    keys.iter()
                        .map(|(dev, op)| {
                            format!("{} {}", blockio::disk_name(*dev).0, blockio::op_name(*op))
                        })
                        .collect()
                },
            ),
            hist_table(
                "ops (device time)",
                (0..OPS).map(|op| (op as u32, SparseHist::of(&by_op[STAGE_DEVICE][op]))),
                |ops| {
                    ops.iter()
                        .map(|op| blockio::op_name(*op).to_owned())
                        .collect()
                },
            ),
        ];
        let notes = [
            dropped(d.dropped_by_disk, "disk"),
            untimed(d.dropped_inflight),
        ];
        out.push(Sample::latency(
            Signal::BlockIo,
            &total,
            tables,
            notes.into_iter().flatten().collect(),
        ));
    }
    if let Some(d) = &d.tcp {
        let rows = d.by_remote.iter().map(|(k, n)| {
            let row = RemoteRow {
                family: tcp::family(k),
                remote_addr: tcp::address(k),
                remote_port: k.rport,
                local_port: k.lport,
                state: tcp::state(k),
                count: *n,
            };
            (remote_name(&row.endpoint(), row.local_port, row.state), *n)
        });
        let count = d
            .by_remote
            .values()
            .fold(d.unattributed, |a, n| a.wrapping_add(*n));
        out.push(Sample {
            signal: Signal::Tcp,
            count,
            hist: None,
            tables: vec![count_table("remote endpoints", rows)],
            notes: dropped(d.unattributed, "remote endpoint")
                .into_iter()
                .collect(),
        });
    }
    if let Some(d) = &d.lock {
        let mut total = Hist::ZERO;
        d.by_class.iter().for_each(|h| hist_add(&mut total, h));
        let table = hist_table(
            "lock classes",
            d.by_class.iter().map(SparseHist::of).enumerate(),
            |classes| {
                classes
                    .iter()
                    .map(|c| CLASS_NAMES.get(*c).copied().unwrap_or("other").to_owned())
                    .collect()
            },
        );
        out.push(Sample::latency(
            Signal::Lock,
            &total,
            vec![table],
            Vec::new(),
        ));
    }
    if let Some(d) = &d.futex {
        let notes = dropped(d.dropped, "process").into_iter().collect();
        out.push(process_sample(
            Signal::Futex,
            &d.unattributed,
            &d.by_process,
            notes,
        ));
    }
    out
}

/// `addr:port :local-port STATE`, the row name of a TCP endpoint.
pub fn remote_name(endpoint: &str, local_port: u16, state: &str) -> String {
    format!("{endpoint} :{local_port} {state}")
}

/// A signal broken down by (cgroup, process) in the kernel (run-queue latency, futex waits):
/// tables of processes and of cgroups.
fn process_sample(
    signal: Signal,
    unattributed: &Hist,
    by_process: &HashMap<ProcessKey, Process>,
    notes: Vec<String>,
) -> Sample {
    let comms: HashMap<u32, [u8; 16]> = by_process.iter().map(|(k, p)| (k.tgid, p.comm)).collect();
    let tables: Vec<SampleTable> = vec![
        hist_table(
            "processes",
            by_process.iter().map(|(k, p)| (k.tgid, p.hist.clone())),
            |tgids| {
                tgids
                    .iter()
                    .map(|t| format!("{t} {}", process_name(*t, &comms[t])))
                    .collect()
            },
        ),
        hist_table(
            "cgroups",
            by_process.iter().map(|(k, p)| (k.cgroup, p.hist.clone())),
            |ids| {
                // The workload (container, pod, unit), else the path.
                let workloads = crate::cgroup::resolve_all(ids);
                ids.iter()
                    .map(|id| workloads.get(id).map_or_else(|| "?".into(), |w| w.name()))
                    .collect()
            },
        ),
    ];
    Sample::latency(
        signal,
        &runqueue::total(unattributed, by_process),
        tables,
        notes,
    )
}
