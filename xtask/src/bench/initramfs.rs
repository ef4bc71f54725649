//! The initramfs build: time and size of `cargo xtask build-image` (kernel, busybox, the
//! clustermaker agent with its libraries, kernel modules with their dependencies, zstd), run
//! as a user runs it, with warm caches. There is no established tool doing the same job on
//! this machine to run beside it (Debian's initramfs-tools/dracut build a different, much
//! larger image from the host), so this section records figures without a ratio.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::report::{fmt_summary, Section, Summary};
use super::sys::TempDir;
use super::Ctx;

struct Build {
    wall_s: f64,
    report: serde_json::Value,
}

fn build_image(ctx: &Ctx, out: &std::path::Path) -> Result<Build> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["xtask", "build-image", "--json", "--out"])
        .arg(out)
        .current_dir(&ctx.workspace)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped());
    if let Some(cache) = &ctx.args.cache {
        cmd.arg("--cache").arg(cache);
    }
    let start = Instant::now();
    let child = cmd.spawn().context("cannot run cargo xtask build-image")?;
    let output = wait_with_timeout(child, Duration::from_secs(1800))?;
    let wall_s = start.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "cargo xtask build-image failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let start_json = text.find('{').unwrap_or(0);
    let report: serde_json::Value =
        serde_json::from_str(&text[start_json..]).with_context(|| {
            format!("cargo xtask build-image --json printed no JSON report: {text}")
        })?;
    Ok(Build { wall_s, report })
}

/// `wait_with_output` with a bound: the child is killed after `timeout`.
fn wait_with_timeout(
    child: std::process::Child,
    timeout: Duration,
) -> Result<std::process::Output> {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let r = child.wait_with_output();
        let _ = tx.send(());
        r
    });
    if rx.recv_timeout(timeout).is_err() {
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = waiter.join();
        bail!("cargo xtask build-image did not finish within {timeout:?}");
    }
    Ok(waiter.join().expect("waiter thread")?)
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    let mut section = Section::new("initramfs");
    let rounds = ctx.long_rounds;
    let out = TempDir::new("initramfs", true)?;
    // Always one untimed build first: it fills the download cache and cargo's builds (xtask,
    // clustermaker), which would otherwise dominate the first round.
    ctx.progress
        .set("initramfs: untimed first build (downloads, cargo build)");
    build_image(ctx, &out.join("warmup"))?;
    let mut builds = Vec::new();
    for round in 0..rounds {
        ctx.progress.set(format!(
            "initramfs round {}/{rounds}: cargo xtask build-image",
            round + 1
        ));
        // A new output directory each round: nothing to reuse but the download cache.
        builds.push(build_image(ctx, &out.join(format!("r{round}")))?);
    }
    let num = |b: &Build, key: &str| b.report[key].as_f64().unwrap_or(f64::NAN);
    let wall: Vec<f64> = builds.iter().map(|b| b.wall_s).collect();
    let own: Vec<f64> = builds.iter().map(|b| num(b, "build_secs")).collect();
    let size: Vec<f64> = builds
        .iter()
        .map(|b| num(b, "initramfs_size") / 1e6)
        .collect();
    let raw_size: Vec<f64> = builds
        .iter()
        .map(|b| num(b, "initramfs_uncompressed_size") / 1e6)
        .collect();
    let hashes: Vec<&str> = builds
        .iter()
        .map(|b| b.report["initramfs_blake3"].as_str().unwrap_or("?"))
        .collect();
    let identical = hashes.windows(2).all(|w| w[0] == w[1]);
    let first = &builds[0].report;
    let modules = first["modules"].as_array().map(|m| m.len()).unwrap_or(0);

    let mut md = String::new();
    let _ = writeln!(md, "| figure | value |");
    let _ = writeln!(md, "| --- | --- |");
    let f = |v: &[f64], unit: &str| {
        Summary::of(v)
            .map(|s| fmt_summary(&s, unit))
            .unwrap_or_default()
    };
    let _ = writeln!(
        md,
        "| `cargo xtask build-image` wall time (warm caches) | {} |",
        f(&wall, "s")
    );
    let _ = writeln!(
        md,
        "| its own build time (`build_secs`) | {} |",
        f(&own, "s")
    );
    let _ = writeln!(md, "| initramfs.img size | {} |", f(&size, "MB"));
    let _ = writeln!(md, "| uncompressed cpio | {} |", f(&raw_size, "MB"));
    let _ = writeln!(
        md,
        "| kernel | {} |",
        first["kernel_version"].as_str().unwrap_or("?")
    );
    let _ = writeln!(md, "| kernel modules in the image | {modules} |");
    let _ = writeln!(
        md,
        "| identical bytes in every round (reproducible) | {} |",
        if builds.len() < 2 {
            "one round only".to_string()
        } else if identical {
            format!("yes (blake3 {}…)", &hashes[0][..16.min(hashes[0].len())])
        } else {
            "**no**".to_string()
        }
    );
    section.details_md = md;
    section.method = vec![
        "`cargo xtask build-image --json --out DIR` with a fresh output directory each round; the download cache and cargo's build of clustermaker stay warm (an untimed first build fills them). Wall time is measured around the process; `build_secs` is what the command reports itself.".into(),
        "No anchor: there is no tool on this machine building the same image (initramfs-tools and dracut build a host-specific image of a different size and content), so this section has no ratio.".into(),
    ];
    section.raw = serde_json::json!({
        "wall_s": wall,
        "builds": builds.iter().map(|b| b.report.clone()).collect::<Vec<_>>(),
        "identical": identical,
    });
    Ok(section)
}
