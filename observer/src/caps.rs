//! Least privilege for the agent: once the programs are loaded and attached, every capability
//! the rest of the run does not need is dropped, from the effective, permitted, inheritable and
//! ambient sets, and (unless an `exec` action may run a command that needs root's powers) from
//! the bounding set, so no later execve can get them back.
//!
//! After attaching, the agent reads and deletes map entries through file descriptors it holds
//! (the bpf(2) commands on an fd check no capability), writes files it owns as uid 0 (journal,
//! state, /proc/sys, /sys/block, cgroup files are owned by root) and serves sockets on
//! unprivileged ports. What it may still need is listed in [`needed`].

use std::{fmt, io};

/// A capability, by its number in include/uapi/linux/capability.h.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cap(pub u32);

impl Cap {
    pub const DAC_READ_SEARCH: Self = Self(2);
    pub const NET_BIND_SERVICE: Self = Self(10);
    pub const NET_ADMIN: Self = Self(12);
    pub const SETPCAP: Self = Self(8);
    pub const SYS_ADMIN: Self = Self(21);
    pub const SYS_NICE: Self = Self(23);
    pub const PERFMON: Self = Self(38);
    pub const BPF: Self = Self(39);

    const NAMES: [(&'static str, Self); 8] = [
        ("CAP_DAC_READ_SEARCH", Self::DAC_READ_SEARCH),
        ("CAP_NET_BIND_SERVICE", Self::NET_BIND_SERVICE),
        ("CAP_NET_ADMIN", Self::NET_ADMIN),
        ("CAP_SETPCAP", Self::SETPCAP),
        ("CAP_SYS_ADMIN", Self::SYS_ADMIN),
        ("CAP_SYS_NICE", Self::SYS_NICE),
        ("CAP_PERFMON", Self::PERFMON),
        ("CAP_BPF", Self::BPF),
    ];
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Self::NAMES.iter().find(|(_, c)| c == self) {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "capability {}", self.0),
        }
    }
}

/// What the agent keeps, and why.
pub struct Needs {
    /// The overhead budget turns BPF statistics on for short windows (BPF_ENABLE_STATS needs
    /// CAP_SYS_ADMIN).
    pub bpf_stats: bool,
    /// What the configured actions need, each with why
    /// (`crate::rules::actions::Action::capabilities`).
    pub actions: Vec<(Cap, &'static str)>,
    /// An `exec` action runs commands: the bounding set stays, so a command run as root has
    /// root's usual powers (it is one the config names, from a root-owned file). Under
    /// no_new_privs (`NoNewPrivileges=yes`, as in deploy/observer.service) execve grants no
    /// more than the agent kept, so there the command has root's files but no capability.
    pub exec: bool,
    /// The Prometheus endpoint listens on a port below 1024.
    pub low_port: bool,
}

/// The capabilities to keep for `needs`, each with the reason.
pub fn needed(needs: &Needs) -> Vec<(Cap, &'static str)> {
    let mut keep = vec![(
        Cap::DAC_READ_SEARCH,
        "naming cgroups: open_by_handle_at resolves a cgroup id without walking the tree",
    )];
    if needs.bpf_stats {
        keep.push((
            Cap::SYS_ADMIN,
            "the overhead budget: BPF_ENABLE_STATS for its measurement windows",
        ));
    }
    if needs.low_port {
        keep.push((
            Cap::NET_BIND_SERVICE,
            "the Prometheus endpoint listens on a port below 1024",
        ));
    }
    for &(cap, why) in &needs.actions {
        if !keep.iter().any(|&(kept, _)| kept == cap) {
            keep.push((cap, why));
        }
    }
    keep
}

/// The capability sets of a process, as `/proc/<pid>/status` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub bounding: u64,
    pub ambient: u64,
}

impl Sets {
    /// The calling thread's sets (capabilities are per thread).
    pub fn current() -> io::Result<Self> {
        Self::of("thread-self")
    }

