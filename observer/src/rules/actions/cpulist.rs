//! CPU lists in the kernel's format (`0-3,8`, as in /sys/devices/system/cpu/online and
//! `taskset -c`), shared by `cpu_governor` and `affinity`.

use std::{collections::BTreeSet, fmt, path::Path};

use super::ActionError;

/// The largest CPU number accepted: `cpu_set_t` (what sched_setaffinity takes here) holds 1024.
pub const MAX_CPU: u32 = 1023;

/// A non-empty set of CPU numbers. Displays in the kernel's form (bitmap_list_string):
/// ascending, every run of consecutive CPUs as a range (`0-2,5,7-8`), so any two equivalent
/// lists display the same, and as the kernel shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(BTreeSet<u32>);

impl CpuList {
    /// Parses `0-3,8` (spaces around items allowed). Errors say what is wrong, for a config
    /// message.
    pub fn parse(text: &str) -> Result<Self, String> {
        let how = "write CPUs as a list such as \"0-3,8\"";
        let mut cpus = BTreeSet::new();
        for item in text.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(format!("{text:?} has an empty item; {how}"));
            }
            let number = |s: &str| -> Result<u32, String> {
                let n: u32 = s
                    .trim()
                    .parse()
                    .map_err(|_| format!("{s:?} in {text:?} is not a CPU number; {how}"))?;
                if n > MAX_CPU {
                    return Err(format!("CPU {n} is above the largest supported, {MAX_CPU}"));
                }
                Ok(n)
            };
            match item.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (number(first)?, number(last)?);
                    if first > last {
                        return Err(format!(
                            "the range {item:?} goes down; write the lower CPU first"
                        ));
                    }
                    cpus.extend(first..=last);
                }
                None => {
                    cpus.insert(number(item)?);
                }
            }
        }
        Ok(Self(cpus))
    }

    /// From CPU numbers; `None` if there are none.
    pub fn from_cpus(cpus: impl IntoIterator<Item = u32>) -> Option<Self> {
        let set: BTreeSet<u32> = cpus.into_iter().collect();
        (!set.is_empty()).then_some(Self(set))
    }

    /// The online CPUs (/sys/devices/system/cpu/online).
    pub fn online() -> Result<Self, ActionError> {
        let path = Path::new("/sys/devices/system/cpu/online");
        let text = super::read_file(path, "the online CPUs")?;
        Self::parse(text.trim()).map_err(|e| ActionError::Io {
            what: format!("parse {}", path.display()),
            source: std::io::Error::other(e),
        })
    }

    /// The CPUs, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    /// Whether `cpu` is in the list.
    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }

    /// The CPUs of `self` that are not in `other`, if any.
    pub fn missing_from(&self, other: &Self) -> Option<Self> {
        Self::from_cpus(self.0.difference(&other.0).copied())
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cpus = self.iter().peekable();
        let mut first_item = true;
        while let Some(start) = cpus.next() {
            let mut end = start;
            while cpus.peek() == Some(&(end + 1)) {
                end = cpus.next().unwrap_or(end);
            }
            if !first_item {
                f.write_str(",")?;
            }
            first_item = false;
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_display_canonically() {
        for (text, shown) in [
            ("0", "0"),
            ("0-3,8", "0-3,8"),
            ("3,2,1,0", "0-3"),
            ("0,1", "0-1"),
            (" 0 - 1 , 5 ", "0-1,5"),
            ("0-2,1-4,9-10", "0-4,9-10"),
            ("7,5", "5,7"),
        ] {
            assert_eq!(CpuList::parse(text).unwrap().to_string(), shown, "{text:?}");
        }
    }

    #[test]
    fn bad_lists_are_explained() {
        for (text, message) in [
            (
                "",
                "\"\" has an empty item; write CPUs as a list such as \"0-3,8\"",
            ),
            (
                "0,,1",
                "\"0,,1\" has an empty item; write CPUs as a list such as \"0-3,8\"",
            ),
            (
                "a",
                "\"a\" in \"a\" is not a CPU number; write CPUs as a list such as \"0-3,8\"",
            ),
            (
                "3-1",
                "the range \"3-1\" goes down; write the lower CPU first",
            ),
            ("1024", "CPU 1024 is above the largest supported, 1023"),
        ] {
            assert_eq!(CpuList::parse(text).unwrap_err(), message, "{text:?}");
        }
    }

    #[test]
    fn online_cpus_include_cpu0() {
        let online = CpuList::online().unwrap();
        assert!(online.contains(0), "{online}");
        let mine = CpuList::parse("0").unwrap();
        assert_eq!(mine.missing_from(&online), None);
        let far = CpuList::parse("0,1023").unwrap();
        assert_eq!(far.missing_from(&online).unwrap().to_string(), "1023");
    }
}
