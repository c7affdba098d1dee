//! TCP retransmits: the total, and per (remote address, remote port, local port, state).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
};

use aya::{
    Ebpf,
    maps::{Map, MapError},
};
use observer_common::tcp::{
    AF_INET, AF_INET6, BY_REMOTE_MAP, COUNTERS_MAP, Counter, GLOBAL_HAS_ERR, GLOBAL_SKC_DADDR,
    GLOBAL_SKC_DPORT, GLOBAL_SKC_FAMILY, GLOBAL_SKC_NUM, GLOBAL_SKC_STATE, GLOBAL_SKC_V6_DADDR,
    RemoteKey, STATE_NAMES,
};
use serde::Serialize;

use super::{
    Global, GlobalsError, ReadError, ReportOptions, counter, offset_global, read_hash, read_percpu,
    top_by,
};
use crate::{
    btf::Btf,
    hist::{counter_delta, keyed_delta},
};

/// Fields of `struct sock_common`, reached from `struct sock` through `__sk_common`, and
/// whether the tracepoint reports errors.
pub fn globals(btf: &Btf) -> Result<Vec<Global>, GlobalsError> {
    let has_err = btf.tracepoint_args("tcp_retransmit_skb")? == Some(3);
    Ok(vec![
        Global::U32(GLOBAL_HAS_ERR, u32::from(has_err)),
        offset_global(btf, GLOBAL_SKC_FAMILY, "sock", "__sk_common.skc_family", 2)?,
        offset_global(btf, GLOBAL_SKC_STATE, "sock", "__sk_common.skc_state", 1)?,
        offset_global(btf, GLOBAL_SKC_DADDR, "sock", "__sk_common.skc_daddr", 4)?,
        offset_global(
            btf,
            GLOBAL_SKC_V6_DADDR,
            "sock",
            "__sk_common.skc_v6_daddr",
            16,
        )?,
        offset_global(btf, GLOBAL_SKC_DPORT, "sock", "__sk_common.skc_dport", 2)?,
        offset_global(btf, GLOBAL_SKC_NUM, "sock", "__sk_common.skc_num", 2)?,
    ])
}

pub struct Raw {
    counters: Vec<Vec<u64>>,
    by_remote: HashMap<RemoteKey, u64>,
    /// Retransmits of endpoints [`Raw::forget_idle`] deleted that the kernel counted after this
    /// read and before the deletion: the next delta adds them.
    late: HashMap<RemoteKey, u64>,
}

impl Raw {
    /// Entries in the bounded breakdown map.
    pub fn entries(&self) -> usize {
        self.by_remote.len()
    }

    /// Deletes from the kernel's endpoint map the entries that did not change since `prev`
    /// (no retransmit for a whole interval), once their counts are in the delta from `prev` to
    /// this read. Returns how many were deleted.
    ///
    /// Why: the map is bounded and nothing else ever removes an entry, so on a long-running
    /// agent it fills with peers seen once, long ago, and every new peer's retransmits go
    /// unattributed for good. Deleting only IDLE entries keeps the counts exact, which an LRU
    /// map would not (it evicts an entry with whatever it counted since the last read): each is
    /// removed with BPF_MAP_LOOKUP_AND_DELETE_ELEM, which returns its final value atomically,
    /// and a retransmit counted between this read and the deletion is carried to the next
    /// delta (`late`). An entry re-created later counts from 0, which the next delta takes as
    /// new (it is no longer in this read). The one count that can still be lost is a
    /// retransmit whose program looked the entry up on another CPU in the same instant as the
    /// deletion and adds to it after it (nanoseconds, and only for a peer idle for an interval).
    /// Busy peers stay, so with more busy peers than entries the overflow is still counted
    /// (`Counter::Unattributed`).
    pub fn forget_idle(&mut self, ebpf: &Ebpf, prev: &Raw) -> Result<usize, ReadError> {
        let err = |source| ReadError {
            map: BY_REMOTE_MAP,
            source,
        };
        let Some(Map::HashMap(data)) = ebpf.map(BY_REMOTE_MAP) else {
            return Err(err(MapError::InvalidName {
                name: BY_REMOTE_MAP.into(),
            }));
        };
        let idle: Vec<(RemoteKey, u64)> = self
            .by_remote
            .iter()
            .filter(|(k, n)| prev.by_remote.get(k) == Some(n))
            .map(|(k, n)| (*k, *n))
            .collect();
        for (key, read) in &idle {
            self.by_remote.remove(key);
            match lookup_and_delete(data.fd().as_fd(), key) {
                Ok(Some(last)) if last != *read => {
                    self.late.insert(*key, counter_delta(last, *read));
                }
                // Unchanged, or already gone: nothing more to count.
                Ok(_) => {}
                Err(e) => {
                    return Err(err(MapError::SyscallError(aya::sys::SyscallError {
                        call: "bpf_map_lookup_and_delete_elem",
                        io_error: e,
                    })));
                }
            }
        }
        Ok(idle.len())
    }
}

