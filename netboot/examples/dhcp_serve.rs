//! A stand-alone DHCP server for benchmarks and manual tests (the appliance embeds the same
//! server): `dhcp_serve CONFIG.json STATE_DIR`. CONFIG.json holds the `[dhcp]` table as JSON;
//! no node is registered, so every client gets a pool address and the default boot files.
//! Prints the number of bound leases every 5 seconds on stderr.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use netboot::dhcp::{DhcpConfig, DhcpServer, LeaseState};
use netboot::node::NoObserver;
use netboot::{MacAddr, NodeDirectory, Reservation};

struct NoNodes;

impl NodeDirectory for NoNodes {
    fn reservation(&self, _: &MacAddr) -> Option<Reservation> {
        None
    }
    fn reserved_by(&self, _: std::net::Ipv4Addr) -> Option<MacAddr> {
        None
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(config), Some(state)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: dhcp_serve CONFIG.json STATE_DIR");
    };
    let config = PathBuf::from(config);
    let cfg: DhcpConfig = serde_json::from_slice(&std::fs::read(&config)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let server = DhcpServer::new(
        cfg,
        &PathBuf::from(state),
        Arc::new(NoNodes),
        Arc::new(NoObserver),
    )?;
    let status = server.status();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(5));
        let bound = status
            .leases()
            .iter()
            .filter(|l| l.state == LeaseState::Bound)
            .count();
        eprintln!("dhcp_serve: {bound} bound leases");
    });
    server.run_blocking()?;
    Ok(())
}
