//! TCP retransmits: every retransmitted skb counted, and attributed to (remote address, remote
//! port, local port, TCP state), IPv4 and IPv6. The socket fields are read at offsets the agent
//! resolved from this kernel's BTF.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{HashMap, PerCpuArray},
    helpers::bpf_probe_read_kernel,
    macros::{btf_map, btf_tracepoint},
    programs::BtfTracePointContext,
};
use observer_common::tcp::{AF_INET, AF_INET6, BY_REMOTE_ENTRIES, COUNTERS, Counter, RemoteKey};

use crate::{
    hist::{atomic_add, count, entry},
    scope,
};

const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;

#[btf_map]
static TCP_COUNTERS: PerCpuArray<u64, { COUNTERS as usize }> = PerCpuArray::new();
#[btf_map]
static TCP_BY_REMOTE: HashMap<RemoteKey, u64, { BY_REMOTE_ENTRIES as usize }, NO_PREALLOC> =
    HashMap::new();

static ZERO: u64 = 0;

#[unsafe(no_mangle)]
static TCP_OFF_SKC_FAMILY: u32 = 0;
#[unsafe(no_mangle)]
static TCP_OFF_SKC_STATE: u32 = 0;
#[unsafe(no_mangle)]
static TCP_OFF_SKC_DADDR: u32 = 0;
#[unsafe(no_mangle)]
static TCP_OFF_SKC_V6_DADDR: u32 = 0;
#[unsafe(no_mangle)]
static TCP_OFF_SKC_DPORT: u32 = 0;
#[unsafe(no_mangle)]
static TCP_OFF_SKC_NUM: u32 = 0;
/// observer_common::tcp::GLOBAL_HAS_ERR. A constant to the verifier (.rodata is frozen), so on
/// kernels without the argument the branch that reads it is dead code and never checked.
#[unsafe(no_mangle)]
static TCP_HAS_ERR: u32 = 0;

/// tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb[, int err])
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> i32 {
    match try_retransmit(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

#[inline(always)]
fn try_retransmit(ctx: &BtfTracePointContext) -> Result<(), ()> {
    // Sidecar mode: this runs in timer or softirq context, where `current` is whoever was
    // interrupted, so the socket's own cgroup is judged.
    let sk: u64 = ctx.arg(0);
    if !scope::sock_in_scope(sk) {
        return Ok(());
    }
    // SAFETY: a global the loader initialised; volatile so its placeholder is not folded.
    if unsafe { core::ptr::read_volatile(&TCP_HAS_ERR) } != 0 {
        let err: i64 = ctx.arg(2);
        if err as i32 != 0 {
            count(&TCP_COUNTERS, Counter::Failed as u32, 1);
            return Ok(());
        }
    }
    // The per-endpoint counts are the record; TCP_COUNTERS counts only what they miss (the map
    // was full, or the socket could not be read), and the total is the sum of both.
    match remote_key(sk)
        .ok()
        .and_then(|key| entry(&TCP_BY_REMOTE, &key, &ZERO))
    {
        // SAFETY: a live, 8-byte aligned map value.
        Some(n) => unsafe { atomic_add(n, 1) },
        None => count(&TCP_COUNTERS, Counter::Unattributed as u32, 1),
    }
    Ok(())
}

#[inline(always)]
fn remote_key(sk: u64) -> Result<RemoteKey, ()> {
    // SAFETY: globals the loader initialised; volatile so the placeholder zeroes are not folded.
    let off = |g: &u32| unsafe { core::ptr::read_volatile(g) } as u64;
    let mut key = RemoteKey {
        raddr: [0; 16],
        family: 0,
        rport: 0,
        lport: 0,
        state: 0,
        _pad: 0,
    };
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one returns an error.
    unsafe {
        key.family =
            bpf_probe_read_kernel((sk + off(&TCP_OFF_SKC_FAMILY)) as *const u16).map_err(|_| ())?;
        key.state =
            bpf_probe_read_kernel((sk + off(&TCP_OFF_SKC_STATE)) as *const u8).map_err(|_| ())?;
        let dport: u16 =
            bpf_probe_read_kernel((sk + off(&TCP_OFF_SKC_DPORT)) as *const u16).map_err(|_| ())?;
        key.rport = u16::from_be(dport);
        key.lport =
            bpf_probe_read_kernel((sk + off(&TCP_OFF_SKC_NUM)) as *const u16).map_err(|_| ())?;
        if key.family == AF_INET {
            let a: [u8; 4] =
                bpf_probe_read_kernel((sk + off(&TCP_OFF_SKC_DADDR)) as *const [u8; 4])
                    .map_err(|_| ())?;
            key.raddr[..4].copy_from_slice(&a);
        } else if key.family == AF_INET6 {
            key.raddr = bpf_probe_read_kernel((sk + off(&TCP_OFF_SKC_V6_DADDR)) as *const [u8; 16])
                .map_err(|_| ())?;
        }
    }
    Ok(key)
}
