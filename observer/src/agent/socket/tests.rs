//! The socket protocol against real Unix sockets: hello, intervals, a client that stops reading,
//! a version this observer does not speak, clients that are not root, stale and live sockets.

use std::{
    collections::{BTreeMap, HashMap},
    io::{Read as _, Write as _},
    os::unix::net::UnixListener as StdListener,
    time::Instant,
};

use observer_common::{Hist, ProcessHist, ProcessKey, hist::slot};

use super::*;
use crate::signals::{Process, runqueue};

/// A directory removed when the test ends, pass or fail.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("observer-socket-{name}-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn hello() -> Hello {
    let status: BTreeMap<Signal, Result<(), String>> = BTreeMap::from([
        (Signal::Runqueue, Ok(())),
        (
            Signal::Lock,
            Err("no lock:contention_begin here".to_owned()),
        ),
    ]);
    Hello::of_agent(Duration::from_millis(250), &status)
}

/// One interval of run-queue latency: `processes` processes with `buckets` non-empty buckets
/// each. Process ids are above PID_MAX_LIMIT, so names come from the given comm, not /proc.
fn deltas(n: u64, processes: u32, buckets: usize) -> Deltas {
    let by_process = (0..processes)
        .map(|i| {
            let mut p = ProcessHist::ZERO;
            let comm = format!("proc{i}");
            p.comm[..comm.len()].copy_from_slice(comm.as_bytes());
            for b in 0..buckets {
                p.hist.buckets[b] = n * (b as u64 + 1);
            }
            p.hist.buckets[slot(40_000)] += n;
            p.hist.sum = n * 40_000;
            p.hist.zero = n;
            let key = ProcessKey {
                cgroup: 1,
                tgid: 4_000_000_000 + i,
                _pad: 0,
            };
            (key, Process::of(&p))
        })
        .collect::<HashMap<_, _>>();
    Deltas {
        runqueue: Some(runqueue::Delta {
            unattributed: Hist::ZERO,
            by_process,
            dropped: 0,
        }),
        ..Deltas::default()
    }
}

fn at(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_000 + n)
}

