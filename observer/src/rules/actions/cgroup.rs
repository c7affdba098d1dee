//! `cgroup`: sets a cgroup v2 interface file (`cpu.weight`, `cpu.weight.nice`, `io.weight`,
//! `cpu.max`) of the offending cgroup (per-cgroup rules, or the cgroup of the offending process)
//! or of a configured one. Never the root cgroup, whose files these are not (and whose processes
//! are the whole machine).
//!
//! Cgroup paths (`/system.slice/db.service`) are relative to the cgroup2 mount, found in
//! /proc/self/mountinfo: /sys/fs/cgroup on a unified system, often /sys/fs/cgroup/unified on a
//! hybrid one.

use std::{ops::Range, path::Path};

use super::{
    Action, ActionError, Breach, FileAction, Invalid, Knob, Scalar, Step, Target, normalise,
    required,
};

/// Where the cgroup2 hierarchy is mounted (crate::cgroup finds it in /proc/self/mountinfo).
pub fn cgroup2_mount() -> Result<crate::cgroup::Mount, ActionError> {
    crate::cgroup::Mount::find()
        .map_err(|e| ActionError::Unavailable(format!("{e}; the cgroup action needs cgroup v2")))
}

/// The interface files the action may set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum File {
    CpuWeight,
    CpuWeightNice,
    IoWeight,
    CpuMax,
}

impl File {
    const ALL: [Self; 4] = [
        Self::CpuWeight,
        Self::CpuWeightNice,
        Self::IoWeight,
        Self::CpuMax,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::CpuWeight => "cpu.weight",
            Self::CpuWeightNice => "cpu.weight.nice",
            Self::IoWeight => "io.weight",
            Self::CpuMax => "cpu.max",
        }
    }

    fn controller(self) -> &'static str {
        match self {
            Self::IoWeight => "io",
            _ => "cpu",
        }
    }
}

/// The configured value, checked against its file's bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    /// cpu.weight, cpu.weight.nice, io.weight (its default weight).
    Number(i64),
    /// cpu.max: the quota (`None`: max, no limit) and the period in µs (`None`: keep the
    /// cgroup's).
    CpuMax {
        quota: Option<u64>,
        period: Option<u64>,
    },
}

/// cpu.max bounds, in µs: the kernel's period range is 1 ms to 1 s, and a quota under 1 ms
/// would starve the cgroup.
const MIN_QUOTA: u64 = 1000;
const PERIOD: Range<u64> = 1000..1_000_001;

fn parse_value(file: File, value: &Scalar) -> Result<Value, String> {
    let text = normalise(&value.text());
    let name = file.name();
    let int = |s: &str, what: &str| -> Result<i64, String> {
        s.parse()
            .map_err(|_| format!("{s:?} is not an integer ({name} takes {what})"))
    };
    match file {
        File::CpuWeight | File::IoWeight => {
            let number = match file {
                File::IoWeight => text.strip_prefix("default ").unwrap_or(&text),
                _ => &text,
            };
            let n = int(number, "a weight from 1 to 10000")?;
            if !(1..=10000).contains(&n) {
                return Err(format!("{n} is out of bounds for {name}: use 1 to 10000"));
            }
            Ok(Value::Number(n))
        }
        File::CpuWeightNice => {
            let n = int(&text, "a nice value from -20 to 19")?;
            if !(-20..=19).contains(&n) {
                return Err(format!("{n} is out of bounds for {name}: use -20 to 19"));
            }
            Ok(Value::Number(n))
        }
        File::CpuMax => {
            let how = "cpu.max takes \"max\" (no limit) or \"<quota> <period>\" in microseconds, \
                       e.g. \"50000 100000\" for half a CPU; the period may be left out to keep \
                       the cgroup's";
            let words: Vec<&str> = text.split(' ').collect();
            let (quota, period) = match words[..] {
                [quota] => (quota, None),
                [quota, period] => (quota, Some(period)),
                _ => return Err(how.to_owned()),
            };
            let micros = |s: &str| s.parse::<u64>().map_err(|_| format!("{s:?}: {how}"));
            let period = period.map(micros).transpose()?;
            if let Some(p) = period
                && !PERIOD.contains(&p)
            {
                return Err(format!(
                    "period {p} is out of bounds for cpu.max: use 1000 to 1000000 (1 ms to 1 s)"
                ));
            }
            let quota = match quota {
                "max" => None,
                q => Some(micros(q)?),
            };
            if let Some(q) = quota {
                let most = period.unwrap_or(PERIOD.end - 1) * 1024;
                if !(MIN_QUOTA..=most).contains(&q) {
                    return Err(format!(
                        "quota {q} is out of bounds for cpu.max: use at least {MIN_QUOTA} µs \
                         (1 ms) and at most 1024 periods ({most})"
                    ));
                }
            }
            Ok(Value::CpuMax { quota, period })
        }
    }
}

