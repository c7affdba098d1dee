//! Sending one export request over gRPC (tonic) or HTTP/protobuf (hyper), in plaintext or TLS,
//! compressed or not, and sorting failures into the ones worth retrying and the ones that are
//! final, as the OTLP specification says. One client sends one kind of request ([`Export`]:
//! metrics or logs) to one endpoint.

use std::{error::Error, future::Future, io::Write as _, sync::Arc, time::Duration};

use bytes::Bytes;
use flate2::write::GzEncoder;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    HeaderMap, Method, Request, StatusCode, Uri,
    header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT},
};
use hyper_util::{client::legacy::Client as HyperClient, rt::TokioExecutor};
use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse, logs_service_client::LogsServiceClient,
    },
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_client::MetricsServiceClient,
    },
};
use prost::Message;
use rustls::{ClientConfig, pki_types::ServerName};
use tonic::{
    Code,
    codec::CompressionEncoding,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Channel, Endpoint},
};

use super::{
    Compression, Destination, OtlpError, Protocol,
    tls::{self, Connector, Tls},
};

const USER_AGENT_VALUE: &str = concat!("observer/", env!("CARGO_PKG_VERSION"));
/// A collector's answer is a small protobuf or an error text; anything larger is not read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// A Retry-After longer than this is treated as this: a misconfigured proxy must not stall the
/// export for hours while the queue drops everything.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Why one send did not get through.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The collector could not be reached, timed out, or asked to retry later; or the TLS
    /// certificates cannot be used (yet).
    #[error("{reason}")]
    Retryable {
        reason: String,
        /// How long the collector asked us to wait (HTTP Retry-After).
        retry_after: Option<Duration>,
    },
    /// The collector refused the data; sending it again would fail the same way.
    #[error("{reason}")]
    Rejected { reason: String },
}

/// What the collector dropped of a request it accepted (OTLP partial success).
pub struct PartialSuccess {
    /// Data points or log records, as [`Export::ITEMS`] says.
    pub rejected: i64,
    pub message: String,
}

/// An OTLP export request: what differs between the metrics and the logs service.
pub trait Export: Message + Send + Sized + 'static {
    type Response: Message + Default;
    /// What a partial success counts, for messages: "data points", "log records".
    const ITEMS: &'static str;
    /// Calls the service's Export method over `channel`, compressing the request with
    /// `compression` if set.
    fn grpc(
        channel: Channel,
        request: tonic::Request<Self>,
        compression: Option<CompressionEncoding>,
    ) -> impl Future<Output = Result<tonic::Response<Self::Response>, tonic::Status>> + Send;
    /// The partial success in `response`, if anything was rejected.
    fn partial(response: Self::Response) -> Option<PartialSuccess>;
}

impl Export for ExportMetricsServiceRequest {
    type Response = ExportMetricsServiceResponse;
    const ITEMS: &'static str = "data points";

    async fn grpc(
        channel: Channel,
        request: tonic::Request<Self>,
        compression: Option<CompressionEncoding>,
    ) -> Result<tonic::Response<Self::Response>, tonic::Status> {
        let mut client = MetricsServiceClient::new(channel);
        if let Some(encoding) = compression {
            client = client.send_compressed(encoding);
        }
        client.export(request).await
    }

    fn partial(response: Self::Response) -> Option<PartialSuccess> {
        let p = response.partial_success?;
        partial(p.rejected_data_points, p.error_message)
    }
}

impl Export for ExportLogsServiceRequest {
    type Response = ExportLogsServiceResponse;
    const ITEMS: &'static str = "log records";

    async fn grpc(
        channel: Channel,
        request: tonic::Request<Self>,
        compression: Option<CompressionEncoding>,
    ) -> Result<tonic::Response<Self::Response>, tonic::Status> {
        let mut client = LogsServiceClient::new(channel);
        if let Some(encoding) = compression {
            client = client.send_compressed(encoding);
        }
        client.export(request).await
    }

    fn partial(response: Self::Response) -> Option<PartialSuccess> {
        let p = response.partial_success?;
        partial(p.rejected_log_records, p.error_message)
    }
}

/// What a [`Transport`] is made from, by protocol.
enum Wire {
    Grpc {
        /// Where channels are made from (boxed: it is large).
        endpoint: Box<Endpoint>,
        metadata: MetadataMap,
    },
    Http {
        headers: HeaderMap,
    },
}

/// The connections (a channel or a pool, replaced when the TLS certificates change) and what
/// is sent with each request.
#[derive(Clone)]
enum Transport {
    Grpc {
        // A generated service client per request is only a handle on this shared channel.
        channel: Channel,
        metadata: MetadataMap,
    },
    Http {
        // Boxed: the pooled client is several times the size of the gRPC variant.
        client: Box<HyperClient<Connector, Full<Bytes>>>,
        headers: HeaderMap,
    },
}

