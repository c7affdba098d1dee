//! `io_scheduler`: sets the I/O scheduler of a block device
//! (/sys/block/<device>/queue/scheduler), a configured one or the offending disk of a per-disk
//! rule.

use std::{ops::Range, path::PathBuf};

use super::{Action, ActionError, Breach, FileAction, Invalid, Knob, Step, Target, required};

/// The schedulers of multi-queue block devices (every device since Linux 5.0), with the module
/// that provides each when it is not built in.
const SCHEDULERS: [(&str, Option<&str>); 4] = [
    ("none", None),
    ("mq-deadline", Some("mq-deadline")),
    ("kyber", Some("kyber-iosched")),
    ("bfq", Some("bfq")),
];

/// /sys/block/<device>/queue/scheduler.
pub fn path(device: &str) -> PathBuf {
    PathBuf::from(format!("/sys/block/{device}/queue/scheduler"))
}

/// The kernel's text, `none [mq-deadline] kyber bfq`: the offered schedulers, and the active
/// one (in brackets).
pub fn parse(text: &str) -> (Vec<String>, Option<String>) {
    let mut offered = Vec::new();
    let mut active = None;
    for word in text.split_whitespace() {
        match word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            Some(name) => {
                active = Some(name.to_owned());
                offered.push(name.to_owned());
            }
            None => offered.push(word.to_owned()),
        }
    }
    (offered, active)
}

/// The active scheduler of `device`.
pub fn read(device: &str) -> Result<String, ActionError> {
    let text = read_scheduler(device)?;
    parse(&text).1.ok_or_else(|| ActionError::Io {
        what: format!("read the I/O scheduler of {device}"),
        source: std::io::Error::other(format!("no active scheduler in {text:?}")),
    })
}

pub fn write(device: &str, scheduler: &str) -> Result<(), ActionError> {
    super::write_file(
        &path(device),
        scheduler,
        &format!("the I/O scheduler of {device}"),
    )
}

fn read_scheduler(device: &str) -> Result<String, ActionError> {
    let path = path(device);
    if !path.exists() {
        return Err(ActionError::Gone(format!(
            "there is no block device {device} ({} does not exist)",
            path.display()
        )));
    }
    super::read_file(&path, &format!("the I/O scheduler of {device}"))
}

/// A device name as the config may write it: a kernel name such as `sda` or `nvme0n1`.
fn check_device(name: &str) -> Result<(), String> {
    if let Some(base) = name.strip_prefix("/dev/") {
        return Err(format!(
            "write the kernel name of the device, without /dev/: device = {base:?}"
        ));
    }
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
    if !ok {
        return Err(format!(
            "{name:?} is not a block device name; use its kernel name, as listed in /sys/block \
             (e.g. \"sda\", \"nvme0n1\")"
        ));
    }
    Ok(())
}

/// The whole disk under /sys/block that `name` designates: `name` itself, the disk holding
/// partition `name` (`sda1` -> `sda`), or the device numbered `name` (`8:0`, as exported).
pub fn resolve(name: &str) -> Result<String, ActionError> {
    let name = if name.contains(':') {
        let link = PathBuf::from(format!("/sys/dev/block/{name}"));
        let target = std::fs::read_link(&link).map_err(|_| {
            ActionError::Gone(format!(
                "there is no block device numbered {name} ({} does not exist)",
                link.display()
            ))
        })?;
        target
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .ok_or_else(|| ActionError::Gone(format!("block device {name} has no name")))?
    } else {
        name.to_owned()
    };
    let class = PathBuf::from(format!("/sys/class/block/{name}"));
    if class.join("partition").exists() {
        // A partition's sysfs directory is inside its disk's.
        let real = std::fs::canonicalize(&class).map_err(|source| ActionError::Io {
            what: format!("resolve {}", class.display()),
            source,
        })?;
        if let Some(disk) = real
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
        {
            return Ok(disk.to_owned());
        }
    }
    Ok(name)
}

