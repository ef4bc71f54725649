//! A host directory seen as `/`, the way a process chrooted into it would see it.
//!
//! Library and module lookups happen "inside" a root (the build host's `/`, or an image root
//! being prepared). Symlinks there must be followed relative to that root: an absolute link
//! `/lib64/ld.so -> /lib/ld.so` in an image root means `<root>/lib/ld.so`, not the build host's
//! `/lib/ld.so`, and `..` never climbs above the root. The symlinks met on the way are reported,
//! because the initramfs must contain them too: the loader opens libraries by the name it looks
//! for, not by their real path.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::RootError;

/// Linux gives up after 40 symlinks in one resolution; so do we.
const MAX_SYMLINK_FOLLOWS: usize = 40;

/// A directory used as the root for path resolution.
#[derive(Clone, Debug)]
pub struct RootFs {
    root: PathBuf,
}

/// One symbolic link met while resolving a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymlinkStep {
    /// Where the link is, absolute inside the root, with every ancestor already resolved
    /// (e.g. `/usr/lib64/ld-linux-x86-64.so.2`).
    pub path: String,
    /// The link's target, verbatim.
    pub target: String,
}

/// The outcome of resolving a path inside a [`RootFs`].
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The symlinks followed, in the order they were met.
    pub links: Vec<SymlinkStep>,
    /// The real path of the object, absolute inside the root, with no symlink in it.
    pub path: String,
    /// The same object as a host path.
    pub host_path: PathBuf,
    /// Metadata of the object (not a symlink).
    pub metadata: fs::Metadata,
}

impl RootFs {
    /// Uses `root` as `/`.
    pub fn new(root: impl Into<PathBuf>) -> RootFs {
        RootFs { root: root.into() }
    }

    /// The host directory used as `/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The host path of a path inside the root, without resolving anything. Use only for paths
    /// that came out of [`RootFs::resolve`] or that contain no `..`.
    pub fn host_path(&self, path_in_root: &str) -> PathBuf {
        self.root.join(path_in_root.trim_start_matches('/'))
    }

