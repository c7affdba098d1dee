//! Pod names for the pod UIDs found in cgroup paths (`[kubernetes]` in the config file, off by
//! default): the agent lists the pods of its node, from the node's kubelet (`GET /pods`) or from
//! the API server (`GET /api/v1/pods?fieldSelector=spec.nodeName=NODE`), and keeps pod UID ->
//! name, namespace and container names by container id. Exported as the OpenTelemetry
//! semantic conventions `k8s.pod.name`, `k8s.namespace.name` and `k8s.container.name`.
//!
//! # How peers do it, and what is taken from them
//! The OpenTelemetry collector's `k8sattributes` processor (as a DaemonSet) watches the API
//! server's pods with a `spec.nodeName` field selector and associates data by pod UID;
//! `kubeletstats` and the Datadog agent read the kubelet's `/pods`. Both authenticate with the
//! pod's service-account token and verify the server with the service account's CA, and data
//! that arrives before the metadata passes through without it. Here:
//!
//! - the list is refreshed in the background every `refresh` (default 30 s), and at once
//!   (at most every [`MIN_GAP`]) when a pod UID or container id is seen that the last list did
//!   not have (once per id), so a new pod is named within seconds without a watch;
//! - the collection loop never waits for it: it reads the last list published
//!   ([`Names::index`], a lock held for a clone of one `Arc`);
//! - the token is read again for every request (the kubelet rotates projected tokens);
//! - a server that cannot be reached or refuses is said once in the log (again only when the
//!   reason changes, and when it answers again), retried with backoff from 1 s up to
//!   [`MAX_BACKOFF`], and the metrics go on without the names meanwhile;
//! - a static pod's cgroup carries the UID the kubelet gave it (a hash of its manifest): the
//!   API server lists its mirror pod under another UID, with the hash in the annotation
//!   `kubernetes.io/config.mirror`, so both are indexed.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{
    Request, StatusCode, Uri,
    header::{ACCEPT, AUTHORIZATION, HOST, USER_AGENT},
};
use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject as _},
};
use serde::Deserialize;
use tokio::{net::TcpStream, sync::Notify};
use tokio_rustls::TlsConnector;

use crate::cgroup::Workload;

/// The service account's files, mounted in every pod that has one.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The longest wait between two attempts while the server fails.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The shortest time between two lists asked for by unknown pods.
pub const MIN_GAP: Duration = Duration::from_secs(5);
/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A node runs at most a few hundred pods; a list larger than this is not read.
const MAX_BODY: usize = 64 << 20;
const USER_AGENT_VALUE: &str = concat!("observer/", env!("CARGO_PKG_VERSION"));

/// Where pod names come from (`kubernetes.enrich`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The node's kubelet, `GET https://NODE:10250/pods` (RBAC: `get` on `nodes/pods`, or
    /// `nodes/proxy` before Kubernetes 1.33).
    Kubelet,
    /// The API server, this node's pods only (RBAC: `list` on `pods`).
    ApiServer,
}

impl Source {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Kubelet => "kubelet",
            Self::ApiServer => "api-server",
        }
    }

    /// What the list's URL ([`Settings::url`]) adds to the server's: the kubelet's own pods,
    /// or the API server's pods of one node, whose name follows.
    pub const fn list_path(self) -> &'static str {
        match self {
            Self::Kubelet => "/pods",
            Self::ApiServer => "/api/v1/pods?fieldSelector=spec.nodeName%3D",
        }
    }

    /// What an operator must grant the service account, for a 403.
    pub const fn rbac(self) -> &'static str {
        match self {
            // KEP-2862 (fine-grained kubelet authorization, beta in 1.33, GA in 1.36) gives
            // `/pods` its own subresource; older kubelets check nodes/proxy, which also opens
            // exec into every container of the node.
            Self::Kubelet => {
                "a ClusterRole with `get` on `nodes/pods` (resources: [\"nodes/pods\"], verbs: \
                 [\"get\"]; Kubernetes 1.33 and later), or on `nodes/proxy` for older kubelets, \
                 bound to observer's service account"
            }
            Self::ApiServer => {
                "a ClusterRole with `list` on `pods` (resources: [\"pods\"], verbs: [\"list\"]), \
                 bound to observer's service account"
            }
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The resolved `[kubernetes]` section, when enrichment is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub source: Source,
    /// The full URL of the pod list (the server's URL with the source's path).
    pub url: String,
    /// The bearer token's file, read for every request; `None`: no token is sent.
    pub token_file: Option<PathBuf>,
    /// The CA bundle (PEM) that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (only when set explicitly).
    pub insecure_skip_verify: bool,
    /// How often the list is read again.
    pub refresh: Duration,
}

