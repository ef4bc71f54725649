//! The node initramfs from `cargo xtask build-image` boots a QEMU node over the network and
//! reports it online.
//!
//! dnsmasq stands in for the master's DHCP/TFTP server (it answers iPXE's DHCP, serves a boot
//! script, the kernel and the initramfs over TFTP, and answers IPv6 router solicitations so
//! iPXE does not stall), and a small HTTP listener in this test stands in for the master's
//! `POST /api/v1/nodes/online`. This proves the kernel + initramfs + /init + harness on their
//! own; the same boot against `clustermaker serve` is another test.
//!
//! The boot files come from `$CM_BOOT_DIR` when set (a directory made by build-image), else
//! the test runs `cargo xtask build-image` itself (cached downloads make repeats fast).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cm_tests::qemu::{Boot, BootLab, NodeOptions};
use cm_tests::{require_program, require_root, wait_for, ChildGuard};

/// Generous: a TCG boot takes 20–30 s on an idle 2-core machine, much more on a busy one.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn bios_node_boots_initramfs_and_reports_online() {
    boot_and_report(
        "bios_node_boots_initramfs_and_reports_online",
        Boot::BiosPxe,
        "52:54:00:c0:00:01",
    );
}

fn boot_and_report(test: &str, boot: Boot, mac: &str) {
    if !require_root(test)
        || !require_program(test, "qemu-system-x86_64")
        || !require_program(test, "dnsmasq")
    {
        return;
    }
    let files = boot_files().expect("boot files from cargo xtask build-image");
    let kernel_version = manifest_kernel(&files).expect("manifest.json");

    let lab = BootLab::new().expect("boot lab");
    let listener = lab
        .bind_tcp(SocketAddr::new(lab.addr.into(), 0))
        .expect("HTTP listener in the lab");
    let port = listener.local_addr().unwrap().port();
    let posts = record_posts(listener);

    let tftp = TempDir::new(&format!("cmtftp-{}", mac.replace(':', "")));
    stage_tftp_root(&tftp.0, &files, &lab.addr.to_string(), port).expect("TFTP root");
    let _dnsmasq = start_dnsmasq(&lab, &tftp.0).expect("dnsmasq");

    let mut node = lab
        .boot(&NodeOptions::new(mac, boot.clone()))
        .expect("QEMU node");
    let network_up = node
        .wait_for_console("clustermaker-init: network up", BOOT_TIMEOUT)
        .unwrap();
    let post = posts
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no POST arrived\n{}", node.post_mortem()));
    let online = node
        .wait_for_console("clustermaker-init: online", Duration::from_secs(60))
        .unwrap();
    let to_post = post.at.duration_since(node.started);
    eprintln!(
        "{test}: {boot:?} power-on -> network up {:.1}s, -> POST {:.1}s, -> online {:.1}s",
        network_up.as_secs_f64(),
        to_post.as_secs_f64(),
        online.as_secs_f64()
    );

    assert_eq!(post.path, "/api/v1/nodes/online");
    assert!(
        post.content_type.starts_with("application/json"),
        "content type {:?}",
        post.content_type
    );
    let body: serde_json::Value = serde_json::from_str(&post.body)
        .unwrap_or_else(|e| panic!("POST body {:?} is not JSON: {e}", post.body));
    assert_eq!(body["mac"], mac, "{body}");
    assert_eq!(body["kernel"], kernel_version.as_str(), "{body}");
    let ip = body["ip"].as_str().expect("ip");
    assert!(
        ip.starts_with("10.99.0.1"),
        "ip {ip} not from the DHCP range"
    );
    assert!(body["uptime_secs"].as_u64().is_some(), "{body}");
    let console = node.console();
    assert!(
        console.contains(&format!("network up ip={ip}")),
        "{console}"
    );
    let how = console
        .lines()
        .find(|l| l.contains("clustermaker-init: reported online"))
        .unwrap_or_else(|| panic!("no report line on the console\n{console}"));
    eprintln!("{test}: {}", how.trim());
}

/// Boot files made by build-image: `vmlinuz`, `initramfs.img`, `manifest.json`.
fn boot_files() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CM_BOOT_DIR") {
        return Ok(dir.into());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = workspace.join("target/cm-boot-test");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--",
            "build-image",
            "--out",
        ])
        .arg(&out)
        .current_dir(workspace)
        .stdout(Stdio::null())
        .status()
        .context("cannot run cargo xtask build-image")?;
    if !status.success() {
        bail!("cargo xtask build-image failed ({status})");
    }
    Ok(out)
}

