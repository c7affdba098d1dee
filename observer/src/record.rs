//! One measurement: read every running signal's maps twice and report what happened between.

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

use crate::{
    ebpf::Loaded,
    signals::{ReadError, ReportOptions, Signal, blockio, futex, lock, runqueue, tcp},
};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("enabling kernel.bpf_stats: {0}")]
    Stats(#[source] aya::sys::SyscallError),
}

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

    /// The maps of the running signals as the kernel created them, all zero: the baseline of
    /// the first read. Every count since the programs were attached ([`Loaded::attached`]) is
    /// in the delta from it; a first read taken after attaching would miss what happened in
    /// between (a busy host retransmits or switches many times in those milliseconds).
    pub fn zero(loaded: &Loaded) -> Self {
        let mut s = Self::default();
        for signal in loaded.running() {
            match signal {
                Signal::Runqueue => s.runqueue = Some(runqueue::zero()),
                Signal::BlockIo => s.blockio = Some(blockio::zero()),
                Signal::Tcp => s.tcp = Some(tcp::zero()),
                Signal::Lock => s.lock = Some(lock::zero()),
                Signal::Futex => s.futex = Some(futex::zero()),
            }
        }
        s
    }
}

impl Snapshot {
    /// Deletes the kernel's breakdown entries that are no longer needed, once the delta from
    /// `prev` to this read holds their counts: those of processes that have exited, and TCP
    /// endpoints idle since `prev` ([`tcp::Raw::forget_idle`]). Without this the bounded maps
    /// fill up over a long run and new keys go unattributed.
    pub fn forget_stale(
        &mut self,
        ebpf: &mut aya::Ebpf,
        prev: &Snapshot,
    ) -> Result<usize, ReadError> {
        let mut n = 0;
        if let Some(raw) = &mut self.runqueue {
            n += raw.forget_exited(ebpf)?;
        }
        if let Some(raw) = &mut self.futex {
            n += raw.forget_exited(ebpf)?;
        }
        if let (Some(raw), Some(prev)) = (&mut self.tcp, &prev.tcp) {
            n += raw.forget_idle(ebpf, prev)?;
        }
        Ok(n)
    }

    /// (map name, entries, capacity) of every bounded breakdown map read: how full each is.
    pub fn map_entries(&self) -> Vec<(&'static str, usize, u32)> {
        use observer_common::{blockio, lock::futex as f, runqueue as r, tcp as t};
        let mut out = Vec::new();
        if let Some(raw) = &self.runqueue {
            out.push((r::BY_PROCESS_MAP, raw.entries(), r::BY_PROCESS_ENTRIES));
        }
        if let Some(raw) = &self.blockio {
            out.push((
                blockio::BY_DISK_MAP,
                raw.entries(),
                blockio::BY_DISK_ENTRIES,
            ));
        }
        if let Some(raw) = &self.tcp {
            out.push((t::BY_REMOTE_MAP, raw.entries(), t::BY_REMOTE_ENTRIES));
        }
        if let Some(raw) = &self.futex {
            out.push((f::BY_PROCESS_MAP, raw.entries(), f::BY_PROCESS_ENTRIES));
        }
        out
    }
}

/// What happened between two snapshots, per running signal.
#[derive(Default)]
pub struct Deltas {
    pub runqueue: Option<runqueue::Delta>,
    pub blockio: Option<blockio::Delta>,
    pub tcp: Option<tcp::Delta>,
    pub lock: Option<lock::Delta>,
    pub futex: Option<futex::Delta>,
}

impl Deltas {
    pub fn between(cur: &Snapshot, prev: &Snapshot) -> Self {
        fn both<'a, T>(a: &'a Option<T>, b: &'a Option<T>) -> Option<(&'a T, &'a T)> {
            a.as_ref().zip(b.as_ref())
        }
        Self {
            runqueue: both(&cur.runqueue, &prev.runqueue).map(|(c, p)| runqueue::delta(c, p)),
            blockio: both(&cur.blockio, &prev.blockio).map(|(c, p)| blockio::delta(c, p)),
            tcp: both(&cur.tcp, &prev.tcp).map(|(c, p)| tcp::delta(c, p)),
            lock: both(&cur.lock, &prev.lock).map(|(c, p)| lock::delta(c, p)),
            futex: both(&cur.futex, &prev.futex).map(|(c, p)| futex::delta(c, p)),
        }
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
    pub fn of(d: &Deltas, opts: &ReportOptions) -> Self {
        Self {
            runqueue: d.runqueue.as_ref().map(|d| runqueue::report(d, opts)),
            blockio: d.blockio.as_ref().map(|d| blockio::report(d, opts)),
            tcp: d.tcp.as_ref().map(|d| tcp::report(d, opts)),
            lock: d.lock.as_ref().map(|d| lock::report(d, opts)),
            futex: d.futex.as_ref().map(|d| futex::report(d, opts)),
        }
    }
}

/// What one kernel program cost while recording (kernel.bpf_stats).
#[derive(Debug, Serialize)]
pub struct ProgramCost {
    pub program: &'static str,
    pub tracepoint: &'static str,
    pub runs: u64,
    pub run_time_ns: u64,
    pub ns_per_run: f64,
}

