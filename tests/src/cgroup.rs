//! Real cgroup v2 cgroups for the tests, in a directory of their own under the cgroup2 mount
//! (`<mount>/observer-test-<pid>-<n>/...`), laid out as a test likes (a runtime's layout), with
//! processes started inside them. On drop, even when the test fails: the processes still in them
//! are killed (only they: `cgroup.kill` acts on the test's own cgroups), then the cgroups are
//! removed leaf first.

use std::{
    ffi::CString,
    fs, io,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

/// The test's cgroups.
pub struct TestCgroups {
    /// The cgroup2 mount point (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host).
    pub mount: PathBuf,
    /// The test directory's path in the hierarchy (`/observer-test-<pid>-<n>`).
    pub top: String,
    /// Every directory made, parents first.
    dirs: Vec<PathBuf>,
}

/// One cgroup made by [`TestCgroups::create`].
#[derive(Clone, Debug)]
pub struct Cgroup {
    /// Its path in the cgroup v2 hierarchy, as observer reports it.
    pub path: String,
    pub dir: PathBuf,
    /// Its id: the directory's inode number.
    pub id: u64,
}

/// The cgroup2 mount point, from /proc/self/mountinfo (`... root point ... - cgroup2 ...`).
pub fn mount_point() -> Result<PathBuf, String> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    text.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut f = left.split(' ');
            let whole = right.starts_with("cgroup2 ") && f.nth(3)? == "/";
            whole.then_some(PathBuf::from(f.next()?))
        })
        .ok_or_else(|| "no cgroup2 file system is mounted (cgroup v2 is needed)".into())
}

impl TestCgroups {
    pub fn new() -> Result<Self, String> {
        let mount = mount_point()?;
        let top = format!("/{}", crate::unique_name("observer-test"));
        let mut t = Self {
            mount,
            top,
            dirs: Vec::new(),
        };
        t.create("")?;
        Ok(t)
    }

    /// Makes the cgroup `rel` (and its parents) under the test directory.
    pub fn create(&mut self, rel: &str) -> Result<Cgroup, String> {
        let path = if rel.is_empty() {
            self.top.clone()
        } else {
            format!("{}/{rel}", self.top)
        };
        let dir = self.mount.join(path.trim_start_matches('/'));
        let mut missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|d| *d != self.mount && !d.exists())
            .collect();
        missing.reverse();
        for d in missing {
            fs::create_dir(d).map_err(|e| format!("creating cgroup {}: {e}", d.display()))?;
            self.dirs.push(d.to_owned());
        }
        let id = std::os::unix::fs::MetadataExt::ino(
            &fs::metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?,
        );
        Ok(Cgroup { path, dir, id })
    }

    /// Starts `cmd` inside `cg`: the child moves itself there (writes `0` to `cgroup.procs`)
    /// before it execs, so all it does is in the cgroup.
    pub fn spawn_in(&self, cg: &Cgroup, cmd: &mut Command) -> io::Result<Child> {
        let procs = CString::new(cg.dir.join("cgroup.procs").as_os_str().as_bytes())?;
        // SAFETY: between fork and exec only async-signal-safe calls (open, write, close) on
        // memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = io::Error::last_os_error();
                libc::close(fd);
                if n == 1 { Ok(()) } else { Err(err) }
            });
        }
        cmd.spawn()
    }
}

/// Kills what is left in `dir`: with `cgroup.kill` (Linux 5.14) the whole subtree, else each
/// pid of `cgroup.procs`. Waits (up to 5 s) until it is empty.
fn empty(dir: &Path) {
    let kill = dir.join("cgroup.kill");
    let procs = || fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    if procs().trim().is_empty() {
        return;
    }
    if fs::write(&kill, "1").is_err() {
        for pid in procs().lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) on a process the test put in its own cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !procs().trim().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        for d in self.dirs.iter().rev() {
            empty(d);
            if let Err(e) = fs::remove_dir(d) {
                eprintln!("removing test cgroup {}: {e}", d.display());
            }
        }
    }
}
