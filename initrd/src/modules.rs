//! Kernel-module closure: which `.ko` files to put in the initramfs, and in which order to
//! load them, for a list of wanted module names.
//!
//! Dependencies come from `modules.dep` when the modules directory has one (what `depmod`
//! writes and `modprobe` reads). Without it — Debian's kernel .deb ships none — they come from
//! each module's own `.modinfo` `depends=` field, read only for the modules in the closure.
//! This was chosen over running `depmod -b ROOT VERSION` because it needs no tool, writes
//! nothing into the image root and gives the same answer (a test compares the two).
//!
//! Names are matched like `modprobe` matches them: `-` and `_` are the same, and a name that
//! is not a module may be an alias (`modules.alias`, or the modules' `alias=` fields) or a
//! module built into the kernel (`modules.builtin`, `modules.builtin.modinfo`), which needs
//! no file.
//!
//! The order puts every dependency before its users (a depth-first post-order, following the
//! wanted names and each module's dependencies in the order they are listed), without
//! duplicates. A dependency cycle is an error, since no insmod order exists for it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::ModuleError;
use crate::glob::wildcard_match;
use crate::modinfo::{decompress_module, read_modinfo, ModuleCompression};

/// Directory nesting deeper than this inside a modules directory is ignored (no real tree
/// comes close; it bounds the walk on hostile trees).
const MAX_SCAN_DEPTH: usize = 16;

/// One line of `modules.dep`: a module path and the paths it depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepLine {
    /// Module path relative to the modules directory (e.g. `kernel/fs/nfs/nfsv3.ko`).
    pub path: String,
    /// Paths of its dependencies, as listed.
    pub dependencies: Vec<String>,
}

/// One line of `modules.alias`: `alias PATTERN MODULE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasLine {
    /// The alias, possibly with wildcards (`pci:v00001AF4d*`).
    pub pattern: String,
    /// The module name it stands for.
    pub module: String,
}

/// `modprobe`'s notion of a module name: `-` and `_` are interchangeable, `_` is canonical.
pub fn normalize_module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a module file path: its file name without `.ko[.gz|.xz|.zst]`,
/// normalised. `None` when the path is not a module file.
pub fn module_name_from_path(path: &str) -> Option<String> {
    let file_name = path.rsplit('/').next()?;
    let compression = ModuleCompression::from_file_name(file_name)?;
    let stem = file_name
        .strip_suffix(compression.suffix())?
        .strip_suffix(".ko")?;
    (!stem.is_empty()).then(|| normalize_module_name(stem))
}

/// Checks that a module path from an index file stays inside the modules directory.
fn validate_module_path(path: &str) -> Result<(), String> {
    if path.starts_with('/') {
        return Err(format!("absolute module path {path:?} is not supported"));
    }
    if path.split('/').any(|c| c == ".." || c.is_empty()) || path.contains('\0') {
        return Err(format!("module path {path:?} leaves the modules directory"));
    }
    if module_name_from_path(path).is_none() {
        return Err(format!("{path:?} is not a .ko module file"));
    }
    Ok(())
}

/// Parses `modules.dep`. Every non-empty line must be `PATH: [DEP...]` with module paths
/// relative to the modules directory; anything else is an error naming the line.
pub fn parse_modules_dep(text: &str) -> Result<Vec<DepLine>, ModuleError> {
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let error = |reason: String| ModuleError::Parse {
            file: "modules.dep",
            line: index + 1,
            reason,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (path, dependencies) = line
            .split_once(':')
            .ok_or_else(|| error("expected `module.ko: dependencies...`".to_string()))?;
        let path = path.trim();
        validate_module_path(path).map_err(&error)?;
        let dependencies: Vec<String> = dependencies
            .split_whitespace()
            .map(str::to_string)
            .collect();
        for dependency in &dependencies {
            validate_module_path(dependency).map_err(&error)?;
        }
        lines.push(DepLine {
            path: path.to_string(),
            dependencies,
        });
    }
    Ok(lines)
}

