//! Which workload a cgroup belongs to: a systemd unit and slice, a container, a Kubernetes pod.
//!
//! The kernel programs key their breakdowns by cgroup id (`bpf_get_current_cgroup_id`): on
//! cgroup v2 that is the id of the cgroup's kernfs node, which is also the inode number of the
//! cgroup's directory. Ids are 64-bit and never reused on a 64-bit kernel (kernfs adds a
//! generation above the 32-bit inode allocator), and cgroup v2 directories cannot be renamed, so
//! an id names one path for its whole life. Two parts:
//!
//! - [`Workload::from_path`] reads the path as systemd, the container runtimes and the kubelet
//!   lay it out (pure, unit-tested on every layout);
//! - [`Resolver`] finds the path of an id, with a bounded cache.
//!
//! # How a layout is recognised
//! Each component of the path is looked at with its parent (and grandparent) only, never by
//! where the path starts, so the layouts are found under any prefix: a nested node (kind runs
//! the kubelet inside `/system.slice/docker-<node>.scope/kubelet.slice/...`), a cgroup
//! namespace's root, or a test's own directory. When layouts nest the innermost wins, and a pod
//! found below a container or unit replaces them (they are outside the pod: kind's node).
//!
//! - systemd: the innermost `*.slice` component is the slice, the innermost `*.service`,
//!   `*.scope`, `*.socket`, `*.mount` or `*.swap` component is the unit.
//! - containers, `<id>` being 64 lowercase hex digits: `docker-<id>.scope`,
//!   `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope` (systemd drivers);
//!   `crio-<id>` and `libpod-<id>` (the cgroupfs drivers of CRI-O and podman); `docker/<id>`
//!   (Docker's cgroupfs driver); `<id>` directly in a cgroupfs pod (`kubepods/.../pod<uid>/<id>`,
//!   runtime unknown). The runtimes' monitors (`crio-conmon-<id>.scope`,
//!   `libpod-conmon-<id>.scope`) are not the container: they run outside it.
//! - pods (kubelet's `pkg/kubelet/cm`): with the systemd driver
//!   `kubepods[-<qos>]-pod<uid>.slice` inside `kubepods[-<qos>].slice` (systemd spells `-` in a
//!   name as `_`, turned back here; kind's `kubelet-kubepods-...` prefix too); with the cgroupfs
//!   driver `kubepods/[<qos>/]pod<uid>`. No QoS level means Guaranteed. A uid is a UUID, or 32
//!   hex digits for static pods (the kubelet hashes their manifest).

use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    fs, io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::DirEntryExt as _, fs::MetadataExt as _},
    },
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use serde::Serialize;

/// What a cgroup belongs to, as far as its path tells.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// The cgroup's path in the cgroup v2 hierarchy (`/system.slice/nginx.service`), or `?`
    /// when the id could not be resolved (the cgroup is gone).
    #[serde(rename = "cgroup")]
    pub path: String,
    /// The innermost systemd unit (service, scope...) on the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// The innermost systemd slice on the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub systemd_slice: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
}

/// A container, by the id its runtime gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Container {
    /// `None` where the layout does not say (a bare id in a cgroupfs kubepods pod).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// The full id, 64 hex digits.
    pub id: String,
    /// The container's name in its pod, from the pod list when Kubernetes enrichment is on
    /// ([`crate::kubernetes`]); not in the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The container runtimes whose cgroup layouts are recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Runtime {
    #[serde(rename = "docker")]
    Docker,
    #[serde(rename = "containerd")]
    Containerd,
    #[serde(rename = "cri-o")]
    CriO,
    #[serde(rename = "podman")]
    Podman,
}

impl Runtime {
    /// The `container.runtime.name` value (the OpenTelemetry examples: docker, containerd).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Podman => "podman",
        }
    }
}

/// A Kubernetes pod, by its UID. Its name and namespace are not in the path: they come from
/// the pod list when Kubernetes enrichment is on ([`crate::kubernetes`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pod {
    /// The pod's UID with its dashes (`275ecb36-5aa8-4c2a-9c47-d8bb681b9aff`).
    pub uid: String,
    pub qos_class: QosClass,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A pod's Kubernetes QoS class, spelled as the API spells it (`status.qosClass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// The `observer.k8s.pod.qos_class` value, as Kubernetes spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Guaranteed => "Guaranteed",
            Self::Burstable => "Burstable",
            Self::BestEffort => "BestEffort",
        }
    }
}

impl Workload {
    /// The workload of a cgroup whose id could not be resolved.
    pub fn unknown() -> Self {
        Self {
            path: "?".into(),
            ..Self::default()
        }
    }

    /// Reads a cgroup v2 path (see the module's documentation for the layouts).
    pub fn from_path(path: &str) -> Self {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let mut w = Self {
            path: path.to_owned(),
            ..Self::default()
        };
        // Whether the previous component was a cgroupfs pod (its containers are bare ids).
        let mut in_cgroupfs_pod = false;
        for (i, &part) in parts.iter().enumerate() {
            let parent = i.checked_sub(1).map(|j| parts[j]);
            let grandparent = i.checked_sub(2).map(|j| parts[j]);
            let pod = if part.ends_with(".slice") {
                w.systemd_slice = Some(part.to_owned());
                systemd_pod(part, parent)
            } else {
                if is_unit(part) {
                    w.systemd_unit = Some(part.to_owned());
                }
                cgroupfs_pod(part, parent, grandparent)
            };
            let was_in_cgroupfs_pod = std::mem::replace(&mut in_cgroupfs_pod, false);
            if let Some(pod) = pod {
                in_cgroupfs_pod = !part.ends_with(".slice");
                w.pod = Some(pod);
                w.container = None;
                w.systemd_unit = None;
            } else if let Some(c) = container(part, parent, was_in_cgroupfs_pod) {
                w.container = Some(c);
            }
        }
        w
    }

