//! The files an import will write, decided in full before anything is written: every
//! destination is checked first (none may exist), then each is written atomically.

use crate::fsutil;
use crate::userdb::{Credential, UserDb};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Bytes {
        data: Vec<u8>,
        mode: u32,
    },
    /// A users file, written through tambo's userdb (its format, mode 0600).
    Users(BTreeMap<String, Credential>),
    /// A symbolic link to this target (certbot's `live/` links stay links).
    Symlink(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Relative to the tambo config folder.
    pub rel: PathBuf,
    pub content: Content,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub outputs: Vec<Output>,
}

impl Plan {
    pub fn add(&mut self, rel: impl Into<PathBuf>, content: Content) {
        self.outputs.push(Output {
            rel: rel.into(),
            content,
        });
    }

    /// The first destination under `root` that exists already (a dangling link counts).
    pub fn first_existing(&self, root: &Path) -> Option<PathBuf> {
        self.outputs
            .iter()
            .map(|o| root.join(&o.rel))
            .find(|p| p.symlink_metadata().is_ok())
    }

    /// Leaves out every output whose unit exists under `root` already, so that nothing is
    /// overwritten and nothing is merged into what is there: a unit is a domain folder
    /// (`domains/<domain>`), a certificate folder (`conf/certs/<name>`), or else the file
    /// itself (`conf/tambo.json`, `hooks/post-data`). Returns the units left out, in order.
    pub fn skip_existing(&mut self, root: &Path) -> Vec<PathBuf> {
        let mut skipped: Vec<PathBuf> = Vec::new();
        self.outputs.retain(|o| {
            let unit = unit_of(&o.rel);
            if root.join(&unit).symlink_metadata().is_err() {
                return true;
            }
            if !skipped.contains(&unit) {
                skipped.push(unit);
            }
            false
        });
        skipped
    }

    /// Writes every output, in order; returns the paths written. Stops at the first failure,
    /// naming the path.
    pub fn write(&self, root: &Path) -> Result<Vec<PathBuf>, (PathBuf, io::Error)> {
        let mut written = Vec::new();
        for o in &self.outputs {
            let path = root.join(&o.rel);
            write_one(&path, &o.content).map_err(|e| (path.clone(), e))?;
            written.push(path);
        }
        Ok(written)
    }
}

/// The folder or file an output belongs to, as a whole (see [`Plan::skip_existing`]).
fn unit_of(rel: &Path) -> PathBuf {
    let parts: Vec<_> = rel.components().collect();
    let depth = match parts.first().and_then(|c| c.as_os_str().to_str()) {
        Some("domains") => 2,
        Some("conf") if parts.get(1).and_then(|c| c.as_os_str().to_str()) == Some("certs") => 3,
        _ => parts.len(),
    };
    parts.iter().take(depth.min(parts.len())).collect()
}

fn write_one(path: &Path, content: &Content) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent folder"))?;
    fsutil::create_private_dir_all(dir)?;
    match content {
        Content::Bytes { data, mode } => fsutil::write_atomic(path, data, *mode),
        Content::Users(users) => {
            let mut db = UserDb::load(path).map_err(io::Error::other)?;
            for (name, credential) in users {
                db.set(name, credential.clone());
            }
            db.save()
        }
        Content::Symlink(target) => symlink_atomic(target, path, dir),
    }
}

/// A link made under a temp name and renamed into place, so it appears whole or not at all.
fn symlink_atomic(target: &Path, path: &Path, dir: &Path) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{name}.tmp.{}.{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::os::unix::fs::symlink(target, &temp)?;
    if let Err(e) = std::fs::rename(&temp, path) {
        // Best effort: the rename error is the one worth reporting.
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    fsutil::fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_all_kinds_and_refuses_existing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cfg");
        let mut plan = Plan::default();
        let bytes = |data: &[u8], mode| Content::Bytes {
            data: data.to_vec(),
            mode,
        };
        plan.add("conf/tambo.json", bytes(b"{}\n", 0o644));
        plan.add("hooks/post-data", bytes(b"#!/bin/sh\n", 0o755));
        let users = BTreeMap::from([("bob".to_string(), Credential::ReceiveOnly)]);
        plan.add("domains/x.example/users", Content::Users(users));
        plan.add(
            "conf/certs/mx",
            Content::Symlink("/etc/letsencrypt/live/mx".into()),
        );
        assert_eq!(plan.first_existing(&root), None);

        let written = plan.write(&root).unwrap();
        assert_eq!(written.len(), 4);
        let mode = |p: &str| {
            std::fs::symlink_metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(
            std::fs::read(root.join("conf/tambo.json")).unwrap(),
            b"{}\n"
        );
        assert_eq!(mode("hooks/post-data"), 0o755);
        assert_eq!(mode("domains/x.example/users"), 0o600);
        assert_eq!(mode("domains/x.example"), 0o700);
        let users = std::fs::read_to_string(root.join("domains/x.example/users")).unwrap();
        assert_eq!(users, "{\n  \"bob\": \"!\"\n}\n");
        let link = std::fs::read_link(root.join("conf/certs/mx")).unwrap();
        assert_eq!(link, Path::new("/etc/letsencrypt/live/mx"));
        let leftovers: Vec<_> = std::fs::read_dir(root.join("conf/certs"))
            .unwrap()
            .collect();
        assert_eq!(leftovers.len(), 1);

        // Everything exists now, the dangling link included.
        assert_eq!(
            plan.first_existing(&root),
            Some(root.join("conf/tambo.json"))
        );
        let mut links_only = Plan::default();
        links_only.add("conf/certs/mx", Content::Symlink("/nowhere".into()));
        assert_eq!(
            links_only.first_existing(&root),
            Some(root.join("conf/certs/mx"))
        );
    }

    #[test]
    fn existing_units_are_left_out_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for dir in ["conf", "domains/old.example", "conf/certs/mx"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("conf/tambo.json"), "{}").unwrap();
        let mut plan = Plan::default();
        let bytes = || Content::Bytes {
            data: b"x".to_vec(),
            mode: 0o600,
        };
        // (output, kept)
        let cases = [
            ("conf/certs/mx/fullchain.pem", false),
            ("conf/certs/mx/privkey.pem", false),
            ("conf/certs/other/fullchain.pem", true),
            ("domains/old.example/users", false),
            ("domains/old.example/aliases", false),
            ("domains/new.example/users", true),
            ("domains/new.example/dkim:s.pem", true),
            ("hooks/post-data", true),
            ("conf/tambo.json", false),
        ];
        for (rel, _) in cases {
            plan.add(rel, bytes());
        }
        let skipped = plan.skip_existing(root);
        assert_eq!(
            skipped,
            [
                PathBuf::from("conf/certs/mx"),
                PathBuf::from("domains/old.example"),
                PathBuf::from("conf/tambo.json"),
            ]
        );
        let kept: Vec<_> = plan.outputs.iter().map(|o| o.rel.clone()).collect();
        let want: Vec<PathBuf> = cases
            .iter()
            .filter(|(_, keep)| *keep)
            .map(|(rel, _)| PathBuf::from(rel))
            .collect();
        assert_eq!(kept, want);
        assert_eq!(plan.first_existing(root), None);
    }

    #[test]
    fn write_failure_names_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("conf"), b"a file where a folder goes").unwrap();
        let mut plan = Plan::default();
        plan.add(
            "conf/tambo.json",
            Content::Bytes {
                data: b"{}".to_vec(),
                mode: 0o644,
            },
        );
        let (path, _) = plan.write(tmp.path()).unwrap_err();
        assert_eq!(path, tmp.path().join("conf/tambo.json"));
    }
}
