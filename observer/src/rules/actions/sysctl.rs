//! `sysctl`: sets one kernel parameter from an allowlist, each key with its own validator and
//! bounds. The list starts from the tuning checklist of the performance guide (TCP buffers, BBR,
//! backlogs, port range, TIME-WAIT reuse, Fast Open, conntrack size) plus the usual memory
//! writeback and swap knobs.
//!
//! Reads and writes go to /proc/sys/<key with dots as slashes>. The `net.*` keys are per network
//! namespace: the one of the thread doing the read or write (see proc_sys_compare and
//! net_ctl_header_lookup in the kernel).

use std::{ops::Range, path::PathBuf};

use super::{
    Action, ActionError, Breach, FileAction, Invalid, Knob, Scalar, Step, normalise, required,
};
use crate::caps::Cap;

/// 256 MiB: the largest socket buffer limit accepted (the guide's recommendation is 16 MiB).
const MAX_BUFFER: i64 = 256 << 20;

/// What a key's value must be.
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// One integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// `min default max` socket buffer sizes (tcp_rmem, tcp_wmem): each in
    /// `4096..=MAX_BUFFER`, in order.
    Buffers,
    /// `low high`: 1024 <= low < high <= 65535.
    PortRange,
    /// A TCP congestion control algorithm, which must be available when planned.
    CongestionControl,
    /// A queueing discipline's name (`fq`, `fq_codel`...).
    Qdisc,
}

impl Rule {
    /// The capability the kernel checks when such a value is written, beyond owning the file
    /// as root (which every key here needs, and the agent keeps being).
    fn capability(self) -> Option<(Cap, &'static str)> {
        match self {
            // qdisc_set_default (net/sched/sch_api.c) checks capable(CAP_NET_ADMIN).
            Self::Qdisc => Some((
                Cap::NET_ADMIN,
                "sysctl actions on net.core.default_qdisc (the kernel checks CAP_NET_ADMIN)",
            )),
            Self::Int { .. } | Self::Buffers | Self::PortRange | Self::CongestionControl => None,
        }
    }
}

/// One allowed key.
#[derive(Debug)]
struct Spec {
    key: &'static str,
    rule: Rule,
    /// Why the key may be missing on a machine, and how to get it.
    missing: Option<&'static str>,
}

const CONNTRACK_MISSING: &str = "it exists only while the nf_conntrack module is loaded \
                                 (modprobe nf_conntrack)";

/// The keys a `sysctl` action may set, with their bounds.
const ALLOWED: &[Spec] = &[
    Spec {
        key: "net.core.rmem_max",
        rule: Rule::Int {
            min: 4096,
            max: MAX_BUFFER,
        },
        missing: None,
    },
    Spec {
        key: "net.core.wmem_max",
        rule: Rule::Int {
            min: 4096,
            max: MAX_BUFFER,
        },
        missing: None,
    },
    Spec {
        key: "net.ipv4.tcp_rmem",
        rule: Rule::Buffers,
        missing: None,
    },
    Spec {
        key: "net.ipv4.tcp_wmem",
        rule: Rule::Buffers,
        missing: None,
    },
    Spec {
        key: "net.ipv4.tcp_congestion_control",
        rule: Rule::CongestionControl,
        missing: None,
    },
    Spec {
        key: "net.core.default_qdisc",
        rule: Rule::Qdisc,
        missing: None,
    },
    Spec {
        // 1: client, 2: server, 3: both. The other bits are for testing without cookies.
        key: "net.ipv4.tcp_fastopen",
        rule: Rule::Int { min: 0, max: 3 },
        missing: None,
    },
    Spec {
        key: "net.core.somaxconn",
        rule: Rule::Int {
            min: 128,
            max: 65535,
        },
        missing: None,
    },
    Spec {
        key: "net.ipv4.tcp_max_syn_backlog",
        rule: Rule::Int {
            min: 128,
            max: 65535,
        },
        missing: None,
    },
    Spec {
        key: "net.core.netdev_max_backlog",
        rule: Rule::Int {
            min: 1000,
            max: 1 << 20,
        },
        missing: None,
    },
    Spec {
        key: "net.ipv4.ip_local_port_range",
        rule: Rule::PortRange,
        missing: None,
    },
    Spec {
        // 0: off, 1: on, 2: loopback only (the default).
        key: "net.ipv4.tcp_tw_reuse",
        rule: Rule::Int { min: 0, max: 2 },
        missing: None,
    },
    Spec {
        key: "net.netfilter.nf_conntrack_max",
        rule: Rule::Int {
            min: 65536,
            max: 1 << 24,
        },
        missing: Some(CONNTRACK_MISSING),
    },
    Spec {
        key: "net.nf_conntrack_max",
        rule: Rule::Int {
            min: 65536,
            max: 1 << 24,
        },
        missing: Some(CONNTRACK_MISSING),
    },
    Spec {
        key: "vm.swappiness",
        rule: Rule::Int { min: 0, max: 200 },
        missing: None,
    },
    Spec {
        key: "vm.dirty_ratio",
        rule: Rule::Int { min: 1, max: 100 },
        missing: None,
    },
    Spec {
        key: "vm.dirty_background_ratio",
        rule: Rule::Int { min: 1, max: 100 },
        missing: None,
    },
];

