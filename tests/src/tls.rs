//! TLS in front of the OTLP collector, for the tests of observer's TLS client: certificates made
//! by the `openssl` CLI ([`Pki`]: a CA, and server and client certificates it signs), and
//! `nginx` terminating TLS in front of rotel ([`Proxy`]), which has no TLS receiver of its own:
//! gRPC with `grpc_pass` over HTTP/2 (negotiated with ALPN, as a TLS collector or ingress
//! does), OTLP/HTTP with `proxy_pass`. nginx logs every request with what the tests check:
//! whether the client certificate verified and whose it was, the request's compression, and its
//! size.
//!
//! Everything listens on 127.0.0.1 only.

use std::{
    fs,
    net::{Ipv4Addr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{ChildGuard, rotel::Rotel};

/// What to install when `openssl` or `nginx` is missing (`./x setup` installs both).
pub const INSTALL: &str = "apt-get install -y --no-install-recommends openssl nginx";

/// Runs `openssl` with `args`.
fn openssl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running openssl: {e}; install it: {INSTALL}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A certificate and its key, PEM files.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA of its own (a unique name: another test's CA is another issuer), in `dir`.
pub struct Pki {
    dir: PathBuf,
    pub ca: Pair,
}

impl Pki {
    /// Makes the CA's key and self-signed certificate, named `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Result<Self, String> {
        let ca = Pair {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        let subject = format!("/CN={}", crate::unique_name("observer-test-ca"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subject,
            "-keyout",
            s(&ca.key),
            "-out",
            s(&ca.cert),
        ])?;
        Ok(Self {
            dir: dir.to_owned(),
            ca,
        })
    }

    /// A certificate for `127.0.0.1` and `localhost` that servers present.
    pub fn server(&self, name: &str) -> Result<Pair, String> {
        self.issue(
            name,
            "subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth\n",
        )
    }

    /// A certificate with the common name `name` that clients present.
    pub fn client(&self, name: &str) -> Result<Pair, String> {
        self.issue(name, "extendedKeyUsage = clientAuth\n")
    }

    fn issue(&self, name: &str, extensions: &str) -> Result<Pair, String> {
        let d = |ext: &str| self.dir.join(format!("{name}.{ext}"));
        let pair = Pair {
            cert: d("crt"),
            key: d("key"),
        };
        let (csr, ext) = (d("csr"), d("ext"));
        fs::write(&ext, extensions).map_err(|e| e.to_string())?;
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            s(&pair.key),
            "-out",
            s(&csr),
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            s(&csr),
            "-CA",
            s(&self.ca.cert),
            "-CAkey",
            s(&self.ca.key),
            "-CAcreateserial",
            "-extfile",
            s(&ext),
            "-out",
            s(&pair.cert),
        ])?;
        Ok(pair)
    }
}

/// Replaces `to` with a copy of `from` atomically (a rename), so a reader never sees half a
/// file.
pub fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    fs::copy(from, &tmp).unwrap();
    fs::rename(&tmp, to).unwrap();
}

/// The files a TLS client reads, as Kubernetes mounts a secret: `ca.pem`, `client.pem` and
/// `client.key` in `link`, a symbolic link to a directory of one version; [`Mounted::update`]
/// swaps the link, so every file changes at once.
pub struct Mounted {
    pub link: PathBuf,
    versions: usize,
}

impl Mounted {
    /// `link` with its first version of the files.
    pub fn new(link: &Path, ca: &Path, client: Option<&Pair>) -> Self {
        let mut m = Self {
            link: link.to_owned(),
            versions: 0,
        };
        m.update(ca, client);
        m
    }

    pub fn ca(&self) -> PathBuf {
        self.link.join("ca.pem")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.link.join("client.pem")
    }

    pub fn client_key(&self) -> PathBuf {
        self.link.join("client.key")
    }