/// Fails unless `device` offers `scheduler`, naming the ones it offers and the module to load.
fn check_offered(device: &str, offered: &[String], scheduler: &str) -> Result<(), ActionError> {
    if offered.iter().any(|o| o == scheduler) {
        return Ok(());
    }
    let module = SCHEDULERS
        .iter()
        .find(|(s, _)| *s == scheduler)
        .and_then(|(_, m)| *m)
        .map(|m| format!("; load it with `modprobe {m}`"))
        .unwrap_or_default();
    Err(ActionError::Unavailable(format!(
        "{device} does not offer the I/O scheduler {scheduler:?} (it offers: {}){module}",
        offered.join(", ")
    )))
}

/// Sets the I/O scheduler of a device.
#[derive(Debug)]
pub struct IoScheduler {
    scheduler: String,
    /// `None`: the offending disk.
    device: Option<String>,
}

impl IoScheduler {
    pub(super) fn build(action: &FileAction, at: &Range<usize>) -> Result<Self, Invalid> {
        let example = "{ type = \"io_scheduler\", scheduler = \"mq-deadline\", device = \"sda\" }";
        let scheduler = required(&action.scheduler, "scheduler", "io_scheduler", at, example)?;
        if !SCHEDULERS.iter().any(|(s, _)| s == scheduler.get_ref()) {
            let names: Vec<_> = SCHEDULERS.iter().map(|(s, _)| *s).collect();
            return Err(Invalid::new(
                scheduler.span(),
                "scheduler",
                format!(
                    "unknown I/O scheduler {:?}; the schedulers are: {}",
                    scheduler.get_ref(),
                    names.join(", ")
                ),
            ));
        }
        if let Some(device) = &action.device {
            check_device(device.get_ref()).map_err(|m| Invalid::new(device.span(), "device", m))?;
        }
        Ok(Self {
            scheduler: scheduler.get_ref().clone(),
            device: action.device.as_ref().map(|d| d.get_ref().clone()),
        })
    }
}

