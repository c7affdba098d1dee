//! The resource attributes that describe this agent in every export.

use super::{Resource, metrics::Value};

/// Detects host.name, os.type, os.version (the kernel release), service.name,
/// service.version and service.instance.id, then adds `extra` (OTEL_RESOURCE_ATTRIBUTES and the
/// config file's resource_attributes), which win over what was detected.
pub fn detect(service_name: &str, extra: &[(String, String)]) -> Resource {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_default();
    // Stable across restarts of the agent on one machine, unlike a random id; the OTel
    // conventions allow any id unique per service instance.
    let instance = std::fs::read_to_string("/etc/machine-id")
        .map(|m| m.trim().to_owned())
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| host.clone());
    let mut attributes: Vec<(String, Value)> = vec![
        ("service.name".into(), service_name.into()),
        ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("service.instance.id".into(), instance.into()),
        ("host.name".into(), host.into()),
        ("os.type".into(), "linux".into()),
        ("os.version".into(), kernel.into()),
    ];
    for (key, value) in extra {
        match attributes.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.clone().into(),
            None => attributes.push((key.clone(), value.clone().into())),
        }
    }
    Resource { attributes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_attributes_and_overrides() {
        let r = detect(
            "observer",
            &[
                ("service.name".into(), "obs-prod".into()),
                ("deployment.environment".into(), "prod".into()),
            ],
        );
        let get = |k: &str| {
            r.attributes
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("service.name"), Some("obs-prod".into()));
        assert_eq!(get("deployment.environment"), Some("prod".into()));
        assert_eq!(get("os.type"), Some("linux".into()));
        let Some(Value::Str(kernel)) = get("os.version") else {
            panic!("no os.version")
        };
        assert!(
            kernel.chars().next().is_some_and(|c| c.is_ascii_digit()),
            "{kernel}"
        );
        assert!(matches!(get("host.name"), Some(Value::Str(h)) if !h.is_empty()));
    }
}