/// Parses `modules.alias` (`alias PATTERN MODULE` lines, `#` comments).
pub fn parse_modules_alias(text: &str) -> Result<Vec<AliasLine>, ModuleError> {
    let mut aliases = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["alias", pattern, module] => aliases.push(AliasLine {
                pattern: pattern.to_string(),
                module: normalize_module_name(module),
            }),
            _ => {
                return Err(ModuleError::Parse {
                    file: "modules.alias",
                    line: index + 1,
                    reason: "expected `alias PATTERN MODULE`".to_string(),
                })
            }
        }
    }
    Ok(aliases)
}

/// Parses `modules.builtin` (one module path per line) into module names.
pub fn parse_modules_builtin(text: &str) -> Result<Vec<String>, ModuleError> {
    let mut names = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = module_name_from_path(line).ok_or_else(|| ModuleError::Parse {
            file: "modules.builtin",
            line: index + 1,
            reason: format!("{line:?} is not a .ko path"),
        })?;
        names.push(name);
    }
    Ok(names)
}

/// `-` → `_` outside `[...]` classes, the way kmod normalises aliases before matching.
fn normalize_alias(alias: &str) -> String {
    let mut in_class = false;
    alias
        .chars()
        .map(|c| match c {
            '[' => {
                in_class = true;
                c
            }
            ']' => {
                in_class = false;
                c
            }
            '-' if !in_class => '_',
            _ => c,
        })
        .collect()
}

/// Where a [`ModuleIndex`] got its dependency information.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DependencySource {
    /// The directory's `modules.dep`.
    ModulesDep,
    /// Each module's `.modinfo` `depends=` field.
    Modinfo,
}

/// A module to put in the initramfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelModule {
    /// Normalised module name (`virtio_net`).
    pub name: String,
    /// Path relative to the modules directory (`kernel/drivers/net/virtio_net.ko`).
    pub path: String,
    /// The file on the host.
    pub host_path: PathBuf,
    /// How the file is compressed.
    pub compression: ModuleCompression,
}

/// The outcome of [`ModuleIndex::closure`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleClosure {
    /// Modules in load order: each one after all of its dependencies.
    pub modules: Vec<KernelModule>,
    /// Wanted names that are built into the kernel (nothing to load).
    pub builtin: Vec<String>,
}

#[derive(Clone, Debug)]
struct ModuleRecord {
    path: String,
    /// Dependency names, known up front from `modules.dep`; read from `.modinfo` otherwise.
    dependencies: Option<Vec<String>>,
}

/// The modules of one kernel version directory (`.../lib/modules/<version>`).
#[derive(Clone, Debug)]
pub struct ModuleIndex {
    dir: PathBuf,
    source: DependencySource,
    modules: BTreeMap<String, ModuleRecord>,
    /// `None` when scanning without `modules.alias`: aliases are then read from `.modinfo` on
    /// demand.
    aliases: Option<Vec<AliasLine>>,
    builtin: BTreeSet<String>,
    builtin_aliases: Vec<AliasLine>,
}

impl ModuleIndex {
    /// Reads `dir`, from `modules.dep` if present, otherwise by scanning the module files.
    pub fn load(dir: impl AsRef<Path>) -> Result<ModuleIndex, ModuleError> {
        let dir = dir.as_ref();
        if dir.join("modules.dep").is_file() {
            ModuleIndex::from_modules_dep(dir)
        } else {
            ModuleIndex::from_modinfo(dir)
        }
    }

