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
        "building bpf-linker failed; it needs a C++ toolchain (apt-get install build-essential) \
         and crates.io",
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
    // Cargo puts toolchain directories on LD_LIBRARY_PATH for `cargo xtask`; without clearing it
    // a linker with a broken runpath would look fine here and fail under rustc.
    let ldd = Cmd::new("ldd", &[&linker.to_string_lossy()])
        .env_remove("LD_LIBRARY_PATH")
        .query()
        .map_err(|error| Problem::Inspect(format!("{error:#}")))?;
    let (needed, resolved) = ldd
        .lines()
        .filter_map(|line| line.trim().split_once(" => "))
        .find(|(needed, _)| needed.starts_with("libLLVM"))
        .ok_or(Problem::NoLibLlvm)?;
    if needed != llvm.file_name() {
        return Err(Problem::WrongLibLlvm {
            needed: needed.to_owned(),
        });
    }
    // `=> /path/libLLVM.so.22.1-... (0x00007f...)`, or `=> not found`.
    let resolved = match resolved.rsplit_once(" (") {
        Some((path, _)) if path.starts_with('/') => PathBuf::from(path),
        _ => {
            return Err(Problem::Unresolved {
                needed: needed.to_owned(),
            });
        }
    };
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
