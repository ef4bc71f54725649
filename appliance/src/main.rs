//! `clustermaker`: the master's boot services, the node registry, and the node agent.

mod agent;
mod boot;
mod cli_ha;
mod cli_image;
mod cli_nfs;
mod cli_node;
mod cli_overlay;
mod config;
mod http;
mod metrics;
mod nfs_config;
mod nfs_serve;
mod node_api;
mod procfs;
mod registry;
mod serve;
mod statefile;
mod tftp_files;
mod tracker;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "clustermaker",
    version,
    about = "Network-boot appliance and high-availability runtime for Linux clusters"
)]
struct Cli {
    /// Configuration file (TOML); see clustermaker.example.toml.
    #[arg(long, global = true, env = "CLUSTERMAKER_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on standard error.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the master: boot services (DHCP, TFTP, HTTP boot and API, IPv6 router answers)
    /// and, with `[ha]` enabled, the HA runtime (heartbeats, virtual IP, services, monitors).
    Serve,
    /// Shows the HA state: role, peer, links, group holder, resources, monitors, last change.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Hands the resource group to the peer (like Heartbeat's hb_standby).
    Standby {
        #[arg(long)]
        json: bool,
    },
    /// Takes the resource group from the peer (like Heartbeat's hb_takeover).
    Takeover {
        #[arg(long)]
        json: bool,
    },
    /// HA setup tasks.
    #[command(subcommand)]
    Ha(cli_ha::HaCommand),
    /// Converts legacy Heartbeat (ha.cf, haresources, authkeys) and mon (mon.cf) files into
    /// clustermaker's TOML.
    #[command(subcommand)]
    Import(cli_ha::ImportCommand),
    /// Internal: the guard process `serve` starts to take the group down if it is killed.
    #[command(hide = true)]
    HaGuard,
    /// Manages nodes: discovered PXE clients, members, their boot stages.
    #[command(subcommand)]
    Node(cli_node::NodeCommand),
    /// The embedded NFS server: what it exports and serves.
    #[command(subcommand)]
    Nfs(cli_nfs::NfsCommand),
    /// Node images: build from a source, update, snapshot, roll back, verify, list.
    ///
    /// Images live under boot.images_dir (default STATE_DIR/images) as immutable versions;
    /// `current` names the one nodes boot next and the NFS server serves. To change an image
    /// safely, change its source and run `image update NAME`: a new version is published
    /// beside the old one and switched atomically. Never edit versions/*/root in place: files
    /// there may be hard links shared with other versions and snapshots (`image verify` names
    /// files changed that way); tools that replace files (write new, rename over) are safe.
    #[command(subcommand)]
    Image(cli_image::ImageCommand),
    /// Checks the configuration file and prints it as resolved.
    Config {
        #[arg(long)]
        json: bool,
    },
    /// Runs on a booted node.
    #[command(subcommand)]
    Agent(AgentCommand),
}

#[derive(Subcommand, Debug)]
enum AgentCommand {
    /// Runs the node agent: reports online, then CPU, memory, load and network figures every
    /// interval, and drops the node's dentry caches when the master says the image changed.
    /// Here `--config` names the agent's file (default /etc/clustermaker/agent.toml).
    Run {
        /// Seconds between reports (overrides interval_secs of the agent file).
        #[arg(long)]
        interval: Option<u64>,
    },
    /// Reports this node online to the master (MAC, address, kernel, seconds since power-on).
    Online {
        /// The master's HTTP base URL, e.g. http://10.0.0.1:8080 (the boot script passes it as
        /// cm.master= on the kernel command line).
        #[arg(long)]
        master: String,
        /// The interface to report; the first with an IPv4 address when absent.
        #[arg(long)]
        interface: Option<String>,
        #[arg(long, default_value_t = 10)]
        attempts: u32,
        #[arg(long)]
        json: bool,
    },
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLUSTERMAKER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() {
    let cli = Cli::parse();
    // Commands that print and exit behave like other Unix tools when their reader goes away
    // (`clustermaker node list | head`): the default SIGPIPE ends them quietly instead of a
    // panic in println!. Long-running modes keep Rust's ignored SIGPIPE and handle EPIPE.
    if !matches!(
        cli.command,
        Command::Serve | Command::HaGuard | Command::Agent(AgentCommand::Run { .. })
    ) {
        // SAFETY: setting a signal disposition to its default at start, before any thread.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_logging(&cli.log_format);
    if let Err(e) = run(cli) {
        // One line: the cause chain, outermost first.
        eprintln!("clustermaker: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Agent(AgentCommand::Run { interval }) => {
            let path = cli
                .config
                .unwrap_or_else(|| PathBuf::from(agent::DEFAULT_AGENT_CONFIG));
            let mut config = agent::AgentConfig::load(&path)?;
            if let Some(i) = interval {
                config.interval_secs = i.max(1);
            }
            match agent::run(&config)? {}
        }
        Command::Agent(AgentCommand::Online {
            master,
            interface,
            attempts,
            json,
        }) => {
            let report = agent::report_online(&master, interface.as_deref(), attempts)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "reported online to {master}: {} {} kernel {}",
                    report.mac, report.ip, report.kernel
                );
            }
            Ok(())
        }
        Command::Import(cmd) => cli_ha::import(cmd),
        command => {
            let config = config::Config::load(cli.config.as_deref())?;
            match command {
                Command::Serve => serve::run(config, cli.config.clone()),
                Command::Status { json } => cli_ha::status(&config, json),
                Command::Standby { json } => {
                    cli_ha::admin(&config, runtime::control::Command::Standby, json)
                }
                Command::Takeover { json } => {
                    cli_ha::admin(&config, runtime::control::Command::Takeover, json)
                }
                Command::Ha(cli_ha::HaCommand::Keygen { out }) => cli_ha::keygen(&config, out),
                Command::HaGuard => runtime::ha::run_guard(&config.ha),
                Command::Node(cmd) => cli_node::run(&config, cmd),
                Command::Image(cmd) => cli_image::run(&config, cmd),
                Command::Nfs(cmd) => cli_nfs::run(&config, cmd),
                Command::Config { json } => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(
                                &serde_json::json!({"state_dir": config.state_dir, "http_base": config.http_base()})
                            )?
                        );
                    } else {
                        println!("{config:#?}");
                    }
                    Ok(())
                }
                Command::Agent(_) | Command::Import(_) => unreachable!(),
            }
        }
    }
}
