//! Sidecar mode: whether an event belongs to the scope (observer_common::scope).

use aya_ebpf::{btf_maps::CgroupArray, helpers::bpf_probe_read_kernel, macros::btf_map};
use observer_common::scope::MAX_DEPTH;

/// observer_common::scope::GLOBAL_ON. In frozen `.rodata`: with 0 every check below is a
/// constant `true` to the verifier and the rest of it is dead code.
#[unsafe(no_mangle)]
static SCOPE_ON: u32 = 0;
#[unsafe(no_mangle)]
static SCOPE_ID: u64 = 0;
#[unsafe(no_mangle)]
static SCOPE_OFF_SK_CGROUP: u32 = 0;
#[unsafe(no_mangle)]
static SCOPE_OFF_CGROUP_LEVEL: u32 = 0;
#[unsafe(no_mangle)]
static SCOPE_OFF_CGROUP_ANCESTORS: u32 = 0;
#[unsafe(no_mangle)]
static SCOPE_OFF_CGROUP_KN: u32 = 0;
#[unsafe(no_mangle)]
static SCOPE_OFF_KN_ID: u32 = 0;

/// observer_common::scope::CGROUP_MAP: slot 0 holds the scope's cgroup.
#[btf_map]
static SCOPE_CGROUP: CgroupArray<1> = CgroupArray::new();

/// Whether a scope is set.
#[inline(always)]
pub fn on() -> bool {
    // SAFETY: a global the loader initialised; volatile so its placeholder is not folded.
    unsafe { core::ptr::read_volatile(&SCOPE_ON) != 0 }
}

/// Whether the current task is in the scope (always, without one). An empty slot (the agent
/// has not written it yet) is an error, so nothing is counted before the scope is in place.
#[inline(always)]
pub fn current_in_scope() -> bool {
    !on() || matches!(SCOPE_CGROUP.current_task_under_cgroup(0), Ok(true))
}

/// Whether a socket (`struct sock *`) was created in the scope (always, without one): its
/// cgroup or one of that cgroup's ancestors has the scope's id.
#[inline(always)]
pub fn sock_in_scope(sk: u64) -> bool {
    !on() || sock_under(sk).unwrap_or(false)
}

#[inline(always)]
fn sock_under(sk: u64) -> Result<bool, ()> {
    // SAFETY: globals the loader initialised; volatile so the placeholders are not folded.
    let off = |g: &u32| unsafe { core::ptr::read_volatile(g) } as u64;
    // SAFETY: as above.
    let id = unsafe { core::ptr::read_volatile(&SCOPE_ID) };
    // SAFETY: bpf_probe_read_kernel checks every address; a bad one returns an error.
    unsafe {
        let cgroup: u64 = bpf_probe_read_kernel((sk + off(&SCOPE_OFF_SK_CGROUP)) as *const u64)
            .map_err(|_| ())?;
        if cgroup == 0 {
            return Ok(false);
        }
        let level: i32 =
            bpf_probe_read_kernel((cgroup + off(&SCOPE_OFF_CGROUP_LEVEL)) as *const i32)
                .map_err(|_| ())?;
        // Retransmits are rare: a walk over the ancestors costs nothing that matters, and it
        // needs no level of the scope (which a cgroup namespace would hide from the agent).
        for i in 0..MAX_DEPTH {
            if i as i32 > level {
                break;
            }
            let ancestor: u64 = bpf_probe_read_kernel(
                (cgroup + off(&SCOPE_OFF_CGROUP_ANCESTORS) + 8 * i as u64) as *const u64,
            )
            .map_err(|_| ())?;
            let kn: u64 =
                bpf_probe_read_kernel((ancestor + off(&SCOPE_OFF_CGROUP_KN)) as *const u64)
                    .map_err(|_| ())?;
            let ancestor_id: u64 =
                bpf_probe_read_kernel((kn + off(&SCOPE_OFF_KN_ID)) as *const u64)
                    .map_err(|_| ())?;
            if ancestor_id == id {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