/// The allowed keys, for messages.
pub fn allowed_keys() -> Vec<&'static str> {
    ALLOWED.iter().map(|s| s.key).collect()
}

fn spec(key: &str) -> Option<&'static Spec> {
    ALLOWED.iter().find(|s| s.key == key)
}

/// `/proc/sys/<key with dots as slashes>`.
pub fn path(key: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/{}", key.replace('.', "/")))
}

/// The value of `key`, normalised (whitespace runs as one space).
pub fn read(key: &str) -> Result<String, ActionError> {
    Ok(normalise(&super::read_file(
        &path(key),
        &format!("sysctl {key}"),
    )?))
}

pub fn write(key: &str, value: &str) -> Result<(), ActionError> {
    super::write_file(&path(key), value, &format!("sysctl {key}"))
}

/// Checks `value` for `spec` and returns it in the form the kernel reads back.
fn check(spec: &Spec, value: &Scalar) -> Result<String, String> {
    let key = spec.key;
    let text = normalise(&value.text());
    let int = |s: &str| -> Result<i64, String> {
        s.parse()
            .map_err(|_| format!("{s:?} is not an integer ({key} takes integers)"))
    };
    match spec.rule {
        Rule::Int { min, max } => {
            let n = int(&text)?;
            if !(min..=max).contains(&n) {
                return Err(format!(
                    "{n} is out of bounds for {key}: use a value from {min} to {max}"
                ));
            }
            Ok(n.to_string())
        }
        Rule::Buffers => {
            let numbers = text.split(' ').map(int).collect::<Result<Vec<_>, _>>()?;
            let [min, default, max] = numbers[..] else {
                return Err(format!(
                    "{key} takes three sizes in bytes, \"min default max\", e.g. \
                     \"4096 87380 16777216\""
                ));
            };
            for n in [min, default, max] {
                if !(4096..=MAX_BUFFER).contains(&n) {
                    return Err(format!(
                        "{n} is out of bounds for {key}: each size must be from 4096 to \
                         {MAX_BUFFER} (256 MiB)"
                    ));
                }
            }
            if !(min <= default && default <= max) {
                return Err(format!(
                    "{key} must be in order, min <= default <= max; got {min} {default} {max}"
                ));
            }
            Ok(format!("{min} {default} {max}"))
        }
        Rule::PortRange => {
            let numbers = text.split(' ').map(int).collect::<Result<Vec<_>, _>>()?;
            let [low, high] = numbers[..] else {
                return Err(format!(
                    "{key} takes two ports, \"low high\", e.g. \"1024 65535\""
                ));
            };
            if !(1024 <= low && low < high && high <= 65535) {
                return Err(format!(
                    "{low} {high} is not a port range {key} accepts here: it needs \
                     1024 <= low < high <= 65535"
                ));
            }
            Ok(format!("{low} {high}"))
        }
        Rule::CongestionControl | Rule::Qdisc => {
            // The kernel's names are short identifiers (TCP_CA_NAME_MAX and IFNAMSIZ are 16).
            let ok = !text.is_empty()
                && text.len() < 16
                && text
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                let what = match spec.rule {
                    Rule::Qdisc => "a queueing discipline such as \"fq\"",
                    _ => "a congestion control algorithm such as \"bbr\" or \"cubic\"",
                };
                return Err(format!("{text:?} is not a name {key} accepts: use {what}"));
            }
            Ok(text)
        }
    }
}

/// Fails unless `name` is in `available` (the text of tcp_available_congestion_control), with
/// the module to load: algorithms other than reno and cubic are modules named `tcp_<name>`.
fn check_congestion_control(name: &str, available: &str) -> Result<(), ActionError> {
    if available.split_whitespace().any(|a| a == name) {
        return Ok(());
    }
    Err(ActionError::Unavailable(format!(
        "TCP congestion control {name:?} is not available on this machine (available: \
         {available}); load its module with `modprobe tcp_{name}`, or choose an available one"
    )))
}

