//! User-space futex waits, per process.

use std::collections::HashMap;

use aya::Ebpf;
use observer_common::{
    Hist, ProcessKey,
    lock::futex::{
        BY_PROCESS_MAP, COUNTERS_MAP, Counter, GLOBAL_NR_FUTEX, GLOBAL_NR_FUTEX_WAIT,
        GLOBAL_NR_FUTEX_WAITV, GLOBAL_REGS_ARG1, GLOBAL_REGS_NR, HIST_MAP,
    },
    task,
};
use serde::Serialize;

use super::{
    Global, GlobalsError, Process, ProcessRaw, ReadError, ReportOptions, counter, hist_at,
    offset_global,
    runqueue::{ProcessRow, process_deltas, process_rows, total},
};
use crate::{btf::Btf, hist::Latency};

/// x86_64 syscall numbers of futex, futex_waitv and futex_wait (new in 6.7: on older kernels
/// the number is unused, so it never matches), the `pt_regs` field holding a syscall's
/// second argument (the futex op), and the one holding the syscall number saved at entry,
/// which tells the programs which call a task blocked in.
#[cfg(target_arch = "x86_64")]
const ARCH: (i64, i64, i64, &str, &str) = (202, 449, 455, "si", "orig_ax");
#[cfg(not(target_arch = "x86_64"))]
compile_error!("the futex signal knows only x86_64's syscall numbers and registers so far");

pub fn globals(btf: &Btf) -> Result<Vec<Global>, GlobalsError> {
    let (futex, waitv, wait, arg1, nr) = ARCH;
    Ok(vec![
        Global::I64(GLOBAL_NR_FUTEX, futex),
        Global::I64(GLOBAL_NR_FUTEX_WAITV, waitv),
        Global::I64(GLOBAL_NR_FUTEX_WAIT, wait),
        offset_global(btf, GLOBAL_REGS_ARG1, "pt_regs", arg1, 8)?,
        offset_global(btf, GLOBAL_REGS_NR, "pt_regs", nr, 8)?,
        offset_global(btf, task::GLOBAL_TGID, "task_struct", "tgid", 4)?,
        offset_global(btf, task::GLOBAL_COMM, "task_struct", "comm", 16)?,
        offset_global(btf, task::GLOBAL_CGROUPS, "task_struct", "cgroups", 8)?,
        offset_global(btf, task::GLOBAL_CSS_SET_DFL_CGRP, "css_set", "dfl_cgrp", 8)?,
        offset_global(btf, task::GLOBAL_CGROUP_KN, "cgroup", "kn", 8)?,
        offset_global(btf, task::GLOBAL_KN_ID, "kernfs_node", "id", 8)?,
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
    pub by_process: Option<Vec<ProcessRow>>,
    pub dropped: Dropped,
}

#[derive(Debug, Serialize)]
pub struct Dropped {
    /// Waits not attributed to a process: the process map was full.
    pub by_process: u64,
}

/// What happened between two reads.
pub struct Delta {
    /// Waits not in `by_process` (the map was full).
    pub unattributed: Hist,
    pub by_process: HashMap<ProcessKey, Process>,
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
        by_process: opts
            .by
            .process
            .then(|| process_rows(&d.by_process, opts.top)),
        dropped: Dropped {
            by_process: d.dropped,
        },
    }
}
