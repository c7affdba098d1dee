//! Rebuild the programs when bpf-linker changes (it is what links them), as aya-template does.

fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
