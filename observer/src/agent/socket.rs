//! The agent's socket for `observer top` (`agent.socket`, default
//! `/run/observer/observer.sock`): it sends every collection interval to the connected clients,
//! so that `top` shows what the agent collects instead of loading a second copy of the
//! programs.
//!
//! # Access
//!
//! Root only. The socket's directory is created 0700 if it is missing, the socket is 0600, and
//! a client whose uid (`SO_PEERCRED`) is not 0 gets an `error` message and is closed: what is
//! sent names every busy process, cgroup and remote address on the host.
//!
//! # Protocol, version 1 ([`PROTOCOL`])
//!
//! The server talks, the client only reads: newline-delimited JSON, one object per line, each
//! with a `type`.
//!
//! 1. `hello`, first:
//!    `{"type":"hello","protocol":1,"version":"0.1.0","pid":1234,"interval_ms":10000,
//!    "signals":[{"signal":"runqueue","running":true},
//!    {"signal":"lock","running":false,"error":"why"}],"scope":"/kubepods.slice/..."}`: the
//!    protocol version, the agent's observer version, process id and collection interval,
//!    every signal it was asked to run with whether it runs, and, in sidecar mode only, the
//!    cgroup its signals are restricted to (`scope`, absent for the whole host; added within
//!    version 1, so a client must not require it: an older agent does not send it). `type` and
//!    `protocol` keep their meaning in every version: a client reads them first and refuses a
//!    protocol it does not speak.
//! 2. `interval`: the latest one at once (a client has something to show without waiting),
//!    then one per collection:
//!    `{"type":"interval","time_ns":T,"elapsed_ns":E,"signals":[S, ...]}`, `time_ns` when the
//!    kernel's maps were read (ns since the Unix epoch), `elapsed_ns` the time since the
//!    previous read. Each `S` is what happened to one running signal in the interval:
//!    `{"signal":"runqueue","count":N,"hist":H,"tables":[{"title":"processes","rows":[
//!    {"name":"1234 nginx","count":n,"hist":H}, ...]}, ...],"notes":["..."]}`. `hist` is `null`
//!    for counted events (TCP retransmits), else `{"zero":z,"sum":ns,"buckets":[[index,count],
//!    ...]}`: the non-empty buckets, `index` the OpenTelemetry bucket index at scale 2 (the
//!    bucket holds values in (2^(index/4), 2^((index+1)/4)] ns), `zero` the values equal to 0.
//!    Tables hold the 50 busiest rows of the interval, busiest first.
//! 3. `error`: `{"type":"error","message":"why"}`, the last line before the server closes.
//!
//! # Why intervals, not the exporters' snapshots
//!
//! The exporters get cumulative series, bounded for cardinality: per breakdown the `agent.top`
//! keys that were busy first, kept while they stay active, and "other". A process that starts
//! while those are taken is in "other" until one of them has been idle for 30 intervals, so a
//! view made from them would hide exactly the newcomer an engineer is looking for. `top` wants
//! the busiest keys of each interval instead, so the agent sends what `observer top` computes
//! when it loads the programs itself ([`crate::top::local::samples`], from the same deltas the
//! collector reads): the screen is the same either way. Making it costs a few reads in /proc
//! and a walk of the cgroup tree (for the rows kept), so it is made only when a client is
//! connected, or for one that connects before the next collection, which then sees it at once.
//!
//! # Slow clients
//!
//! [`Server::offer`] never waits for a client: each has a queue of [`QUEUE`] messages, written
//! by a task of its own. A client whose queue is full has fallen behind; it is disconnected (its
//! writer is aborted, which closes the connection) and logged, and collection goes on.

use std::{
    fs::{self, DirBuilder},
    io::{self, BufRead as _, BufReader},
    os::unix::{
        fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
        net::UnixStream as StdStream,
    },
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::AsyncWriteExt as _,
    net::{UnixListener, UnixStream},
    sync::mpsc::{self, error::TrySendError},
    task::{AbortHandle, JoinHandle},
};

use crate::{
    record::Deltas,
    signals::Signal,
    top::{app::Sample, local},
};

