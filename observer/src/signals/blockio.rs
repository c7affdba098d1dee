//! Block I/O latency: device time (issue -> complete) and queue time (insert -> issue), per
//! operation and per (disk, operation).

use std::collections::HashMap;

use aya::Ebpf;
use observer_common::{
    Hist,
    blockio::{
        BY_DISK_MAP, COUNTERS_MAP, Counter, DiskHists, DiskKey, GLOBAL_DISK_FIRST_MINOR,
        GLOBAL_DISK_MAJOR, GLOBAL_Q_DISK, GLOBAL_RQ_CMD_FLAGS, GLOBAL_RQ_Q, HIST_MAP, MINOR_BITS,
        OP_NAMES, OPS, STAGE_DEVICE, STAGE_QUEUE, hist_index,
    },
};
use serde::Serialize;

use super::{
    Global, GlobalsError, ReadError, ReportOptions, counter, hist_at, offset_global, read_hash,
    read_percpu, top_by,
};
use crate::{
    btf::Btf,
    hist::{Latency, Summary, count, hist_add, hist_delta, keyed_delta},
};

/// `rq->cmd_flags`, `rq->q`, `q->disk`, `disk->major`, `disk->first_minor`.
pub fn globals(btf: &Btf) -> Result<Vec<Global>, GlobalsError> {
    Ok(vec![
        offset_global(btf, GLOBAL_RQ_CMD_FLAGS, "request", "cmd_flags", 4)?,
        offset_global(btf, GLOBAL_RQ_Q, "request", "q", 8)?,
        offset_global(btf, GLOBAL_Q_DISK, "request_queue", "disk", 8)?,
        offset_global(btf, GLOBAL_DISK_MAJOR, "gendisk", "major", 4)?,
        offset_global(btf, GLOBAL_DISK_FIRST_MINOR, "gendisk", "first_minor", 4)?,
    ])
}

pub struct Raw {
    hist: Vec<Vec<Hist>>,
    counters: Vec<Vec<u64>>,
    by_disk: HashMap<DiskKey, DiskHists>,
}

pub fn read(ebpf: &Ebpf) -> Result<Raw, ReadError> {
    Ok(Raw {
        hist: read_percpu(ebpf, HIST_MAP)?,
        counters: read_percpu(ebpf, COUNTERS_MAP)?,
        by_disk: read_hash(ebpf, BY_DISK_MAP)?,
    })
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// Device time over all disks and operations.
    #[serde(flatten)]
    pub device: Latency,
    /// Queue time: only requests that went through an I/O scheduler insert.
    pub queue: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_op: Option<Vec<OpRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_disk: Option<Vec<DiskRow>>,
    pub dropped: Dropped,
}

#[derive(Debug, Serialize)]
pub struct OpRow {
    pub op: &'static str,
    pub device: Summary,
    pub queue: Summary,
}

#[derive(Debug, Serialize)]
pub struct DiskRow {
    /// "major:minor"
    pub disk: String,
    pub major: u32,
    pub minor: u32,
    pub op: &'static str,
    pub device: Summary,
    pub queue: Summary,
}

#[derive(Debug, Serialize)]
pub struct Dropped {
    /// Requests not attributed to a disk: the disk map was full.
    pub by_disk: u64,
    /// Requests not timed: the in-flight map was full.
    pub inflight: u64,
}

pub fn report(cur: &Raw, prev: &Raw, opts: &ReportOptions) -> Report {
    let stage = |stage| {
        let per_op: Vec<Hist> = (0..OPS as u32)
            .map(|op| hist_at(&cur.hist, &prev.hist, hist_index(stage, op)))
            .collect();
        let mut all = Hist::ZERO;
        per_op.iter().for_each(|h| hist_add(&mut all, h));
        (all, per_op)
    };
    let (device, device_ops) = stage(STAGE_DEVICE);
    let (queue, queue_ops) = stage(STAGE_QUEUE);
    let by_op = opts.by.op.then(|| {
        device_ops
            .iter()
            .zip(&queue_ops)
            .zip(OP_NAMES)
            .filter(|((d, q), _)| count(d) + count(q) > 0)
            .map(|((d, q), op)| OpRow {
                op,
                device: Summary::of(d),
                queue: Summary::of(q),
            })
            .collect()
    });
    let by_disk = opts.by.disk.then(|| {
        let d = keyed_delta(
            &cur.by_disk,
            &prev.by_disk,
            |c, p| {
                let p = p.unwrap_or(&DiskHists::ZERO);
                DiskHists {
                    queue: hist_delta(&c.queue, &p.queue),
                    device: hist_delta(&c.device, &p.device),
                }
            },
            |h| count(&h.queue) + count(&h.device) == 0,
        );
        let rows = d.into_iter().collect();
        top_by(
            rows,
            opts.top,
            |(_, h)| count(&h.device).max(count(&h.queue)),
            |(k, _)| (k.dev, k.op),
        )
        .into_iter()
        .map(|(key, h)| {
            let (major, minor) = (key.dev >> MINOR_BITS, key.dev & ((1 << MINOR_BITS) - 1));
            DiskRow {
                disk: format!("{major}:{minor}"),
                major,
                minor,
                op: OP_NAMES.get(key.op as usize).copied().unwrap_or("other"),
                device: Summary::of(&h.device),
                queue: Summary::of(&h.queue),
            }
        })
        .collect()
    });
    Report {
        device: Latency::of(&device),
        queue: Latency::of(&queue),
        by_op,
        by_disk,
        dropped: Dropped {
            by_disk: counter(&cur.counters, &prev.counters, Counter::DiskOverflow as u32),
            inflight: counter(
                &cur.counters,
                &prev.counters,
                Counter::InflightOverflow as u32,
            ),
        },
    }
}
