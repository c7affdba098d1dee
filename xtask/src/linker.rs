//! bpf-linker: rustc links the eBPF object with the `bpf-linker` it finds on PATH, which only works
//! when it loads the same LLVM as the rustc that produced the bitcode. It is therefore
//! built against the pinned toolchain's own libLLVM, found through its runpath, and rebuilt when
//! that toolchain changes.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use crate::cmd::Cmd;
use crate::toolchain::{Llvm, Toolchain};

/// The bpf-linker release this project is tested with.
const VERSION: &str = "0.13.0";

/// Why an existing bpf-linker cannot be used.
enum Problem {
    Missing,
    NoLibLlvm,
    WrongLibLlvm { needed: String },
    Unresolved { needed: String },
    OutsideSysroot { resolved: PathBuf },
    WrongVersion { reported: String },
    Inspect(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Missing => write!(f, "is missing"),
            Self::NoLibLlvm => write!(f, "does not load a shared libLLVM"),
            Self::WrongLibLlvm { needed } => write!(f, "links {needed}"),
            Self::Unresolved { needed } => write!(f, "cannot find {needed} through its runpath"),
            Self::OutsideSysroot { resolved } => {
                write!(f, "loads {}, outside the sysroot", resolved.display())
            }
            Self::WrongVersion { reported } => write!(f, "is `{reported}`, not {VERSION}"),
            Self::Inspect(error) => write!(f, "could not be inspected: {error}"),
        }
    }
}

/// Makes sure `$CARGO_HOME/bin/bpf-linker` matches the pinned toolchain, rebuilding it when it is
/// missing or wrong, and returns its path. rustup puts `$CARGO_HOME/bin` first on PATH for every
/// process it starts (cargo, rustc, and so aya-build's nested cargo), so that is the linker rustc
/// runs whatever else is on PATH.
pub fn ensure(toolchain: &Toolchain, llvm: &Llvm) -> Result<PathBuf> {
    let linker = cargo_home()?.join("bin").join("bpf-linker");
    let Err(problem) = check(&linker, llvm) else {
        return Ok(linker);
    };
    println!(
        "bpf-linker: {} {problem}; rebuilding bpf-linker {VERSION} against {} of toolchain {} \
         (1-3 minutes)",
        linker.display(),
        llvm.file_name(),
        toolchain.channel
    );
    build(toolchain, llvm, &linker)?;
    check(&linker, llvm).map_err(|problem| {
        anyhow!(
            "the freshly built {} {problem}; see the bpf-linker notes in \
             shared/notes/toolchain.md",
            linker.display()
        )
    })?;
    Ok(linker)
}

/// Builds bpf-linker against the sysroot's libLLVM (no system LLVM needed). `llvm-sys` wants a
/// plain `libLLVM.so` to link with, which the sysroot lacks, so a temporary directory provides
/// one as a symlink; the binary records the versioned file name and the sysroot's lib directory
/// as its runpath.
fn build(toolchain: &Toolchain, llvm: &Llvm, linker: &Path) -> Result<()> {
    let root = linker
        .parent()
        .and_then(Path::parent)
        .context("bpf-linker's install path has no root")?;
    let shim = Shim::create(llvm)?;
    let rustflags = format!("-L native={}", shim.0.display());
    Cmd::cargo(&[
        &format!("+{}", toolchain.channel),
        "install",
        "--locked",
        "--force",
        &format!("bpf-linker@{VERSION}"),
        "--no-default-features",
        "--features",
        &format!("llvm-{}", llvm.major),
        "--root",
        &root.to_string_lossy(),
    ])
    .env("LLVM_PREFIX", &llvm.sysroot)
    .env("RUSTFLAGS", rustflags)
    // Encoded flags would take precedence over RUSTFLAGS and drop the shim.
    .env_remove("CARGO_ENCODED_RUSTFLAGS")
    // Outside the workspace, so its config and toolchain file play no part.
    .current_dir(&shim.0)
    .run()
    .context(
        "building bpf-linker failed; it needs crates.io and a C compiler for llvm-sys \
         (apt-get install gcc)",
    )
}

/// A temporary directory holding `libLLVM.so -> <sysroot>/lib/libLLVM.so.<version>`, removed
/// when dropped.
struct Shim(PathBuf);