/// The protocol version this observer speaks.
pub const PROTOCOL: u32 = 1;
/// Messages queued per client. A client this far behind is disconnected.
pub const QUEUE: usize = 4;
/// How long a client waits for the hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// One line of the protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    Hello(Hello),
    Interval(WireInterval),
    Error { message: String },
}

/// The first message: who the agent is and what it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// The agent's observer version.
    pub version: String,
    pub pid: u32,
    pub interval_ms: u64,
    pub signals: Vec<SignalStatus>,
    /// The cgroup every signal is restricted to (sidecar mode, [`crate::scope`]); `None` for
    /// the whole host, and from agents older than the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl Hello {
    /// The hello of this agent: its collection interval, and how each requested signal fared
    /// at load time (`Err`: why it does not run).
    pub fn of_agent<'a, E: std::fmt::Display + 'a>(
        interval: Duration,
        signals: impl IntoIterator<Item = (&'a Signal, &'a Result<(), E>)>,
    ) -> Self {
        Self {
            protocol: PROTOCOL,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            signals: signals
                .into_iter()
                .map(|(signal, status)| SignalStatus {
                    signal: signal.name().to_owned(),
                    running: status.is_ok(),
                    error: status.as_ref().err().map(ToString::to_string),
                })
                .collect(),
            scope: None,
        }
    }
}

/// One signal the agent was asked to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalStatus {
    /// The signal's name, as `--signals` takes it.
    pub signal: String,
    pub running: bool,
    /// Why it does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One interval as sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireInterval {
    pub time_ns: u64,
    pub elapsed_ns: u64,
    pub signals: Vec<Sample>,
}

/// A histogram on the wire: its non-empty buckets as `[index, count]`.
#[derive(Serialize, Deserialize)]
struct WireHist {
    zero: u64,
    sum: u64,
    buckets: Vec<(i32, u64)>,
}

/// `Option<Box<Hist>>` as an optional [`WireHist`] (serde `with`).
pub mod sparse_hist {
    use observer_common::{
        Hist,
        hist::{BUCKETS, FIRST_INDEX},
    };
    use serde::{Deserialize as _, Deserializer, Serialize as _, Serializer, de::Error as _};

    use super::WireHist;

    pub fn serialize<S: Serializer>(h: &Option<Box<Hist>>, s: S) -> Result<S::Ok, S::Error> {
        h.as_ref()
            .map(|h| WireHist {
                zero: h.zero,
                sum: h.sum,
                buckets: h
                    .buckets
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(slot, n)| (slot as i32 + FIRST_INDEX, *n))
                    .collect(),
            })
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<Hist>>, D::Error> {
        let Some(w) = Option::<WireHist>::deserialize(d)? else {
            return Ok(None);
        };
        let mut h = Box::new(Hist::ZERO);
        h.zero = w.zero;
        h.sum = w.sum;
        for (index, n) in w.buckets {
            let slot = usize::try_from(i64::from(index) - i64::from(FIRST_INDEX))
                .ok()
                .filter(|s| *s < BUCKETS)
                .ok_or_else(|| {
                    D::Error::custom(format!("bucket index {index} is outside the histogram"))
                })?;
            h.buckets[slot] = n;
        }
        Ok(Some(h))
    }
}

/// A [`Signal`] as its name (serde `with`).
pub mod signal_name {
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    use crate::signals::Signal;

    pub fn serialize<S: Serializer>(signal: &Signal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(signal.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// One line: the message as JSON and a newline.
pub fn encode(m: &Message) -> Arc<[u8]> {
    let mut line = serde_json::to_vec(m).expect("protocol messages always serialize");
    line.push(b'\n');
    line.into()
}

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "another observer agent (pid {pid}) is already serving {}; stop it, or give this one \
         another agent.socket (or \"\" for none)",
        path.display()
    )]
    AlreadyServed { path: PathBuf, pid: String },
    #[error(
        "{} exists and is not a socket; remove it, or set agent.socket to another path",
        path.display()
    )]
    NotASocket { path: PathBuf },
    #[error(
        "{what} {}: {source}; set agent.socket to a path root can create, or \"\" for no socket",
        path.display()
    )]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ServeError {
    let path = path.to_owned();
    move |source| ServeError::Io { what, path, source }
}

/// The credentials of the process at the other end of a Unix socket (`SO_PEERCRED`).
fn peer_cred(socket: &impl std::os::fd::AsFd) -> io::Result<libc::ucred> {
    use std::os::fd::AsRawFd as _;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is that large.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred)
}

