//! What the bench and the soak both read from the host (/proc) and make on it (a loop device).

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::cmd::Cmd;

/// The 1, 5 and 15 minute load averages from /proc/loadavg.
pub fn load_average() -> Result<(f64, f64, f64)> {
    let text = fs::read_to_string("/proc/loadavg")?;
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    let mut next = || -> Result<f64> { Ok(fields.next().context("short /proc/loadavg")??) };
    Ok((next()?, next()?, next()?))
}

/// The machine's CPU time in clock ticks, summed over all CPUs, from the first line of /proc/stat.
pub struct CpuTicks {
    pub total: u64,
    /// Running anything (user, nice, system, interrupts); guest time is already inside user.
    pub busy: u64,
    /// The hypervisor ran something else while a CPU of this VM wanted to run.
    pub steal: u64,
}

impl CpuTicks {
    pub fn read() -> Result<Self> {
        let stat = fs::read_to_string("/proc/stat")?;
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("cpu "))
            .context("no `cpu` line first in /proc/stat")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .context("parsing /proc/stat")?;
        let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = fields[..] else {
            bail!("fewer than 8 fields on the `cpu` line of /proc/stat");
        };
        Ok(Self {
            total: user + nice + system + idle + iowait + irq + softirq + steal,
            busy: user + nice + system + irq + softirq,
            steal,
        })
    }
}

/// A loop device over a sparse file in the temporary directory, so direct I/O goes through the
/// block layer and waits for no disk; detached and the file removed when dropped.
pub struct LoopDevice {
    pub device: String,
    file: PathBuf,
}

impl LoopDevice {
    /// `what` names the caller in the file's name and in errors.
    pub fn create(what: &str, bytes: u64) -> Result<Self> {
        let file = std::env::temp_dir().join(format!("observer-{what}-{}.img", std::process::id()));
        fs::File::create(&file)
            .and_then(|f| f.set_len(bytes))
            .with_context(|| format!("creating {}", file.display()))?;
        let shown = file.to_string_lossy().into_owned();
        match Cmd::new("losetup", &["--find", "--show", &shown]).query() {
            Ok(device) => Ok(Self {
                device: device.trim().to_owned(),
                file,
            }),
            Err(e) => {
                let _ = fs::remove_file(&file);
                Err(e.context(format!("attaching a loop device for the {what}")))
            }
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Cmd::new("losetup", &["-d", &self.device]).query();
        let _ = fs::remove_file(&self.file);
    }
}
