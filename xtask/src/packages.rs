//! Debian packages whose programs the end-to-end tests use to create real load.

use anyhow::{Context, Result, bail};

use crate::cmd::{Cmd, is_root};

/// All in Debian 12's main archive: `perf bench` (linux-perf), `nft` (nftables), `ip netns`
/// (iproute2), `losetup` (util-linux), `fio`, `ethtool`, `tmux` and `ps`/`sysctl` (procps).
const PACKAGES: [&str; 8] = [
    "linux-perf",
    "nftables",
    "iproute2",
    "util-linux",
    "fio",
    "ethtool",
    "tmux",
    "procps",
];

/// Another apt run (unattended upgrades, a colleague) may hold dpkg's lock: wait instead of
/// failing at once.
const LOCK_TIMEOUT: &str = "DPkg::Lock::Timeout=300";

/// Installs whichever packages are missing; returns how many are present.
pub fn ensure() -> Result<usize> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        return Ok(PACKAGES.len());
    }
    let list = missing.join(" ");
    if !is_root()? {
        bail!(
            "Debian packages missing: {list}; install them as root: \
             apt-get update && apt-get install -y --no-install-recommends {list}"
        );
    }
    println!("Debian packages missing: {list}; installing them");
    Cmd::new("apt-get", &["-o", LOCK_TIMEOUT, "update"]).run()?;
    let mut install = vec![
        "-o",
        LOCK_TIMEOUT,
        "install",
        "-y",
        "--no-install-recommends",
    ];
    install.extend(missing.iter().copied());
    Cmd::new("apt-get", &install)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    let still = missing_packages()?;
    if !still.is_empty() {
        bail!(
            "Debian packages still missing after apt-get install: {}",
            still.join(" ")
        );
    }
    if missing.contains(&"linux-perf") {
        check_perf()?;
    }
    Ok(PACKAGES.len())
}

/// The packages dpkg does not report as "install ok installed" (removed ones keep a status line).
fn missing_packages() -> Result<Vec<&'static str>> {
    // dpkg-query exits 1 when some package is unknown, which is an answer here, not an error:
    // read its output whatever the status.
    let output = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\\n"])
        .args(PACKAGES)
        .stderr(std::process::Stdio::null())
        .output()
        .context("could not run dpkg-query: this setup expects Debian (12)")?;
    let listed = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = listed
        .lines()
        .filter_map(|line| line.strip_suffix(" install ok installed"))
        .collect();
    Ok(PACKAGES
        .into_iter()
        .filter(|package| !installed.contains(package))
        .collect())
}

/// Debian's perf is built for the Debian kernel; make sure it still runs the benchmarks the tests
/// use on the kernel this machine boots.
fn check_perf() -> Result<()> {
    Cmd::new(
        "perf",
        &["bench", "sched", "messaging", "-g", "1", "-l", "10"],
    )
    .query()
    .map(drop)
    .context("perf from linux-perf does not run `perf bench` on this kernel")
}