/// The socket: accepts clients and sends each collection interval to every one of them.
pub struct Server {
    path: PathBuf,
    /// The socket file's inode, so that shutdown removes this socket and nothing else.
    inode: (u64, u64),
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    hello: Arc<[u8]>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    clients: Vec<Client>,
    /// The latest interval, encoded: what a new client sees first...
    last: Option<Arc<[u8]>>,
    /// ... or, when nobody was connected to see it, the latest interval unmade.
    pending: Option<Pending>,
}

/// One collection interval: the deltas between the reads of the kernel's maps `elapsed` apart,
/// the second at `time`.
struct Pending {
    deltas: Deltas,
    elapsed: Duration,
    time: SystemTime,
}

impl Pending {
    /// The `interval` message, encoded.
    fn encode(&self) -> Arc<[u8]> {
        let began = std::time::Instant::now();
        let encoded = encode(&Message::Interval(WireInterval {
            time_ns: self
                .time
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            elapsed_ns: u64::try_from(self.elapsed.as_nanos()).unwrap_or(u64::MAX),
            signals: local::samples(&self.deltas),
        }));
        tracing::debug!(
            took = ?began.elapsed(),
            bytes = encoded.len(),
            "interval made for observer top clients"
        );
        encoded
    }
}

struct Client {
    /// From `SO_PEERCRED`, for the log.
    pid: i32,
    queue: mpsc::Sender<Arc<[u8]>>,
    writer: AbortHandle,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent through a panic (every change is one push or retain).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Server {
    /// Serves `path`: creates its directory (0700) if missing, replaces a stale socket (one no
    /// agent listens on), refuses when another agent is listening. Needs a tokio runtime.
    pub async fn start(path: &Path, hello: Hello) -> Result<Self, ServeError> {
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_error("creating the socket's directory", dir))?;
        }
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => match StdStream::connect(path) {
                Ok(other) => {
                    let pid = peer_cred(&other)
                        .map_or_else(|_| "unknown".to_owned(), |c| c.pid.to_string());
                    return Err(ServeError::AlreadyServed {
                        path: path.to_owned(),
                        pid,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!("replacing the stale socket {}", path.display());
                    fs::remove_file(path).map_err(io_error("removing the stale socket", path))?;
                }
                Err(e) => return Err(io_error("checking the existing socket", path)(e)),
            },
            Ok(_) => {
                return Err(ServeError::NotASocket {
                    path: path.to_owned(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("checking", path)(e)),
        }
        let listener = UnixListener::bind(path).map_err(io_error("listening on", path))?;
        // Until this chmod the socket has the umask's mode, which gives nobody but its owner
        // (root) write access, and connecting needs write access: no window for other users.
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(io_error("setting the mode of", path))?;
        let meta = fs::symlink_metadata(path).map_err(io_error("checking", path))?;
        let shared = Arc::new(Shared {
            hello: encode(&Message::Hello(hello)),
            state: Mutex::new(State::default()),
        });
        let accept = tokio::spawn(accept(listener, Arc::clone(&shared)));
        Ok(Self {
            path: path.to_owned(),
            inode: (meta.dev(), meta.ino()),
            shared,
            accept,
        })
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.shared.state().clients.len()
    }
}

async fn accept(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: try again shortly rather than spin.
                tracing::warn!("accepting an observer top client: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let cred = match peer_cred(&stream) {
            Ok(cred) => cred,
            Err(e) => {
                tracing::warn!("reading an observer top client's credentials: {e}");
                continue;
            }
        };
        if cred.uid != 0 {
            tracing::warn!(
                "refused an observer top client running as uid {} (pid {}): only root may connect",
                cred.uid,
                cred.pid
            );
            tokio::spawn(refuse(stream, cred.uid));
            continue;
        }
        add(&shared, stream, cred.pid).await;
    }
}

/// Says why, then closes; a client that does not even read this gets a second to.
async fn refuse(mut stream: UnixStream, uid: u32) {
    let message = encode(&Message::Error {
        message: format!(
            "only root may read from the observer agent, and this client runs as uid {uid}"
        ),
    });
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&message)).await;
}