    /// A short name for tables: the container (with its pod), else the pod, the systemd unit,
    /// the slice, else the path. Ids are cut like `docker ps` (12 digits) and pod UIDs to
    /// their first group; with Kubernetes enrichment, names replace them
    /// (`shop/web-7d4f nginx`: namespace/pod container).
    pub fn name(&self) -> String {
        let pod = self.pod.as_ref().map(|p| match (&p.namespace, &p.name) {
            (Some(namespace), Some(name)) => format!("{namespace}/{name}"),
            _ => format!("pod {}", short(&p.uid, 8)),
        });
        match (&self.container, pod) {
            (Some(c), pod) => {
                let runtime = c.runtime.map_or("container", Runtime::name);
                let container = match &c.name {
                    Some(name) => name.clone(),
                    None => format!("{runtime} {}", short(&c.id, 12)),
                };
                match pod {
                    Some(pod) => format!("{pod} {container}"),
                    None => container,
                }
            }
            (None, Some(pod)) => pod,
            (None, None) => self
                .systemd_unit
                .as_ref()
                .or(self.systemd_slice.as_ref())
                .unwrap_or(&self.path)
                .clone(),
        }
    }
}

fn short(s: &str, n: usize) -> &str {
    s.get(..n).unwrap_or(s)
}

/// Lowercase hex, as runtimes print ids.
fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && is_hex(s)
}

/// A pod UID as the kubelet writes it in a cgroup name: a UUID, or 32 hex digits (static pods).
fn pod_uid(s: &str) -> Option<String> {
    let uuid = s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        });
    (uuid || (s.len() == 32 && is_hex(s))).then(|| s.to_owned())
}

/// A systemd unit that can hold processes, by its suffix and systemd's unit name characters.
fn is_unit(part: &str) -> bool {
    [".service", ".scope", ".socket", ".mount", ".swap"]
        .iter()
        .filter_map(|suffix| part.strip_suffix(suffix))
        .any(|stem| {
            !stem.is_empty()
                && stem
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
        })
}

/// `kubepods[-<qos>]-pod<uid>.slice`, inside `kubepods[-<qos>].slice` as systemd nests slices
/// (a slice `a-b.slice` is always in `a.slice`).
fn systemd_pod(part: &str, parent: Option<&str>) -> Option<Pod> {
    let name = part.strip_suffix(".slice")?;
    let (prefix, uid) = name.rsplit_once("-pod")?;
    if parent?.strip_suffix(".slice")? != prefix {
        return None;
    }
    let qos_class = if let Some(rest) = prefix.strip_suffix("-burstable") {
        is_kubepods(rest).then_some(QosClass::Burstable)
    } else if let Some(rest) = prefix.strip_suffix("-besteffort") {
        is_kubepods(rest).then_some(QosClass::BestEffort)
    } else {
        is_kubepods(prefix).then_some(QosClass::Guaranteed)
    }?;
    Some(Pod {
        uid: pod_uid(&uid.replace('_', "-"))?,
        qos_class,
        name: None,
        namespace: None,
    })
}

/// The kubelet's root slice: `kubepods`, or a nested one like kind's `kubelet-kubepods`.
fn is_kubepods(slice: &str) -> bool {
    slice == "kubepods" || slice.ends_with("-kubepods")
}

/// `kubepods/pod<uid>` (Guaranteed) or `kubepods/<qos>/pod<uid>`.
fn cgroupfs_pod(part: &str, parent: Option<&str>, grandparent: Option<&str>) -> Option<Pod> {
    let uid = pod_uid(part.strip_prefix("pod")?)?;
    let qos_class = match (parent?, grandparent) {
        ("kubepods", _) => QosClass::Guaranteed,
        ("burstable", Some("kubepods")) => QosClass::Burstable,
        ("besteffort", Some("kubepods")) => QosClass::BestEffort,
        _ => return None,
    };
    Some(Pod {
        uid,
        qos_class,
        name: None,
        namespace: None,
    })
}

/// A container's own cgroup (see the module's documentation).
fn container(part: &str, parent: Option<&str>, in_cgroupfs_pod: bool) -> Option<Container> {
    let found = |runtime, id: &str| {
        is_container_id(id).then(|| Container {
            runtime,
            id: id.to_owned(),
            name: None,
        })
    };
    if let Some(name) = part.strip_suffix(".scope") {
        const SCOPES: [(&str, Runtime); 4] = [
            ("docker-", Runtime::Docker),
            ("cri-containerd-", Runtime::Containerd),
            ("crio-", Runtime::CriO),
            ("libpod-", Runtime::Podman),
        ];
        return SCOPES
            .iter()
            .find_map(|(prefix, rt)| found(Some(*rt), name.strip_prefix(prefix)?));
    }
    if let Some(id) = part.strip_prefix("crio-") {
        return found(Some(Runtime::CriO), id);
    }
    if let Some(id) = part.strip_prefix("libpod-") {
        return found(Some(Runtime::Podman), id);
    }
    match parent {
        Some("docker") => found(Some(Runtime::Docker), part),
        _ if in_cgroupfs_pod => found(None, part),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Cgroup ids to paths.

/// Finding the cgroup v2 mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("reading /proc/self/mountinfo: {0}")]
    Read(#[source] io::Error),
    #[error(
        "no cgroup v2 file system is mounted (none in /proc/self/mountinfo), so cgroups are \
         shown by id only; mount it (`mount -t cgroup2 none /sys/fs/cgroup`) to see their paths"
    )]
    NotMounted,
}

