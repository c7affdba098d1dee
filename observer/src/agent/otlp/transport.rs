//! Sending one export request over gRPC (tonic) or HTTP/protobuf (hyper), and sorting failures
//! into the ones worth retrying and the ones that are final, as the OTLP specification says.
//! One client sends one kind of request ([`Export`]: metrics or logs) to one endpoint.

use std::{error::Error as _, future::Future, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    HeaderMap, Method, Request, StatusCode, Uri,
    header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT},
};
use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::TokioExecutor,
};
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
use tonic::{
    Code,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Channel, Endpoint},
};

use super::{OtlpError, Protocol, Settings};

const USER_AGENT_VALUE: &str = concat!("observer/", env!("CARGO_PKG_VERSION"));
/// A collector's answer is a small protobuf or an error text; anything larger is not read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// A Retry-After longer than this is treated as this: a misconfigured proxy must not stall the
/// export for hours while the queue drops everything.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Why one send did not get through.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The collector could not be reached, timed out, or asked to retry later.
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
    /// Calls the service's Export method over `channel`.
    fn grpc(
        channel: Channel,
        request: tonic::Request<Self>,
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
    ) -> Result<tonic::Response<Self::Response>, tonic::Status> {
        MetricsServiceClient::new(channel).export(request).await
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
    ) -> Result<tonic::Response<Self::Response>, tonic::Status> {
        LogsServiceClient::new(channel).export(request).await
    }

    fn partial(response: Self::Response) -> Option<PartialSuccess> {
        let p = response.partial_success?;
        partial(p.rejected_log_records, p.error_message)
    }
}

pub enum Client {
    Grpc {
        // A generated service client per request is only a handle on this shared channel.
        channel: Channel,
        metadata: MetadataMap,
        timeout: Duration,
    },
    Http {
        // Boxed: the pooled client is several times the size of the gRPC variant.
        client: Box<HyperClient<HttpConnector, Full<Bytes>>>,
        uri: Uri,
        headers: HeaderMap,
        timeout: Duration,
    },
}

impl Client {
    /// Checks the settings and builds the client for `endpoint` (the metrics or the logs one);
    /// nothing is connected yet, so a collector that is down at start is not an error (the
    /// first sends are retried).
    pub fn new(settings: &Settings, endpoint: &str) -> Result<Self, OtlpError> {
        let invalid = |reason: String| OtlpError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let uri: Uri = endpoint.parse().map_err(|e| invalid(format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(OtlpError::TlsNotSupported {
                    endpoint: endpoint.to_owned(),
                });
            }
            _ => return Err(invalid("the scheme must be http://".into())),
        }
        if uri.authority().is_none() {
            return Err(invalid("it names no host".into()));
        }
        let header_error = |name: &str, reason: String| OtlpError::InvalidHeader {
            endpoint: endpoint.to_owned(),
            name: name.to_owned(),
            reason,
        };
        match settings.protocol {
            Protocol::Grpc => {
                let mut metadata = MetadataMap::new();
                for (name, value) in &settings.headers {
                    // gRPC metadata keys are lower case (HTTP/2 header names).
                    let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map_err(|e| header_error(name, e.to_string()))?;
                    let value = MetadataValue::try_from(value.as_str())
                        .map_err(|e| header_error(name, e.to_string()))?;
                    metadata.append(key, value);
                }
                let channel = Endpoint::from_shared(endpoint.to_owned())
                    .map_err(|e| invalid(e.to_string()))?
                    .user_agent(USER_AGENT_VALUE)
                    .map_err(|e| invalid(e.to_string()))?
                    .connect_timeout(settings.timeout)
                    .connect_lazy();
                Ok(Self::Grpc {
                    channel,
                    metadata,
                    timeout: settings.timeout,
                })
            }
            Protocol::HttpProtobuf => {
                let mut headers = HeaderMap::new();
                for (name, value) in &settings.headers {
                    let key = HeaderName::try_from(name.as_str())
                        .map_err(|e| header_error(name, e.to_string()))?;
                    let value = HeaderValue::try_from(value.as_str())
                        .map_err(|e| header_error(name, e.to_string()))?;
                    headers.append(key, value);
                }
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(settings.timeout));
                connector.set_nodelay(true);
                Ok(Self::Http {
                    client: Box::new(HyperClient::builder(TokioExecutor::new()).build(connector)),
                    uri,
                    headers,
                    timeout: settings.timeout,
                })
            }
        }
    }

    /// Sends one request, waiting at most the configured timeout.
    pub async fn send<R: Export>(
        &mut self,
        request: R,
    ) -> Result<Option<PartialSuccess>, SendError> {
        match self {
            Self::Grpc {
                channel,
                metadata,
                timeout,
            } => {
                let mut req = tonic::Request::new(request);
                *req.metadata_mut() = metadata.clone();
                // Tells the collector our deadline too (grpc-timeout), so it can give up early.
                req.set_timeout(*timeout);
                let response = tokio::time::timeout(*timeout, R::grpc(channel.clone(), req))
                    .await
                    .map_err(|_| timed_out(*timeout))?
                    .map_err(grpc_error)?;
                Ok(R::partial(response.into_inner()))
            }
            Self::Http {
                client,
                uri,
                headers,
                timeout,
            } => {
                let mut req = Request::builder()
                    .method(Method::POST)
                    .uri(uri.clone())
                    .header(CONTENT_TYPE, "application/x-protobuf")
                    .header(USER_AGENT, USER_AGENT_VALUE)
                    .body(Full::new(Bytes::from(request.encode_to_vec())))
                    .map_err(|e| SendError::Rejected {
                        reason: e.to_string(),
                    })?;
                req.headers_mut().extend(headers.clone());
                let exchange = async {
                    let response = client.request(req).await.map_err(|e| {
                        // Connection refused or reset, or the server went away mid-request.
                        SendError::Retryable {
                            reason: error_chain(&e),
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
                let (status, headers, body) = tokio::time::timeout(*timeout, exchange)
                    .await
                    .map_err(|_| timed_out(*timeout))??;
                http_outcome::<R>(status, &headers, &body)
            }
        }
    }
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
/// a status sent by the collector has none).
fn grpc_error(status: tonic::Status) -> SendError {
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
        Some(source) => format!(
            "gRPC {:?}: {} ({})",
            status.code(),
            status.message(),
            error_chain(source)
        ),
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

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out = format!("{out}: {s}");
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
                grpc_error(tonic::Status::new(code, "x")),
                SendError::Retryable { .. }
            ));
        }
        for code in [Code::InvalidArgument, Code::Unauthenticated, Code::Unknown] {
            assert!(matches!(
                grpc_error(tonic::Status::new(code, "x")),
                SendError::Rejected { .. }
            ));
        }
        // A local failure (no answer from the collector) is retried whatever its code.
        let local = tonic::Status::from_error(Box::new(std::io::Error::other("reset")));
        assert_eq!(local.code(), Code::Unknown);
        assert!(matches!(grpc_error(local), SendError::Retryable { .. }));
    }
}
