//! Sidecar mode: every signal restricted to one cgroup subtree, the scope.
//!
//! A scope is written `self` (the cgroup observer runs in: in a container with its own cgroup
//! namespace, the container), `pod` (the nearest Kubernetes pod cgroup above observer's own, so a
//! sidecar sees its whole pod), or a path relative to the cgroup2 mount
//! (`/system.slice/nginx.service`). It is resolved to the cgroup's directory, whose descriptor
//! the kernel programs are given (observer_common::scope): the check compares cgroups in the
//! kernel, so it holds in any cgroup namespace.

use std::{
    fmt, fs,
    os::unix::fs::{DirEntryExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    str::FromStr,
};

use crate::cgroup::{Mount, MountError, Workload};

/// The cgroup v2 root's id: the root of the whole hierarchy, i.e. the whole host.
const ROOT_ID: u64 = 1;

/// How deep the search for observer's own cgroup in a view of the whole hierarchy goes.
const MAX_WALK_DEPTH: usize = 16;

/// A scope as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeSpec {
    /// The cgroup observer runs in.
    Own,
    /// The nearest Kubernetes pod cgroup at or above observer's own.
    Pod,
    /// A cgroup by its path relative to the cgroup2 mount, starting with `/`.
    Path(String),
}

impl FromStr for ScopeSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "self" => Ok(Self::Own),
            "pod" => Ok(Self::Pod),
            p if p.starts_with('/') && !p.split('/').any(|c| c == "..") => {
                Ok(Self::Path(p.trim_end_matches('/').to_owned()).normalised())
            }
            other => Err(format!(
                "invalid scope {other:?}: use \"self\" (observer's own cgroup), \"pod\" (its \
                 Kubernetes pod) or a cgroup path starting with / relative to the cgroup2 \
                 mount, e.g. /system.slice/nginx.service (without ..)"
            )),
        }
    }
}

impl ScopeSpec {
    fn normalised(self) -> Self {
        match self {
            Self::Path(p) if p.is_empty() => Self::Path("/".into()),
            other => other,
        }
    }
}

impl fmt::Display for ScopeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Own => f.write_str("self"),
            Self::Pod => f.write_str("pod"),
            Self::Path(p) => f.write_str(p),
        }
    }
}

/// Resolving a scope failed.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("a scope needs cgroup v2: {0}")]
    Mount(#[from] MountError),
    #[error(
        "scope {path}: no such cgroup ({dir} does not exist); a path is relative to the cgroup2 \
         mount {mount}, e.g. /system.slice/nginx.service"
    )]
    NoSuchCgroup {
        path: String,
        dir: PathBuf,
        mount: PathBuf,
    },
    #[error("scope {path}: opening {dir}: {source}")]
    Open {
        path: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("scope {spec}: reading /proc/self/cgroup: {source}")]
    OwnCgroup {
        spec: ScopeSpec,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "scope {0}: observer is in no cgroup v2 cgroup (no 0:: line in /proc/self/cgroup): \
         cgroup v2 is needed"
    )]
    NoV2Cgroup(ScopeSpec),
    #[error(
        "scope {spec}: observer's cgroup {path} is not under any cgroup2 mount of this mount \
         namespace; mount the cgroup2 file system (read-only is enough)"
    )]
    OwnNotVisible { spec: ScopeSpec, path: String },
    #[error(
        "scope pod: observer's cgroup {path} is in no Kubernetes pod (no kubepods pod cgroup on \
         its path, nor in a read-only view of the node's /sys/fs/cgroup); outside Kubernetes use \
         \"self\" or a path"
    )]
    NoPod { path: String },
    #[error(
        "scope {spec} is the root of the cgroup hierarchy, that is the whole host: leave the \
         scope unset for that"
    )]
    WholeHost { spec: ScopeSpec },
}

/// A resolved scope: the cgroup every signal is restricted to.
#[derive(Debug)]
pub struct Scope {
    pub spec: ScopeSpec,
    /// Its directory under a cgroup2 mount.
    pub dir: PathBuf,
    /// Its cgroup id (the directory's inode number).
    pub id: u64,
    /// The directory, open: what the kernel programs' cgroup array is given.
    pub file: fs::File,
}

