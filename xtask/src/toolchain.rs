//! The toolchain pinned in rust-toolchain.toml. It builds everything, the eBPF object included, so
//! its LLVM is the one bpf-linker has to link.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cmd::Cmd;

/// What xtask uses on top of a minimal profile: rust-src for `-Z build-std=core` on the BPF
/// target, clippy and rustfmt for `lint`.
pub const COMPONENTS: [&str; 3] = ["rust-src", "clippy", "rustfmt"];

pub struct Toolchain {
    pub channel: String,
}

/// The LLVM shared library shipped in the toolchain's sysroot.
pub struct Llvm {
    pub sysroot: PathBuf,
    /// `<sysroot>/lib/libLLVM.so.<version>`: the file a matching bpf-linker must load.
    pub library: PathBuf,
    /// The major version, which selects bpf-linker's `llvm-<major>` feature.
    pub major: String,
}

impl Llvm {
    pub fn file_name(&self) -> &str {
        self.library
            .file_name()
            .and_then(|name| name.to_str())
            .expect("found by listing a directory for a UTF-8 prefix")
    }
}

impl Toolchain {
    /// Reads the `channel = "..."` line of rust-toolchain.toml.
    pub fn pinned(root: &Path) -> Result<Self> {
        let path = root.join("rust-toolchain.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let channel = parse_channel(&text)
            .with_context(|| format!("no `channel = \"...\"` line in {}", path.display()))?;
        Ok(Self { channel })
    }

    /// Installs the toolchain, or adds the components it lacks; a no-op when all are there.
    pub fn ensure_installed(&self) -> Result<()> {
        let missing = self.missing_components();
        if missing.is_empty() {
            return Ok(());
        }
        println!(
            "toolchain {}: missing {}; installing it",
            self.channel,
            missing.join(", ")
        );
        Cmd::new(
            "rustup",
            &[
                "toolchain",
                "install",
                // rustup is the machine's, not the project's: never replace it as a side effect.
                "--no-self-update",
                &self.channel,
                "--profile",
                "minimal",
                "-c",
                &COMPONENTS.join(","),
            ],
        )
        .run()
        .context("installing the pinned toolchain (is rustup installed and on PATH?)")?;
        let still = self.missing_components();
        if !still.is_empty() {
            bail!(
                "toolchain {} still lacks {} after installing; try `rustup component add --toolchain {} {}`",
                self.channel,
                still.join(", "),
                self.channel,
                still.join(" ")
            );
        }
        Ok(())
    }

    /// The components (or the whole toolchain, as "the toolchain") that are not installed.
    fn missing_components(&self) -> Vec<&'static str> {
        // rustup fails here when the toolchain is absent, and (unlike `rustc +channel`) never
        // installs it as a side effect.
        let listed = Cmd::new(
            "rustup",
            &[
                "component",
                "list",
                "--installed",
                "--toolchain",
                &self.channel,
            ],
        )
        .query();
        match listed {
            Ok(installed) => missing_from(&installed),
            Err(_) => vec!["the toolchain"],
        }
    }

    /// The host's target triple (`host:` of `rustc -vV`).
    pub fn host(&self) -> Result<String> {
        let version = Cmd::new("rustc", &[&format!("+{}", self.channel), "-vV"]).query()?;
        version
            .lines()
            .find_map(|line| line.strip_prefix("host: "))
            .map(str::to_owned)
            .with_context(|| format!("no `host:` line in `rustc +{} -vV`", self.channel))
    }

    /// The toolchain's own llvm-profdata (component llvm-tools, added when missing), which
    /// reads the profiles its `-Cprofile-generate` builds write.
    pub fn llvm_profdata(&self) -> Result<PathBuf> {
        let sysroot = Cmd::new(
            "rustc",
            &[&format!("+{}", self.channel), "--print", "sysroot"],
        )
        .query()?;
        let tool = Path::new(sysroot.trim())
            .join("lib/rustlib")
            .join(self.host()?)
            .join("bin/llvm-profdata");
        if !tool.exists() {
            Cmd::new(
                "rustup",
                &[
                    "component",
                    "add",
                    "--toolchain",
                    &self.channel,
                    "llvm-tools",
                ],
            )
            .run()?;
        }
        if !tool.exists() {
            bail!("{} is missing after adding llvm-tools", tool.display());
        }
        Ok(tool)
    }

    pub fn llvm(&self) -> Result<Llvm> {
        let plus = format!("+{}", self.channel);
        let sysroot = PathBuf::from(
            Cmd::new("rustc", &[&plus, "--print", "sysroot"])
                .query()?
                .trim(),
        );
        let version = Cmd::new("rustc", &[&plus, "-vV"]).query()?;
        let major = llvm_major(&version)
            .with_context(|| format!("no `LLVM version:` line in `rustc {plus} -vV`"))?
            .to_owned();
        let library = llvm_library(&sysroot.join("lib"))?;
        Ok(Llvm {
            sysroot,
            library,
            major,
        })
    }
}

/// The value of the `channel = "..."` line of rust-toolchain.toml.
fn parse_channel(toml: &str) -> Option<String> {
    toml.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .find_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .filter(|channel| !channel.is_empty())
}

/// The components missing from `rustup component list --installed` output. Installed names carry
/// the host triple (`clippy-x86_64-unknown-linux-gnu`) except target-independent ones
/// (`rust-src`).
fn missing_from(installed: &str) -> Vec<&'static str> {
    COMPONENTS
        .into_iter()
        .filter(|component| {
            !installed.lines().any(|line| {
                line == *component
                    || line
                        .strip_prefix(component)
                        .is_some_and(|rest| rest.starts_with('-'))
            })
        })
        .collect()
}

/// The LLVM major version from `rustc -vV` output (`LLVM version: 22.1.8`).
fn llvm_major(rustc_version: &str) -> Option<&str> {
    rustc_version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|full| full.split('.').next())
}

/// The single `libLLVM.so.*` in a toolchain's lib directory (the other libLLVM file there is a
/// linker script pointing at it).
fn llvm_library(lib: &Path) -> Result<PathBuf> {
    let entries = std::fs::read_dir(lib).with_context(|| format!("listing {}", lib.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        if name
            .to_str()
            .is_some_and(|name| name.starts_with("libLLVM.so."))
        {
            found.push(lib.join(name));
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected exactly one libLLVM.so.* in {}, found {}; reinstall the toolchain \
             (`rustup toolchain uninstall` then `cargo xtask setup`)",
            lib.display(),
            found.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{llvm_major, missing_from, parse_channel};

    #[test]
    fn reads_the_channel() {
        let toml = "# comment\n[toolchain]\nchannel = \"1.98.0\"\nprofile = \"minimal\"\n";
        assert_eq!(parse_channel(toml).as_deref(), Some("1.98.0"));
        assert_eq!(parse_channel("[toolchain]\nprofile = \"minimal\"\n"), None);
    }

    #[test]
    fn finds_missing_components() {
        let installed = "cargo-x86_64-unknown-linux-gnu\nrust-src\nrust-std-x86_64-unknown-linux-gnu\n\
                         rustfmt-x86_64-unknown-linux-gnu\n";
        assert_eq!(missing_from(installed), ["clippy"]);
        assert_eq!(
            missing_from("rust-std-x86_64-unknown-linux-gnu\n"),
            ["rust-src", "clippy", "rustfmt"]
        );
    }

    #[test]
    fn reads_the_llvm_major() {
        let version = "rustc 1.98.0 (88d9e12ae 2026-08-18)\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.8\n";
        assert_eq!(llvm_major(version), Some("22"));
    }
}