/// Cumulative (program, tracepoint, runs, run time in ns) of the loaded ones of `programs`.
type Runs = Vec<(&'static str, &'static str, u64, u64)>;

fn program_runs<'a>(
    ebpf: &aya::Ebpf,
    programs: impl IntoIterator<Item = &'a (&'static str, &'static str)>,
) -> Runs {
    programs
        .into_iter()
        .filter_map(|&(program, tracepoint)| {
            let info = ebpf.program(program)?.info().ok()?;
            let ns = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
            Some((program, tracepoint, info.run_count(), ns))
        })
        .collect()
}

/// What each program cost between two reads of [`program_runs`].
fn program_costs(before: &Runs, after: Runs) -> Vec<ProgramCost> {
    after
        .into_iter()
        .map(|(program, tracepoint, runs, ns)| {
            let (runs0, ns0) = before
                .iter()
                .find(|r| r.0 == program)
                .map_or((0, 0), |r| (r.2, r.3));
            let (runs, run_time_ns) = (runs - runs0, ns - ns0);
            ProgramCost {
                program,
                tracepoint,
                runs,
                run_time_ns,
                ns_per_run: if runs == 0 {
                    0.0
                } else {
                    run_time_ns as f64 / runs as f64
                },
            }
        })
        .collect()
}

/// The layout of `record --format json` ([`Record::schema_version`]): raised when a key is
/// removed or renamed or changes meaning; new keys do not raise it.
pub const SCHEMA_VERSION: u32 = 1;

/// The result of `observer record`, as printed (`--format json` is this, serialised).
#[derive(Debug, Serialize)]
pub struct Record {
    /// [`SCHEMA_VERSION`], first, so a consumer can refuse a layout it does not know.
    pub schema_version: u32,
    pub duration_s: f64,
    /// The cgroup every signal was restricted to (`--cgroup`); absent for the whole host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub signals: Reports,
    /// Per-program cost, with `--stats`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub programs: Option<Vec<ProgramCost>>,
    /// Signals that were requested but could not run, with why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<&'static str, String>,
}

/// Measures for `duration`, from an already loaded set of programs. With `stats`, the kernel
/// also times every program run (about 50 ns more per run, so only on request).
pub fn record(
    loaded: &Loaded,
    duration: Duration,
    opts: &ReportOptions,
    stats: bool,
) -> Result<Record, RecordError> {
    let stats_on = stats
        .then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime))
        .transpose()
        .map_err(RecordError::Stats)?;
    let attached = || loaded.running().flat_map(|signal| signal.programs().iter());
    let runs_before = program_runs(&loaded.ebpf, attached());
    let start = Snapshot::zero(loaded);
    let began = loaded.attached;
    wait_or_interrupted(duration.saturating_sub(began.elapsed()));
    let end = Snapshot::read(loaded)?;
    let programs =
        stats_on.map(|_fd| program_costs(&runs_before, program_runs(&loaded.ebpf, attached())));
    let errors = loaded
        .status
        .iter()
        .filter_map(|(sig, s)| s.as_ref().err().map(|e| (sig.key(), e.to_string())))
        .collect();
    Ok(Record {
        schema_version: SCHEMA_VERSION,
        duration_s: began.elapsed().as_secs_f64(),
        scope: None,
        signals: Reports::of(&Deltas::between(&end, &start), opts),
        programs,
        errors,
    })
}

/// `observer floor`: what the floor's empty programs (observer_common::floor, attached by
/// [`crate::ebpf::load_floor`]) cost per run over `duration` or until SIGINT, as a record with
/// no signals and every program's cost.
pub fn floor(ebpf: &aya::Ebpf, duration: Duration) -> Result<Record, RecordError> {
    let _stats_on = aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(RecordError::Stats)?;
    let runs_before = program_runs(ebpf, observer_common::floor::PROGRAMS);
    let began = std::time::Instant::now();
    wait_or_interrupted(duration);
    Ok(Record {
        schema_version: SCHEMA_VERSION,
        duration_s: began.elapsed().as_secs_f64(),
        scope: None,
        signals: Reports::default(),
        programs: Some(program_costs(
            &runs_before,
            program_runs(ebpf, observer_common::floor::PROGRAMS),
        )),
        errors: BTreeMap::new(),
    })
}

/// Waits for `duration`, or until SIGINT or SIGTERM: like runqlat, a recording stopped early
/// (Ctrl-C) still reports what it measured, over the time it actually ran.
fn wait_or_interrupted(duration: Duration) {
    let deadline = std::time::Instant::now() + duration;
    // SAFETY: plain libc calls on a local signal set. The signals are blocked in this thread
    // (observer record runs on one thread), so they queue for sigtimedwait instead of killing
    // the process.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            let timeout = libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: libc::c_long::from(left.subsec_nanos() as i32),
            };
            // A signal number: stop now. -1 with EAGAIN (time is up) or EINTR: look again.
            if libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) > 0 {
                return;
            }
        }
    }
}
