//! Run-queue latency, by cgroup and by process.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::Ebpf;
use observer_common::{
    Hist, ProcessHist,
    runqueue::{BY_CGROUP_MAP, BY_PROCESS_MAP, COUNTERS_MAP, Counter, HIST_MAP},
};
use serde::Serialize;

use super::{
    ReadError, ReportOptions, counter, hist_at, process_name, read_hash, read_percpu, top_by,
};
use crate::hist::{Latency, Summary, count, hist_delta, keyed_delta};

pub struct Raw {
    hist: Vec<Vec<Hist>>,
    counters: Vec<Vec<u64>>,
    by_cgroup: HashMap<u64, Hist>,
    by_process: HashMap<u32, ProcessHist>,
}

pub fn read(ebpf: &Ebpf) -> Result<Raw, ReadError> {
    Ok(Raw {
        hist: read_percpu(ebpf, HIST_MAP)?,
        counters: read_percpu(ebpf, COUNTERS_MAP)?,
        by_cgroup: read_hash(ebpf, BY_CGROUP_MAP)?,
        by_process: read_hash(ebpf, BY_PROCESS_MAP)?,
    })
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
    /// Path under the cgroup v2 mount, or "?" if the cgroup is gone.
    pub cgroup: String,
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
    /// Waits not attributed to a cgroup: the cgroup map was full.
    pub by_cgroup: u64,
    /// Waits not attributed to a process: the process map was full.
    pub by_process: u64,
}

pub fn report(cur: &Raw, prev: &Raw, opts: &ReportOptions) -> Report {
    let by_cgroup = opts.by.cgroup.then(|| {
        let d = keyed_delta(
            &cur.by_cgroup,
            &prev.by_cgroup,
            |c, p| hist_delta(c, p.unwrap_or(&Hist::ZERO)),
            |h| count(h) == 0,
        );
        let rows = d.iter().map(|(id, h)| (*id, Summary::of(h))).collect();
        let rows: Vec<(u64, Summary)> = top_by(rows, opts.top, |r| r.1.count, |r| r.0);
        let paths = cgroup_paths(rows.iter().map(|r| r.0).collect());
        rows.into_iter()
            .map(|(cgroup_id, summary)| CgroupRow {
                cgroup_id,
                cgroup: paths.get(&cgroup_id).cloned().unwrap_or_else(|| "?".into()),
                summary,
            })
            .collect()
    });
    let by_process = opts
        .by
        .process
        .then(|| process_rows(&cur.by_process, &prev.by_process, opts.top));
    Report {
        latency: Latency::of(&hist_at(&cur.hist, &prev.hist, 0)),
        by_cgroup,
        by_process,
        dropped: Dropped {
            by_cgroup: counter(
                &cur.counters,
                &prev.counters,
                Counter::CgroupOverflow as u32,
            ),
            by_process: counter(
                &cur.counters,
                &prev.counters,
                Counter::ProcessOverflow as u32,
            ),
        },
    }
}

/// Top processes by count from a per-process histogram map read twice.
pub(crate) fn process_rows(
    cur: &HashMap<u32, ProcessHist>,
    prev: &HashMap<u32, ProcessHist>,
    top: usize,
) -> Vec<ProcessRow> {
    let rows = cur
        .iter()
        .filter_map(|(tgid, p)| {
            let d = hist_delta(&p.hist, prev.get(tgid).map_or(&Hist::ZERO, |p| &p.hist));
            (count(&d) > 0).then(|| (*tgid, p.comm, Summary::of(&d)))
        })
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

/// The cgroup v2 mount point.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Paths of the given cgroup ids. On cgroup v2 a cgroup's id is the inode number of its
/// directory, so one walk of the hierarchy finds them.
fn cgroup_paths(mut wanted: Vec<u64>) -> HashMap<u64, String> {
    let mut found = HashMap::new();
    wanted.sort_unstable();
    let mut stack = vec![PathBuf::from(CGROUP_ROOT)];
    while let Some(dir) = stack.pop() {
        if found.len() == wanted.len() {
            break;
        }
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        if wanted.binary_search(&meta.ino()).is_ok() {
            let rel = dir.strip_prefix(CGROUP_ROOT).unwrap_or(Path::new(""));
            found.insert(meta.ino(), format!("/{}", rel.display()));
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        stack.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    found
}
