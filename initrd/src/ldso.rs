//! The shared-library closure of a dynamically linked program, found the way glibc's `ld.so`
//! finds it, inside a root directory.
//!
//! Search order for a `DT_NEEDED` name without a `/` (see `ld.so(8)`):
//!
//! 1. `DT_RPATH` of the object that needs it, then of the object that loaded that one, up to the
//!    executable — only while the needing object has no `DT_RUNPATH`, and skipping objects that
//!    have one;
//! 2. `DT_RUNPATH` of the needing object;
//! 3. the directories listed in the root's `/etc/ld.so.conf` (with `include` globs), which is
//!    what `ld.so.cache` is built from;
//! 4. the default directories for the object's class and machine.
//!
//! `$ORIGIN`, `$LIB` and `$PLATFORM` are expanded (also in `${...}` form). Candidates of another
//! ELF class, byte order or machine are skipped like the loader skips them; a candidate that is
//! not a valid ELF file stops the search with an error, as it does in `ld.so`. Names already
//! loaded (by `DT_NEEDED` name or `DT_SONAME`) and files already loaded (by real path) are not
//! loaded twice.
//!
//! Not modelled: `LD_LIBRARY_PATH`/`LD_PRELOAD` (environment, not image), `glibc-hwcaps` and
//! legacy hwcap subdirectories (Debian ships no libraries there), `DF_1_NODEFLIB`.
//!
//! Inside the initramfs there is no `ld.so.cache`, so a library found only through an
//! `ld.so.conf` directory that is not a default directory will not be found at run time unless
//! that directory is put in `LD_LIBRARY_PATH`: [`LibraryClosure::extra_search_dirs`] lists them.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::elf::{parse_elf, ElfClass, ElfInfo};
use crate::error::{ClosureError, RootError};
use crate::glob::{has_wildcards, wildcard_match};
use crate::rootfs::RootFs;

/// `ldconfig` gives up on deeper include nesting; so do we (it also stops include cycles).
const MAX_INCLUDE_DEPTH: usize = 10;

/// How a library was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FoundVia {
    /// It is the program interpreter (`PT_INTERP`).
    Interpreter,
    /// The `DT_NEEDED` name contains a `/` and was used as a path.
    ExplicitPath,
    /// A `DT_RPATH` directory.
    Rpath,
    /// A `DT_RUNPATH` directory.
    Runpath,
    /// An `/etc/ld.so.conf` directory that is not also a default directory.
    LdSoConf,
    /// A default directory of the loader.
    DefaultDir,
}

/// One object of the closure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedLibrary {
    /// The name asked for (`DT_NEEDED` entry or interpreter path).
    pub name: String,
    /// The path under which the loader opens it, absolute inside the root
    /// (e.g. `/lib/x86_64-linux-gnu/libc.so.6`); may go through symlinks.
    pub path: String,
    /// The object that needs it (path inside the root, or the name given for the binary).
    pub needed_by: String,
    /// How it was found.
    pub found_via: FoundVia,
}

/// Everything a binary needs from the file system to start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LibraryClosure {
    /// The program interpreter, `None` for a static binary.
    pub interpreter: Option<ResolvedLibrary>,
    /// The libraries in the order the loader loads them (breadth first).
    pub libraries: Vec<ResolvedLibrary>,
}

impl LibraryClosure {
    /// True for a static binary.
    pub fn is_empty(&self) -> bool {
        self.interpreter.is_none() && self.libraries.is_empty()
    }

    /// Interpreter first, then the libraries.
    pub fn iter(&self) -> impl Iterator<Item = &ResolvedLibrary> {
        self.interpreter.iter().chain(self.libraries.iter())
    }

