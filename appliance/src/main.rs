//! `clustermaker`: the master's boot services, the node registry, and the node agent.

mod agent;
mod boot;
mod cli_node;
mod config;
mod http;
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
    /// Runs the master's boot services: DHCP, TFTP, HTTP boot and API, IPv6 router answers.
    Serve,
    /// Manages nodes: discovered PXE clients, members, their boot stages.
    #[command(subcommand)]
    Node(cli_node::NodeCommand),
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
    init_logging(&cli.log_format);
    if let Err(e) = run(cli) {
        // One line: the cause chain, outermost first.
        eprintln!("clustermaker: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
        command => {
            let config = config::Config::load(cli.config.as_deref())?;
            match command {
                Command::Serve => serve::run(config),
                Command::Node(cmd) => cli_node::run(&config, cmd),
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
                Command::Agent(_) => unreachable!(),
            }
        }
    }
}