/// Sets one allowed sysctl.
#[derive(Debug)]
pub struct Sysctl {
    key: String,
    /// Already in the form the kernel reads back.
    value: String,
}

impl Sysctl {
    pub(super) fn build(action: &FileAction, at: &Range<usize>) -> Result<Self, Invalid> {
        let example = "{ type = \"sysctl\", key = \"net.core.somaxconn\", value = \"4096\" }";
        let key = required(&action.key, "key", "sysctl", at, example)?;
        let value = required(&action.value, "value", "sysctl", at, example)?;
        let Some(spec) = spec(key.get_ref()) else {
            return Err(Invalid::new(
                key.span(),
                "key",
                format!(
                    "sysctl {:?} is not on the allowlist; the allowed keys are: {}",
                    key.get_ref(),
                    allowed_keys().join(", ")
                ),
            ));
        };
        let value = check(spec, value.get_ref())
            .map_err(|message| Invalid::new(value.span(), "value", message))?;
        Ok(Self {
            key: spec.key.to_owned(),
            value,
        })
    }

    /// Makes sure the value can be set here: the key exists, and a congestion control is
    /// available.
    fn available(&self) -> Result<(), ActionError> {
        let spec = spec(&self.key).expect("built from the allowlist");
        if !path(&self.key).exists() {
            let why = spec.missing.map(|m| format!(": {m}")).unwrap_or_default();
            return Err(ActionError::Unavailable(format!(
                "this kernel has no sysctl {} ({} does not exist){why}",
                self.key,
                path(&self.key).display()
            )));
        }
        if let Rule::CongestionControl = spec.rule {
            let available = read("net.ipv4.tcp_available_congestion_control")?;
            check_congestion_control(&self.value, &available)?;
        }
        Ok(())
    }
}

