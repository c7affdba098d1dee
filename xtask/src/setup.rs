//! `cargo xtask setup`: installs what is missing, checks the rest, and says so in one line.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use crate::toolchain::{self, Toolchain};
use crate::{linker, packages, python};

/// How much a command needs set up.
#[derive(Clone, Copy)]
pub enum Scope {
    /// Toolchain and bpf-linker: enough to build, lint and run the unit tests.
    Build,
    /// Also the Debian and PyPI packages the end-to-end and export tests drive.
    Full,
}

pub fn run(root: &Path, scope: Scope) -> Result<()> {
    let start = Instant::now();
    println!("==> setup");
    let toolchain = Toolchain::pinned(root)?;
    toolchain.ensure_installed()?;
    let llvm = toolchain.llvm()?;
    let linker = linker::ensure(&toolchain, &llvm)?;
    let packages = match scope {
        Scope::Build => "not checked (only the end-to-end tests need them)".to_owned(),
        Scope::Full => {
            packages::ensure()?;
            format!("{}; {}", packages::PACKAGES.join(" "), python::ensure()?)
        }
    };
    println!(
        "setup ok in {:.1} s: toolchain {} with {}; {} on {}; Debian packages {packages}",
        start.elapsed().as_secs_f64(),
        toolchain.channel,
        toolchain::COMPONENTS.join(", "),
        linker.display(),
        llvm.file_name(),
    );
    Ok(())
}
