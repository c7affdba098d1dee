//! Threshold rules and the tuning actions they trigger, safely: dry-run by default, an audit
//! journal, rate limits, hysteresis and rollback.
//!
//! - [`spec`]: the `[tuning]` section and `[[rules]]` of the config file, validated.
//! - [`stat`]: from the agent's cumulative snapshots to per-target windows and statistics.
//! - [`engine`]: the per-rule, per-target state machine that decides and acts.
//! - [`actions`]: what a rule can do (sysctl, I/O scheduler, CPU governor, cgroup, nice,
//!   affinity, exec, log), one module per kind behind one trait.
//! - [`journal`] and [`state`]: the append-only audit trail and the persisted originals.

pub mod actions;
pub mod engine;
pub mod journal;
pub mod spec;
pub mod stat;
pub mod state;
#[cfg(test)]
mod tests;

use std::{os::unix::fs::MetadataExt as _, path::Path};

/// Actions run only from a config file that only root can change: otherwise whoever can write
/// it could make observer (root) change kernel settings or run commands.
pub fn check_config_owner(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.uid() != 0 {
        return Err(format!(
            "{}: rules in enforce mode are refused because the file is owned by uid {}, not \
             root; run `chown root: {}`",
            path.display(),
            meta.uid(),
            path.display()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{}: rules in enforce mode are refused because the file is writable by {} (mode \
             {:o}); run `chmod go-w {}`",
            path.display(),
            if meta.mode() & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            },
            meta.mode() & 0o7777,
            path.display()
        ));
    }
    // A directory others can write lets them replace the file (unless it is sticky, like /tmp).
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dmeta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if dmeta.mode() & 0o002 != 0 && dmeta.mode() & 0o1000 == 0 {
        return Err(format!(
            "{}: rules in enforce mode are refused because its directory {} is writable by \
             everyone; move the file to a directory only root can write (e.g. /etc/observer)",
            path.display(),
            dir.display()
        ));
    }
    Ok(())
}
