//! nfs-ganesha 4.3 (FSAL VFS, Debian packages `nfs-ganesha nfs-ganesha-vfs rpcbind`) run by
//! hand inside a lab namespace: the established user-space NFS server our own is compared with
//! (benchmarks) and the negative control of the handle-survival test (its handles come from
//! inode numbers, so a copy of the tree stales them).
//!
//! It runs under `unshare --mount` with its own tmpfs on /run (for rpcbind's and its own sockets
//! and pid files) so nothing leaks onto the host. Settings that make NFSv3 without a portmapper
//! work are from ../shared/notes/netboot-lab.md: `Mount_Path_Pseudo = true` (else MNT3ERR_ACCES),
//! NLM and RQUOTA off, MOUNT on [`GANESHA_MOUNT_PORT`]; clients pass `port=2049,mountport=…`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::{ChildGuard, Netns};

pub const GANESHA_MOUNT_PORT: u16 = 20048;

/// A running ganesha; stopped (and waited for: it takes ~3 s to exit) when dropped.
pub struct Ganesha {
    child: Option<ChildGuard>,
    pub dir: PathBuf,
    pub log: PathBuf,
}

/// The configuration for one read-only export of `export_dir` at the same pseudo path.
pub fn config(export_dir: &Path, log: &Path) -> String {
    config_bound(export_dir, log, None)
}

/// [`config`], listening on `bind` only (`Bind_addr`: NFS and MOUNT on that address, so
/// another NFS server can have port 2049 on another address of the same namespace).
pub fn config_bound(export_dir: &Path, log: &Path, bind: Option<&str>) -> String {
    let path = export_dir.display();
    let bind = bind
        .map(|ip| format!("\n    Bind_addr = {ip};"))
        .unwrap_or_default();
    format!(
        r#"NFS_CORE_PARAM {{
    Protocols = 3;{bind}
    NFS_Port = 2049;
    MNT_Port = {GANESHA_MOUNT_PORT};
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Mount_Path_Pseudo = true;
}}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
    Export_Id = 1;
    Path = {path};
    Pseudo = {path};
    Access_Type = RO;
    Squash = No_Root_Squash;
    Protocols = 3;
    Transports = TCP;
    SecType = sys;
    MaxRead = 1048576;
    PrefRead = 1048576;
    PrefReaddir = 65536;
    FSAL {{ Name = VFS; }}
}}
LOG {{
    Default_Log_Level = WARN;
    Facility {{ name = FILE; destination = "{log}"; enable = active; }}
}}
"#,
        log = log.display()
    )
}

impl Ganesha {
    /// Starts rpcbind and ganesha in `ns`, exporting `export_dir` read-only; returns when the
    /// NFS port accepts connections.
    pub fn start(ns: &Netns, export_dir: &Path, listen_ip: &str) -> Result<Ganesha> {
        Ganesha::start_inner(ns, export_dir, listen_ip, false)
    }

    /// Like [`Ganesha::start`], bound to `listen_ip` only (see [`config_bound`]).
    pub fn start_bound(ns: &Netns, export_dir: &Path, listen_ip: &str) -> Result<Ganesha> {
        Ganesha::start_inner(ns, export_dir, listen_ip, true)
    }

    fn start_inner(ns: &Netns, export_dir: &Path, listen_ip: &str, bind: bool) -> Result<Ganesha> {
        let dir = std::env::temp_dir().join(crate::unique_name("cmganesha"));
        fs::create_dir_all(&dir)?;
        let log = dir.join("ganesha.log");
        let conf = dir.join("ganesha.conf");
        fs::write(
            &conf,
            config_bound(export_dir, &log, bind.then_some(listen_ip)),
        )?;
        let script = format!(
            "mount -t tmpfs tmpfs /run && mkdir -p /run/ganesha /run/rpcbind && \
             {{ rpcbind -f -w & echo $! > {pidfile}; }} && sleep 0.3 && \
             exec ganesha.nfsd -F -f {conf} -L {log} -N NIV_WARN -p /run/ganesha/ganesha.pid",
            conf = conf.display(),
            log = log.display(),
            pidfile = dir.join("rpcbind.pid").display()
        );
        let child = ns.spawn(
            "unshare",
            &["--mount", "--propagation", "private", "sh", "-c", &script],
        )?;
        let mut g = Ganesha {
            child: Some(child),
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let addr: std::net::SocketAddr = format!("{listen_ip}:2049").parse()?;
            let listening = crate::qemu::in_netns(&ns.name, move || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })?;
            if listening {
                break;
            }
            if let Some(c) = g.child.as_mut() {
                if let Ok(Some(status)) = c.0.try_wait() {
                    bail!(
                        "ganesha.nfsd exited ({status}) at start; its log:\n{}",
                        fs::read_to_string(&g.log).unwrap_or_default()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "ganesha did not listen on {listen_ip}:2049 within 20 s; log:\n{}",
                    fs::read_to_string(&g.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // MOUNT registers a moment after NFS.
        std::thread::sleep(Duration::from_millis(300));
        Ok(g)
    }

    /// Stops ganesha (SIGTERM, then waits; SIGKILL after 10 s) and rpcbind with it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `ip netns exec`, `unshare` (no --fork) and the shell all exec: the child is
            // ganesha itself. rpcbind is stopped by its pid file, so that a restart in the same
            // namespace can bind port 111 again.
            let pid = c.0.id() as i32;
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.0.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.0.kill();
            let _ = c.0.wait();
            if let Some(rpcbind) = fs::read_to_string(self.dir.join("rpcbind.pid"))
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                unsafe {
                    libc::kill(rpcbind, libc::SIGKILL);
                }
            }
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Checks that `ganesha.nfsd` can be used here.
pub fn available() -> bool {
    Path::new("/usr/bin/ganesha.nfsd").exists() && Path::new("/usr/sbin/rpcbind").exists()
}

/// Context for errors: what to install.
pub fn install_hint() -> &'static str {
    "apt-get install -y nfs-ganesha nfs-ganesha-vfs rpcbind"
}

/// Convenience for tests: fails with the install hint when ganesha is missing.
pub fn require() -> Result<()> {
    if !available() {
        bail!("nfs-ganesha is not installed (fix: {})", install_hint());
    }
    Ok(())
}