/// Where the cgroup v2 hierarchy is mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The mount point: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid v1/v2 system.
    pub point: PathBuf,
    /// Where in the hierarchy the mount starts: `/`, unless only a subtree is mounted (then
    /// paths are prefixed with it, so a pod's layout is still seen from inside it).
    pub root: String,
}

impl Mount {
    /// The cgroup2 mount of this process's mount namespace.
    pub fn find() -> Result<Self, MountError> {
        let text = fs::read_to_string("/proc/self/mountinfo").map_err(MountError::Read)?;
        Self::from_mountinfo(&text).ok_or(MountError::NotMounted)
    }

    /// The first cgroup2 mount of the whole hierarchy in a mountinfo text, else the first
    /// cgroup2 mount (`proc_pid_mountinfo(5)`: `id parent dev root point options [optional...]
    /// - fstype source superoptions`).
    fn from_mountinfo(text: &str) -> Option<Self> {
        let mounts: Vec<Self> = text
            .lines()
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                if right.split(' ').next()? != "cgroup2" {
                    return None;
                }
                let mut fields = left.split(' ');
                let root = unescape(fields.nth(3)?);
                let point = unescape(fields.next()?);
                // A root outside this process's cgroup namespace shows as `/..`: no use.
                let root = if root.contains("/..") {
                    "/".into()
                } else {
                    root
                };
                Some(Self {
                    point: PathBuf::from(point),
                    root,
                })
            })
            .collect();
        let whole = mounts.iter().position(|m| m.root == "/").unwrap_or(0);
        mounts.into_iter().nth(whole)
    }

    /// The hierarchy path of a directory under the mount point.
    fn path_of(&self, dir: &Path) -> Option<String> {
        let rel = dir.strip_prefix(&self.point).ok()?.to_string_lossy();
        let root = self.root.trim_end_matches('/');
        Some(if rel.is_empty() {
            if root.is_empty() {
                "/".into()
            } else {
                root.into()
            }
        } else {
            format!("{root}/{rel}")
        })
    }

    /// The directory of a hierarchy path; `None` when the path is outside the mounted subtree.
    pub fn dir_of(&self, path: &str) -> Option<PathBuf> {
        let rel = path.strip_prefix(self.root.trim_end_matches('/'))?;
        Some(self.point.join(rel.trim_start_matches('/')))
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal `\NNN`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A file handle as the cgroup file system encodes a directory: its 64-bit kernfs id (the
/// cgroup id), type `FILEID_KERNFS` (`fs/kernfs/mount.c`, `kernfs_encode_fh`).
#[repr(C)]
struct IdHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    id: u64,
}

/// A file handle as `name_to_handle_at` fills it (`MAX_HANDLE_SZ` is 128 bytes).
#[repr(C)]
struct AnyHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    bytes: [u8; 128],
}

/// Opens cgroups by id with `open_by_handle_at`: one lookup per id instead of a walk of the
/// hierarchy. Needs CAP_DAC_READ_SEARCH (root has it; `CAP_BPF + CAP_PERFMON` alone do not,
/// and then the resolver walks).
struct Handles {
    mount_fd: OwnedFd,
    handle_type: libc::c_int,
}