    /// Directories of libraries that the loader inside the initramfs (which has no
    /// `ld.so.cache`) will not search by itself; put them in `LD_LIBRARY_PATH`.
    pub fn extra_search_dirs(&self) -> Vec<String> {
        let mut dirs: Vec<String> = self
            .libraries
            .iter()
            .filter(|library| library.found_via == FoundVia::LdSoConf)
            .filter_map(|library| {
                library
                    .path
                    .rsplit_once('/')
                    .map(|(dir, _)| dir.to_string())
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

/// One meaningful line of an `ld.so.conf` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LdSoConfLine {
    /// A library directory.
    Directory(String),
    /// `include PATTERN` (the pattern may be relative to the including file's directory).
    Include(String),
}

/// Parses `ld.so.conf` text: comments (`#`), blank lines and `hwcap` lines are ignored.
pub fn parse_ld_so_conf(text: &str) -> Vec<LdSoConfLine> {
    let mut lines = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        match words.next() {
            Some("include") => lines.extend(words.map(|w| LdSoConfLine::Include(w.to_string()))),
            Some("hwcap") => {}
            _ => {
                // Old ldconfig accepted "dir=TYPE" and comma/colon separated lists.
                for dir in line.split([',', ':', ' ', '\t']) {
                    let dir = dir.split('=').next().unwrap_or("").trim_end_matches('/');
                    if dir.starts_with('/') {
                        lines.push(LdSoConfLine::Directory(dir.to_string()));
                    } else if dir.is_empty() && line.starts_with('/') {
                        lines.push(LdSoConfLine::Directory("/".to_string()));
                    }
                }
            }
        }
    }
    lines
}

/// The loader's built-in directories for objects of this class and machine, in search order.
///
/// Debian's multiarch directories come first (what Debian's `ld.so --help` lists), then
/// `/lib64` or `/lib32` (what other distributions use), then `/lib` and `/usr/lib`.
pub fn default_library_dirs(class: ElfClass, machine: u16) -> Vec<String> {
    let (triplet, wide_dir) = match (class, machine) {
        (ElfClass::Elf64, object::elf::EM_X86_64) => (Some("x86_64-linux-gnu"), Some("lib64")),
        (ElfClass::Elf32, object::elf::EM_X86_64) => (Some("x86_64-linux-gnux32"), Some("libx32")),
        (ElfClass::Elf32, object::elf::EM_386) => (Some("i386-linux-gnu"), Some("lib32")),
        (ElfClass::Elf64, object::elf::EM_AARCH64) => (Some("aarch64-linux-gnu"), Some("lib64")),
        (ElfClass::Elf32, object::elf::EM_ARM) => (Some("arm-linux-gnueabihf"), None),
        (ElfClass::Elf64, object::elf::EM_RISCV) => (Some("riscv64-linux-gnu"), Some("lib64")),
        (ElfClass::Elf64, object::elf::EM_PPC64) => (Some("powerpc64le-linux-gnu"), Some("lib64")),
        (ElfClass::Elf64, object::elf::EM_S390) => (Some("s390x-linux-gnu"), Some("lib64")),
        (ElfClass::Elf64, _) => (None, Some("lib64")),
        (ElfClass::Elf32, _) => (None, None),
    };
    let mut dirs = Vec::new();
    if let Some(triplet) = triplet {
        dirs.push(format!("/lib/{triplet}"));
        dirs.push(format!("/usr/lib/{triplet}"));
    }
    if let Some(wide_dir) = wide_dir {
        dirs.push(format!("/{wide_dir}"));
        dirs.push(format!("/usr/{wide_dir}"));
    }
    dirs.push("/lib".to_string());
    dirs.push("/usr/lib".to_string());
    dirs
}

/// The value of `$PLATFORM` (`AT_PLATFORM`) for a machine.
fn platform_name(machine: u16) -> &'static str {
    match machine {
        object::elf::EM_X86_64 => "x86_64",
        object::elf::EM_386 => "i686",
        object::elf::EM_AARCH64 => "aarch64",
        object::elf::EM_ARM => "v7l",
        _ => "unknown",
    }
}

/// Finds shared-library closures inside one root directory.
#[derive(Clone, Debug)]
pub struct LibraryResolver {
    rootfs: RootFs,
    conf_dirs: Vec<String>,
    default_dirs: Option<Vec<String>>,
}

/// An object loaded during the closure walk.
struct LoadedObject {
    path: String,
    info: ElfInfo,
    /// `$ORIGIN` for this object.
    origin: String,
    /// Index of the object that caused this one to be loaded.
    loader: Option<usize>,
}

/// A library found by the search.
struct Found {
    path: String,
    real_path: String,
    info: ElfInfo,
    via: FoundVia,
}

impl LibraryResolver {
    /// A resolver for `root`, reading `<root>/etc/ld.so.conf` (a missing file means no extra
    /// directories).
    pub fn new(root: impl AsRef<Path>) -> Result<LibraryResolver, ClosureError> {
        let rootfs = RootFs::new(root.as_ref());
        let mut conf_dirs = Vec::new();
        let mut visited = HashSet::new();
        read_ld_so_conf(&rootfs, "/etc/ld.so.conf", 0, &mut visited, &mut conf_dirs)?;
        let mut seen = HashSet::new();
        conf_dirs.retain(|dir| seen.insert(dir.clone()));
        Ok(LibraryResolver {
            rootfs,
            conf_dirs,
            default_dirs: None,
        })
    }

