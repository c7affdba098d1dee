//! `nice` and `affinity`: the nice value and the CPU affinity of the offending process (rules
//! with `per = "process"`), applied to every thread of it (/proc/<pid>/task): both are
//! per-thread attributes in Linux, and setting only the main thread would leave the others as
//! they were.
//!
//! A knob carries the process's start time (field 22 of /proc/<pid>/stat) next to its pid, and
//! every read and write first checks it: once the process has exited its pid may belong to
//! another process, which must never be touched.
//!
//! Threads may differ (one may have been reniced on purpose), so a knob's text is the main
//! thread's value followed by the threads that differ from it, `0 1234=5 1240=-2`, and writing
//! that text back restores each thread. A value planned by an action is a single value for all.

use std::{collections::BTreeMap, ops::Range};

use super::{Action, ActionError, Breach, CpuList, FileAction, Invalid, Knob, Step, Target};
use crate::caps::Cap;

/// Why nice and affinity actions keep CAP_SYS_NICE: the offender may be another user's process,
/// and lowering a nice value needs it whoever owns the process (sched_setattr(2)).
const OTHER_USERS: &str = "nice and affinity actions on other users' processes";

/// The start time of `pid`, in clock ticks since boot (field 22 of /proc/<pid>/stat).
pub fn start_time(pid: u32) -> Result<u64, ActionError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|_| ActionError::Gone(format!("process {pid} has exited")))?;
    parse_start_time(&stat).ok_or_else(|| ActionError::Io {
        what: format!("parse /proc/{pid}/stat"),
        source: std::io::Error::other(format!("no start time in {stat:?}")),
    })
}

/// Field 22 of a stat line. The command name (field 2, in parentheses) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name.
    after.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Fails unless `pid` is still the process that started at `start`.
fn same_process(pid: u32, start: u64) -> Result<(), ActionError> {
    let now = start_time(pid)?;
    if now != start {
        return Err(ActionError::Gone(format!(
            "process {pid} has exited and its pid now belongs to another process (started at \
             tick {now}, not {start}); leaving it alone"
        )));
    }
    Ok(())
}

/// The threads of `pid`.
fn threads(pid: u32) -> Result<Vec<u32>, ActionError> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|_| ActionError::Gone(format!("process {pid} has exited")))?;
    let mut tids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// A thread that exited between being listed and being read or changed.
fn exited(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ESRCH)
}

/// Reads one attribute of every thread, in the knob's text form.
fn read_threads(
    pid: u32,
    start: u64,
    what: &str,
    get: impl Fn(u32) -> std::io::Result<String>,
) -> Result<String, ActionError> {
    same_process(pid, start)?;
    let mut values = Vec::new();
    for tid in threads(pid)? {
        match get(tid) {
            Ok(value) => values.push((tid, value)),
            Err(e) if exited(&e) => {}
            Err(source) => {
                return Err(ActionError::Io {
                    what: format!("read the {what} of thread {tid} of process {pid}"),
                    source,
                });
            }
        }
    }
    same_process(pid, start)?;
    let Some(main) = values
        .iter()
        .find(|(tid, _)| *tid == pid)
        .or(values.first())
        .map(|(_, v)| v.clone())
    else {
        return Err(ActionError::Gone(format!("process {pid} has exited")));
    };
    let mut text = main.clone();
    for (tid, value) in values.iter().filter(|(_, v)| *v != main) {
        text.push_str(&format!(" {tid}={value}"));
    }
    Ok(text)
}

/// Splits a knob's text into the value for all threads and the per-thread exceptions.
fn parse_threads(text: &str) -> Result<(String, BTreeMap<u32, String>), String> {
    let mut words = text.split_whitespace();
    let main = words.next().ok_or("an empty value")?.to_owned();
    let mut others = BTreeMap::new();
    for word in words {
        let (tid, value) = word
            .split_once('=')
            .and_then(|(t, v)| Some((t.parse().ok()?, v.to_owned())))
            .ok_or_else(|| format!("{word:?} is not <thread id>=<value>"))?;
        others.insert(tid, value);
    }
    Ok((main, others))
}

