//! Real cgroup v2 cgroups for the tests, in a directory of their own under the cgroup2 mount
//! (`<mount>/observer-test-<pid>-<n>/...`), laid out as a test likes (a runtime's layout), with
//! processes started inside them. On drop, even when the test fails: the processes still in them
//! are killed (only they: `cgroup.kill` acts on the test's own cgroups), then the cgroups are
//! removed leaf first.

use std::{
    ffi::CString,
    fs, io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
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

/// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2, Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks a child straight into the cgroup directory `cgroup` (clone3 with CLONE_INTO_CGROUP,
/// so every event of its life is in that cgroup). The child closes its copy of `release`'s
/// write end, blocks reading `release` and exits at end of file, when the forker closes the
/// write end: so all of a storm's processes live at once however slowly they were forked (the
/// fork-storm test, and `observer-loadgen storm` for the bench). Returns its pid.
pub fn fork_into(cgroup: &std::fs::File, release: &(OwnedFd, OwnedFd)) -> libc::pid_t {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    let (read, write) = (release.0.as_raw_fd(), release.1.as_raw_fd());
    // SAFETY: clone3 without CLONE_VM is a fork: the child has a copy of this memory and runs
    // only async-signal-safe calls (close, read, _exit) on what was prepared before.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::from_ref(&args),
            size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: in the child, as above.
        unsafe {
            libc::close(write);
            let mut byte = 0u8;
            while libc::read(read, std::ptr::from_mut(&mut byte).cast(), 1) < 0 {}
            libc::_exit(0);
        }
    }
    assert!(pid > 0, "clone3: {}", std::io::Error::last_os_error());
    pid as libc::pid_t
}

/// A pipe for [`fork_into`]: (read end, write end).
pub fn release_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds, which we then own.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
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
