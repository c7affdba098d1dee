//! Block I/O latency: a known number of direct reads and writes on a loop device we create,
//! compared with the kernel's own counters for that device; and what the agent exports of
//! writes, a flush and a discard on such a device, to a real collector (rotel) and a real
//! Prometheus, under the OpenTelemetry semantic conventions' names.
//!
//! Why the counts must match exactly: /sys/block/loopN/stat counts a request when it completes
//! (blk_account_io_done, once per request however many bios were merged into it), which is the
//! unit block_rq_complete fires for. The device is new, nothing else uses it (checked: its
//! counters do not move while we are not doing I/O), each O_DIRECT 4 KiB pread/pwrite is one
//! request (issued one at a time, so none merge), and all of them are issued after observer has
//! attached and complete before it stops.

use std::time::{Duration, Instant};

use observer_tests::agent::{Agent, free_addr};
use observer_tests::blockdev::{self, DiskStat, LoopDevice};
use observer_tests::prom::{self, Prometheus};
use observer_tests::rotel::{self, Export, Rotel, TempDir};
use observer_tests::{Recording, observer_ok, report, require_root, skip_or_fail};

const READS: u64 = 2000;
const WRITES: u64 = 200;
const BLOCK: usize = 4096;
const SIZE_MIB: u64 = 64;

/// observer's `by_disk` entry for one disk and op: (device summary, queue summary).
fn entry<'a>(sig: &'a serde_json::Value, disk: &str, op: &str) -> Option<&'a serde_json::Value> {
    sig["by_disk"]
        .as_array()?
        .iter()
        .find(|e| e["disk"].as_str() == Some(disk) && e["op"].as_str() == Some(op))
}