pub struct Client {
    uri: Uri,
    wire: Wire,
    timeout: Duration,
    compression: Compression,
    /// The certificates of an `https://` endpoint, read again before each send, and the name
    /// the collector's certificate must hold.
    tls: Option<(Tls, ServerName<'static>)>,
    /// `None` only until the certificates of an `https://` endpoint were first loaded.
    transport: Option<Transport>,
}

impl Client {
    /// Checks the settings and builds the client for `destination`; nothing is connected and
    /// no certificate is read yet, so a collector that is down at start, or a certificate not
    /// there yet, is not an error (the first sends are retried).
    pub fn new(destination: &Destination) -> Result<Self, OtlpError> {
        let endpoint = &destination.endpoint;
        let invalid = |reason: String| OtlpError::InvalidEndpoint {
            endpoint: endpoint.clone(),
            reason,
        };
        let uri: Uri = endpoint.parse().map_err(|e| invalid(format!("{e}")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(invalid("the scheme must be http:// or https://".into())),
        };
        if uri.authority().is_none() {
            return Err(invalid("it names no host".into()));
        }
        let header_error = |name: &str, reason: String| OtlpError::InvalidHeader {
            endpoint: endpoint.clone(),
            name: name.to_owned(),
            reason,
        };
        let wire = match destination.protocol {
            Protocol::Grpc => {
                let mut metadata = MetadataMap::new();
                for (name, value) in &destination.headers {
                    // gRPC metadata keys are lower case (HTTP/2 header names).
                    let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map_err(|e| header_error(name, e.to_string()))?;
                    let value = MetadataValue::try_from(value.as_str())
                        .map_err(|e| header_error(name, e.to_string()))?;
                    metadata.append(key, value);
                }
                let endpoint = Endpoint::from_shared(endpoint.clone())
                    .map_err(|e| invalid(e.to_string()))?
                    .user_agent(USER_AGENT_VALUE)
                    .map_err(|e| invalid(e.to_string()))?
                    .connect_timeout(destination.timeout);
                Wire::Grpc {
                    endpoint: Box::new(endpoint),
                    metadata,
                }
            }
            Protocol::HttpProtobuf => {
                let mut headers = HeaderMap::new();
                for (name, value) in &destination.headers {
                    let key = HeaderName::try_from(name.as_str())
                        .map_err(|e| header_error(name, e.to_string()))?;
                    let value = HeaderValue::try_from(value.as_str())
                        .map_err(|e| header_error(name, e.to_string()))?;
                    headers.append(key, value);
                }
                Wire::Http { headers }
            }
        };
        let mut client = Self {
            uri,
            wire,
            timeout: destination.timeout,
            compression: destination.compression,
            tls: None,
            transport: None,
        };
        if https {
            // Checked now, so that a host no certificate can name fails at start.
            let name = tls::server_name(&client.uri).map_err(invalid)?;
            let alpn: &[u8] = match destination.protocol {
                Protocol::Grpc => b"h2",
                Protocol::HttpProtobuf => b"http/1.1",
            };
            client.tls = Some((Tls::new(destination.tls.clone(), alpn), name));
        } else {
            client.transport = Some(client.connect(None));
        }
        Ok(client)
    }

    /// A channel or pool that connects lazily, with `tls` if set.
    fn connect(&self, tls: Option<(Arc<ClientConfig>, ServerName<'static>)>) -> Transport {
        let connector = Connector::new(self.timeout, tls);
        match &self.wire {
            Wire::Grpc { endpoint, metadata } => Transport::Grpc {
                channel: endpoint.connect_with_connector_lazy(connector),
                metadata: metadata.clone(),
            },
            Wire::Http { headers } => Transport::Http {
                client: Box::new(HyperClient::builder(TokioExecutor::new()).build(connector)),
                headers: headers.clone(),
            },
        }
    }

    /// The connections to send on: for TLS, (re)made when the certificates changed, so that a
    /// rotated certificate takes effect at the next export even if the collector keeps the old
    /// connection open.
    fn transport(&mut self) -> Result<Transport, SendError> {
        let retryable = |reason: String| SendError::Retryable {
            reason,
            retry_after: None,
        };
        if let Some((tls, name)) = &mut self.tls
            && let Some(config) = tls.refresh().map_err(|e| retryable(e.to_string()))?
        {
            let name = name.clone();
            self.transport = Some(self.connect(Some((config, name))));
        }
        self.transport
            .clone()
            .ok_or_else(|| retryable("the TLS certificates are not loaded".into()))
    }

    /// `e`'s causes, and what to do about a TLS failure.
    fn reason(&self, e: &(dyn Error + 'static)) -> String {
        let mut reason = error_chain(e);
        if let Some((tls, _)) = &self.tls
            && let Some(hint) = tls::rustls_error(e).and_then(|r| tls::hint(r, &tls.ca()))
        {
            reason = format!("{reason}; {hint}");
        }
        reason
    }

    /// Sends one request, waiting at most the configured timeout.
    pub async fn send<R: Export>(
        &mut self,
        request: R,
    ) -> Result<Option<PartialSuccess>, SendError> {
        let transport = self.transport()?;
        let timeout = self.timeout;
        match transport {
            Transport::Grpc { channel, metadata } => {
                let mut req = tonic::Request::new(request);
                *req.metadata_mut() = metadata;
                // Tells the collector our deadline too (grpc-timeout), so it can give up early.
                req.set_timeout(timeout);
                let compression = match self.compression {
                    Compression::None => None,
                    Compression::Gzip => Some(CompressionEncoding::Gzip),
                };
                let response = tokio::time::timeout(timeout, R::grpc(channel, req, compression))
                    .await
                    .map_err(|_| timed_out(timeout))?
                    .map_err(|status| grpc_error(&status, |e| self.reason(e)))?;
                Ok(R::partial(response.into_inner()))
            }
            Transport::Http { client, headers } => {
                let body = request.encode_to_vec();
                let (body, encoding) = match self.compression {
                    Compression::None => (body, None),
                    Compression::Gzip => (gzip(&body)?, Some("gzip")),
                };
                let mut req = Request::builder()
                    .method(Method::POST)
                    .uri(self.uri.clone())
                    .header(CONTENT_TYPE, "application/x-protobuf")
                    .header(USER_AGENT, USER_AGENT_VALUE);
                if let Some(encoding) = encoding {
                    req = req.header(CONTENT_ENCODING, encoding);
                }
                let mut req =
                    req.body(Full::new(Bytes::from(body)))
                        .map_err(|e| SendError::Rejected {
                            reason: e.to_string(),
                        })?;
                req.headers_mut().extend(headers);
                let exchange = async {
                    let response = client.request(req).await.map_err(|e| {
                        // Connection refused or reset, a failed TLS handshake, or the server
                        // went away mid-request.
                        SendError::Retryable {
                            reason: self.reason(&e),
                            retry_after: None,
                        }
                    })?;
                    let (parts, body) = response.into_parts();
                    let body = Limited::new(body, MAX_RESPONSE_BYTES)
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    Ok((parts.status, parts.headers, body))
                };
                let (status, headers, body) = tokio::time::timeout(timeout, exchange)
                    .await
                    .map_err(|_| timed_out(timeout))??;
                http_outcome::<R>(status, &headers, &body)
            }
        }
    }
}

/// The body gzip-compressed (`Content-Encoding: gzip`).
fn gzip(body: &[u8]) -> Result<Vec<u8>, SendError> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(body)
        .and_then(|()| encoder.finish())
        .map_err(|e| SendError::Rejected {
            reason: format!("gzip: {e}"),
        })
}

fn timed_out(timeout: Duration) -> SendError {
    SendError::Retryable {
        reason: format!("no answer within the timeout ({timeout:?})"),
        retry_after: None,
    }
}

/// An empty partial success (nothing rejected, no message) means full success.
fn partial(rejected: i64, message: String) -> Option<PartialSuccess> {
    (rejected != 0 || !message.is_empty()).then_some(PartialSuccess { rejected, message })
}

/// OTLP/gRPC: the codes the specification lists as retryable, plus any failure that happened
/// before the collector answered (tonic attaches the transport error as the status's source;
/// a status sent by the collector has none). `reason` describes that source.
fn grpc_error(
    status: &tonic::Status,
    reason: impl Fn(&(dyn Error + 'static)) -> String,
) -> SendError {
    let retryable = matches!(
        status.code(),
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    ) || status.source().is_some();
    let reason = match status.source() {
        // tonic's message is the source's own text: said once.
        Some(source) => {
            let causes = reason(source);
            if causes.contains(status.message()) {
                format!("gRPC {:?}: {causes}", status.code())
            } else {
                format!("gRPC {:?}: {} ({causes})", status.code(), status.message())
            }
        }
        None => format!("gRPC {:?}: {}", status.code(), status.message()),
    };
    if retryable {
        SendError::Retryable {
            reason,
            retry_after: None,
        }
    } else {
        SendError::Rejected { reason }
    }
}

/// OTLP/HTTP: 2xx is success; 429, 502, 503 and 504 are retried (after Retry-After if the
/// collector sent one); anything else is final.
fn http_outcome<R: Export>(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<PartialSuccess>, SendError> {
    if status.is_success() {
        // An empty body is a full success; an undecodable one is not worth failing a batch
        // the collector said it accepted.
        return Ok(R::Response::decode(body).ok().and_then(R::partial));
    }
    let reason = format!("HTTP {status}{}", body_excerpt(body));
    match status.as_u16() {
        429 | 502 | 503 | 504 => Err(SendError::Retryable {
            reason,
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(retry_after),
        }),
        _ => Err(SendError::Rejected { reason }),
    }
}

/// Retry-After in delay-seconds. The HTTP-date form is not parsed (no date library here); the
/// exponential backoff applies instead.
fn retry_after(value: &str) -> Option<Duration> {
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// The start of an error body, when it is text: collectors usually say why they refused.
fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let text = text.trim();
    if text.is_empty() || text.contains('\u{fffd}') {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// `e` and its sources, each said once: wrappers often repeat their source's text.
fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        next = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::{
        logs::v1::ExportLogsPartialSuccess, metrics::v1::ExportMetricsPartialSuccess,
    };

    use super::*;

    type Metrics = ExportMetricsServiceRequest;

    fn retry_after_of(r: Result<Option<PartialSuccess>, SendError>) -> Option<Option<Duration>> {
        match r {
            Err(SendError::Retryable { retry_after, .. }) => Some(retry_after),
            _ => None,
        }
    }

    #[test]
    fn http_status_classes() {
        let none = HeaderMap::new();
        assert!(matches!(
            http_outcome::<Metrics>(StatusCode::OK, &none, b""),
            Ok(None)
        ));
        for s in [429, 502, 503, 504] {
            let s = StatusCode::from_u16(s).unwrap();
            assert_eq!(
                retry_after_of(http_outcome::<Metrics>(s, &none, b"")),
                Some(None)
            );
        }
        for s in [400, 401, 404, 413, 500] {
            let s = StatusCode::from_u16(s).unwrap();
            let r = http_outcome::<Metrics>(s, &none, b"bad data\n");
            assert!(
                matches!(&r, Err(SendError::Rejected { reason }) if reason.ends_with(": bad data")),
                "{s}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let r = http_outcome::<Metrics>(StatusCode::SERVICE_UNAVAILABLE, &h, b"");
        assert_eq!(retry_after_of(r), Some(Some(Duration::from_secs(7))));
        h.insert(RETRY_AFTER, HeaderValue::from_static("86400"));
        let r = http_outcome::<Metrics>(StatusCode::TOO_MANY_REQUESTS, &h, b"");
        assert_eq!(retry_after_of(r), Some(Some(MAX_RETRY_AFTER)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        let r = http_outcome::<Metrics>(StatusCode::TOO_MANY_REQUESTS, &h, b"");
        assert_eq!(retry_after_of(r), Some(None));
    }

    #[test]
    fn partial_success_is_reported() {
        let body = ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: 3,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        let p = http_outcome::<Metrics>(StatusCode::OK, &HeaderMap::new(), &body)
            .ok()
            .flatten()
            .expect("partial success");
        assert_eq!((p.rejected, p.message.as_str()), (3, "too old"));
        // An empty partial_success message means full success.
        let body = ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess::default()),
        }
        .encode_to_vec();
        assert!(matches!(
            http_outcome::<Metrics>(StatusCode::OK, &HeaderMap::new(), &body),
            Ok(None)
        ));
        // The logs service counts rejected log records in a field of its own.
        let body = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 2,
                error_message: "body too large".into(),
            }),
        }
        .encode_to_vec();
        let p = http_outcome::<ExportLogsServiceRequest>(StatusCode::OK, &HeaderMap::new(), &body)
            .ok()
            .flatten()
            .expect("partial success");
        assert_eq!((p.rejected, p.message.as_str()), (2, "body too large"));
    }

    #[test]
    fn grpc_codes() {
        for code in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
        ] {
            assert!(matches!(
                grpc_error(&tonic::Status::new(code, "x"), error_chain),
                SendError::Retryable { .. }
            ));
        }
        for code in [Code::InvalidArgument, Code::Unauthenticated, Code::Unknown] {
            assert!(matches!(
                grpc_error(&tonic::Status::new(code, "x"), error_chain),
                SendError::Rejected { .. }
            ));
        }
        // A local failure (no answer from the collector) is retried whatever its code.
        let local = tonic::Status::from_error(Box::new(std::io::Error::other("reset")));
        assert_eq!(local.code(), Code::Unknown);
        assert!(matches!(
            grpc_error(&local, error_chain),
            SendError::Retryable { .. }
        ));
    }
}
