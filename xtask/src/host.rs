//! What the bench and the soak both read from the host (/proc) and make on it (a loop device,
//! a cgroup directory).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// A directory of the caller's under the cgroup2 mount, in which its workloads make short-lived
/// cgroups; what is left in it (after a failure) is killed and removed when dropped.
pub struct CgroupDir {
    pub dir: PathBuf,
}

impl CgroupDir {
    /// `what` names the caller in the directory's name (`observer-<what>-<pid>`).
    pub fn create(what: &str) -> Result<Self> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        // `... root mountpoint ... - cgroup2 ...`: the whole hierarchy's mount point.
        let mount = mountinfo
            .lines()
            .find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let mut fields = left.split(' ');
                if right.starts_with("cgroup2 ") && fields.nth(3)? == "/" {
                    fields.next().map(PathBuf::from)
                } else {
                    None
                }
            })
            .context("no cgroup2 file system is mounted")?;
        let dir = mount.join(format!("observer-{what}-{}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }
}

/// Kills what is left in a cgroup (cgroup.kill) and removes it, retrying while its last
/// processes are being reaped.
pub fn remove_cgroup(cgroup: &Path) {
    let _ = fs::write(cgroup.join("cgroup.kill"), "1");
    for _ in 0..50 {
        if fs::remove_dir(cgroup).is_ok() || !cgroup.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for CgroupDir {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    remove_cgroup(&entry.path());
                }
            }
        }
        remove_cgroup(&self.dir);
    }
}
