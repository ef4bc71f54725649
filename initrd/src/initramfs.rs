//! The node initramfs, assembled from the pieces of this crate: files from a root directory
//! with their symlink chains, executables with their shared-library closure, kernel modules
//! with their dependency closure and a load-order file for `/init`, and compression.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::compress::Compression;
use crate::cpio::{Archive, Entry};
use crate::error::{ArchiveError, Error, ModuleError, RootError};
use crate::ldso::{LibraryClosure, LibraryResolver};
use crate::modinfo::{decompress_module, ModuleCompression};
use crate::modules::{ModuleClosure, ModuleIndex};
use crate::path::ArchivePath;
use crate::rootfs::RootFs;

/// Where the module load order is written: one absolute module path per line, dependencies
/// first, so `/init` can run `while read m; do insmod "$m"; done < /etc/modules-load.order`.
pub const MODULES_LOAD_ORDER: &str = "etc/modules-load.order";

/// Top-level directories that merged-/usr systems turn into symlinks into `/usr`.
const MERGED_USR_DIRS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Builds a node initramfs.
///
/// ```no_run
/// use initrd::{Compression, InitramfsBuilder};
/// use std::path::Path;
///
/// let mut builder = InitramfsBuilder::new();
/// builder.set_mtime(0);
/// // Same top-level layout as the root the libraries come from (bin -> usr/bin, ...).
/// builder.mirror_merged_usr(Path::new("/"))?;
/// builder.add_base_layout()?;
/// builder.add_busybox(Path::new("busybox-static/bin/busybox"), &["sh", "mount", "insmod"])?;
/// builder.add_executable_file(
///     Path::new("target/release/clustermaker"),
///     "usr/bin/clustermaker",
///     Path::new("/"),
/// )?;
/// builder.add_kernel_modules(
///     Path::new("kernel/lib/modules/6.1.0-56-cloud-amd64"),
///     &["virtio_pci", "virtio_net", "nfsv3", "overlay"],
/// )?;
/// builder.archive_mut().add_file("init", 0o755, "#!/bin/sh\n...")?;
/// let file = std::fs::File::create("initrd.img")?;
/// builder.write(Compression::default(), file)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct InitramfsBuilder {
    archive: Archive,
    /// Absolute paths (inside the initramfs) of the modules to load, in order.
    module_load_order: Vec<String>,
}

impl InitramfsBuilder {
    /// An empty initramfs.
    pub fn new() -> InitramfsBuilder {
        InitramfsBuilder::default()
    }

    /// Sets the mtime of every entry (e.g. from `SOURCE_DATE_EPOCH`); default 0.
    pub fn set_mtime(&mut self, mtime: u32) {
        self.archive.set_mtime(mtime);
    }

    /// The archive built so far.
    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    /// The archive, to add entries directly (the `/init` script, configuration files...).
    pub fn archive_mut(&mut self) -> &mut Archive {
        &mut self.archive
    }

    /// Gives the initramfs the same merged-/usr links as `root` (`bin -> usr/bin`,
    /// `lib -> usr/lib`, ...), so that files added later under `lib/` land where a binary
    /// from that root expects them. Call it before adding anything below those directories.
    /// Returns the links added.
    pub fn mirror_merged_usr(&mut self, root: &Path) -> Result<Vec<String>, Error> {
        let rootfs = RootFs::new(root);
        let mut mirrored = Vec::new();
        for name in MERGED_USR_DIRS {
            let host = rootfs.host_path(name);
            let Ok(metadata) = std::fs::symlink_metadata(&host) else {
                continue;
            };
            if !metadata.file_type().is_symlink() || !host.is_dir() {
                continue;
            }
            let target = std::fs::read_link(&host).map_err(|source| RootError::Io {
                path: host.clone(),
                source,
            })?;
            let target = target
                .to_str()
                .ok_or(RootError::NotUtf8 { path: host.clone() })?
                .to_string();
            self.archive.add_symlink(name, &target)?;
            mirrored.push(name.to_string());
        }
        Ok(mirrored)
    }

    /// Directories every initramfs needs and the two device nodes the kernel and `/init` use
    /// before any file system is mounted: `dev/console` (5:1) and `dev/null` (1:3). Without
    /// `dev/console` in the archive the kernel starts `/init` with no stdin/stdout.
    pub fn add_base_layout(&mut self) -> Result<(), Error> {
        for dir in ["dev", "proc", "sys", "run", "mnt", "etc", "root"] {
            self.archive.add_dir(dir, 0o755)?;
        }
        self.archive.add_dir("tmp", 0o1777)?;
        self.archive.add_char_device("dev/console", 0o600, 5, 1)?;
        self.archive.add_char_device("dev/null", 0o666, 1, 3)?;
        Ok(())
    }