    /// Reads `dir/modules.dep` (required) plus `modules.alias` and `modules.builtin` if present.
    /// Module files are only opened later, to be copied.
    pub fn from_modules_dep(dir: impl AsRef<Path>) -> Result<ModuleIndex, ModuleError> {
        let dir = dir.as_ref().to_path_buf();
        let text = read_text(&dir.join("modules.dep"))?.ok_or_else(|| ModuleError::Io {
            path: dir.join("modules.dep"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no modules.dep"),
        })?;
        // depmod writes modules.alias next to modules.dep; without it there are no aliases.
        let alias_text = read_text(&dir.join("modules.alias"))?;
        let mut index = ModuleIndex::from_modules_dep_text(&dir, &text, alias_text.as_deref())?;
        (index.builtin, index.builtin_aliases) = read_builtin(&dir)?;
        Ok(index)
    }

    /// Builds an index from the text of `modules.dep` and (optionally) `modules.alias`, without
    /// touching the file system; `dir` is only used to form the modules' host paths.
    pub fn from_modules_dep_text(
        dir: impl AsRef<Path>,
        modules_dep: &str,
        modules_alias: Option<&str>,
    ) -> Result<ModuleIndex, ModuleError> {
        let name_of = |path: &str| module_name_from_path(path).unwrap_or_default();
        let mut modules = BTreeMap::new();
        for line in parse_modules_dep(modules_dep)? {
            let dependencies = line.dependencies.iter().map(|dep| name_of(dep)).collect();
            modules.entry(name_of(&line.path)).or_insert(ModuleRecord {
                path: line.path,
                dependencies: Some(dependencies),
            });
        }
        let aliases = match modules_alias {
            Some(text) => parse_modules_alias(text)?,
            None => Vec::new(),
        };
        Ok(ModuleIndex {
            builtin: BTreeSet::new(),
            builtin_aliases: Vec::new(),
            aliases: Some(aliases),
            dir: dir.as_ref().to_path_buf(),
            source: DependencySource::ModulesDep,
            modules,
        })
    }

    /// Scans `dir` for module files; dependencies and aliases are read from the modules'
    /// `.modinfo` when needed. `modules.alias` and `modules.builtin` are used if present.
    pub fn from_modinfo(dir: impl AsRef<Path>) -> Result<ModuleIndex, ModuleError> {
        let dir = dir.as_ref().to_path_buf();
        let mut paths = Vec::new();
        scan_module_files(&dir, "", 0, &mut paths)?;
        paths.sort();
        let mut modules: BTreeMap<String, ModuleRecord> = BTreeMap::new();
        for path in paths {
            let Some(name) = module_name_from_path(&path) else {
                continue;
            };
            // Like depmod's default search order, `updates/` overrides the stock module.
            let replaces = modules.get(&name).is_some_and(|existing| {
                !existing.path.starts_with("updates/") && path.starts_with("updates/")
            });
            if replaces || !modules.contains_key(&name) {
                modules.insert(
                    name,
                    ModuleRecord {
                        path,
                        dependencies: None,
                    },
                );
            }
        }
        let aliases = match read_text(&dir.join("modules.alias"))? {
            Some(text) => Some(parse_modules_alias(&text)?),
            None => None,
        };
        let (builtin, builtin_aliases) = read_builtin(&dir)?;
        Ok(ModuleIndex {
            builtin,
            builtin_aliases,
            dir,
            source: DependencySource::Modinfo,
            modules,
            aliases,
        })
    }

    /// The modules directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kernel version: the name of the modules directory.
    pub fn version(&self) -> String {
        self.dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Where the dependency information comes from.
    pub fn source(&self) -> DependencySource {
        self.source
    }

    /// Number of loadable modules known.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    /// True when the directory has no modules.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// The modules needed for `wanted` (module names or aliases), dependencies first.
    pub fn closure<S: AsRef<str>>(&self, wanted: &[S]) -> Result<ModuleClosure, ModuleError> {
        let mut walk = ClosureWalk {
            index: self,
            dependencies: HashMap::new(),
            scanned_aliases: None,
        };
        let mut roots = Vec::new();
        let mut builtin = Vec::new();
        for name in wanted {
            let name = name.as_ref();
            match walk.resolve_name(name)? {
                Resolution::Modules(names) => roots.extend(names),
                Resolution::Builtin(name) => builtin.push(name),
            }
        }
        let order = walk.load_order(&roots)?;
        let modules = order
            .into_iter()
            .filter_map(|name| {
                let record = self.modules.get(&name)?;
                let file_name = record.path.rsplit('/').next().unwrap_or(&record.path);
                Some(KernelModule {
                    host_path: self.dir.join(&record.path),
                    compression: ModuleCompression::from_file_name(file_name)
                        .unwrap_or(ModuleCompression::None),
                    path: record.path.clone(),
                    name,
                })
            })
            .collect();
        let mut seen = BTreeSet::new();
        builtin.retain(|name| seen.insert(name.clone()));
        Ok(ModuleClosure { modules, builtin })
    }
}

enum Resolution {
    Modules(Vec<String>),
    Builtin(String),
}

/// State of one closure computation (caches `.modinfo` reads).
struct ClosureWalk<'a> {
    index: &'a ModuleIndex,
    dependencies: HashMap<String, Vec<String>>,
    scanned_aliases: Option<Vec<AliasLine>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum VisitState {
    InProgress,
    Done,
}

impl ClosureWalk<'_> {
    fn resolve_name(&mut self, name: &str) -> Result<Resolution, ModuleError> {
        let normalized = normalize_module_name(name);
        if self.index.modules.contains_key(&normalized) {
            return Ok(Resolution::Modules(vec![normalized]));
        }
        if self.index.builtin.contains(&normalized) {
            return Ok(Resolution::Builtin(normalized));
        }
        let wanted_alias = normalize_alias(name);
        let mut matches: Vec<String> = self
            .aliases()?
            .iter()
            .filter(|alias| wildcard_match(&normalize_alias(&alias.pattern), &wanted_alias))
            .map(|alias| alias.module.clone())
            .collect();
        matches.sort();
        matches.dedup();
        let (loadable, builtin): (Vec<String>, Vec<String>) = matches
            .into_iter()
            .partition(|module| self.index.modules.contains_key(module));
        if !loadable.is_empty() {
            return Ok(Resolution::Modules(loadable));
        }
        if let Some(module) = builtin.into_iter().find(|m| self.index.builtin.contains(m)) {
            return Ok(Resolution::Builtin(module));
        }
        if let Some(alias) = self
            .index
            .builtin_aliases
            .iter()
            .find(|alias| wildcard_match(&normalize_alias(&alias.pattern), &wanted_alias))
        {
            return Ok(Resolution::Builtin(alias.module.clone()));
        }
        Err(ModuleError::Unknown {
            name: name.to_string(),
            dir: self.index.dir.clone(),
        })
    }

    fn aliases(&mut self) -> Result<&[AliasLine], ModuleError> {
        if let Some(aliases) = &self.index.aliases {
            return Ok(aliases);
        }
        if self.scanned_aliases.is_none() {
            let mut aliases = Vec::new();
            for (name, record) in &self.index.modules {
                let info = self.read_modinfo(&record.path)?;
                aliases.extend(info.aliases.into_iter().map(|pattern| AliasLine {
                    pattern,
                    module: name.clone(),
                }));
            }
            self.scanned_aliases = Some(aliases);
        }
        Ok(self.scanned_aliases.as_deref().unwrap_or_default())
    }

    fn read_modinfo(&self, path: &str) -> Result<crate::modinfo::ModInfo, ModuleError> {
        let host_path = self.index.dir.join(path);
        let bytes = fs::read(&host_path).map_err(|source| ModuleError::Io {
            path: host_path.clone(),
            source,
        })?;
        let file_name = path.rsplit('/').next().unwrap_or(path);
        let compression =
            ModuleCompression::from_file_name(file_name).unwrap_or(ModuleCompression::None);
        let image = decompress_module(&bytes, compression, path)?;
        read_modinfo(&image, path)
    }

    fn dependencies_of(&mut self, name: &str) -> Result<Vec<String>, ModuleError> {
        if let Some(known) = self.dependencies.get(name) {
            return Ok(known.clone());
        }
        let record = self
            .index
            .modules
            .get(name)
            .ok_or_else(|| ModuleError::Unknown {
                name: name.to_string(),
                dir: self.index.dir.clone(),
            })?;
        let dependencies = match &record.dependencies {
            Some(known) => known.clone(),
            None => {
                let info = self.read_modinfo(&record.path)?;
                info.depends
                    .iter()
                    .map(|d| normalize_module_name(d))
                    .collect()
            }
        };
        self.dependencies
            .insert(name.to_string(), dependencies.clone());
        Ok(dependencies)
    }

    /// Iterative depth-first post-order, so a deep (or hostile) graph cannot overflow the stack.
    fn load_order(&mut self, roots: &[String]) -> Result<Vec<String>, ModuleError> {
        let mut state: HashMap<String, VisitState> = HashMap::new();
        let mut order = Vec::new();
        for root in roots {
            if state.contains_key(root) {
                continue;
            }
            state.insert(root.clone(), VisitState::InProgress);
            let mut stack: Vec<(String, Vec<String>, usize)> =
                vec![(root.clone(), self.dependencies_of(root)?, 0)];
            while let Some((name, dependencies, next)) = stack.last_mut() {
                let Some(dependency) = dependencies.get(*next).cloned() else {
                    state.insert(name.clone(), VisitState::Done);
                    order.push(name.clone());
                    stack.pop();
                    continue;
                };
                *next += 1;
                match state.get(&dependency) {
                    Some(VisitState::Done) => continue,
                    Some(VisitState::InProgress) => {
                        let start = stack
                            .iter()
                            .position(|(n, _, _)| *n == dependency)
                            .unwrap_or(0);
                        let mut cycle: Vec<String> =
                            stack[start..].iter().map(|(n, _, _)| n.clone()).collect();
                        cycle.push(dependency);
                        return Err(ModuleError::Cycle { cycle });
                    }
                    None => {}
                }
                if !self.index.modules.contains_key(&dependency) {
                    if self.index.builtin.contains(&dependency) {
                        continue;
                    }
                    return Err(ModuleError::MissingDependency {
                        module: name.clone(),
                        dependency,
                        dir: self.index.dir.clone(),
                    });
                }
                let dependencies = self.dependencies_of(&dependency)?;
                state.insert(dependency.clone(), VisitState::InProgress);
                stack.push((dependency, dependencies, 0));
            }
        }
        Ok(order)
    }
}

fn read_text(path: &Path) -> Result<Option<String>, ModuleError> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ModuleError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
            }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ModuleError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Built-in module names (`modules.builtin`, plus any named in `modules.builtin.modinfo`) and
