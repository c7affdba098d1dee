//! Load generators for the end-to-end tests (and the lock workload of `cargo xtask bench`), run
//! as child processes so each condition comes from one known process (its pid is the tgid
//! observer reports; its threads are left unnamed so they all carry the process's comm).
//!
//! Usage:
//!   observer-loadgen sched SECS       scheduler load pinned to CPU 0 (wakeups and preemption)
//!   observer-loadgen mmap THREADS SECS  mmap/munmap from many threads (mmap_lock contention;
//!                                     SECS may be fractional)
//!   observer-loadgen futex HOLD_MS REPS  one thread holds a Mutex for HOLD_MS while another waits
//!   observer-loadgen crosswake ROUNDS  this process, blocked in read() on a pipe on CPU 1, is
//!                                     woken ROUNDS times, 10 ms apart, by a child on CPU 0
//!   observer-loadgen wake SECS        sleeps 1 ms at a time: a wakeup (a run-queue wait) each,
//!                                     with almost no CPU (to attribute waits to many processes)
//!   observer-loadgen tcp ADDR PORT MIB  sends MIB MiB to itself over TCP, listening on
//!                                     ADDR:PORT (its sockets are this process's, so its cgroup's)
//!   observer-loadgen storm DIR CGROUPS PROCS SECS  fork storms for SECS: PROCS processes at a
//!                                     time spread over CGROUPS cgroups it makes in the cgroup2
//!                                     directory DIR (the per-process breakdown maps at capacity)
//!
//! Prints what it measured itself, one `key value` per line, on stdout.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |k: usize| -> u64 {
        args.get(k)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| usage())
    };
    match args.first().map(String::as_str) {
        Some("sched") => sched(Duration::from_secs_f64(num(1) as f64)),
        Some("mmap") => mmap(
            num(1) as usize,
            args.get(2)
                .and_then(|a| Duration::try_from_secs_f64(a.parse().ok()?).ok())
                .unwrap_or_else(|| usage()),
        ),
        Some("futex") => futex(Duration::from_millis(num(1)), num(2)),
        Some("wake") => wake(Duration::from_secs(num(1))),
        Some("crosswake") => crosswake(num(1)),
        Some("tcp") => tcp(
            args.get(1)
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| usage()),
            num(2) as u16,
            num(3) as usize,
        ),
        Some("storm") => storm(
            args.get(1)
                .map(std::path::Path::new)
                .unwrap_or_else(|| usage()),
            num(2) as usize,
            num(3) as usize,
            Duration::from_secs(num(4)),
        ),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: observer-loadgen sched SECS | mmap THREADS SECS | futex HOLD_MS REPS | wake SECS \
         | crosswake ROUNDS
         | tcp ADDR PORT MIB | storm DIR CGROUPS PROCS SECS"
    );
    std::process::exit(2)
}

/// Pins the calling thread (and the threads it spawns after) to `cpu`.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity on ourselves.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

/// Scheduler load on one CPU: two threads ping-ponging a byte over two pipes (each wakes the
/// other: wakeup latency, as `perf bench sched pipe`), while two more threads spin on the same
/// CPU (so woken threads wait in the run queue behind them, and spinners preempt each other).
/// Threads inherit the main thread's affinity.
fn sched(secs: Duration) {
    pin_to_cpu(0);
    let stop = Arc::new(AtomicBool::new(false));
    let round_trips = Arc::new(AtomicU64::new(0));
    let (mut a_rx, mut a_tx) = pipe();
    let (mut b_rx, mut b_tx) = pipe();
    let mut handles = Vec::new();
    {
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            while a_rx.read_exact(&mut byte).is_ok() && byte[0] != 0 {
                if b_tx.write_all(&byte).is_err() {
                    break;
                }
                if stop.load(Ordering::Relaxed) {
                    let _ = b_tx.write_all(&[0]);
                    break;
                }
            }
        }));
    }
    {
        let stop = stop.clone();
        let round_trips = round_trips.clone();
        handles.push(std::thread::spawn(move || {
            let mut byte = [1u8; 1];
            loop {
                if a_tx.write_all(&[1]).is_err()
                    || b_rx.read_exact(&mut byte).is_err()
                    || byte[0] == 0
                {
                    break;
                }
                round_trips.fetch_add(1, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) {
                    let _ = a_tx.write_all(&[0]);
                    break;
                }
            }
        }));
    }
    for _ in 0..2 {
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }));
    }
    std::thread::sleep(secs);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    println!("round_trips {}", round_trips.load(Ordering::Relaxed));
}

