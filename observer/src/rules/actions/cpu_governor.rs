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