/// Sets one attribute on every thread, as `text` says (see [`parse_threads`]); `check` parses
/// a value, so a bad text fails before any thread is changed.
fn write_threads<T>(
    pid: u32,
    start: u64,
    text: &str,
    what: &str,
    check: impl Fn(&str) -> Result<T, String>,
    set: impl Fn(u32, &T) -> std::io::Result<()>,
) -> Result<(), ActionError> {
    let bad = |message: String| ActionError::Io {
        what: format!("set the {what} of process {pid} to {text:?}"),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, message),
    };
    let (main, others) = parse_threads(text).map_err(bad)?;
    let main = check(&main).map_err(bad)?;
    let others = others
        .into_iter()
        .map(|(tid, v)| Ok((tid, check(&v)?)))
        .collect::<Result<BTreeMap<_, _>, String>>()
        .map_err(bad)?;
    same_process(pid, start)?;
    // Threads started while we go inherit from their creator, which may not have been changed
    // yet: list again until a pass finds no thread we have not set.
    let mut done = std::collections::BTreeSet::new();
    for _ in 0..16 {
        let new: Vec<u32> = threads(pid)?
            .into_iter()
            .filter(|t| !done.contains(t))
            .collect();
        if new.is_empty() {
            break;
        }
        for tid in new {
            match set(tid, others.get(&tid).unwrap_or(&main)) {
                Ok(()) => {}
                Err(e) if exited(&e) => {}
                Err(source) => {
                    return Err(ActionError::Io {
                        what: format!("set the {what} of thread {tid} of process {pid}"),
                        source,
                    });
                }
            }
            done.insert(tid);
        }
    }
    same_process(pid, start)
}

fn get_nice(tid: u32) -> std::io::Result<String> {
    // getpriority can return -1 as a value: only errno tells an error.
    // SAFETY: errno is thread-local; getpriority has no memory preconditions.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, tid)
    };
    let errno = std::io::Error::last_os_error();
    if nice == -1 && errno.raw_os_error() != Some(0) {
        return Err(errno);
    }
    Ok(nice.to_string())
}

fn set_nice(tid: u32, nice: &i32) -> std::io::Result<()> {
    // SAFETY: no memory preconditions. With PRIO_PROCESS, Linux applies it to the thread `tid`.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, *nice) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn check_nice(text: &str) -> Result<i32, String> {
    text.parse()
        .ok()
        .filter(|n| (-20..=19).contains(n))
        .ok_or_else(|| format!("{text:?} is not a nice value from -20 to 19"))
}

fn get_affinity(tid: u32) -> std::io::Result<String> {
    // SAFETY: cpu_set_t is plain data; zeroed is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe {
        libc::sched_getaffinity(tid as libc::pid_t, size_of::<libc::cpu_set_t>(), &mut set)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let cpus = (0..=super::cpulist::MAX_CPU).filter(|cpu| {
        // SAFETY: cpu is below the set's capacity (CPU_SETSIZE, 1024).
        unsafe { libc::CPU_ISSET(*cpu as usize, &set) }
    });
    CpuList::from_cpus(cpus)
        .map(|l| l.to_string())
        .ok_or_else(|| std::io::Error::other("an empty CPU affinity"))
}

