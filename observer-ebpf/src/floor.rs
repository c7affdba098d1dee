//! The floor: programs that do nothing, on the hooks `cargo xtask bench` measures
//! (observer_common::floor). What one of them costs per run is what any `tp_btf` program pays
//! on that hook before doing any work, so the bench shows each signal's program next to it.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

#[btf_tracepoint(function = "sched_switch")]
pub fn floor_sched_switch(_ctx: BtfTracePointContext) -> i32 {
    try_nothing()
}

#[btf_tracepoint(function = "sched_wakeup")]
pub fn floor_sched_wakeup(_ctx: BtfTracePointContext) -> i32 {
    try_nothing()
}

#[btf_tracepoint(function = "sched_waking")]
pub fn floor_sched_waking(_ctx: BtfTracePointContext) -> i32 {
    try_nothing()
}

#[btf_tracepoint(function = "sys_enter")]
pub fn floor_sys_enter(_ctx: BtfTracePointContext) -> i32 {
    try_nothing()
}

#[btf_tracepoint(function = "sys_exit")]
pub fn floor_sys_exit(_ctx: BtfTracePointContext) -> i32 {
    try_nothing()
}

#[btf_tracepoint(function = "block_rq_issue")]
pub fn floor_block_rq_issue(_ctx: BtfTracePointContext) -> i32 {
    try_nothing()
}

#[btf_tracepoint(function = "block_rq_complete")]
pub fn floor_block_rq_complete(_ctx: BtfTracePointContext) -> i32 {
    try_nothing()
}

#[btf_tracepoint(function = "contention_begin")]
pub fn floor_contention_begin(_ctx: BtfTracePointContext) -> i32 {
    try_nothing()
}

#[btf_tracepoint(function = "contention_end")]
pub fn floor_contention_end(_ctx: BtfTracePointContext) -> i32 {
    try_nothing()
}

/// Nothing: the whole program is `return 0`, so its run time is the cost of being run at all.
#[inline(always)]
fn try_nothing() -> i32 {
    0
}
