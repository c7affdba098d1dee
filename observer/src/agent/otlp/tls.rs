//! TLS to the collector, with rustls and ring (no OpenSSL): the certificates that
//! [`TlsFiles`] names, read again before every export so that a renewed certificate, key or CA
//! is used without a restart, and the connector through which both transports connect.
//!
//! A certificate that cannot be read or parsed is an error of the export like an unreachable
//! collector: the batch stays queued and is retried, and the error names the file.

use std::{
    error::Error,
    fs, io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper::{Uri, rt};
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};
use tower_service::Service;

use crate::config::TlsFiles;

/// Where distributions keep their bundle of trusted CAs, in the order Go's `crypto/x509`
/// (`root_linux.go`) looks for it: Debian/Ubuntu/Gentoo, Fedora/RHEL 6, openSUSE, OpenELEC,
/// CentOS/RHEL 7, Alpine.
const SYSTEM_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Why the certificates cannot be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the {what} {} is not usable: {reason}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "no CA bundle of the system to verify the collector with (SSL_CERT_FILE is not set and \
         none of {} exists); set OTEL_EXPORTER_OTLP_CERTIFICATE (or otlp.certificate) to the CA \
         that signed the collector's certificate",
        SYSTEM_BUNDLES.join(", ")
    )]
    NoSystemBundle,
    #[error(
        "the client certificate {} and the client key {} do not go together: {source}",
        certificate.display(),
        key.display()
    )]
    Client {
        certificate: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS setup: {0}")]
    Setup(#[from] rustls::Error),
}

const CA: &str = "CA certificate file";
const CLIENT_CERTIFICATE: &str = "client certificate file";
const CLIENT_KEY: &str = "client key file";

/// The contents a configuration was built from.
#[derive(PartialEq, Eq)]
struct Contents {
    ca_path: PathBuf,
    ca: Vec<u8>,
    /// The client certificate and key.
    client: Option<(Vec<u8>, Vec<u8>)>,
}

/// The TLS settings of one client, kept up to date with its files.
pub struct Tls {
    files: TlsFiles,
    /// The application protocol offered in the handshake (ALPN): `h2` for gRPC, which proxies
    /// such as nginx require to speak HTTP/2 over TLS, `http/1.1` for OTLP/HTTP.
    alpn: &'static [u8],
    loaded: Option<Contents>,
}

impl Tls {
    pub fn new(files: TlsFiles, alpn: &'static [u8]) -> Self {
        Self {
            files,
            alpn,
            loaded: None,
        }
    }

    /// Reads the files again. `Some` new configuration the first time and whenever a file
    /// changed since (connections made with the old one should be replaced); `None` when
    /// nothing changed. Reading a few small files per export costs far less than the export
    /// (the system's bundle, some 200 KB, a few tens of microseconds from the page cache).
    pub fn refresh(&mut self) -> Result<Option<Arc<ClientConfig>>, TlsError> {
        // Two reads in a row that agree: files swapped together (a Kubernetes secret volume
        // swaps a symlink to a new directory) are never taken half old, half new, which would
        // pair a certificate with another's key. A few tries, then the last read stands.
        let mut contents = self.read()?;
        for _ in 0..3 {
            let again = self.read()?;
            if again == contents {
                break;
            }
            contents = again;
        }
        if self.loaded.as_ref() == Some(&contents) {
            return Ok(None);
        }
        let config = self.config(&contents)?;
        self.loaded = Some(contents);
        Ok(Some(config))
    }

    fn read(&self) -> Result<Contents, TlsError> {
        let ca_path = match &self.files.certificate {
            Some(path) => path.clone(),
            None => system_bundle()?,
        };
        Ok(Contents {
            ca: read(&ca_path, CA)?,
            ca_path,
            client: match &self.files.client {
                Some(c) => Some((
                    read(&c.certificate, CLIENT_CERTIFICATE)?,
                    read(&c.key, CLIENT_KEY)?,
                )),
                None => None,
            },
        })
    }

    /// The CA that verifies the collector, for messages: known once [`Self::refresh`] read it.
    pub fn ca(&self) -> String {
        match (&self.files.certificate, &self.loaded) {
            (Some(path), _) => format!("the CA in {}", path.display()),
            (None, Some(loaded)) => {
                format!("the system's CA bundle ({})", loaded.ca_path.display())
            }
            (None, None) => "the system's CA bundle".to_owned(),
        }
    }

    fn config(&self, contents: &Contents) -> Result<Arc<ClientConfig>, TlsError> {
        let mut roots = RootCertStore::empty();
        let ca = certificates(&contents.ca, &contents.ca_path, CA)?;
        let (added, ignored) = roots.add_parsable_certificates(ca);
        if added == 0 {
            return Err(TlsError::Pem {
                what: CA,
                path: contents.ca_path.clone(),
                reason: format!("none of its {ignored} certificate(s) could be parsed"),
            });
        }
        // ring's provider, chosen here rather than through a process-wide default.
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots);
        let mut config = match (&self.files.client, &contents.client) {
            (Some(files), Some((certificate, key))) => {
                let chain = certificates(certificate, &files.certificate, CLIENT_CERTIFICATE)?;
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem {
                    what: CLIENT_KEY,
                    path: files.key.clone(),
                    reason: format!("no private key in PEM: {e}"),
                })?;
                // rustls checks that the key is the certificate's.
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|source| TlsError::Client {
                        certificate: files.certificate.clone(),
                        key: files.key.clone(),
                        source,
                    })?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![self.alpn.to_vec()];
        Ok(Arc::new(config))
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file: at least one.
fn certificates(
    pem: &[u8],
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(bad(
            "it holds no certificate (no -----BEGIN CERTIFICATE----- block)".into(),
        ));
    }
    Ok(certificates)
}

/// `SSL_CERT_FILE` if set (the variable OpenSSL and Go honour), else the first bundle of
/// [`SYSTEM_BUNDLES`] that exists.
fn system_bundle() -> Result<PathBuf, TlsError> {
    if let Some(path) = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty()) {
        return Ok(path.into());
    }
    SYSTEM_BUNDLES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_owned)
        .ok_or(TlsError::NoSystemBundle)
}

