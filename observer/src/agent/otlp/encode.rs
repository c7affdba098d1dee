//! Snapshot -> OTLP request, with no I/O: every number the collector receives is decided here.

use std::{
    collections::HashMap,
    time::{SystemTime, UNIX_EPOCH},
};

use observer_common::{Hist, hist::SCALE, hist::slot_index};
use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        self as pb, AggregationTemporality, ExponentialHistogramDataPoint, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, exponential_histogram_data_point::Buckets, metric,
        number_data_point,
    },
    resource::v1::Resource as PbResource,
};

use super::Temporality;
use crate::agent::{
    Resource,
    metrics::{Attributes, Data, HistogramPoint, Metric, Snapshot, SumPoint, Value},
};

/// The instrumentation scope of everything the agent exports.
const SCOPE_NAME: &str = "observer";

/// Builds the export request for `snapshot`.
///
/// With [`Temporality::Delta`], `previous` is the last snapshot the collector accepted: each
/// series sends what it gained since then, starting at `previous.time`. A series absent from
/// `previous`, or one that started over (its start time changed, or a count went down), sends its
/// whole value from its own start, so nothing is subtracted that belongs to another lifetime.
/// `previous` is ignored for [`Temporality::Cumulative`].
pub fn encode(
    snapshot: &Snapshot,
    resource: &Resource,
    temporality: Temporality,
    previous: Option<&Snapshot>,
) -> ExportMetricsServiceRequest {
    let baseline = match temporality {
        Temporality::Cumulative => None,
        Temporality::Delta => previous.map(Baseline::new),
    };
    let ctx = Context {
        time: unix_nanos(snapshot.time),
        temporality,
        baseline: baseline.as_ref(),
    };
    let metrics = snapshot.metrics.iter().map(|m| ctx.metric(m)).collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(pb_resource(resource)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The agent's resource, the same in every export (metrics and logs).
pub(super) fn pb_resource(resource: &Resource) -> PbResource {
    PbResource {
        attributes: resource
            .attributes
            .iter()
            .map(|(k, v)| key_value(k, v))
            .collect(),
        ..Default::default()
    }
}

/// The instrumentation scope of everything the agent exports: `observer` and its version.
pub(super) fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

/// The previous snapshot, indexed by metric name and series attributes.
struct Baseline<'a> {
    time: u64,
    histograms: HashMap<(&'a str, &'a Attributes), &'a HistogramPoint>,
    sums: HashMap<(&'a str, &'a Attributes), &'a SumPoint>,
}

impl<'a> Baseline<'a> {
    fn new(previous: &'a Snapshot) -> Self {
        let mut histograms = HashMap::new();
        let mut sums = HashMap::new();
        for m in &previous.metrics {
            match &m.data {
                Data::Histogram(points) => {
                    histograms.extend(points.iter().map(|p| ((m.name, &p.attributes), p)));
                }
                Data::Sum(points) => {
                    sums.extend(points.iter().map(|p| ((m.name, &p.attributes), p)))
                }
                Data::Gauge(_) => {}
            }
        }
        Self {
            time: unix_nanos(previous.time),
            histograms,
            sums,
        }
    }
}

struct Context<'a> {
    time: u64,
    temporality: Temporality,
    baseline: Option<&'a Baseline<'a>>,
}