/// The value of a cgroup file. `io.weight` is only its `default N` line: per-device weights are
/// not ours to change (and the whole file could not be written back in one write).
pub fn read(dir: &Path, file: &str) -> Result<String, ActionError> {
    let text = read_cgroup_file(dir, file)?;
    if file == "io.weight"
        && let Some(line) = text.lines().find(|l| l.starts_with("default "))
    {
        return Ok(normalise(line));
    }
    Ok(normalise(&text))
}

pub fn write(dir: &Path, file: &str, value: &str) -> Result<(), ActionError> {
    if !dir.is_dir() {
        return Err(gone(dir));
    }
    super::write_file(
        &dir.join(file),
        value,
        &format!("{file} of cgroup {}", dir.display()),
    )
}

fn read_cgroup_file(dir: &Path, file: &str) -> Result<String, ActionError> {
    if !dir.is_dir() {
        return Err(gone(dir));
    }
    super::read_file(
        &dir.join(file),
        &format!("{file} of cgroup {}", dir.display()),
    )
}

fn gone(dir: &Path) -> ActionError {
    ActionError::Gone(format!("cgroup {} no longer exists", dir.display()))
}

/// A cgroup path as configured: relative to the cgroup2 mount, not the root, without `.` or
/// `..`. Returns it without leading or trailing slashes.
fn check_path(path: &str) -> Result<String, String> {
    if path.starts_with("/sys/fs/cgroup") {
        return Err(format!(
            "write the cgroup's path relative to the cgroup2 mount, e.g. \
             \"system.slice/db.service\", not {path:?}"
        ));
    }
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Err(
            "the cgroup action never acts on the root cgroup; name a cgroup below it, \
                    e.g. \"system.slice/db.service\""
                .to_owned(),
        );
    }
    if trimmed
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "{path:?} is not a plain cgroup path (no empty, \".\" or \"..\" parts); write it as \
             \"parent/child\""
        ));
    }
    Ok(trimmed.to_owned())
}

