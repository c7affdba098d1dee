//! The audit trail: one JSON object per line, appended (never rewritten) to `tuning.journal`,
//! one per decision of the rule engine, each with a stable id. `observer actions` reads it back.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead as _, BufReader, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// What became of a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Dry-run: what would have been done, nothing changed.
    DryRun,
    /// The change was made; `before` and `after` are the values read before and after.
    Applied,
    /// The setting already had the wanted value.
    Unchanged,
    /// The action or the change failed; `message` says why.
    Failed,
    /// Not carried out: a rate limit (`message` says which).
    RateLimited,
    /// Not carried out: another rule manages that setting.
    Conflict,
    /// A `log` action: the breach is recorded, nothing else.
    Logged,
    /// An `exec` action's command ran and exited 0.
    Ran,
    /// A change was put back (the rule cleared, or observer is exiting).
    RolledBack,
    /// Someone else changed a setting observer manages: it is no longer managed or restored.
    OutsideChange,
    /// At start-up, a change left by an observer that did not exit cleanly was put back.
    Restored,
    /// Experiment: the target did not get worse; the change stays.
    Kept,
    /// Experiment: the target got worse; the change was put back.
    Reverted,
    /// The rule's condition cleared.
    Cleared,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::DryRun => "dry_run",
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Failed => "failed",
            Self::RateLimited => "rate_limited",
            Self::Conflict => "conflict",
            Self::Logged => "logged",
            Self::Ran => "ran",
            Self::RolledBack => "rolled_back",
            Self::OutsideChange => "outside_change",
            Self::Restored => "restored",
            Self::Kept => "kept",
            Self::Reverted => "reverted",
            Self::Cleared => "cleared",
        }
    }

    /// Whether it is worth a warning rather than an info line.
    pub fn is_problem(self) -> bool {
        matches!(
            self,
            Self::Failed
                | Self::OutsideChange
                | Self::Reverted
                | Self::RateLimited
                | Self::Conflict
        )
    }
}

/// One decision. Fields that do not apply are left out of the JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Unique and stable: `<run>-<sequence>`, where run identifies the agent's start.
    pub id: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub rule: String,
    /// `dry-run` or `enforce`.
    pub mode: String,
    /// `fire`, `clear`, `experiment`, `watch` (a managed value checked), `exit`, `startup`.
    pub event: String,
    pub outcome: Option<Outcome>,
    /// The rule's condition: `runqueue p99 per cgroup > 5.0ms`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub condition: String,
    /// What the rule judged: `host`, `cgroup /a/b`, `process 123 (nginx)`...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Of `observed` and `threshold`: `ns` or `1/s`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<f64>,
    /// The action, as configured: `sysctl net.core.somaxconn=4096`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// The setting changed or checked: `sysctl net.core.somaxconn`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub knob: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Experiment verdicts: the statistic and key percentiles before and after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<serde_json::Value>,
}

impl Record {
    /// The decision in a few words, for log lines and listings: `dry_run sysctl
    /// net.core.somaxconn "4096" -> "65535"`; the setting changed says more than the action
    /// that asked for it, which is named only when there is no setting (log, exec).
    pub fn decision(&self) -> String {
        let outcome = self.outcome.map_or("-", Outcome::name);
        let what = if self.knob.is_empty() {
            &self.action
        } else {
            &self.knob
        };
        let change = match (&self.before, &self.after) {
            (Some(b), Some(a)) => format!(" {b:?} -> {a:?}"),
            _ => String::new(),
        };
        format!("{outcome} {what}{change}").trim_end().to_owned()
    }
}

/// The journal file, open for appending.
pub struct Journal {
    path: PathBuf,
    file: File,
    run: String,
    next: u64,
}

/// Why the journal cannot be written or read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {what}: {source}", path.display())]
pub struct JournalError {
    path: PathBuf,
    what: &'static str,
    #[source]
    source: io::Error,
}

impl Journal {
    /// Opens (creating it, 0600, and its directory, 0700) the journal at `path`.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let error = |what| {
            move |source| JournalError {
                path: path.into(),
                what,
                source,
            }
        };
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(error("cannot create the journal's directory"))?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(error("cannot open the journal for appending"))?;
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Self {
            path: path.into(),
            file,
            // Seconds and microseconds of the start: unique per run on one host.
            run: format!("{:x}.{:05x}", started.as_secs(), started.subsec_micros()),
            next: 1,
        })
    }

    /// The next id.
    pub fn id(&mut self) -> String {
        let id = format!("{}-{}", self.run, self.next);
        self.next += 1;
        id
    }

    /// Appends `record` and syncs it to disk: a decision is on disk before it is exported.
    pub fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(record).expect("a record always serializes");
        line.push(b'\n');
        let path = self.path.clone();
        let error = |what| {
            let path = path.clone();
            move |source| JournalError { path, what, source }
        };
        self.file
            .write_all(&line)
            .map_err(error("cannot append to the journal"))?;
        self.file
            .sync_data()
            .map_err(error("cannot sync the journal"))
    }
}

/// Every record in the journal at `path`, oldest first. A line that does not parse (a torn
/// write at a crash) is reported with its line number rather than hidden.
pub fn read(path: &Path) -> Result<Vec<Result<Record, String>>, JournalError> {
    let file = File::open(path).map_err(|source| JournalError {
        path: path.into(),
        what: "cannot open the journal",
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| JournalError {
            path: path.into(),
            what: "cannot read the journal",
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .map_err(|e| format!("{}:{}: not a journal record: {e}", path.display(), i + 1)),
        );
    }
    Ok(out)
}

/// `time` as RFC 3339 in UTC, to the millisecond: `2026-11-28T10:30:00.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_862_400_123);
        assert_eq!(rfc3339(t), "2026-11-28T10:40:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn records_are_appended_and_read_back_with_unique_ids() {
        let dir = std::env::temp_dir().join(format!("observer-journal-{}", std::process::id()));
        let path = dir.join("sub/actions.jsonl");
        let mut j = Journal::open(&path).unwrap();
        let a = Record {
            id: j.id(),
            rule: "r".into(),
            outcome: Some(Outcome::DryRun),
            before: Some("128".into()),
            ..Record::default()
        };
        let b = Record {
            id: j.id(),
            outcome: Some(Outcome::Applied),
            ..a.clone()
        };
        assert_ne!(a.id, b.id);
        j.append(&a).unwrap();
        drop(j);
        let mut j = Journal::open(&path).unwrap();
        j.append(&b).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{torn")
            .unwrap();
        let read = read(&path).unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(read[0].as_ref().unwrap(), &a);
        assert_eq!(read[1].as_ref().unwrap(), &b);
        assert!(read[2].as_ref().unwrap_err().contains("actions.jsonl:3"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
