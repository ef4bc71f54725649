//! The node-facing API of a running master, without VMs: a master namespace and a "node"
//! namespace on a veth link. The node side uses busybox udhcpc, curl, tar and the real
//! `clustermaker agent run`; the CLI reads what the master kept, also across a kill -9.

use std::time::Duration;

use anyhow::Result;
use cm_tests::master::Master;
use cm_tests::{clustermaker_bin, require_program, require_root, veth, wait_for, Netns};

const MASTER: &str = "http://10.97.0.1:8080";

fn config(server_if: &str) -> String {
    format!(
        "[network]\ninterface = \"{server_if}\"\naddress = \"10.97.0.1\"\n[boot]\nipxe_dir = \"/usr/lib/ipxe\"\nipv6_ra = false\n\
         [[dhcp.subnets]]\ncidr = \"10.97.0.0/24\"\npools = [{{start = \"10.97.0.100\", end = \"10.97.0.120\"}}]\n\
         router = \"10.97.0.254\"\ndns = [\"10.97.0.1\"]\ndomain = \"lab.test\"\n"
    )
}

/// `curl` in `ns`: (HTTP status, body).
fn curl(ns: &Netns, args: &[&str]) -> Result<(u16, Vec<u8>)> {
    let mut full = vec!["-s", "-o", "/dev/stdout", "-w", "\n%{http_code}"];
    full.extend_from_slice(args);
    let out = ns.command("curl").args(&full).output()?;
    let text = out.stdout;
    let split = text.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&text[split + 1..]).trim().parse()?;
    Ok((code, text[..split].to_vec()))
}

fn post(ns: &Netns, path: &str, body: &str) -> Result<(u16, String)> {
    let url = format!("{MASTER}{path}");
    let (code, body) = curl(
        ns,
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
            &url,
        ],
    )?;
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

