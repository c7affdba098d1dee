//! Log records -> OTLP logs request, with no I/O. The agent's log records are the audit records
//! of its tuning decisions: each one is exported with the same resource and scope as the
//! metrics, so a collector can join the two.

use std::time::SystemTime;

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{AnyValue, any_value},
    logs::v1::{self as pb, ResourceLogs, ScopeLogs, SeverityNumber},
};

use super::encode::{key_value, pb_resource, scope, unix_nanos};
use crate::agent::{Resource, metrics::Value};

/// One event to export as an OTLP log record.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    /// When the event happened (OTLP `time_unix_nano`; also its observed time, since the agent
    /// both produces and exports it).
    pub time: SystemTime,
    /// How much the event matters (OTLP `severity_number` and `severity_text`).
    pub severity: Severity,
    /// What kind of event this is (OTLP `event_name`), e.g. `observer.rule.decision`: every
    /// record of one name has the same attributes.
    pub event_name: &'static str,
    /// A human-readable description of the event.
    pub body: String,
    /// The event's details as key-value pairs (OTLP log record attributes), in this order.
    pub attributes: Vec<(String, Value)>,
}

/// The severity of a [`LogRecord`]: the first number of each OpenTelemetry severity range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warn,
    Error,
}

impl Severity {
    /// OTLP `SeverityNumber`: INFO = 9, WARN = 13, ERROR = 17.
    pub const fn number(self) -> SeverityNumber {
        match self {
            Self::Info => SeverityNumber::Info,
            Self::Warn => SeverityNumber::Warn,
            Self::Error => SeverityNumber::Error,
        }
    }

    /// OTLP `severity_text`, the short name of the range.
    pub const fn text(self) -> &'static str {
        match self {
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
        }
    }
}

/// Builds the export request for `records`, in order, under the agent's resource and scope.
pub fn encode_logs(records: &[LogRecord], resource: &Resource) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(pb_resource(resource)),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records: records.iter().map(record).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn record(r: &LogRecord) -> pb::LogRecord {
    let time = unix_nanos(r.time);
    pb::LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: time,
        severity_number: r.severity.number().into(),
        severity_text: r.severity.text().to_owned(),
        event_name: r.event_name.to_owned(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(r.body.clone())),
        }),
        attributes: r.attributes.iter().map(|(k, v)| key_value(k, v)).collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn str_value(v: &Option<AnyValue>) -> Option<&str> {
        match v.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn severities_are_the_start_of_their_otlp_ranges() {
        assert_eq!(
            [Severity::Info, Severity::Warn, Severity::Error]
                .map(|s| (s.number() as i32, s.text())),
            [(9, "INFO"), (13, "WARN"), (17, "ERROR")]
        );
    }

    #[test]
    fn records_carry_every_field_under_the_agent_resource_and_scope() {
        let resource = Resource {
            attributes: vec![("service.name".into(), "observer".into())],
        };
        let time = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let records = [
            LogRecord {
                time,
                severity: Severity::Warn,
                event_name: "observer.rule.decision",
                body: "rule r1: p99 above 5 ms".into(),
                attributes: vec![
                    ("rule".into(), "r1".into()),
                    ("observed".into(), Value::Int(7)),
                ],
            },
            LogRecord {
                time: UNIX_EPOCH,
                severity: Severity::Error,
                event_name: "observer.rule.error",
                body: String::new(),
                attributes: Vec::new(),
            },
        ];
        let r = encode_logs(&records, &resource);
        assert_eq!(r.resource_logs.len(), 1);
        let rl = &r.resource_logs[0];
        assert_eq!(rl.resource, Some(pb_resource(&resource)));
        assert_eq!(rl.scope_logs.len(), 1);
        let sl = &rl.scope_logs[0];
        let s = sl.scope.as_ref().unwrap();
        assert_eq!(
            (s.name.as_str(), s.version.as_str()),
            ("observer", env!("CARGO_PKG_VERSION"))
        );
        let [first, second] = &sl.log_records[..] else {
            panic!("{:?}", sl.log_records)
        };
        assert_eq!(
            (first.time_unix_nano, first.observed_time_unix_nano),
            (1_700_000_000_123_456_789, 1_700_000_000_123_456_789)
        );
        assert_eq!(
            (first.severity_number, first.severity_text.as_str()),
            (13, "WARN")
        );
        assert_eq!(first.event_name, "observer.rule.decision");
        assert_eq!(str_value(&first.body), Some("rule r1: p99 above 5 ms"));
        assert_eq!(
            first.attributes,
            [
                key_value("rule", &"r1".into()),
                key_value("observed", &Value::Int(7))
            ]
        );
        assert_eq!((second.severity_number, second.time_unix_nano), (17, 0));
        assert_eq!(str_value(&second.body), Some(""));
        assert!(second.attributes.is_empty());
        assert!(second.trace_id.is_empty() && second.span_id.is_empty());
    }
}