/// Why `file` does not exist in cgroup `dir` (under the cgroup2 `mount`), and how to fix it.
fn missing_file(mount: &Path, dir: &Path, file: File) -> ActionError {
    let controller = file.controller();
    let has = |path: &Path| {
        std::fs::read_to_string(path)
            .is_ok_and(|text| text.split_whitespace().any(|c| c == controller))
    };
    let name = file.name();
    if !has(&mount.join("cgroup.controllers")) {
        let v1 = v1_hierarchy(controller)
            .map(|_| {
                format!(
                    ": the {controller} controller is bound to a cgroup v1 hierarchy on this \
                     machine (legacy or hybrid cgroup mode), and a controller is in one \
                     hierarchy only; the cgroup action needs it on cgroup v2 (boot with \
                     systemd.unified_cgroup_hierarchy=1)"
                )
            })
            .unwrap_or_else(|| format!(": this kernel has no {controller} controller"));
        return ActionError::Unavailable(format!(
            "the {controller} controller, which provides {name}, is not available in the \
             cgroup2 hierarchy at {} (see its cgroup.controllers){v1}",
            mount.display()
        ));
    }
    if !has(&dir.join("cgroup.controllers")) {
        // The highest ancestor that does not pass the controller down is the one to change
        // first (each level can only enable what its parent enabled).
        let mut ancestor = mount.to_path_buf();
        let relative = dir.strip_prefix(mount).unwrap_or(dir);
        for part in relative.parent().into_iter().flat_map(Path::components) {
            if !has(&ancestor.join("cgroup.subtree_control")) {
                break;
            }
            ancestor.push(part);
        }
        let parent = dir.parent().unwrap_or(mount);
        let below = if ancestor == parent {
            String::new()
        } else {
            format!(
                ", then in each cgroup.subtree_control below it down to {}",
                parent.display()
            )
        };
        return ActionError::Unavailable(format!(
            "the {controller} controller is not enabled for cgroup {}, so it has no {name}: \
             enable it with `echo +{controller} > {}/cgroup.subtree_control`{below}",
            dir.display(),
            ancestor.display()
        ));
    }
    ActionError::Unavailable(format!(
        "cgroup {} has the {controller} controller but no {name}: this kernel was built \
         without it",
        dir.display()
    ))
}

/// The cgroup v1 hierarchy `controller` is bound to, if any (the second column of
/// /proc/cgroups; 0 for cgroup v2 or none).
fn v1_hierarchy(controller: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/cgroups").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next() == Some(controller))
            .then(|| fields.next()?.parse().ok())
            .flatten()
            .filter(|h| *h != 0)
    })
}

/// Sets one interface file of a cgroup.
#[derive(Debug)]
pub struct CgroupAction {
    file: File,
    value: Value,
    /// Relative to the cgroup2 mount, without leading slash; `None`: the offending cgroup.
    path: Option<String>,
}

impl CgroupAction {
    pub(super) fn build(action: &FileAction, at: &Range<usize>) -> Result<Self, Invalid> {
        let example = "{ type = \"cgroup\", file = \"cpu.weight\", value = 50 }";
        let file = required(&action.file, "file", "cgroup", at, example)?;
        let value = required(&action.value, "value", "cgroup", at, example)?;
        let Some(kind) = File::ALL.into_iter().find(|f| f.name() == file.get_ref()) else {
            let names: Vec<_> = File::ALL.iter().map(|f| f.name()).collect();
            return Err(Invalid::new(
                file.span(),
                "file",
                format!(
                    "the cgroup action cannot set {:?}; it sets: {}",
                    file.get_ref(),
                    names.join(", ")
                ),
            ));
        };
        let parsed = parse_value(kind, value.get_ref())
            .map_err(|m| Invalid::new(value.span(), "value", m))?;
        let path = action
            .path
            .as_ref()
            .map(|p| check_path(p.get_ref()).map_err(|m| Invalid::new(p.span(), "path", m)))
            .transpose()?;
        Ok(Self {
            file: kind,
            value: parsed,
            path,
        })
    }

    /// The text to write: the kernel's form of the configured value (`current` reads the file,
    /// for cpu.max's period when none is configured).
    fn planned(
        &self,
        current: impl FnOnce() -> Result<String, ActionError>,
    ) -> Result<String, ActionError> {
        Ok(match &self.value {
            Value::Number(n) if self.file == File::IoWeight => format!("default {n}"),
            Value::Number(n) => n.to_string(),
            Value::CpuMax { quota, period } => {
                let quota = quota.map_or("max".to_owned(), |q| q.to_string());
                let period = match period {
                    Some(p) => p.to_string(),
                    // The kernel shows "<quota> <period>"; keep the cgroup's period.
                    None => {
                        let now = current()?;
                        now.split(' ')
                            .nth(1)
                            .map(str::to_owned)
                            .ok_or_else(|| ActionError::Io {
                                what: "read the period of cpu.max".to_owned(),
                                source: std::io::Error::other(format!("unexpected {now:?}")),
                            })?
                    }
                };
                format!("{quota} {period}")
            }
        })
    }
}

