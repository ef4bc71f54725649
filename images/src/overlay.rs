//! Node overlays: the few files that make a shared image one particular node (host name,
//! `/etc/hosts`, network configuration, fstab, agent configuration, SSH host keys).
//!
//! Each output file comes from one minijinja template (`<output path>.j2`). The built-in
//! templates live in `images/templates/overlay/`; an administrator's directory (by convention
//! `<config_dir>/overlay/`) overrides a built-in with the same relative path and adds new
//! files: `*.j2` files are rendered, other files are copied as they are.
//!
//! [`render`] is pure (templates + context in, files out); [`to_tar`] makes a deterministic tar
//! of them (sorted, fixed mtime, owner root), which the node's initramfs unpacks into its new
//! root. [`ensure_host_keys`] is the one edge with side effects: it runs `ssh-keygen` once per
//! node and keeps the keys on the master, so a node keeps its SSH identity across reboots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// The mtime of every file in an overlay tar: fixed so the same input gives the same bytes.
/// 2000-01-01: old enough to never look "from the future", recent enough that no tar warns.
pub const OVERLAY_MTIME: u64 = 946_684_800;

/// Limits on an administrator's template directory: it is read by the server on every boot.
const MAX_USER_FILES: usize = 1000;
const MAX_USER_FILE_BYTES: u64 = 1024 * 1024;
const MAX_PATH_LEN: usize = 240;

/// The built-in templates, compiled in so the binary needs no data files at run time.
const BUILTIN: &[(&str, &str)] = &[
    (
        "etc/hostname.j2",
        include_str!("../templates/overlay/etc/hostname.j2"),
    ),
    (
        "etc/hosts.j2",
        include_str!("../templates/overlay/etc/hosts.j2"),
    ),
    (
        "etc/network/interfaces.j2",
        include_str!("../templates/overlay/etc/network/interfaces.j2"),
    ),
    (
        "etc/systemd/network/10-cm.network.j2",
        include_str!("../templates/overlay/etc/systemd/network/10-cm.network.j2"),
    ),
    (
        "etc/fstab.j2",
        include_str!("../templates/overlay/etc/fstab.j2"),
    ),
    (
        "etc/resolv.conf.j2",
        include_str!("../templates/overlay/etc/resolv.conf.j2"),
    ),
    (
        "etc/clustermaker/agent.toml.j2",
        include_str!("../templates/overlay/etc/clustermaker/agent.toml.j2"),
    ),
    (
        "etc/systemd/system/clustermaker-agent.service.j2",
        include_str!("../templates/overlay/etc/systemd/system/clustermaker-agent.service.j2"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("overlay template {template}{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Template {
        template: String,
        line: Option<usize>,
        message: String,
    },
    #[error("overlay path `{path}` ({origin}): {reason}")]
    BadPath {
        path: String,
        origin: String,
        reason: String,
    },
    #[error("overlay directory {}: {message}", dir.display())]
    UserDir { dir: PathBuf, message: String },
    #[error("SSH host keys in {}: {message}", dir.display())]
    HostKeys { dir: PathBuf, message: String },
    #[error("overlay tar: {0}")]
    Tar(#[from] std::io::Error),
}

/// One host for `/etc/hosts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostEntry {
    pub name: String,
    pub ip: String,
}

/// Everything a template can use. Absent values are `none` (not undefined), so templates test
/// them with `{% if gateway %}`; a misspelt name is an error (strict undefined).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OverlayContext {
    /// Node name (host name); for a discovered node, its MAC with dashes.
    pub name: String,
    /// MAC address, lower case, colon separated.
    pub mac: String,
    /// The node's IPv4 address, when known (reserved, or seen by the master).
    pub ip: Option<String>,
    /// Prefix length of the node's network.
    pub prefix: u8,
    pub gateway: Option<String>,
    pub dns: Vec<String>,
    /// Cluster DNS domain (host names are `NAME.DOMAIN`).
    pub domain: String,
    /// The master's HTTP base URL the agent reports to (the virtual IP under HA).
    pub master_url: String,
    /// The master's address as nodes reach it.
    pub master_ip: String,
    pub image: String,
    /// The boot interface as the initramfs named it (`eth0` when unknown).
    pub interface: String,
    /// True for a registered node, false for a discovered one.
    pub member: bool,
    /// All registered nodes with an address, sorted by name.
    pub nodes: Vec<HostEntry>,
}

impl OverlayContext {
    /// A context with sample values: used to check templates before any node boots.
    pub fn sample() -> OverlayContext {
        OverlayContext {
            name: "node01".into(),
            mac: "52:54:00:00:00:01".into(),
            ip: Some("10.0.0.11".into()),
            prefix: 24,
            gateway: Some("10.0.0.1".into()),
            dns: vec!["10.0.0.1".into()],
            domain: "cluster".into(),
            master_url: "http://10.0.0.1:8080".into(),
            master_ip: "10.0.0.1".into(),
            image: "default".into(),
            interface: "eth0".into(),
            member: true,
            nodes: vec![HostEntry {
                name: "node01".into(),
                ip: "10.0.0.11".into(),
            }],
        }
    }
}

/// One file of a node's overlay. Owner and group are always root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OverlayFile {
    /// Relative path in the node's root, e.g. `etc/hostname`.
    pub path: String,
    pub mode: u32,
    #[serde(skip)]
    pub contents: Vec<u8>,
    /// Where it came from (`builtin:etc/hosts.j2`, a file path, `ssh-keygen`), for `render`.
    pub origin: String,
}

