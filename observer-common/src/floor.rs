//! Empty programs, one per hook `cargo xtask bench` measures: what any `tp_btf` program costs
//! on that hook, the floor the signals' programs are compared with. Loaded only by the hidden
//! `observer floor` subcommand, never by a signal.

/// (program name in the object, BTF tracepoint it attaches to).
pub const PROGRAMS: &[(&str, &str)] = &[
    ("floor_sched_switch", "sched_switch"),
    ("floor_sched_wakeup", "sched_wakeup"),
    ("floor_sched_waking", "sched_waking"),
    ("floor_sys_enter", "sys_enter"),
    ("floor_sys_exit", "sys_exit"),
    ("floor_block_rq_issue", "block_rq_issue"),
    ("floor_block_rq_complete", "block_rq_complete"),
    ("floor_contention_begin", "contention_begin"),
    ("floor_contention_end", "contention_end"),
];
