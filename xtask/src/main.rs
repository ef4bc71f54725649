//! `cargo xtask`: project automation that needs more than a shell line.
//!
//! - `build-image`: the node kernel, initramfs and manifest ([`build_image`])
//! - `demo`: a master in a private network namespace boots one QEMU node ([`demo`])
//! - `ci`: the whole test suite, as CI runs it ([`ci`])

mod agent;
mod bench;
mod build_image;
mod busybox;
mod ci;
mod cmd;
mod debian;
mod demo;
mod kernel;
mod manifest;
mod ui;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::ui::{Mode, Ui};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "clustermaker project automation"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the node kernel + initramfs + manifest.json into one directory (reproducibly)
    BuildImage(build_image::BuildImageArgs),
    /// Boot one QEMU node from a master in a private network namespace, showing its boot stages
    Demo(demo::DemoArgs),
    /// Run the whole test suite as CI does (installs the Debian packages it needs)
    /// Ours vs the established tools, same workload, same run; results in docs/BENCHMARKS.md
    Bench(bench::BenchArgs),
    Ci(ci::CiArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::BuildImage(args) => build(&args),
        Cmd::Demo(args) => demo::run(&args, &workspace_root()),
        Cmd::Ci(args) => ci::run(args),
        Cmd::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the error chain on one line: cause first, then the fix.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn build(args: &build_image::BuildImageArgs) -> anyhow::Result<()> {
    let mode = if args.json { Mode::Quiet } else { Mode::Human };
    let mut ui = Ui::new(mode, build_image::STEPS);
    let report = build_image::run(args, &workspace_root(), &mut ui)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        ui.info(format!(
            "initramfs {} ({:.1} MiB, {:.1} MiB uncompressed), kernel {}, built in {:.1}s",
            report.initramfs.display(),
            report.initramfs_size as f64 / (1024.0 * 1024.0),
            report.initramfs_uncompressed_size as f64 / (1024.0 * 1024.0),
            report.kernel_version,
            report.build_secs
        ));
    }
    Ok(())
}

/// The workspace root: xtask lives one level below it.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}
