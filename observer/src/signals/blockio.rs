//! Block I/O latency: device time (issue -> complete) and queue time (insert -> issue), per
//! operation and per (disk, operation).

use std::collections::HashMap;

use aya::Ebpf;
use observer_common::{
    Hist,
    blockio::{
        BY_DISK_MAP, COUNTERS_MAP, Counter, DiskHists, DiskKey, GLOBAL_DISK_FIRST_MINOR,
        GLOBAL_DISK_MAJOR, GLOBAL_Q_DISK, GLOBAL_RQ_CMD_FLAGS, GLOBAL_RQ_Q, HIST_MAP, MINOR_BITS,
        OP_NAMES, OPS, STAGE_DEVICE, STAGE_QUEUE, STAGES, hist_index,
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

impl Raw {
    /// Entries in the bounded breakdown map.
    pub fn entries(&self) -> usize {
        self.by_disk.len()
    }
}

pub fn read(ebpf: &Ebpf) -> Result<Raw, ReadError> {
    Ok(Raw {
        hist: read_percpu(ebpf, HIST_MAP)?,
        counters: read_percpu(ebpf, COUNTERS_MAP)?,
        by_disk: read_hash(ebpf, BY_DISK_MAP)?,
    })
}

/// The maps as loaded, before any program ran: the first read's baseline.
pub fn zero() -> Raw {
    Raw {
        hist: Vec::new(),
        counters: Vec::new(),
        by_disk: HashMap::new(),
    }
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

/// What happened between two reads.
pub struct Delta {
    /// `[stage][op]`: latencies not in `by_disk` (the map was full).
    pub unattributed: [[Hist; OPS]; STAGES],
    pub by_disk: HashMap<DiskKey, DiskHists>,
    pub dropped_by_disk: u64,
    pub dropped_inflight: u64,
}

pub fn delta(cur: &Raw, prev: &Raw) -> Delta {
    let stage = |stage| {
        core::array::from_fn(|op| hist_at(&cur.hist, &prev.hist, hist_index(stage, op as u32)))
    };
    Delta {
        unattributed: [stage(STAGE_QUEUE), stage(STAGE_DEVICE)],
        by_disk: keyed_delta(
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
        ),
        dropped_by_disk: counter(&cur.counters, &prev.counters, Counter::DiskOverflow as u32),
        dropped_inflight: counter(
            &cur.counters,
            &prev.counters,
            Counter::InflightOverflow as u32,
        ),
    }
}

impl Delta {
    /// Per operation, both stages: the unattributed latencies plus every disk's.
    pub fn by_op(&self) -> [[Hist; OPS]; STAGES] {
        let mut out = self.unattributed;
        for (key, h) in &self.by_disk {
            let op = (key.op as usize).min(OPS - 1);
            hist_add(&mut out[STAGE_QUEUE][op], &h.queue);
            hist_add(&mut out[STAGE_DEVICE][op], &h.device);
        }
        out
    }
}

/// "major:minor" of a device number.
pub fn disk_name(dev: u32) -> (String, u32, u32) {
    let (major, minor) = (dev >> MINOR_BITS, dev & ((1 << MINOR_BITS) - 1));
    (format!("{major}:{minor}"), major, minor)
}

/// The name of an operation class.
pub fn op_name(op: u32) -> &'static str {
    OP_NAMES.get(op as usize).copied().unwrap_or("other")
}

pub fn report(d: &Delta, opts: &ReportOptions) -> Report {
    let by_op = d.by_op();
    let sum = |stage: usize| {
        let mut all = Hist::ZERO;
        by_op[stage].iter().for_each(|h| hist_add(&mut all, h));
        all
    };
    let op_rows = opts.by.op.then(|| {
        by_op[STAGE_DEVICE]
            .iter()
            .zip(&by_op[STAGE_QUEUE])
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
        top_by(
            d.by_disk.iter().map(|(k, h)| (*k, *h)).collect(),
            opts.top,
            |(_, h)| count(&h.device).max(count(&h.queue)),
            |(k, _)| (k.dev, k.op),
        )
        .into_iter()
        .map(|(key, h)| {
            let (disk, major, minor) = disk_name(key.dev);
            DiskRow {
                disk,
                major,
                minor,
                op: op_name(key.op),
                device: Summary::of(&h.device),
                queue: Summary::of(&h.queue),
            }
        })
        .collect()
    });
    Report {
        device: Latency::of(&sum(STAGE_DEVICE)),
        queue: Latency::of(&sum(STAGE_QUEUE)),
        by_op: op_rows,
        by_disk,
        dropped: Dropped {
            by_disk: d.dropped_by_disk,
            inflight: d.dropped_inflight,
        },
    }
}
