//! Filling a staging tree from a source: a directory, a root tarball (plain or gzip, detected
//! by magic) or an OCI / `docker save` image tar (layers applied in order, with whiteouts).
//!
//! Archives are hostile input: names are checked by [`RelPath`], writes go through
//! [`TreeWriter`] (no escape through `..`, absolute names or symlinked parents), content is
//! streamed (memory does not grow with entry sizes; the `tar` crate holds at most one long
//! name or PAX header at a time), and a short archive is an error naming the entry.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::progress::Progress;
use crate::relpath::RelPath;
use crate::tree::{Meta, Special, TreeWriter};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A reader with gzip undone when the stream starts with the gzip magic.
pub fn decompressed<'a, R: Read + 'a>(r: R) -> Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(64 * 1024, r);
    let head = br.fill_buf().context("cannot read the archive")?;
    if head.starts_with(&GZIP_MAGIC) {
        return Ok(Box::new(flate2::read::MultiGzDecoder::new(br)));
    }
    if head.starts_with(&ZSTD_MAGIC) {
        bail!(
            "zstd-compressed archives are not supported (fix: decompress it with `zstd -d` first)"
        );
    }
    Ok(Box::new(br))
}

/// How archive entries are applied.
#[derive(Debug, Clone, Copy, Default)]
pub struct TarOptions {
    /// `.wh.` names are OCI whiteouts (layers), not files.
    pub whiteouts: bool,
}

/// Unpacks one tar stream (already decompressed) onto the tree.
pub fn apply_tar(
    reader: &mut dyn Read,
    tree: &mut TreeWriter,
    opts: TarOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().context("cannot read the tar archive")?;
    for (n, entry) in entries.enumerate() {
        let mut entry = entry.with_context(|| format!("tar entry #{}: malformed", n + 1))?;
        let raw = entry.path_bytes().into_owned();
        let shown = crate::relpath::escape(&raw);
        let rel = RelPath::parse(&raw).map_err(|e| anyhow!("tar entry `{shown}`: {e}: refused"))?;
        apply_entry(&mut entry, &rel, tree, opts, progress)
            .with_context(|| format!("tar entry `{shown}`"))?;
        progress.item();
    }
    Ok(())
}

fn apply_entry(
    entry: &mut tar::Entry<'_, &mut dyn Read>,
    rel: &RelPath,
    tree: &mut TreeWriter,
    opts: TarOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let h = entry.header();
    let meta = Meta {
        mode: h.mode().context("bad mode")? & 0o7777,
        uid: u32::try_from(h.uid().context("bad uid")?).context("uid out of range")?,
        gid: u32::try_from(h.gid().context("bad gid")?).context("gid out of range")?,
        mtime: i64::try_from(h.mtime().context("bad mtime")?).context("mtime out of range")?,
        mtime_nsec: 0,
    };
    let kind = h.entry_type();
    if opts.whiteouts && rel.file_name().starts_with(b".wh.") {
        return tree.whiteout(rel);
    }
    use tar::EntryType as T;
    match kind {
        T::Directory => tree.dir(rel, &meta),
        T::Regular | T::Continuous => {
            let size = entry.size();
            tree.file(rel, &meta, entry, size, progress)
        }
        T::Symlink => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| anyhow!("symlink without a target"))?
                .into_owned();
            tree.symlink(rel, &meta, &target)
        }
        T::Link => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| anyhow!("hard link without a target"))?;
            let target =
                RelPath::parse(&target).map_err(|e| anyhow!("hard link target: {e}: refused"))?;
            tree.hardlink(rel, &target)
        }
        T::Char | T::Block => {
            let ma = entry.header().device_major().ok().flatten().unwrap_or(0) as u64;
            let mi = entry.header().device_minor().ok().flatten().unwrap_or(0) as u64;
            let s = if kind == T::Char {
                Special::Char(ma, mi)
            } else {
                Special::Block(ma, mi)
            };
            tree.special(rel, &meta, s)
        }
        T::Fifo => tree.special(rel, &meta, Special::Fifo),
        T::GNUSparse => {
            bail!("sparse files are not supported (fix: create the archive without --sparse)")
        }
        // PAX global headers and vendor types carry nothing for the tree.
        _ => Ok(()),
    }
}

/// A root tarball (`.tar`, `.tar.gz`, `.tgz`; compression detected by magic).
pub fn from_tar(file: &Path, tree: &mut TreeWriter, progress: &dyn Progress) -> Result<()> {
    let f = File::open(file).with_context(|| {
        format!(
            "cannot open {} (fix: give an existing tar file)",
            file.display()
        )
    })?;
    progress.phase("unpacking", f.metadata().ok().map(|m| m.len()));
    let mut r = decompressed(CountingReader { inner: f, progress })?;
    apply_tar(&mut r, tree, TarOptions::default(), progress)
}

