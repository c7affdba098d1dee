//! The resource attributes that describe this agent in every export.

use super::{
    Resource,
    metrics::{Value, keys},
};
use crate::cgroup::Workload;

/// Detects host.name, os.type, os.version (the kernel release), service.name,
/// service.version, service.instance.id, and container.id and k8s.pod.uid when the agent runs
/// in a container or pod (a sidecar or DaemonSet pod), then adds `extra`
/// (OTEL_RESOURCE_ATTRIBUTES and the config file's resource_attributes), which win over what
/// was detected.
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
    attributes.extend(own_workload(&own_cgroup));
    for (key, value) in extra {
        match attributes.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.clone().into(),
            None => attributes.push((key.clone(), value.clone().into())),
        }
    }
    Resource { attributes }
}

/// container.id and k8s.pod.uid from this process's cgroup v2 path (the `0::` line of
/// /proc/self/cgroup). In a container with its own cgroup namespace the path is `/` and says
/// nothing; in the host's cgroup namespace (`--cgroupns=host`, the default on cgroup v1 hosts)
/// it is the container's.
fn own_workload(proc_self_cgroup: &str) -> Vec<(String, Value)> {
    let Some(w) = proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(Workload::from_path)
    else {
        return Vec::new();
    };
    let container = w
        .container
        .map(|c| (keys::CONTAINER_ID.into(), c.id.into()));
    let pod = w.pod.map(|p| (keys::POD_UID.into(), p.uid.into()));
    container.into_iter().chain(pod).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_and_pod_from_the_own_cgroup() {
        let id = "4f1c2b3a".repeat(8);
        let uid = "275ecb36-5aa8-4c2a-9c47-d8bb681b9aff";
        let pod = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        );
        assert_eq!(
            own_workload(&format!("1:name=systemd:/x\n0::{pod}\n")),
            [
                ("container.id".to_owned(), id.as_str().into()),
                ("k8s.pod.uid".to_owned(), uid.into())
            ]
        );
        assert_eq!(
            own_workload(&format!("0::/system.slice/docker-{id}.scope\n")),
            [("container.id".to_owned(), id.as_str().into())]
        );
        assert!(own_workload("0::/\n").is_empty());
        assert!(own_workload("0::/system.slice/observer.service\n").is_empty());
        assert!(own_workload("").is_empty());
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