async fn add(shared: &Arc<Shared>, stream: UnixStream, pid: i32) {
    let (queue, mut messages) = mpsc::channel::<Arc<[u8]>>(QUEUE);
    let writer = tokio::spawn(async move {
        let mut stream = stream;
        while let Some(message) = messages.recv().await {
            if stream.write_all(&message).await.is_err() {
                // Gone: the next offer finds the queue closed and forgets the client.
                break;
            }
        }
    });
    tracing::info!("observer top client connected (pid {pid})");
    // An interval nobody has seen yet is made now, outside the lock the collector takes.
    let pending = shared.state().pending.take();
    let made = pending.map(|p| p.encode());
    let mut state = shared.state();
    if let Some(made) = &made
        && state.pending.is_none()
    {
        state.last = Some(Arc::clone(made));
    }
    // The hello and the latest interval first, in the empty queue, under the lock so that no
    // newer interval can come before them.
    let _ = queue.try_send(Arc::clone(&shared.hello));
    if let Some(first) = made.or_else(|| state.last.clone()) {
        let _ = queue.try_send(first);
    }
    state.clients.push(Client {
        pid,
        queue,
        writer: writer.abort_handle(),
    });
}

impl Server {
    /// Sends one collection interval to every client: `deltas` between the reads of the
    /// kernel's maps `elapsed` apart, the second at `time`. Never waits for a client.
    pub fn offer(&self, deltas: Deltas, elapsed: Duration, time: SystemTime) {
        let interval = Pending {
            deltas,
            elapsed,
            time,
        };
        let mut state = self.shared.state();
        if state.clients.is_empty() {
            state.last = None;
            state.pending = Some(interval);
            return;
        }
        state.pending = None;
        // Made outside the lock, which new clients take too.
        drop(state);
        let encoded = interval.encode();
        let mut state = self.shared.state();
        state.last = Some(Arc::clone(&encoded));
        state
            .clients
            .retain(|c| match c.queue.try_send(Arc::clone(&encoded)) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    c.writer.abort();
                    tracing::warn!(
                        "observer top client (pid {}) fell {QUEUE} intervals behind: disconnected \
                         it",
                        c.pid
                    );
                    false
                }
                Err(TrySendError::Closed(_)) => {
                    tracing::info!("observer top client disconnected (pid {})", c.pid);
                    false
                }
            });
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
        for client in self.shared.state().clients.drain(..) {
            client.writer.abort();
        }
        // Only our own socket: never one that replaced it.
        if fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.inode)
            && let Err(e) = fs::remove_file(&self.path)
        {
            tracing::warn!("removing {}: {e}", self.path.display());
        }
    }
}

/// Why reading from the agent failed. Every message names the socket.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to the observer agent at {}: permission denied; only root may read \
         from the agent: run observer top as root",
        path.display()
    )]
    Denied { path: PathBuf },
    #[error("the observer agent at {} refused: {message}", path.display())]
    Refused { path: PathBuf, message: String },
    #[error(
        "the observer agent at {} (observer {version}) speaks protocol version {theirs}, and \
         this observer ({}) speaks {PROTOCOL}: use the same observer version as the agent, or \
         --local to load the programs in this process",
        path.display(),
        env!("CARGO_PKG_VERSION")
    )]
    Version {
        path: PathBuf,
        theirs: u64,
        version: String,
    },
    #[error("the observer agent at {} closed the connection", path.display())]
    Closed { path: PathBuf },
    #[error(
        "the observer agent at {} sent nothing for {waited:?}: it may be stuck",
        path.display()
    )]
    Silent { path: PathBuf, waited: Duration },
    #[error("reading from the observer agent at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the observer agent at {} sent something unexpected: {message}", path.display())]
    Protocol { path: PathBuf, message: String },
}

/// A connection to the agent, past its hello.
pub struct Connection {
    path: PathBuf,
    reader: BufReader<StdStream>,
    pub hello: Hello,
}

