//! `clustermaker nfs …`: what the embedded NFS server is serving (from the status file `serve`
//! keeps), and the kernel NFS server's exports for sites that use it instead.

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::config::Config;
use crate::nfs_serve::{self, NfsStatus};

#[derive(Subcommand, Debug)]
pub enum NfsCommand {
    /// Exports (image, version, entries, readiness), the handle key fingerprint, connections
    /// and calls by procedure, as `serve` last wrote them.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Prints the kernel NFS server's exports for the images (what `nfs.kernel_exports_file`
    /// gets), for sites whose images sit on block-replicated storage.
    KernelExports,
}

/// A status older than this means `serve` is not running (it rewrites it every rescan).
const STALE_AFTER_MS: u64 = 30_000;

pub fn run(config: &Config, cmd: NfsCommand) -> Result<()> {
    match cmd {
        NfsCommand::KernelExports => {
            print!("{}", nfs_serve::kernel_exports(config)?);
            Ok(())
        }
        NfsCommand::Status { json } => {
            let path = nfs_serve::status_path(&config.state_dir);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "no NFS status at {} (fix: start `clustermaker serve` with [nfs] enabled)",
                    path.display()
                )
            })?;
            let status: NfsStatus = serde_json::from_str(&text)
                .with_context(|| format!("{} is not an NFS status file", path.display()))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let limit = STALE_AFTER_MS.max(3 * config.nfs.rescan_interval.as_millis() as u64);
            let stale = now.saturating_sub(status.updated_ms) > limit;
            if json {
                let mut v = serde_json::to_value(&status)?;
                v["stale"] = serde_json::Value::Bool(stale);
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            print!("{}", render(&status, stale));
            Ok(())
        }
    }
}

fn render(s: &NfsStatus, stale: bool) -> String {
    let mut out = String::new();
    if stale {
        out.push_str(
            "warning: this status is old: `clustermaker serve` is not running, or busy indexing a new image\n",
        );
    }
    out.push_str(&format!(
        "listening on {}; nodes mount from {} with {}\nhandle key {}\n",
        s.listen.join(", "),
        s.server_address,
        s.mount_options,
        s.key_fingerprint
    ));
    if s.exports.is_empty() {
        out.push_str("no images exported (build one with `clustermaker image build`)\n");
    }
    for e in &s.exports {
        let state = if e.ready { "ready" } else { "indexing" };
        out.push_str(&format!(
            "{:<28} {:<8} version {:<20} {} entries, {:.1} MiB, index {} ms, generation {}, {} retained{}\n",
            e.path,
            state,
            e.version,
            e.entries,
            e.bytes as f64 / 1048576.0,
            e.index_build_ms,
            e.generation,
            e.retained_versions,
            e.last_error
                .as_ref()
                .map(|x| format!(", last error: {x}"))
                .unwrap_or_default()
        ));
    }
    out.push_str(&format!(
        "connections: {} active, {} total, {} refused; RPC errors {}\n",
        s.connections_active, s.connections_total, s.connections_rejected, s.rpc_errors
    ));
    if !s.calls.is_empty() {
        let calls: Vec<String> = s.calls.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!("calls: {}\n", calls.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_renders_exports_calls_and_staleness() {
        let s = NfsStatus {
            updated_ms: 0,
            listen: vec!["0.0.0.0:2049".into()],
            server_address: "10.0.0.1".into(),
            key_fingerprint: "abcdef012345".into(),
            mount_options: "ro,vers=3".into(),
            exports: vec![nfs_serve::ExportStatus {
                name: "busy".into(),
                path: "/images/busy".into(),
                ready: true,
                version: "0001-abc".into(),
                entries: 420,
                bytes: 2 << 20,
                index_memory: 40_000,
                index_build_ms: 12,
                generation: 3,
                retained_versions: 1,
                last_rescan_ms: None,
                last_error: None,
            }],
            connections_total: 2,
            connections_active: 1,
            connections_rejected: 0,
            calls: [("getattr".to_string(), 7u64)].into_iter().collect(),
            rpc_errors: 0,
        };
        let text = render(&s, true);
        assert!(text.starts_with("warning: this status is old"));
        assert!(text.contains("/images/busy"));
        assert!(text.contains("420 entries, 2.0 MiB"));
        assert!(text.contains("getattr 7"));
        assert!(!render(&s, false).contains("warning"));
    }
}