    /// A new version of the files, swapped in at once.
    pub fn update(&mut self, ca: &Path, client: Option<&Pair>) {
        self.versions += 1;
        let version = self.link.with_extension(format!("v{}", self.versions));
        fs::create_dir_all(&version).unwrap();
        fs::copy(ca, version.join("ca.pem")).unwrap();
        if let Some(client) = client {
            fs::copy(&client.cert, version.join("client.pem")).unwrap();
            fs::copy(&client.key, version.join("client.key")).unwrap();
        }
        let tmp = self.link.with_extension("swap");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        fs::rename(&tmp, &self.link).unwrap();
    }
}

/// The nginx binary: `$NGINX`, else Debian's.
pub fn nginx_binary() -> Result<PathBuf, String> {
    let path =
        std::env::var_os("NGINX").map_or_else(|| PathBuf::from("/usr/sbin/nginx"), Into::into);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "nginx (the TLS proxy in front of the test collector) is not installed at {}: run \
             `{INSTALL}`, or set NGINX to the binary",
            path.display()
        ))
    }
}

/// How the proxy authenticates.
#[derive(Clone, Debug)]
pub struct ProxyTls {
    /// The certificate the proxy presents.
    pub server: Pair,
    /// Client certificates must verify against this CA; `None`: none is asked for.
    pub client_ca: Option<PathBuf>,
}

/// One request as nginx logged it.
#[derive(Clone, Debug, PartialEq)]
pub struct Logged {
    pub port: u16,
    pub status: u16,
    /// The whole request as nginx read it: request line (or HTTP/2 pseudo-headers), headers and
    /// body (`$request_length`).
    pub bytes: u64,
    /// `SUCCESS`, `NONE`, or `FAILED:reason` (`$ssl_client_verify`).
    pub client_verify: String,
    /// The client certificate's subject (`$ssl_client_s_dn`, `CN=...`), empty without one.
    pub client: String,
    /// `Content-Encoding` (OTLP/HTTP) or `grpc-encoding` (gRPC), empty when not compressed.
    pub encoding: String,
    pub path: String,
}

/// nginx, terminating TLS for rotel's gRPC and HTTP receivers; killed on drop.
pub struct Proxy {
    child: Option<ChildGuard>,
    bin: PathBuf,
    dir: PathBuf,
    pub grpc_port: u16,
    pub http_port: u16,
    upstream: (u16, u16),
}

/// nginx logs an empty or missing variable as `-`.
const LOG_FORMAT: &str = "$server_port $status $request_length $ssl_client_verify \
                          \"$ssl_client_s_dn\" \"$http_content_encoding\" \"$http_grpc_encoding\" \
                          $request_uri";

impl Proxy {
    /// Starts nginx in `dir` (its configuration, logs and temporary files) on two free ports,
    /// forwarding to `rotel`, and waits until it accepts connections.
    pub fn start(bin: &Path, dir: &Path, rotel: &Rotel, tls: &ProxyTls) -> Result<Self, String> {
        let (grpc_port, http_port) = crate::rotel::free_ports();
        let mut proxy = Self {
            child: None,
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            grpc_port,
            http_port,
            upstream: (rotel.grpc_port, rotel.http_port),
        };
        proxy.spawn(tls)?;
        Ok(proxy)
    }

    /// Stops nginx and starts it again on the same ports with `tls`: a collector whose
    /// certificates were rotated. Its connections are closed.
    pub fn restart(&mut self, tls: &ProxyTls) -> Result<(), String> {
        drop(self.child.take());
        self.spawn(tls)
    }

