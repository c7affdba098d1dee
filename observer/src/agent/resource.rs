//! The resource attributes that describe this agent in every export.

use super::{
    Resource,
    metrics::{Value, keys},
};
use crate::cgroup::Workload;

/// The UUID namespace the semantic conventions give for a `service.instance.id` derived from an
/// inherent unique id (model/service/registry.yaml in open-telemetry/semantic-conventions).
const INSTANCE_ID_NAMESPACE: u128 = 0x4d63009a_8d0f_11ee_aad7_4c796ed8e320;

/// Detects host.name, os.type, os.version (the kernel release), service.name,
/// service.version, service.instance.id, observer.scope when the agent is scoped (`scope`, as
/// [`crate::scope::Scope::describe`] shows it), and container.id and k8s.pod.uid when the agent
/// runs in a container or pod (a sidecar or DaemonSet pod), then adds `extra`
/// (OTEL_RESOURCE_ATTRIBUTES and the config file's resource_attributes), which win over what
/// was detected.
pub fn detect(service_name: &str, scope: Option<&str>, extra: &[(String, String)]) -> Resource {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_default();
    // Stable across restarts of the agent on one machine, unlike a random id.
    let machine = std::fs::read_to_string("/etc/machine-id")
        .map(|m| m.trim().to_owned())
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| host.clone());
    let mut attributes: Vec<(String, Value)> = vec![
        ("service.name".into(), service_name.into()),
        ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
        (
            "service.instance.id".into(),
            instance_id(&machine, scope).into(),
        ),
        ("host.name".into(), host.into()),
        ("os.type".into(), "linux".into()),
        ("os.version".into(), kernel.into()),
    ];
    if let Some(scope) = scope {
        // So a collector can tell a sidecar's view from a host's.
        attributes.push((keys::SCOPE.into(), scope.into()));
    }
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

/// `service.instance.id`: a name-based UUID (version 5: SHA-1, RFC 9562 section 5.5) of what
/// identifies this agent, in the namespace the semantic conventions give for that, as they
/// recommend for an id that stays the same across restarts. The machine id itself must not be
/// exported: machine-id(5) says it is confidential and that an application needing a stable id
/// should derive one from it, so that it cannot be recovered from what is exported. What
/// identifies the agent is the machine (`machine`: /etc/machine-id, or without one the host
/// name) and, for an agent restricted to one cgroup (sidecar mode), that cgroup: two agents of
/// one machine with different scopes are two instances, and the conventions require the id to
/// be unique per instance.
fn instance_id(machine: &str, scope: Option<&str>) -> String {
    let name = match scope {
        // A machine id is hex and a host name has no spaces, so the two never run together.
        Some(scope) => format!("{machine} {scope}"),
        None => machine.to_owned(),
    };
    let mut input = INSTANCE_ID_NAMESPACE.to_be_bytes().to_vec();
    input.extend_from_slice(name.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&digest.as_ref()[..16]);
    // The version (5) in the high nibble of octet 6, the variant (binary 10) in the top bits of
    // octet 8.
    uuid[6] = (uuid[6] & 0x0f) | 0x50;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
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
    fn instance_ids_are_uuid_v5_of_the_machine_and_scope() {
        // Expected values computed apart, with Python's uuid module:
        //   uuid.uuid5(uuid.UUID("4d63009a-8d0f-11ee-aad7-4c796ed8e320"), name)
        // The machine id is machine-id(5)'s example.
        let machine = "b08dfa6083e7567a1921a715000001fb";
        assert_eq!(
            instance_id(machine, None),
            "9d8987cf-62e7-5c7e-90d6-cd284b1fc479"
        );
        assert_eq!(
            instance_id(machine, Some("/system.slice/nginx.service")),
            "b554e062-e838-5a4e-8599-de510d4557a3"
        );
        // Nothing of the machine id shows.
        let id = instance_id(machine, None).replace('-', "");
        assert!(
            machine
                .as_bytes()
                .windows(6)
                .all(|w| !id.as_bytes().windows(6).any(|v| v == w)),
            "{id}"
        );
    }

    #[test]
    fn the_exported_instance_id_is_not_the_machine_id() {
        let r = detect("observer", None, &[]);
        let Some((_, Value::Str(id))) = r
            .attributes
            .iter()
            .find(|(k, _)| k == "service.instance.id")
        else {
            panic!("no service.instance.id: {r:?}")
        };
        // 8-4-4-4-12 hex digits, version 5, RFC variant.
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert!(
            id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
            "{id}"
        );
        assert_eq!(id.as_bytes()[14], b'5', "{id}");
        assert!(
            matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
            "{id}"
        );
        let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
        let machine = machine.trim();
        if !machine.is_empty() {
            assert!(!id.replace('-', "").contains(machine), "{id}");
            assert_eq!(*id, instance_id(machine, None));
        }
        // A scoped agent of the same machine is another instance.
        let scoped = detect("observer", Some("/system.slice/db.service"), &[]);
        let get = |r: &Resource, k: &str| {
            r.attributes
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_ne!(
            get(&scoped, "service.instance.id"),
            Some(Value::Str(id.clone()))
        );
        assert_eq!(
            get(&scoped, "observer.scope"),
            Some("/system.slice/db.service".into())
        );
        assert_eq!(get(&r, "observer.scope"), None);
    }

    #[test]
    fn detected_attributes_and_overrides() {
        let r = detect(
            "observer",
            None,
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
