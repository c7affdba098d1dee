//! Run-queue latency, by cgroup and by process.

use std::collections::HashMap;

use aya::Ebpf;
use observer_common::{
    Hist, ProcessHist, ProcessKey,
    runqueue::{
        BY_PROCESS_MAP, COUNTERS_MAP, Counter, GLOBAL_ATTRIBUTE, GLOBAL_NIVCSW, GLOBAL_NVCSW,
        HIST_MAP,
    },
};
use serde::Serialize;

use super::{
    Breakdowns, Global, GlobalsError, Process, ProcessRaw, ReadError, ReportOptions, counter,
    hist_at, offset_global, process_name, top_by,
};
use crate::{
    btf::Btf,
    cgroup::{self, Workload},
    hist::{Latency, SparseHist, Summary, keyed_delta},
};

pub fn globals(btf: &Btf, by: &Breakdowns) -> Result<Vec<Global>, GlobalsError> {
    Ok(vec![
        Global::U32(GLOBAL_ATTRIBUTE, u32::from(by.cgroup || by.process)),
        // The task's context-switch counts, which tell a stale start of a wait from a live one
        // (observer-ebpf/src/runqueue.rs). `unsigned long`: 8 bytes on 64-bit kernels.
        offset_global(btf, GLOBAL_NVCSW, "task_struct", "nvcsw", 8)?,
        offset_global(btf, GLOBAL_NIVCSW, "task_struct", "nivcsw", 8)?,
    ])
}

/// One read of this signal's maps.
pub type Raw = ProcessRaw;

pub fn read(ebpf: &Ebpf) -> Result<Raw, ReadError> {
    ProcessRaw::read(ebpf, HIST_MAP, COUNTERS_MAP, BY_PROCESS_MAP)
}

/// The maps as loaded, before any program ran: the first read's baseline.
pub fn zero() -> Raw {
    ProcessRaw::zero(BY_PROCESS_MAP)
}

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub latency: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_cgroup: Option<Vec<CgroupRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_process: Option<Vec<ProcessRow>>,
    pub dropped: Dropped,
}

#[derive(Debug, Serialize)]
pub struct CgroupRow {
    pub cgroup_id: u64,
    /// What the cgroup belongs to: its path (`cgroup`, "?" if the cgroup is gone), systemd unit
    /// and slice, container and pod, as far as the path tells.
    #[serde(flatten)]
    pub workload: Workload,
    #[serde(flatten)]
    pub summary: Summary,
}

#[derive(Debug, Serialize)]
pub struct ProcessRow {
    pub tgid: u32,
    pub comm: String,
    #[serde(flatten)]
    pub summary: Summary,
}

#[derive(Debug, Serialize)]
pub struct Dropped {
    /// Waits not attributed to a cgroup and process: the (cgroup, process) map was full.
    /// Both breakdowns come from that one map, so both miss the same waits.
    pub by_cgroup: u64,
    pub by_process: u64,
}

/// What happened between two reads.
pub struct Delta {
    /// Waits not in `by_process` (breakdowns off, or the map was full).
    pub unattributed: Hist,
    pub by_process: HashMap<ProcessKey, Process>,
    /// Waits the kernel could not attribute because the map was full.
    pub dropped: u64,
}

pub fn delta(cur: &Raw, prev: &Raw) -> Delta {
    Delta {
        unattributed: hist_at(&cur.hist, &prev.hist, 0),
        by_process: process_deltas(&cur.by_process, &prev.by_process),
        dropped: counter(
            &cur.counters,
            &prev.counters,
            Counter::ProcessOverflow as u32,
        ),
    }
}

pub fn report(d: &Delta, opts: &ReportOptions) -> Report {
    Report {
        latency: Latency::of(&total(&d.unattributed, &d.by_process)),
        by_cgroup: opts.by.cgroup.then(|| cgroup_rows(&d.by_process, opts.top)),
        by_process: opts
            .by
            .process
            .then(|| process_rows(&d.by_process, opts.top)),
        dropped: Dropped {
            by_cgroup: d.dropped,
            by_process: d.dropped,
        },
    }
}

/// The total of a signal whose per-CPU histogram holds only what its per-process map did not.
pub(crate) fn total(unattributed: &Hist, deltas: &HashMap<ProcessKey, Process>) -> Hist {
    let mut total = *unattributed;
    deltas.values().for_each(|p| p.hist.add_to(&mut total));
    total
}

/// What each (cgroup, process) gained between two reads; only those that gained anything.
pub(crate) fn process_deltas(
    cur: &HashMap<ProcessKey, Process>,
    prev: &HashMap<ProcessKey, Process>,
) -> HashMap<ProcessKey, Process> {
    keyed_delta(
        cur,
        prev,
        |c, p| Process {
            comm: c.comm,
            hist: SparseHist::delta(&c.hist, p.map(|p| &p.hist)),
        },
        |p| p.hist.count() == 0,
    )
}

