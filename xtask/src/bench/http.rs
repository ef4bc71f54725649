//! Kernel + initramfs, the way a node fetches them once iPXE runs: over our HTTP against nginx,
//! and over HTTP against TFTP (our own TFTP, with curl at blksize 1468 and atftp at
//! windowsize 16; and tftpd-hpa, the classic setup).
//!
//! The HTTP anchor is nginx (Debian's package unpacked and run from the cache, not installed,
//! so no system service starts): a production HTTP server with sendfile, which is what a fair
//! comparison needs — `python3 -m http.server` would flatter anyone. One private namespace,
//! everything on its loopback; one server at a time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::report::{Better, Measure, Row, Section, Summary};
use super::sys::{self, Netns, Payload, Server, TempDir};
use super::tftp::{self, TftpServer};
use super::Ctx;

const PORT: u16 = tftp::OURS_HTTP_PORT;
const KERNEL: &str = "images/bench/vmlinuz";
const INITRD: &str = "images/bench/initramfs.img";
const PROBE: &str = "images/bench/probe.txt";

/// How a client fetches kernel + initramfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fetch {
    /// One curl process, both URLs (one keep-alive connection).
    HttpCurl,
    /// One curl process, both files, blksize 1468.
    TftpCurl,
    /// atftp blksize 1468 windowsize 16, kernel then initramfs.
    TftpAtftp,
}

impl Fetch {
    fn label(self) -> &'static str {
        match self {
            Fetch::HttpCurl => "HTTP (curl)",
            Fetch::TftpCurl => "TFTP (curl blksize 1468)",
            Fetch::TftpAtftp => "TFTP (atftp blksize 1468 windowsize 16)",
        }
    }

    fn command(self, ns: &Netns, ip: Ipv4Addr, outs: &[PathBuf; 2]) -> Command {
        match self {
            Fetch::HttpCurl => {
                let mut c = ns.command("curl");
                c.args(["-sS", "--fail", "--max-time", "120"]);
                for (remote, out) in [KERNEL, INITRD].iter().zip(outs) {
                    c.arg("-o")
                        .arg(out)
                        .arg(format!("http://{ip}:{PORT}/{remote}"));
                }
                c
            }
            Fetch::TftpCurl => {
                let mut c = ns.command("curl");
                c.args(["-sS", "--max-time", "120", "--tftp-blksize", "1468"]);
                for (remote, out) in [KERNEL, INITRD].iter().zip(outs) {
                    c.arg("-o").arg(out).arg(format!("tftp://{ip}/{remote}"));
                }
                c
            }
            Fetch::TftpAtftp => {
                let one = |remote: &str, out: &Path| {
                    format!(
                        "atftp --option 'blksize 1468' --option 'windowsize 16' -g -r {remote} -l '{}' {ip} 69",
                        out.display()
                    )
                };
                let mut c = ns.command("sh");
                c.arg("-c").arg(format!(
                    "{} && {}",
                    one(KERNEL, &outs[0]),
                    one(INITRD, &outs[1])
                ));
                c
            }
        }
    }
}

/// A server (or a way of serving) under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Nginx,
    TftpdHpa,
    Ours,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Nginx => "nginx",
            Side::TftpdHpa => "tftpd-hpa",
            Side::Ours => "clustermaker",
        }
    }

    fn fetches(self) -> &'static [Fetch] {
        match self {
            Side::Nginx => &[Fetch::HttpCurl],
            Side::TftpdHpa => &[Fetch::TftpCurl],
            Side::Ours => &[Fetch::HttpCurl, Fetch::TftpCurl, Fetch::TftpAtftp],
        }
    }
}

