//! Paths inside the archive.
//!
//! An archive path is what the kernel will create relative to the initramfs root. It is stored
//! normalised — no leading `/`, no empty or `.` components — so that `"/bin//sh"`, `"bin/sh"`
//! and `"./bin/sh"` are the same entry. A `..` component is refused outright rather than
//! resolved: a builder that climbs is almost always a bug, and refusing it keeps every entry
//! below the root by construction.

use std::fmt;

use crate::error::PathError;

/// Longest path the kernel accepts (`PATH_MAX` minus the terminating NUL).
pub const MAX_PATH_LEN: usize = 4095;

/// A validated, normalised path inside the archive (e.g. `usr/lib/libc.so.6`).
///
/// Ordering is byte-wise on the normalised text, which puts every directory before the
/// entries below it — the order the kernel's unpacker needs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArchivePath(String);

impl ArchivePath {
    /// Validates and normalises `path`. A leading `/` is allowed and means the archive root.
    pub fn new(path: &str) -> Result<Self, PathError> {
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        if path.contains('\0') {
            return Err(PathError::Nul);
        }
        let mut normalised = String::with_capacity(path.len());
        for component in path.split('/') {
            match component {
                "" | "." => continue,
                ".." => return Err(PathError::ParentComponent),
                name => {
                    if !normalised.is_empty() {
                        normalised.push('/');
                    }
                    normalised.push_str(name);
                }
            }
        }
        if normalised.is_empty() {
            return Err(PathError::Root);
        }
        if normalised.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong { max: MAX_PATH_LEN });
        }
        Ok(ArchivePath(normalised))
    }

    /// Builds a path from components already known to be valid names (no `/`, `.`, `..`, NUL).
    pub(crate) fn from_components<'a>(
        components: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, PathError> {
        let joined = components.into_iter().collect::<Vec<_>>().join("/");
        ArchivePath::new(&joined)
    }

    /// The normalised text, without a leading `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path as seen from inside the booted system, with a leading `/`.
    pub fn to_absolute(&self) -> String {
        format!("/{}", self.0)
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The containing directory, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<ArchivePath> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| ArchivePath(parent.to_string()))
    }

    /// Every proper ancestor, outermost first (`a`, `a/b` for `a/b/c`).
    pub fn ancestors(&self) -> Vec<ArchivePath> {
        self.0
            .match_indices('/')
            .map(|(index, _)| ArchivePath(self.0[..index].to_string()))
            .collect()
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The smallest key that sorts before every descendant (`dir/`); descendants are the
    /// contiguous run of keys starting with it.
    pub(crate) fn descendants_start(&self) -> ArchivePath {
        ArchivePath(format!("{}/", self.0))
    }
}

impl fmt::Display for ArchivePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_slashes_and_dots() {
        for input in ["/bin/sh", "bin/sh", "./bin/sh", "bin//sh/", "//bin/./sh"] {
            assert_eq!(
                ArchivePath::new(input).unwrap().as_str(),
                "bin/sh",
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_bad_paths() {
        assert_eq!(ArchivePath::new(""), Err(PathError::Empty));
        assert_eq!(ArchivePath::new("/"), Err(PathError::Root));
        assert_eq!(ArchivePath::new("./."), Err(PathError::Root));
        assert_eq!(ArchivePath::new("a/../b"), Err(PathError::ParentComponent));
        assert_eq!(ArchivePath::new("/.."), Err(PathError::ParentComponent));
        assert_eq!(ArchivePath::new("a\0b"), Err(PathError::Nul));
        let long = "a/".repeat(3000);
        assert_eq!(
            ArchivePath::new(&long),
            Err(PathError::TooLong { max: MAX_PATH_LEN })
        );
    }

    #[test]
    fn dotdot_inside_a_name_is_a_name() {
        assert_eq!(ArchivePath::new("a/..b").unwrap().as_str(), "a/..b");
    }

    #[test]
    fn parent_ancestors_and_name() {
        let path = ArchivePath::new("usr/lib/libc.so.6").unwrap();
        assert_eq!(path.parent().unwrap().as_str(), "usr/lib");
        let ancestors: Vec<_> = path.ancestors().into_iter().map(|a| a.0).collect();
        assert_eq!(ancestors, ["usr", "usr/lib"]);
        assert_eq!(path.file_name(), "libc.so.6");
        assert_eq!(path.to_absolute(), "/usr/lib/libc.so.6");
        assert!(ArchivePath::new("init").unwrap().parent().is_none());
    }

    #[test]
    fn sorts_parents_before_children() {
        let mut paths: Vec<_> = ["a/b", "a.b", "a", "a/b/c", "a-b"]
            .iter()
            .map(|p| ArchivePath::new(p).unwrap())
            .collect();
        paths.sort();
        let position = |p: &str| paths.iter().position(|x| x.as_str() == p).unwrap();
        assert!(position("a") < position("a/b"));
        assert!(position("a/b") < position("a/b/c"));
    }
}