fn run(scheduler: &str) {
    require_root!();
    let dev = LoopDevice::create(SIZE_MIB).expect("create loop device");
    let (available, _) = dev.schedulers().expect("read scheduler");
    if !available.iter().any(|s| s == scheduler) {
        panic!(
            "scheduler {scheduler} not offered by {}: {available:?}",
            dev.name
        );
    }
    dev.set_scheduler(scheduler).expect("set scheduler");
    eprintln!(
        "{} ({}) over a file in /tmp, direct I/O to backing file: {}, scheduler {scheduler}",
        dev.dev.display(),
        dev.disk(),
        dev.direct_io()
    );
    let f = dev.open_direct().expect("open loop device O_DIRECT");

    let top = 100;
    let at_spawn = dev.stat().unwrap();
    let rec = observer_ok!(
        Recording::start(&[
            "--signals",
            "blockio",
            "--duration",
            "5s",
            "--top",
            &top.to_string()
        ])
        .wait_attached()
    );
    let before = dev.stat().unwrap();
    let t = Instant::now();
    blockdev::direct_reads(&f, READS, BLOCK, SIZE_MIB << 20).expect("direct reads");
    blockdev::direct_writes(&f, WRITES, BLOCK, SIZE_MIB << 20).expect("direct writes");
    let io_time = t.elapsed();
    let after = dev.stat().unwrap();
    eprintln!(
        "{READS} reads + {WRITES} writes took {io_time:.2?}; {:?} left",
        rec.remaining()
    );
    assert!(
        rec.remaining() > Duration::from_millis(300),
        "the I/O did not finish well inside the recording ({io_time:?}); cannot compare counts"
    );
    let report = observer_ok!(rec.finish());
    let at_end = dev.stat().unwrap();
    drop(f);

    let delta = after.delta(&before);
    eprintln!("kernel counters for {}: {delta:?}", dev.name);
    // Our own premise: the device was quiet except for our I/O, which the kernel counted.
    assert_eq!(
        at_spawn, before,
        "someone else did I/O on {} before ours",
        dev.name
    );
    assert_eq!(
        at_end, after,
        "someone else did I/O on {} after ours",
        dev.name
    );
    assert_eq!(
        (delta.reads, delta.writes, delta.flushes, delta.discards),
        (READS, WRITES, 0, 0),
        "the kernel counted other requests than the ones we made"
    );

    assert_eq!(
        report.signal_keys(),
        ["block_io_latency"],
        "only the requested signal appears"
    );
    let sig = report.signal("block_io_latency");
    let (device, _) = report::histogram(sig, "block_io_latency");
    let (queue, _) = report::histogram(&sig["queue"], "block_io_latency.queue");
    eprintln!("block_io_latency device: {device:?}\nqueue: {queue:?}");
    let by_disk = report::breakdown(
        &sig["by_disk"],
        Some("device"),
        top,
        device.count,
        "block_io_latency.by_disk",
    );
    report::assert_adds_up(
        &by_disk,
        top,
        device.count,
        report::dropped(sig, "by_disk", "block_io_latency"),
        "block_io_latency.by_disk",
    );
    for (e, _) in &by_disk {
        let ctx = format!("by_disk entry {e}");
        let (ma, mi) = (
            report::u64_of(e, "major", &ctx),
            report::u64_of(e, "minor", &ctx),
        );
        assert_eq!(
            report::str_of(e, "disk", &ctx),
            format!("{ma}:{mi}"),
            "{ctx}"
        );
        let op = report::str_of(e, "op", &ctx);
        assert!(
            ["read", "write", "flush", "discard", "other"].contains(&op),
            "{ctx}: op {op:?} is not one of read, write, flush, discard, other"
        );
        report::Summary::parse(&e["queue"], &format!("{ctx}.queue"));
    }
    assert_eq!(
        report::dropped(sig, "inflight", "block_io_latency"),
        0,
        "requests went untimed"
    );

    let disk = dev.disk();
    let mut ours = Vec::new();
    for (op, expected) in [("read", delta.reads), ("write", delta.writes)] {
        let e = entry(sig, &disk, op).unwrap_or_else(|| {
            panic!(
                "no by_disk entry for {disk} op {op}: {}",
                serde_json::to_string_pretty(&sig["by_disk"]).unwrap()
            )
        });
        let d = report::Summary::parse(&e["device"], "device");
        let q = report::Summary::parse(&e["queue"], "queue");
        eprintln!("observer {disk} {op}: device {d:?}\n  queue {q:?}");
        assert_eq!(
            d.count, expected,
            "observer counted {} {op} requests on {disk}; the kernel's stat counted {expected}",
            d.count
        );
        assert!(
            d.sum_ns > 0 && d.p50_ns > 0.0,
            "{op} device time is zero: {d:?}"
        );
        ours.push((op, d, q));
    }
    for op in ["flush", "discard", "other"] {
        assert!(
            entry(sig, &disk, op).is_none(),
            "observer reports {op} requests on {disk}, the kernel none"
        );
    }
    // Our requests are part of the totals.
    assert!(
        device.count >= READS + WRITES,
        "total device count {} < our {}",
        device.count,
        READS + WRITES
    );

    match scheduler {
        // With an I/O scheduler every request is inserted into it (block_rq_insert) before it
        // is issued, so each has a queue time.
        "mq-deadline" => {
            for (op, d, q) in &ours {
                assert!(q.count > 0, "mq-deadline: no queue time for {op} on {disk}");
                assert_eq!(
                    q.count, d.count,
                    "mq-deadline: every {op} request is inserted then issued"
                );
            }
            assert!(
                queue.count >= READS + WRITES,
                "total queue count {} < our {}",
                queue.count,
                READS + WRITES
            );
        }
        // Without one, requests may be issued directly, never inserted: only those that were
        // inserted have a queue time, and each of those was then issued and completed.
        _ => {
            for (op, d, q) in &ours {
                assert!(
                    q.count <= d.count,
                    "{scheduler}: {} queue times for {} {op} requests",
                    q.count,
                    d.count
                );
            }
        }
    }
}

#[test]
fn block_io_requests_on_a_loop_device_match_the_kernel_counters_scheduler_none() {
    run("none");
}

#[test]
fn block_io_requests_on_a_loop_device_match_the_kernel_counters_scheduler_mq_deadline() {
    run("mq-deadline");
}

