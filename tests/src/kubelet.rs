//! An HTTPS server that answers like a kubelet's `GET /pods` and the API server's
//! `GET /api/v1/pods`, for the Kubernetes enrichment tests (no cluster runs here). It is
//! Python's `http.server` behind Python's `ssl`, with a CA and a server certificate (for
//! `127.0.0.1`) made by the `openssl` CLI, so observer's TLS client, certificate check and
//! bearer token meet a real TLS stack.
//!
//! It answers 401 (a Kubernetes `Status`) to a request without `Authorization: Bearer TOKEN`,
//! 403 while [`PodServer::forbid`] is on, and otherwise the PodList in its pods file, read
//! again for every request so a test can change it. Every request's path goes to a log the test
//! can read ([`PodServer::requests`]). Dropping it kills the server (by its pid) and removes its
//! directory.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::{Value, json};

use crate::{ChildGuard, rotel::TempDir};

/// What to install when `openssl` is missing.
pub const INSTALL_OPENSSL: &str = "apt-get install -y --no-install-recommends openssl";

const SERVER: &str = r#"
import http.server, json, os, ssl, sys

cert, key, token_file, pods_file, forbid_file, log_file = sys.argv[1:7]

def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(log_file, "a") as f:
            f.write(self.path + "\n")
        token = open(token_file).read().strip()
        if self.headers.get("Authorization") != "Bearer " + token:
            return self.reply(401, status(401, "Unauthorized", "Unauthorized"))
        if os.path.exists(forbid_file):
            return self.reply(403, status(403, "Forbidden",
                'pods is forbidden: User "system:serviceaccount:observer:observer" cannot list '
                'resource "pods" in API group "" at the cluster scope'))
        if self.path.split("?")[0] not in ("/pods", "/api/v1/pods"):
            return self.reply(404, status(404, "NotFound", "the server could not find the "
                                          "requested resource"))
        with open(pods_file, "rb") as f:
            self.reply(200, None, f.read())

    def reply(self, code, obj, body=None):
        body = body if body is not None else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// One pod of the list: its UID, name and namespace, and its containers (id, name).
pub struct Pod {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub containers: Vec<(String, String)>,
}

/// A `v1` PodList as the kubelet and the API server serve it (the fields observer reads, and a
/// few it must ignore).
pub fn pod_list(pods: &[Pod]) -> Value {
    let items: Vec<Value> = pods
        .iter()
        .map(|p| {
            let statuses: Vec<Value> = p
                .containers
                .iter()
                .map(|(id, name)| {
                    json!({"name": name, "containerID": format!("containerd://{id}"),
                           "ready": true, "restartCount": 0, "image": "nginx:1.27"})
                })
                .collect();
            json!({
                "metadata": {"name": p.name, "namespace": p.namespace, "uid": p.uid,
                             "labels": {"app": p.name}},
                "spec": {"nodeName": "node-1", "containers": []},
                "status": {"phase": "Running", "qosClass": "Burstable",
                           "containerStatuses": statuses},
            })
        })
        .collect();
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
           "items": items})
}

/// The running server and its files.
pub struct PodServer {
    _child: ChildGuard,
    pub port: u16,
    /// The CA that signed the server's certificate (PEM).
    pub ca: PathBuf,
    /// The token the server accepts.
    pub token: PathBuf,
    pods: PathBuf,
    forbid_file: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl PodServer {
    /// Makes the certificates and starts the server, serving `pods`. `Err` when `openssl` or
    /// `python3` is missing.
    pub fn start(pods: &Value) -> Result<Self, String> {
        let dir = TempDir::new("pod-server");
        let d = |name: &str| dir.0.join(name);
        let (ca, ca_key, key, csr, cert, ext) = (
            d("ca.crt"),
            d("ca.key"),
            d("server.key"),
            d("server.csr"),
            d("server.crt"),
            d("san.ext"),
        );
        fs::write(&ext, "subjectAltName = IP:127.0.0.1, DNS:localhost\n").unwrap();
        let p = |p: &Path| p.to_str().unwrap().to_owned();
        let openssl = |args: Vec<String>| -> Result<(), String> {
            let out = Command::new("openssl")
                .args(&args)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running openssl: {e}; install it: {INSTALL_OPENSSL}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "openssl {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        let s = |v: &[&str]| v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        // A name of its own: another server's CA is another issuer.
        let subject = format!("/CN={}", crate::unique_name("observer-test-ca"));
        openssl(
            [
                s(&["req", "-x509", "-newkey", "ec", "-pkeyopt"]),
                s(&["ec_paramgen_curve:P-256", "-nodes", "-days", "2"]),
                vec!["-subj".into(), subject, "-keyout".into()],
                vec![p(&ca_key), "-out".into(), p(&ca)],
            ]
            .concat(),
        )?;
        openssl(
            [
                s(&[
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ]),
                s(&["-nodes", "-subj", "/CN=node-1", "-keyout"]),
                vec![p(&key), "-out".into(), p(&csr)],
            ]
            .concat(),
        )?;
        openssl(
            [
                s(&["x509", "-req", "-days", "2", "-in"]),
                vec![p(&csr), "-CA".into(), p(&ca), "-CAkey".into(), p(&ca_key)],
                s(&["-CAcreateserial", "-extfile"]),
                vec![p(&ext), "-out".into(), p(&cert)],
            ]
            .concat(),
        )?;
        let token = d("token");
        fs::write(&token, "observer-test-token\n").unwrap();
        let pods_file = d("pods.json");
        fs::write(&pods_file, pods.to_string()).unwrap();
        let script = d("server.py");
        fs::write(&script, SERVER).unwrap();
        let (forbid_file, log) = (d("forbid"), d("requests.log"));
        let mut child = Command::new("python3")
            .arg(&script)
            .args([&cert, &key, &token, &pods_file, &forbid_file, &log])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("running python3: {e}"))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .map_err(|e| format!("reading the server's port: {e}"))?;
        let child = ChildGuard::new(child);
        let port = line
            .trim()
            .parse()
            .map_err(|_| format!("the pod server did not start (it printed {line:?})"))?;
        Ok(Self {
            _child: child,
            port,
            ca,
            token,
            pods: pods_file,
            forbid_file,
            log,
            _dir: dir,
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Serves `pods` from now on.
    pub fn set_pods(&self, pods: &Value) {
        fs::write(&self.pods, pods.to_string()).unwrap();
    }

    /// Answers 403 (the service account lacks RBAC) while `on`.
    pub fn forbid(&self, on: bool) {
        if on {
            fs::write(&self.forbid_file, "").unwrap();
        } else {
            let _ = fs::remove_file(&self.forbid_file);
        }
    }

    /// The paths asked for so far, in order.
    pub fn requests(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}
