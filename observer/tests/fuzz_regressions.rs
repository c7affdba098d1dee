//! Replays the fuzz targets' seeds and every input that once made one panic
//! (fuzz/seeds/TARGET/, fuzz/regressions/TARGET/) through the same code the targets run
//! (fuzz/harness.rs), so that a fixed panic stays fixed without a fuzzing toolchain: this runs in
//! every `cargo test`. `cargo xtask fuzz` searches for new ones.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/harness.rs"]
mod harness;

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn fuzz_seeds_and_regressions_do_not_panic() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for (target, run) in harness::TARGETS {
        for kind in ["seeds", "regressions"] {
            for file in inputs(&fuzz.join(kind).join(target)) {
                let bytes = std::fs::read(&file).unwrap();
                // The targets take &str: libFuzzer skips inputs that are not UTF-8.
                let Ok(text) = std::str::from_utf8(&bytes) else {
                    continue;
                };
                println!("{target}: {}", file.display());
                run(text);
                replayed += 1;
            }
        }
    }
    assert!(
        replayed >= harness::TARGETS.len(),
        "only {replayed} inputs in {}",
        fuzz.display()
    );
}