    /// Uses `dirs` instead of [`default_library_dirs`] (e.g. for a distribution with other
    /// defaults).
    pub fn with_default_dirs(mut self, dirs: Vec<String>) -> LibraryResolver {
        self.default_dirs = Some(dirs);
        self
    }

    /// The directories read from `ld.so.conf`, in order.
    pub fn conf_dirs(&self) -> &[String] {
        &self.conf_dirs
    }

    /// The root searched.
    pub fn root(&self) -> &Path {
        self.rootfs.root()
    }

    /// The closure of the program at `path_in_root`. `$ORIGIN` of the program is the directory
    /// of its real path, like the kernel's `/proc/self/exe`.
    pub fn closure_of(&self, path_in_root: &str) -> Result<LibraryClosure, ClosureError> {
        let (resolved, bytes) = self.rootfs.read(path_in_root)?;
        let origin = parent_dir(&resolved.path);
        self.closure_of_bytes(&bytes, path_in_root, &origin)
    }

    /// The closure of a program that is not (yet) inside the root, e.g. a freshly built binary,
    /// that will be installed at `install_path` (which gives `$ORIGIN`).
    pub fn closure_of_file(
        &self,
        host_file: &Path,
        install_path: &str,
    ) -> Result<LibraryClosure, ClosureError> {
        let bytes = std::fs::read(host_file).map_err(|source| RootError::Io {
            path: host_file.to_path_buf(),
            source,
        })?;
        let origin = parent_dir(&format!("/{}", install_path.trim_start_matches('/')));
        self.closure_of_bytes(&bytes, &host_file.display().to_string(), &origin)
    }

    /// The closure of the ELF program in `bytes`; `name` is used in messages, `origin` is its
    /// `$ORIGIN` inside the root.
    pub fn closure_of_bytes(
        &self,
        bytes: &[u8],
        name: &str,
        origin: &str,
    ) -> Result<LibraryClosure, ClosureError> {
        let info = parse_elf(bytes).map_err(|source| ClosureError::Elf {
            path: name.to_string(),
            source,
        })?;
        let default_dirs = self
            .default_dirs
            .clone()
            .unwrap_or_else(|| default_library_dirs(info.class, info.machine));
        let mut walk = Walk {
            resolver: self,
            default_dirs,
            objects: Vec::new(),
            by_name: HashMap::new(),
            by_real_path: HashMap::new(),
        };
        walk.objects.push(LoadedObject {
            path: name.to_string(),
            info,
            origin: origin.to_string(),
            loader: None,
        });
        let mut closure = LibraryClosure::default();
        if let Some(interpreter) = walk.objects[0].info.interpreter.clone() {
            closure.interpreter = Some(walk.load_interpreter(&interpreter)?);
        }
        let mut next = 0;
        while next < walk.objects.len() {
            let needed = walk.objects[next].info.needed.clone();
            for library_name in needed {
                if walk.by_name.contains_key(&library_name) {
                    continue;
                }
                if let Some(library) = walk.load_needed(next, &library_name)? {
                    closure.libraries.push(library);
                }
            }
            next += 1;
        }
        Ok(closure)
    }
}

/// State of one closure computation.
struct Walk<'a> {
    resolver: &'a LibraryResolver,
    default_dirs: Vec<String>,
    objects: Vec<LoadedObject>,
    by_name: HashMap<String, usize>,
    by_real_path: HashMap<String, usize>,
}

