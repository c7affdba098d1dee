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
            if !available.split(' ').any(|a| a == self.value) {
                return Err(ActionError::Unavailable(format!(
                    "TCP congestion control {:?} is not available on this machine (available: \
                     {available}); load its module with `modprobe tcp_{}`, or choose an \
                     available one",
                    self.value, self.value
                )));
            }
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
