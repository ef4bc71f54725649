//! A `clustermaker serve` master running inside a test's network namespace, with its own
//! configuration and state directory, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{clustermaker_bin, wait_for, ChildGuard, Netns};

pub struct Master {
    pub dir: tempfile_dir::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
    pub http: String,
    child: Option<ChildGuard>,
}

/// A minimal temporary directory (removed on drop) so the helpers need no extra crate.
pub mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(prefix: &str) -> std::io::Result<TempDir> {
            let p = std::env::temp_dir().join(crate::unique_name(prefix));
            std::fs::create_dir_all(&p)?;
            Ok(TempDir(p))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            if std::env::var_os("CM_KEEP_TEST_DIRS").is_none() {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}

impl Master {
    /// Writes `config_body` (TOML; `state_dir` is set by this function) and an images
    /// directory whose `default` image is `boot_dir` (kernel + initramfs), when given.
    pub fn prepare(config_body: &str, boot_dir: Option<&Path>, http: &str) -> Result<Master> {
        let dir = tempfile_dir::TempDir::new("cmmaster")?;
        let state = dir.path().join("state");
        std::fs::create_dir_all(state.join("images"))?;
        if let Some(boot) = boot_dir {
            std::os::unix::fs::symlink(boot, state.join("images/default"))?;
        }
        let config = dir.path().join("clustermaker.toml");
        std::fs::write(
            &config,
            format!("state_dir = \"{}\"\n{config_body}", state.display()),
        )?;
        Ok(Master {
            log: dir.path().join("serve.log"),
            dir,
            config,
            http: http.to_string(),
            child: None,
        })
    }

    /// Starts `clustermaker serve` in `ns` and waits until its HTTP API answers.
    pub fn start(&mut self, ns: &Netns) -> Result<()> {
        let log = std::fs::File::create(&self.log)?;
        let child = ns
            .command(clustermaker_bin().to_str().unwrap())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("CLUSTERMAKER_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start clustermaker serve")?;
        self.child = Some(ChildGuard(child));
        let url = format!("{}/api/v1/nodes", self.http);
        let result = wait_for(
            "clustermaker serve to answer HTTP",
            Duration::from_secs(20),
            || {
                if let Some(c) = self.child.as_mut() {
                    if let Ok(Some(_)) = c.0.try_wait() {
                        return Some(false);
                    }
                }
                let ok = ns
                    .command("curl")
                    .args(["-sf", "-o", "/dev/null", &url])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                ok.then_some(true)
            },
        );
        match result {
            Ok(true) => Ok(()),
            _ => bail!("clustermaker serve did not come up:\n{}", self.log_text()),
        }
    }

    pub fn stop(&mut self) {
        self.child = None;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `clustermaker --config … ARGS` (outside any namespace: the CLI only touches the
    /// state directory).
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        let out = Command::new(clustermaker_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "clustermaker {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    /// `clustermaker … ARGS --json`, parsed.
    pub fn cli_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut full = args.to_vec();
        full.push("--json");
        let out = self.cli(&full)?;
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))
    }
}