impl Walk<'_> {
    fn main(&self) -> &ElfInfo {
        &self.objects[0].info
    }

    fn load_interpreter(&mut self, interpreter: &str) -> Result<ResolvedLibrary, ClosureError> {
        let needed_by = self.objects[0].path.clone();
        let (resolved, bytes) = match self.resolver.rootfs.read(interpreter) {
            Ok(found) => found,
            Err(error) if error.is_not_found() => {
                return Err(ClosureError::NotFound {
                    name: interpreter.to_string(),
                    needed_by,
                    root: self.resolver.root().to_path_buf(),
                    searched: interpreter.to_string(),
                })
            }
            Err(error) => return Err(error.into()),
        };
        let info = parse_elf(&bytes).map_err(|source| ClosureError::Elf {
            path: interpreter.to_string(),
            source,
        })?;
        if !info.is_compatible_with(self.main()) {
            return Err(ClosureError::Incompatible {
                path: interpreter.to_string(),
                reason: format!("interpreter of {needed_by} has another ELF class or machine"),
            });
        }
        self.register(
            interpreter,
            Found {
                path: interpreter.to_string(),
                real_path: resolved.path,
                info,
                via: FoundVia::Interpreter,
            },
            None,
        );
        Ok(ResolvedLibrary {
            name: interpreter.to_string(),
            path: interpreter.to_string(),
            needed_by,
            found_via: FoundVia::Interpreter,
        })
    }

    /// Loads `name` needed by object `loader`; `None` when it turned out to be a file that is
    /// already loaded under another name.
    fn load_needed(
        &mut self,
        loader: usize,
        name: &str,
    ) -> Result<Option<ResolvedLibrary>, ClosureError> {
        let found = self.search(loader, name)?;
        if let Some(&index) = self.by_real_path.get(&found.real_path) {
            self.by_name.insert(name.to_string(), index);
            return Ok(None);
        }
        let library = ResolvedLibrary {
            name: name.to_string(),
            path: found.path.clone(),
            needed_by: self.objects[loader].path.clone(),
            found_via: found.via,
        };
        self.register(name, found, Some(loader));
        Ok(Some(library))
    }

    fn register(&mut self, name: &str, found: Found, loader: Option<usize>) {
        let index = self.objects.len();
        self.by_name.insert(name.to_string(), index);
        if let Some(soname) = &found.info.soname {
            self.by_name.entry(soname.clone()).or_insert(index);
        }
        self.by_real_path.insert(found.real_path, index);
        self.objects.push(LoadedObject {
            origin: parent_dir(&found.path),
            path: found.path,
            info: found.info,
            loader,
        });
    }

    /// The directories to search for a library needed by object `loader`, in order.
    fn search_dirs(&self, loader: usize) -> Vec<(String, FoundVia)> {
        let mut dirs = Vec::new();
        let needing = &self.objects[loader];
        if needing.info.runpath.is_empty() {
            let mut current = Some(loader);
            while let Some(index) = current {
                let object = &self.objects[index];
                if object.info.runpath.is_empty() {
                    for element in &object.info.rpath {
                        if let Some(dir) = self.expand(element, &object.origin) {
                            dirs.push((dir, FoundVia::Rpath));
                        }
                    }
                }
                current = object.loader;
            }
        }
        for element in &needing.info.runpath {
            if let Some(dir) = self.expand(element, &needing.origin) {
                dirs.push((dir, FoundVia::Runpath));
            }
        }
        for dir in &self.resolver.conf_dirs {
            let via = if self.default_dirs.contains(dir) {
                FoundVia::DefaultDir
            } else {
                FoundVia::LdSoConf
            };
            dirs.push((dir.clone(), via));
        }
        for dir in &self.default_dirs {
            dirs.push((dir.clone(), FoundVia::DefaultDir));
        }
        let mut seen = HashSet::new();
        dirs.retain(|(dir, _)| seen.insert(dir.clone()));
        dirs
    }

    fn search(&self, loader: usize, name: &str) -> Result<Found, ClosureError> {
        let needed_by = &self.objects[loader].path;
        let candidates: Vec<(String, FoundVia)> = if name.contains('/') {
            vec![(name.to_string(), FoundVia::ExplicitPath)]
        } else {
            self.search_dirs(loader)
                .into_iter()
                .map(|(dir, via)| (format!("{}/{name}", dir.trim_end_matches('/')), via))
                .collect()
        };
        let mut other_class = None;
        for (path, via) in &candidates {
            let (resolved, bytes) = match self.resolver.rootfs.read(path) {
                Ok(found) => found,
                Err(error) if error.is_not_found() => continue,
                Err(RootError::Io { .. }) if !self.is_regular_file(path) => continue,
                Err(error) => return Err(error.into()),
            };
            let info = parse_elf(&bytes).map_err(|source| ClosureError::Elf {
                path: path.clone(),
                source,
            })?;
            if !info.is_compatible_with(self.main()) || info.file_type != object::elf::ET_DYN {
                other_class.get_or_insert_with(|| path.clone());
                continue;
            }
            return Ok(Found {
                path: path.clone(),
                real_path: resolved.path,
                info,
                via: *via,
            });
        }
        if let Some(path) = other_class {
            return Err(ClosureError::Incompatible {
                path,
                reason: format!(
                    "needed by {needed_by}, but only found with another ELF class, machine or type"
                ),
            });
        }
        Err(ClosureError::NotFound {
            name: name.to_string(),
            needed_by: needed_by.clone(),
            root: self.resolver.root().to_path_buf(),
            searched: candidates
                .iter()
                .map(|(path, _)| parent_dir(path))
                .collect::<Vec<_>>()
                .join(":"),
        })
    }

    /// A directory named like a library is skipped by the loader, not an error.
    fn is_regular_file(&self, path: &str) -> bool {
        self.resolver
            .rootfs
            .resolve(path)
            .is_ok_and(|resolved| resolved.metadata.is_file())
    }

    /// Expands `$ORIGIN`, `$LIB` and `$PLATFORM`. Relative results are dropped: they would be
    /// relative to the working directory at run time.
    fn expand(&self, element: &str, origin: &str) -> Option<String> {
        let lib = self
            .default_dirs
            .first()
            .map(|dir| dir.trim_start_matches('/').to_string())
            .unwrap_or_else(|| "lib".to_string());
        let platform = platform_name(self.main().machine);
        let mut expanded = element.to_string();
        for (variable, value) in [("ORIGIN", origin), ("LIB", &lib), ("PLATFORM", platform)] {
            expanded = expanded
                .replace(&format!("${{{variable}}}"), value)
                .replace(&format!("${variable}"), value);
        }
        expanded
            .starts_with('/')
            .then(|| expanded.trim_end_matches('/').to_string())
            .map(|dir| if dir.is_empty() { "/".to_string() } else { dir })
    }
}

