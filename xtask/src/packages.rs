//! Debian packages whose programs the tests use: to create real load, and real receivers.

use anyhow::{Context, Result, bail};

use crate::cmd::{Cmd, is_root};

/// All in Debian 12's main archive: `nft` (nftables), `ip netns` (iproute2), `losetup` and
/// `setpriv` (util-linux), `setcap` (libcap2-bin), a real Prometheus server (prometheus) for the
/// scrape tests, `perf bench` (linux-perf) for load by hand and the benchmarks, and a real
/// terminal (tmux) for `observer top`, `systemd-analyze` (systemd) to verify the unit file,
/// `openssl` to make CAs and certificates (the HTTPS pod server of Kubernetes enrichment, the
/// TLS collector), `nginx` to terminate TLS in front of the OTLP collector, `runqlat`
/// (libbpf-tools), the peer the run-queue signal is compared with, `groff` (groff-base) to
/// render the man pages, and `script` (bsdutils) to run observer on a terminal (NO_COLOR).
pub const PACKAGES: [&str; 13] = [
    "linux-perf",
    "nftables",
    "iproute2",
    "util-linux",
    "libcap2-bin",
    "prometheus",
    "tmux",
    "systemd",
    "openssl",
    "nginx",
    "libbpf-tools",
    "groff-base",
    "bsdutils",
];

/// Another apt run (unattended upgrades, a colleague) may hold dpkg's lock: wait instead of
/// failing at once.
const LOCK_TIMEOUT: &str = "DPkg::Lock::Timeout=300";

/// `apt-get update`, then installs `packages` without recommends, unattended.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    Cmd::new("apt-get", &["-q", "-o", LOCK_TIMEOUT, "update"]).run()?;
    let mut install = vec![
        "-q",
        "-o",
        LOCK_TIMEOUT,
        "install",
        "-y",
        "--no-install-recommends",
    ];
    install.extend(packages);
    Cmd::new("apt-get", &install)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
}

/// Installs whichever packages are missing.
pub fn ensure() -> Result<()> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root()? {
        bail!(
            "Debian packages missing: {list}; install them as root: \
             apt-get update && apt-get install -y --no-install-recommends {list}"
        );
    }
    println!("Debian packages missing: {list}; installing them");
    apt_install(&missing)?;
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
    Ok(())
}

fn missing_packages() -> Result<Vec<&'static str>> {
    // dpkg-query exits 1 when some package is unknown, which is an answer here, not an error:
    // read its output whatever the status.
    let output = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\\n"])
        .args(PACKAGES)
        .stderr(std::process::Stdio::null())
        .output()
        .context("could not run dpkg-query: this setup expects Debian (12)")?;
    Ok(missing_from(&String::from_utf8_lossy(&output.stdout)))
}

/// The packages not listed as "install ok installed" in `dpkg-query -W -f='${Package} ${Status}'`
/// output (a removed package keeps a line with another status).
fn missing_from(listed: &str) -> Vec<&'static str> {
    let installed: Vec<&str> = listed
        .lines()
        .filter_map(|line| line.strip_suffix(" install ok installed"))
        .collect();
    PACKAGES
        .into_iter()
        .filter(|package| !installed.contains(package))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::missing_from;

    #[test]
    fn finds_packages_not_installed() {
        let listed = "libcap2-bin deinstall ok config-files\n\
                      iproute2 install ok installed\nlinux-perf install ok installed\n\
                      util-linux install ok installed\nprometheus install ok installed\n\
                      tmux install ok installed\nsystemd install ok installed\n\
                      openssl install ok installed\nnginx install ok installed\n\
                      groff-base install ok installed\nbsdutils install ok installed\n";
        assert_eq!(
            missing_from(listed),
            ["nftables", "libcap2-bin", "libbpf-tools"]
        );
    }
}