fn set_affinity(tid: u32, cpus: &CpuList) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in cpus.iter() {
        // SAFETY: CpuList holds CPUs up to MAX_CPU, below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_setaffinity(tid as libc::pid_t, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The nice value(s) of the process's threads; see the module docs for the form.
pub fn read_nice(pid: u32, start: u64) -> Result<String, ActionError> {
    read_threads(pid, start, "nice value", get_nice)
}

pub fn write_nice(pid: u32, start: u64, text: &str) -> Result<(), ActionError> {
    write_threads(pid, start, text, "nice value", check_nice, set_nice)
}

/// The CPU affinity of the process's threads, as CPU lists; see the module docs for the form.
pub fn read_affinity(pid: u32, start: u64) -> Result<String, ActionError> {
    read_threads(pid, start, "CPU affinity", get_affinity)
}

pub fn write_affinity(pid: u32, start: u64, text: &str) -> Result<(), ActionError> {
    write_threads(
        pid,
        start,
        text,
        "CPU affinity",
        CpuList::parse,
        set_affinity,
    )
}

/// The offending process of a per-process rule, and its start time.
fn offender(breach: &Breach, kind: &str) -> Result<(u32, u64), ActionError> {
    let Target::Process { pid, .. } = &breach.target else {
        return Err(ActionError::Unavailable(format!(
            "a {kind} action acts on the offending process, but this breach is about {:?}",
            breach.target
        )));
    };
    Ok((*pid, start_time(*pid)?))
}

/// Sets the nice value of the offending process.
#[derive(Debug)]
pub struct Nice {
    nice: i32,
}

impl Nice {
    pub(super) fn build(action: &FileAction, at: &Range<usize>) -> Result<Self, Invalid> {
        let value = super::required(
            &action.value,
            "value",
            "nice",
            at,
            "{ type = \"nice\", value = 10 }",
        )?;
        let nice = check_nice(&value.get_ref().text()).map_err(|m| {
            Invalid::new(
                value.span(),
                "value",
                format!("{m} (19 is the lowest priority, -20 the highest)"),
            )
        })?;
        Ok(Self { nice })
    }
}

impl Action for Nice {
    fn kind(&self) -> &'static str {
        "nice"
    }

    fn capabilities(&self) -> Vec<(Cap, &'static str)> {
        vec![(Cap::SYS_NICE, OTHER_USERS)]
    }

    fn describe(&self) -> String {
        format!("nice {} for the offending process", self.nice)
    }

    fn plan(&self, breach: &Breach) -> Result<Vec<Step>, ActionError> {
        let (pid, start_time) = offender(breach, "nice")?;
        Ok(vec![Step::Set {
            knob: Knob::Nice { pid, start_time },
            value: self.nice.to_string(),
        }])
    }
}

/// Sets the CPU affinity of the offending process.
#[derive(Debug)]
pub struct Affinity {
    cpus: CpuList,
}

impl Affinity {
    pub(super) fn build(action: &FileAction, at: &Range<usize>) -> Result<Self, Invalid> {
        let cpus = super::required(
            &action.cpus,
            "cpus",
            "affinity",
            at,
            "{ type = \"affinity\", cpus = \"0-3\" }",
        )?;
        let list = super::cpu_governor::online_list(cpus.get_ref())
            .map_err(|m| Invalid::new(cpus.span(), "cpus", m))?;
        Ok(Self { cpus: list })
    }
}