/// Reports compressed bytes read, so the bar follows the file size.
struct CountingReader<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.bytes(n as u64);
        Ok(n)
    }
}

/// The JSON files of an image tar are small; anything larger is not one.
const MAX_JSON: u64 = 4 << 20;

#[derive(Deserialize)]
struct DockerManifest {
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct OciIndex {
    manifests: Vec<OciDescriptor>,
}

#[derive(Deserialize)]
struct OciDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<OciPlatform>,
}

#[derive(Deserialize)]
struct OciPlatform {
    #[serde(default)]
    architecture: String,
}

#[derive(Deserialize)]
struct OciManifest {
    #[serde(default)]
    manifests: Option<Vec<OciDescriptor>>,
    #[serde(default)]
    layers: Vec<OciDescriptor>,
}

/// Where each member of the outer tar is: (offset of its data, size).
type Members = HashMap<Vec<u8>, (u64, u64)>;

fn index_members(file: &mut File) -> Result<Members> {
    let mut members = Members::new();
    file.seek(SeekFrom::Start(0))?;
    let mut archive = tar::Archive::new(&mut *file);
    for entry in archive.entries().context("cannot read the image tar")? {
        let entry = entry.context("malformed image tar")?;
        let name = RelPath::parse(&entry.path_bytes()).map_err(|e| {
            anyhow!(
                "image tar member `{}`: {e}",
                crate::relpath::escape(&entry.path_bytes())
            )
        })?;
        if entry.header().entry_type().is_file() {
            members.insert(
                name.as_bytes().to_vec(),
                (entry.raw_file_position(), entry.size()),
            );
        }
    }
    Ok(members)
}

fn member<'f>(
    file: &'f mut File,
    members: &Members,
    name: &str,
) -> Result<std::io::Take<&'f mut File>> {
    let rel = RelPath::parse(name.as_bytes()).map_err(|e| anyhow!("`{name}`: {e}"))?;
    let (off, size) = members
        .get(rel.as_bytes())
        .ok_or_else(|| anyhow!("the image tar has no `{name}`"))?;
    file.seek(SeekFrom::Start(*off))?;
    Ok(file.take(*size))
}

fn read_json<T: for<'de> Deserialize<'de>>(
    file: &mut File,
    members: &Members,
    name: &str,
) -> Result<T> {
    let mut m = member(file, members, name)?;
    if m.limit() > MAX_JSON {
        bail!("`{name}` is larger than {MAX_JSON} bytes: not an image manifest");
    }
    let mut buf = Vec::new();
    m.read_to_end(&mut buf)?;
    serde_json::from_slice(&buf)
        .with_context(|| format!("`{name}` is not valid JSON of the expected shape"))
}

fn blob_path(digest: &str) -> Result<String> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| anyhow!("digest `{digest}` has no algorithm"))?;
    if alg.is_empty()
        || hex.is_empty()
        || !(alg
            .chars()
            .chain(hex.chars())
            .all(|c| c.is_ascii_alphanumeric()))
    {
        bail!("digest `{digest}` is not valid");
    }
    Ok(format!("blobs/{alg}/{hex}"))
}

/// The layer paths of an image tar in application order (bottom first): from `manifest.json`
/// (`docker save`) when present, else from the OCI `index.json` (first linux/amd64 or first
/// manifest; one level of nested index followed).
pub fn oci_layers(file: &mut File, members: &Members) -> Result<Vec<String>> {
    if members.contains_key(&b"manifest.json"[..]) {
        let m: Vec<DockerManifest> = read_json(file, members, "manifest.json")?;
        let first = m
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("manifest.json lists no image"))?;
        return Ok(first.layers);
    }
    if !members.contains_key(&b"index.json"[..]) {
        bail!("neither manifest.json nor index.json: not a `docker save` or OCI image-layout tar (fix: use tar:FILE for a plain root tarball)");
    }
    let index: OciIndex = read_json(file, members, "index.json")?;
    let mut desc = pick(index.manifests)?;
    for _ in 0..2 {
        let m: OciManifest = read_json(file, members, &blob_path(&desc.digest)?)?;
        if let Some(nested) = m.manifests {
            desc = pick(nested)?;
            continue;
        }
        let mut out = Vec::new();
        for l in m.layers {
            if l.media_type.contains("zstd") {
                bail!("layer {} is zstd-compressed, which is not supported (fix: export the image with gzip layers)", l.digest);
            }
            out.push(blob_path(&l.digest)?);
        }
        return Ok(out);
    }
    bail!("index.json nests image indexes more than once")
}

