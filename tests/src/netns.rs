//! A private network namespace, so the tests' traffic and its counters are their own: only
//! loopback addresses inside it are ever used.

use std::os::fd::AsRawFd;

use anyhow::{Context, Result, bail};

/// A network namespace made with `ip netns add`, deleted on drop (which also removes everything
/// inside it: its loopback device, sockets' routes, and its nftables tables).
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn create() -> Result<Self> {
        let name = crate::unique_name("obs-test");
        crate::run_ok(std::process::Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        crate::run_ok(
            std::process::Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]),
        )?;
        Ok(ns)
    }

    /// Runs `f` on a thread that has entered the namespace (setns(2) changes only the calling
    /// thread's namespace). Sockets created there stay in the namespace when used elsewhere.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = std::fs::File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("open /run/netns/{}", self.name))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: a valid namespace fd; affects only this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!(
                        "setns into {}: {}",
                        self.name,
                        std::io::Error::last_os_error()
                    );
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in netns panicked"))?
        })
    }

    /// Runs a command inside the namespace (`ip netns exec`), feeding it `stdin`.
    pub fn exec(&self, args: &[&str], stdin: &str) -> Result<String> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("run {args:?} in netns"))?;
        child.stdin.take().unwrap().write_all(stdin.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "{args:?} in netns {} failed ({}): {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Reads one field of the `Tcp:` line of the calling thread's namespace's /proc/net/snmp.
/// (/proc/net is /proc/self/net, which follows the thread-group leader's namespace; a thread
/// that entered another namespace must read /proc/thread-self/net.)
pub fn tcp_snmp(field: &str) -> Result<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/net/snmp")?;
    let mut lines = s.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (
        lines.next().context("no Tcp header")?,
        lines.next().context("no Tcp values")?,
    );
    let k = names
        .split_whitespace()
        .position(|n| n == field)
        .with_context(|| format!("no Tcp field {field}"))?;
    Ok(values
        .split_whitespace()
        .nth(k)
        .context("short Tcp line")?
        .parse()?)
}

// ethtool's legacy ioctls (include/uapi/linux/ethtool.h) for the offloads that make one TCP skb
// carry several segments.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GTSO: u32 = 0x1e;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_GGSO: u32 = 0x23;
const ETHTOOL_SGSO: u32 = 0x24;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    _pad: [u8; 16],
}

fn ethtool(ifname: &str, cmd: u32, data: u32) -> Result<u32> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned here.
    let _fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut val = EthtoolValue { cmd, data };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut val,
        _pad: [0; 16],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: req is a valid ifreq whose ifr_data points at a live ethtool_value.
    if unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req) } != 0 {
        bail!(
            "ethtool ioctl {cmd:#x} on {ifname}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(val.data)
}

/// Turns off TCP segmentation offload and generic segmentation offload on `lo` of the calling
/// thread's namespace (as `ethtool -K lo tso off gso off`), and checks that they are off.
pub fn disable_lo_segmentation_offload() -> Result<()> {
    ethtool("lo", ETHTOOL_STSO, 0)?;
    ethtool("lo", ETHTOOL_SGSO, 0)?;
    let (tso, gso) = (
        ethtool("lo", ETHTOOL_GTSO, 0)?,
        ethtool("lo", ETHTOOL_GGSO, 0)?,
    );
    if tso != 0 || gso != 0 {
        bail!("lo still has tso={tso} gso={gso}");
    }
    Ok(())
}
