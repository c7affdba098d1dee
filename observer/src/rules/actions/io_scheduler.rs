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
        if !offered.contains(&self.scheduler) {
            let module = SCHEDULERS
                .iter()
                .find(|(s, _)| *s == self.scheduler)
                .and_then(|(_, m)| *m)
                .map(|m| format!("; load it with `modprobe {m}`"))
                .unwrap_or_default();
            return Err(ActionError::Unavailable(format!(
                "{device} does not offer the I/O scheduler {:?} (it offers: {}){module}",
                self.scheduler,
                offered.join(", ")
            )));
        }
        Ok(vec![Step::Set {
            knob: Knob::IoScheduler { device },
            value: self.scheduler.clone(),
        }])
    }
}