/// Starting the enrichment failed: its settings cannot work, whatever the server does.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "kubernetes.ca_file {}: {source}; run observer in a pod with a service account \
         (automountServiceAccountToken) or set kubernetes.ca_file to the CA that signed the \
         {what}'s certificate",
        path.display()
    )]
    Ca {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("kubernetes.ca_file {}: no usable certificate in it ({reason})", path.display())]
    NoCertificate { path: PathBuf, reason: String },
    #[error(
        "kubernetes: no CA to verify the {what} with: set kubernetes.ca_file (or, knowingly, \
         kubernetes.insecure_skip_verify = true)"
    )]
    NoCa { what: &'static str },
    #[error("kubernetes.url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("kubernetes: TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// One pod's names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodNames {
    pub name: String,
    pub namespace: String,
    /// Container name by container id (the runtime's id, without its `containerd://` prefix).
    pub containers: HashMap<String, String>,
}

/// The pods of the node by UID, as last listed.
#[derive(Debug, Default)]
pub struct Index {
    pods: HashMap<String, Arc<PodNames>>,
}

impl Index {
    /// Reads a PodList (`v1`, from the kubelet or the API server).
    pub fn from_pod_list(json: &[u8]) -> Result<Self, serde_json::Error> {
        let list: PodList = serde_json::from_slice(json)?;
        let mut pods = HashMap::new();
        for pod in list.items {
            let containers = [
                pod.status.container_statuses,
                pod.status.init_container_statuses,
                pod.status.ephemeral_container_statuses,
            ]
            .into_iter()
            .flatten()
            .filter_map(|c| {
                // `containerd://<id>`, `cri-o://<id>`, `docker://<id>`; empty while it starts.
                let id = c.container_id?;
                let (_, id) = id.split_once("://")?;
                (!id.is_empty()).then(|| (id.to_owned(), c.name))
            })
            .collect();
            let names = Arc::new(PodNames {
                name: pod.metadata.name,
                namespace: pod.metadata.namespace,
                containers,
            });
            if let Some(hash) = pod.metadata.annotations.get("kubernetes.io/config.mirror") {
                pods.insert(hash.clone(), names.clone());
            }
            if !pod.metadata.uid.is_empty() {
                pods.insert(pod.metadata.uid, names);
            }
        }
        Ok(Self { pods })
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn get(&self, uid: &str) -> Option<&Arc<PodNames>> {
        self.pods.get(uid)
    }
}

/// The part of a PodList read here; everything else is ignored.
#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Deserialize)]
struct Pod {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    status: Status,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Metadata {
    name: String,
    namespace: String,
    uid: String,
    annotations: HashMap<String, String>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Status {
    container_statuses: Vec<ContainerStatus>,
    init_container_statuses: Vec<ContainerStatus>,
    ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatus {
    #[serde(default)]
    name: String,
    #[serde(rename = "containerID")]
    container_id: Option<String>,
}

/// The names the background task last published, for the collection loop.
#[derive(Clone)]
pub struct Names {
    index: Arc<Mutex<Arc<Index>>>,
    /// Asks the task for a list now (a pod it did not have was seen).
    wake: Arc<Notify>,
    /// The pod UIDs and container ids that asked already: one that a new list does not have
    /// either (a pod of another node's kubelet, a cgroup left behind) waits for the regular
    /// refresh instead of asking every [`MIN_GAP`].
    asked: Arc<Mutex<HashSet<String>>>,
}

/// Most ids remembered in [`Names::asked`]; then it starts again (bounds its memory).
const MAX_ASKED: usize = 4096;

impl Names {
    fn new() -> Self {
        Self {
            index: Arc::new(Mutex::new(Arc::new(Index::default()))),
            wake: Arc::new(Notify::new()),
            asked: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Wakes the task for `id`'s sake, once per id.
    fn ask(&self, id: &str) {
        let mut asked = self.asked.lock().unwrap_or_else(PoisonError::into_inner);
        if asked.len() >= MAX_ASKED {
            asked.clear();
        }
        if asked.insert(id.to_owned()) {
            self.wake.notify_one();
        }
    }

    /// The last list published.
    pub fn index(&self) -> Arc<Index> {
        self.index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn publish(&self, index: Index) {
        *self.index.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(index);
    }

    /// Adds the pod's and the container's names to a workload whose pod is listed; a pod that
    /// is not asks for a new list (the task rate-limits it).
    pub fn name(&self, index: &Index, w: &mut Workload) {
        let Some(pod) = &mut w.pod else {
            return;
        };
        let Some(names) = index.get(&pod.uid) else {
            self.ask(&pod.uid);
            return;
        };
        pod.name = Some(names.name.clone());
        pod.namespace = Some(names.namespace.clone());
        if let Some(c) = &mut w.container {
            match names.containers.get(&c.id) {
                Some(name) => c.name = Some(name.clone()),
                // Started since the list: its status did not have its id yet.
                None => self.ask(&c.id),
            }
        }
    }
}

/// The names of this process's enrichment, once started ([`install`]).
static INSTALLED: OnceLock<Names> = OnceLock::new();

/// Makes `names` the process's source of pod names: every workload resolved from now on
/// ([`crate::cgroup::resolve_all`]) carries them when its pod is listed.
pub fn install(names: Names) {
    if INSTALLED.set(names).is_err() {
        tracing::warn!("kubernetes enrichment started twice; the first one is kept");
    }
}

/// Adds pod and container names to workloads, when enrichment runs.
pub fn name_all<'a>(workloads: impl IntoIterator<Item = &'a mut Workload>) {
    let Some(names) = INSTALLED.get() else {
        return;
    };
    let index = names.index();
    for w in workloads {
        names.name(&index, w);
    }
}

/// Checks the settings, then starts the background task on the current tokio runtime. The
/// names it publishes are [`install`]ed.
pub fn start(settings: Settings) -> Result<Names, StartError> {
    let client = Client::new(&settings)?;
    if settings.insecure_skip_verify {
        tracing::warn!(
            url = %settings.url,
            "kubernetes.insecure_skip_verify: the {}'s certificate is not verified (anyone on \
             the path can answer in its name and read the service account token)",
            settings.source
        );
    }
    let names = Names::new();
    let task = Refresher {
        names: names.clone(),
        client,
        settings,
    };
    tokio::spawn(task.run());
    Ok(names)
}

/// Why one list failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("reading the service account token {}: {reason}", path.display())]
    Token { path: PathBuf, reason: String },
    #[error("cannot reach it: {0}")]
    Connect(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("401 Unauthorized{}: {}", message(.0), token_hint(.1))]
    Unauthorized(String, Option<PathBuf>),
    #[error(
        "403 Forbidden{}: the service account lacks the RBAC permission; grant it {}",
        message(.0),
        .1.rbac()
    )]
    Forbidden(String, Source),
    #[error("HTTP {code}{}", message(.1), code = .0)]
    Status(u16, String),
    #[error("the answer is not a PodList: {0}")]
    Parse(String),
}

fn message(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(" ({m})")
    }
}

fn token_hint(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(
            "the token in {} was refused (expired, revoked, or of another cluster)",
            p.display()
        ),
        None => "no token was sent (kubernetes.token_file is \"\"); set it to the service \
                 account token"
            .to_owned(),
    }
}

impl FetchError {
    /// The same kind of failure (its details may differ from one attempt to the next), so a
    /// failure that goes on is said once.
    fn kind(&self) -> std::mem::Discriminant<Self> {
        std::mem::discriminant(self)
    }
}

/// One HTTPS client for the pod list.
struct Client {
    uri: Uri,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    token_file: Option<PathBuf>,
    source: Source,
}

impl Client {
    fn new(s: &Settings) -> Result<Self, StartError> {
        let what = match s.source {
            Source::Kubelet => "kubelet",
            Source::ApiServer => "API server",
        };
        let bad = |reason: &str| StartError::Url {
            url: s.url.clone(),
            reason: reason.to_owned(),
        };
        let uri: Uri = s.url.parse().map_err(|e| bad(&format!("{e}")))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("it must be https://"));
        }
        let host = uri
            .host()
            .ok_or_else(|| bad("it names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let server_name =
            ServerName::try_from(host.clone()).map_err(|e| bad(&format!("its host: {e}")))?;
        // ring's provider, chosen here rather than through a process-wide default.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let config = if s.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                    provider.signature_verification_algorithms,
                )))
                .with_no_client_auth()
        } else {
            let path = s.ca_file.as_ref().ok_or(StartError::NoCa { what })?;
            builder
                .with_root_certificates(roots(path, what)?)
                .with_no_client_auth()
        };
        Ok(Self {
            port: uri.port_u16().unwrap_or(443),
            uri,
            host,
            server_name,
            tls: TlsConnector::from(Arc::new(config)),
            token_file: s.token_file.clone(),
            source: s.source,
        })
    }

    /// Lists the pods, once.
    async fn fetch(&self) -> Result<Index, FetchError> {
        let token = match &self.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| FetchError::Token {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let body = tokio::time::timeout(TIMEOUT, self.get(token.as_deref()))
            .await
            .map_err(|_| FetchError::Timeout(TIMEOUT))??;
        Index::from_pod_list(&body).map_err(|e| FetchError::Parse(e.to_string()))
    }

    async fn get(&self, token: Option<&str>) -> Result<Bytes, FetchError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| FetchError::Connect(e.to_string()))?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| FetchError::Tls(tls_reason(&e, self.source)))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let connection = tokio::spawn(connection);
        let path = self
            .uri
            .path_and_query()
            .map_or("/", hyper::http::uri::PathAndQuery::as_str);
        let mut request = Request::get(path)
            .header(HOST, self.uri.authority().map_or("", |a| a.as_str()))
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, USER_AGENT_VALUE);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?
            .to_bytes();
        connection.abort();
        match status {
            StatusCode::OK => Ok(body),
            StatusCode::UNAUTHORIZED => Err(FetchError::Unauthorized(
                status_message(&body),
                self.token_file.clone(),
            )),
            StatusCode::FORBIDDEN => Err(FetchError::Forbidden(status_message(&body), self.source)),
            s => Err(FetchError::Status(s.as_u16(), status_message(&body))),
        }
    }
}