/// Follows `ld.so.conf` and its includes, appending directories in order.
fn read_ld_so_conf(
    rootfs: &RootFs,
    path: &str,
    depth: usize,
    visited: &mut HashSet<String>,
    dirs: &mut Vec<String>,
) -> Result<(), ClosureError> {
    if depth > MAX_INCLUDE_DEPTH || !visited.insert(path.to_string()) {
        return Ok(());
    }
    let Some(text) = rootfs.read_optional_text(path)? else {
        return Ok(());
    };
    let conf_dir = parent_dir(path);
    for line in parse_ld_so_conf(&text) {
        match line {
            LdSoConfLine::Directory(dir) => dirs.push(dir),
            LdSoConfLine::Include(pattern) => {
                let pattern = if pattern.starts_with('/') {
                    pattern
                } else {
                    format!("{}/{pattern}", conf_dir.trim_end_matches('/'))
                };
                for included in expand_include(rootfs, &pattern)? {
                    read_ld_so_conf(rootfs, &included, depth + 1, visited, dirs)?;
                }
            }
        }
    }
    Ok(())
}

/// Expands an include pattern; wildcards are supported in the last component only, which is
/// what every distribution uses (`/etc/ld.so.conf.d/*.conf`). Matches are sorted, like glob(3).
fn expand_include(rootfs: &RootFs, pattern: &str) -> Result<Vec<String>, ClosureError> {
    let (dir, file_pattern) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    if !has_wildcards(file_pattern) {
        return Ok(vec![pattern.to_string()]);
    }
    let dir = if dir.is_empty() { "/" } else { dir };
    Ok(rootfs
        .list_dir(dir)?
        .into_iter()
        .filter(|name| wildcard_match(file_pattern, name) && !name.starts_with('.'))
        .map(|name| format!("{}/{name}", dir.trim_end_matches('/')))
        .collect())
}