impl Action for IoScheduler {
    fn kind(&self) -> &'static str {
        "io_scheduler"
    }

    fn describe(&self) -> String {
        match &self.device {
            Some(device) => format!("io_scheduler {} on {device}", self.scheduler),
            None => format!("io_scheduler {} on the offending disk", self.scheduler),
        }
    }

    fn plan(&self, breach: &Breach) -> Result<Vec<Step>, ActionError> {
        let named = match (&self.device, &breach.target) {
            (Some(device), _) => device.clone(),
            (None, Target::Disk { name }) => name.clone(),
            (None, other) => {
                return Err(ActionError::Unavailable(format!(
                    "an io_scheduler action without a device acts on the offending disk, but \
                     this breach is about {other:?}; set `device`"
                )));
            }
        };
        let device = resolve(&named)?;
        let (offered, _) = parse(&read_scheduler(&device)?);
        check_offered(&device, &offered, &self.scheduler)?;
        Ok(vec![Step::Set {
            knob: Knob::IoScheduler { device },
            value: self.scheduler.clone(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use observer_tests::blockdev::LoopDevice;

    use super::super::testing::{breach, built, invalid};
    use super::super::{Per, Target};
    use super::*;

    #[test]
    fn the_kernel_s_list_gives_the_offered_and_the_active_scheduler() {
        let (offered, active) = parse("none [mq-deadline] kyber bfq \n");
        assert_eq!(offered, ["none", "mq-deadline", "kyber", "bfq"]);
        assert_eq!(active.as_deref(), Some("mq-deadline"));
        assert_eq!(parse("[none] \n").1.as_deref(), Some("none"));
        assert_eq!(parse("none bfq").1, None);
    }

    #[test]
    fn a_scheduler_the_device_does_not_offer_is_refused_with_the_module_to_load() {
        let offered = ["none".to_owned(), "mq-deadline".to_owned()];
        assert!(check_offered("sda", &offered, "none").is_ok());
        assert_eq!(
            check_offered("sda", &offered, "bfq")
                .unwrap_err()
                .to_string(),
            "sda does not offer the I/O scheduler \"bfq\" (it offers: none, mq-deadline); load \
             it with `modprobe bfq`"
        );
        assert_eq!(
            check_offered("sda", &offered[1..], "none")
                .unwrap_err()
                .to_string(),
            "sda does not offer the I/O scheduler \"none\" (it offers: mq-deadline)"
        );
    }

    #[test]
    fn schedulers_and_devices_are_checked() {
        for (snippet, field, message, at) in [
            (
                r#"{ type = "io_scheduler", scheduler = "cfq", device = "sda" }"#,
                "scheduler",
                "unknown I/O scheduler \"cfq\"; the schedulers are: none, mq-deadline, kyber, bfq",
                "\"cfq\"",
            ),
            (
                r#"{ type = "io_scheduler", scheduler = "bfq", device = "/dev/sda" }"#,
                "device",
                "write the kernel name of the device, without /dev/: device = \"sda\"",
                "\"/dev/sda\"",
            ),
            (
                r#"{ type = "io_scheduler", scheduler = "bfq", device = "../sda" }"#,
                "device",
                "\"../sda\" is not a block device name; use its kernel name, as listed in \
                 /sys/block (e.g. \"sda\", \"nvme0n1\")",
                "\"../sda\"",
            ),
            (
                r#"{ type = "io_scheduler", device = "sda" }"#,
                "scheduler",
                "an io_scheduler action needs `scheduler`, e.g. { type = \"io_scheduler\", \
                 scheduler = \"mq-deadline\", device = \"sda\" }",
                r#"{ type = "io_scheduler", device = "sda" }"#,
            ),
        ] {
            assert_eq!(
                invalid(snippet, Per::Host),
                (field, message.to_owned(), at.to_owned()),
                "{snippet}"
            );
        }
    }

    #[test]
    fn a_missing_device_is_gone() {
        let action = built(
            r#"{ type = "io_scheduler", scheduler = "none", device = "nosuchdisk0" }"#,
            Per::Host,
        );
        let err = action.plan(&breach(Target::Host)).unwrap_err();
        assert!(matches!(err, ActionError::Gone(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "there is no block device nosuchdisk0 (/sys/block/nosuchdisk0/queue/scheduler does \
             not exist)"
        );
    }

    /// On a loop device the test creates: a per-disk rule plans the offending disk (named by
    /// kernel name or by major:minor), and the knob sets, reads back and restores.
    #[test]
    fn the_scheduler_of_a_loop_device_round_trips() {
        observer_tests::require_root!();
        let dev = LoopDevice::create(16).expect("create a loop device");
        let (offered, active) = dev.schedulers().unwrap();
        let Some(other) = offered.iter().find(|s| **s != active) else {
            observer_tests::skip_or_fail!("{} offers only {active}", dev.name);
        };
        let action = built(
            &format!(r#"{{ type = "io_scheduler", scheduler = "{other}" }}"#),
            Per::Disk,
        );
        for name in [dev.name.clone(), dev.disk()] {
            let steps = action
                .plan(&breach(Target::Disk { name: name.clone() }))
                .unwrap();
            assert_eq!(
                steps,
                [Step::Set {
                    knob: Knob::IoScheduler {
                        device: dev.name.clone()
                    },
                    value: other.clone()
                }],
                "{name}"
            );
        }
        let knob = Knob::IoScheduler {
            device: dev.name.clone(),
        };
        assert_eq!(knob.read().unwrap(), active);
        knob.write(other).unwrap();
        assert_eq!(&knob.read().unwrap(), other);
        assert_eq!(&dev.schedulers().unwrap().1, other, "the kernel's own view");
        knob.write(&active).unwrap();
        assert_eq!(knob.read().unwrap(), active);
        let err = knob.write("nosuchsched").unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "write \"nosuchsched\" to the I/O scheduler of {} (/sys/block/{}/queue/scheduler): ",
                dev.name, dev.name
            )),
            "{err}"
        );
    }
}