/// Sleeps 1 ms at a time for `secs`: every wakeup makes the process runnable, then running.
fn wake(secs: Duration) {
    let deadline = Instant::now() + secs;
    let mut wakeups = 0u64;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        wakeups += 1;
    }
    println!("wakeups {wakeups}");
}

/// CLOCK_MONOTONIC in nanoseconds: the clock bpf_ktime_get_ns reads, and the same in every
/// process, so a timestamp taken in one process can be subtracted from one taken in another.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The value at quantile `q` of sorted `v` (nearest rank).
fn quantile(v: &[u64], q: f64) -> u64 {
    v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

/// A wake-up across CPUs, `rounds` times: a child process pinned to CPU 0 sleeps 10 ms, takes
/// the time and writes it into a pipe; this process, pinned to CPU 1, is blocked in read() on
/// that pipe and takes the time as soon as read() returns. The difference is the delay from the
/// write to the sleeper running again: the run-queue wait (on an otherwise idle CPU 1, mostly
/// getting that CPU out of idle) plus the system calls around it.
///
/// The waker is a process of its own, not a thread, so that observer's row for this process
/// holds the sleeper's waits alone (the waker's own wake-ups from its sleeps are waits too).
///
/// After each wake-up the sleeper also times a write and a read of the same size on a pipe of
/// its own, which never block: the system-call time inside the delay, measured in the same
/// conditions (right after a wake-up, on the same CPU), for the caller to subtract.
///
/// Both run SCHED_FIFO, so that other work on the machine changes neither side of the
/// comparison: the waker is not preempted between taking the time and writing, and the sleeper
/// gets CPU 1 as soon as the scheduler can give it, so it is never still waiting when the next
/// message comes (it would then read two messages after one wait, and the program and observer
/// would count different waits). What is left of its wait is what the issue is about: leaving
/// idle, or the wait for the task on CPU 1 to reach a point where it can be preempted.
///
/// Prints the number of wake-ups and the p50 and p90 of both, in ns.
fn crosswake(rounds: u64) {
    const MSG: usize = size_of::<u64>();
    // SAFETY: sched_setscheduler on ourselves with a valid sched_param; the child inherits it.
    let rt = unsafe {
        let param = libc::sched_param { sched_priority: 10 };
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &param)
    };
    assert_eq!(
        rt,
        0,
        "SCHED_FIFO: {} (crosswake needs root or CAP_SYS_NICE)",
        std::io::Error::last_os_error()
    );
    let (mut rx, mut tx) = pipe();
    // SAFETY: fork while single-threaded; the child only sleeps, writes and exits.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
    if child == 0 {
        drop(rx);
        pin_to_cpu(0);
        for _ in 0..rounds {
            std::thread::sleep(Duration::from_millis(10));
            let sent = monotonic_ns();
            if tx.write_all(&sent.to_ne_bytes()).is_err() {
                break;
            }
        }
        // SAFETY: leaves the child without running the parent's exit handlers twice.
        unsafe { libc::_exit(0) };
    }
    drop(tx);
    pin_to_cpu(1);
    let (mut own_rx, mut own_tx) = pipe();
    let mut wakes = Vec::new();
    let mut syscalls = Vec::new();
    let mut msg = [0u8; MSG];
    // Each write is one message of PIPE_BUF bytes or less, so each read returns exactly one.
    while rx.read_exact(&mut msg).is_ok() {
        let woke = monotonic_ns();
        wakes.push(woke.saturating_sub(u64::from_ne_bytes(msg)));
        let start = monotonic_ns();
        own_tx.write_all(&msg).expect("write to own pipe");
        own_rx.read_exact(&mut msg).expect("read from own pipe");
        syscalls.push(monotonic_ns() - start);
    }
    // SAFETY: waitpid on our own child.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    assert_eq!(wakes.len() as u64, rounds, "wake-ups received");
    wakes.sort_unstable();
    syscalls.sort_unstable();
    println!("wakeups {}", wakes.len());
    println!("wake_p50_ns {}", quantile(&wakes, 0.5));
    println!("wake_p90_ns {}", quantile(&wakes, 0.9));
    println!("syscall_p50_ns {}", quantile(&syscalls, 0.5));
    println!("syscall_p90_ns {}", quantile(&syscalls, 0.9));
}