/// Polls `ok` for up to 5 s.
async fn eventually(what: &str, ok: impl Fn() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < Duration::from_secs(5), "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_then_the_latest_interval_then_one_per_collection() {
    let dir = TempDir::new("stream");
    // A directory that does not exist yet: the server creates it, 0700.
    let path = dir.0.join("run").join("observer.sock");
    let server = Server::start(&path, hello()).await.unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&path), 0o600);

    // Collected before the client connects (made only then): the client sees it at once.
    let first = deltas(1, 3, 5);
    server.offer(deltas(1, 3, 5), Duration::from_millis(250), at(1));
    let client_path = path.clone();
    let (mut connection, interval) = tokio::task::spawn_blocking(move || {
        let mut c = Connection::connect(&client_path)
            .unwrap()
            .expect("the agent is there");
        let interval = c.receive().unwrap();
        (c, interval)
    })
    .await
    .unwrap();
    assert_eq!(connection.hello, hello());
    assert_eq!(connection.hello.pid, std::process::id());
    assert_eq!(
        connection.hello.signals[1].error.as_deref(),
        Some("no lock:contention_begin here")
    );
    assert_eq!(interval.signals, local::samples(&first));
    assert_eq!(interval.elapsed_ns, 250_000_000);
    assert_eq!(interval.time_ns, 1_001_000_000_000);
    eventually("the client is registered", || server.clients() == 1).await;

    let second = deltas(2, 3, 5);
    server.offer(deltas(2, 3, 5), Duration::from_millis(300), at(2));
    let (next, mut connection) = tokio::task::spawn_blocking(move || {
        let i = connection.receive().unwrap();
        (i, connection)
    })
    .await
    .unwrap();
    // Histograms arrive bucket for bucket, the total's and every row's.
    assert_eq!(next.signals, local::samples(&second));
    let runqueue = &next.signals[0];
    assert_eq!(runqueue.signal, Signal::Runqueue);
    let process = &runqueue.tables[0].rows[0];
    assert_eq!(process.name, "4000000000 proc0");
    let sent = &second.runqueue.as_ref().unwrap().by_process;
    let key = sent.keys().find(|k| k.tgid == 4_000_000_000).unwrap();
    assert_eq!(process.hist.as_deref(), Some(&sent[key].hist.to_dense()));

    // Shutdown removes the socket, and the client sees the end.
    drop(server);
    assert!(!path.exists(), "the socket is removed at shutdown");
    let end = tokio::task::spawn_blocking(move || connection.receive())
        .await
        .unwrap();
    assert!(matches!(end, Err(ClientError::Closed { .. })), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_collection_never_waits() {
    let dir = TempDir::new("slow");
    let path = dir.0.join("observer.sock");
    let server = Server::start(&path, hello()).await.unwrap();
    // Connected, and never reading.
    let mut stalled = StdStream::connect(&path).unwrap();
    eventually("the client is registered", || server.clients() == 1).await;
    // Large intervals (50 processes and their cgroup, 200 buckets each: about 200 kB of JSON)
    // fill the socket's buffer at once.
    let big = deltas(7, 60, 200);
    let mut offers = 0;
    let mut slowest = Duration::ZERO;
    while server.clients() == 1 {
        let t = Instant::now();
        server.offer(deltas(7, 60, 200), Duration::from_secs(1), at(offers));
        slowest = slowest.max(t.elapsed());
        offers += 1;
        assert!(offers < 50, "still connected after {offers} intervals");
        // Gives the writer time to fill the socket, as collection intervals would.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("dropped after {offers} intervals; the slowest offer took {slowest:?}");
    assert!(
        offers > QUEUE as u64,
        "dropped after {offers} intervals, before its queue of {QUEUE} was full"
    );
    // Making and encoding the interval is all an offer does; it never waits for the client.
    assert!(
        slowest < Duration::from_secs(1),
        "an offer took {slowest:?}"
    );
    // The connection is closed: what was written is readable, then the end.
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut received = Vec::new();
    tokio::task::spawn_blocking(move || stalled.read_to_end(&mut received))
        .await
        .unwrap()
        .expect("the connection ends instead of stalling");
    // Collection goes on for the others.
    let mut fresh =
        tokio::task::spawn_blocking(move || Connection::connect(&path).unwrap().unwrap())
            .await
            .unwrap();
    let latest = tokio::task::spawn_blocking(move || fresh.receive().unwrap())
        .await
        .unwrap();
    assert_eq!(latest.signals, local::samples(&big));
}

/// A fake agent that sends one line, then closes.
fn fake_agent(path: &Path, line: impl Into<String>) -> std::thread::JoinHandle<()> {
    let line = line.into();
    let listener = StdListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(line.as_bytes()).unwrap();
    })
}

#[test]
fn a_protocol_version_this_observer_does_not_speak_is_refused_with_the_fix() {
    let dir = TempDir::new("version");
    let path = dir.0.join("observer.sock");
    let agent = fake_agent(
        &path,
        "{\"type\":\"hello\",\"protocol\":99,\"version\":\"9.0.0\",\"something\":\"new\"}\n",
    );
    let e = Connection::connect(&path).err().expect("refused");
    agent.join().unwrap();
    let message = e.to_string();
    assert!(
        matches!(e, ClientError::Version { theirs: 99, .. }),
        "{e:?}"
    );
    assert!(
        message.contains("observer 9.0.0")
            && message.contains("protocol version 99")
            && message.contains("use the same observer version as the agent, or --local"),
        "{message}"
    );

    let path = dir.0.join("other.sock");
    let agent = fake_agent(&path, "HTTP/1.1 400 Bad Request\n");
    let e = Connection::connect(&path).err().expect("refused");
    agent.join().unwrap();
    assert!(matches!(e, ClientError::Protocol { .. }), "{e:?}");
}

/// The hello's interval is the agent's word: the longest one must not overflow the read
/// timeout the client derives from it (`interval * 3` panicked on overflow).
#[test]
fn the_longest_interval_in_a_hello_does_not_overflow_the_read_timeout() {
    let dir = TempDir::new("interval");
    let path = dir.0.join("observer.sock");
    let agent = fake_agent(
        &path,
        "{\"type\":\"hello\",\"protocol\":1,\"version\":\"0.1.0\",\"pid\":1,\
         \"interval_ms\":18446744073709551615,\"signals\":[]}\n",
    );
    let connection = Connection::connect(&path).unwrap().expect("an agent");
    agent.join().unwrap();
    assert_eq!(connection.hello.interval_ms, u64::MAX);
}