fn manifest_kernel(dir: &Path) -> Result<String> {
    let text = std::fs::read_to_string(dir.join("manifest.json"))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    Ok(v["kernel"]["version"]
        .as_str()
        .context("manifest has no kernel.version")?
        .to_string())
}

/// A scratch directory removed when dropped (declared before the VM and dnsmasq, so it goes
/// after them).
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> TempDir {
        let d = std::env::temp_dir().join(cm_tests::unique_name(prefix));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The TFTP root: kernel, initramfs, and the iPXE script that boots them. `initrd=` on the
/// kernel command line is for the EFI stub (older iPXE hands the initrd over only that way).
fn stage_tftp_root(dir: &Path, files: &Path, server: &str, http_port: u16) -> Result<()> {
    for f in ["vmlinuz", "initramfs.img"] {
        std::fs::copy(files.join(f), dir.join(f))
            .with_context(|| format!("{} has no {f}", files.display()))?;
    }
    let script = format!(
        "#!ipxe\n\
         echo clustermaker test boot: ${{netX/mac}} ${{netX/ip}}\n\
         kernel tftp://{server}/vmlinuz initrd=initramfs.img console=ttyS0 quiet \
         cm.master=http://{server}:{http_port} cm.mac=${{netX/mac}}\n\
         initrd tftp://{server}/initramfs.img\n\
         boot\n"
    );
    std::fs::write(dir.join("boot.ipxe"), script)?;
    Ok(())
}

/// dnsmasq on the lab bridge: DHCP for iPXE (recognised by its user class), TFTP from `root`,
/// and router advertisements so iPXE's IPv6 autoconfiguration finishes at once.
fn start_dnsmasq(lab: &BootLab, root: &Path) -> Result<ChildGuard> {
    let log = root.join("dnsmasq.log");
    let args = [
        "--no-daemon".to_string(),
        "--conf-file=/dev/null".into(),
        "--port=0".into(),
        "--bind-interfaces".into(),
        format!("--interface={}", lab.bridge),
        "--dhcp-range=10.99.0.100,10.99.0.150,255.255.255.0,1h".into(),
        "--dhcp-range=::,constructor:br0,ra-only".into(),
        "--enable-ra".into(),
        "--no-ping".into(),
        "--enable-tftp".into(),
        format!("--tftp-root={}", root.display()),
        "--dhcp-userclass=set:ipxe,iPXE".into(),
        "--dhcp-boot=tag:ipxe,boot.ipxe".into(),
        format!("--dhcp-leasefile={}", root.join("leases").display()),
        "--pid-file".into(),
        // The TFTP root is private to root; dnsmasq would otherwise drop to `nobody`.
        "--user=root".into(),
        "--log-facility=-".into(),
        "--log-dhcp".into(),
    ];
    let child = lab
        .ns
        .command("dnsmasq")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("cannot start dnsmasq (fix: apt-get install -y dnsmasq-base)")?;
    let guard = ChildGuard(child);
    wait_for("dnsmasq to start", Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("TFTP root"))
    })
    .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
    Ok(guard)
}

/// One HTTP request the stand-in master received.
#[derive(Debug)]
struct Post {
    path: String,
    content_type: String,
    body: String,
    at: Instant,
}

/// Serves HTTP/1.0-style requests on `listener` in a thread: every POST is sent down the
/// returned channel and answered `200 {"status":"ok"}`; anything else gets 404.
fn record_posts(listener: TcpListener) -> mpsc::Receiver<Post> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(req) = read_request(&mut stream) else {
                continue;
            };
            let (status, reply) = if req.0 == "POST" {
                ("200 OK", "{\"status\":\"ok\"}")
            } else {
                ("404 Not Found", "{\"error\":\"not found\"}")
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
            if req.0 == "POST" && tx.send(req.1).is_err() {
                return;
            }
        }
    });
    rx
}

fn read_request(stream: &mut std::net::TcpStream) -> Result<(String, Post)> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let (mut len, mut content_type) = (0usize, String::new());
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0).min(64 * 1024),
                "content-type" => content_type = v.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let at = Instant::now();
    Ok((
        method,
        Post {
            path,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
            at,
        },
    ))
}
