//! Threshold rules and the tuning actions they trigger, safely: dry-run by default, an audit
//! journal, rate limits, hysteresis and rollback.

pub mod actions;
