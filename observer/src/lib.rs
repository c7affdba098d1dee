//! observer: continuous performance observation for Linux from in-kernel eBPF histograms.
//!
//! Data flows one way: [`ebpf`] loads and attaches the kernel programs, [`record`] reads their
//! maps ([`signals`], one module per signal) and turns two reads into a report ([`hist`] does
//! the arithmetic), and [`render`] prints it.

pub mod agent;
pub mod btf;
pub mod caps;
pub mod cgroup;
pub mod check;
pub mod config;
pub mod ebpf;
pub mod hist;
pub mod kubernetes;
pub mod logging;
pub mod record;
pub mod render;
pub mod rules;
pub mod scope;
pub mod signals;
pub mod top;
