//! The socket protocol against real Unix sockets: hello, snapshots, a client that stops reading,
//! a version this observer does not speak, clients that are not root, stale and live sockets.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixListener as StdListener,
    time::Instant,
};

use observer_common::hist::slot;

use super::*;
use crate::agent::metrics::{HistogramPoint as AgentPoint, SumPoint as AgentSum, keys, names};

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
    Hello::of_agent(Duration::from_millis(250), 10, &status)
}

/// A snapshot with `points` run-queue series of `buckets` non-empty buckets each, and a sum.
fn snapshot(n: u64, points: usize, buckets: usize) -> Arc<Snapshot> {
    let start = UNIX_EPOCH + Duration::from_secs(1_000);
    let series = (0..points)
        .map(|i| {
            let mut hist = Hist::ZERO;
            for b in 0..buckets {
                hist.buckets[b] = n * (b as u64 + 1);
            }
            hist.buckets[slot(40_000)] += n;
            hist.sum = n * 40_000;
            hist.zero = n;
            AgentPoint {
                attributes: vec![
                    (keys::CGROUP_PATH, "/system.slice/a.service".into()),
                    (keys::PROCESS_NAME, format!("proc{i}").into()),
                    (keys::PROCESS_PID, (i as i64).into()),
                ],
                start,
                hist: Box::new(hist),
            }
        })
        .collect();
    Arc::new(Snapshot {
        time: start + Duration::from_secs(n),
        metrics: vec![
            Metric {
                name: names::RUNQUEUE_LATENCY,
                description: "run-queue latency",
                unit: "ns",
                data: Data::Histogram(series),
            },
            Metric {
                name: names::FUTEX_NOT_WAITED,
                description: "not waited",
                unit: "{call}",
                data: Data::Sum(vec![AgentSum {
                    attributes: Vec::new(),
                    start,
                    value: n,
                }]),
            },
        ],
    })
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
async fn hello_then_the_latest_snapshot_then_one_per_collection() {
    let dir = TempDir::new("stream");
    // A directory that does not exist yet: the server creates it, 0700.
    let path = dir.0.join("run").join("observer.sock");
    let server = Server::start(&path, hello()).await.unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&path), 0o600);

    // Collected before the client connects: it is the client's baseline.
    let first = snapshot(1, 3, 5);
    server.offer(Arc::clone(&first));
    let client_path = path.clone();
    let mut connection = tokio::task::spawn_blocking(move || {
        Connection::connect(&client_path)
            .unwrap()
            .expect("the agent is there")
    })
    .await
    .unwrap();
    assert_eq!(connection.hello, hello());
    assert_eq!(connection.hello.pid, std::process::id());
    assert_eq!(
        connection.hello.signals[1].error.as_deref(),
        Some("no lock:contention_begin here")
    );
    let (baseline, connection_back) = tokio::task::spawn_blocking(move || {
        let s = connection.next().unwrap();
        (s, connection)
    })
    .await
    .unwrap();
    connection = connection_back;
    assert_eq!(baseline, WireSnapshot::of(&first));
    eventually("the client is registered", || server.clients() == 1).await;

    let second = snapshot(2, 3, 5);
    server.offer(Arc::clone(&second));
    let (next, mut connection) = tokio::task::spawn_blocking(move || {
        let s = connection.next().unwrap();
        (s, connection)
    })
    .await
    .unwrap();
    assert_eq!(next, WireSnapshot::of(&second));
    assert_eq!(next.time_ns, 1_002_000_000_000);
    // Histograms arrive bucket for bucket.
    let WireMetric::Histogram { points, unit, .. } = &next.metrics[0] else {
        panic!("the first metric is a histogram: {:?}", next.metrics[0]);
    };
    assert_eq!(unit, "ns");
    let Data::Histogram(sent) = &second.metrics[0].data else {
        unreachable!()
    };
    assert_eq!(points[2].hist().unwrap(), *sent[2].hist);
    assert_eq!(points[2].attributes["process.pid"], Attr::Int(2));
    assert_eq!(
        points[2].attributes["process.executable.name"],
        Attr::Str("proc2".into())
    );

    // Shutdown removes the socket, and the client sees the end.
    drop(server);
    assert!(!path.exists(), "the socket is removed at shutdown");
    let end = tokio::task::spawn_blocking(move || connection.next())
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
    // Large snapshots (about 400 kB each in JSON) fill the socket's buffer at once.
    let big = snapshot(7, 200, 200);
    let mut offers = 0;
    let mut slowest = Duration::ZERO;
    while server.clients() == 1 {
        let t = Instant::now();
        server.offer(Arc::clone(&big));
        slowest = slowest.max(t.elapsed());
        offers += 1;
        assert!(offers < 50, "still connected after {offers} snapshots");
        // Gives the writer time to fill the socket, as collection intervals would.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("dropped after {offers} snapshots; the slowest offer took {slowest:?}");
    assert!(
        offers > QUEUE,
        "dropped after {offers} snapshots, before its queue of {QUEUE} was full"
    );
    // Encoding 400 kB is all an offer does; it never waits for the client.
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
    let baseline = tokio::task::spawn_blocking(move || fresh.next().unwrap())
        .await
        .unwrap();
    assert_eq!(baseline, WireSnapshot::of(&big));
}

/// A fake agent that sends one line, then closes.
fn fake_agent(path: &Path, line: &'static str) -> std::thread::JoinHandle<()> {
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
        panic!("this test changes a thread's uid, and must run as root");
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