#[test]
fn the_hello_names_a_sidecar_agents_scope_and_an_older_hello_without_it_is_read() {
    let dir = TempDir::new("scope");
    // Without a scope (the whole host) the field is left out, as older agents did.
    let host = serde_json::to_value(Message::Hello(hello())).unwrap();
    assert!(host.get("scope").is_none(), "{host}");
    let mut sidecar = hello();
    sidecar.scope = Some("/kubepods.slice/kubepods-pod1.slice".into());
    let line = serde_json::to_string(&Message::Hello(sidecar.clone())).unwrap();
    assert!(
        line.contains(r#""scope":"/kubepods.slice/kubepods-pod1.slice""#),
        "{line}"
    );
    let path = dir.0.join("sidecar.sock");
    let agent = fake_agent(&path, format!("{line}\n"));
    let c = Connection::connect(&path).unwrap().expect("the agent");
    agent.join().unwrap();
    assert_eq!(c.hello, sidecar);
    // An agent from before the field: same protocol version, no scope.
    let path = dir.0.join("older.sock");
    let agent = fake_agent(
        &path,
        "{\"type\":\"hello\",\"protocol\":1,\"version\":\"0.1.0\",\"pid\":7,\
         \"interval_ms\":1000,\"signals\":[{\"signal\":\"runqueue\",\"running\":true}]}\n",
    );
    let c = Connection::connect(&path).unwrap().expect("the agent");
    agent.join().unwrap();
    assert_eq!((c.hello.pid, c.hello.scope), (7, None));
}

#[test]
fn no_socket_or_a_stale_one_means_no_agent() {
    let dir = TempDir::new("none");
    let path = dir.0.join("observer.sock");
    assert!(Connection::connect(&path).unwrap().is_none());
    drop(StdListener::bind(&path).unwrap());
    assert!(path.exists(), "a stale socket file");
    assert!(Connection::connect(&path).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
    let dir = TempDir::new("stale");
    let path = dir.0.join("observer.sock");
    // An agent killed with SIGKILL leaves its socket file behind.
    drop(StdListener::bind(&path).unwrap());
    let server = Server::start(&path, hello()).await.unwrap();
    let e = Server::start(&path, hello()).await.err().expect("refused");
    assert!(
        e.to_string().contains(&format!(
            "another observer agent (pid {}) is already serving {}",
            std::process::id(),
            path.display()
        )),
        "{e}"
    );
    drop(server);
    assert!(!path.exists());

    fs::write(&path, "not a socket").unwrap();
    let e = Server::start(&path, hello()).await.err().expect("refused");
    assert!(e.to_string().contains("is not a socket"), "{e}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "not a socket");
}

/// Connects from a thread that has given up root: `setresuid` as a raw system call changes the
/// credentials of the calling thread only (the C library's wrapper would change every thread).
fn connect_as_nobody(path: &Path) -> Result<Option<Connection>, ClientError> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        // SAFETY: setresuid on this thread, which ends right after.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
        assert_eq!(rc, 0, "setresuid: {}", io::Error::last_os_error());
        Connection::connect(&path)
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_root_is_served() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // As the end-to-end tests: a developer may opt in to skipping, CI never.
        let skip = std::env::var_os("CI").is_none()
            && std::env::var("OBSERVER_TESTS_ALLOW_SKIP").is_ok_and(|v| v == "1");
        assert!(
            skip,
            "this test changes a thread's uid, and must run as root"
        );
        eprintln!("SKIPPED: only_root_is_served needs root");
        return;
    }
    let dir = TempDir::new("root");
    let path = dir.0.join("observer.sock");
    let server = Server::start(&path, hello()).await.unwrap();
    let p = path.clone();
    let e = tokio::task::spawn_blocking(move || connect_as_nobody(&p))
        .await
        .unwrap()
        .err()
        .expect("denied");
    assert!(matches!(e, ClientError::Denied { .. }), "{e:?}");
    assert!(e.to_string().contains("run observer top as root"), "{e}");

    // Past the file's mode, the agent checks the client's uid itself.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    let p = path.clone();
    let e = tokio::task::spawn_blocking(move || connect_as_nobody(&p))
        .await
        .unwrap()
        .err()
        .expect("refused");
    assert!(
        e.to_string().contains(
            "refused: only root may read from the observer agent, and this client runs as uid 65534"
        ),
        "{e}"
    );
    assert_eq!(server.clients(), 0);
}