fn start_nginx(
    nginx: &Path,
    ns: &Netns,
    ip: Ipv4Addr,
    root: &Path,
    scratch: &Path,
) -> Result<Server> {
    let p = |name: &str| scratch.join(name).display().to_string();
    for d in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(scratch.join(d))?;
    }
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes auto;\nuser root;\npid {pid};\nerror_log {err} warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_timeout 65;\n  default_type application/octet-stream;\n\
           client_body_temp_path {body};\n  proxy_temp_path {proxy};\n  fastcgi_temp_path {fastcgi};\n  uwsgi_temp_path {uwsgi};\n  scgi_temp_path {scgi};\n\
           server {{\n    listen {ip}:{PORT};\n    root {root};\n  }}\n}}\n",
        pid = p("nginx.pid"),
        err = p("nginx-error.log"),
        body = p("body"),
        proxy = p("proxy"),
        fastcgi = p("fastcgi"),
        uwsgi = p("uwsgi"),
        scgi = p("scgi"),
        root = root.display(),
    );
    let conf_path = scratch.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut c = ns.command(nginx);
    c.arg("-p")
        .arg(scratch)
        .arg("-e")
        .arg(scratch.join("nginx-error.log"))
        .arg("-c")
        .arg(&conf_path);
    Server::spawn("nginx", c, &scratch.join("nginx.log"))
}

fn wait_http(ns: &Netns, ip: Ipv4Addr, server: &mut Server, scratch: &Path) -> Result<()> {
    let out = scratch.join("probe-http.out");
    let r = sys::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        server.check_running()?;
        let mut c = ns.command("curl");
        c.args(["-sS", "--fail", "--max-time", "1", "-o"])
            .arg(&out)
            .arg(format!("http://{ip}:{PORT}/{PROBE}"));
        sys::run_one(c, &scratch.join("probe-http.log"), Duration::from_secs(5))?;
        if std::fs::read(&out)? != b"probe\n" {
            bail!("the probe file came back different");
        }
        Ok(())
    });
    r.map_err(|e| {
        server.not_serving(&format!(
            "does not serve HTTP on {ip}:{PORT} after 10 s ({e:#})"
        ))
    })
}

/// `n` clients at once, each fetching kernel + initramfs; every file checked. Seconds from the
/// first start to the last exit.
fn fetch_both(
    ns: &Netns,
    fetch: Fetch,
    ip: Ipv4Addr,
    files: &[Payload; 2],
    n: usize,
    outdir: &Path,
    who: &str,
) -> Result<f64> {
    let mut cmds = Vec::new();
    let mut outs = Vec::new();
    for i in 0..n {
        let pair = [outdir.join(format!("k{i}")), outdir.join(format!("i{i}"))];
        for o in &pair {
            let _ = std::fs::remove_file(o);
        }
        cmds.push((
            fetch.command(ns, ip, &pair),
            outdir.join(format!("c{i}.log")),
        ));
        outs.push(pair);
    }
    let timeout = Duration::from_secs(if n == 1 { 60 } else { 240 });
    let (wall, runs) =
        sys::run_clients(cmds, timeout).with_context(|| format!("{who}: {}", fetch.label()))?;
    sys::check_success(&runs).with_context(|| format!("{who}: {}", fetch.label()))?;
    let what = format!("{who} {}", fetch.label());
    for pair in &outs {
        sys::verify_download(&pair[0], &files[0], &what)?;
        sys::verify_download(&pair[1], &files[1], &what)?;
        for o in pair {
            let _ = std::fs::remove_file(o);
        }
    }
    Ok(wall.as_secs_f64())
}