/// `bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM)` on a hash map of [`RemoteKey`] -> `u64` (Linux 5.14
/// for hash maps): the value and the deletion in one step under the bucket's lock. aya has the
/// call only for queues and stacks. `None`: the key was not there.
fn lookup_and_delete(map: BorrowedFd<'_>, key: &RemoteKey) -> std::io::Result<Option<u64>> {
    /// The map-element part of `union bpf_attr` (include/uapi/linux/bpf.h).
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
    let mut value = 0u64;
    let attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: std::ptr::from_ref(key) as u64,
        value: std::ptr::from_mut(&mut value) as u64,
        flags: 0,
    };
    // SAFETY: `attr` points at a key and a value of the map's sizes (RemoteKey and u64, checked
    // by aya when the map was read), both live for the call; the size passed is attr's own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_AND_DELETE_ELEM,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<ElemAttr>(),
        )
    };
    if rc == 0 {
        return Ok(Some(value));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOENT) {
        Ok(None)
    } else {
        Err(e)
    }
}

pub fn read(ebpf: &Ebpf) -> Result<Raw, ReadError> {
    Ok(Raw {
        counters: read_percpu(ebpf, COUNTERS_MAP)?,
        by_remote: read_hash(ebpf, BY_REMOTE_MAP)?,
        late: HashMap::new(),
    })
}

/// The maps as loaded, before any program ran: the first read's baseline.
pub fn zero() -> Raw {
    Raw {
        counters: Vec::new(),
        by_remote: HashMap::new(),
        late: HashMap::new(),
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// Retransmitted skbs that were sent.
    pub count: u64,
    /// Retransmit attempts that failed to send (kernels that report it; 0 elsewhere).
    pub failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_remote: Option<Vec<RemoteRow>>,
    pub dropped: Dropped,
}

#[derive(Debug, Serialize)]
pub struct RemoteRow {
    /// "ipv4" or "ipv6"
    pub family: &'static str,
    pub remote_addr: String,
    pub remote_port: u16,
    pub local_port: u16,
    pub state: &'static str,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct Dropped {
    /// Retransmits not attributed to an endpoint: the endpoint map was full (or the socket could
    /// not be read).
    pub by_remote: u64,
}

/// What happened between two reads.
pub struct Delta {
    /// Retransmits not in `by_remote` (the map was full, or the socket was unreadable).
    pub unattributed: u64,
    pub by_remote: HashMap<RemoteKey, u64>,
    pub failed: u64,
}

pub fn delta(cur: &Raw, prev: &Raw) -> Delta {
    Delta {
        unattributed: counter(&cur.counters, &prev.counters, Counter::Unattributed as u32),
        by_remote: {
            let mut d = keyed_delta(
                &cur.by_remote,
                &prev.by_remote,
                |c, p| counter_delta(*c, p.copied().unwrap_or(0)),
                |n| *n == 0,
            );
            for (k, n) in &prev.late {
                let e = d.entry(*k).or_default();
                *e = e.wrapping_add(*n);
            }
            d
        },
        failed: counter(&cur.counters, &prev.counters, Counter::Failed as u32),
    }
}

pub fn report(d: &Delta, opts: &ReportOptions) -> Report {
    let by_remote = opts.by.remote.then(|| {
        top_by(
            d.by_remote.iter().map(|(k, n)| (*k, *n)).collect(),
            opts.top,
            |(_, n)| *n,
            |(k, _)| (k.family, k.raddr, k.rport, k.lport, k.state),
        )
        .into_iter()
        .map(|(k, count)| RemoteRow {
            family: family(&k),
            remote_addr: address(&k),
            remote_port: k.rport,
            local_port: k.lport,
            state: state(&k),
            count,
        })
        .collect()
    });
    Report {
        count: d
            .by_remote
            .values()
            .fold(d.unattributed, |a, n| a.wrapping_add(*n)),
        failed: d.failed,
        by_remote,
        dropped: Dropped {
            by_remote: d.unattributed,
        },
    }
}

impl RemoteRow {
    /// `addr:port`, with an IPv6 address in brackets.
    pub fn endpoint(&self) -> String {
        if self.family == "ipv6" {
            format!("[{}]:{}", self.remote_addr, self.remote_port)
        } else {
            format!("{}:{}", self.remote_addr, self.remote_port)
        }
    }
}

/// "ipv4" or "ipv6".
pub fn family(k: &RemoteKey) -> &'static str {
    if k.family == AF_INET6 {
        "ipv6"
    } else if k.family == AF_INET {
        "ipv4"
    } else {
        "other"
    }
}

