//! TCP retransmits: a total, and counts per remote endpoint, local port and TCP state.

pub const COUNTERS_MAP: &str = "TCP_COUNTERS";
/// Hash [`RemoteKey`] -> `u64` count, bounded by [`BY_REMOTE_ENTRIES`].
pub const BY_REMOTE_MAP: &str = "TCP_BY_REMOTE";
pub const BY_REMOTE_ENTRIES: u32 = 4096;

pub const PROGRAMS: &[(&str, &str)] = &[("tcp_retransmit_skb", "tcp_retransmit_skb")];

/// Byte offsets inside `struct sock`, resolved from BTF by the agent (through `__sk_common`).
pub const GLOBAL_SKC_FAMILY: &str = "TCP_OFF_SKC_FAMILY";
pub const GLOBAL_SKC_STATE: &str = "TCP_OFF_SKC_STATE";
pub const GLOBAL_SKC_DADDR: &str = "TCP_OFF_SKC_DADDR";
pub const GLOBAL_SKC_V6_DADDR: &str = "TCP_OFF_SKC_V6_DADDR";
pub const GLOBAL_SKC_DPORT: &str = "TCP_OFF_SKC_DPORT";
pub const GLOBAL_SKC_NUM: &str = "TCP_OFF_SKC_NUM";
/// 1 when this kernel's tcp_retransmit_skb passes `int err` (its third argument, added in 6.x):
/// the tracepoint then also fires for retransmits that failed to send, which are not counted
/// as retransmits (the kernel's own RetransSegs does not count them either).
pub const GLOBAL_HAS_ERR: &str = "TCP_HAS_ERR";

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Retransmits not in [`BY_REMOTE_MAP`] (it was full, or the socket could not be read). The
    /// total is this plus the map's counts. A retransmit is an skb that was sent again (one skb
    /// may carry several segments under TSO).
    Unattributed = 0,
    /// Retransmit attempts that failed to send (only seen where [`GLOBAL_HAS_ERR`] is 1).
    Failed = 1,
}
pub const COUNTERS: u32 = 2;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Names of `enum tcp_state` values (include/net/tcp_states.h), index = state.
pub const STATE_NAMES: [&str; 14] = [
    "UNKNOWN",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
    "BOUND_INACTIVE",
];

/// One remote endpoint as seen from one local port in one TCP state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteKey {
    /// IPv4 addresses use the first 4 bytes; network byte order.
    pub raddr: [u8; 16],
    pub family: u16,
    /// Host byte order.
    pub rport: u16,
    /// Host byte order.
    pub lport: u16,
    pub state: u8,
    pub _pad: u8,
}

const _: () = assert!(core::mem::size_of::<RemoteKey>() == 24);