/// the aliases of built-in modules (`modules.builtin.modinfo`).
fn read_builtin(dir: &Path) -> Result<(BTreeSet<String>, Vec<AliasLine>), ModuleError> {
    let mut names: BTreeSet<String> = match read_text(&dir.join("modules.builtin"))? {
        Some(text) => parse_modules_builtin(&text)?.into_iter().collect(),
        None => BTreeSet::new(),
    };
    let modinfo_path = dir.join("modules.builtin.modinfo");
    let aliases = match fs::read(&modinfo_path) {
        Ok(bytes) => {
            let (modinfo_names, aliases) = parse_builtin_modinfo(&bytes);
            names.extend(modinfo_names);
            aliases
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(ModuleError::Io {
                path: modinfo_path,
                source,
            })
        }
    };
    Ok((names, aliases))
}

/// Parses `modules.builtin.modinfo`: NUL-separated `module.key=value` strings, the `.modinfo`
/// of every built-in module. Returns the module names and their aliases; malformed strings are
/// skipped like `modinfo` skips them.
pub fn parse_builtin_modinfo(bytes: &[u8]) -> (BTreeSet<String>, Vec<AliasLine>) {
    let mut names = BTreeSet::new();
    let mut aliases = Vec::new();
    for field in bytes.split(|&byte| byte == 0) {
        let Ok(field) = std::str::from_utf8(field) else {
            continue;
        };
        let Some((qualified_key, value)) = field.split_once('=') else {
            continue;
        };
        let Some((module, key)) = qualified_key.split_once('.') else {
            continue;
        };
        if module.is_empty() {
            continue;
        }
        let module = normalize_module_name(module);
        if key == "alias" {
            aliases.push(AliasLine {
                pattern: value.to_string(),
                module: module.clone(),
            });
        }
        names.insert(module);
    }
    (names, aliases)
}