/// The TLS error somewhere in `e`'s chain of sources: rustls's own, or inside the I/O error
/// that tokio-rustls wraps it in (a handshake failure, or after the handshake the collector's
/// alert refusing a client certificate, which TLS 1.3 delivers on the first read).
pub fn rustls_error<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(r) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        next = e.source();
    }
    None
}

/// What to do about a TLS failure, where the cause is a usual one; `ca` is [`Tls::ca`].
pub fn hint(e: &rustls::Error, ca: &str) -> Option<String> {
    use rustls::Error as E;
    Some(match e {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the collector's certificate is not signed by {ca}; set OTEL_EXPORTER_OTLP_CERTIFICATE \
             (or otlp.certificate) to the CA that signed it"
        ),
        E::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "the collector's certificate has expired: renew it (or check this host's clock)".into()
        }
        E::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "the collector's certificate is not valid yet: check this host's clock".into(),
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "the collector's certificate is not for the endpoint's host: use a host name or \
              address that the certificate names"
            .into(),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            "the collector does not speak TLS on this port; if it is plaintext, use http://".into()
        }
        E::AlertReceived(AlertDescription::CertificateRequired) => {
            "the collector requires a client certificate: set OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE \
             and OTEL_EXPORTER_OTLP_CLIENT_KEY (or otlp.client_certificate and otlp.client_key)"
                .into()
        }
        E::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied,
        ) => "the collector refused this agent's client certificate: check that a CA it trusts \
              signed it and that it has not expired"
            .into(),
        _ => return None,
    })
}

/// Connects over TCP, then speaks TLS when it has a configuration (an `https://` endpoint).
/// tonic and hyper-util call it for every new connection.
#[derive(Clone)]
pub struct Connector {
    tcp: HttpConnector,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Connector {
    /// Plaintext without `tls`; otherwise TLS with that configuration, verifying that the
    /// collector's certificate is for that name.
    pub fn new(
        connect_timeout: Duration,
        tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    ) -> Self {
        let mut tcp = HttpConnector::new();
        // An https:// URI is connected over TCP here and the TLS is ours.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        Self {
            tcp,
            tls: tls.map(|(config, name)| (TlsConnector::from(config), name)),
        }
    }
}

/// The name the collector's certificate must hold: `uri`'s host, a DNS name or an IP address.
pub fn server_name(uri: &Uri) -> Result<ServerName<'static>, String> {
    let host = uri
        .host()
        .ok_or("it names no host")?
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("its host is no TLS server name: {e}"))
}

/// The handshake failed (the cause, with rustls's error, is the source).
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {server} failed")]
struct HandshakeError {
    server: String,
    #[source]
    source: io::Error,
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = Box<dyn Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tcp = self.tcp.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = tcp.await?;
            let Some((connector, name)) = tls else {
                return Ok(Conn::Plain(tcp));
            };
            let server = name.to_str().into_owned();
            let stream = connector
                .connect(name, tcp.into_inner())
                .await
                .map_err(|source| HandshakeError { server, source })?;
            Ok(Conn::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// One connection to the collector.
pub enum Conn {
    Plain(TokioIo<TcpStream>),
    // Boxed: rustls's connection state is large.
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }
}

/// What hyper-util's pool needs to know of a connection.
impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(s) => s.connected(),
            Self::Tls(s) => s.inner().get_ref().0.connected(),
        }
    }
}

#[cfg(test)]
mod tests {
    use observer_tests::{
        rotel::TempDir,
        tls::{Pki, replace},
    };

    use super::*;
    use crate::config::ClientFiles;

