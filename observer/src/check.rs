//! What this machine supports: privileges, BTF, and each signal's tracepoints and programs.

use std::fmt::Write as _;

use std::collections::BTreeMap;

use crate::{
    btf::{Btf, SYS_FS_VMLINUX},
    ebpf::{self, SignalError},
    signals::{Breakdowns, Signal},
};

/// `CAP_PERFMON` and `CAP_BPF` (include/uapi/linux/capability.h): what loading and attaching
/// tracing programs needs, short of root (kernels >= 5.8).
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Missing privileges, as one sentence naming the fix.
#[derive(Debug, thiserror::Error)]
#[error(
    "loading eBPF programs needs root, or the CAP_BPF and CAP_PERFMON capabilities (this \
     process has {have}): run observer as root (sudo observer ...), or grant them with \
     `setcap cap_bpf,cap_perfmon+ep $(command -v observer)`"
)]
pub struct PrivilegeError {
    have: String,
}

/// Checks that this process may load and attach tracing programs.
pub fn privileges() -> Result<(), PrivilegeError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_BPF) && has(CAP_PERFMON) {
        return Ok(());
    }
    let have = match (has(CAP_BPF), has(CAP_PERFMON)) {
        (true, _) => "CAP_BPF only",
        (_, true) => "CAP_PERFMON only",
        _ => "neither",
    };
    Err(PrivilegeError { have: have.into() })
}

/// The outcome of `observer check`: a report to print, and whether every signal can run.
pub struct Outcome {
    pub text: String,
    pub all_ok: bool,
}

/// Checks each requested signal: what needs no privileges (BTF, tracepoints, struct fields)
/// always; then, with privileges, loads and attaches it for real (and detaches).
pub fn check(signals: &[Signal], verbose: bool) -> anyhow::Result<Outcome> {
    let mut text = String::new();
    let mut all_ok = true;
    let privileged = match privileges() {
        Ok(()) => {
            let _ = writeln!(text, "privileges: ok");
            true
        }
        Err(e) => {
            all_ok = false;
            let _ = writeln!(text, "privileges: MISSING: {e}");
            false
        }
    };
    let btf = match Btf::from_sys_fs() {
        Ok(btf) => {
            let _ = writeln!(text, "kernel BTF: ok ({SYS_FS_VMLINUX})");
            btf
        }
        Err(e) => {
            let _ = writeln!(text, "kernel BTF: MISSING: {e:#}");
            return Ok(Outcome {
                text,
                all_ok: false,
            });
        }
    };
    let mut status: BTreeMap<Signal, Result<(), SignalError>> = signals
        .iter()
        .map(|&s| (s, ebpf::preflight(&btf, s, &Breakdowns::ALL).map(drop)))
        .collect();
    if privileged {
        status = ebpf::load(signals, &Breakdowns::ALL)?.status;
    }
    for (signal, status) in &status {
        let tracepoints: Vec<&str> = signal.programs().iter().map(|(_, tp)| *tp).collect();
        match status {
            Ok(()) => {
                let what = if privileged { "ok     " } else { "ok?    " };
                let _ = writeln!(
                    text,
                    "{:<9} {what} {} [{}]",
                    signal.name(),
                    signal.description(),
                    tracepoints.join(", ")
                );
            }
            Err(e) => {
                all_ok = false;
                let _ = writeln!(
                    text,
                    "{:<9} FAILED  {}: {e}",
                    signal.name(),
                    signal.description()
                );
                if let Some(log) = e.verifier_log().filter(|_| verbose) {
                    let _ = writeln!(text, "verifier log:\n{log}");
                }
            }
        }
    }
    if !privileged {
        let _ = writeln!(
            text,
            "(ok? = tracepoints and struct fields present; loading was not tried without privileges)"
        );
    }
    Ok(Outcome { text, all_ok })
}