impl Context<'_> {
    fn metric(&self, m: &Metric) -> pb::Metric {
        let data = match &m.data {
            Data::Histogram(points) => {
                metric::Data::ExponentialHistogram(pb::ExponentialHistogram {
                    data_points: points.iter().map(|p| self.histogram(m.name, p)).collect(),
                    aggregation_temporality: self.aggregation_temporality(),
                })
            }
            Data::Sum(points) => metric::Data::Sum(pb::Sum {
                data_points: points.iter().map(|p| self.sum(m.name, p)).collect(),
                aggregation_temporality: self.aggregation_temporality(),
                is_monotonic: true,
            }),
            Data::Gauge(points) => metric::Data::Gauge(pb::Gauge {
                data_points: points
                    .iter()
                    .map(|p| NumberDataPoint {
                        attributes: attributes(&p.attributes),
                        time_unix_nano: self.time,
                        value: Some(number_data_point::Value::AsDouble(p.value)),
                        ..Default::default()
                    })
                    .collect(),
            }),
        };
        pb::Metric {
            name: m.name.to_owned(),
            description: m.description.to_owned(),
            unit: m.unit.to_owned(),
            data: Some(data),
            ..Default::default()
        }
    }

    fn aggregation_temporality(&self) -> i32 {
        match self.temporality {
            Temporality::Cumulative => AggregationTemporality::Cumulative,
            Temporality::Delta => AggregationTemporality::Delta,
        }
        .into()
    }

    fn histogram(&self, name: &str, p: &HistogramPoint) -> ExponentialHistogramDataPoint {
        let previous = self.baseline.and_then(|b| {
            let prev = b.histograms.get(&(name, &p.attributes))?;
            let delta = (prev.start == p.start)
                .then(|| hist_sub(&p.hist, &prev.hist))
                .flatten()?;
            Some((b.time, delta))
        });
        let (start, hist) = match &previous {
            Some((since, delta)) => (*since, delta),
            None => (unix_nanos(p.start), &*p.hist),
        };
        histogram_point(attributes(&p.attributes), start, self.time, hist)
    }

    fn sum(&self, name: &str, p: &SumPoint) -> NumberDataPoint {
        let (start, value) = self
            .baseline
            .and_then(|b| {
                let prev = b.sums.get(&(name, &p.attributes))?;
                let delta = (prev.start == p.start)
                    .then(|| p.value.checked_sub(prev.value))
                    .flatten()?;
                Some((b.time, delta))
            })
            .unwrap_or((unix_nanos(p.start), p.value));
        NumberDataPoint {
            attributes: attributes(&p.attributes),
            start_time_unix_nano: start,
            time_unix_nano: self.time,
            // OTLP has no unsigned number; a counter beyond 2^63 is far beyond anything the
            // kernel can count in the agent's lifetime, so saturating loses nothing real.
            value: Some(number_data_point::Value::AsInt(
                i64::try_from(value).unwrap_or(i64::MAX),
            )),
            ..Default::default()
        }
    }
}

/// One exponential histogram point with exactly the kernel's buckets: slot `s` is OTLP index
/// `s - 1` at scale 2, so only the empty slots at either end are cut off.
fn histogram_point(
    attributes: Vec<KeyValue>,
    start: u64,
    time: u64,
    h: &Hist,
) -> ExponentialHistogramDataPoint {
    let positive = match (
        h.buckets.iter().position(|&c| c != 0),
        h.buckets.iter().rposition(|&c| c != 0),
    ) {
        (Some(first), Some(last)) => Buckets {
            offset: slot_index(first),
            bucket_counts: h.buckets[first..=last].to_vec(),
        },
        // No positive value: an empty bucket list is what SDKs send, and every receiver
        // accepts it (an absent field is rejected by some).
        _ => Buckets::default(),
    };
    ExponentialHistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        count: crate::hist::count(h),
        sum: Some(h.sum as f64),
        scale: SCALE,
        zero_count: h.zero,
        zero_threshold: 0.0,
        positive: Some(positive),
        // The kernel only records the bucket, so min and max are unknown and left out rather
        // than guessed from bucket bounds.
        min: None,
        max: None,
        ..Default::default()
    }
}

/// `current - previous` element-wise, or `None` if any count went down (the series started
/// over).
fn hist_sub(current: &Hist, previous: &Hist) -> Option<Hist> {
    let mut out = Hist::ZERO;
    out.zero = current.zero.checked_sub(previous.zero)?;
    out.sum = current.sum.checked_sub(previous.sum)?;
    for ((o, c), p) in out
        .buckets
        .iter_mut()
        .zip(&current.buckets)
        .zip(&previous.buckets)
    {
        *o = c.checked_sub(*p)?;
    }
    Some(out)
}

fn attributes(a: &Attributes) -> Vec<KeyValue> {
    a.iter().map(|(k, v)| key_value(k, v)).collect()
}