    #[test]
    fn the_files_are_read_again_and_what_is_wrong_names_the_file() {
        let dir = TempDir::new("tls-files");
        let pki = Pki::new(&dir.0, "ca").unwrap();
        let agent = pki.client("agent").unwrap();
        let (ca, cert, key) = (
            dir.0.join("trusted.pem"),
            dir.0.join("client.pem"),
            dir.0.join("client.key"),
        );
        replace(&pki.ca.cert, &ca);
        replace(&agent.cert, &cert);
        replace(&agent.key, &key);
        let files = TlsFiles {
            certificate: Some(ca.clone()),
            client: Some(ClientFiles {
                certificate: cert.clone(),
                key: key.clone(),
            }),
        };
        let mut tls = Tls::new(files, b"h2");
        let config = tls
            .refresh()
            .unwrap()
            .expect("a configuration the first time");
        assert_eq!(config.alpn_protocols, [b"h2".to_vec()]);
        assert!(config.client_auth_cert_resolver.has_certs());
        assert!(tls.refresh().unwrap().is_none(), "nothing changed");
        assert_eq!(tls.ca(), format!("the CA in {}", ca.display()));

        // A rotated CA, then a renewed client certificate: a new configuration each time.
        let other = Pki::new(&dir.0, "other").unwrap();
        replace(&other.ca.cert, &ca);
        assert!(tls.refresh().unwrap().is_some());
        let renewed = pki.client("agent-renewed").unwrap();
        replace(&renewed.cert, &cert);
        replace(&renewed.key, &key);
        assert!(tls.refresh().unwrap().is_some());

        // Half a rotation: the key of another certificate.
        replace(&agent.key, &key);
        let e = tls.refresh().unwrap_err();
        assert!(matches!(e, TlsError::Client { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "the client certificate {} and the client key {} do not go together: ",
                cert.display(),
                key.display()
            )),
            "{text}"
        );
        // Until it is fixed; then the pair is used again.
        replace(&renewed.key, &key);
        tls.refresh().unwrap();

        // Files that are not what they should be.
        fs::write(&key, "not a key\n").unwrap();
        let e = tls.refresh().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "the client key file {} is not usable: no private key in PEM",
                key.display()
            )),
            "{e}"
        );
        replace(&renewed.key, &key);
        fs::write(
            &ca,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert_eq!(
            tls.refresh().unwrap_err().to_string(),
            format!(
                "the CA certificate file {} is not usable: it holds no certificate (no \
                 -----BEGIN CERTIFICATE----- block)",
                ca.display()
            )
        );
        fs::remove_file(&ca).unwrap();
        assert_eq!(
            tls.refresh().unwrap_err().to_string(),
            format!(
                "cannot read the CA certificate file {}: No such file or directory (os error 2)",
                ca.display()
            )
        );
    }

    #[test]
    fn without_a_ca_file_the_systems_bundle_verifies() {
        if std::env::var_os("SSL_CERT_FILE").is_some() {
            // Then that file is the bundle; the test below is of the distribution's.
            return;
        }
        let mut tls = Tls::new(TlsFiles::default(), b"http/1.1");
        let config = tls.refresh().unwrap_or_else(|e| panic!("{e}"));
        let config = config.expect("a configuration");
        assert!(!config.client_auth_cert_resolver.has_certs());
        let bundle = SYSTEM_BUNDLES
            .iter()
            .find(|p| Path::new(p).is_file())
            .expect("a CA bundle of the system (Debian: ca-certificates)");
        assert_eq!(tls.ca(), format!("the system's CA bundle ({bundle})"));
    }

    #[test]
    fn tls_failures_are_found_in_the_chain_and_explained() {
        // As hyper and tonic pass it on: rustls's error in tokio-rustls's io::Error, in a
        // handshake error of ours.
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let e = HandshakeError {
            server: "127.0.0.1".into(),
            source: io::Error::new(io::ErrorKind::InvalidData, unknown),
        };
        let found = rustls_error(&e).expect("the rustls error");
        assert_eq!(
            hint(found, "the CA in /etc/observer/ca.pem").unwrap(),
            "the collector's certificate is not signed by the CA in /etc/observer/ca.pem; set \
             OTEL_EXPORTER_OTLP_CERTIFICATE (or otlp.certificate) to the CA that signed it"
        );
        let expired = rustls::Error::InvalidCertificate(CertificateError::Expired);
        assert!(
            hint(&expired, "")
                .unwrap()
                .contains("has expired: renew it")
        );
        let elsewhere = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert!(
            hint(&elsewhere, "")
                .unwrap()
                .contains("not for the endpoint's host")
        );
        let plaintext = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert!(hint(&plaintext, "").unwrap().contains("use http://"));
        let required = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert!(
            hint(&required, "")
                .unwrap()
                .contains("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")
        );
        let refused = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
        assert!(
            hint(&refused, "")
                .unwrap()
                .contains("refused this agent's client certificate")
        );
        assert!(rustls_error(&io::Error::other("reset")).is_none());
        assert!(hint(&rustls::Error::DecryptError, "").is_none());
    }
}