/// The kernel's name of the socket's TCP state.
pub fn state(k: &RemoteKey) -> &'static str {
    STATE_NAMES
        .get(usize::from(k.state))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// The socket's TCP state as OpenTelemetry's `network.connection.state` has it: RFC 9293's
/// states (section 3.3.2), spelled as the semantic conventions' registry spells them
/// (model/network/registry.yaml). Linux's states are the RFC's but for two of its own:
/// NEW_SYN_RECV is the request socket of a connection in SYN-RECEIVED, and BOUND_INACTIVE a
/// bound socket with no connection, which the RFC calls CLOSED. None for a value outside
/// `enum tcp_state` (include/net/tcp_states.h).
pub fn connection_state(k: &RemoteKey) -> Option<&'static str> {
    Some(match *STATE_NAMES.get(usize::from(k.state))? {
        "ESTABLISHED" => "established",
        "SYN_SENT" => "syn_sent",
        "SYN_RECV" | "NEW_SYN_RECV" => "syn_received",
        "FIN_WAIT1" => "fin_wait_1",
        "FIN_WAIT2" => "fin_wait_2",
        "TIME_WAIT" => "time_wait",
        "CLOSE" | "BOUND_INACTIVE" => "closed",
        "CLOSE_WAIT" => "close_wait",
        "LAST_ACK" => "last_ack",
        "LISTEN" => "listen",
        "CLOSING" => "closing",
        _ => return None,
    })
}

/// The remote address as text.
pub fn address(k: &RemoteKey) -> String {
    if k.family == AF_INET6 {
        Ipv6Addr::from(k.raddr).to_string()
    } else {
        let [a, b, c, d, ..] = k.raddr;
        Ipv4Addr::new(a, b, c, d).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rport: u16) -> RemoteKey {
        RemoteKey {
            raddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            family: AF_INET,
            rport,
            lport: 40000,
            state: 1,
            _pad: 0,
        }
    }

    fn raw(by_remote: &[(u16, u64)], late: &[(u16, u64)]) -> Raw {
        Raw {
            counters: Vec::new(),
            by_remote: by_remote.iter().map(|(p, n)| (key(*p), *n)).collect(),
            late: late.iter().map(|(p, n)| (key(*p), *n)).collect(),
        }
    }

    /// A deleted idle endpoint: what the kernel counted after the read that deleted it (late)
    /// and what its re-created entry counted since are both in the next delta, once.
    #[test]
    fn every_linux_state_has_its_rfc_name() {
        let state = |state| connection_state(&RemoteKey { state, ..key(80) });
        // Every value of the registry's network.connection.state, and no other.
        let registry = [
            "closed",
            "close_wait",
            "closing",
            "established",
            "fin_wait_1",
            "fin_wait_2",
            "last_ack",
            "listen",
            "syn_received",
            "syn_sent",
            "time_wait",
        ];
        let mut named: Vec<_> = (1..STATE_NAMES.len() as u8)
            .map(|s| state(s).unwrap_or_else(|| panic!("{} has no name", STATE_NAMES[s as usize])))
            .collect();
        named.sort_unstable();
        named.dedup();
        let mut registry = registry.to_vec();
        registry.sort_unstable();
        assert_eq!(named, registry);
        // include/net/tcp_states.h: TCP_ESTABLISHED = 1, TCP_SYN_RECV = 3, TCP_CLOSE = 7,
        // TCP_NEW_SYN_RECV = 12, TCP_BOUND_INACTIVE = 13.
        assert_eq!(state(1), Some("established"));
        assert_eq!(state(3), Some("syn_received"));
        assert_eq!(state(12), Some("syn_received"));
        assert_eq!(state(7), Some("closed"));
        assert_eq!(state(13), Some("closed"));
        assert_eq!(state(0), None);
        assert_eq!(state(14), None);
    }

    #[test]
    fn counts_of_a_deleted_idle_endpoint_are_carried_into_the_next_delta() {
        // Endpoint 1 was idle and deleted (no longer in `prev`), with 2 late retransmits; its
        // entry was re-created and holds 3. Endpoint 2 grew from 5 to 9.
        let prev = raw(&[(2, 5)], &[(1, 2)]);
        let cur = raw(&[(1, 3), (2, 9)], &[]);
        let d = delta(&cur, &prev);
        assert_eq!(d.by_remote, HashMap::from([(key(1), 5), (key(2), 4)]));
        // Late counts of an endpoint not re-created arrive too.
        let cur = raw(&[(2, 5)], &[]);
        let d = delta(&cur, &prev);
        assert_eq!(d.by_remote, HashMap::from([(key(1), 2)]));
    }
}
