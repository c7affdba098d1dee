//! TCP retransmits: the total, and per (remote address, remote port, local port, state).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use aya::Ebpf;
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
}

impl Raw {
    /// Entries in the bounded breakdown map.
    pub fn entries(&self) -> usize {
        self.by_remote.len()
    }
}

pub fn read(ebpf: &Ebpf) -> Result<Raw, ReadError> {
    Ok(Raw {
        counters: read_percpu(ebpf, COUNTERS_MAP)?,
        by_remote: read_hash(ebpf, BY_REMOTE_MAP)?,
    })
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
        by_remote: keyed_delta(
            &cur.by_remote,
            &prev.by_remote,
            |c, p| counter_delta(*c, p.copied().unwrap_or(0)),
            |n| *n == 0,
        ),
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

/// The remote address as text.
pub fn address(k: &RemoteKey) -> String {
    if k.family == AF_INET6 {
        Ipv6Addr::from(k.raddr).to_string()
    } else {
        let [a, b, c, d, ..] = k.raddr;
        Ipv4Addr::new(a, b, c, d).to_string()
    }
}