impl Handles {
    /// Works if the mount point's handle is its inode number, and opening it back works.
    fn probe(mount: &Mount) -> Result<Self, String> {
        let point = CString::new(mount.point.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        let mut h = AnyHandle {
            handle_bytes: 128,
            handle_type: 0,
            bytes: [0; 128],
        };
        let mut mount_id: libc::c_int = 0;
        // SAFETY: a NUL-terminated path and a handle buffer of the size it declares.
        let rc = unsafe {
            libc::name_to_handle_at(
                libc::AT_FDCWD,
                point.as_ptr(),
                (&raw mut h).cast(),
                &mut mount_id,
                0,
            )
        };
        if rc != 0 {
            return Err(format!("name_to_handle_at: {}", io::Error::last_os_error()));
        }
        let ino = fs::metadata(&mount.point).map_err(|e| e.to_string())?.ino();
        let id =
            (h.handle_bytes == 8).then(|| u64::from_ne_bytes(h.bytes[..8].try_into().unwrap()));
        if id != Some(ino) {
            return Err(format!(
                "the cgroup file system's handles are not cgroup ids ({} bytes, type {:#x})",
                h.handle_bytes, h.handle_type
            ));
        }
        // SAFETY: a NUL-terminated path; the result is checked, then owned.
        let fd = unsafe {
            libc::open(
                point.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(format!(
                "opening {}: {}",
                mount.point.display(),
                io::Error::last_os_error()
            ));
        }
        // SAFETY: fd was just opened and is owned by nobody else.
        let mount_fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let handles = Self {
            mount_fd,
            handle_type: h.handle_type,
        };
        match handles.open(ino) {
            Ok(Some(p)) if p == mount.point => Ok(handles),
            Ok(p) => Err(format!("the root cgroup opened by handle is {p:?}")),
            Err(e) => Err(format!("open_by_handle_at: {e}")),
        }
    }

    /// The directory of cgroup `id` (as the kernel names it from this process's root), or
    /// `None` if no cgroup has that id (any more).
    fn open(&self, id: u64) -> io::Result<Option<PathBuf>> {
        let mut h = IdHandle {
            handle_bytes: 8,
            handle_type: self.handle_type,
            id,
        };
        // SAFETY: a valid directory fd and a handle of the size it declares; O_PATH opens
        // nothing but a reference, which is owned and closed below.
        let fd = unsafe {
            libc::open_by_handle_at(
                self.mount_fd.as_raw_fd(),
                (&raw mut h).cast(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ESTALE | libc::ENOENT) => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: fd was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        // Removed between the open and the readlink.
        Ok((!path.as_os_str().as_bytes().ends_with(b" (deleted)")).then_some(path))
    }
}

/// The paths of the wanted ids, by one walk of the hierarchy. A directory entry's inode number
/// (`d_ino`, from readdir) is the cgroup id, so no directory is stat'ed.
fn walk(mount: &Mount, wanted: &HashSet<u64>) -> HashMap<u64, String> {
    let mut found = HashMap::new();
    if let Ok(meta) = fs::metadata(&mount.point)
        && wanted.contains(&meta.ino())
    {
        found.insert(meta.ino(), mount.path_of(&mount.point).unwrap_or_default());
    }
    let mut stack = vec![mount.point.clone()];
    while let Some(dir) = stack.pop() {
        if found.len() == wanted.len() {
            break;
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            if wanted.contains(&e.ino())
                && let Some(p) = mount.path_of(&path)
            {
                found.insert(e.ino(), p);
            }
            stack.push(path);
        }
    }
    found
}

/// The resolver's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Workloads cached at most; the least recently used goes first.
    pub capacity: usize,
    /// An id not found is looked for again only after this, and the hierarchy is walked at
    /// most once per this: a storm of unknown ids costs one walk, not one per id.
    pub retry: Duration,
    /// How often cached ids are checked: one whose directory no longer has that inode (the
    /// cgroup was removed) is dropped.
    pub sweep: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            capacity: 4096,
            retry: Duration::from_secs(1),
            sweep: Duration::from_secs(10),
        }
    }
}

struct Cached {
    workload: Workload,
    /// When it was last asked for (a counter), for eviction.
    used: u64,
}

/// Cgroup ids to workloads, cached.
///
/// A cached answer stays right while the cgroup lives and after (ids are not reused), so hits
/// are not checked one by one: a sweep every [`Limits::sweep`] drops the cgroups that are gone,
/// and a removed cgroup's last events are still named until then.
pub struct Resolver {
    mount: Option<Mount>,
    /// `None`: ids are found by walking the hierarchy.
    handles: Option<Handles>,
    limits: Limits,
    cache: HashMap<u64, Cached>,
    /// Ids looked for and not found, and when.
    unknown: HashMap<u64, Instant>,
    last_walk: Option<Instant>,
    last_sweep: Instant,
    clock: u64,
}

impl Resolver {
    /// A resolver for this process's cgroup2 mount; without one, every id is unknown (said
    /// once in the log).
    pub fn new() -> Self {
        match Mount::find() {
            Ok(mount) => Self::with(Some(mount), Limits::default(), true),
            Err(e) => {
                tracing::warn!("{e}");
                Self::with(None, Limits::default(), false)
            }
        }
    }

    /// A resolver for `mount`; with `use_handles` false it always walks the hierarchy.
    pub fn with(mount: Option<Mount>, limits: Limits, use_handles: bool) -> Self {
        let handles =
            mount
                .as_ref()
                .filter(|_| use_handles)
                .and_then(|m| match Handles::probe(m) {
                    Ok(h) => Some(h),
                    Err(why) => {
                        tracing::debug!(
                            "cgroup ids are found by walking {}: {why}",
                            m.point.display()
                        );
                        None
                    }
                });
        Self {
            mount,
            handles,
            limits,
            cache: HashMap::new(),
            unknown: HashMap::new(),
            last_walk: None,
            last_sweep: Instant::now(),
            clock: 0,
        }
    }

    /// Whether ids are opened by file handle (else the hierarchy is walked).
    pub fn uses_handles(&self) -> bool {
        self.handles.is_some()
    }

    /// How many workloads are cached.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// The workload of one cgroup id.
    pub fn resolve(&mut self, id: u64) -> Option<Workload> {
        self.resolve_all(&[id]).remove(&id)
    }

    /// The workloads of the ids that could be resolved. Misses are looked up together (one
    /// walk at most).
    pub fn resolve_all(&mut self, ids: &[u64]) -> HashMap<u64, Workload> {
        let now = Instant::now();
        if now.duration_since(self.last_sweep) >= self.limits.sweep {
            self.sweep();
        }
        self.clock += 1;
        let mut out = HashMap::new();
        let mut misses = HashSet::new();
        for &id in ids {
            if let Some(c) = self.cache.get_mut(&id) {
                c.used = self.clock;
                out.insert(id, c.workload.clone());
            } else if self
                .unknown
                .get(&id)
                .is_none_or(|at| now.duration_since(*at) >= self.limits.retry)
            {
                misses.insert(id);
            }
        }
        if misses.is_empty() {
            return out;
        }
        let Some(found) = self.lookup(&misses, now) else {
            return out;
        };
        if self.unknown.len() >= self.limits.capacity {
            let retry = self.limits.retry;
            self.unknown.retain(|_, at| now.duration_since(*at) < retry);
        }
        for id in misses {
            match found.get(&id) {
                Some(path) => {
                    let workload = Workload::from_path(path);
                    self.insert(id, workload.clone());
                    self.unknown.remove(&id);
                    out.insert(id, workload);
                }
                None if self.unknown.len() < self.limits.capacity => {
                    self.unknown.insert(id, now);
                }
                None => {}
            }
        }
        out
    }

