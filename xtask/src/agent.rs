//! The `clustermaker` binary that runs on the node (`clustermaker agent online`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{self, STRIP};

pub struct Agent {
    /// The file that goes into the initramfs (stripped copy unless --no-strip).
    pub path: PathBuf,
    pub size: u64,
    /// Size before stripping.
    pub unstripped_size: u64,
}

/// Builds `clustermaker` in release mode with the cargo running this xtask and returns the
/// binary's path (the target directory comes from `cargo metadata`, so CARGO_TARGET_DIR is
/// honoured).
pub fn build_release(workspace: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .args(["build", "--release", "--quiet", "-p", "clustermaker"])
        .current_dir(workspace);
    let out = build.output().context("cannot run cargo")?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {} (fix: make `cargo build --release -p clustermaker` pass, or pass --clustermaker PATH)",
            cmd::show(&build),
            cmd::last_line(&out.stderr)
        );
    }
    let meta = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace)
        .output()
        .context("cannot run cargo metadata")?;
    let v: serde_json::Value =
        serde_json::from_slice(&meta.stdout).context("cargo metadata printed no JSON")?;
    let target = v["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    Ok(Path::new(target).join("release/clustermaker"))
}

/// Copies the binary into `work` (stripping it unless `strip` is false).
pub fn prepare(binary: &Path, work: &Path, strip: bool) -> Result<Agent> {
    let unstripped_size = fs::metadata(binary)
        .with_context(|| {
            format!(
                "clustermaker binary {} is missing (fix: build it or pass --clustermaker PATH)",
                binary.display()
            )
        })?
        .len();
    let dest = work.join("clustermaker");
    if dest.exists() {
        fs::remove_file(&dest)?;
    }
    if strip {
        // --strip-all: the node never needs symbols; a smaller initramfs boots faster over TFTP.
        STRIP.run(
            STRIP
                .command()
                .arg("--strip-all")
                .arg("-o")
                .arg(&dest)
                .arg(binary),
            "pass --no-strip, or a binary for this architecture",
        )?;
    } else {
        fs::copy(binary, &dest).with_context(|| format!("cannot copy {}", binary.display()))?;
    }
    let size = fs::metadata(&dest)?.len();
    Ok(Agent {
        path: dest,
        size,
        unstripped_size,
    })
}