impl Action for Affinity {
    fn kind(&self) -> &'static str {
        "affinity"
    }

    fn capabilities(&self) -> Vec<(Cap, &'static str)> {
        vec![(Cap::SYS_NICE, OTHER_USERS)]
    }

    fn describe(&self) -> String {
        format!("affinity {} for the offending process", self.cpus)
    }

    fn plan(&self, breach: &Breach) -> Result<Vec<Step>, ActionError> {
        let online = CpuList::online()?;
        if let Some(missing) = self.cpus.missing_from(&online) {
            return Err(ActionError::Unavailable(format!(
                "CPU {missing} is not online any more (online CPUs: {online})"
            )));
        }
        let (pid, start_time) = offender(breach, "affinity")?;
        Ok(vec![Step::Set {
            knob: Knob::Affinity { pid, start_time },
            value: self.cpus.to_string(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader},
        process::Stdio,
        time::Duration,
    };

    use observer_tests::ChildGuard;

    use super::super::Per;
    use super::super::testing::{breach, built, invalid};
    use super::*;

    /// Set in the environment of [`child_with_threads`] when a test runs it as its child.
    const CHILD_ENV: &str = "OBSERVER_TEST_THREADED_CHILD";
    const THREADS: usize = 3;

    /// Not a test: the child process of the tests below (a process with several threads, which
    /// the test binary itself provides), run by [`spawn_threaded`].
    #[test]
    #[ignore = "the child process of the nice and affinity tests, which run it themselves"]
    fn child_with_threads() {
        use std::io::Write;
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        for _ in 0..THREADS {
            std::thread::spawn(|| std::thread::sleep(Duration::from_secs(120)));
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready").unwrap();
        out.flush().unwrap();
        std::thread::sleep(Duration::from_secs(120));
    }

    /// Starts [`child_with_threads`]; killed when the guard drops.
    fn spawn_threaded() -> (ChildGuard, u32) {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "rules::actions::process::tests::child_with_threads",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let guard = ChildGuard::new(child);
        let pid = guard.id();
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l == "ready");
        assert!(ready, "the child exited before it was ready");
        (guard, pid)
    }

    /// Field `n` (1-based) of /proc/<pid>/task/<tid>/stat, read independently of the code under
    /// test.
    fn thread_stat(pid: u32, tid: u32, n: usize) -> String {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        after.split_whitespace().nth(n - 3).unwrap().to_owned()
    }

    fn nices(pid: u32) -> Vec<String> {
        threads(pid)
            .unwrap()
            .into_iter()
            .map(|tid| thread_stat(pid, tid, 19))
            .collect()
    }

    fn allowed_lists(pid: u32) -> Vec<String> {
        threads(pid)
            .unwrap()
            .into_iter()
            .map(|tid| {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                    .unwrap()
                    .trim()
                    .to_owned()
            })
            .collect()
    }

    fn process_target(pid: u32) -> Target {
        Target::Process {
            pid,
            name: "child".to_owned(),
            cgroup_path: "/".to_owned(),
        }
    }

    #[test]
    fn the_start_time_is_field_22_even_with_parentheses_in_the_name() {
        let fields: Vec<String> = (4..=52).map(|n| n.to_string()).collect();
        let stat = format!("123 (we(ir)d ) name) S {}\n", fields.join(" "));
        assert_eq!(parse_start_time(&stat), Some(22));
        assert_eq!(parse_start_time("123 (x) S 4 5"), None);
        let me = std::process::id();
        assert!(start_time(me).unwrap() > 0);
    }

    #[test]
    fn thread_texts_parse() {
        assert_eq!(
            parse_threads("10").unwrap(),
            ("10".to_owned(), BTreeMap::new())
        );
        assert_eq!(
            parse_threads("0-1 12=0 13=1").unwrap(),
            (
                "0-1".to_owned(),
                BTreeMap::from([(12, "0".to_owned()), (13, "1".to_owned())])
            )
        );
        assert_eq!(parse_threads("").unwrap_err(), "an empty value");
        assert_eq!(
            parse_threads("0 x=1").unwrap_err(),
            "\"x=1\" is not <thread id>=<value>"
        );
    }

    #[test]
    fn nice_and_affinity_values_are_checked() {
        let online = CpuList::online().unwrap();
        for (snippet, field, message, at) in [
            (
                r#"{ type = "nice", value = 20 }"#.to_owned(),
                "value",
                "\"20\" is not a nice value from -20 to 19 (19 is the lowest priority, -20 the \
                 highest)"
                    .to_owned(),
                "20",
            ),
            (
                r#"{ type = "nice", value = "low" }"#.to_owned(),
                "value",
                "\"low\" is not a nice value from -20 to 19 (19 is the lowest priority, -20 the \
                 highest)"
                    .to_owned(),
                "\"low\"",
            ),
            (
                r#"{ type = "nice" }"#.to_owned(),
                "value",
                "a nice action needs `value`, e.g. { type = \"nice\", value = 10 }".to_owned(),
                r#"{ type = "nice" }"#,
            ),
            (
                r#"{ type = "affinity", cpus = "1000" }"#.to_owned(),
                "cpus",
                format!("CPU 1000 of 1000 is not online (online CPUs: {online})"),
                "\"1000\"",
            ),
            (
                r#"{ type = "affinity" }"#.to_owned(),
                "cpus",
                "an affinity action needs `cpus`, e.g. { type = \"affinity\", cpus = \"0-3\" }"
                    .to_owned(),
                r#"{ type = "affinity" }"#,
            ),
        ] {
            assert_eq!(
                invalid(&snippet, Per::Process),
                (field, message, at.to_owned()),
                "{snippet}"
            );
        }
        let nice = built(r#"{ type = "nice", value = 5 }"#, Per::Process);
        assert_eq!(
            nice.plan(&breach(Target::Host)).unwrap_err().to_string(),
            "a nice action acts on the offending process, but this breach is about Host"
        );
    }

    /// Nice values of a child process with several threads: planned for the offending process,
    /// set on every thread (checked in /proc/<pid>/task/*/stat), read back, a thread that
    /// differs shown and restored, and nothing done once the pid's start time differs.
    #[test]
    fn nice_applies_to_every_thread_and_restores_them() {
        observer_tests::require_root!();
        let (child, pid) = spawn_threaded();
        assert!(threads(pid).unwrap().len() > THREADS, "{:?}", threads(pid));
        let start = start_time(pid).unwrap();
        let action = built(r#"{ type = "nice", value = 10 }"#, Per::Process);
        let steps = action.plan(&breach(process_target(pid))).unwrap();
        let knob = Knob::Nice {
            pid,
            start_time: start,
        };
        assert_eq!(
            steps,
            [Step::Set {
                knob: knob.clone(),
                value: "10".to_owned()
            }]
        );
        let original = knob.read().unwrap();
        // The child inherited one nice value (the test's) on all its threads.
        assert!(
            original.parse::<i32>().is_ok_and(|n| n != 10 && n != 3),
            "{original}"
        );
        knob.write("10").unwrap();
        assert!(nices(pid).iter().all(|n| n == "10"), "{:?}", nices(pid));
        assert_eq!(knob.read().unwrap(), "10");

        // One thread reniced by someone else shows, and writing the text back restores it.
        let other = *threads(pid).unwrap().last().unwrap();
        set_nice(other, &3).unwrap();
        let mixed = knob.read().unwrap();
        assert_eq!(mixed, format!("10 {other}=3"));
        knob.write(&original).unwrap();
        assert!(
            nices(pid).iter().all(|n| *n == original),
            "{:?}",
            nices(pid)
        );
        knob.write(&mixed).unwrap();
        assert_eq!(knob.read().unwrap(), mixed);
        assert_eq!(thread_stat(pid, other, 19), "3");
        knob.write(&original).unwrap();
        assert_eq!(knob.read().unwrap(), original);

        // Another process under the same pid (a different start time) is never touched.
        let stranger = Knob::Nice {
            pid,
            start_time: start + 1,
        };
        let refused = format!(
            "process {pid} has exited and its pid now belongs to another process (started at \
             tick {start}, not {}); leaving it alone",
            start + 1
        );
        assert_eq!(stranger.read().unwrap_err().to_string(), refused);
        let err = stranger.write("19").unwrap_err();
        assert!(matches!(err, ActionError::Gone(_)), "{err:?}");
        assert!(
            nices(pid).iter().all(|n| *n == original),
            "{:?}",
            nices(pid)
        );

        let err = knob.write("99").unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "set the nice value of process {pid} to \"99\": \"99\" is not a nice value from \
                 -20 to 19"
            )
        );

        drop(child);
        let gone = format!("process {pid} has exited");
        assert_eq!(knob.read().unwrap_err().to_string(), gone);
        assert_eq!(
            action
                .plan(&breach(process_target(pid)))
                .unwrap_err()
                .to_string(),
            gone
        );
    }

    /// CPU affinity of a child process with several threads (checked in
    /// /proc/<pid>/task/*/status), set and restored.
    #[test]
    fn affinity_applies_to_every_thread_and_restores_them() {
        observer_tests::require_root!();
        let (_child, pid) = spawn_threaded();
        let start = start_time(pid).unwrap();
        let online = CpuList::online().unwrap();
        let first = online.iter().next().unwrap();
        let action = built(
            &format!(r#"{{ type = "affinity", cpus = "{first}" }}"#),
            Per::Process,
        );
        let knob = Knob::Affinity {
            pid,
            start_time: start,
        };
        assert_eq!(
            action.plan(&breach(process_target(pid))).unwrap(),
            [Step::Set {
                knob: knob.clone(),
                value: first.to_string()
            }]
        );
        let original = knob.read().unwrap();
        assert_eq!(allowed_lists(pid)[0], original, "the kernel's form");
        knob.write(&first.to_string()).unwrap();
        assert!(
            allowed_lists(pid).iter().all(|l| *l == first.to_string()),
            "{:?}",
            allowed_lists(pid)
        );
        assert_eq!(knob.read().unwrap(), first.to_string());
        knob.write(&original).unwrap();
        assert!(
            allowed_lists(pid).iter().all(|l| *l == original),
            "{:?}",
            allowed_lists(pid)
        );
        assert_eq!(knob.read().unwrap(), original);
        let err = knob.write("0-").unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "set the CPU affinity of process {pid} to \"0-\": \"\" in \"0-\" is not a CPU \
                 number; write CPUs as a list such as \"0-3,8\""
            )
        );
    }
}