    /// Paths of the missed ids; `None` when a walk is due but was done too recently.
    fn lookup(&mut self, misses: &HashSet<u64>, now: Instant) -> Option<HashMap<u64, String>> {
        let mount = self.mount.as_ref()?;
        if let Some(handles) = &self.handles {
            let mut found = HashMap::new();
            let mut failed = None;
            for &id in misses {
                match handles.open(id) {
                    Ok(Some(dir)) => {
                        if let Some(path) = mount.path_of(&dir) {
                            found.insert(id, path);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let Some(e) = failed else {
                return Some(found);
            };
            // Not expected once the probe worked (capabilities dropped since?): walk from now.
            tracing::warn!("opening cgroups by id failed ({e}); walking the hierarchy instead");
            self.handles = None;
        }
        if self
            .last_walk
            .is_some_and(|at| now.duration_since(at) < self.limits.retry)
        {
            return None;
        }
        self.last_walk = Some(now);
        Some(walk(mount, misses))
    }

    fn insert(&mut self, id: u64, workload: Workload) {
        if self.cache.len() >= self.limits.capacity
            && let Some(oldest) = self
                .cache
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| *k)
        {
            self.cache.remove(&oldest);
        }
        self.cache.insert(
            id,
            Cached {
                workload,
                used: self.clock,
            },
        );
    }

    /// Drops the cached cgroups that are gone: their directory is missing or has another inode.
    pub fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        let Some(mount) = &self.mount else {
            return;
        };
        self.cache.retain(|&id, c| {
            mount
                .dir_of(&c.workload.path)
                .and_then(|dir| fs::metadata(dir).ok())
                .is_some_and(|m| m.ino() == id)
        });
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}

/// The workloads of cgroup ids, from one resolver shared by the whole process (record, top and
/// the agent all name cgroups from it, so its cache serves them all).
/// Pods carry their names when Kubernetes enrichment runs (added here, not cached: they
/// arrive after the path is first read).
pub fn resolve_all(ids: &[u64]) -> HashMap<u64, Workload> {
    static SHARED: OnceLock<Mutex<Resolver>> = OnceLock::new();
    let mut workloads = SHARED
        .get_or_init(|| Mutex::new(Resolver::new()))
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .resolve_all(ids);
    crate::kubernetes::name_all(workloads.values_mut());
    workloads
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c2b3a5d6e7f80910a1b2c3d4e5f60718293a4b5c6d7e8f9012a3b4c5d6e7f";
    const UID: &str = "275ecb36-5aa8-4c2a-9c47-d8bb681b9aff";
    const UID_: &str = "275ecb36_5aa8_4c2a_9c47_d8bb681b9aff";
    /// A static pod's UID: the hash of its manifest.
    const STATIC_UID: &str = "8d2fd4b6d0f5a8e5d7b9a7a3c7e2b0a1";

    fn container(runtime: Option<Runtime>) -> Option<Container> {
        Some(Container {
            runtime,
            id: ID.into(),
            name: None,
        })
    }

    fn pod(uid: &str, qos_class: QosClass) -> Option<Pod> {
        Some(Pod {
            uid: uid.into(),
            qos_class,
            name: None,
            namespace: None,
        })
    }

    fn w(path: &str) -> Workload {
        Workload::from_path(path)
    }

    /// (unit, slice, container, pod) of a path.
    type Parts = (
        Option<String>,
        Option<String>,
        Option<Container>,
        Option<Pod>,
    );

    fn parts(path: &str) -> Parts {
        let w = w(path);
        assert_eq!(w.path, path);
        (w.systemd_unit, w.systemd_slice, w.container, w.pod)
    }

    fn s(v: &str) -> Option<String> {
        Some(v.into())
    }

    #[test]
    fn systemd_units_and_slices() {
        assert_eq!(
            parts("/system.slice/nginx.service"),
            (s("nginx.service"), s("system.slice"), None, None)
        );
        assert_eq!(
            parts("/user.slice/user-1000.slice/session-3.scope"),
            (s("session-3.scope"), s("user-1000.slice"), None, None)
        );
        // The user manager's own units nest inside user@1000.service.
        assert_eq!(
            parts("/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo@1.service"),
            (s("app-foo@1.service"), s("app.slice"), None, None)
        );
        assert_eq!(parts("/init.scope"), (s("init.scope"), None, None, None));
        assert_eq!(
            parts("/system.slice"),
            (None, s("system.slice"), None, None)
        );
        assert_eq!(parts("/"), (None, None, None, None));
        // A directory below a unit belongs to it.
        assert_eq!(
            parts("/system.slice/foo.service/worker"),
            (s("foo.service"), s("system.slice"), None, None)
        );
        // Not unit names.
        assert_eq!(parts("/mygroup/a b.service"), (None, None, None, None));
        assert_eq!(parts("/.service"), (None, None, None, None));
    }

    #[test]
    fn docker() {
        let scope = format!("docker-{ID}.scope");
        assert_eq!(
            parts(&format!("/system.slice/{scope}")),
            (
                s(&scope),
                s("system.slice"),
                container(Some(Runtime::Docker)),
                None
            )
        );
        // cgroupfs driver.
        assert_eq!(
            parts(&format!("/docker/{ID}")),
            (None, None, container(Some(Runtime::Docker)), None)
        );
    }

    #[test]
    fn containerd_cri_o_and_podman() {
        for (scope, runtime) in [
            (format!("cri-containerd-{ID}.scope"), Runtime::Containerd),
            (format!("crio-{ID}.scope"), Runtime::CriO),
            (format!("libpod-{ID}.scope"), Runtime::Podman),
        ] {
            assert_eq!(
                parts(&format!("/machine.slice/{scope}")),
                (
                    s(&scope),
                    s("machine.slice"),
                    container(Some(runtime)),
                    None
                )
            );
        }
        // podman's container sub-cgroup, rootless podman under the user's manager.
        let scope = format!("libpod-{ID}.scope");
        assert_eq!(
            parts(&format!("/machine.slice/{scope}/container")),
            (
                s(&scope),
                s("machine.slice"),
                container(Some(Runtime::Podman)),
                None
            )
        );
        assert_eq!(
            parts(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/{scope}"
            )),
            (
                s(&scope),
                s("user.slice"),
                container(Some(Runtime::Podman)),
                None
            )
        );
        // cgroupfs drivers of CRI-O and podman.
        assert_eq!(
            parts(&format!("/libpod_parent/libpod-{ID}")).2,
            container(Some(Runtime::Podman))
        );
        assert_eq!(
            parts(&format!("/crio-{ID}")).2,
            container(Some(Runtime::CriO))
        );
        // The runtimes' monitors run outside the container.
        for monitor in [
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            format!("/system.slice/crio-conmon-{ID}.scope"),
            format!("/libpod_parent/crio-conmon-{ID}"),
        ] {
            assert_eq!(w(&monitor).container, None, "{monitor}");
        }
    }

    #[test]
    fn kubernetes_systemd_driver() {
        let scope = format!("cri-containerd-{ID}.scope");
        let burstable = format!("kubepods-burstable-pod{UID_}.slice");
        assert_eq!(
            parts(&format!(
                "/kubepods.slice/kubepods-burstable.slice/{burstable}/{scope}"
            )),
            (
                s(&scope),
                s(&burstable),
                container(Some(Runtime::Containerd)),
                pod(UID, QosClass::Burstable)
            )
        );
        let besteffort = format!("kubepods-besteffort-pod{UID_}.slice");
        let crio = format!("crio-{ID}.scope");
        assert_eq!(
            parts(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/{besteffort}/{crio}"
            )),
            (
                s(&crio),
                s(&besteffort),
                container(Some(Runtime::CriO)),
                pod(UID, QosClass::BestEffort)
            )
        );
        // Guaranteed pods are directly in kubepods.slice.
        let guaranteed = format!("kubepods-pod{UID_}.slice");
        assert_eq!(
            parts(&format!("/kubepods.slice/{guaranteed}/docker-{ID}.scope")).2,
            container(Some(Runtime::Docker))
        );
        assert_eq!(
            w(&format!("/kubepods.slice/{guaranteed}/docker-{ID}.scope")).pod,
            pod(UID, QosClass::Guaranteed)
        );
        // The pod's own slice, and CRI-O's monitor in it: the pod, no container.
        assert_eq!(
            parts(&format!("/kubepods.slice/{guaranteed}")),
            (None, s(&guaranteed), None, pod(UID, QosClass::Guaranteed))
        );
        let conmon = w(&format!(
            "/kubepods.slice/{guaranteed}/crio-conmon-{ID}.scope"
        ));
        assert_eq!(
            (conmon.container, conmon.pod),
            (None, pod(UID, QosClass::Guaranteed))
        );
        // A static pod's UID.
        assert_eq!(
            w(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/{scope}"
            ))
            .pod,
            pod(STATIC_UID, QosClass::Burstable)
        );
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        for (dir, qos) in [
            ("/kubepods/burstable", QosClass::Burstable),
            ("/kubepods/besteffort", QosClass::BestEffort),
            ("/kubepods", QosClass::Guaranteed),
        ] {
            let path = format!("{dir}/pod{UID}/{ID}");
            assert_eq!(
                parts(&path),
                (None, None, container(None), pod(UID, qos)),
                "{path}"
            );
        }
        assert_eq!(
            parts(&format!("/kubepods/pod{UID}/crio-{ID}")),
            (
                None,
                None,
                container(Some(Runtime::CriO)),
                pod(UID, QosClass::Guaranteed)
            )
        );
        assert_eq!(
            parts(&format!("/kubepods/besteffort/pod{STATIC_UID}")).3,
            pod(STATIC_UID, QosClass::BestEffort)
        );
    }