/// The CA bundle's certificates.
fn roots(path: &Path, what: &'static str) -> Result<RootCertStore, StartError> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| StartError::Ca {
            path: path.to_owned(),
            what,
            source,
        })?;
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(StartError::NoCertificate {
            path: path.to_owned(),
            reason: format!("{ignored} certificates could not be parsed"),
        });
    }
    Ok(roots)
}

/// A TLS failure, with what to do when the certificate is the problem.
fn tls_reason(e: &std::io::Error, source: Source) -> String {
    let text = e.to_string();
    if !text.contains("certificate") {
        return text;
    }
    let hint = match source {
        // kubeadm's kubelets serve a self-signed certificate unless serverTLSBootstrap is on.
        Source::Kubelet => {
            "; kubelets often serve a self-signed certificate that the cluster CA did not sign: \
             use enrich = \"api-server\", set kubernetes.ca_file to the CA that signed it, or \
             (knowingly) kubernetes.insecure_skip_verify = true"
        }
        Source::ApiServer => {
            "; set kubernetes.ca_file to the CA that signed the API server's certificate"
        }
    };
    format!("{text}{hint}")
}

/// The `message` of a Kubernetes `Status` answer, else the start of the body.
fn status_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Status {
        message: String,
    }
    if let Ok(s) = serde_json::from_slice::<Status>(body) {
        return s.message;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

/// `insecure_skip_verify`: any certificate is accepted, but the handshake's signatures are
/// still checked (against the certificate presented).
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The background task: list, publish, wait; say what fails once.
struct Refresher {
    names: Names,
    client: Client,
    settings: Settings,
}

impl Refresher {
    async fn run(self) {
        let s = &self.settings;
        let mut failing: Option<std::mem::Discriminant<FetchError>> = None;
        let mut attempts: u32 = 0;
        loop {
            let started = Instant::now();
            let wait = match self.client.fetch().await {
                Ok(index) => {
                    let pods = index.len();
                    if failing.take().is_some() || attempts == 0 {
                        tracing::info!(
                            url = %s.url,
                            "kubernetes: {pods} pods listed by the {}; pod names are exported",
                            s.source
                        );
                    } else {
                        tracing::debug!(pods, "kubernetes: pods listed");
                    }
                    attempts = 1;
                    self.names.publish(index);
                    None
                }
                Err(e) => {
                    let backoff = backoff(attempts);
                    attempts = attempts.saturating_add(1);
                    if failing.replace(e.kind()) == Some(e.kind()) {
                        tracing::debug!(url = %s.url, "kubernetes: still failing: {e}");
                    } else {
                        tracing::warn!(
                            "kubernetes.enrich = \"{}\": listing pods at {} failed: {e}. Metrics \
                             are exported without k8s.pod.name, k8s.namespace.name and \
                             k8s.container.name until it works; retrying with backoff (up to \
                             every {MAX_BACKOFF:?}), said again only when the reason changes",
                            s.source,
                            s.url
                        );
                    }
                    Some(backoff)
                }
            };
            match wait {
                Some(backoff) => tokio::time::sleep(backoff).await,
                None => {
                    // The next list at the refresh interval, or sooner for an unknown pod (but
                    // not more often than MIN_GAP).
                    tokio::select! {
                        () = tokio::time::sleep(s.refresh) => {}
                        () = self.names.wake.notified() => {
                            tokio::time::sleep_until((started + MIN_GAP).into()).await;
                        }
                    }
                }
            }
        }
    }
}

/// 1 s, 2 s, 4 s... up to [`MAX_BACKOFF`].
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(16)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::Workload;

    const UID: &str = "275ecb36-5aa8-4c2a-9c47-d8bb681b9aff";
    const ID: &str = "4f1c2b3a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";
    const HASH: &str = "0123456789abcdef0123456789abcdef";

    fn pod_list() -> String {
        serde_json::json!({
            "kind": "PodList", "apiVersion": "v1", "metadata": {},
            "items": [
                {
                    "metadata": {"name": "web-7d4f", "namespace": "shop", "uid": UID,
                                 "labels": {"app": "web"}},
                    "spec": {"nodeName": "node-1"},
                    "status": {
                        "phase": "Running", "qosClass": "Burstable",
                        "containerStatuses": [
                            {"name": "nginx", "containerID": format!("containerd://{ID}")},
                            {"name": "starting"}
                        ],
                        "initContainerStatuses": [
                            {"name": "init", "containerID": "cri-o://abc"}
                        ]
                    }
                },
                {
                    "metadata": {"name": "etcd-node-1", "namespace": "kube-system",
                                 "uid": "mirror-uid",
                                 "annotations": {"kubernetes.io/config.mirror": HASH}}
                }
            ]
        })
        .to_string()
    }

    #[test]
    fn a_pod_list_indexes_pods_by_uid_and_containers_by_id() {
        let index = Index::from_pod_list(pod_list().as_bytes()).unwrap();
        let web = index.get(UID).unwrap();
        assert_eq!(
            (web.name.as_str(), web.namespace.as_str()),
            ("web-7d4f", "shop")
        );
        assert_eq!(web.containers.get(ID).map(String::as_str), Some("nginx"));
        assert_eq!(web.containers.get("abc").map(String::as_str), Some("init"));
        // No id yet: not indexed.
        assert_eq!(web.containers.len(), 2);
        // A static pod by the hash its cgroup carries, and by its mirror's UID.
        assert_eq!(index.get(HASH).unwrap().name, "etcd-node-1");
        assert_eq!(index.get("mirror-uid").unwrap().name, "etcd-node-1");
        assert!(Index::from_pod_list(b"{\"items\": 3}").is_err());
        assert!(Index::from_pod_list(b"{}").unwrap().is_empty());
    }

    #[test]
    fn workloads_get_the_names_of_listed_pods_only() {
        let names = Names::new();
        let index = Index::from_pod_list(pod_list().as_bytes()).unwrap();
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        let mut w = Workload::from_path(&path);
        names.name(&index, &mut w);
        let pod = w.pod.as_ref().unwrap();
        assert_eq!(pod.name.as_deref(), Some("web-7d4f"));
        assert_eq!(pod.namespace.as_deref(), Some("shop"));
        assert_eq!(w.container.as_ref().unwrap().name.as_deref(), Some("nginx"));
        assert_eq!(w.name(), "shop/web-7d4f nginx");
        // Unknown pods stay as they were.
        let mut other = Workload::from_path(&format!(
            "/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/{ID}"
        ));
        let before = other.clone();
        names.name(&index, &mut other);
        assert_eq!(other, before);
        // It asked for a list once; asking again for the same pod does not wake the task.
        assert_eq!(names.asked.lock().unwrap().len(), 1);
        names.name(&index, &mut other);
        assert_eq!(names.asked.lock().unwrap().len(), 1);
    }

    /// The HTTPS client against a real TLS server (`observer_tests::kubelet`, Python's ssl
    /// with certificates made by openssl): verified with the right CA only, the token sent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lists_pods_over_tls_verified_with_the_configured_ca_only() {
        use observer_tests::kubelet::{self, PodServer};
        let list = kubelet::pod_list(&[kubelet::Pod {
            uid: UID.into(),
            name: "web-7d4f".into(),
            namespace: "shop".into(),
            containers: vec![(ID.into(), "nginx".into())],
        }]);
        let (server, other) = match (PodServer::start(&list), PodServer::start(&list)) {
            (Ok(s), Ok(o)) => (s, o),
            (Err(e), _) | (_, Err(e)) => observer_tests::skip_or_fail!("{e}"),
        };
        let settings = |ca: &Path| Settings {
            source: Source::Kubelet,
            url: format!("{}/pods", server.url()),
            token_file: Some(server.token.clone()),
            ca_file: Some(ca.to_owned()),
            insecure_skip_verify: false,
            refresh: Duration::from_secs(30),
        };
        let fetch = |s: Settings| async move { Client::new(&s).unwrap().fetch().await };
        let index = fetch(settings(&server.ca)).await.unwrap();
        assert_eq!(index.get(UID).unwrap().name, "web-7d4f");
        assert_eq!(
            index
                .get(UID)
                .unwrap()
                .containers
                .get(ID)
                .map(String::as_str),
            Some("nginx")
        );
        // Another CA's certificate: refused, saying what to do.
        let e = fetch(settings(&other.ca)).await.unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, FetchError::Tls(_)), "{e:?}");
        assert!(
            m.starts_with(
                "TLS: invalid peer certificate: UnknownIssuer; kubelets often serve a \
                           self-signed certificate"
            ) && m.contains("use enrich = \"api-server\""),
            "{m}"
        );
        // Unless verification is skipped, explicitly.
        let skip = Settings {
            insecure_skip_verify: true,
            ..settings(&other.ca)
        };
        assert_eq!(fetch(skip).await.unwrap().len(), 1);
        // No token: 401, saying none was sent.
        let anonymous = Settings {
            token_file: None,
            ..settings(&server.ca)
        };
        let m = fetch(anonymous).await.unwrap_err().to_string();
        assert!(
            m.starts_with("401 Unauthorized (Unauthorized): no token was sent"),
            "{m}"
        );
        // The token's file is read for every request: a missing one is a failure to retry.
        let gone = Settings {
            token_file: Some("/nonexistent/token".into()),
            ..settings(&server.ca)
        };
        let m = fetch(gone).await.unwrap_err().to_string();
        assert!(
            m.starts_with("reading the service account token /nonexistent/token:"),
            "{m}"
        );
        // A CA that cannot be read stops the start, naming the key.
        let Err(e) = Client::new(&settings(Path::new("/nonexistent/ca.crt"))) else {
            panic!("a missing CA file was accepted");
        };
        assert!(
            e.to_string()
                .starts_with("kubernetes.ca_file /nonexistent/ca.crt:"),
            "{e}"
        );
        // The verified, the unverified and the anonymous one reached HTTP; the others did not.
        assert_eq!(server.requests(), ["/pods"; 3]);
    }

    #[test]
    fn failures_say_what_to_do() {
        let e = FetchError::Forbidden(
            "pods is forbidden: User \"system:serviceaccount:observer:observer\" cannot list \
             resource \"pods\""
                .into(),
            Source::ApiServer,
        );
        let m = e.to_string();
        assert!(m.starts_with("403 Forbidden (pods is forbidden"), "{m}");
        assert!(m.contains("`list` on `pods`"), "{m}");
        let m = FetchError::Forbidden(String::new(), Source::Kubelet).to_string();
        assert!(m.contains("`get` on `nodes/pods`"), "{m}");
        let m = FetchError::Unauthorized(String::new(), Some("/t".into())).to_string();
        assert_eq!(
            m,
            "401 Unauthorized: the token in /t was refused (expired, revoked, or of another \
             cluster)"
        );
        assert_eq!(
            status_message(br#"{"kind":"Status","message":"nope"}"#),
            "nope"
        );
        assert_eq!(status_message(b" plain\n"), "plain");
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
