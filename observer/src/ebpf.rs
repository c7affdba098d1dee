//! Loading observer's kernel programs and attaching the requested signals.

use std::{collections::BTreeMap, time::Instant};

use aya::{
    Btf as AyaBtf, Ebpf, EbpfError, EbpfLoader,
    maps::{CgroupArray, MapError},
    programs::{BtfTracePoint, ProgramError},
};
use observer_common::{floor, scope as common_scope};

use crate::{
    btf::{Btf, BtfError},
    scope::Scope,
    signals::{Breakdowns, Global, GlobalsError, Signal, offset_global},
};

/// The object built from observer-ebpf by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));

/// Why a signal is not running.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("this kernel has no BTF tracepoint {0} (is the subsystem compiled in?)")]
    NoTracepoint(&'static str),
    #[error(transparent)]
    Layout(#[from] GlobalsError),
    #[error("program {program} failed to load or attach to {tracepoint}: {}", short(.source))]
    Program {
        program: &'static str,
        tracepoint: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "{REJECT_SIGNAL_ENV} could not make the kernel refuse this signal: every program loads \
         against {0}"
    )]
    NotRejected(&'static str),
}

impl SignalError {
    /// The verifier's log, when the kernel rejected a program.
    pub fn verifier_log(&self) -> Option<String> {
        match self {
            Self::Program {
                source: ProgramError::LoadError { verifier_log, .. },
                ..
            } => Some(verifier_log.to_string()),
            _ => None,
        }
    }
}

/// ProgramError's message, without the verifier log it embeds (shown with `-v` instead).
fn short(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError { io_error, .. } => {
            format!("the kernel refused it ({io_error}); run with -v for the verifier log")
        }
        other => other.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("reading the kernel's BTF for attaching: {0}")]
    AyaBtf(#[source] aya::BtfError),
    #[error("loading observer's eBPF object: {0}")]
    Object(#[source] Box<EbpfError>),
    #[error("giving the kernel programs the scope's cgroup: {0}")]
    Scope(#[source] MapError),
    #[error(transparent)]
    Attach(#[from] SignalError),
}

/// The loaded object, with the status of every requested signal.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub status: BTreeMap<Signal, Result<(), SignalError>>,
    /// The scope every signal is restricted to ([`Scope::describe`]); `None`: the whole host.
    pub scope: Option<String>,
    /// Taken just before the first program was attached, while every map was still as the
    /// kernel created it: where the first measurement window starts
    /// ([`crate::record::Snapshot::zero`]).
    pub attached: Instant,
}

impl Loaded {
    pub fn running(&self) -> impl Iterator<Item = Signal> + '_ {
        self.status
            .iter()
            .filter(|(_, s)| s.is_ok())
            .map(|(sig, _)| *sig)
    }
}

/// What a signal needs from this kernel, checked without loading anything (and so without
/// privileges): its tracepoints exist and the struct fields its programs read are where BTF
/// says. Gives the values of the programs' globals.
pub fn preflight(btf: &Btf, signal: Signal, by: &Breakdowns) -> Result<Vec<Global>, SignalError> {
    if let Some((_, tp)) = signal
        .programs()
        .iter()
        .find(|(_, tp)| !btf.has_tracepoint(tp))
    {
        return Err(SignalError::NoTracepoint(tp));
    }
    Ok(signal.globals(btf, by)?)
}

/// Loads the object and attaches every signal in `signals` it can. A signal that cannot run
/// is reported in `status`; the others keep working.
pub fn load(signals: &[Signal], by: &Breakdowns) -> Result<Loaded, LoadError> {
    load_scoped(signals, by, None)
}

/// [`load`], with every signal restricted to `scope` when there is one (sidecar mode).
pub fn load_scoped(
    signals: &[Signal],
    by: &Breakdowns,
    scope: Option<&Scope>,
) -> Result<Loaded, LoadError> {
    let btf = Btf::from_sys_fs()?;
    let mut status = BTreeMap::new();
    let mut globals = Vec::new();
    for &signal in signals {
        match preflight(&btf, signal, by) {
            Ok(g) => globals.extend(g),
            Err(e) => {
                status.insert(signal, Err(e));
            }
        }
    }
    if let Some(scope) = scope {
        globals.push(Global::U32(common_scope::GLOBAL_ON, 1));
        globals.push(Global::U64(common_scope::GLOBAL_ID, scope.id));
        // Only TCP reads these (the socket's cgroup): without them it cannot be scoped, and so
        // cannot run, but the others can.
        if signals.contains(&Signal::Tcp) && !status.contains_key(&Signal::Tcp) {
            match socket_cgroup_globals(&btf) {
                Ok(g) => globals.extend(g),
                Err(e) => {
                    status.insert(Signal::Tcp, Err(e.into()));
                }
            }
        }
    }

    let mut loader = EbpfLoader::new();
    // Task storage maps are only used by the programs; aya has no userspace type for them.
    loader.allow_unsupported_maps();
    for global in &globals {
        match global {
            Global::U32(name, v) => loader.override_global(name, v, true),
            Global::U64(name, v) => loader.override_global(name, v, true),
            Global::I64(name, v) => loader.override_global(name, v, true),
        };
    }
    let mut ebpf = loader
        .load(OBJECT)
        .map_err(|e| LoadError::Object(Box::new(e)))?;

    // Before anything is attached: until the slot is set a scoped program counts nothing.
    if let Some(scope) = scope {
        let mut cgroups: CgroupArray<_> = ebpf
            .map_mut(common_scope::CGROUP_MAP)
            .ok_or_else(|| MapError::InvalidName {
                name: common_scope::CGROUP_MAP.into(),
            })
            .and_then(TryInto::try_into)
            .map_err(LoadError::Scope)?;
        cgroups
            .set(0, std::os::fd::AsFd::as_fd(&scope.file), 0)
            .map_err(LoadError::Scope)?;
    }

    let aya_btf = AyaBtf::from_sys_fs().map_err(LoadError::AyaBtf)?;
    let reject = signal_to_reject();
    let attached = Instant::now();
    for &signal in signals {
        if status.contains_key(&signal) {
            continue;
        }
        let result = if reject == Some(signal) {
            load_rejected(&mut ebpf, &aya_btf, signal)
        } else {
            attach(&mut ebpf, &aya_btf, signal)
        };
        if result.is_err() {
            detach(&mut ebpf, signal);
        }
        status.insert(signal, result);
    }
    Ok(Loaded {
        ebpf,
        status,
        scope: scope.map(Scope::describe),
        attached,
    })
}

/// The offsets the TCP program's scope check reads: a socket's cgroup and that cgroup's
/// ancestors' ids (observer_common::scope).
fn socket_cgroup_globals(btf: &Btf) -> Result<Vec<Global>, GlobalsError> {
    Ok(vec![
        offset_global(
            btf,
            common_scope::GLOBAL_SK_CGROUP,
            "sock",
            "sk_cgrp_data.cgroup",
            8,
        )?,
        offset_global(btf, common_scope::GLOBAL_CGROUP_LEVEL, "cgroup", "level", 4)?,
        Global::U32(
            common_scope::GLOBAL_CGROUP_ANCESTORS,
            btf.member_offset("cgroup", "ancestors")?,
        ),
        offset_global(btf, common_scope::GLOBAL_CGROUP_KN, "cgroup", "kn", 8)?,
        offset_global(btf, common_scope::GLOBAL_KN_ID, "kernfs_node", "id", 8)?,
    ])
}

/// Test-only fault injection, read only here: `OBSERVER_TESTONLY_REJECT_SIGNAL=<signal>` makes
/// the kernel refuse that signal's programs, so the fault-injection tests (tests/tests/faults.rs)
/// can check that the other signals keep running and that the failure is logged and exported.
/// The failure is the kernel's own: each program is loaded against [`REJECT_TARGET`], a
/// tracepoint with a single argument, and the verifier rejects a program that reads a second
/// one ("func 'sched_wakeup' doesn't have 2-th argument", or whichever it reads first), exactly as it rejects any
/// program it cannot accept. Nothing is attached in this mode. The name says what it is for, so
/// that nobody sets it by accident; the agent warns when it is set.
pub const REJECT_SIGNAL_ENV: &str = "OBSERVER_TESTONLY_REJECT_SIGNAL";
/// Every kernel observer supports has it (a scheduler tracepoint as old as `sched_switch`),
/// with one argument.
const REJECT_TARGET: &str = "sched_wakeup";

/// The signal [`REJECT_SIGNAL_ENV`] names, if any.
fn signal_to_reject() -> Option<Signal> {
    let value = std::env::var(REJECT_SIGNAL_ENV).ok()?;
    match value.parse() {
        Ok(signal) => {
            tracing::warn!(
                "{REJECT_SIGNAL_ENV}={value} is set: signal {value} is made to fail on purpose \
                 (a switch for observer's own tests)"
            );
            Some(signal)
        }
        Err(e) => {
            tracing::warn!("{REJECT_SIGNAL_ENV} ignored: {e}");
            None
        }
    }
}

/// [`REJECT_SIGNAL_ENV`]: loads each program of `signal` against [`REJECT_TARGET`] and returns
/// the kernel's refusal. A program the kernel accepts there (it reads only the first argument)
/// is unloaded again; if every one is accepted, the injection cannot work for this signal and
/// says so rather than pretending.
fn load_rejected(ebpf: &mut Ebpf, btf: &AyaBtf, signal: Signal) -> Result<(), SignalError> {
    for &(program, _) in signal.programs() {
        let err = |source| SignalError::Program {
            program,
            tracepoint: REJECT_TARGET,
            source,
        };
        let prog = tracepoint_program(ebpf, program).map_err(err)?;
        prog.load(REJECT_TARGET, btf).map_err(err)?;
        prog.unload().map_err(err)?;
    }
    Err(SignalError::NotRejected(REJECT_TARGET))
}

/// Loads the object and attaches only the floor's empty programs on `hooks` (tracepoints of
/// observer_common::floor::PROGRAMS), for `observer floor`: what any program costs on them.
pub fn load_floor(hooks: &[&str]) -> Result<Ebpf, LoadError> {
    let mut loader = EbpfLoader::new();
    // The object's task storage maps are created with it, though no floor program uses them.
    loader.allow_unsupported_maps();
    let mut ebpf = loader
        .load(OBJECT)
        .map_err(|e| LoadError::Object(Box::new(e)))?;
    let btf = AyaBtf::from_sys_fs().map_err(LoadError::AyaBtf)?;
    let programs: Vec<_> = floor::PROGRAMS
        .iter()
        .filter(|(_, tracepoint)| hooks.contains(tracepoint))
        .copied()
        .collect();
    attach_programs(&mut ebpf, &btf, &programs)?;
    Ok(ebpf)
}

fn attach(ebpf: &mut Ebpf, btf: &AyaBtf, signal: Signal) -> Result<(), SignalError> {
    attach_programs(ebpf, btf, signal.programs())
}

fn attach_programs(
    ebpf: &mut Ebpf,
    btf: &AyaBtf,
    programs: &[(&'static str, &'static str)],
) -> Result<(), SignalError> {
    for &(program, tracepoint) in programs {
        let err = |source| SignalError::Program {
            program,
            tracepoint,
            source,
        };
        let prog = tracepoint_program(ebpf, program).map_err(err)?;
        prog.load(tracepoint, btf).map_err(err)?;
        prog.attach().map_err(err)?;
    }
    Ok(())
}

/// The object's `tp_btf` program named `program`.
fn tracepoint_program<'a>(
    ebpf: &'a mut Ebpf,
    program: &str,
) -> Result<&'a mut BtfTracePoint, ProgramError> {
    ebpf.program_mut(program)
        .ok_or(ProgramError::NotLoaded)
        .and_then(TryInto::try_into)
}

/// Unloads whatever part of a signal did attach, so a half-working signal measures nothing.
fn detach(ebpf: &mut Ebpf, signal: Signal) {
    for &(program, _) in signal.programs() {
        if let Ok(prog) = tracepoint_program(ebpf, program) {
            let _ = prog.unload();
        }
    }
}