    #[test]
    fn nested_layouts_are_found_after_any_prefix_and_the_innermost_wins() {
        let inner = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
        );
        let expected = parts(&inner);
        for prefix in ["/observer-test-1-0", "/a/b/c"] {
            let w = w(&format!("{prefix}{inner}"));
            assert_eq!(
                (w.systemd_unit, w.systemd_slice, w.container, w.pod),
                expected
            );
        }
        // kind: the kubelet inside a node container; the pod is not in the node container.
        let node = "0123456789abcdef".repeat(4);
        let kind = format!(
            "/system.slice/docker-{node}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice"
        );
        let k = w(&kind);
        assert_eq!((k.container, k.systemd_unit), (None, None));
        assert_eq!(k.pod, pod(UID, QosClass::BestEffort));
        let k = w(&format!("{kind}/cri-containerd-{ID}.scope"));
        assert_eq!(k.container, container(Some(Runtime::Containerd)));
        // A service inside the node container is in the node container.
        let svc = w(&format!(
            "/system.slice/docker-{node}.scope/system.slice/containerd.service"
        ));
        assert_eq!(svc.container.map(|c| c.id), Some(node));
        assert_eq!(svc.systemd_unit, s("containerd.service"));
        // cgroupfs driver under a prefix.
        assert_eq!(
            w(&format!("/observer-test/kubepods/burstable/pod{UID}/{ID}")).pod,
            pod(UID, QosClass::Burstable)
        );
    }

