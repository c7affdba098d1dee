//! The resource attributes that describe this agent in every export.

use super::{Resource, metrics::Value};

/// Detects host.name, os.type, os.version (the kernel release), service.name,
/// service.version, service.instance.id, and container.id when the agent runs in a container
/// (a sidecar or DaemonSet pod), then adds `extra` (OTEL_RESOURCE_ATTRIBUTES and the
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
    let own_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if let Some(id) = own_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(container_id)
    {
        attributes.push(("container.id".into(), id.into()));
    }
    for (key, value) in extra {
        match attributes.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.clone().into(),
            None => attributes.push((key.clone(), value.clone().into())),
        }
    }
    Resource { attributes }
}

/// The container id in a cgroup v2 path, as container runtimes name their cgroups:
/// `.../docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`,
/// or a bare `<id>` directory (cgroupfs driver), where `<id>` is 64 hex digits.
pub fn container_id(cgroup_path: &str) -> Option<&str> {
    cgroup_path.rsplit('/').find_map(|part| {
        let part = part.strip_suffix(".scope").unwrap_or(part);
        let id = part.rsplit_once('-').map_or(part, |(_, id)| id);
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "4f1c2b3a".repeat(8);
        for path in [
            format!("/system.slice/docker-{id}.scope"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{id}.scope"
            ),
            format!("/machine.slice/libpod-{id}.scope/container"),
            format!("/kubepods/besteffort/pod1234/{id}"),
        ] {
            assert_eq!(container_id(&path), Some(id.as_str()), "{path}");
        }
        assert_eq!(container_id("/system.slice/observer.service"), None);
        assert_eq!(container_id("/"), None);
        assert_eq!(container_id(&format!("/docker-{}.scope", &id[..63])), None);
    }

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