impl Connection {
    /// Connects and reads the hello. `Ok(None)` when no agent is there: no socket file, or a
    /// stale one nobody listens on.
    pub fn connect(path: &Path) -> Result<Option<Self>, ClientError> {
        let io = |source| ClientError::Io {
            path: path.to_owned(),
            source,
        };
        let stream = match StdStream::connect(path) {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(ClientError::Denied {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(io(e)),
        };
        stream.set_read_timeout(Some(HELLO_TIMEOUT)).map_err(io)?;
        let mut connection = Self {
            path: path.to_owned(),
            reader: BufReader::new(stream),
            hello: Hello {
                protocol: 0,
                version: String::new(),
                pid: 0,
                interval_ms: 0,
                signals: Vec::new(),
                scope: None,
            },
        };
        let line = connection.line()?;
        connection.hello = parse_hello(&line).map_err(|e| e.at(path))?;
        // Then an interval at every collection; a silent agent is reported after a few.
        // Saturating: interval_ms is the agent's word, and may be anything up to u64::MAX.
        let interval = Duration::from_millis(connection.hello.interval_ms);
        connection
            .reader
            .get_ref()
            .set_read_timeout(Some(
                interval.saturating_mul(3).saturating_add(HELLO_TIMEOUT),
            ))
            .map_err(io)?;
        Ok(Some(connection))
    }

    /// A handle on the same socket: shutting it down ends a [`Self::receive`] blocked in
    /// another thread.
    pub fn closer(&self) -> io::Result<StdStream> {
        self.reader.get_ref().try_clone()
    }

    /// The next interval (blocking).
    pub fn receive(&mut self) -> Result<WireInterval, ClientError> {
        let line = self.line()?;
        parse_interval(&line).map_err(|e| e.at(&self.path))
    }

    fn line(&mut self) -> Result<String, ClientError> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(ClientError::Closed {
                path: self.path.clone(),
            }),
            Ok(_) => Ok(line),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(ClientError::Silent {
                    path: self.path.clone(),
                    waited: self
                        .reader
                        .get_ref()
                        .read_timeout()
                        .ok()
                        .flatten()
                        .unwrap_or_default(),
                })
            }
            Err(source) => Err(ClientError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

/// Why a line from the agent was not what the client expects; [`LineError::at`] names the
/// socket.
#[derive(Debug, PartialEq)]
pub enum LineError {
    Refused(String),
    Version { theirs: u64, version: String },
    Protocol(String),
}

impl LineError {
    fn at(self, path: &Path) -> ClientError {
        let path = path.to_owned();
        match self {
            Self::Refused(message) => ClientError::Refused { path, message },
            Self::Version { theirs, version } => ClientError::Version {
                path,
                theirs,
                version,
            },
            Self::Protocol(message) => ClientError::Protocol { path, message },
        }
    }
}

/// The first line from the agent: its hello, or an `error` saying why it refuses. The protocol
/// version is read first: the rest of a hello of another version may not parse. (Also the entry
/// point of the `socket_client` fuzz target: nothing the agent sends may make a client panic.)
pub fn parse_hello(line: &str) -> Result<Hello, LineError> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| LineError::Protocol(e.to_string()))?;
    match value["type"].as_str() {
        Some("hello") => {}
        Some("error") => {
            return Err(LineError::Refused(
                value["message"].as_str().unwrap_or("no reason").to_owned(),
            ));
        }
        _ => {
            return Err(LineError::Protocol(format!(
                "expected a hello, got {}",
                line.trim_end()
            )));
        }
    }
    let theirs = value["protocol"].as_u64().unwrap_or(0);
    if theirs != u64::from(PROTOCOL) {
        return Err(LineError::Version {
            theirs,
            version: value["version"].as_str().unwrap_or("unknown").to_owned(),
        });
    }
    match serde_json::from_value(value) {
        Ok(Message::Hello(hello)) => Ok(hello),
        Ok(_) => Err(LineError::Protocol("expected a hello".into())),
        Err(e) => Err(LineError::Protocol(e.to_string())),
    }
}

/// A line after the hello: an interval, or an `error` saying why the agent closes.
pub fn parse_interval(line: &str) -> Result<WireInterval, LineError> {
    match serde_json::from_str(line) {
        Ok(Message::Interval(i)) => Ok(i),
        Ok(Message::Error { message }) => Err(LineError::Refused(message)),
        Ok(Message::Hello(_)) => Err(LineError::Protocol("a second hello".into())),
        Err(e) => Err(LineError::Protocol(e.to_string())),
    }
}

#[cfg(test)]
mod tests;