/// The initramfs: `--initramfs`, else target/cm-boot/initramfs.img, else 2 MiB of random data
/// (the size of the busybox initramfs nodes boot).
fn initramfs_payload(ctx: &Ctx, dest: &Path) -> Result<Payload> {
    let built = ctx.workspace.join("target/cm-boot/initramfs.img");
    let source = ctx
        .args
        .initramfs
        .clone()
        .or_else(|| built.is_file().then_some(built));
    match source {
        Some(p) => {
            let data = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
            sys::write_readable(dest, &data)?;
            Payload::from_file(dest, format!("initramfs {}", p.display()))
        }
        None => Payload::random(dest, 2 << 20, 0x001a_172d),
    }
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    let mut section = Section::new("http");
    let tools = tftp::TftpTools::find(ctx)?;
    let nginx = super::deb::program(&ctx.cache, "nginx", "usr/sbin/nginx")
        .context("nginx (run from its unpacked .deb)")?;
    section
        .tools
        .insert("nginx".into(), sys::version_line(&nginx, &["-v"]));
    section.tools.insert(
        "tftpd-hpa".into(),
        sys::version_line(&tools.in_tftpd, &["-V"]),
    );
    if let Some(p) = sys::find_program("curl") {
        section
            .tools
            .insert("curl".into(), sys::version_line(&p, &["--version"]));
    }
    let ours_ok = tftp::ours_tftp_available(ctx);
    let mut sides = vec![Side::Nginx, Side::TftpdHpa];
    match &ours_ok {
        Ok(()) => {
            section
                .tools
                .insert("clustermaker".into(), ctx.ours().version());
            sides.push(Side::Ours);
        }
        Err(why) => {
            ctx.progress.line(format!("http: ours not measured: {why}"));
            section.notes.push(format!("ours: {why}"));
        }
    }

    let dir = TempDir::new("http", false)?;
    let root = dir.join("root");
    sys::mkdir_readable(&root.join("images/bench"))?;
    let kernel = tftp::kernel_payload(ctx, &root.join(KERNEL))?;
    let initrd = initramfs_payload(ctx, &root.join(INITRD))?;
    sys::write_readable(&root.join(PROBE), b"probe\n")?;
    let files = [kernel, initrd];
    let outdir = dir.join("out");
    std::fs::create_dir_all(&outdir)?;
    let ns = tftp::tftp_netns()?;
    let ip = Ipv4Addr::LOCALHOST;
    let counts = [1usize, 20];

    let mut samples: BTreeMap<(Side, Fetch, usize), Vec<f64>> = BTreeMap::new();
    let rounds = ctx.rounds;
    for round in 0..rounds {
        for side in super::round_order(&sides, round) {
            ctx.progress.set(format!(
                "http round {}/{rounds}: starting {}",
                round + 1,
                side.name()
            ));
            let scratch = TempDir::new(&format!("http-{}", side.name()), false)?;
            let mut server = match side {
                Side::Nginx => {
                    let mut s = start_nginx(&nginx, &ns, ip, &root, &scratch.path)?;
                    wait_http(&ns, ip, &mut s, &scratch.path)?;
                    s
                }
                Side::TftpdHpa => tftp::start_server(
                    ctx,
                    &tools,
                    TftpServer::TftpdHpa,
                    &ns,
                    ip,
                    &root,
                    &scratch.path,
                )?,
                Side::Ours => {
                    // One `clustermaker serve` serves both: HTTP on PORT, TFTP on 69.
                    let mut s = tftp::start_server(
                        ctx,
                        &tools,
                        TftpServer::Ours,
                        &ns,
                        ip,
                        &root,
                        &scratch.path,
                    )?;
                    wait_http(&ns, ip, &mut s, &scratch.path)?;
                    s
                }
            };
            for &fetch in side.fetches() {
                // Warm-up, untimed (and checked).
                fetch_both(&ns, fetch, ip, &files, 1, &outdir, side.name())?;
                for &n in &counts {
                    ctx.progress.set(format!(
                        "http round {}/{rounds}: {} {} × {n}",
                        round + 1,
                        side.name(),
                        fetch.label()
                    ));
                    for _ in 0..tftp::reps(n) {
                        let secs = fetch_both(&ns, fetch, ip, &files, n, &outdir, side.name())?;
                        samples.entry((side, fetch, n)).or_default().push(secs);
                    }
                }
            }
            server.check_running()?;
            server.stop(Duration::from_secs(3));
        }
    }

    let get = |side: Side, fetch: Fetch, n: usize| -> Vec<f64> {
        samples.get(&(side, fetch, n)).cloned().unwrap_or_default()
    };
    let ours_http = |n: usize| match &ours_ok {
        Ok(()) => Measure::new(
            "clustermaker HTTP (curl)",
            &get(Side::Ours, Fetch::HttpCurl, n),
        ),
        Err(_) => Measure::missing("clustermaker HTTP (curl)", "not available yet"),
    };
    let mb = (files[0].len + files[1].len) as f64 / 1e6;
    for &n in &counts {
        let who = if n == 1 {
            "1 client".to_string()
        } else {
            format!("{n} clients at once (total)")
        };
        let workload = format!("kernel + initramfs ({mb:.1} MB), {who}");
        section.rows.push(Row::new(
            workload.clone(),
            "s",
            Better::Lower,
            Measure::new("nginx HTTP (curl)", &get(Side::Nginx, Fetch::HttpCurl, n)),
            ours_http(n),
        ));
        section.rows.push(Row::new(
            workload.clone(),
            "s",
            Better::Lower,
            Measure::new(
                "tftpd-hpa TFTP (curl blksize 1468)",
                &get(Side::TftpdHpa, Fetch::TftpCurl, n),
            ),
            ours_http(n),
        ));
        for fetch in [Fetch::TftpCurl, Fetch::TftpAtftp] {
            let anchor = match &ours_ok {
                Ok(()) => Measure::new(
                    format!("clustermaker {}", fetch.label()),
                    &get(Side::Ours, fetch, n),
                ),
                Err(_) => Measure::missing(
                    format!("clustermaker {}", fetch.label()),
                    "not available yet",
                ),
            };
            section.rows.push(Row::new(
                workload.clone(),
                "s",
                Better::Lower,
                anchor,
                ours_http(n),
            ));
        }
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Every way measured (median [min–max], seconds; MB/s at the median):\n"
    );
    let _ = writeln!(md, "| server | transfer | 1 client | 20 clients at once |");
    let _ = writeln!(md, "| --- | --- | --- | --- |");
    for side in &sides {
        for &fetch in side.fetches() {
            let cell = |n: usize| match Summary::of(&get(*side, fetch, n)) {
                Some(s) => format!(
                    "{} ({:.0} MB/s)",
                    super::report::fmt_summary(&s, "s"),
                    mb * n as f64 / s.median
                ),
                None => "—".into(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                side.name(),
                fetch.label(),
                cell(1),
                cell(20)
            );
        }
    }
    section.details_md = md;
    section.method = vec![
        format!("Files: {} ({} bytes) and {} ({} bytes), served as `/images/bench/vmlinuz` and `/images/bench/initramfs.img` over HTTP and TFTP; every download is compared with the file's blake3.", files[0].origin, files[0].len, files[1].origin, files[1].len),
        "One private network namespace, everything on its loopback; one server at a time, started fresh each round, one untimed warm-up fetch per way of fetching. Single-client fetches run 3 times per round (each a sample), 20-client runs once.".into(),
        format!("HTTP anchor: nginx from Debian (unpacked .deb, not installed), `worker_processes auto`, `sendfile on`, `access_log off`, on 127.0.0.1:{PORT}. A toy server (`python3 -m http.server`) would not be a fair anchor."),
        "Ours: one `clustermaker serve` (its DHCP server idle) serving HTTP (its image route, `/images/<image>/<file>`) and TFTP (port 69) from the same images directory.".into(),
        "Client: one process per node fetching both files — curl with both URLs (one keep-alive connection for HTTP, two transfers for TFTP); atftp runs twice in one `sh -c`. 20 clients: 20 such processes at once, time from the first start to the last exit.".into(),
    ];
    section.raw = serde_json::json!({
        "files": files,
        "samples_s": samples.iter().map(|((side, fetch, n), v)| serde_json::json!({
            "server": side.name(), "transfer": fetch.label(), "clients": n, "seconds": v
        })).collect::<Vec<_>>(),
    });
    if samples.is_empty() {
        return Err(anyhow!("nothing was measured"));
    }
    Ok(section)
}