    fn spawn(&mut self, tls: &ProxyTls) -> Result<(), String> {
        let d = |name: &str| self.dir.join(name);
        let client = match &tls.client_ca {
            Some(ca) => format!(
                "ssl_client_certificate {};\n        ssl_verify_client on;",
                s(ca)
            ),
            None => String::new(),
        };
        let server = |port: u16, http2: &str, location: &str| {
            format!(
                "    server {{
        listen 127.0.0.1:{port} ssl{http2};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        {client}
        location / {{ {location} }}
    }}
",
                cert = s(&tls.server.cert),
                key = s(&tls.server.key),
            )
        };
        let (rotel_grpc, rotel_http) = self.upstream;
        // One process (no workers to fork), in the foreground, every path in `dir`.
        let conf = format!(
            "daemon off;
master_process off;
pid {pid};
error_log {error} info;
events {{ worker_connections 64; }}
http {{
    log_format otlp '{LOG_FORMAT}';
    access_log {access} otlp;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 0;
    client_body_buffer_size 4m;
{grpc}{http}}}
",
            pid = s(&d("nginx.pid")),
            error = s(&d("nginx-error.log")),
            access = s(&d("nginx-access.log")),
            tmp = s(&self.dir),
            grpc = server(
                self.grpc_port,
                " http2",
                &format!("grpc_pass grpc://127.0.0.1:{rotel_grpc};")
            ),
            http = server(
                self.http_port,
                "",
                &format!("proxy_pass http://127.0.0.1:{rotel_http}; proxy_http_version 1.1;")
            ),
        );
        fs::write(d("nginx.conf"), conf).map_err(|e| e.to_string())?;
        let child = Command::new(&self.bin)
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(d("nginx.conf"))
            // Before the configuration is read, nginx logs to this, not /var/log/nginx.
            .arg("-e")
            .arg(d("nginx-error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let mut child = ChildGuard::new(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [self.grpc_port, self.http_port] {
            while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
                if let Some(c) = child.0.as_mut()
                    && let Ok(Some(status)) = c.try_wait()
                {
                    return Err(format!(
                        "nginx exited ({status}): {}",
                        fs::read_to_string(d("nginx-error.log")).unwrap_or_default()
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "nginx does not listen on 127.0.0.1:{port} after 10 s"
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.child = Some(child);
        Ok(())
    }

    /// `https://127.0.0.1:PORT` of gRPC.
    pub fn grpc_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }

    /// `https://127.0.0.1:PORT` of OTLP/HTTP (a base URL: the agent appends `/v1/metrics`).
    pub fn http_base(&self) -> String {
        format!("https://127.0.0.1:{}", self.http_port)
    }

    /// Every request logged so far.
    pub fn requests(&self) -> Vec<Logged> {
        let text = fs::read_to_string(self.dir.join("nginx-access.log")).unwrap_or_default();
        text.lines().filter_map(parse).collect()
    }
}

/// A line of [`LOG_FORMAT`].
fn parse(line: &str) -> Option<Logged> {
    let [head, client, _, content_encoding, _, grpc_encoding, path] =
        line.split('"').collect::<Vec<_>>().try_into().ok()?;
    let mut head = head.split_whitespace();
    let unset = |v: &str| {
        if v == "-" {
            String::new()
        } else {
            v.to_owned()
        }
    };
    Some(Logged {
        port: head.next()?.parse().ok()?,
        status: head.next()?.parse().ok()?,
        bytes: head.next()?.parse().ok()?,
        client_verify: head.next()?.to_owned(),
        client: unset(client),
        encoding: unset(content_encoding) + &unset(grpc_encoding),
        path: path.trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines() {
        assert_eq!(
            parse(
                "4443 200 2310 SUCCESS \"CN=agent-1\" \"-\" \"gzip\" \
                 /opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
            ),
            Some(Logged {
                port: 4443,
                status: 200,
                bytes: 2310,
                client_verify: "SUCCESS".into(),
                client: "CN=agent-1".into(),
                encoding: "gzip".into(),
                path: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export".into(),
            })
        );
        assert_eq!(
            parse("4444 400 310 NONE \"-\" \"gzip\" \"-\" /v1/metrics").map(|l| (
                l.client_verify,
                l.client,
                l.encoding
            )),
            Some(("NONE".into(), String::new(), "gzip".into()))
        );
    }
}