fn pipe() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 returns; each is owned by one File.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

/// Many threads mapping, touching and unmapping memory: mmap and munmap take the process's
/// mmap_lock (an rwsem) for writing, so the threads contend on it in the kernel.
fn mmap(threads: usize, secs: Duration) {
    const LEN: usize = 256 << 10;
    let ops = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + secs;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let ops = ops.clone();
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    // SAFETY: anonymous private mapping, touched within its length, then unmapped.
                    unsafe {
                        let p = libc::mmap(
                            std::ptr::null_mut(),
                            LEN,
                            libc::PROT_READ | libc::PROT_WRITE,
                            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                            -1,
                            0,
                        );
                        assert_ne!(p, libc::MAP_FAILED);
                        for off in (0..LEN).step_by(64 << 10) {
                            *(p as *mut u8).add(off) = 1;
                        }
                        assert_eq!(libc::munmap(p, LEN), 0);
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    println!("mmap_munmap {}", ops.load(Ordering::Relaxed));
}

/// How long before the end of each hold the holder is awake again: it sleeps through the rest
/// of the hold and spins through this. Its wakeup may come this late without moving the unlock
/// (see [`futex`]); the longest such delay traced here was 18 ms. The cost is this much CPU per
/// hold: 20 of 51 ms, 40% of one CPU while the load runs (two loads on one CPU stay under the
/// 95% the kernel lets real-time threads take, sched_rt_runtime_us).
const HOLD_AWAKE: Duration = Duration::from_millis(20);

/// `reps` times: the main thread locks a std Mutex, waits until the waiter thread is blocked on
/// it, holds it for `hold` more, and unlocks. The waiter's lock() is one futex wait of `hold`
/// (std's mutex spins briefly, then FUTEX_WAITs). Prints each wait as the waiter measured it
/// around lock().
///
/// A wait ends when the waiter is switched back in, so no step between the start of the hold
/// and that switch-in may wait for another task to give up a CPU. Real-time priority alone does
/// not ensure that: on a kernel that does not preempt kernel code (preempt=none or voluntary,
/// the usual server and distribution setting), a woken SCHED_FIFO thread waits until the task
/// on its CPU leaves the kernel or reaches a preemption point, and a linker's page faults or a
/// fork storm keep it there for milliseconds. Traced with a sleep of the whole hold and
/// the waiter free to run on either CPU: the holder's timer wakeup and the waiter's futex wakeup
/// each ran up to 18 ms late behind rust-lld in a page fault, and a wait overshot by up to
/// 24 ms, out of its bucket (1 wait in 700 during a build, 1 in 3000 on a quieter machine).
/// So:
/// - both threads are pinned to one CPU at one SCHED_FIFO priority, and hand it to each other:
///   the holder unlocks and yields, and the waiter, woken on that CPU, runs next;
/// - the holder sleeps through all but the last [`HOLD_AWAKE`] of the hold and spins through
///   that: a late wakeup from its sleep leaves it less to spin, not a later unlock. Its spin
///   yields, so that another process's thread at the same priority on this CPU (a second
///   instance of this load) cannot keep the woken waiter off it.
///
/// The handshakes spin on atomics with sched_yield rather than blocking, so the only long futex
/// waits in this process are the ones measured; on the one CPU, the holder sees the waiter's
/// `trying` only once the waiter has blocked.
fn futex(hold: Duration, reps: u64) {
    // SAFETY: sched_setscheduler on ourselves with a valid sched_param; threads inherit it.
    let rt = unsafe {
        let param = libc::sched_param { sched_priority: 10 };
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &param)
    };
    if rt != 0 {
        eprintln!(
            "SCHED_FIFO not available ({}); waits may overshoot on a busy machine",
            std::io::Error::last_os_error()
        );
    }
    // The CPU we are on, before the waiter is spawned: it inherits the affinity.
    // SAFETY: sched_getcpu has no arguments.
    let cpu = unsafe { libc::sched_getcpu() };
    pin_to_cpu(usize::try_from(cpu).expect("sched_getcpu"));
    let mutex = Arc::new(Mutex::new(()));
    let locked = Arc::new(AtomicU64::new(0));
    let acquired = Arc::new(AtomicU64::new(0));
    let trying = Arc::new(AtomicU64::new(0));
    let waiter = {
        let (mutex, locked, trying, acquired) = (
            mutex.clone(),
            locked.clone(),
            trying.clone(),
            acquired.clone(),
        );
        std::thread::spawn(move || {
            let mut waits = Vec::new();
            for rep in 1..=reps {
                while locked.load(Ordering::Acquire) < rep {
                    std::thread::yield_now();
                }
                trying.store(rep, Ordering::Release);
                let t = Instant::now();
                let guard = mutex.lock().unwrap();
                waits.push(t.elapsed());
                drop(guard);
                acquired.store(rep, Ordering::Release);
            }
            waits
        })
    };
    for rep in 1..=reps {
        let guard = mutex.lock().unwrap();
        locked.store(rep, Ordering::Release);
        // The hold starts when the waiter is blocked, so each wait is `hold` plus the hand-over,
        // however late the waiter thread got going.
        while trying.load(Ordering::Acquire) < rep {
            std::thread::yield_now();
        }
        let end = Instant::now() + hold;
        std::thread::sleep(hold.saturating_sub(HOLD_AWAKE));
        while Instant::now() < end {
            std::thread::yield_now();
        }
        drop(guard);
        while acquired.load(Ordering::Acquire) < rep {
            std::thread::yield_now();
        }
    }
    let waits = waiter.join().unwrap();
    let mut out = std::io::stdout().lock();
    for w in waits {
        writeln!(out, "wait_ns {}", w.as_nanos()).unwrap();
    }
}