impl Shim {
    fn create(llvm: &Llvm) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("xtask-llvm-shim-{}", std::process::id()));
        // A leftover from an interrupted run with the same pid is stale.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let shim = Self(dir);
        std::os::unix::fs::symlink(&llvm.library, shim.0.join("libLLVM.so"))
            .with_context(|| format!("linking libLLVM.so in {}", shim.0.display()))?;
        Ok(shim)
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Checks which libLLVM the binary loads (as `ldd` resolves it from the binary's own runpath)
/// and that it runs and is the pinned release.
fn check(linker: &Path, llvm: &Llvm) -> Result<(), Problem> {
    if !linker.is_file() {
        return Err(Problem::Missing);
    }
    // rustup puts the toolchain's lib directory on LD_LIBRARY_PATH for everything it runs, this
    // process included: without clearing it a linker with a broken runpath would look fine here.
    let ldd = Cmd::new("ldd", &[&linker.to_string_lossy()])
        .env_remove("LD_LIBRARY_PATH")
        .query()
        .map_err(|error| Problem::Inspect(format!("{error:#}")))?;
    let (needed, resolved) = libllvm_dependency(&ldd).ok_or(Problem::NoLibLlvm)?;
    if needed != llvm.file_name() {
        return Err(Problem::WrongLibLlvm {
            needed: needed.to_owned(),
        });
    }
    let resolved = resolved.ok_or_else(|| Problem::Unresolved {
        needed: needed.to_owned(),
    })?;
    if !same_file(&resolved, &llvm.library) {
        return Err(Problem::OutsideSysroot { resolved });
    }
    let reported = Cmd::new(&linker.to_string_lossy(), &["--version"])
        .env_remove("LD_LIBRARY_PATH")
        .query()
        .map_err(|error| Problem::Inspect(format!("{error:#}")))?;
    let reported = reported.trim();
    if reported != format!("bpf-linker {VERSION}") {
        return Err(Problem::WrongVersion {
            reported: reported.to_owned(),
        });
    }
    Ok(())
}

/// The libLLVM a binary needs, from `ldd` output, and the file it resolves to (`None` when not
/// found): `\tlibLLVM.so.22.1-rust-1.98.0-stable => /path/libLLVM.so.22.1-... (0x00007f...)`.
fn libllvm_dependency(ldd: &str) -> Option<(&str, Option<PathBuf>)> {
    let (needed, resolved) = ldd
        .lines()
        .filter_map(|line| line.trim().split_once(" => "))
        .find(|(needed, _)| needed.starts_with("libLLVM"))?;
    let path = resolved
        .rsplit_once(" (")
        .map(|(path, _)| path)
        .filter(|path| path.starts_with('/'))
        .map(PathBuf::from);
    Some((needed, path))
}

/// `$CARGO_HOME`, which rustup sets (by default to `~/.cargo`) for everything it runs.
fn cargo_home() -> Result<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .context("CARGO_HOME is not set: run xtask through rustup's cargo, as `cargo xtask ...`")
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::libllvm_dependency;

    #[test]
    fn finds_the_libllvm_line_of_ldd() {
        let ldd = "\tlinux-vdso.so.1 (0x00007f8847121000)
\tlibLLVM.so.22.1-rust-1.98.0-stable => /root/.rustup/toolchains/1.98.0-x86_64-unknown-linux-gnu/lib/libLLVM.so.22.1-rust-1.98.0-stable (0x00007f883c600000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f883c41e000)
";
        let (needed, resolved) = libllvm_dependency(ldd).unwrap();
        assert_eq!(needed, "libLLVM.so.22.1-rust-1.98.0-stable");
        assert_eq!(
            resolved,
            Some(PathBuf::from(
                "/root/.rustup/toolchains/1.98.0-x86_64-unknown-linux-gnu/lib/libLLVM.so.22.1-rust-1.98.0-stable"
            ))
        );
    }

    #[test]
    fn reports_an_unresolved_or_absent_libllvm() {
        let ldd = "\tlibLLVM.so.23.1-rust-1.99.0-stable => not found\n";
        assert_eq!(
            libllvm_dependency(ldd),
            Some(("libLLVM.so.23.1-rust-1.99.0-stable", None))
        );
        assert_eq!(libllvm_dependency("\tnot a dynamic executable\n"), None);
    }
}