    /// Adds a static busybox as `bin/busybox` with `bin/<applet> -> busybox` links.
    pub fn add_busybox<S: AsRef<str>>(
        &mut self,
        busybox: &Path,
        applets: &[S],
    ) -> Result<(), Error> {
        self.archive.add_host_file("bin/busybox", 0o755, busybox)?;
        for applet in applets {
            self.archive
                .add_symlink(&format!("bin/{}", applet.as_ref()), "busybox")?;
        }
        Ok(())
    }

    /// Adds the file or directory at `path_in_root` of `root`; see [`add_from_root`].
    pub fn add_from_root(&mut self, root: &Path, path_in_root: &str) -> Result<ArchivePath, Error> {
        add_from_root(&mut self.archive, root, path_in_root)
    }

    /// Adds the executable at `path_in_root` of `root`, its interpreter and every shared
    /// library it needs (see [`LibraryResolver`]). A static executable is added alone.
    pub fn add_executable(
        &mut self,
        root: &Path,
        path_in_root: &str,
    ) -> Result<LibraryClosure, Error> {
        let closure = LibraryResolver::new(root)?.closure_of(path_in_root)?;
        add_from_root(&mut self.archive, root, path_in_root)?;
        add_libraries(&mut self.archive, root, &closure)?;
        Ok(closure)
    }

    /// Adds a program that is not inside `lib_root` (e.g. `target/release/clustermaker`) at
    /// `archive_path` with mode 0755, plus its interpreter and libraries from `lib_root`.
    pub fn add_executable_file(
        &mut self,
        host_file: &Path,
        archive_path: &str,
        lib_root: &Path,
    ) -> Result<LibraryClosure, Error> {
        let closure = LibraryResolver::new(lib_root)?.closure_of_file(host_file, archive_path)?;
        self.archive.add_host_file(archive_path, 0o755, host_file)?;
        add_libraries(&mut self.archive, lib_root, &closure)?;
        Ok(closure)
    }

    /// Adds the modules of `modules_dir` (`.../lib/modules/<version>`) needed for `wanted`, with
    /// their dependencies (see [`add_modules`]), and (re)writes [`MODULES_LOAD_ORDER`].
    /// Calling this again appends to the load order.
    pub fn add_kernel_modules<S: AsRef<str>>(
        &mut self,
        modules_dir: &Path,
        wanted: &[S],
    ) -> Result<ModuleClosure, Error> {
        let index = ModuleIndex::load(modules_dir)?;
        let closure = index.closure(wanted)?;
        for installed in add_modules(&mut self.archive, &closure, &index.version())? {
            if !self.module_load_order.contains(&installed) {
                self.module_load_order.push(installed);
            }
        }
        self.archive.replace(
            MODULES_LOAD_ORDER,
            Entry::file(0o644, load_order_file(&self.module_load_order)),
        )?;
        Ok(closure)
    }

    /// Writes the archive compressed with `compression` to `out`, and returns `out`.
    pub fn write<W: Write>(&self, compression: Compression, out: W) -> Result<W, Error> {
        let encoder = compression.writer(out)?;
        let encoder = self.archive.write(encoder)?;
        Ok(encoder
            .finish()
            .map_err(crate::error::ArchiveError::Write)?)
    }

    /// The compressed archive as bytes.
    pub fn to_bytes(&self, compression: Compression) -> Result<Vec<u8>, Error> {
        self.write(compression, Vec::new())
    }
}