/// Where a template's or static file's text comes from.
#[derive(Clone, Debug)]
enum Source {
    Template(String),
    Static(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Entry {
    source: Source,
    origin: String,
    mode: u32,
}

/// The templates (and static files) of an overlay, by output path.
#[derive(Clone, Debug)]
pub struct TemplateSet {
    entries: BTreeMap<String, Entry>,
}

/// Checks that `path` stays inside the node's root: relative, plain components only.
pub fn check_path(path: &str, origin: &str) -> Result<(), OverlayError> {
    let bad = |reason: &str| {
        Err(OverlayError::BadPath {
            path: path.to_string(),
            origin: origin.to_string(),
            reason: reason.to_string(),
        })
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > MAX_PATH_LEN {
        return bad("too long");
    }
    if path.starts_with('/') {
        return bad("absolute paths are not allowed; paths are relative to the node's root");
    }
    if path.contains(['\0', '\\', '\n']) {
        return bad("contains a NUL, backslash or newline");
    }
    for c in path.split('/') {
        match c {
            "" => return bad("empty component (`//` or trailing `/`)"),
            "." | ".." => return bad("`.` and `..` are not allowed"),
            _ => {}
        }
    }
    Ok(())
}

impl TemplateSet {
    /// The built-in templates.
    pub fn builtin() -> TemplateSet {
        let entries = BUILTIN
            .iter()
            .map(|(name, text)| {
                let out = name.strip_suffix(".j2").unwrap_or(name).to_string();
                (
                    out,
                    Entry {
                        source: Source::Template((*text).to_string()),
                        origin: format!("builtin:{name}"),
                        mode: 0o644,
                    },
                )
            })
            .collect();
        TemplateSet { entries }
    }

    /// Adds or overrides from `dir` (missing directory: nothing changes). Symlinks are
    /// refused: the overlay only ever holds regular files, so nothing in it can point out of
    /// the node's root.
    pub fn with_user_dir(mut self, dir: &Path) -> Result<TemplateSet, OverlayError> {
        let err = |message: String| OverlayError::UserDir {
            dir: dir.to_path_buf(),
            message,
        };
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(self),
            Err(e) => return Err(err(e.to_string())),
            Ok(m) if !m.is_dir() => return Err(err("is not a directory".into())),
            Ok(_) => {}
        }
        let mut count = 0;
        for item in walkdir::WalkDir::new(dir).sort_by_file_name() {
            let item = item.map_err(|e| err(e.to_string()))?;
            let ft = item.file_type();
            if ft.is_dir() {
                continue;
            }
            let rel = item
                .path()
                .strip_prefix(dir)
                .map_err(|e| err(e.to_string()))?;
            let rel = rel
                .to_str()
                .ok_or_else(|| err(format!("{} is not UTF-8", rel.display())))?
                .to_string();
            let origin = item.path().display().to_string();
            if ft.is_symlink() {
                return Err(err(format!(
                    "{rel} is a symbolic link; overlays hold regular files only"
                )));
            }
            if !ft.is_file() {
                return Err(err(format!("{rel} is not a regular file")));
            }
            count += 1;
            if count > MAX_USER_FILES {
                return Err(err(format!("more than {MAX_USER_FILES} files")));
            }
            let meta = item.metadata().map_err(|e| err(e.to_string()))?;
            if meta.len() > MAX_USER_FILE_BYTES {
                return Err(err(format!(
                    "{rel} is larger than {MAX_USER_FILE_BYTES} bytes"
                )));
            }
            let bytes = std::fs::read(item.path()).map_err(|e| err(format!("{rel}: {e}")))?;
            // Executable stays executable (scripts); everything else is world-readable data.
            let mode = if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0
            {
                0o755
            } else {
                0o644
            };
            let (out, source) = match rel.strip_suffix(".j2") {
                Some(out) => {
                    let text = String::from_utf8(bytes)
                        .map_err(|_| err(format!("{rel} is a template but not UTF-8")))?;
                    (out.to_string(), Source::Template(text))
                }
                None => (rel.clone(), Source::Static(bytes)),
            };
            check_path(&out, &origin)?;
            self.entries.insert(
                out,
                Entry {
                    source,
                    origin,
                    mode,
                },
            );
        }
        Ok(self)
    }

    /// Output paths and where each comes from.
    pub fn origins(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|(p, e)| (p.as_str(), e.origin.as_str()))
    }

    /// Renders once with [`OverlayContext::sample`]: a template that does not compile or uses
    /// an unknown variable is refused when the server starts, not when the first node boots.
    pub fn check(&self) -> Result<(), OverlayError> {
        render(self, &OverlayContext::sample()).map(|_| ())
    }
}

fn template_error(origin: &str, e: &minijinja::Error) -> OverlayError {
    let mut message = e.kind().to_string();
    if let Some(d) = e.detail() {
        message = format!("{message}: {d}");
    }
    OverlayError::Template {
        template: origin.to_string(),
        line: e.line(),
        message,
    }
}

/// Renders every template of `set` for `ctx`; sorted by path.
pub fn render(set: &TemplateSet, ctx: &OverlayContext) -> Result<Vec<OverlayFile>, OverlayError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Config files end with a newline; block tags should not leave blank lines behind.
    env.set_keep_trailing_newline(true);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    let value = minijinja::Value::from_serialize(ctx);
    let mut out = Vec::with_capacity(set.entries.len());
    for (path, entry) in &set.entries {
        check_path(path, &entry.origin)?;
        let contents = match &entry.source {
            Source::Static(bytes) => bytes.clone(),
            Source::Template(text) => {
                let name = format!("{path}.j2");
                let rendered = env
                    .template_from_named_str(&name, text)
                    .and_then(|t| t.render(&value))
                    .map_err(|e| template_error(&entry.origin, &e))?;
                rendered.into_bytes()
            }
        };
        out.push(OverlayFile {
            path: path.clone(),
            mode: entry.mode,
            contents,
            origin: entry.origin.clone(),
        });
    }
    Ok(out)
}

