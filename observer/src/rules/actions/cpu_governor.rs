//! `cpu_governor`: sets the cpufreq scaling governor of some CPUs (default: every online CPU),
//! one knob per CPU (/sys/devices/system/cpu/cpu<N>/cpufreq/scaling_governor).
//!
//! Machines without a cpufreq driver (most virtual machines: the hypervisor owns the CPU
//! frequency) have no such files, and the action says so when it is planned.

use std::{ops::Range, path::PathBuf};

use super::{
    Action, ActionError, Breach, CpuList, FileAction, Invalid, Knob, Scalar, Step, normalise,
    required,
};

/// The governors Linux has (drivers/cpufreq and kernel/sched/cpufreq_schedutil.c).
const GOVERNORS: [&str; 6] = [
    "performance",
    "powersave",
    "schedutil",
    "ondemand",
    "conservative",
    "userspace",
];

fn cpufreq(cpu: u32) -> PathBuf {
    PathBuf::from(format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq"))
}

/// The governor of `cpu`.
pub fn read(cpu: u32) -> Result<String, ActionError> {
    let path = cpufreq(cpu).join("scaling_governor");
    Ok(normalise(&super::read_file(
        &path,
        &format!("the governor of cpu{cpu}"),
    )?))
}

pub fn write(cpu: u32, governor: &str) -> Result<(), ActionError> {
    let path = cpufreq(cpu).join("scaling_governor");
    super::write_file(&path, governor, &format!("the governor of cpu{cpu}"))
}

/// The error when `cpu` has no cpufreq directory.
fn no_cpufreq(cpu: u32) -> ActionError {
    ActionError::Unavailable(format!(
        "this machine exposes no cpufreq ({} does not exist): it has no CPU frequency scaling \
         driver, as is usual in a virtual machine, where the hypervisor controls the CPU \
         frequency; the cpu_governor action cannot work here, remove it from the rule",
        cpufreq(cpu).display()
    ))
}

/// Sets the scaling governor of some CPUs.
#[derive(Debug)]
pub struct CpuGovernor {
    governor: String,
    /// `None`: every CPU online when planned.
    cpus: Option<CpuList>,
}

impl CpuGovernor {
    pub(super) fn build(action: &FileAction, at: &Range<usize>) -> Result<Self, Invalid> {
        let example = "{ type = \"cpu_governor\", governor = \"performance\" }";
        let governor = required(&action.governor, "governor", "cpu_governor", at, example)?;
        if !GOVERNORS.contains(&governor.get_ref().as_str()) {
            return Err(Invalid::new(
                governor.span(),
                "governor",
                format!(
                    "unknown CPU governor {:?}; the governors are: {}",
                    governor.get_ref(),
                    GOVERNORS.join(", ")
                ),
            ));
        }
        let cpus = action
            .cpus
            .as_ref()
            .map(|cpus| {
                online_list(cpus.get_ref()).map_err(|m| Invalid::new(cpus.span(), "cpus", m))
            })
            .transpose()?;
        Ok(Self {
            governor: governor.get_ref().clone(),
            cpus,
        })
    }
}

/// A configured CPU list (`"0-3,8"`, or one CPU as an integer), checked against the CPUs online
/// now.
pub(super) fn online_list(value: &Scalar) -> Result<CpuList, String> {
    let list = CpuList::parse(&value.text())?;
    let online = CpuList::online().map_err(|e| e.to_string())?;
    if let Some(missing) = list.missing_from(&online) {
        return Err(format!(
            "CPU {missing} of {list} is not online (online CPUs: {online})"
        ));
    }
    Ok(list)
}

impl Action for CpuGovernor {
    fn kind(&self) -> &'static str {
        "cpu_governor"
    }

    fn describe(&self) -> String {
        match &self.cpus {
            Some(cpus) => format!("cpu_governor {} on CPUs {cpus}", self.governor),
            None => format!("cpu_governor {} on every online CPU", self.governor),
        }
    }

    fn plan(&self, _breach: &Breach) -> Result<Vec<Step>, ActionError> {
        let online = CpuList::online()?;
        let cpus = self.cpus.clone().unwrap_or_else(|| online.clone());
        if let Some(missing) = cpus.missing_from(&online) {
            return Err(ActionError::Unavailable(format!(
                "CPU {missing} is not online any more (online CPUs: {online})"
            )));
        }
        let mut steps = Vec::new();
        for cpu in cpus.iter() {
            if !cpufreq(cpu).exists() {
                return Err(no_cpufreq(cpu));
            }
            let path = cpufreq(cpu).join("scaling_available_governors");
            let available = normalise(&super::read_file(
                &path,
                &format!("the governors of cpu{cpu}"),
            )?);
            if !available.split(' ').any(|g| g == self.governor) {
                return Err(ActionError::Unavailable(format!(
                    "cpu{cpu} does not offer the governor {:?} (it offers: {available}; its \
                     cpufreq driver decides which)",
                    self.governor
                )));
            }
            steps.push(Step::Set {
                knob: Knob::CpuGovernor { cpu },
                value: self.governor.clone(),
            });
        }
        Ok(steps)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{breach, built, invalid};
    use super::super::{Per, Target};
    use super::*;

    #[test]
    fn governors_and_cpus_are_checked() {
        let online = CpuList::online().unwrap();
        for (snippet, field, message, at) in [
            (
                r#"{ type = "cpu_governor", governor = "turbo" }"#.to_owned(),
                "governor",
                "unknown CPU governor \"turbo\"; the governors are: performance, powersave, \
                 schedutil, ondemand, conservative, userspace"
                    .to_owned(),
                "\"turbo\"",
            ),
            (
                r#"{ type = "cpu_governor", governor = "performance", cpus = "0-1023" }"#
                    .to_owned(),
                "cpus",
                format!(
                    "CPU {} of 0-1023 is not online (online CPUs: {online})",
                    CpuList::parse("0-1023")
                        .unwrap()
                        .missing_from(&online)
                        .unwrap()
                ),
                "\"0-1023\"",
            ),
            (
                r#"{ type = "cpu_governor", governor = "performance", cpus = "all" }"#.to_owned(),
                "cpus",
                "\"all\" in \"all\" is not a CPU number; write CPUs as a list such as \"0-3,8\""
                    .to_owned(),
                "\"all\"",
            ),
            (
                r#"{ type = "cpu_governor", cpus = 0 }"#.to_owned(),
                "governor",
                "a cpu_governor action needs `governor`, e.g. { type = \"cpu_governor\", \
                 governor = \"performance\" }"
                    .to_owned(),
                r#"{ type = "cpu_governor", cpus = 0 }"#,
            ),
        ] {
            assert_eq!(
                invalid(&snippet, Per::Host),
                (field, message, at.to_owned()),
                "{snippet}"
            );
        }
    }

    /// Without cpufreq (this test machine is a VM), planning says the action cannot work here;
    /// with it, the governor of each CPU round-trips.
    #[test]
    fn the_governor_round_trips_or_the_missing_cpufreq_is_explained() {
        let online = CpuList::online().unwrap();
        let first = online.iter().next().unwrap();
        let action = built(
            r#"{ type = "cpu_governor", governor = "performance" }"#,
            Per::Host,
        );
        if !cpufreq(first).exists() {
            let err = action.plan(&breach(Target::Host)).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "this machine exposes no cpufreq (/sys/devices/system/cpu/cpu{first}/cpufreq \
                     does not exist): it has no CPU frequency scaling driver, as is usual in a \
                     virtual machine, where the hypervisor controls the CPU frequency; the \
                     cpu_governor action cannot work here, remove it from the rule"
                )
            );
            let err = Knob::CpuGovernor { cpu: first }.read().unwrap_err();
            assert!(err.to_string().starts_with(&format!(
                "read the governor of cpu{first} \
                 (/sys/devices/system/cpu/cpu{first}/cpufreq/scaling_governor): "
            )));
            return;
        }
        observer_tests::require_root!();
        let knob = Knob::CpuGovernor { cpu: first };
        let original = knob.read().unwrap();
        let available =
            std::fs::read_to_string(cpufreq(first).join("scaling_available_governors")).unwrap();
        let Some(other) = available.split_whitespace().find(|g| *g != original) else {
            observer_tests::skip_or_fail!("cpu{first} offers only the governor {original}");
        };
        /// Puts the original governor back even if an assertion fails.
        struct Restore(Knob, String);
        impl Drop for Restore {
            fn drop(&mut self) {
                let _ = self.0.write(&self.1);
            }
        }
        let _restore = Restore(knob.clone(), original.clone());
        let action = built(
            &format!(r#"{{ type = "cpu_governor", governor = "{other}", cpus = {first} }}"#),
            Per::Host,
        );
        let steps = action.plan(&breach(Target::Host)).unwrap();
        assert_eq!(
            steps,
            [Step::Set {
                knob: knob.clone(),
                value: other.to_owned()
            }]
        );
        knob.write(other).unwrap();
        assert_eq!(knob.read().unwrap(), other);
        knob.write(&original).unwrap();
        assert_eq!(knob.read().unwrap(), original);
    }
}