/// Copies the file or directory at `path_in_root` of `root` into `archive` so that, inside the
/// initramfs, `path_in_root` leads to it — the name the loader (or `/init`) will open.
///
/// The real object goes to its real path (every symlink resolved inside `root`), and each
/// symlink met on the way is added as the same symlink, so a library keeps its host layout
/// (`/lib64/ld-linux-x86-64.so.2 -> ../lib/...`, merged-/usr `lib -> usr/lib`). When the
/// archive already uses a link's place differently (say `lib` is a real directory in the
/// archive but a link in the root), that link is left out and, if `path_in_root` then no
/// longer leads to the object, an absolute symlink is added at `path_in_root` instead. Either
/// way the result works at run time, whatever was added to the archive before.
/// Returns where the real object was stored.
pub fn add_from_root(
    archive: &mut Archive,
    root: &Path,
    path_in_root: &str,
) -> Result<ArchivePath, Error> {
    let resolved = RootFs::new(root).resolve(path_in_root)?;
    let mode = resolved.metadata.permissions().mode() & 0o7777;
    let stored = if resolved.metadata.is_file() {
        archive.insert(&resolved.path, Entry::host_file(mode, &resolved.host_path)?)?
    } else if resolved.metadata.is_dir() {
        archive.add_dir(&resolved.path, mode)?
    } else {
        return Err(RootError::Io {
            path: resolved.host_path,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "only regular files and directories can be copied from a root",
            ),
        }
        .into());
    };
    for link in &resolved.links {
        match archive.add_symlink(&link.path, &link.target) {
            Ok(_) => {}
            Err(ArchiveError::Conflict { .. } | ArchiveError::DirectoryNotEmpty { .. }) => {}
            Err(other) => return Err(other.into()),
        }
    }
    if archive.resolve(path_in_root)? != stored {
        let (parent, name) = path_in_root
            .trim_end_matches('/')
            .rsplit_once('/')
            .unwrap_or(("", path_in_root));
        let place = if parent.trim_matches('/').is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", archive.resolve(parent)?)
        };
        archive.add_symlink(&place, &stored.to_absolute())?;
    }
    Ok(stored)
}

/// Adds the interpreter and libraries of `closure`, found in `root`, with [`add_from_root`].
pub fn add_libraries(
    archive: &mut Archive,
    root: &Path,
    closure: &LibraryClosure,
) -> Result<(), Error> {
    for library in closure.iter() {
        add_from_root(archive, root, &library.path)?;
    }
    Ok(())
}

/// Adds the modules of `closure` under `lib/modules/<version>/` and returns their absolute
/// paths inside the initramfs, in load order. gzip and zstd modules are stored decompressed
/// (the initramfs is compressed as a whole, and busybox `insmod` may not decompress); xz
/// modules are kept as they are.
pub fn add_modules(
    archive: &mut Archive,
    closure: &ModuleClosure,
    version: &str,
) -> Result<Vec<String>, Error> {
    let base = format!("lib/modules/{version}");
    let mut installed_paths = Vec::with_capacity(closure.modules.len());
    for module in &closure.modules {
        let installed = match module.compression {
            ModuleCompression::None | ModuleCompression::Xz => {
                let installed = format!("{base}/{}", module.path);
                archive.add_host_file(&installed, 0o644, &module.host_path)?;
                installed
            }
            ModuleCompression::Gzip | ModuleCompression::Zstd => {
                let bytes = std::fs::read(&module.host_path).map_err(|source| ModuleError::Io {
                    path: module.host_path.clone(),
                    source,
                })?;
                let image = decompress_module(&bytes, module.compression, &module.path)?;
                let plain_path = module
                    .path
                    .strip_suffix(module.compression.suffix())
                    .unwrap_or(&module.path);
                let installed = format!("{base}/{plain_path}");
                archive.add_file(&installed, 0o644, image)?;
                installed
            }
        };
        installed_paths.push(format!("/{installed}"));
    }
    Ok(installed_paths)
}