fn pick(mut list: Vec<OciDescriptor>) -> Result<OciDescriptor> {
    if list.is_empty() {
        bail!("the image index lists no manifest");
    }
    let i = list
        .iter()
        .position(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.architecture == "amd64")
        })
        .unwrap_or(0);
    Ok(list.swap_remove(i))
}

/// An OCI image-layout or `docker save` tar: its layers applied in order, whiteouts honoured.
/// Layers are read in place from the outer tar (seek to each member), so nothing is staged.
pub fn from_oci(path: &Path, tree: &mut TreeWriter, progress: &dyn Progress) -> Result<()> {
    let mut file = File::open(path).with_context(|| {
        format!(
            "cannot open {} (fix: give a `docker save` or OCI image-layout tar)",
            path.display()
        )
    })?;
    let members = index_members(&mut file)?;
    let layers = oci_layers(&mut file, &members)?;
    let total: u64 = layers
        .iter()
        .filter_map(|l| RelPath::parse(l.as_bytes()).ok())
        .filter_map(|l| members.get(l.as_bytes()).map(|m| m.1))
        .sum();
    progress.phase("layers", Some(total));
    for (i, layer) in layers.iter().enumerate() {
        tree.start_layer();
        let m = member(&mut file, &members, layer)?;
        let mut r = decompressed(CountingReader { inner: m, progress })?;
        apply_tar(&mut r, tree, TarOptions { whiteouts: true }, progress)
            .with_context(|| format!("layer {} ({layer})", i + 1))?;
    }
    Ok(())
}

/// A directory copied as is (owners, modes, mtimes, hard links, devices, symlinks), minus
/// `exclude`, staying on one file system when asked (the host root).
pub fn from_dir(
    src: &Path,
    exclude: &[RelPath],
    one_file_system: bool,
    tree: &mut TreeWriter,
    progress: &dyn Progress,
) -> Result<()> {
    let md = src.symlink_metadata().with_context(|| {
        format!(
            "cannot read {} (fix: give an existing directory)",
            src.display()
        )
    })?;
    if !md.is_dir() {
        bail!(
            "{} is not a directory (fix: give the root directory of the image)",
            src.display()
        );
    }
    progress.phase("copying", None);
    let mut inodes: HashMap<(u64, u64), RelPath> = HashMap::new();
    let walker = walkdir::WalkDir::new(src)
        .follow_links(false)
        .same_file_system(one_file_system)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(
            |e| match e.path().strip_prefix(src).map(RelPath::from_path) {
                Ok(Ok(rel)) => !exclude.iter().any(|x| rel.starts_with(x)),
                _ => true,
            },
        );
    for item in walker {
        let item = item.with_context(|| format!("walking {}", src.display()))?;
        let rel = RelPath::from_path(item.path().strip_prefix(src).unwrap_or(item.path()))
            .map_err(|e| anyhow!("{}: {e}", item.path().display()))?;
        let md = item
            .path()
            .symlink_metadata()
            .with_context(|| format!("cannot stat {}", item.path().display()))?;
        let meta = Meta::of(&md);
        let ft = md.file_type();
        use std::os::unix::fs::FileTypeExt;
        if ft.is_dir() {
            tree.dir(&rel, &meta)?;
        } else if ft.is_symlink() {
            let t = std::fs::read_link(item.path())?;
            tree.symlink(
                &rel,
                &meta,
                std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str()),
            )?;
        } else if ft.is_file() {
            let key = (md.dev(), md.ino());
            match inodes.get(&key) {
                Some(first) if md.nlink() > 1 => tree.hardlink(&rel, &first.clone())?,
                _ => {
                    tree.copy_file(&rel, &meta, item.path(), progress)?;
                    if md.nlink() > 1 {
                        inodes.insert(key, rel.clone());
                    }
                }
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            let (ma, mi) = (libc::major(md.rdev()) as u64, libc::minor(md.rdev()) as u64);
            let s = if ft.is_char_device() {
                Special::Char(ma, mi)
            } else {
                Special::Block(ma, mi)
            };
            tree.special(&rel, &meta, s)?;
        } else if ft.is_fifo() {
            tree.special(&rel, &meta, Special::Fifo)?;
        }
        // Sockets are left out: they are endpoints of running programs, not image content.
        progress.item();
    }
    Ok(())
}
