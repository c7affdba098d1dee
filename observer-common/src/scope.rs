//! Sidecar mode: every signal restricted to one cgroup subtree (the scope).
//!
//! The agent resolves the scope to a cgroup directory, sets [`GLOBAL_ON`] to 1 at load time and
//! writes the directory's file descriptor into slot 0 of [`CGROUP_MAP`] before attaching. With
//! [`GLOBAL_ON`] 0 (the whole host) the check is a constant the verifier sees in frozen
//! `.rodata`, so the branch is dead code and costs nothing.
//!
//! Where the work runs in the task it is about, the programs ask
//! `bpf_current_task_under_cgroup` (namespace-proof: the kernel compares the cgroups
//! themselves). TCP retransmits run in timer and softirq context, so there the socket's own
//! cgroup (`sk->sk_cgrp_data.cgroup`, the cgroup of the task that created it) is compared, by
//! id, with each of its ancestors, at offsets the agent resolves from BTF.

/// Global: 1 when a scope is set.
pub const GLOBAL_ON: &str = "SCOPE_ON";
/// Global: the scope's cgroup id (the inode number of its directory), for the socket check.
pub const GLOBAL_ID: &str = "SCOPE_ID";
/// `BPF_MAP_TYPE_CGROUP_ARRAY` of one slot: the scope's cgroup.
pub const CGROUP_MAP: &str = "SCOPE_CGROUP";

/// Byte offsets the socket check reads: `sock.sk_cgrp_data.cgroup`, `cgroup.level`,
/// `cgroup.ancestors`, `cgroup.kn`, `kernfs_node.id`.
pub const GLOBAL_SK_CGROUP: &str = "SCOPE_OFF_SK_CGROUP";
pub const GLOBAL_CGROUP_LEVEL: &str = "SCOPE_OFF_CGROUP_LEVEL";
pub const GLOBAL_CGROUP_ANCESTORS: &str = "SCOPE_OFF_CGROUP_ANCESTORS";
pub const GLOBAL_CGROUP_KN: &str = "SCOPE_OFF_CGROUP_KN";
pub const GLOBAL_KN_ID: &str = "SCOPE_OFF_KN_ID";

/// How deep below the root a socket's cgroup may be for the socket check to find the scope
/// among its ancestors (systemd, kubelet and runtime layouts stay well under this).
pub const MAX_DEPTH: u32 = 16;