/// The agent, exporting every second to rotel and scraped by Prometheus, while WRITES direct
/// writes, an fsync (one flush request) and a discard go to a new loop device: its series are
/// named by `system.device`, with `disk.io.direction` for the writes (and any reads: udev
/// probes a device after a writer closes it) and `observer.disk.io.operation` for the flush
/// and the discard, never both, in OTLP and as Prometheus labels; their counts are the
/// kernel's.
#[test]
fn the_agent_exports_disk_io_by_device_direction_and_operation() {
    require_root!();
    let rotel_bin = match rotel::find_binary() {
        Ok(b) => b,
        Err(e) => skip_or_fail!("{e}"),
    };
    let Some(prometheus_bin) = prom::binary() else {
        skip_or_fail!("prometheus not found (install it: {})", prom::INSTALL)
    };
    let dev = LoopDevice::create(SIZE_MIB).expect("create loop device");
    let disk = dev.disk();
    let dir = TempDir::new("blockio-agent");
    let collector = Rotel::start(&rotel_bin, &dir.0, "rotel", rotel::free_ports());
    let listen = free_addr();
    let prometheus = Prometheus::start(&prometheus_bin, listen, false);
    let agent = observer_ok!(
        Agent::start(
            &[
                "--signals",
                "blockio",
                "--interval",
                "1s",
                "--otlp-endpoint",
                &collector.grpc_endpoint(),
                "--prometheus-listen",
                &listen.to_string()
            ],
            &[]
        )
        .ready()
    );
    let f = dev.open_direct().expect("open loop device O_DIRECT");
    let before = dev.stat().unwrap();
    blockdev::direct_writes(&f, WRITES, BLOCK, SIZE_MIB << 20).expect("direct writes");
    let written = dev.stat().unwrap();
    // blkdev_issue_flush: an empty write with a preflush, which the kernel issues as one flush
    // request (and counts in the stat file as a flush and, once done, a write).
    f.sync_all().expect("fsync");
    drop(f);
    observer_tests::run_ok(
        std::process::Command::new("blkdiscard")
            .args(["--offset", "0", "--length", "1048576"])
            .arg(&dev.dev),
    )
    .expect("blkdiscard (util-linux)");
    let after = dev.stat().unwrap();
    let (writes, done) = (written.delta(&before), after.delta(&written));
    eprintln!(
        "kernel counters for {}: {writes:?}, then {done:?}",
        dev.name
    );
    assert_eq!(writes.writes, WRITES, "the kernel counted other writes");
    assert_eq!(
        (done.flushes, done.discards),
        (1, 1),
        "one flush and one discard"
    );

    // OTLP: the device's series, by their second attribute.
    let device = format!("Str({disk})");
    let count = |e: &Export, key: &str, value: &str| -> u64 {
        let value = format!("Str({value})");
        e.metric("observer.block_io.device.duration")
            .and_then(|m| m.point(&[("system.device", device.as_str()), (key, value.as_str())]))
            .and_then(|p| p.count)
            .unwrap_or(0)
    };
    let expected = [
        ("disk.io.direction", "write", WRITES),
        ("observer.disk.io.operation", "flush", 1),
        ("observer.disk.io.operation", "discard", 1),
    ];
    let exports = collector.wait_for(
        "the writes, the flush and the discard",
        Duration::from_secs(15),
        |e| {
            e.last()
                .is_some_and(|e| expected.iter().all(|(k, v, n)| count(e, k, v) >= *n))
        },
    );
    let last = exports.last().unwrap();
    for (key, value, n) in expected {
        assert_eq!(count(last, key, value), n, "{key}={value}");
    }
    let ours = last
        .metric("observer.block_io.device.duration")
        .unwrap()
        .points
        .iter()
        .filter(|p| p.attr("system.device") == Some(device.as_str()));
    for p in ours {
        let direction = p.attr("disk.io.direction");
        let operation = p.attr("observer.disk.io.operation");
        assert!(
            p.attributes.len() == 2
                && match (direction, operation) {
                    (Some(d), None) => ["Str(read)", "Str(write)"].contains(&d),
                    (None, Some(o)) => ["Str(flush)", "Str(discard)", "Str(other)"].contains(&o),
                    _ => false,
                },
            "a series with both, neither, or another value: {:?}",
            p.attributes
        );
    }

    // Prometheus: the same names, as labels.
    let deadline = Instant::now() + Duration::from_secs(15);
    for (key, value, n) in expected {
        let query = format!(
            "observer_block_io_device_duration_seconds_count{{system_device=\"{disk}\",{}=\"{value}\"}}",
            key.replace('.', "_")
        );
        while prometheus.query_value(&query) != Some(n as f64) {
            assert!(
                Instant::now() < deadline,
                "{query} is {:?}, not {n}; Prometheus log:\n{}",
                prometheus.query_value(&query),
                prometheus.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    agent.terminate_ok();
}

#[test]
fn disk_stat_parsing() {
    let s = "    2000        0    16000       16      300        0     2400       30        0       16       46        0        0        0        0        3        1";
    let d = DiskStat::parse(s).unwrap();
    assert_eq!(
        (d.reads, d.writes, d.flushes, d.in_flight),
        (2000, 300, 3, 0)
    );
}
