//! A loop device over a file in /tmp, and the kernel's own I/O counters for it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// A file in /tmp, removed on drop.
struct Backing(PathBuf);

impl Drop for Backing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A loop device (with direct I/O to its backing file) that is detached, and its backing file
/// removed, on drop.
pub struct LoopDevice {
    pub dev: PathBuf,
    /// `loopN`, the name under /sys/block.
    pub name: String,
    pub major: u32,
    pub minor: u32,
    // Dropped after the device is detached (fields drop in declaration order, after Drop::drop).
    _backing: Backing,
}

impl LoopDevice {
    pub fn create(size_mib: u64) -> Result<Self> {
        let backing = Backing(PathBuf::from(format!(
            "/tmp/{}.img",
            crate::unique_name("observer-test")
        )));
        let f = File::create(&backing.0).context("create backing file")?;
        f.set_len(size_mib << 20)?;
        drop(f);
        let out = crate::run_ok(
            std::process::Command::new("losetup")
                .args(["--find", "--show", "--direct-io=on"])
                .arg(&backing.0),
        )?;
        let dev = PathBuf::from(out.trim());
        let name = dev
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.starts_with("loop"))
            .with_context(|| format!("losetup printed {out:?}"))?
            .to_string();
        // Construct the guard at once so the device is detached even if what follows fails.
        let mut this = Self {
            dev,
            name,
            major: 0,
            minor: 0,
            _backing: backing,
        };
        let devno = std::fs::read_to_string(this.sys("dev"))?;
        let (ma, mi) = devno.trim().split_once(':').context("bad dev file")?;
        this.major = ma.parse()?;
        this.minor = mi.parse()?;
        Ok(this)
    }

    fn sys(&self, rel: &str) -> PathBuf {
        PathBuf::from(format!("/sys/block/{}/{rel}", self.name))
    }

    /// `"major:minor"`, as observer names disks.
    pub fn disk(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }

    /// Whether the loop driver does direct I/O to the backing file.
    pub fn direct_io(&self) -> bool {
        std::fs::read_to_string(self.sys("loop/dio")).is_ok_and(|s| s.trim() == "1")
    }

    /// Schedulers this queue offers, and the active one (shown in brackets by the kernel).
    pub fn schedulers(&self) -> Result<(Vec<String>, String)> {
        let s = std::fs::read_to_string(self.sys("queue/scheduler"))?;
        let mut all = Vec::new();
        let mut active = String::new();
        for w in s.split_whitespace() {
            if let Some(a) = w.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
                active = a.to_string();
                all.push(a.to_string());
            } else {
                all.push(w.to_string());
            }
        }
        Ok((all, active))
    }

    pub fn set_scheduler(&self, sched: &str) -> Result<()> {
        std::fs::write(self.sys("queue/scheduler"), sched)
            .with_context(|| format!("set scheduler {sched} on {}", self.name))?;
        let (_, active) = self.schedulers()?;
        if active != sched {
            bail!(
                "scheduler of {} is {active} after setting {sched}",
                self.name
            );
        }
        Ok(())
    }

    /// The kernel's counters from /sys/block/loopN/stat (Documentation/block/stat.rst).
    pub fn stat(&self) -> Result<DiskStat> {
        DiskStat::parse(&std::fs::read_to_string(self.sys("stat"))?)
    }

    /// Opens the device for direct I/O (bypassing the page cache, so each read is a request).
    pub fn open_direct(&self) -> Result<File> {
        Ok(OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&self.dev)?)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("--detach")
            .arg(&self.dev)
            .status();
    }
}

/// Completed requests by direction, from a block device's `stat` file. The kernel counts a
/// request here when it completes (blk_account_io_done), once per request however many bios
/// were merged into it: the same unit as block_rq_complete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStat {
    pub reads: u64,
    pub writes: u64,
    pub discards: u64,
    pub flushes: u64,
    pub in_flight: u64,
}

impl DiskStat {
    pub fn parse(s: &str) -> Result<Self> {
        let f: Vec<u64> = s
            .split_whitespace()
            .map(|w| w.parse())
            .collect::<Result<_, _>>()?;
        if f.len() < 11 {
            bail!("short stat line {s:?}");
        }
        Ok(Self {
            reads: f[0],
            writes: f[4],
            in_flight: f[8],
            discards: f.get(11).copied().unwrap_or(0),
            flushes: f.get(15).copied().unwrap_or(0),
        })
    }

    pub fn delta(&self, before: &Self) -> Self {
        Self {
            reads: self.reads - before.reads,
            writes: self.writes - before.writes,
            discards: self.discards - before.discards,
            flushes: self.flushes - before.flushes,
            in_flight: self.in_flight,
        }
    }
}

/// A 4 KiB-aligned buffer for O_DIRECT.
pub struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    pub fn new(len: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        assert!(len > 0, "empty buffer");
        // SAFETY: the layout has a non-zero size (checked above); alloc_zeroed returns memory
        // valid for it, or null.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Self { ptr, layout }
    }
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for layout.size() bytes and uniquely borrowed through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in new() with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// `n` direct reads of `block` bytes, one at a time (so none merge), spread over the first
/// `span` bytes of the device.
pub fn direct_reads(f: &File, n: u64, block: usize, span: u64) -> Result<()> {
    let mut buf = AlignedBuf::new(block);
    let blocks = span / block as u64;
    for k in 0..n {
        // A stride co-prime with the block count visits blocks out of order.
        let off = (k * 7919 % blocks) * block as u64;
        let got = f.read_at(buf.bytes_mut(), off)?;
        if got != block {
            bail!("short direct read at {off}: {got}");
        }
    }
    Ok(())
}

/// `n` direct writes of `block` bytes, one at a time.
pub fn direct_writes(f: &File, n: u64, block: usize, span: u64) -> Result<()> {
    let mut buf = AlignedBuf::new(block);
    buf.bytes_mut().fill(0x5a);
    let blocks = span / block as u64;
    for k in 0..n {
        let off = (k * 104_729 % blocks) * block as u64;
        let put = f.write_at(buf.bytes_mut(), off)?;
        if put != block {
            bail!("short direct write at {off}: {put}");
        }
    }
    Ok(())
}