impl Action for CgroupAction {
    fn kind(&self) -> &'static str {
        "cgroup"
    }

    fn describe(&self) -> String {
        let value = match &self.value {
            Value::Number(n) => n.to_string(),
            Value::CpuMax { quota, period } => {
                let quota = quota.map_or("max".to_owned(), |q| q.to_string());
                period.map_or(quota.clone(), |p| format!("{quota} {p}"))
            }
        };
        match &self.path {
            Some(path) => format!("cgroup {}={value} of /{path}", self.file.name()),
            None => format!(
                "cgroup {}={value} of the offending cgroup",
                self.file.name()
            ),
        }
    }

    fn plan(&self, breach: &Breach) -> Result<Vec<Step>, ActionError> {
        let relative = match (&self.path, &breach.target) {
            (Some(path), _) => path.clone(),
            (None, Target::Cgroup { path, .. }) => path.clone(),
            (None, Target::Process { cgroup_path, .. }) => cgroup_path.clone(),
            (None, other) => {
                return Err(ActionError::Unavailable(format!(
                    "a cgroup action without a path acts on the offending cgroup, but this \
                     breach is about {other:?}; set `path`"
                )));
            }
        };
        if relative.trim_matches('/').is_empty() {
            return Err(ActionError::Unavailable(
                "the offending cgroup is the root cgroup, which the cgroup action never changes"
                    .to_owned(),
            ));
        }
        let relative = check_path(&relative).map_err(ActionError::Unavailable)?;
        let mount = cgroup2_mount()?;
        let dir = mount.dir_of(&relative).ok_or_else(|| {
            ActionError::Unavailable(format!(
                "cgroup {relative} is outside the cgroup tree mounted at {} (mounted from {})",
                mount.point.display(),
                mount.root
            ))
        })?;
        let mount = mount.point;
        if !dir.is_dir() {
            return Err(gone(&dir));
        }
        if !dir.join(self.file.name()).exists() {
            return Err(missing_file(&mount, &dir, self.file));
        }
        let value = self.planned(|| read(&dir, self.file.name()))?;
        Ok(vec![Step::Set {
            knob: Knob::CgroupFile {
                path: dir,
                file: self.file.name().to_owned(),
            },
            value,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{breach, built, invalid};
    use super::super::{Per, Target};
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn the_cgroup2_mount_is_this_machines() {
        let mount = cgroup2_mount().unwrap().point;
        assert!(mount.join("cgroup.controllers").exists(), "{mount:?}");
    }

    #[test]
    fn values_are_checked_and_normalised() {
        let ok = |file: File, value: Scalar| parse_value(file, &value).unwrap();
        let text = |s: &str| Scalar::Text(s.to_owned());
        assert_eq!(ok(File::CpuWeight, Scalar::Integer(50)), Value::Number(50));
        assert_eq!(ok(File::IoWeight, text("default 200")), Value::Number(200));
        assert_eq!(ok(File::IoWeight, text(" 200 ")), Value::Number(200));
        assert_eq!(ok(File::CpuWeightNice, text("-5")), Value::Number(-5));
        assert_eq!(
            ok(File::CpuMax, text("max")),
            Value::CpuMax {
                quota: None,
                period: None
            }
        );
        assert_eq!(
            ok(File::CpuMax, text("50000  100000")),
            Value::CpuMax {
                quota: Some(50000),
                period: Some(100000)
            }
        );
        for (file, value, message) in [
            (
                File::CpuWeight,
                text("heavy"),
                "\"heavy\" is not an integer (cpu.weight takes a weight from 1 to 10000)",
            ),
            (
                File::CpuWeight,
                Scalar::Integer(0),
                "0 is out of bounds for cpu.weight: use 1 to 10000",
            ),
            (
                File::IoWeight,
                text("default 20000"),
                "20000 is out of bounds for io.weight: use 1 to 10000",
            ),
            (
                File::CpuWeightNice,
                Scalar::Integer(20),
                "20 is out of bounds for cpu.weight.nice: use -20 to 19",
            ),
            (
                File::CpuMax,
                text("1 2 3"),
                "cpu.max takes \"max\" (no limit) or \"<quota> <period>\" in microseconds, e.g. \
                 \"50000 100000\" for half a CPU; the period may be left out to keep the \
                 cgroup's",
            ),
            (
                File::CpuMax,
                text("500 100000"),
                "quota 500 is out of bounds for cpu.max: use at least 1000 µs (1 ms) and at \
                 most 1024 periods (102400000)",
            ),
            (
                File::CpuMax,
                text("50000 100"),
                "period 100 is out of bounds for cpu.max: use 1000 to 1000000 (1 ms to 1 s)",
            ),
            (
                File::CpuMax,
                text("half"),
                "\"half\": cpu.max takes \"max\" (no limit) or \"<quota> <period>\" in \
                 microseconds, e.g. \"50000 100000\" for half a CPU; the period may be left out \
                 to keep the cgroup's",
            ),
        ] {
            assert_eq!(parse_value(file, &value).unwrap_err(), message, "{value:?}");
        }
    }

    #[test]
    fn files_paths_and_the_root_are_checked() {
        for (snippet, field, message, at) in [
            (
                r#"{ type = "cgroup", file = "memory.max", value = "1G" }"#,
                "file",
                "the cgroup action cannot set \"memory.max\"; it sets: cpu.weight, \
                 cpu.weight.nice, io.weight, cpu.max",
                "\"memory.max\"",
            ),
            (
                r#"{ type = "cgroup", file = "cpu.weight", value = 50, path = "/" }"#,
                "path",
                "the cgroup action never acts on the root cgroup; name a cgroup below it, e.g. \
                 \"system.slice/db.service\"",
                "\"/\"",
            ),
            (
                r#"{ type = "cgroup", file = "cpu.weight", value = 50, path = "a/../../etc" }"#,
                "path",
                "\"a/../../etc\" is not a plain cgroup path (no empty, \".\" or \"..\" parts); \
                 write it as \"parent/child\"",
                "\"a/../../etc\"",
            ),
            (
                r#"{ type = "cgroup", file = "cpu.weight", value = 50, path = "/sys/fs/cgroup/a" }"#,
                "path",
                "write the cgroup's path relative to the cgroup2 mount, e.g. \
                 \"system.slice/db.service\", not \"/sys/fs/cgroup/a\"",
                "\"/sys/fs/cgroup/a\"",
            ),
            (
                r#"{ type = "cgroup", file = "cpu.weight" }"#,
                "value",
                "a cgroup action needs `value`, e.g. { type = \"cgroup\", file = \
                 \"cpu.weight\", value = 50 }",
                r#"{ type = "cgroup", file = "cpu.weight" }"#,
            ),
        ] {
            assert_eq!(
                invalid(snippet, Per::Cgroup),
                (field, message.to_owned(), at.to_owned()),
                "{snippet}"
            );
        }
        let action = built(
            r#"{ type = "cgroup", file = "cpu.weight", value = 50 }"#,
            Per::Cgroup,
        );
        let root = Target::Cgroup {
            id: 1,
            path: "/".to_owned(),
        };
        assert_eq!(
            action.plan(&breach(root)).unwrap_err().to_string(),
            "the offending cgroup is the root cgroup, which the cgroup action never changes"
        );
        let gone = Target::Process {
            pid: 1,
            name: "x".to_owned(),
            cgroup_path: "/no/such/cgroup/here".to_owned(),
        };
        let err = action.plan(&breach(gone)).unwrap_err();
        assert!(matches!(err, ActionError::Gone(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "cgroup {} no longer exists",
                cgroup2_mount()
                    .unwrap()
                    .point
                    .join("no/such/cgroup/here")
                    .display()
            )
        );
    }

    /// A directory tree shaped like cgroupfs (cgroup.controllers and cgroup.subtree_control
    /// files), to check which cgroup.subtree_control the message names.
    #[test]
    fn a_disabled_controller_names_the_subtree_control_to_change() {
        let tmp = std::env::temp_dir().join(observer_tests::unique_name("cgroup-fixture"));
        struct Remove(PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _remove = Remove(tmp.clone());
        let put = |rel: &str, controllers: &str, subtree: &str| {
            let dir = tmp.join(rel);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
            std::fs::write(dir.join("cgroup.subtree_control"), subtree).unwrap();
        };
        put("", "cpu io memory\n", "cpu memory\n");
        put("a", "cpu memory\n", "memory\n");
        put("a/b", "memory\n", "\n");
        put("a/b/c", "\n", "\n");
        let message = |rel: &str, file: File| missing_file(&tmp, &tmp.join(rel), file).to_string();
        let t = tmp.display();
        assert_eq!(
            message("a/b", File::CpuWeight),
            format!(
                "the cpu controller is not enabled for cgroup {t}/a/b, so it has no cpu.weight: \
                 enable it with `echo +cpu > {t}/a/cgroup.subtree_control`"
            )
        );
        assert_eq!(
            message("a/b/c", File::CpuMax),
            format!(
                "the cpu controller is not enabled for cgroup {t}/a/b/c, so it has no cpu.max: \
                 enable it with `echo +cpu > {t}/a/cgroup.subtree_control`, then in each \
                 cgroup.subtree_control below it down to {t}/a/b"
            )
        );
        assert_eq!(
            message("a", File::IoWeight),
            format!(
                "the io controller is not enabled for cgroup {t}/a, so it has no io.weight: \
                 enable it with `echo +io > {t}/cgroup.subtree_control`"
            )
        );
        assert_eq!(
            message("a", File::CpuWeight),
            format!(
                "cgroup {t}/a has the cpu controller but no cpu.weight: this kernel was built \
                 without it"
            )
        );
        put("", "memory\n", "memory\n");
        let v1 = if v1_hierarchy("cpu").is_some() {
            ": the cpu controller is bound to a cgroup v1 hierarchy on this machine (legacy or \
             hybrid cgroup mode), and a controller is in one hierarchy only; the cgroup action \
             needs it on cgroup v2 (boot with systemd.unified_cgroup_hierarchy=1)"
        } else {
            ""
        };
        let expected = format!(
            "the cpu controller, which provides cpu.weight, is not available in the cgroup2 \
             hierarchy at {t} (see its cgroup.controllers){v1}"
        );
        if v1.is_empty() {
            // On a unified machine the kernel has a cpu controller; only the fixture lacks it.
            assert!(
                message("a", File::CpuWeight).starts_with(&expected),
                "{}",
                message("a", File::CpuWeight)
            );
        } else {
            assert_eq!(message("a", File::CpuWeight), expected);
        }
    }

    /// A cgroup the test creates under the cgroup2 mount, removed on drop.
    struct TestCgroup {
        dir: PathBuf,
        relative: String,
    }

    impl TestCgroup {
        fn create() -> Self {
            let relative = observer_tests::unique_name("observer-test");
            let dir = cgroup2_mount().unwrap().point.join(&relative);
            std::fs::create_dir(&dir).unwrap();
            Self {
                dir,
                relative: format!("/{relative}"),
            }
        }
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }

    /// Restores a cgroup.subtree_control line the test changed.
    struct SubtreeControl {
        file: PathBuf,
        undo: Option<String>,
    }

    impl Drop for SubtreeControl {
        fn drop(&mut self) {
            if let Some(undo) = &self.undo {
                let _ = std::fs::write(&self.file, undo);
            }
        }
    }

    /// cpu.weight and cpu.max of a cgroup the test creates: set, read back and restored where
    /// the cgroup2 hierarchy has the cpu controller; where it does not (this test VM binds cpu
    /// to cgroup v1), planning explains why, and the knob's read and write round-trip on a
    /// cgroup2 file every cgroup has (cgroup.max.descendants).
    #[test]
    fn cgroup_files_round_trip_on_a_cgroup_the_test_creates() {
        observer_tests::require_root!();
        let mount = cgroup2_mount().unwrap().point;
        let root_has_cpu = std::fs::read_to_string(mount.join("cgroup.controllers"))
            .unwrap()
            .split_whitespace()
            .any(|c| c == "cpu");
        let subtree = mount.join("cgroup.subtree_control");
        let _enabled = if root_has_cpu
            && !std::fs::read_to_string(&subtree)
                .unwrap()
                .split_whitespace()
                .any(|c| c == "cpu")
        {
            std::fs::write(&subtree, "+cpu").unwrap();
            SubtreeControl {
                file: subtree,
                undo: Some("-cpu".to_owned()),
            }
        } else {
            SubtreeControl {
                file: subtree,
                undo: None,
            }
        };
        let cgroup = TestCgroup::create();
        let target = Target::Cgroup {
            id: 0,
            path: cgroup.relative.clone(),
        };
        let weight = built(
            r#"{ type = "cgroup", file = "cpu.weight", value = 250 }"#,
            Per::Cgroup,
        );
        if !root_has_cpu {
            let err = weight.plan(&breach(target)).unwrap_err();
            assert_eq!(
                err.to_string(),
                missing_file(&mount, &cgroup.dir, File::CpuWeight).to_string()
            );
            assert!(
                err.to_string().starts_with(&format!(
                    "the cpu controller, which provides cpu.weight, is not available in the \
                     cgroup2 hierarchy at {}",
                    mount.display()
                )),
                "{err}"
            );
            let knob = Knob::CgroupFile {
                path: cgroup.dir.clone(),
                file: "cgroup.max.descendants".to_owned(),
            };
            assert_eq!(knob.read().unwrap(), "max");
            knob.write("7").unwrap();
            assert_eq!(knob.read().unwrap(), "7");
            knob.write("max").unwrap();
            assert_eq!(knob.read().unwrap(), "max");
            return;
        }
        let steps = weight.plan(&breach(target.clone())).unwrap();
        let knob = Knob::CgroupFile {
            path: cgroup.dir.clone(),
            file: "cpu.weight".to_owned(),
        };
        assert_eq!(
            steps,
            [Step::Set {
                knob: knob.clone(),
                value: "250".to_owned()
            }]
        );
        let original = knob.read().unwrap();
        knob.write("250").unwrap();
        assert_eq!(knob.read().unwrap(), "250");
        knob.write(&original).unwrap();
        assert_eq!(knob.read().unwrap(), original);

        // cpu.max: "max" and a quota alone keep the cgroup's period.
        let cpu_max = Knob::CgroupFile {
            path: cgroup.dir.clone(),
            file: "cpu.max".to_owned(),
        };
        let original = cpu_max.read().unwrap();
        let period = original.split(' ').nth(1).unwrap().to_owned();
        for (value, planned) in [
            ("\"20000\"", format!("20000 {period}")),
            ("\"30000 50000\"", "30000 50000".to_owned()),
            ("\"max\"", "max 50000".to_owned()),
        ] {
            let action = built(
                &format!(r#"{{ type = "cgroup", file = "cpu.max", value = {value} }}"#),
                Per::Cgroup,
            );
            let steps = action.plan(&breach(target.clone())).unwrap();
            assert_eq!(
                steps,
                [Step::Set {
                    knob: cpu_max.clone(),
                    value: planned.clone()
                }],
                "{value}"
            );
            cpu_max.write(&planned).unwrap();
            assert_eq!(cpu_max.read().unwrap(), planned, "{value}");
        }
        cpu_max.write(&original).unwrap();
        assert_eq!(cpu_max.read().unwrap(), original);
    }
}