#[test]
fn overlay_events_and_metrics_reach_the_master_and_survive_a_kill() -> Result<()> {
    let t = "node api";
    if !require_root(t)
        || !require_program(t, "curl")
        || !require_program(t, "udhcpc")
        || !require_program(t, "tar")
        || !require_program(t, "ssh-keygen")
    {
        return Ok(());
    }
    let server = Netns::new("cmna")?;
    let node = Netns::new("cmnb")?;
    let (server_if, node_if) = veth(&server, &node)?;
    server.addr(&server_if, "10.97.0.1/24")?;
    node.ip(&["link", "set", &node_if, "up"])?;
    let mac = String::from_utf8(
        node.run("cat", &[&format!("/sys/class/net/{node_if}/address")])?
            .stdout,
    )?
    .trim()
    .to_string();

    let mut master = Master::prepare(&config(&server_if), None, MASTER)?;
    // An administrator's template beside the configuration file.
    let overlay_dir = master.dir.path().join("overlay/etc");
    std::fs::create_dir_all(&overlay_dir)?;
    std::fs::write(overlay_dir.join("motd.j2"), "{{ name }} runs {{ image }}\n")?;
    master.start(&server)?;

    // A stranger gets 404 with the reason, and nothing is recorded for it (asked from the
    // master's namespace: the node has no address yet).
    let (code, body) = curl(
        &server,
        &[&format!(
            "{MASTER}/api/v1/nodes/52-54-00-aa-bb-cc/overlay.tar"
        )],
    )?;
    assert_eq!(code, 404);
    assert!(String::from_utf8_lossy(&body).contains("unknown MAC"));
    let (code, _) = post(
        &server,
        "/api/v1/nodes/stage",
        r#"{"mac":"52:54:00:aa:bb:cc","stage":"nfs-mount-failed","detail":"x"}"#,
    )?;
    assert_eq!(code, 404);

    // DHCP makes the node known (discovered): it gets a minimal overlay, no SSH keys.
    let script = master.dir.path().join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && ip addr add $ip/24 dev $interface\nexit 0\n",
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    node.run(
        "udhcpc",
        &[
            "-f",
            "-q",
            "-n",
            "-i",
            &node_if,
            "-t",
            "5",
            "-T",
            "1",
            "-s",
            script.to_str().unwrap(),
        ],
    )?;
    let tar_path = master.dir.path().join("overlay.tar");
    let (code, tar) = curl(
        &node,
        &[&format!(
            "{MASTER}/api/v1/nodes/{}/overlay.tar?iface={node_if}",
            mac.replace(':', "-")
        )],
    )?;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&tar));
    std::fs::write(&tar_path, &tar)?;
    let listing = String::from_utf8(
        std::process::Command::new("tar")
            .args(["-tvf", tar_path.to_str().unwrap()])
            .output()?
            .stdout,
    )?;
    assert!(
        listing.contains("etc/hostname") && listing.contains("etc/motd"),
        "{listing}"
    );
    assert!(!listing.contains("ssh_host"), "{listing}");

    // Added as a member: its name, its keys (0600 root), the same bytes as `node render`.
    master.cli(&["node", "add", "n1", "--mac", &mac, "--ip", "10.97.0.42"])?;
    let unpack = master.dir.path().join("unpacked");
    wait_for("the overlay of member n1", Duration::from_secs(10), || {
        let (code, tar) = curl(
            &node,
            &[&format!(
                "{MASTER}/api/v1/nodes/{mac}/overlay.tar?iface={node_if}"
            )],
        )
        .ok()?;
        if code != 200 {
            return None;
        }
        std::fs::write(&tar_path, &tar).ok()?;
        let _ = std::fs::remove_dir_all(&unpack);
        std::fs::create_dir_all(&unpack).ok()?;
        std::process::Command::new("tar")
            .args(["-xf", tar_path.to_str()?, "-C", unpack.to_str()?])
            .status()
            .ok()?;
        let hostname = std::fs::read_to_string(unpack.join("etc/hostname")).ok()?;
        (hostname == "n1\n").then_some(())
    })?;
    // Its keys are the node's: another address (the master's namespace here) gets 403.
    let (code, body) = curl(
        &server,
        &[&format!("{MASTER}/api/v1/nodes/{mac}/overlay.tar")],
    )?;
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    let key = unpack.join("etc/ssh/ssh_host_ed25519_key");
    let meta = std::fs::metadata(&key)?;
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_to_string(unpack.join("etc/motd"))?,
        "n1 runs default\n"
    );
    let hosts = std::fs::read_to_string(unpack.join("etc/hosts"))?;
    assert!(hosts.contains("10.97.0.42\tn1.lab.test n1\n"), "{hosts}");
    let agent_toml = std::fs::read_to_string(unpack.join("etc/clustermaker/agent.toml"))?;
    assert!(
        agent_toml.contains("master = \"http://10.97.0.1:8080\""),
        "{agent_toml}"
    );
    let rendered = master.cli_json(&["node", "render", "n1"])?;
    let files = rendered.as_array().unwrap();
    let hostname = files.iter().find(|f| f["path"] == "etc/hostname").unwrap();
    assert_eq!(hostname["contents"], "n1\n");
    let private = files
        .iter()
        .find(|f| f["path"] == "etc/ssh/ssh_host_ed25519_key")
        .unwrap();
    assert_eq!(private["mode"], "0600");
    assert!(
        private["contents"].is_null(),
        "private keys are not printed"
    );
    // Keys are made once: the same on every render.
    let again = master.dir.path().join("again");
    master.cli(&["node", "render", "n1", "--out", again.to_str().unwrap()])?;
    assert_eq!(
        std::fs::read(again.join("etc/ssh/ssh_host_ed25519_key"))?,
        std::fs::read(&key)?
    );

    // A boot event from the initramfs.
    let (code, _) = post(
        &node,
        "/api/v1/nodes/stage",
        &format!(r#"{{"mac":"{mac}","stage":"nfs-mount-failed","detail":"attempt 1: refused"}}"#),
    )?;
    assert_eq!(code, 200);

    // Hostile metrics: too many interfaces, too big, a stranger.
    let nets: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"iface":"e{i}","rx_bytes":0,"tx_bytes":0,"rx_packets":0,"tx_packets":0,"rx_bytes_per_sec":0,"tx_bytes_per_sec":0}}"#))
        .collect();
    let body = format!(
        r#"{{"mac":"{mac}","uptime_secs":1,"cpu":{{"percent":1,"cores":1}},"mem":{{"total_kb":10,"available_kb":5,"used_kb":5}},"load":[0,0,0],"net":[{}]}}"#,
        nets.join(",")
    );
    assert_eq!(post(&node, "/api/v1/nodes/metrics", &body)?.0, 422);
    let huge = format!(r#"{{"mac":"{mac}","hostname":"{}"}}"#, "x".repeat(20_000));
    assert_eq!(post(&node, "/api/v1/nodes/metrics", &huge)?.0, 413);
    let stranger = r#"{"mac":"52:54:00:aa:bb:cc","uptime_secs":1,"cpu":{"percent":1,"cores":1},"mem":{"total_kb":10,"available_kb":5,"used_kb":5},"load":[0,0,0]}"#;
    assert_eq!(post(&node, "/api/v1/nodes/metrics", stranger)?.0, 404);

    // The real agent, every second, from the node's namespace.
    let agent_conf = master.dir.path().join("agent.toml");
    std::fs::write(
        &agent_conf,
        format!("master = \"{MASTER}\"\nnode = \"n1\"\nmac = \"{mac}\"\ninterval_secs = 1\n"),
    )?;
    let agent = node.spawn(
        clustermaker_bin().to_str().unwrap(),
        &["--config", agent_conf.to_str().unwrap(), "agent", "run"],
    )?;
    let listed = wait_for("n1 online with metrics", Duration::from_secs(20), || {
        let list = master.cli_json(&["node", "list"]).ok()?;
        let n1 = list.as_array()?.iter().find(|n| n["name"] == "n1")?.clone();
        (n1["agent"]["online"] == true && n1["stage"] == "online").then_some(n1)
    })?;
    let latest = &listed["agent"]["latest"];
    assert!(latest["mem"]["total_kb"].as_u64().unwrap() > 0, "{latest}");
    assert!(latest["cpu"]["cores"].as_u64().unwrap() >= 1, "{latest}");
    assert!(
        latest["net"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["iface"] == node_if.as_str()),
        "{latest}"
    );
    // Over HTTP from the node's side (the master's in-memory history).
    let count_samples = || -> Option<usize> {
        let (code, body) = curl(
            &node,
            &[&format!("{MASTER}/api/v1/nodes/n1/metrics?since=0")],
        )
        .ok()?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        Some(v["samples"].as_array()?.len())
    };
    wait_for("three samples", Duration::from_secs(20), || {
        (count_samples()? >= 3).then_some(())
    })?;
    drop(agent);
    let before = count_samples().unwrap();
    let show = master.cli_json(&["node", "show", "n1"])?;
    assert_eq!(show["events"][0]["event"], "nfs-mount-failed", "{show}");
    assert!(show["samples"].as_array().unwrap().len() >= 3);

    // kill -9 and start again: the history is still there.
    master.stop();
    master.start(&server)?;
    assert_eq!(count_samples(), Some(before));
    let text = String::from_utf8(master.cli(&["node", "list"])?.stdout)?;
    assert!(text.contains("cpu ") && text.contains("load "), "{text}");
    Ok(())
}
