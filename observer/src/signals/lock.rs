//! Kernel lock contention, per lock class.

use aya::Ebpf;
use observer_common::{
    Hist,
    lock::{CLASS_NAMES, CLASSES, COUNTERS_MAP, Counter, HIST_MAP},
};
use serde::Serialize;

use super::{ReadError, ReportOptions, counter, hist_at, read_percpu};
use crate::hist::{Latency, Summary, count, hist_add};

pub struct Raw {
    hist: Vec<Vec<Hist>>,
    counters: Vec<Vec<u64>>,
}

pub fn read(ebpf: &Ebpf) -> Result<Raw, ReadError> {
    Ok(Raw {
        hist: read_percpu(ebpf, HIST_MAP)?,
        counters: read_percpu(ebpf, COUNTERS_MAP)?,
    })
}

/// The maps as loaded, before any program ran: the first read's baseline.
pub fn zero() -> Raw {
    Raw {
        hist: Vec::new(),
        counters: Vec::new(),
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub latency: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_class: Option<Vec<ClassRow>>,
    /// contention_end for a different lock than the wait began on (not timed).
    pub mismatched: u64,
}

#[derive(Debug, Serialize)]
pub struct ClassRow {
    pub class: &'static str,
    #[serde(flatten)]
    pub summary: Summary,
}

/// What happened between two reads.
pub struct Delta {
    /// Indexed by lock class.
    pub by_class: Vec<Hist>,
    pub mismatched: u64,
}

pub fn delta(cur: &Raw, prev: &Raw) -> Delta {
    Delta {
        by_class: (0..CLASSES as u32)
            .map(|c| hist_at(&cur.hist, &prev.hist, c))
            .collect(),
        mismatched: counter(&cur.counters, &prev.counters, Counter::Mismatched as u32),
    }
}

pub fn report(d: &Delta, opts: &ReportOptions) -> Report {
    let mut all = Hist::ZERO;
    d.by_class.iter().for_each(|h| hist_add(&mut all, h));
    let by_class = opts.by.lock.then(|| {
        let mut rows: Vec<ClassRow> = d
            .by_class
            .iter()
            .zip(CLASS_NAMES)
            .filter(|(h, _)| count(h) > 0)
            .map(|(h, class)| ClassRow {
                class,
                summary: Summary::of(h),
            })
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.summary.count));
        rows.truncate(opts.top);
        rows
    });
    Report {
        latency: Latency::of(&all),
        by_class,
        mismatched: d.mismatched,
    }
}
