//! The settings observer has changed and not yet put back, persisted *before* each change
//! (`tuning.state`), so that an observer killed mid-change restores the originals when it starts
//! again. The file is replaced atomically (write, fsync, rename, fsync the directory).

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::actions::Knob;

/// One changed setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Managed {
    pub knob: Knob,
    /// The value before observer changed it: what is restored.
    pub original: String,
    /// The value observer set (as read back): anything else means someone else changed it.
    pub set: String,
    pub rule: String,
    /// The journal id of the change.
    pub id: String,
}

#[derive(Default, Serialize, Deserialize)]
struct File {
    managed: Vec<Managed>,
}

/// The persisted list.
pub struct State {
    path: PathBuf,
    managed: Vec<Managed>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: not a state file observer wrote ({message}); it lists settings to restore, so \
         observer will not overwrite it: restore them by hand if needed and remove the file",
        path.display()
    )]
    Corrupt { path: PathBuf, message: String },
}

impl State {
    /// Reads the state at `path`; a missing file is an empty state.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let managed = match fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice::<File>(&bytes)
                    .map_err(|e| StateError::Corrupt {
                        path: path.into(),
                        message: e.to_string(),
                    })?
                    .managed
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(StateError::Io {
                    path: path.into(),
                    what: "cannot read",
                    source,
                });
            }
        };
        Ok(Self {
            path: path.into(),
            managed,
        })
    }

    pub fn managed(&self) -> &[Managed] {
        &self.managed
    }

    pub fn get(&self, knob: &Knob) -> Option<&Managed> {
        self.managed.iter().find(|m| &m.knob == knob)
    }

    /// Adds an entry and persists it.
    pub fn add(&mut self, entry: Managed) -> Result<(), StateError> {
        self.managed.retain(|m| m.knob != entry.knob);
        self.managed.push(entry);
        self.save()
    }

    /// Updates the value observer set (as read back after the change) and persists it.
    pub fn set_value(&mut self, knob: &Knob, set: String) -> Result<(), StateError> {
        if let Some(m) = self.managed.iter_mut().find(|m| &m.knob == knob) {
            m.set = set;
        }
        self.save()
    }

    /// Drops an entry and persists the rest.
    pub fn remove(&mut self, knob: &Knob) -> Result<(), StateError> {
        self.managed.retain(|m| &m.knob != knob);
        self.save()
    }

    fn save(&self) -> Result<(), StateError> {
        let io = |what| {
            move |source| StateError::Io {
                path: self.path.clone(),
                what,
                source,
            }
        };
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("cannot create the directory"))?;
        let tmp = self.path.with_extension("tmp");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("cannot write"))?;
        let body = serde_json::to_vec_pretty(&File {
            managed: self.managed.clone(),
        })
        .expect("the state always serializes");
        f.write_all(&body).map_err(io("cannot write"))?;
        f.sync_all().map_err(io("cannot sync"))?;
        fs::rename(&tmp, &self.path).map_err(io("cannot replace"))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("cannot sync the directory"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_persist_across_opens_and_corruption_is_refused() {
        let dir = std::env::temp_dir().join(format!("observer-state-{}", std::process::id()));
        let path = dir.join("managed.json");
        let mut s = State::open(&path).unwrap();
        assert!(s.managed().is_empty());
        let knob = Knob::Sysctl {
            key: "net.core.somaxconn".into(),
        };
        s.add(Managed {
            knob: knob.clone(),
            original: "4096".into(),
            set: "8192".into(),
            rule: "r".into(),
            id: "x-1".into(),
        })
        .unwrap();
        let s2 = State::open(&path).unwrap();
        assert_eq!(s2.get(&knob).unwrap().original, "4096");
        s.remove(&knob).unwrap();
        assert!(State::open(&path).unwrap().managed().is_empty());
        fs::write(&path, "{ not json").unwrap();
        let e = State::open(&path).err().unwrap().to_string();
        assert!(e.contains("restore them by hand"), "{e}");
        fs::remove_dir_all(dir).unwrap();
    }
}