impl Action for Sysctl {
    fn kind(&self) -> &'static str {
        "sysctl"
    }

    fn describe(&self) -> String {
        format!("sysctl {}={}", self.key, self.value)
    }

    fn capabilities(&self) -> Vec<(Cap, &'static str)> {
        spec(&self.key)
            .and_then(|spec| spec.rule.capability())
            .into_iter()
            .collect()
    }

    fn plan(&self, _breach: &Breach) -> Result<Vec<Step>, ActionError> {
        self.available()?;
        Ok(vec![Step::Set {
            knob: Knob::Sysctl {
                key: self.key.clone(),
            },
            value: self.value.clone(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use observer_tests::netns::NetNs;

    use super::super::testing::{breach, built, invalid};
    use super::super::{Per, Target};
    use super::*;

    fn sysctl(key: &str, value: &str) -> String {
        format!(r#"{{ type = "sysctl", key = "{key}", value = {value} }}"#)
    }

    /// Root owns /proc/sys, which is enough for every key but the default qdisc, whose writes
    /// the kernel also checks for CAP_NET_ADMIN (the agent keeps it then).
    #[test]
    fn only_the_default_qdisc_needs_a_capability() {
        let caps = |key, value| {
            built(&sysctl(key, value), Per::Host)
                .capabilities()
                .into_iter()
                .map(|(cap, _)| cap)
                .collect::<Vec<_>>()
        };
        assert_eq!(caps("net.core.default_qdisc", "\"fq\""), [Cap::NET_ADMIN]);
        assert_eq!(caps("net.core.somaxconn", "4096"), []);
        assert_eq!(caps("vm.swappiness", "10"), []);
    }

    #[test]
    fn values_are_normalised_to_the_kernel_s_form() {
        for (key, value, planned) in [
            ("net.core.somaxconn", "4096", "4096"),
            ("net.core.somaxconn", "\" 4096 \"", "4096"),
            ("net.core.somaxconn", "\"+4096\"", "4096"),
            (
                "net.ipv4.tcp_rmem",
                "\"4096  87380\\t16777216\"",
                "4096 87380 16777216",
            ),
            (
                "net.ipv4.ip_local_port_range",
                "\"1024 65535\"",
                "1024 65535",
            ),
            ("net.ipv4.tcp_congestion_control", "\"reno\"", "reno"),
            ("vm.swappiness", "0", "0"),
        ] {
            let action = built(&sysctl(key, value), Per::Host);
            assert_eq!(action.describe(), format!("sysctl {key}={planned}"));
        }
    }

    #[test]
    fn keys_and_values_are_checked() {
        let allowed = allowed_keys().join(", ");
        for (key, value, field, message, at) in [
            (
                "kernel.panic",
                "1",
                "key",
                format!(
                    "sysctl \"kernel.panic\" is not on the allowlist; the allowed keys are: {allowed}"
                ),
                "\"kernel.panic\"",
            ),
            (
                "net.core.somaxconn",
                "\"lots\"",
                "value",
                "\"lots\" is not an integer (net.core.somaxconn takes integers)".to_owned(),
                "\"lots\"",
            ),
            (
                "net.core.somaxconn",
                "100000",
                "value",
                "100000 is out of bounds for net.core.somaxconn: use a value from 128 to 65535"
                    .to_owned(),
                "100000",
            ),
            (
                "vm.swappiness",
                "-1",
                "value",
                "-1 is out of bounds for vm.swappiness: use a value from 0 to 200".to_owned(),
                "-1",
            ),
            (
                "net.ipv4.tcp_rmem",
                "\"4096 87380\"",
                "value",
                "net.ipv4.tcp_rmem takes three sizes in bytes, \"min default max\", e.g. \
                 \"4096 87380 16777216\""
                    .to_owned(),
                "\"4096 87380\"",
            ),
            (
                "net.ipv4.tcp_wmem",
                "\"4096 65536 1073741824\"",
                "value",
                "1073741824 is out of bounds for net.ipv4.tcp_wmem: each size must be from 4096 \
                 to 268435456 (256 MiB)"
                    .to_owned(),
                "\"4096 65536 1073741824\"",
            ),
            (
                "net.ipv4.tcp_rmem",
                "\"8192 4096 16777216\"",
                "value",
                "net.ipv4.tcp_rmem must be in order, min <= default <= max; got 8192 4096 \
                 16777216"
                    .to_owned(),
                "\"8192 4096 16777216\"",
            ),
            (
                "net.ipv4.tcp_rmem",
                "\"4096 x 16777216\"",
                "value",
                "\"x\" is not an integer (net.ipv4.tcp_rmem takes integers)".to_owned(),
                "\"4096 x 16777216\"",
            ),
            (
                "net.ipv4.ip_local_port_range",
                "\"1024\"",
                "value",
                "net.ipv4.ip_local_port_range takes two ports, \"low high\", e.g. \"1024 65535\""
                    .to_owned(),
                "\"1024\"",
            ),
            (
                "net.ipv4.ip_local_port_range",
                "\"80 8080\"",
                "value",
                "80 8080 is not a port range net.ipv4.ip_local_port_range accepts here: it \
                 needs 1024 <= low < high <= 65535"
                    .to_owned(),
                "\"80 8080\"",
            ),
            (
                "net.ipv4.tcp_congestion_control",
                "\"BBR; reboot\"",
                "value",
                "\"BBR; reboot\" is not a name net.ipv4.tcp_congestion_control accepts: use a \
                 congestion control algorithm such as \"bbr\" or \"cubic\""
                    .to_owned(),
                "\"BBR; reboot\"",
            ),
            (
                "net.core.default_qdisc",
                "\"\"",
                "value",
                "\"\" is not a name net.core.default_qdisc accepts: use a queueing discipline \
                 such as \"fq\""
                    .to_owned(),
                "\"\"",
            ),
        ] {
            assert_eq!(
                invalid(&sysctl(key, value), Per::Host),
                (field, message, at.to_owned()),
                "{key} = {value}"
            );
        }
        let missing = r#"{ type = "sysctl", key = "vm.swappiness" }"#;
        assert_eq!(
            invalid(missing, Per::Host),
            (
                "value",
                "a sysctl action needs `value`, e.g. { type = \"sysctl\", key = \
                 \"net.core.somaxconn\", value = \"4096\" }"
                    .to_owned(),
                missing.to_owned()
            )
        );
    }

    #[test]
    fn every_allowed_key_has_a_path_under_proc_sys() {
        assert_eq!(
            path("net.ipv4.tcp_rmem"),
            PathBuf::from("/proc/sys/net/ipv4/tcp_rmem")
        );
        // Every key but conntrack's (a module) exists on any Linux with IPv4.
        for spec in ALLOWED.iter().filter(|s| s.missing.is_none()) {
            assert!(path(spec.key).exists(), "{}", spec.key);
        }
    }

    #[test]
    fn an_unavailable_congestion_control_is_refused_with_the_modprobe_to_run() {
        let action = built(
            &sysctl("net.ipv4.tcp_congestion_control", "\"nosuchcc\""),
            Per::Host,
        );
        let available = read("net.ipv4.tcp_available_congestion_control").unwrap();
        let err = action.plan(&breach(Target::Host)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "TCP congestion control \"nosuchcc\" is not available on this machine \
                 (available: {available}); load its module with `modprobe tcp_nosuchcc`, or \
                 choose an available one"
            )
        );
    }

    #[test]
    fn a_missing_bbr_says_to_load_tcp_bbr() {
        assert!(check_congestion_control("bbr", "reno cubic bbr").is_ok());
        assert_eq!(
            check_congestion_control("bbr", "reno cubic")
                .unwrap_err()
                .to_string(),
            "TCP congestion control \"bbr\" is not available on this machine (available: reno \
             cubic); load its module with `modprobe tcp_bbr`, or choose an available one"
        );
    }

    #[test]
    fn a_missing_key_names_the_module_to_load() {
        let key = "net.netfilter.nf_conntrack_max";
        let action = built(&sysctl(key, "1048576"), Per::Host);
        let planned = action.plan(&breach(Target::Host));
        if path(key).exists() {
            // nf_conntrack is loaded here: the plan is the change.
            assert_eq!(
                planned.unwrap(),
                [Step::Set {
                    knob: Knob::Sysctl { key: key.into() },
                    value: "1048576".into()
                }]
            );
        } else {
            assert_eq!(
                planned.unwrap_err().to_string(),
                "this kernel has no sysctl net.netfilter.nf_conntrack_max \
                 (/proc/sys/net/netfilter/nf_conntrack_max does not exist): it exists only \
                 while the nf_conntrack module is loaded (modprobe nf_conntrack)"
            );
        }
    }

    /// Plans, sets, reads back and restores per-namespace sysctls inside a network namespace
    /// the test creates, and checks the host's values did not move.
    #[test]
    fn net_sysctls_round_trip_in_a_network_namespace() {
        observer_tests::require_root!();
        let cc = {
            let available = read("net.ipv4.tcp_available_congestion_control").unwrap();
            if available.split(' ').any(|c| c == "bbr") {
                "bbr"
            } else {
                "reno"
            }
        };
        let changes = [
            ("net.core.somaxconn", "\"4321\"", "4321"),
            (
                "net.ipv4.tcp_rmem",
                "\"4096 87380 16777216\"",
                "4096 87380 16777216",
            ),
            (
                "net.ipv4.tcp_wmem",
                "\"8192\t65536 8388608\"",
                "8192 65536 8388608",
            ),
            (
                "net.ipv4.ip_local_port_range",
                "\"20001 40000\"",
                "20001 40000",
            ),
            ("net.ipv4.tcp_tw_reuse", "0", "0"),
            ("net.ipv4.tcp_max_syn_backlog", "333", "333"),
            ("net.ipv4.tcp_congestion_control", &format!("\"{cc}\""), cc),
        ];
        let host_before: Vec<String> = changes.iter().map(|(k, ..)| read(k).unwrap()).collect();
        let ns = NetNs::create().expect("create a network namespace");
        let steps = ns
            .run(|| {
                let mut done = Vec::new();
                for (key, value, planned) in changes {
                    let action = built(&sysctl(key, value), Per::Host);
                    let steps = action.plan(&breach(Target::Host)).unwrap();
                    let [Step::Set { knob, value }] = &steps[..] else {
                        panic!("{key}: {steps:?}");
                    };
                    assert_eq!(knob, &Knob::Sysctl { key: key.into() });
                    assert_eq!(value, planned);
                    let original = knob.read().unwrap();
                    knob.write(value).unwrap();
                    assert_eq!(&knob.read().unwrap(), value, "{key} read back");
                    // A rollback writes back what was read.
                    knob.write(&original).unwrap();
                    assert_eq!(knob.read().unwrap(), original, "{key} restored");
                    // Leave the change in place, to check below that it stayed in the namespace.
                    knob.write(value).unwrap();
                    done.push(knob.read().unwrap());
                }
                done
            })
            .unwrap();
        let host_after: Vec<String> = changes.iter().map(|(k, ..)| read(k).unwrap()).collect();
        assert_eq!(host_after, host_before, "the host's sysctls did not change");
        let planned: Vec<&str> = changes.iter().map(|(.., p)| *p).collect();
        assert_eq!(steps, planned);
    }
}