    #[test]
    fn look_alikes_do_not_match() {
        let short = &ID[..63];
        for path in [
            // A slice named like a container is not one.
            format!("/user.slice/docker-{ID}.slice"),
            // 63 and 65 hex digits, upper case.
            format!("/system.slice/docker-{short}.scope"),
            format!("/system.slice/docker-{ID}0.scope"),
            format!("/system.slice/docker-{}.scope", ID.to_uppercase()),
            format!("/docker/{short}"),
            // Not a runtime's prefix, or a bare id outside docker/ and a pod.
            format!("/system.slice/containerd-{ID}.scope"),
            format!("/{ID}"),
            format!("/mygroup/{ID}"),
            format!("/system.slice/docker-{ID}.service"),
        ] {
            let w = w(&path);
            assert_eq!((&w.container, &w.pod), (&None, &None), "{path}");
        }
        for path in [
            // Pod slices outside their QoS slice, or in another one.
            format!("/user.slice/kubepods-burstable-pod{UID_}.slice"),
            format!("/kubepods.slice/kubepods-besteffort-pod{UID_}.slice"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod{UID_}.slice"),
            // Not a kubelet slice.
            format!("/mypods.slice/mypods-pod{UID_}.slice"),
            // Not UIDs.
            "/kubepods.slice/kubepods-podfoo.slice".into(),
            format!("/kubepods.slice/kubepods-pod{}.slice", &UID_[..35]),
            // cgroupfs: not under kubepods, or under an unknown QoS.
            format!("/mypods/burstable/pod{UID}/{ID}"),
            format!("/kubepods/silver/pod{UID}/{ID}"),
            format!("/kubepods/burstable/podfoo/{ID}"),
        ] {
            let w = w(&path);
            assert_eq!((&w.container, &w.pod), (&None, &None), "{path}");
        }
    }

    #[test]
    fn short_names() {
        let k = w(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(k.name(), "pod 275ecb36 containerd 4f1c2b3a5d6e");
        assert_eq!(
            w(&format!("/kubepods/pod{UID}/{ID}")).name(),
            "pod 275ecb36 container 4f1c2b3a5d6e"
        );
        assert_eq!(w(&format!("/kubepods/pod{UID}")).name(), "pod 275ecb36");
        assert_eq!(w(&format!("/docker/{ID}")).name(), "docker 4f1c2b3a5d6e");
        assert_eq!(w("/system.slice/nginx.service").name(), "nginx.service");
        assert_eq!(w("/user.slice").name(), "user.slice");
        assert_eq!(w("/a/b").name(), "/a/b");
        assert_eq!(Workload::unknown().name(), "?");
    }

    #[test]
    fn json_is_flat_and_leaves_out_what_is_unknown() {
        let k = w(&format!("/kubepods/burstable/pod{UID}/{ID}"));
        assert_eq!(
            serde_json::to_value(&k).unwrap(),
            serde_json::json!({
                "cgroup": k.path,
                "container": {"id": ID},
                "pod": {"uid": UID, "qos_class": "Burstable"},
            })
        );
        let d = w(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(
            serde_json::to_value(&d).unwrap()["container"],
            serde_json::json!({"runtime": "docker", "id": ID})
        );
    }

    #[test]
    fn the_cgroup2_mount_from_mountinfo() {
        // A hybrid system (cgroup v1 controllers, v2 at unified), and an escaped mount point.
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:5 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            Mount::from_mountinfo(hybrid),
            Some(Mount {
                point: "/sys/fs/cgroup/unified".into(),
                root: "/".into()
            })
        );
        let subtree = "50 1 0:27 /kubepods.slice/x /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        let m = Mount::from_mountinfo(subtree).unwrap();
        assert_eq!(m.point, Path::new("/mnt/my cg"));
        assert_eq!(
            m.path_of(Path::new("/mnt/my cg/a")).as_deref(),
            Some("/kubepods.slice/x/a")
        );
        assert_eq!(
            m.path_of(Path::new("/mnt/my cg")).as_deref(),
            Some("/kubepods.slice/x")
        );
        assert_eq!(
            m.dir_of("/kubepods.slice/x/a"),
            Some(PathBuf::from("/mnt/my cg/a"))
        );
        assert_eq!(
            Mount::from_mountinfo(&hybrid[..hybrid.find("41 ").unwrap()]),
            None
        );
    }

    // -----------------------------------------------------------------------------------------
    // The resolver, against the real cgroup2 mount (as root).

    /// Cgroups made under the real cgroup2 mount in a directory of their own, removed leaf
    /// first on drop (they hold no processes).
    struct Tree {
        mount: Mount,
        top: String,
        dirs: Vec<PathBuf>,
    }

    impl Tree {
        fn new() -> Self {
            let mount = Mount::find().expect("a cgroup2 mount");
            let top = format!("/{}", observer_tests::unique_name("observer-test"));
            let mut t = Self {
                mount,
                top: top.clone(),
                dirs: Vec::new(),
            };
            t.mkdir("");
            t
        }

        /// Makes `rel` (and its parents) under the test directory; its hierarchy path and id.
        fn mkdir(&mut self, rel: &str) -> (String, u64) {
            let path = format!("{}{}{rel}", self.top, if rel.is_empty() { "" } else { "/" });
            let dir = self.mount.dir_of(&path).unwrap();
            for d in dir.ancestors().collect::<Vec<_>>().into_iter().rev() {
                if d.starts_with(&self.mount.point) && !d.exists() {
                    fs::create_dir(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
                    self.dirs.push(d.to_owned());
                }
            }
            (path, fs::metadata(&dir).unwrap().ino())
        }

        fn rmdir(&mut self, path: &str) {
            let dir = self.mount.dir_of(path).unwrap();
            fs::remove_dir(&dir).unwrap();
            self.dirs.retain(|d| *d != dir);
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            for d in self.dirs.iter().rev() {
                if let Err(e) = fs::remove_dir(d) {
                    eprintln!("removing test cgroup {}: {e}", d.display());
                }
            }
        }
    }

    fn limits(retry: Duration) -> Limits {
        Limits {
            capacity: 64,
            retry,
            sweep: Duration::from_secs(3600),
        }
    }

    /// A test cgroup's path under the test directory, and its container, pod and unit.
    type Layout = (String, Option<Container>, Option<Pod>, Option<&'static str>);

    fn layouts() -> Vec<Layout> {
        vec![
            (
                format!(
                    "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                container(Some(Runtime::Containerd)),
                pod(UID, QosClass::Burstable),
                None,
            ),
            (
                format!("kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope"),
                container(Some(Runtime::CriO)),
                pod(UID, QosClass::Guaranteed),
                None,
            ),
            (
                format!("kubepods/besteffort/pod{UID}/{ID}"),
                container(None),
                pod(UID, QosClass::BestEffort),
                None,
            ),
            (
                format!("system.slice/docker-{ID}.scope"),
                container(Some(Runtime::Docker)),
                None,
                None,
            ),
            (
                format!("docker/{ID}"),
                container(Some(Runtime::Docker)),
                None,
                None,
            ),
            (
                format!("machine.slice/libpod-{ID}.scope/container"),
                container(Some(Runtime::Podman)),
                None,
                None,
            ),
            (
                "system.slice/observer-test.service".into(),
                None,
                None,
                Some("observer-test.service"),
            ),
        ]
    }

    fn resolves_every_layout_and_forgets_removed_cgroups(use_handles: bool) {
        observer_tests::require_root!();
        let mut tree = Tree::new();
        let mut r = Resolver::with(
            Some(tree.mount.clone()),
            limits(Duration::ZERO),
            use_handles,
        );
        assert_eq!(
            r.uses_handles(),
            use_handles,
            "root can open cgroups by handle"
        );
        let mut ids = Vec::new();
        for (rel, container, pod, unit) in layouts() {
            let (path, id) = tree.mkdir(&rel);
            let w = r
                .resolve(id)
                .unwrap_or_else(|| panic!("{path} (id {id}) not resolved"));
            assert_eq!(w.path, path);
            assert_eq!((&w.container, &w.pod), (&container, &pod), "{path}");
            if let Some(unit) = unit {
                assert_eq!(w.systemd_unit.as_deref(), Some(unit));
            }
            ids.push((path, id));
        }
        // The root cgroup is "/".
        let root = fs::metadata(&tree.mount.point).unwrap().ino();
        assert_eq!(
            r.resolve(root).map(|w| w.path),
            Some(tree.mount.root.clone())
        );
        // All at once, from the cache.
        let all = r.resolve_all(&ids.iter().map(|i| i.1).collect::<Vec<_>>());
        assert_eq!(all.len(), ids.len());

        // Removed: dropped by the next sweep, and no longer found.
        let (gone, gone_id) = ids.pop().unwrap();
        let before = r.cached();
        tree.rmdir(&gone);
        r.sweep();
        assert_eq!(
            r.cached(),
            before - 1,
            "the sweep drops the removed cgroup only"
        );
        assert_eq!(r.resolve(gone_id), None);
        // Recreated at the same path: a new id, and the old one stays unknown.
        let (_, new_id) = tree.mkdir(gone.strip_prefix(&format!("{}/", tree.top)).unwrap());
        assert_ne!(new_id, gone_id);
        assert_eq!(r.resolve(new_id).map(|w| w.path), Some(gone));
        assert_eq!(r.resolve(gone_id), None);
    }

    #[test]
    fn resolves_real_cgroups_by_handle() {
        resolves_every_layout_and_forgets_removed_cgroups(true);
    }

    #[test]
    fn resolves_real_cgroups_by_walking() {
        resolves_every_layout_and_forgets_removed_cgroups(false);
    }

    #[test]
    fn unknown_ids_cost_one_walk_per_retry_interval_and_the_cache_is_bounded() {
        observer_tests::require_root!();
        let mut tree = Tree::new();
        let mut r = Resolver::with(
            Some(tree.mount.clone()),
            limits(Duration::from_secs(3600)),
            false,
        );
        // A storm of unknown ids: one walk, then nothing until the retry interval has passed,
        // so a cgroup made since is not found yet either.
        let storm: Vec<u64> = (u64::MAX - 1000..u64::MAX).collect();
        assert!(r.resolve_all(&storm).is_empty());
        let (_, id) = tree.mkdir("new");
        assert_eq!(
            r.resolve(id),
            None,
            "no second walk within the retry interval"
        );
        // By handle there is no walk: a new cgroup is found at once.
        let mut h = Resolver::with(
            Some(tree.mount.clone()),
            limits(Duration::from_secs(3600)),
            true,
        );
        assert!(h.resolve_all(&storm).is_empty());
        assert!(h.resolve(id).is_some());

        let mut small = Resolver::with(
            Some(tree.mount.clone()),
            Limits {
                capacity: 2,
                ..limits(Duration::ZERO)
            },
            true,
        );
        let ids: Vec<u64> = (0..3).map(|i| tree.mkdir(&format!("c{i}")).1).collect();
        for &id in &ids {
            assert!(small.resolve(id).is_some());
        }
        assert_eq!(small.cached(), 2);
    }
}