/// Sums per-(cgroup, process) histograms by `group`.
fn group_by<G: Eq + std::hash::Hash>(
    deltas: &HashMap<ProcessKey, Process>,
    group: impl Fn(&ProcessKey) -> G,
) -> HashMap<G, ProcessHist> {
    let mut out: HashMap<G, ProcessHist> = HashMap::new();
    for (key, p) in deltas {
        let entry = out.entry(group(key)).or_insert(ProcessHist {
            comm: p.comm,
            hist: Hist::ZERO,
        });
        p.hist.add_to(&mut entry.hist);
    }
    out
}

/// Top processes by count (a process in several cgroups is summed).
pub(crate) fn process_rows(deltas: &HashMap<ProcessKey, Process>, top: usize) -> Vec<ProcessRow> {
    let rows = group_by(deltas, |k| k.tgid)
        .into_iter()
        .map(|(tgid, p)| (tgid, p.comm, Summary::of(&p.hist)))
        .collect();
    top_by(rows, top, |r| r.2.count, |r| r.0)
        .into_iter()
        .map(|(tgid, comm, summary)| ProcessRow {
            tgid,
            comm: process_name(tgid, &comm),
            summary,
        })
        .collect()
}

/// Top cgroups by count, with their workloads.
pub(crate) fn cgroup_rows(deltas: &HashMap<ProcessKey, Process>, top: usize) -> Vec<CgroupRow> {
    let rows = group_by(deltas, |k| k.cgroup)
        .into_iter()
        .map(|(id, p)| (id, Summary::of(&p.hist)))
        .collect();
    let rows: Vec<(u64, Summary)> = top_by(rows, top, |r| r.1.count, |r| r.0);
    let mut workloads = cgroup::resolve_all(&rows.iter().map(|r| r.0).collect::<Vec<_>>());
    rows.into_iter()
        .map(|(cgroup_id, summary)| CgroupRow {
            cgroup_id,
            workload: workloads
                .remove(&cgroup_id)
                .unwrap_or_else(Workload::unknown),
            summary,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use observer_common::hist::slot;

    use super::*;
    use crate::hist::count;

    fn process(comm: &str, values: &[u64]) -> Process {
        let mut p = ProcessHist::ZERO;
        p.comm[..comm.len()].copy_from_slice(comm.as_bytes());
        for &v in values {
            p.hist.buckets[slot(v)] += 1;
            p.hist.sum += v;
        }
        Process::of(&p)
    }

    fn key(cgroup: u64, tgid: u32) -> ProcessKey {
        ProcessKey {
            cgroup,
            tgid,
            _pad: 0,
        }
    }

    /// Process ids that cannot exist (above PID_MAX_LIMIT), so names come from the kernel's comm.
    const A: u32 = 4_000_000_001;
    const B: u32 = 4_000_000_002;

    #[test]
    fn breakdowns_group_by_process_and_by_cgroup_and_sum_to_the_total() {
        let prev = HashMap::from([(key(7, A), process("a", &[100]))]);
        let cur = HashMap::from([
            // A gained two waits in cgroup 7 and has three in cgroup 8 (it moved).
            (key(7, A), process("a", &[100, 200, 300])),
            (key(8, A), process("a", &[10, 20, 30])),
            (key(8, B), process("b", &[5])),
        ]);
        let deltas = process_deltas(&cur, &prev);
        let mut unattributed = Hist::ZERO;
        unattributed.buckets[slot(1000)] = 4;
        unattributed.sum = 4000;
        let t = total(&unattributed, &deltas);
        assert_eq!(count(&t), 2 + 3 + 1 + 4);
        assert_eq!(t.sum, 500 + 60 + 5 + 4000);

        let procs = process_rows(&deltas, 10);
        let summary: Vec<_> = procs
            .iter()
            .map(|r| (r.tgid, r.comm.as_str(), r.summary.count))
            .collect();
        assert_eq!(summary, [(A, "a", 5), (B, "b", 1)]);
        assert_eq!(process_rows(&deltas, 1).len(), 1);

        let cgroups = cgroup_rows(&deltas, 10);
        let summary: Vec<_> = cgroups
            .iter()
            .map(|r| (r.cgroup_id, r.summary.count))
            .collect();
        assert_eq!(summary, [(8, 4), (7, 2)]);
        // Ids that are no cgroup on this machine have no path.
        assert!(cgroups.iter().all(|r| r.workload == Workload::unknown()));
    }
}