/// A bulk transfer to itself: listen on `addr:port`, connect, send `mib` MiB, and read it all
/// back on the accepted socket.
fn tcp(addr: std::net::IpAddr, port: u16, mib: usize) {
    use std::net::{SocketAddr, TcpListener, TcpStream};
    let listener = TcpListener::bind(SocketAddr::new(addr, port)).expect("bind");
    let mut client = TcpStream::connect(SocketAddr::new(addr, port)).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            match server.read(&mut buf).expect("read") {
                0 => return total,
                n => total += n,
            }
        }
    });
    let chunk = vec![0x42u8; 1 << 20];
    for _ in 0..mib {
        client.write_all(&chunk).expect("write");
    }
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let got = reader.join().expect("reader thread");
    assert_eq!(got, mib << 20, "received");
    println!("sent_bytes {got}");
}

/// How long each storm's processes stay alive together once all are forked: longer than the
/// agent's 1 s interval, so a collection reads the map with all of them in it.
const STORM_HOLD: Duration = Duration::from_millis(1500);

/// Fork storms until `secs` have passed: `procs` processes forked straight into `cgroups` new
/// cgroups under `dir` (round robin), all alive at once for [`STORM_HOLD`], then released and
/// reaped, then the next storm, with new pids. Each process's first run is a run-queue wait of
/// its own (cgroup, process), so more processes than the run-queue map's capacity keep it full.
/// The processes exit when this process does (their release pipe's write end closes with it);
/// its cgroups are removed at the end (the caller removes `dir`, and anything left after a
/// kill).
fn storm(dir: &std::path::Path, cgroups: usize, procs: usize, secs: Duration) {
    use observer_tests::cgroup::{fork_into, release_pipe};
    let paths: Vec<_> = (0..cgroups).map(|i| dir.join(format!("c{i}"))).collect();
    let files: Vec<_> = paths
        .iter()
        .map(|path| {
            std::fs::create_dir(path).expect("creating a cgroup");
            std::fs::File::open(path).expect("opening a cgroup directory")
        })
        .collect();
    let deadline = Instant::now() + secs;
    let (mut rounds, mut forking) = (0u64, Duration::ZERO);
    while Instant::now() < deadline {
        let start = Instant::now();
        let release = release_pipe();
        let pids: Vec<_> = (0..procs)
            .map(|i| fork_into(&files[i % cgroups], &release))
            .collect();
        forking += start.elapsed();
        std::thread::sleep(STORM_HOLD);
        drop(release);
        for pid in pids {
            // SAFETY: waitpid on our own child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
        rounds += 1;
    }
    drop(files);
    for path in &paths {
        let _ = std::fs::remove_dir(path);
    }
    println!("storms {rounds}");
    println!("processes {}", rounds * procs as u64);
    println!("forking_seconds {:.3}", forking.as_secs_f64());
}