impl Scope {
    /// Finds the cgroup of `spec` on this machine.
    pub fn resolve(spec: &ScopeSpec) -> Result<Self, ScopeError> {
        let dir = match spec {
            ScopeSpec::Path(path) => {
                let mount = Mount::find()?;
                let dir = mount.point.join(path.trim_start_matches('/'));
                if !dir.is_dir() {
                    return Err(ScopeError::NoSuchCgroup {
                        path: path.clone(),
                        dir,
                        mount: mount.point,
                    });
                }
                dir
            }
            ScopeSpec::Own | ScopeSpec::Pod => {
                let text = fs::read_to_string("/proc/self/cgroup").map_err(|source| {
                    ScopeError::OwnCgroup {
                        spec: spec.clone(),
                        source,
                    }
                })?;
                let own = text
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .ok_or_else(|| ScopeError::NoV2Cgroup(spec.clone()))?;
                let mountinfo = fs::read_to_string("/proc/self/mountinfo")
                    .map_err(|e| ScopeError::Mount(MountError::Read(e)))?;
                let mounts = cgroup2_mounts(&mountinfo);
                if mounts.is_empty() {
                    return Err(MountError::NotMounted.into());
                }
                own_or_pod(spec, own, &mounts)?
            }
        };
        let file = fs::File::open(&dir).map_err(|source| ScopeError::Open {
            path: spec.to_string(),
            dir: dir.clone(),
            source,
        })?;
        let id = file
            .metadata()
            .map_err(|source| ScopeError::Open {
                path: spec.to_string(),
                dir: dir.clone(),
                source,
            })?
            .ino();
        if id == ROOT_ID {
            return Err(ScopeError::WholeHost { spec: spec.clone() });
        }
        Ok(Self {
            spec: spec.clone(),
            dir,
            id,
            file,
        })
    }

    /// How the scope is shown: the spec, and the directory it resolved to when they differ.
    pub fn describe(&self) -> String {
        match &self.spec {
            ScopeSpec::Path(p) => p.clone(),
            spec => format!("{spec} ({})", self.dir.display()),
        }
    }
}

/// A cgroup2 mount: its point, and its root in this process's cgroup namespace (`None` when the
/// root is outside it, shown as `/..`: a view of a larger part of the hierarchy, like the
/// node's /sys/fs/cgroup mounted into a container).
#[derive(Debug, PartialEq, Eq)]
struct View {
    point: PathBuf,
    root: Option<String>,
}