    /// Resolves `path` (absolute or relative to the root) following every symlink inside the
    /// root.
    pub fn resolve(&self, path: &str) -> Result<Resolved, RootError> {
        let mut pending: VecDeque<String> = path.split('/').map(str::to_string).collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut links = Vec::new();
        while let Some(component) = pending.pop_front() {
            match component.as_str() {
                "" | "." => continue,
                ".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            resolved.push(component);
            let in_root = format!("/{}", resolved.join("/"));
            let host_path = self.host_path(&in_root);
            let metadata = fs::symlink_metadata(&host_path).map_err(|source| RootError::Io {
                path: host_path.clone(),
                source,
            })?;
            if metadata.file_type().is_symlink() {
                if links.len() >= MAX_SYMLINK_FOLLOWS {
                    return Err(RootError::SymlinkLoop {
                        path: path.to_string(),
                        root: self.root.clone(),
                    });
                }
                let target = read_link_utf8(&host_path)?;
                resolved.pop();
                if target.starts_with('/') {
                    resolved.clear();
                }
                for part in target.split('/').rev() {
                    pending.push_front(part.to_string());
                }
                links.push(SymlinkStep {
                    path: in_root,
                    target,
                });
            } else if !metadata.is_dir() && pending.iter().any(|c| !c.is_empty()) {
                return Err(RootError::NotADirectory {
                    path: path.to_string(),
                    root: self.root.clone(),
                });
            }
        }
        let in_root = format!("/{}", resolved.join("/"));
        let host_path = self.host_path(&in_root);
        let metadata = fs::symlink_metadata(&host_path).map_err(|source| RootError::Io {
            path: host_path.clone(),
            source,
        })?;
        Ok(Resolved {
            links,
            path: in_root,
            host_path,
            metadata,
        })
    }

    /// Resolves `path` and reads the regular file it leads to.
    pub fn read(&self, path: &str) -> Result<(Resolved, Vec<u8>), RootError> {
        let resolved = self.resolve(path)?;
        if !resolved.metadata.is_file() {
            return Err(RootError::Io {
                path: resolved.host_path,
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        let bytes = fs::read(&resolved.host_path).map_err(|source| RootError::Io {
            path: resolved.host_path.clone(),
            source,
        })?;
        Ok((resolved, bytes))
    }

    /// Reads a small text file (e.g. `/etc/ld.so.conf`), `Ok(None)` when it does not exist.
    pub fn read_optional_text(&self, path: &str) -> Result<Option<String>, RootError> {
        match self.read(path) {
            Ok((resolved, bytes)) => {
                String::from_utf8(bytes)
                    .map(Some)
                    .map_err(|_| RootError::NotUtf8 {
                        path: resolved.host_path,
                    })
            }
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Names in a directory inside the root (sorted), `Ok(empty)` when it does not exist.
    pub fn list_dir(&self, path: &str) -> Result<Vec<String>, RootError> {
        let resolved = match self.resolve(path) {
            Ok(resolved) if resolved.metadata.is_dir() => resolved,
            Ok(_) => return Ok(Vec::new()),
            Err(error) if error.is_not_found() => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        let io_error = |source| RootError::Io {
            path: resolved.host_path.clone(),
            source,
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(&resolved.host_path).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            match entry.file_name().to_str() {
                Some(name) => names.push(name.to_string()),
                None => continue, // names that are not UTF-8 cannot be archive paths anyway
            }
        }
        names.sort();
        Ok(names)
    }
}

fn read_link_utf8(host_path: &Path) -> Result<String, RootError> {
    let target = fs::read_link(host_path).map_err(|source| RootError::Io {
        path: host_path.to_path_buf(),
        source,
    })?;
    let bytes = target.as_os_str().as_bytes();
    std::str::from_utf8(bytes)
        .map(str::to_string)
        .map_err(|_| RootError::NotUtf8 {
            path: host_path.to_path_buf(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A small merged-/usr tree: lib -> usr/lib, lib64 -> usr/lib64,
    /// usr/lib64/ld.so -> ../lib/real-ld.so, plus an absolute link.
    fn merged_usr_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/lib/x86_64-linux-gnu")).unwrap();
        fs::create_dir_all(root.join("usr/lib64")).unwrap();
        fs::write(root.join("usr/lib/real-ld.so"), "ld").unwrap();
        fs::write(root.join("usr/lib/x86_64-linux-gnu/libc.so.6"), "libc").unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("usr/lib64", root.join("lib64")).unwrap();
        symlink("../lib/real-ld.so", root.join("usr/lib64/ld.so")).unwrap();
        symlink("/lib/x86_64-linux-gnu/libc.so.6", root.join("abs-libc")).unwrap();
        symlink("loop-b", root.join("loop-a")).unwrap();
        symlink("loop-a", root.join("loop-b")).unwrap();
        symlink("../../../../etc/passwd", root.join("escape")).unwrap();
        dir
    }

    #[test]
    fn follows_directory_and_file_links_recording_each() {
        let dir = merged_usr_root();
        let rootfs = RootFs::new(dir.path());
        let resolved = rootfs.resolve("/lib64/ld.so").unwrap();
        assert_eq!(resolved.path, "/usr/lib/real-ld.so");
        assert_eq!(
            resolved.links,
            [
                SymlinkStep {
                    path: "/lib64".into(),
                    target: "usr/lib64".into()
                },
                SymlinkStep {
                    path: "/usr/lib64/ld.so".into(),
                    target: "../lib/real-ld.so".into()
                },
            ]
        );
        assert!(resolved.metadata.is_file());
    }

    #[test]
    fn absolute_links_stay_inside_the_root() {
        let dir = merged_usr_root();
        let rootfs = RootFs::new(dir.path());
        let (resolved, bytes) = rootfs.read("abs-libc").unwrap();
        assert_eq!(resolved.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(bytes, b"libc");
        // `..` past the root stays at the root: <root>/etc/passwd does not exist.
        assert!(rootfs.resolve("/escape").unwrap_err().is_not_found());
    }

    #[test]
    fn loops_missing_files_and_files_as_directories_are_errors() {
        let dir = merged_usr_root();
        let rootfs = RootFs::new(dir.path());
        assert!(matches!(
            rootfs.resolve("/loop-a"),
            Err(RootError::SymlinkLoop { .. })
        ));
        assert!(rootfs.resolve("/nope").unwrap_err().is_not_found());
        assert!(matches!(
            rootfs.resolve("/usr/lib/real-ld.so/x"),
            Err(RootError::NotADirectory { .. })
        ));
        assert_eq!(rootfs.read_optional_text("/etc/ld.so.conf").unwrap(), None);
        assert_eq!(
            rootfs.list_dir("/lib").unwrap(),
            ["real-ld.so", "x86_64-linux-gnu"]
        );
        assert!(rootfs.list_dir("/missing").unwrap().is_empty());
    }
}