/// The contents of [`MODULES_LOAD_ORDER`]: one path per line.
pub fn load_order_file(paths: &[String]) -> String {
    paths.iter().map(|path| format!("{path}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::EntryKind;
    use crate::elf::tests::TestElf;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A merged-/usr root with a loader, libc and `/usr/bin/tool` needing libc.
    fn merged_usr_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu")).unwrap();
        fs::create_dir_all(r.join("usr/lib64")).unwrap();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("usr/lib64", r.join("lib64")).unwrap();
        symlink("usr/bin", r.join("bin")).unwrap();
        fs::write(
            r.join("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            TestElf::library("ld-linux-x86-64.so.2").build(),
        )
        .unwrap();
        symlink(
            "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            r.join("usr/lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        fs::write(
            r.join("usr/lib/x86_64-linux-gnu/libc.so.6"),
            TestElf::library("libc.so.6").build(),
        )
        .unwrap();
        let program = TestElf::executable("/lib64/ld-linux-x86-64.so.2", &["libc.so.6"]).build();
        fs::write(r.join("usr/bin/tool"), &program).unwrap();
        fs::set_permissions(r.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        root
    }

    #[test]
    fn merged_usr_layout_is_mirrored_and_libraries_follow_it() {
        let root = merged_usr_root();
        let r = root.path();
        let mut builder = InitramfsBuilder::new();
        assert_eq!(
            builder.mirror_merged_usr(r).unwrap(),
            ["bin", "lib", "lib64"]
        );
        let closure = builder.add_executable(r, "/bin/tool").unwrap();
        assert_eq!(closure.libraries.len(), 1);
        let archive = builder.archive();
        let kind = |path: &str| archive.get(path).map(|e| e.kind().clone());
        assert!(matches!(kind("lib64"), Some(EntryKind::Symlink(t)) if t == "usr/lib64"));
        assert!(matches!(
            kind("usr/lib64/ld-linux-x86-64.so.2"),
            Some(EntryKind::Symlink(t)) if t == "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
        ));
        assert!(matches!(
            kind("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            Some(EntryKind::File(_))
        ));
        assert!(matches!(
            kind("usr/lib/x86_64-linux-gnu/libc.so.6"),
            Some(EntryKind::File(_))
        ));
        assert_eq!(archive.get("usr/bin/tool").unwrap().mode(), 0o755);
        // Files added later under lib/ follow the mirrored link.
        builder
            .archive_mut()
            .add_file("lib/modules/x", 0o644, "")
            .unwrap();
        assert!(builder.archive().get("usr/lib/modules/x").is_some());
    }

    #[test]
    fn libraries_resolve_even_where_the_archive_has_real_directories() {
        let root = merged_usr_root();
        let r = root.path();
        let mut builder = InitramfsBuilder::new();
        builder
            .archive_mut()
            .add_file("lib/keep", 0o644, "")
            .unwrap();
        builder.add_executable(r, "/bin/tool").unwrap();
        let archive = builder.archive();
        assert!(matches!(
            archive.get("lib").unwrap().kind(),
            EntryKind::Directory
        ));
        for (name, real) in [
            (
                "lib/x86_64-linux-gnu/libc.so.6",
                "usr/lib/x86_64-linux-gnu/libc.so.6",
            ),
            (
                "lib64/ld-linux-x86-64.so.2",
                "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            ),
            ("bin/tool", "usr/bin/tool"),
        ] {
            assert_eq!(archive.resolve(name).unwrap().as_str(), real, "{name}");
            assert!(matches!(
                archive.get(real).unwrap().kind(),
                EntryKind::File(_)
            ));
        }
    }

    #[test]
    fn kernel_modules_are_installed_decompressed_with_a_load_order() {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("lib/modules/6.1.0-test");
        fs::create_dir_all(modules.join("kernel")).unwrap();
        fs::write(
            modules.join("modules.dep"),
            "kernel/a.ko.zst: kernel/b.ko\nkernel/b.ko:\nkernel/c.ko.xz:\n",
        )
        .unwrap();
        fs::write(
            modules.join("kernel/a.ko.zst"),
            zstd::encode_all(&b"module a"[..], 3).unwrap(),
        )
        .unwrap();
        fs::write(modules.join("kernel/b.ko"), "module b").unwrap();
        fs::write(modules.join("kernel/c.ko.xz"), "xz bytes").unwrap();
        let mut builder = InitramfsBuilder::new();
        let closure = builder.add_kernel_modules(&modules, &["a"]).unwrap();
        assert_eq!(closure.modules.len(), 2);
        builder.add_kernel_modules(&modules, &["c", "b"]).unwrap();
        let archive = builder.archive();
        let order = match archive.get(MODULES_LOAD_ORDER).unwrap().kind() {
            EntryKind::File(crate::cpio::FileContent::Bytes(bytes)) => {
                String::from_utf8(bytes.to_vec()).unwrap()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            order,
            "/lib/modules/6.1.0-test/kernel/b.ko\n/lib/modules/6.1.0-test/kernel/a.ko\n/lib/modules/6.1.0-test/kernel/c.ko.xz\n"
        );
        assert!(matches!(
            archive.get("lib/modules/6.1.0-test/kernel/a.ko").unwrap().kind(),
            EntryKind::File(crate::cpio::FileContent::Bytes(bytes)) if &bytes[..] == b"module a"
        ));
    }

    #[test]
    fn base_layout_has_console_and_null() {
        let mut builder = InitramfsBuilder::new();
        builder.add_base_layout().unwrap();
        builder.add_base_layout().unwrap();
        assert!(matches!(
            builder.archive().get("dev/console").unwrap().kind(),
            EntryKind::CharDevice { major: 5, minor: 1 }
        ));
        assert_eq!(builder.archive().get("tmp").unwrap().mode(), 0o1777);
    }
}