pub(super) fn key_value(key: &str, value: &Value) -> KeyValue {
    let value = match value {
        Value::Str(s) => any_value::Value::StringValue(s.clone()),
        Value::Int(i) => any_value::Value::IntValue(*i),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Nanoseconds since the Unix epoch; a clock set before 1970 reads as 0 rather than failing an
/// export.
pub(super) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use observer_common::hist::{BUCKETS, slot};

    use super::*;
    use crate::agent::metrics::GaugePoint;

    fn hist(values: &[u64]) -> Hist {
        let mut h = Hist::ZERO;
        for &v in values {
            if v == 0 {
                h.zero += 1;
            } else {
                h.buckets[slot(v)] += 1;
            }
            h.sum = h.sum.wrapping_add(v);
        }
        h
    }

    fn point(h: &Hist) -> ExponentialHistogramDataPoint {
        histogram_point(Vec::new(), 1, 2, h)
    }

    fn positive(p: &ExponentialHistogramDataPoint) -> (i32, Vec<u64>) {
        let b = p
            .positive
            .clone()
            .expect("positive buckets are always present");
        (b.offset, b.bucket_counts)
    }

    #[test]
    fn empty_histogram_has_no_buckets() {
        let p = point(&Hist::ZERO);
        assert_eq!((p.count, p.zero_count, p.sum), (0, 0, Some(0.0)));
        assert_eq!(positive(&p), (0, vec![]));
        assert_eq!((p.scale, p.zero_threshold), (2, 0.0));
        assert_eq!((p.min, p.max, p.negative.clone()), (None, None, None));
    }

    #[test]
    fn only_zeros_go_to_zero_count() {
        let p = point(&hist(&[0, 0, 0]));
        assert_eq!((p.count, p.zero_count), (3, 3));
        assert_eq!(positive(&p), (0, vec![]));
    }

    #[test]
    fn one_nanosecond_is_index_minus_one() {
        let p = point(&hist(&[1, 1]));
        assert_eq!(positive(&p), (-1, vec![2]));
        assert_eq!((p.count, p.sum), (2, Some(2.0)));
    }

    #[test]
    fn u64_max_is_index_255() {
        let p = point(&hist(&[u64::MAX]));
        assert_eq!(positive(&p), (255, vec![1]));
        assert_eq!(slot_index(BUCKETS - 1), 255);
        let both = point(&hist(&[1, u64::MAX]));
        let (offset, counts) = positive(&both);
        assert_eq!((offset, counts.len()), (-1, BUCKETS));
        assert_eq!((counts[0], counts[BUCKETS - 1]), (1, 1));
        assert_eq!(counts[1..BUCKETS - 1].iter().sum::<u64>(), 0);
    }

    #[test]
    fn range_runs_from_first_to_last_non_empty_bucket() {
        // 1024 = 2^10 is the upper edge of index 39; 1025 is the first value of index 40;
        // 2048 = 2^11 closes index 43.
        let p = point(&hist(&[0, 1024, 1025, 1025, 2048]));
        assert_eq!(positive(&p), (39, vec![1, 2, 0, 0, 1]));
        assert_eq!((p.count, p.zero_count), (5, 1));
        assert_eq!(p.sum, Some(f64::from(1024 + 1025 + 1025 + 2048)));
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn snapshot(time: u64, h: &Hist, sum: u64, start: u64) -> Snapshot {
        Snapshot {
            time: at(time),
            metrics: vec![
                Metric {
                    name: "h",
                    description: "a histogram",
                    unit: "ns",
                    data: Data::Histogram(vec![HistogramPoint {
                        attributes: vec![("k", "a".into()), ("n", 7.into())],
                        start: at(start),
                        hist: Box::new(*h),
                    }]),
                },
                Metric {
                    name: "s",
                    description: "a sum",
                    unit: "{thing}",
                    data: Data::Sum(vec![SumPoint {
                        attributes: Vec::new(),
                        start: at(start),
                        value: sum,
                    }]),
                },
                Metric {
                    name: "g",
                    description: "a gauge",
                    unit: "1",
                    data: Data::Gauge(vec![GaugePoint {
                        attributes: Vec::new(),
                        value: 0.5,
                    }]),
                },
            ],
        }
    }

    fn metrics(r: &ExportMetricsServiceRequest) -> &[pb::Metric] {
        &r.resource_metrics[0].scope_metrics[0].metrics
    }

    fn hist_of(r: &ExportMetricsServiceRequest) -> &ExponentialHistogramDataPoint {
        match &metrics(r)[0].data {
            Some(metric::Data::ExponentialHistogram(h)) => &h.data_points[0],
            other => panic!("not an exponential histogram: {other:?}"),
        }
    }

    fn sum_of(r: &ExportMetricsServiceRequest) -> (&pb::Sum, &NumberDataPoint) {
        match &metrics(r)[1].data {
            Some(metric::Data::Sum(s)) => (s, &s.data_points[0]),
            other => panic!("not a sum: {other:?}"),
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn cumulative_request_carries_everything() {
        let resource = Resource {
            attributes: vec![("service.name".into(), "observer".into())],
        };
        let r = encode(
            &snapshot(20, &hist(&[0, 1]), 5, 10),
            &resource,
            Temporality::Cumulative,
            None,
        );
        let rm = &r.resource_metrics[0];
        assert_eq!(
            rm.resource.as_ref().unwrap().attributes,
            [key_value("service.name", &"observer".into())]
        );
        let scope = rm.scope_metrics[0].scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("observer", env!("CARGO_PKG_VERSION"))
        );
        let m = metrics(&r);
        assert_eq!(
            m.iter()
                .map(|m| (m.name.as_str(), m.unit.as_str(), m.description.as_str()))
                .collect::<Vec<_>>(),
            [
                ("h", "ns", "a histogram"),
                ("s", "{thing}", "a sum"),
                ("g", "1", "a gauge")
            ]
        );
        let Some(metric::Data::ExponentialHistogram(h)) = &m[0].data else {
            panic!()
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let p = &h.data_points[0];
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (10 * S, 20 * S));
        assert_eq!(
            p.attributes,
            [key_value("k", &"a".into()), key_value("n", &7.into())]
        );
        assert_eq!(
            p.attributes[1].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(7))
        );
        let (s, sp) = sum_of(&r);
        assert!(s.is_monotonic);
        assert_eq!(
            s.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(sp.value, Some(number_data_point::Value::AsInt(5)));
        assert_eq!(
            (sp.start_time_unix_nano, sp.time_unix_nano),
            (10 * S, 20 * S)
        );
        let Some(metric::Data::Gauge(g)) = &m[2].data else {
            panic!()
        };
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsDouble(0.5))
        );
        assert_eq!(g.data_points[0].time_unix_nano, 20 * S);
    }

    #[test]
    fn cumulative_ignores_previous() {
        let prev = snapshot(20, &hist(&[1]), 1, 10);
        let r = encode(
            &snapshot(30, &hist(&[1, 1]), 3, 10),
            &Resource::default(),
            Temporality::Cumulative,
            Some(&prev),
        );
        assert_eq!(positive(hist_of(&r)), (-1, vec![2]));
        assert_eq!(sum_of(&r).1.value, Some(number_data_point::Value::AsInt(3)));
    }

    #[test]
    fn delta_sends_differences_since_the_previous_snapshot() {
        let r0 = Resource::default();
        // First export: no previous snapshot, the whole value from the series' own start.
        let first = snapshot(20, &hist(&[0, 1, 4]), 5, 10);
        let r = encode(&first, &r0, Temporality::Delta, None);
        let p = hist_of(&r);
        assert_eq!(
            (p.start_time_unix_nano, p.time_unix_nano, p.count),
            (10 * S, 20 * S, 3)
        );
        let Some(metric::Data::ExponentialHistogram(h)) = &metrics(&r)[0].data else {
            panic!()
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Delta as i32
        );
        // Second: only what was added, from the previous snapshot's time.
        let second = snapshot(30, &hist(&[0, 1, 4, 0, 4, 4, 1024]), 12, 10);
        let r = encode(&second, &r0, Temporality::Delta, Some(&first));
        let p = hist_of(&r);
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (20 * S, 30 * S));
        assert_eq!((p.count, p.zero_count, p.sum), (4, 1, Some(1032.0)));
        // 4 = 2^2 is index 7, 1024 = 2^10 index 39.
        let (offset, counts) = positive(p);
        assert_eq!((offset, counts.len()), (7, 33));
        assert_eq!((counts[0], counts[32]), (2, 1));
        let (s, sp) = sum_of(&r);
        assert_eq!(
            s.aggregation_temporality,
            AggregationTemporality::Delta as i32
        );
        assert_eq!(sp.value, Some(number_data_point::Value::AsInt(7)));
        assert_eq!(sp.start_time_unix_nano, 20 * S);
    }

    #[test]
    fn delta_treats_a_restarted_series_as_new() {
        let r0 = Resource::default();
        let prev = snapshot(20, &hist(&[1, 1, 1]), 9, 10);
        // Same start but fewer counts: the series started over.
        let r = encode(
            &snapshot(30, &hist(&[1]), 2, 10),
            &r0,
            Temporality::Delta,
            Some(&prev),
        );
        assert_eq!(positive(hist_of(&r)), (-1, vec![1]));
        assert_eq!(hist_of(&r).start_time_unix_nano, 10 * S);
        assert_eq!(sum_of(&r).1.value, Some(number_data_point::Value::AsInt(2)));
        // A new start (the series left its breakdown and came back): its own value and start,
        // even though the counts are higher.
        let r = encode(
            &snapshot(30, &hist(&[1, 1, 1, 1]), 10, 25),
            &r0,
            Temporality::Delta,
            Some(&prev),
        );
        assert_eq!(positive(hist_of(&r)), (-1, vec![4]));
        assert_eq!(hist_of(&r).start_time_unix_nano, 25 * S);
        assert_eq!(sum_of(&r).1.start_time_unix_nano, 25 * S);
    }

    #[test]
    fn huge_counters_saturate() {
        let r = encode(
            &snapshot(20, &Hist::ZERO, u64::MAX, 10),
            &Resource::default(),
            Temporality::Cumulative,
            None,
        );
        assert_eq!(
            sum_of(&r).1.value,
            Some(number_data_point::Value::AsInt(i64::MAX))
        );
    }
}