/// `/a/b/c` -> `/a/b`, `/c` -> `/`.
fn parent_dir(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((dir, _)) => dir.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::TestElf;
    use std::fs;
    use std::os::unix::fs::symlink;

    const INTERP: &str = "/lib64/ld-linux-x86-64.so.2";

    /// A fake merged-/usr Debian root with a loader, libc and a few libraries.
    struct FakeRoot {
        dir: tempfile::TempDir,
    }

    impl FakeRoot {
        fn new() -> FakeRoot {
            let dir = tempfile::tempdir().unwrap();
            let root = FakeRoot { dir };
            for d in [
                "usr/lib/x86_64-linux-gnu",
                "usr/lib64",
                "usr/bin",
                "etc/ld.so.conf.d",
            ] {
                fs::create_dir_all(root.path().join(d)).unwrap();
            }
            symlink("usr/lib", root.path().join("lib")).unwrap();
            symlink("usr/lib64", root.path().join("lib64")).unwrap();
            symlink("usr/bin", root.path().join("bin")).unwrap();
            root.write_elf(
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                &TestElf::library("ld-linux-x86-64.so.2"),
            );
            symlink(
                "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                root.path().join("usr/lib64/ld-linux-x86-64.so.2"),
            )
            .unwrap();
            root.write_elf(
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                &TestElf::library("libc.so.6").needing(&["ld-linux-x86-64.so.2"]),
            );
            root
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        fn write_elf(&self, path: &str, elf: &TestElf) {
            let host = self.path().join(path.trim_start_matches('/'));
            fs::create_dir_all(host.parent().unwrap()).unwrap();
            fs::write(host, elf.build()).unwrap();
        }

        fn write(&self, path: &str, contents: &str) {
            let host = self.path().join(path.trim_start_matches('/'));
            fs::create_dir_all(host.parent().unwrap()).unwrap();
            fs::write(host, contents).unwrap();
        }

        fn closure(&self, program: &str) -> Result<LibraryClosure, ClosureError> {
            LibraryResolver::new(self.path())?.closure_of(program)
        }
    }

    fn paths(closure: &LibraryClosure) -> Vec<&str> {
        closure.iter().map(|l| l.path.as_str()).collect()
    }

    #[test]
    fn interpreter_and_libc_through_merged_usr() {
        let root = FakeRoot::new();
        root.write_elf(
            "/usr/bin/tool",
            &TestElf::executable(INTERP, &["libc.so.6"]),
        );
        let closure = root.closure("/bin/tool").unwrap();
        assert_eq!(
            paths(&closure),
            [INTERP, "/lib/x86_64-linux-gnu/libc.so.6"],
            "libc's own need of the loader is satisfied by the interpreter's soname"
        );
        assert_eq!(closure.libraries[0].found_via, FoundVia::DefaultDir);
        assert_eq!(closure.libraries[0].needed_by, "/bin/tool");
        assert!(closure.extra_search_dirs().is_empty());
    }

    #[test]
    fn static_binary_has_empty_closure() {
        let root = FakeRoot::new();
        let mut elf = TestElf::library("");
        elf.soname = None;
        elf.file_type = object::elf::ET_EXEC;
        root.write_elf("/usr/bin/static", &elf);
        assert!(root.closure("/usr/bin/static").unwrap().is_empty());
    }

    #[test]
    fn transitive_needs_breadth_first_without_duplicates() {
        let root = FakeRoot::new();
        let lib = "/usr/lib/x86_64-linux-gnu";
        root.write_elf(
            &format!("{lib}/liba.so.1"),
            &TestElf::library("liba.so.1").needing(&["libc.so.6", "libc2.so"]),
        );
        root.write_elf(
            &format!("{lib}/libb.so.1"),
            &TestElf::library("libb.so.1").needing(&["liba.so.1", "libc.so.6"]),
        );
        // libc2.so is a symlink to libc.so.6: the same file must not be loaded twice.
        symlink(
            "libc.so.6",
            root.path().join("usr/lib/x86_64-linux-gnu/libc2.so"),
        )
        .unwrap();
        root.write_elf(
            "/usr/bin/tool",
            &TestElf::executable(INTERP, &["libb.so.1", "libc.so.6"]),
        );
        let closure = root.closure("/usr/bin/tool").unwrap();
        let names: Vec<_> = closure.libraries.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["libb.so.1", "libc.so.6", "liba.so.1"]);
    }

    #[test]
    fn runpath_with_origin_and_rpath_inheritance() {
        let root = FakeRoot::new();
        // The program's RPATH is inherited by libapp (no RUNPATH there) but not by libplug,
        // which has its own RUNPATH.
        let mut program = TestElf::executable(INTERP, &["libapp.so", "libc.so.6"]);
        program.rpath = Some("$ORIGIN/../lib/app".into());
        root.write_elf("/opt/app/bin/app", &program);
        root.write_elf(
            "/opt/app/lib/app/libapp.so",
            &TestElf::library("libapp.so").needing(&["libhelper.so", "libplug.so"]),
        );
        root.write_elf(
            "/opt/app/lib/app/libhelper.so",
            &TestElf::library("libhelper.so"),
        );
        let mut plug = TestElf::library("libplug.so").needing(&["libdeep.so"]);
        plug.runpath = Some("${ORIGIN}/plugins".into());
        root.write_elf("/opt/app/lib/app/libplug.so", &plug);
        root.write_elf(
            "/opt/app/lib/app/plugins/libdeep.so",
            &TestElf::library("libdeep.so"),
        );
        let closure = root.closure("/opt/app/bin/app").unwrap();
        let found: Vec<_> = closure
            .libraries
            .iter()
            .map(|l| (l.name.as_str(), l.found_via))
            .collect();
        assert_eq!(
            found,
            [
                ("libapp.so", FoundVia::Rpath),
                ("libc.so.6", FoundVia::DefaultDir),
                ("libhelper.so", FoundVia::Rpath),
                ("libplug.so", FoundVia::Rpath),
                ("libdeep.so", FoundVia::Runpath),
            ]
        );
        assert_eq!(
            closure.libraries[0].path,
            "/opt/app/bin/../lib/app/libapp.so"
        );
    }

    #[test]
    fn runpath_disables_rpath() {
        let root = FakeRoot::new();
        let mut program = TestElf::executable(INTERP, &["libonly.so"]);
        program.rpath = Some("/opt/rpath".into());
        program.runpath = Some("/opt/runpath".into());
        root.write_elf("/usr/bin/tool", &program);
        root.write_elf("/opt/rpath/libonly.so", &TestElf::library("libonly.so"));
        let error = root.closure("/usr/bin/tool").unwrap_err();
        assert!(
            matches!(&error, ClosureError::NotFound { name, .. } if name == "libonly.so"),
            "{error}"
        );
        assert!(error.to_string().contains("/opt/runpath"), "{error}");
    }

    #[test]
    fn ld_so_conf_with_includes_and_wrong_class_skipped() {
        let root = FakeRoot::new();
        root.write(
            "/etc/ld.so.conf",
            "include /etc/ld.so.conf.d/*.conf\n# comment\n",
        );
        root.write("/etc/ld.so.conf.d/b.conf", "/opt/second\n");
        root.write(
            "/etc/ld.so.conf.d/a.conf",
            "/opt/first # trailing comment\n",
        );
        root.write("/etc/ld.so.conf.d/ignored.txt", "/opt/ignored\n");
        let mut wrong = TestElf::library("libx.so");
        wrong.class = crate::elf::ElfClass::Elf32;
        wrong.machine = object::elf::EM_386;
        root.write_elf("/opt/first/libx.so", &wrong);
        root.write_elf("/opt/second/libx.so", &TestElf::library("libx.so"));
        root.write_elf("/usr/bin/tool", &TestElf::executable(INTERP, &["libx.so"]));
        let resolver = LibraryResolver::new(root.path()).unwrap();
        assert_eq!(resolver.conf_dirs(), ["/opt/first", "/opt/second"]);
        let closure = resolver.closure_of("/usr/bin/tool").unwrap();
        assert_eq!(closure.libraries[0].path, "/opt/second/libx.so");
        assert_eq!(closure.libraries[0].found_via, FoundVia::LdSoConf);
        assert_eq!(closure.extra_search_dirs(), ["/opt/second"]);
    }

    #[test]
    fn only_wrong_class_found_is_a_clear_error() {
        let root = FakeRoot::new();
        let mut wrong = TestElf::library("libx.so");
        wrong.class = crate::elf::ElfClass::Elf32;
        wrong.machine = object::elf::EM_386;
        root.write_elf("/usr/lib/libx.so", &wrong);
        root.write_elf("/usr/bin/tool", &TestElf::executable(INTERP, &["libx.so"]));
        assert!(matches!(
            root.closure("/usr/bin/tool"),
            Err(ClosureError::Incompatible { .. })
        ));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let root = FakeRoot::new();
        root.write("/usr/bin/script", "#!/bin/sh\n");
        assert!(matches!(
            root.closure("/usr/bin/script"),
            Err(ClosureError::Elf { .. })
        ));
        let truncated = TestElf::executable(INTERP, &["libc.so.6"]).build();
        fs::write(
            root.path().join("usr/bin/cut"),
            &truncated[..truncated.len() - 4],
        )
        .unwrap();
        assert!(matches!(
            root.closure("/usr/bin/cut"),
            Err(ClosureError::Elf { .. })
        ));
        // A broken library stops the search, like ld.so.
        root.write("/usr/lib/x86_64-linux-gnu/libbroken.so", "garbage");
        root.write_elf(
            "/usr/bin/tool",
            &TestElf::executable(INTERP, &["libbroken.so"]),
        );
        assert!(
            matches!(root.closure("/usr/bin/tool"), Err(ClosureError::Elf { path, .. }) if path.ends_with("libbroken.so"))
        );
        root.write_elf(
            "/usr/bin/noloader",
            &TestElf::executable("/lib/ld-missing.so", &[]),
        );
        assert!(matches!(
            root.closure("/usr/bin/noloader"),
            Err(ClosureError::NotFound { .. })
        ));
        assert!(root.closure("/usr/bin/missing").is_err());
    }

    #[test]
    fn closure_of_a_file_outside_the_root_uses_the_install_path_as_origin() {
        let root = FakeRoot::new();
        root.write_elf(
            "/usr/lib/clustermaker/libextra.so",
            &TestElf::library("libextra.so"),
        );
        let outside = tempfile::tempdir().unwrap();
        let mut program = TestElf::executable(INTERP, &["libextra.so", "libc.so.6"]);
        program.runpath = Some("$ORIGIN/../lib/clustermaker".into());
        let binary = outside.path().join("clustermaker");
        fs::write(&binary, program.build()).unwrap();
        let closure = LibraryResolver::new(root.path())
            .unwrap()
            .closure_of_file(&binary, "usr/bin/clustermaker")
            .unwrap();
        assert_eq!(
            closure.libraries[0].path,
            "/usr/bin/../lib/clustermaker/libextra.so"
        );
    }

    #[test]
    fn parses_ld_so_conf_forms() {
        let lines = parse_ld_so_conf(
            "# c\ninclude a/*.conf b.conf\n/usr/local/lib/\nhwcap 1 x\n/opt/a,/opt/b:/opt/c\n/x=libc6\n",
        );
        assert_eq!(
            lines,
            [
                LdSoConfLine::Include("a/*.conf".into()),
                LdSoConfLine::Include("b.conf".into()),
                LdSoConfLine::Directory("/usr/local/lib".into()),
                LdSoConfLine::Directory("/opt/a".into()),
                LdSoConfLine::Directory("/opt/b".into()),
                LdSoConfLine::Directory("/opt/c".into()),
                LdSoConfLine::Directory("/x".into()),
            ]
        );
    }

    #[test]
    fn include_cycles_terminate() {
        let root = FakeRoot::new();
        root.write("/etc/ld.so.conf", "include ld.so.conf\n/opt/x\n");
        let resolver = LibraryResolver::new(root.path()).unwrap();
        assert_eq!(resolver.conf_dirs(), ["/opt/x"]);
    }

    #[test]
    fn default_dirs_follow_debian_multiarch() {
        let dirs = default_library_dirs(ElfClass::Elf64, object::elf::EM_X86_64);
        assert_eq!(
            dirs[..2],
            ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"]
        );
        assert!(dirs.contains(&"/lib64".to_string()));
        assert_eq!(parent_dir("/a"), "/");
        assert_eq!(parent_dir("/a/b"), "/a");
    }
}
