//! Kernel lock contention: many threads of one process mapping and unmapping memory contend on
//! its mmap_lock, an rwsem that mmap and munmap take for writing.

use std::time::Duration;

use observer_tests::{Recording, observer_ok, report, require_root};

const LOADGEN: &str = env!("CARGO_BIN_EXE_observer-loadgen");
const CLASSES: [&str; 10] = [
    "spinlock",
    "rwlock_read",
    "rwlock_write",
    "mutex",
    "rwsem_read",
    "rwsem_write",
    "rt_mutex",
    "percpu_rwsem_read",
    "percpu_rwsem_write",
    "other",
];

#[test]
fn mmap_lock_contention_is_recorded_as_rwsem_waits() {
    require_root!();
    let top = 100;
    let rec = observer_ok!(
        Recording::start(&[
            "--signals",
            "lock",
            "--duration",
            "4s",
            "--top",
            &top.to_string()
        ])
        .wait_attached()
    );
    let secs = (rec.remaining().as_secs_f64() - 1.0).floor().max(1.0) as u64;
    let child = observer_tests::loadgen_cmd(LOADGEN)
        .args(["mmap", "8", &secs.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start load generator");
    let out = observer_tests::ChildGuard::new(child)
        .wait_output(Duration::from_secs(30))
        .expect("load generator");
    assert!(out.status.success(), "load generator failed: {out:?}");
    eprintln!(
        "load generator: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    let report = observer_ok!(rec.finish());
    assert_eq!(
        report.signal_keys(),
        ["lock_contention"],
        "only the requested signal appears"
    );

    let sig = report.signal("lock_contention");
    let (total, buckets) = report::histogram(sig, "lock_contention");
    eprintln!("lock_contention: {total:?}\nbuckets: {buckets:?}");
    assert!(
        total.count > 0,
        "no kernel lock contention recorded under an mmap/munmap storm"
    );

    // There are 10 classes and --top is 100, so the list is complete and adds up to the total.
    let by_class = report::breakdown(
        &sig["by_class"],
        None,
        top,
        total.count,
        "lock_contention.by_class",
    );
    report::assert_adds_up(&by_class, top, total.count, 0, "lock_contention.by_class");
    let mut seen = Vec::new();
    for (e, s) in &by_class {
        let class = report::str_of(e, "class", "by_class entry");
        assert!(CLASSES.contains(&class), "unknown lock class {class:?}");
        assert!(!seen.contains(&class), "class {class} listed twice");
        seen.push(class);
        eprintln!("  {class}: {s:?}");
    }
    let rwsem = by_class
        .iter()
        .filter(|(e, _)| matches!(e["class"].as_str(), Some("rwsem_read" | "rwsem_write")))
        .map(|(_, s)| s.count)
        .sum::<u64>();
    assert!(
        rwsem > 0,
        "no rwsem contention recorded, though 8 threads took one process's mmap_lock for writing in a loop: {}",
        sig["by_class"]
    );
}
