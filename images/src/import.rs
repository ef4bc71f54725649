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

/// GNU long names and PAX headers are read into memory; larger ones are refused, so a hostile
/// archive cannot make the import allocate more than this (the `tar` crate would read them
/// whole, however large the header claims they are).
pub const MAX_EXTENSION: u64 = 64 * 1024;

/// What GNU long-name and PAX records say about the next entry.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
}

fn read_extension(entry: &mut tar::Entry<'_, &mut dyn Read>, what: &str) -> Result<Vec<u8>> {
    let size = entry.size();
    if size > MAX_EXTENSION {
        bail!("{what} of {size} bytes (more than {MAX_EXTENSION}): refused");
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry.take(size).read_to_end(&mut buf)?;
    if (buf.len() as u64) < size {
        bail!("{what}: the archive ends inside it");
    }
    Ok(buf)
}

/// `seconds[.fraction]` of a PAX mtime.
fn pax_time(v: &str) -> Option<(i64, u32)> {
    let (s, f) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = s.parse().ok()?;
    let mut digits: String = f.chars().take(9).filter(|c| c.is_ascii_digit()).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    Some((secs, digits.parse().ok()?))
}

/// Unpacks one tar stream (already decompressed) onto the tree. Entries are read raw, GNU long
/// names and PAX records handled here with [`MAX_EXTENSION`] as their bound.
pub fn apply_tar(
    reader: &mut dyn Read,
    tree: &mut TreeWriter,
    opts: TarOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .context("cannot read the tar archive")?
        .raw(true);
    let mut pending = Pending::default();
    for (n, entry) in entries.enumerate() {
        let mut entry = entry.with_context(|| format!("tar entry #{}: malformed", n + 1))?;
        let kind = entry.header().entry_type();
        if kind.is_gnu_longname() || kind.is_gnu_longlink() {
            let mut v = read_extension(&mut entry, "GNU long name")?;
            while v.last() == Some(&0) {
                v.pop();
            }
            if kind.is_gnu_longname() {
                pending.path = Some(v);
            } else {
                pending.link = Some(v);
            }
            continue;
        }
        if kind.is_pax_global_extensions() {
            read_extension(&mut entry, "PAX global header")?;
            continue;
        }
        if kind.is_pax_local_extensions() {
            let v = read_extension(&mut entry, "PAX header")?;
            for ext in tar::PaxExtensions::new(&v) {
                let ext = ext.context("malformed PAX record")?;
                let val = || ext.value().ok();
                match ext.key_bytes() {
                    b"path" => pending.path = Some(ext.value_bytes().to_vec()),
                    b"linkpath" => pending.link = Some(ext.value_bytes().to_vec()),
                    b"uid" => pending.uid = val().and_then(|v| v.parse().ok()),
                    b"gid" => pending.gid = val().and_then(|v| v.parse().ok()),
                    b"mtime" => pending.mtime = val().and_then(pax_time),
                    // A PAX size overrides the header's for files over 8 GiB; raw iteration
                    // frames by the header, so such files are refused rather than misread.
                    b"size" => bail!("PAX size records (files over 8 GiB) are not supported"),
                    _ => {}
                }
            }
            continue;
        }
        let p = std::mem::take(&mut pending);
        let raw = p
            .path
            .clone()
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        let shown = crate::relpath::escape(&raw);
        let rel = RelPath::parse(&raw).map_err(|e| anyhow!("tar entry `{shown}`: {e}: refused"))?;
        apply_entry(&mut entry, &rel, &p, tree, opts, progress)
            .with_context(|| format!("tar entry `{shown}`"))?;
        progress.item();
    }
    Ok(())
}

fn apply_entry(
    entry: &mut tar::Entry<'_, &mut dyn Read>,
    rel: &RelPath,
    p: &Pending,
    tree: &mut TreeWriter,
    opts: TarOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let h = entry.header();
    let uid = match p.uid {
        Some(u) => u,
        None => h.uid().context("bad uid")?,
    };
    let gid = match p.gid {
        Some(g) => g,
        None => h.gid().context("bad gid")?,
    };
    let (mtime, mtime_nsec) = match p.mtime {
        Some(t) => t,
        None => (
            i64::try_from(h.mtime().context("bad mtime")?).context("mtime out of range")?,
            0,
        ),
    };
    let meta = Meta {
        mode: h.mode().context("bad mode")? & 0o7777,
        uid: u32::try_from(uid).context("uid out of range")?,
        gid: u32::try_from(gid).context("gid out of range")?,
        mtime,
        mtime_nsec,
    };
    let kind = h.entry_type();
    if opts.whiteouts && rel.file_name().starts_with(b".wh.") {
        return tree.whiteout(rel);
    }
    let link = || -> Result<Vec<u8>> {
        match &p.link {
            Some(l) => Ok(l.clone()),
            None => Ok(entry
                .link_name_bytes()
                .ok_or_else(|| anyhow!("link without a target"))?
                .into_owned()),
        }
    };
    use tar::EntryType as T;
    match kind {
        T::Directory => tree.dir(rel, &meta),
        T::Regular | T::Continuous => {
            let size = entry.size();
            tree.file(rel, &meta, entry, size, progress)
        }
        T::Symlink => {
            let target = link()?;
            tree.symlink(rel, &meta, &target)
        }
        T::Link => {
            let target = link()?;
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
    apply_tar(&mut r, tree, TarOptions::default(), &ItemsOnly(progress))
}

/// Forwards everything but byte counts: the bar of an archive import follows the (compressed)
/// bytes read, not the bytes written.
struct ItemsOnly<'a>(&'a dyn Progress);

impl Progress for ItemsOnly<'_> {
    fn phase(&self, name: &str, total: Option<u64>) {
        self.0.phase(name, total)
    }
    fn item(&self) {
        self.0.item()
    }
    fn bytes(&self, _: u64) {}
    fn note(&self, text: &str) {
        self.0.note(text)
    }
    fn done(&self) {
        self.0.done()
    }
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
        apply_tar(
            &mut r,
            tree,
            TarOptions { whiteouts: true },
            &ItemsOnly(progress),
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;

    fn header(kind: tar::EntryType, name: &[u8], size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(7);
        h.set_size(size);
        h.set_cksum();
        h
    }

    fn push(out: &mut Vec<u8>, h: &tar::Header, data: &[u8]) {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
    }

    fn import(bytes: &[u8]) -> (tempfile::TempDir, Result<()>) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let mut tree = TreeWriter::new(&root);
        let mut r: &[u8] = bytes;
        let res = apply_tar(&mut r, &mut tree, TarOptions::default(), &Silent);
        (t, res)
    }

    #[test]
    fn gnu_long_names_and_pax_records_apply_to_the_next_entry() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let long = format!("{}/file", "d".repeat(150));
        let mut v = Vec::new();
        push(
            &mut v,
            &header(
                tar::EntryType::GNULongName,
                b"././@LongLink",
                long.len() as u64 + 1,
            ),
            format!("{long}\0").as_bytes(),
        );
        push(&mut v, &header(tar::EntryType::Regular, b"short", 2), b"hi");
        // A PAX record is `LEN key=value\n`, LEN counting itself.
        let rec = |k: &str, v: &str| {
            let n = k.len() + v.len() + 3;
            let n = n + format!("{n}").len();
            format!("{n} {k}={v}\n")
        };
        let body = rec("path", "pax/named/file.txt") + &rec("mtime", "1700000000.123456789");
        push(
            &mut v,
            &header(tar::EntryType::XHeader, b"PaxHeader", body.len() as u64),
            body.as_bytes(),
        );
        push(
            &mut v,
            &header(tar::EntryType::Regular, b"ignored", 3),
            b"pax",
        );
        v.extend_from_slice(&[0u8; 1024]);
        let (t, res) = import(&v);
        res.unwrap();
        let root = t.path().join("root");
        assert_eq!(std::fs::read(root.join(&long)).unwrap(), b"hi");
        assert!(!root.join("short").exists() && !root.join("ignored").exists());
        let p = root.join("pax/named/file.txt");
        assert_eq!(std::fs::read(&p).unwrap(), b"pax");
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!((md.mtime(), md.mtime_nsec()), (1_700_000_000, 123_456_789));
    }

    #[test]
    fn oversized_extension_headers_are_refused_before_reading() {
        let mut v = Vec::new();
        push(
            &mut v,
            &header(tar::EntryType::GNULongName, b"././@LongLink", 1 << 30),
            b"x",
        );
        let (_t, res) = import(&v);
        let e = format!("{:#}", res.unwrap_err());
        assert!(e.contains("refused"), "{e}");
        assert_eq!(pax_time("12.5"), Some((12, 500_000_000)));
        assert_eq!(pax_time("x"), None);
    }
}