/// Every cgroup2 mount in a mountinfo text (`proc_pid_mountinfo(5)`).
fn cgroup2_mounts(mountinfo: &str) -> Vec<View> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if right.split(' ').next()? != "cgroup2" {
                return None;
            }
            let mut fields = left.split(' ');
            let root = fields.nth(3)?;
            let point = fields.next()?;
            Some(View {
                point: PathBuf::from(unescape_spaces(point)),
                root: (!root.split('/').any(|c| c == "..")).then(|| unescape_spaces(root)),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal; cgroup and mount paths seldom
/// have them, but a space in a path must not cut it.
fn unescape_spaces(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The directory of `path` (a hierarchy path in this cgroup namespace) under a mount whose
/// root is `root`.
fn dir_under(view: &View, path: &str) -> Option<PathBuf> {
    let root = view.root.as_deref()?.trim_end_matches('/');
    let rel = path.strip_prefix(root)?;
    if !(rel.is_empty() || rel.starts_with('/')) {
        return None;
    }
    Some(view.point.join(rel.trim_start_matches('/')))
}

/// The pod cgroup on a path: the shortest prefix of `path` that is a pod (the pod's own
/// directory; its containers are below it).
fn pod_prefix(path: &str) -> Option<String> {
    let mut prefix = String::new();
    for component in path.split('/').filter(|c| !c.is_empty()) {
        prefix.push('/');
        prefix.push_str(component);
        if Workload::from_path(&prefix).pod.is_some() {
            return Some(prefix);
        }
    }
    None
}

/// Observer's own cgroup directory, or its pod's.
fn own_or_pod(spec: &ScopeSpec, own: &str, mounts: &[View]) -> Result<PathBuf, ScopeError> {
    let own_dir = mounts
        .iter()
        .find_map(|m| dir_under(m, own).filter(|d| d.is_dir()))
        .ok_or_else(|| ScopeError::OwnNotVisible {
            spec: spec.clone(),
            path: own.to_owned(),
        })?;
    if *spec == ScopeSpec::Own {
        return Ok(own_dir);
    }
    if let Some(pod) = pod_prefix(own)
        && let Some(dir) = mounts
            .iter()
            .find_map(|m| dir_under(m, &pod).filter(|d| d.is_dir()))
    {
        return Ok(dir);
    }
    // In a container with its own cgroup namespace the pod is above the namespace's root and
    // its path is hidden; a view of the node's hierarchy (its /sys/fs/cgroup mounted read-only)
    // shows it: find observer's own cgroup there by id, then its pod.
    let own_id = fs::metadata(&own_dir).map(|m| m.ino()).ok();
    for view in mounts.iter().filter(|m| m.root.is_none()) {
        if let Some(rel) = own_id.and_then(|id| find_by_id(&view.point, id))
            && let Some(pod) = pod_prefix(&rel)
        {
            return Ok(view.point.join(pod.trim_start_matches('/')));
        }
    }
    Err(ScopeError::NoPod {
        path: own.to_owned(),
    })
}

/// The path (from `top`, starting with `/`) of the directory whose inode is `id`, by a walk.
fn find_by_id(top: &Path, id: u64) -> Option<String> {
    let mut stack = vec![(top.to_owned(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        for entry in fs::read_dir(&dir).ok()?.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path();
            if entry.ino() == id {
                let rel = path.strip_prefix(top).ok()?;
                return Some(format!("/{}", rel.display()));
            }
            if depth < MAX_WALK_DEPTH {
                stack.push((path, depth + 1));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_what_is_accepted() {
        assert_eq!("self".parse(), Ok(ScopeSpec::Own));
        assert_eq!("pod".parse(), Ok(ScopeSpec::Pod));
        assert_eq!(
            "/system.slice/nginx.service/".parse(),
            Ok(ScopeSpec::Path("/system.slice/nginx.service".into()))
        );
        for bad in ["", "container", "system.slice", "/a/../b"] {
            let e = bad.parse::<ScopeSpec>().unwrap_err();
            assert!(e.contains("\"self\"") && e.contains("/system.slice"), "{e}");
        }
    }

    #[test]
    fn mounts_inside_and_outside_the_cgroup_namespace() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n\
31 25 0:26 /../../.. /host/cgroup ro - cgroup2 cgroup rw\n\
32 25 0:27 / /proc rw - proc proc rw\n";
        assert_eq!(
            cgroup2_mounts(mountinfo),
            [
                View {
                    point: "/sys/fs/cgroup".into(),
                    root: Some("/".into())
                },
                View {
                    point: "/host/cgroup".into(),
                    root: None
                },
            ]
        );
        let v = View {
            point: "/sys/fs/cgroup".into(),
            root: Some("/kubepods".into()),
        };
        assert_eq!(
            dir_under(&v, "/kubepods/a"),
            Some("/sys/fs/cgroup/a".into())
        );
        assert_eq!(dir_under(&v, "/kubepods"), Some("/sys/fs/cgroup".into()));
        assert_eq!(dir_under(&v, "/kubepodsx"), None);
        assert_eq!(dir_under(&v, "/other"), None);
    }

    #[test]
    fn the_pod_is_the_shortest_prefix_that_is_a_pod() {
        let uid = "275ecb36-5aa8-4c2a-9c47-d8bb681b9aff";
        let id = "4f1c2b3a".repeat(8);
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            uid.replace('-', "_")
        );
        assert_eq!(
            pod_prefix(&format!("{systemd}/cri-containerd-{id}.scope")),
            Some(systemd.clone())
        );
        assert_eq!(pod_prefix(&systemd), Some(systemd));
        let cgroupfs = format!("/kubepods/besteffort/pod{uid}");
        assert_eq!(pod_prefix(&format!("{cgroupfs}/{id}")), Some(cgroupfs));
        assert_eq!(pod_prefix("/system.slice/observer.service"), None);
        assert_eq!(pod_prefix("/"), None);
    }
}