    /// The sets of `/proc/<pid>` (`self` is the thread group leader's).
    pub fn of(pid: &str) -> io::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("no {name} in status"))
                })
        };
        Ok(Self {
            effective: field("CapEff:")?,
            permitted: field("CapPrm:")?,
            inheritable: field("CapInh:")?,
            bounding: field("CapBnd:")?,
            ambient: field("CapAmb:")?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("dropping capabilities ({step}): {source}")]
pub struct CapError {
    step: &'static str,
    #[source]
    source: io::Error,
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct Header {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`; version 3 takes two, for capabilities 0-31 and 32-63.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const VERSION_3: u32 = 0x2008_0522;

/// Drops every capability but `keep` (those the process has) from the effective, permitted,
/// inheritable and ambient sets, and, unless `keep_bounding`, from the bounding set. Returns
/// the sets after.
///
/// Capabilities belong to threads: this must run while the process has a single thread (the
/// agent calls it before starting its runtime), so that every later thread inherits the
/// reduced sets; otherwise it refuses.
pub fn drop_all_but(keep: &[Cap], keep_bounding: bool) -> Result<Sets, CapError> {
    let err = |step| move |source| CapError { step, source };
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(err("reading /proc/self/status"))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse::<u32>().ok());
    if threads != Some(1) {
        return Err(err("checking the process has one thread")(
            io::Error::other(format!(
                "it has {threads:?} threads; the others would keep their capabilities"
            )),
        ));
    }
    let before = Sets::current().map_err(err("reading /proc/self/status"))?;
    let mask = keep.iter().fold(0u64, |m, c| m | (1 << c.0)) & before.permitted;
    // SAFETY: prctl with these arguments takes no pointers.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(err("clearing the ambient set")(io::Error::last_os_error()));
    }
    if !keep_bounding && before.effective & (1 << Cap::SETPCAP.0) != 0 {
        // Needs CAP_SETPCAP, so before the sets below lose it.
        for cap in 0..64u32 {
            if before.bounding & (1 << cap) != 0 && mask & (1 << cap) == 0 {
                // SAFETY: as above.
                if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0
                {
                    return Err(err("dropping from the bounding set")(
                        io::Error::last_os_error(),
                    ));
                }
            }
        }
    }
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [
        Data {
            effective: mask as u32,
            permitted: mask as u32,
            inheritable: 0,
        },
        Data {
            effective: (mask >> 32) as u32,
            permitted: (mask >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: capset(2) reads one header and two data structs of the version-3 layout.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(err("capset")(io::Error::last_os_error()));
    }
    Sets::current().map_err(err("reading /proc/self/status"))
}

/// The names of the capabilities in a set, for logs: `CAP_BPF, CAP_PERFMON`.
pub fn names(set: u64) -> String {
    let names: Vec<String> = (0..64u32)
        .filter(|c| set & (1 << c) != 0)
        .map(|c| Cap(c).to_string())
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_sets() {
        assert_eq!(names(0), "none");
        assert_eq!(names((1 << 39) | (1 << 2)), "CAP_DAC_READ_SEARCH, CAP_BPF");
        assert_eq!(names(1 << 0), "capability 0");
    }

    #[test]
    fn what_is_kept_follows_the_configuration() {
        let caps = |n: &Needs| needed(n).into_iter().map(|(c, _)| c).collect::<Vec<_>>();
        let none = Needs {
            bpf_stats: false,
            actions: Vec::new(),
            exec: false,
            low_port: false,
        };
        assert_eq!(caps(&none), [Cap::DAC_READ_SEARCH]);
        let all = Needs {
            bpf_stats: true,
            // Two nice actions and a default_qdisc sysctl: each capability kept once.
            actions: vec![
                (Cap::SYS_NICE, "nice"),
                (Cap::SYS_NICE, "affinity"),
                (Cap::NET_ADMIN, "qdisc"),
            ],
            exec: true,
            low_port: true,
        };
        assert_eq!(
            caps(&all),
            [
                Cap::DAC_READ_SEARCH,
                Cap::SYS_ADMIN,
                Cap::NET_BIND_SERVICE,
                Cap::SYS_NICE,
                Cap::NET_ADMIN
            ]
        );
    }

    /// A test runs on a thread of its own, beside libtest's main thread: dropping must refuse,
    /// since the other thread would keep its capabilities (and nothing is changed). Dropping in
    /// a single-threaded process is checked end to end: tests/tests/privileges.rs reads the
    /// agent's sets from /proc.
    #[test]
    fn dropping_refuses_while_other_threads_run() {
        let before = Sets::current().unwrap();
        let e = drop_all_but(&[], false).unwrap_err().to_string();
        assert!(e.contains("threads"), "{e}");
        assert_eq!(Sets::current().unwrap(), before);
    }
}