/// Collects module file paths (relative, `/`-separated) below `dir/relative`. Symlinks are not
/// followed: `build` and `source` point at kernel headers, and links could loop.
fn scan_module_files(
    dir: &Path,
    relative: &str,
    depth: usize,
    paths: &mut Vec<String>,
) -> Result<(), ModuleError> {
    if depth > MAX_SCAN_DEPTH {
        return Ok(());
    }
    let here = if relative.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(relative)
    };
    let io_error = |source| ModuleError::Io {
        path: here.clone(),
        source,
    };
    for entry in fs::read_dir(&here).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let path = if relative.is_empty() {
            name.clone()
        } else {
            format!("{relative}/{name}")
        };
        let file_type = entry.file_type().map_err(io_error)?;
        if file_type.is_dir() {
            scan_module_files(dir, &path, depth + 1, paths)?;
        } else if file_type.is_file() && ModuleCompression::from_file_name(&name).is_some() {
            paths.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic_dir(dep: &str, alias: &str, builtin: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("modules.dep"), dep).unwrap();
        if !alias.is_empty() {
            fs::write(dir.path().join("modules.alias"), alias).unwrap();
        }
        if !builtin.is_empty() {
            fs::write(dir.path().join("modules.builtin"), builtin).unwrap();
        }
        dir
    }

    const DEP: &str = "\
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/overlayfs/overlay.ko:
kernel/arch/x86/events/amd/amd-uncore.ko:
";

    fn names(closure: &ModuleClosure) -> Vec<&str> {
        closure.modules.iter().map(|m| m.name.as_str()).collect()
    }

    fn assert_dependencies_first(index: &ModuleIndex, closure: &ModuleClosure) {
        let mut walk = ClosureWalk {
            index,
            dependencies: HashMap::new(),
            scanned_aliases: None,
        };
        for (position, module) in closure.modules.iter().enumerate() {
            for dependency in walk.dependencies_of(&module.name).unwrap() {
                let dep_position = closure.modules.iter().position(|m| m.name == dependency);
                assert!(
                    dep_position.is_some_and(|p| p < position),
                    "{dependency} must come before {}",
                    module.name
                );
            }
        }
    }

    #[test]
    fn closure_orders_dependencies_first_without_duplicates() {
        let dir = synthetic_dir(DEP, "", "");
        let index = ModuleIndex::load(dir.path()).unwrap();
        assert_eq!(index.source(), DependencySource::ModulesDep);
        let closure = index.closure(&["virtio_net", "virtio", "overlay"]).unwrap();
        assert_eq!(
            names(&closure),
            [
                "failover",
                "net_failover",
                "virtio_ring",
                "virtio",
                "virtio_net",
                "overlay"
            ]
        );
        assert_dependencies_first(&index, &closure);
        assert_eq!(closure.modules[4].path, "kernel/drivers/net/virtio_net.ko");
        assert_eq!(
            closure.modules[4].host_path,
            dir.path().join("kernel/drivers/net/virtio_net.ko")
        );
    }

    #[test]
    fn dashes_and_underscores_are_the_same_name() {
        let dir = synthetic_dir(DEP, "", "");
        let index = ModuleIndex::load(dir.path()).unwrap();
        let closure = index
            .closure(&["amd_uncore", "amd-uncore", "virtio-net"])
            .unwrap();
        assert_eq!(names(&closure)[0], "amd_uncore");
        assert_eq!(
            closure.modules[0].path,
            "kernel/arch/x86/events/amd/amd-uncore.ko"
        );
        assert_eq!(names(&closure).len(), 6);
    }

    #[test]
    fn aliases_and_builtins_resolve() {
        let alias = "# Aliases extracted from modules themselves.\n\
                     alias fs-overlay overlay\n\
                     alias virtio:d00000001v* virtio_net\n\
                     alias fs-binfmt-script binfmt_script\n";
        let dir = synthetic_dir(
            DEP,
            alias,
            "kernel/fs/binfmt_script.ko\nkernel/fs/ext4/ext4.ko\n",
        );
        let index = ModuleIndex::load(dir.path()).unwrap();
        let closure = index
            .closure(&[
                "fs-overlay",
                "virtio:d00000001v00001AF4",
                "ext4",
                "fs_binfmt_script",
            ])
            .unwrap();
        assert!(names(&closure).contains(&"overlay"));
        assert!(names(&closure).contains(&"virtio_net"));
        assert_eq!(closure.builtin, ["ext4", "binfmt_script"]);
    }

    #[test]
    fn builtin_modinfo_gives_builtin_aliases() {
        let dir = synthetic_dir(DEP, "", "");
        fs::write(
            dir.path().join("modules.builtin.modinfo"),
            b"ipv6.file=net/ipv6/ipv6\0ipv6.alias=net-pf-10\0garbage\0.x=y\0unix.alias=net-pf-1\0",
        )
        .unwrap();
        let index = ModuleIndex::load(dir.path()).unwrap();
        let closure = index.closure(&["net-pf-10", "ipv6", "unix"]).unwrap();
        assert!(closure.modules.is_empty());
        assert_eq!(closure.builtin, ["ipv6", "unix"]);
    }

    #[test]
    fn unknown_module_is_named_in_the_error() {
        let dir = synthetic_dir(DEP, "", "");
        let index = ModuleIndex::load(dir.path()).unwrap();
        let error = index.closure(&["virtio_net", "nosuchmod"]).unwrap_err();
        assert!(matches!(&error, ModuleError::Unknown { name, .. } if name == "nosuchmod"));
        assert!(error.to_string().contains("nosuchmod"));
    }

    #[test]
    fn cycles_are_errors() {
        let dep = "a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\nd.ko: d.ko\n";
        let dir = synthetic_dir(dep, "", "");
        let index = ModuleIndex::load(dir.path()).unwrap();
        match index.closure(&["a"]).unwrap_err() {
            ModuleError::Cycle { cycle } => assert_eq!(cycle, ["a", "b", "c", "a"]),
            other => panic!("unexpected {other}"),
        }
        assert!(matches!(
            index.closure(&["d"]),
            Err(ModuleError::Cycle { .. })
        ));
    }

    #[test]
    fn missing_dependency_is_an_error() {
        let dir = synthetic_dir("a.ko: kernel/gone.ko\n", "", "");
        let index = ModuleIndex::load(dir.path()).unwrap();
        assert!(matches!(
            index.closure(&["a"]),
            Err(ModuleError::MissingDependency { dependency, .. }) if dependency == "gone"
        ));
    }

    #[test]
    fn deep_chains_do_not_overflow_the_stack() {
        let mut dep = String::new();
        for i in 0..50_000 {
            dep.push_str(&format!("m{i}.ko: m{}.ko\n", i + 1));
        }
        dep.push_str("m50000.ko:\n");
        let lines = parse_modules_dep(&dep).unwrap();
        assert_eq!(lines.len(), 50_001);
        let dir = synthetic_dir(&dep, "", "");
        let index = ModuleIndex::load(dir.path()).unwrap();
        let closure = index.closure(&["m0"]).unwrap();
        assert_eq!(closure.modules.len(), 50_001);
        assert_eq!(closure.modules[0].name, "m50000");
    }

    #[test]
    fn garbage_index_lines_are_errors_with_line_numbers() {
        for (bad, line) in [
            ("a.ko:\nthis is garbage\n", 2),
            ("/abs/a.ko:\n", 1),
            ("kernel/../../etc/a.ko:\n", 1),
            ("a.ko: ../b.ko\n", 1),
            ("a.txt:\n", 1),
            ("a.ko: b.ko c\n", 1),
        ] {
            match parse_modules_dep(bad) {
                Err(ModuleError::Parse { line: l, file, .. }) => {
                    assert_eq!((l, file), (line, "modules.dep"), "{bad:?}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_modules_alias("alias x\n"),
            Err(ModuleError::Parse { line: 1, .. })
        ));
        assert!(matches!(
            parse_modules_builtin("ok.ko\nnot-a-module\n"),
            Err(ModuleError::Parse { line: 2, .. })
        ));
        let dir = synthetic_dir("garbage\n", "", "");
        assert!(matches!(
            ModuleIndex::load(dir.path()),
            Err(ModuleError::Parse { .. })
        ));
    }

    #[test]
    fn module_names_from_paths() {
        assert_eq!(
            module_name_from_path("kernel/a/amd-uncore.ko.zst").as_deref(),
            Some("amd_uncore")
        );
        assert_eq!(module_name_from_path("x.ko.xz").as_deref(), Some("x"));
        assert_eq!(module_name_from_path(".ko"), None);
        assert_eq!(module_name_from_path("x.o"), None);
        assert_eq!(normalize_alias("pci:v*d[0-9]-x"), "pci:v*d[0-9]_x");
    }
}