/// Adds `extra` (e.g. the SSH host keys) to `files`, replacing files with the same path, and
/// keeps the result sorted.
pub fn merge(mut files: Vec<OverlayFile>, extra: Vec<OverlayFile>) -> Vec<OverlayFile> {
    for e in extra {
        files.retain(|f| f.path != e.path);
        files.push(e);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// A deterministic tar of `files`: sorted by path, fixed mtime, owner root:root, only regular
/// files (tar implementations create the parent directories on extraction).
pub fn to_tar(files: &[OverlayFile]) -> Result<Vec<u8>, OverlayError> {
    let mut sorted: Vec<&OverlayFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut builder = tar::Builder::new(Vec::new());
    for f in sorted {
        check_path(&f.path, &f.origin)?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(f.contents.len() as u64);
        header.set_mode(f.mode & 0o7777);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("root")?;
        header.set_groupname("root")?;
        header.set_mtime(OVERLAY_MTIME);
        builder.append_data(&mut header, &f.path, f.contents.as_slice())?;
    }
    Ok(builder.into_inner()?)
}

/// The host key types every node gets: ed25519 for modern clients, RSA for old ones.
pub const HOST_KEY_TYPES: &[&str] = &["ed25519", "rsa"];

/// The node's SSH host keys as overlay files, generated with `ssh-keygen` into `dir` (e.g.
/// `<state_dir>/nodes/NAME/ssh`) the first time, and read from there afterwards.
///
/// Keys are made in a temporary sibling directory that is then renamed into place, so two
/// callers racing (the server and the CLI) can never leave a private key beside another
/// key's public half: the loser's directory is removed and the winner's keys used.
pub fn ensure_host_keys(dir: &Path, comment: &str) -> Result<Vec<OverlayFile>, OverlayError> {
    let err = |message: String| OverlayError::HostKeys {
        dir: dir.to_path_buf(),
        message,
    };
    if !dir.join("ssh_host_ed25519_key").exists() {
        let parent = dir
            .parent()
            .ok_or_else(|| err("has no parent directory".into()))?;
        std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
        let tmp = parent.join(format!(
            ".ssh.tmp-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir(&tmp).map_err(|e| err(format!("{}: {e}", tmp.display())))?;
        let generated = generate_keys(&tmp, comment);
        let placed = generated.and_then(|()| {
            set_mode(&tmp, 0o700).map_err(|e| e.to_string())?;
            match std::fs::rename(&tmp, dir) {
                Ok(()) => Ok(()),
                // Somebody else put keys there first: use theirs.
                Err(_) if dir.join("ssh_host_ed25519_key").exists() => Ok(()),
                Err(e) => Err(format!("cannot move keys into place: {e}")),
            }
        });
        let _ = std::fs::remove_dir_all(&tmp);
        placed.map_err(err)?;
    }
    let mut files = Vec::new();
    for t in HOST_KEY_TYPES {
        for (suffix, mode) in [("", 0o600), (".pub", 0o644)] {
            let name = format!("ssh_host_{t}_key{suffix}");
            let contents = std::fs::read(dir.join(&name)).map_err(|e| {
                err(format!(
                    "{name}: {e} (remove the directory to generate new keys)"
                ))
            })?;
            files.push(OverlayFile {
                path: format!("etc/ssh/{name}"),
                mode,
                contents,
                origin: dir.join(&name).display().to_string(),
            });
        }
    }
    Ok(files)
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
}

fn generate_keys(dir: &Path, comment: &str) -> Result<(), String> {
    for t in HOST_KEY_TYPES {
        let key = dir.join(format!("ssh_host_{t}_key"));
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", t, "-N", "", "-C", comment, "-f"])
            .arg(&key)
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => "ssh-keygen not found: install the Debian package \
                     openssh-client on the master (node SSH host keys are made with it)"
                    .to_string(),
                _ => format!("cannot run ssh-keygen: {e}"),
            })?;
        if !out.status.success() {
            return Err(format!(
                "ssh-keygen -t {t} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        set_mode(&key, 0o600).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file<'a>(files: &'a [OverlayFile], path: &str) -> &'a str {
        let f = files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("no {path}"));
        std::str::from_utf8(&f.contents).unwrap()
    }

    fn ctx() -> OverlayContext {
        OverlayContext {
            nodes: vec![
                HostEntry {
                    name: "node01".into(),
                    ip: "10.0.0.11".into(),
                },
                HostEntry {
                    name: "node02".into(),
                    ip: "10.0.0.12".into(),
                },
            ],
            ..OverlayContext::sample()
        }
    }

    #[test]
    fn builtin_templates_render_the_expected_files() {
        let files = render(&TemplateSet::builtin(), &ctx()).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "etc/clustermaker/agent.toml",
                "etc/fstab",
                "etc/hostname",
                "etc/hosts",
                "etc/network/interfaces",
                "etc/resolv.conf",
                "etc/systemd/network/10-cm.network",
                "etc/systemd/system/clustermaker-agent.service",
            ]
        );
        assert_eq!(file(&files, "etc/hostname"), "node01\n");
        // Golden: /etc/hosts.
        assert_eq!(
            file(&files, "etc/hosts"),
            "# Written by clustermaker for node01 at boot (node overlay); changes are lost on reboot.\n\
             127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             ff02::1\tip6-allnodes\n\
             ff02::2\tip6-allrouters\n\
             10.0.0.11\tnode01.cluster node01\n\
             10.0.0.1\tmaster.cluster master\n\
             10.0.0.12\tnode02.cluster node02\n"
        );
        assert_eq!(
            file(&files, "etc/clustermaker/agent.toml"),
            "# clustermaker node agent (`clustermaker agent run`), written by the node overlay.\n\
             master = \"http://10.0.0.1:8080\"\nnode = \"node01\"\nmac = \"52:54:00:00:00:01\"\n\
             interface = \"eth0\"\ninterval_secs = 10\n"
        );
        let interfaces = file(&files, "etc/network/interfaces");
        assert!(
            interfaces.contains("\niface eth0 inet manual\n"),
            "{interfaces}"
        );
        assert!(!interfaces.contains("auto eth0"), "{interfaces}");
        let networkd = file(&files, "etc/systemd/network/10-cm.network");
        assert!(networkd.contains("MACAddress=52:54:00:00:00:01\n"));
        assert!(networkd.contains("Unmanaged=yes\n"));
        assert!(file(&files, "etc/fstab").contains("tmpfs\t/tmp\ttmpfs"));
        assert_eq!(
            file(&files, "etc/resolv.conf"),
            "# Written by clustermaker (node overlay).\nsearch cluster\nnameserver 10.0.0.1\n"
        );
        assert!(files.iter().all(|f| f.mode == 0o644));
    }

    #[test]
    fn a_node_without_address_still_gets_a_hosts_file() {
        let c = OverlayContext {
            ip: None,
            gateway: None,
            dns: vec![],
            member: false,
            name: "52-54-00-00-00-09".into(),
            ..ctx()
        };
        let files = render(&TemplateSet::builtin(), &c).unwrap();
        assert!(file(&files, "etc/hosts")
            .contains("127.0.1.1\t52-54-00-00-00-09.cluster 52-54-00-00-00-09\n"));
        assert_eq!(file(&files, "etc/hostname"), "52-54-00-00-00-09\n");
    }

    #[test]
    fn user_templates_override_and_add() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/profile.d")).unwrap();
        std::fs::write(dir.path().join("etc/hostname.j2"), "custom-{{ name }}\n").unwrap();
        std::fs::write(
            dir.path().join("etc/profile.d/cm.sh.j2"),
            "export CM_IMAGE={{ image }}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/motd"), "static {{ not rendered }}\n").unwrap();
        let run = dir.path().join("usr/local/bin");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("hello"), "#!/bin/sh\necho hi\n").unwrap();
        set_mode(&run.join("hello"), 0o755).unwrap();
        let set = TemplateSet::builtin().with_user_dir(dir.path()).unwrap();
        let files = render(&set, &ctx()).unwrap();
        assert_eq!(file(&files, "etc/hostname"), "custom-node01\n");
        assert_eq!(
            file(&files, "etc/profile.d/cm.sh"),
            "export CM_IMAGE=default\n"
        );
        assert_eq!(file(&files, "etc/motd"), "static {{ not rendered }}\n");
        let hello = files
            .iter()
            .find(|f| f.path == "usr/local/bin/hello")
            .unwrap();
        assert_eq!(hello.mode, 0o755);
        // Still there: the built-ins that were not overridden.
        file(&files, "etc/hosts");
        // A missing user directory changes nothing.
        let same = TemplateSet::builtin()
            .with_user_dir(&dir.path().join("nope"))
            .unwrap();
        assert_eq!(same.entries.len(), BUILTIN.len());
    }

    #[test]
    fn an_undefined_variable_names_the_template_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/hosts.j2"),
            "127.0.0.1 localhost\n{{ ip }} {{ name }}\n{{ hostnam }}\n",
        )
        .unwrap();
        let set = TemplateSet::builtin().with_user_dir(dir.path()).unwrap();
        let e = set.check().unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&dir.path().join("etc/hosts.j2").display().to_string()),
            "{text}"
        );
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains("undefined"), "{text}");
        // A syntax error too.
        std::fs::write(dir.path().join("etc/hosts.j2"), "ok\n{% if %}\n").unwrap();
        let set = TemplateSet::builtin().with_user_dir(dir.path()).unwrap();
        let text = set.check().unwrap_err().to_string();
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn paths_stay_inside_the_root() {
        for good in ["etc/hosts", "a/b/c.conf", "..a/b", "a/..b"] {
            check_path(good, "t").unwrap();
        }
        for bad in [
            "",
            "/etc/hosts",
            "../etc",
            "etc/../../x",
            "etc/./x",
            "etc//x",
            "etc/",
            "a\0b",
            &"x/".repeat(200),
        ] {
            assert!(check_path(bad, "t").is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/shadow", dir.path().join("shadow")).unwrap();
        let e = TemplateSet::builtin()
            .with_user_dir(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");
        // A tar of a file with a bad path is refused too.
        let f = OverlayFile {
            path: "../x".into(),
            mode: 0o644,
            contents: vec![],
            origin: "t".into(),
        };
        assert!(to_tar(&[f]).is_err());
    }

    #[test]
    fn tar_is_deterministic_with_modes_and_root_owner() {
        let mut files = render(&TemplateSet::builtin(), &ctx()).unwrap();
        files = merge(
            files,
            vec![OverlayFile {
                path: "etc/ssh/ssh_host_ed25519_key".into(),
                mode: 0o600,
                contents: b"secret".to_vec(),
                origin: "test".into(),
            }],
        );
        let a = to_tar(&files).unwrap();
        files.reverse();
        let b = to_tar(&files).unwrap();
        assert_eq!(a, b);
        let mut archive = tar::Archive::new(a.as_slice());
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            assert_eq!(h.mtime().unwrap(), OVERLAY_MTIME);
            let path = e.path().unwrap().display().to_string();
            if path == "etc/ssh/ssh_host_ed25519_key" {
                assert_eq!(h.mode().unwrap(), 0o600);
            }
            seen.push(path);
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
        assert!(seen.contains(&"etc/ssh/ssh_host_ed25519_key".to_string()));
    }

    #[test]
    fn host_keys_are_made_once_and_kept() {
        if Command::new("ssh-keygen").arg("-?").output().is_err() {
            eprintln!("skipped: ssh-keygen (openssh-client) is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("nodes/node01/ssh");
        let first = ensure_host_keys(&keys, "root@node01").unwrap();
        assert_eq!(first.len(), 4);
        let private = first
            .iter()
            .find(|f| f.path == "etc/ssh/ssh_host_ed25519_key")
            .unwrap();
        assert_eq!(private.mode, 0o600);
        assert!(String::from_utf8_lossy(&private.contents).contains("PRIVATE KEY"));
        let on_disk = std::fs::metadata(keys.join("ssh_host_rsa_key")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&on_disk.permissions()) & 0o777,
            0o600
        );
        let second = ensure_host_keys(&keys, "root@node01").unwrap();
        assert_eq!(first, second);
        // No temporary directories left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("nodes/node01"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("ssh")]);
    }
}
