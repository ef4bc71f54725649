//! `clustermaker serve` end to end, without VMs: a master namespace and a client namespace on a
//! veth link; busybox udhcpc, tftp-hpa and curl as the clients; the CLI reads what the master saw.

use std::time::Duration;

use anyhow::Result;
use cm_tests::master::Master;
use cm_tests::{require_program, require_root, veth, wait_for, Netns};

struct Lab {
    server: Netns,
    client: Netns,
    server_if: String,
    client_if: String,
}

fn lab() -> Result<Lab> {
    let server = Netns::new("cmss")?;
    let client = Netns::new("cmsc")?;
    let (server_if, client_if) = veth(&server, &client)?;
    server.addr(&server_if, "10.98.0.1/24")?;
    client.ip(&["link", "set", &client_if, "up"])?;
    Ok(Lab {
        server,
        client,
        server_if,
        client_if,
    })
}

fn mac_of(ns: &Netns, dev: &str) -> String {
    let out = ns
        .run("cat", &[&format!("/sys/class/net/{dev}/address")])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A udhcpc script that configures the address and records the lease's variables.
fn udhcpc_script(dir: &std::path::Path) -> std::path::PathBuf {
    let script = dir.join("udhcpc.sh");
    let env = dir.join("lease.env");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n bound|renew)\n  ip addr flush dev $interface\n  ip addr add $ip/$mask dev $interface\n  env > {env}.tmp && mv {env}.tmp {env}\n  ;;\nesac\nexit 0\n",
            env = env.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

/// One DHCP exchange with busybox udhcpc posing as a PXE client of architecture `arch`
/// (option 93 and a PXEClient vendor class), also asking for the MTU.
fn pxe_dhcp(lab: &Lab, script: &std::path::Path, arch: u16) -> Result<()> {
    let arch_option = format!("0x5d:{arch:04x}");
    let vendor = format!("PXEClient:Arch:{arch:05}:UNDI:002001");
    let script = script.to_str().unwrap();
    let args = [
        "-f",
        "-q",
        "-n",
        "-i",
        &lab.client_if,
        "-t",
        "5",
        "-T",
        "1",
        "-s",
        script,
        "-O",
        "mtu",
        "-x",
        &arch_option,
        "-V",
        &vendor,
    ];
    lab.client.run("udhcpc", &args)?;
    Ok(())
}

fn lease_var(dir: &std::path::Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("lease.env")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_string))
}

fn config(lab: &Lab) -> String {
    format!(
        "[network]\ninterface = \"{}\"\naddress = \"10.98.0.1\"\n[boot]\nipxe_dir = \"/usr/lib/ipxe\"\n\
         [[dhcp.subnets]]\ncidr = \"10.98.0.0/24\"\npools = [{{start = \"10.98.0.100\", end = \"10.98.0.120\"}}]\n\
         router = \"10.98.0.254\"\ndns = [\"10.98.0.1\"]\ndomain = \"lab.test\"\nmtu = 1400\nlease_secs = 600\n",
        lab.server_if
    )
}

#[test]
fn a_registered_node_gets_its_address_and_name_and_every_stage_is_tracked() -> Result<()> {
    if !require_root("serve stages")
        || !require_program("serve stages", "udhcpc")
        || !require_program("serve stages", "tftp")
    {
        return Ok(());
    }
    let lab = lab()?;
    let boot = tempdir_with_image()?;
    let mut master = Master::prepare(&config(&lab), Some(boot.path()), "http://10.98.0.1:8080")?;
    let mac = mac_of(&lab.client, &lab.client_if);
    master.cli(&["node", "add", "web1", "--mac", &mac, "--ip", "10.98.0.42"])?;
    master.start(&lab.server)?;

    let work = master.dir.path().to_path_buf();
    let script = udhcpc_script(&work);
    pxe_dhcp(&lab, &script, 0)?;
    assert_eq!(lease_var(&work, "ip").as_deref(), Some("10.98.0.42"));
    assert_eq!(lease_var(&work, "hostname").as_deref(), Some("web1"));
    assert_eq!(lease_var(&work, "router").as_deref(), Some("10.98.0.254"));
    assert_eq!(lease_var(&work, "domain").as_deref(), Some("lab.test"));
    assert_eq!(lease_var(&work, "mtu").as_deref(), Some("1400"));
    assert_eq!(
        lease_var(&work, "boot_file").as_deref(),
        Some("undionly.kpxe")
    );

    // The first-stage loader over TFTP, the script and the image over HTTP (with Range).
    fetch_loader_over_tftp(&lab, &work)?;
    let script_url = format!("http://10.98.0.1:8080/boot/{}.ipxe", mac.replace(':', "-"));
    let text = String::from_utf8(lab.client.run("curl", &["-sf", &script_url])?.stdout)?;
    assert!(
        text.starts_with("#!ipxe") && text.contains("cm.node=web1"),
        "{text}"
    );
    let kernel = work.join("vmlinuz");
    lab.client.run(
        "curl",
        &[
            "-sf",
            "-o",
            kernel.to_str().unwrap(),
            "http://10.98.0.1:8080/images/default/vmlinuz",
        ],
    )?;
    assert_eq!(
        std::fs::read(&kernel)?,
        std::fs::read(boot.path().join("vmlinuz"))?
    );
    let part = lab
        .client
        .run(
            "curl",
            &[
                "-sf",
                "-r",
                "10-19",
                "http://10.98.0.1:8080/images/default/initramfs.img",
            ],
        )?
        .stdout;
    assert_eq!(
        part,
        std::fs::read(boot.path().join("initramfs.img"))?[10..20].to_vec()
    );
    lab.client.run(
        "curl",
        &[
            "-sf",
            "-o",
            "/dev/null",
            "http://10.98.0.1:8080/images/default/initramfs.img",
        ],
    )?;
    // The node agent reports online.
    lab.client.run(
        cm_tests::clustermaker_bin().to_str().unwrap(),
        &["agent", "online", "--master", "http://10.98.0.1:8080"],
    )?;

    let stages = wait_for("all stages in node list", Duration::from_secs(10), || {
        let list = master.cli_json(&["node", "list"]).ok()?;
        let node = list
            .as_array()?
            .iter()
            .find(|n| n["name"] == "web1")?
            .clone();
        (node["stage"] == "online" && node["stages"].as_object()?.len() == 7).then_some(node)
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", master.log_text()))?;
    assert_eq!(stages["ip"], "10.98.0.42");
    let order = [
        "offered",
        "bound",
        "boot-file-sent",
        "script-sent",
        "kernel-sent",
        "initrd-sent",
        "online",
    ];
    let times: Vec<u64> = order
        .iter()
        .map(|s| stages["stages"][s]["at_ms"].as_u64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "stages out of order: {stages}"
    );
    // The log tells the same story.
    let log = master.log_text();
    for stage in order {
        assert!(
            log.contains(&format!("stage={stage}")),
            "log lacks stage {stage}"
        );
    }
    Ok(())
}

#[test]
fn an_unknown_pxe_client_is_discovered_and_node_add_gives_it_its_reservation() -> Result<()> {
    if !require_root("discovery") || !require_program("discovery", "udhcpc") {
        return Ok(());
    }
    let lab = lab()?;
    let mut master = Master::prepare(&config(&lab), None, "http://10.98.0.1:8080")?;
    master.start(&lab.server)?;
    let mac = mac_of(&lab.client, &lab.client_if);
    let work = master.dir.path().to_path_buf();
    let script = udhcpc_script(&work);
    pxe_dhcp(&lab, &script, 7)?;
    let pool_ip = lease_var(&work, "ip").unwrap();
    assert!(pool_ip.starts_with("10.98.0.1"), "{pool_ip}");
    assert_eq!(lease_var(&work, "boot_file").as_deref(), Some("ipxe.efi"));
    let found = wait_for(
        "the client in node discovered",
        Duration::from_secs(10),
        || {
            let d = master.cli_json(&["node", "discovered"]).ok()?;
            d.as_array()?
                .iter()
                .find(|x| x["mac"] == mac.as_str())
                .cloned()
        },
    )?;
    assert_eq!(found["arch"], "efi-bc");
    assert_eq!(found["vendor_class"], "PXEClient:Arch:00007:UNDI:002001");

    // Duplicates are refused with a one-line reason.
    master.cli(&["node", "add", "db1", "--mac", &mac, "--ip", "10.98.0.77"])?;
    let dup = std::process::Command::new(cm_tests::clustermaker_bin())
        .args([
            "--config",
            master.config.to_str().unwrap(),
            "node",
            "add",
            "db2",
            "--mac",
            &mac,
        ])
        .output()?;
    assert!(!dup.status.success());
    let err = String::from_utf8_lossy(&dup.stderr);
    assert!(
        err.contains("belongs to node `db1`") && err.lines().count() == 1,
        "{err}"
    );

    // An address the DHCP server does not serve is refused too.
    let outside = std::process::Command::new(cm_tests::clustermaker_bin())
        .args([
            "--config",
            master.config.to_str().unwrap(),
            "node",
            "add",
            "db3",
            "--mac",
            "52:54:00:99:99:99",
            "--ip",
            "10.97.0.5",
        ])
        .output()?;
    assert!(!outside.status.success());
    assert!(String::from_utf8_lossy(&outside.stderr).contains("outside the subnets"));

    // Its next boot: the reserved address and its name.
    wait_for(
        "the master to drop it from discovered",
        Duration::from_secs(10),
        || {
            let d = master.cli_json(&["node", "discovered"]).ok()?;
            d.as_array()?
                .iter()
                .all(|x| x["mac"] != mac.as_str())
                .then_some(())
        },
    )?;
    pxe_dhcp(&lab, &script, 7)?;
    assert_eq!(lease_var(&work, "ip").as_deref(), Some("10.98.0.77"));
    assert_eq!(lease_var(&work, "hostname").as_deref(), Some("db1"));
    Ok(())
}

#[test]
fn a_bad_configuration_is_refused_with_file_key_and_reason() -> Result<()> {
    let dir = cm_tests::master::tempfile_dir::TempDir::new("cmbad")?;
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[dhcp]\nlease_secs = \"long\"\n")?;
    let out = std::process::Command::new(cm_tests::clustermaker_bin())
        .args(["--config", file.to_str().unwrap(), "serve"])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(file.to_str().unwrap())
            && err.contains("dhcp.lease_secs")
            && err.contains("line 2"),
        "{err}"
    );
    Ok(())
}

/// Fetches undionly.kpxe from the master with tftp-hpa and checks it arrived intact.
fn fetch_loader_over_tftp(lab: &Lab, dir: &std::path::Path) -> Result<()> {
    let out = dir.join("undionly.kpxe");
    let args = [
        "10.98.0.1",
        "-m",
        "binary",
        "-c",
        "get",
        "undionly.kpxe",
        out.to_str().unwrap(),
    ];
    lab.client.run("tftp", &args)?;
    assert_eq!(
        std::fs::read(&out)?,
        std::fs::read("/usr/lib/ipxe/undionly.kpxe")?
    );
    Ok(())
}

/// A fake image: a kernel-sized file and an initramfs-sized one.
fn tempdir_with_image() -> Result<cm_tests::master::tempfile_dir::TempDir> {
    let dir = cm_tests::master::tempfile_dir::TempDir::new("cmimg")?;
    let mut data = vec![0u8; 3 << 20];
    let mut x: u32 = 0x1234_5678;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    std::fs::write(dir.path().join("vmlinuz"), &data)?;
    std::fs::write(dir.path().join("initramfs.img"), &data[..1 << 20])?;
    Ok(dir)
}

#[test]
fn with_dhcp_off_the_other_services_keep_serving() -> Result<()> {
    if !require_root("dhcp off") || !require_program("dhcp off", "tftp") {
        return Ok(());
    }
    let lab = lab()?;
    let body = format!(
        "[network]\ninterface = \"{}\"\naddress = \"10.98.0.1\"\n[dhcp]\nmode = \"off\"\n",
        lab.server_if
    );
    let mut master = Master::prepare(&body, None, "http://10.98.0.1:8080")?;
    master.start(&lab.server)?;
    lab.client.addr(&lab.client_if, "10.98.0.9/24")?;
    // Served after the DHCP task has long returned.
    std::thread::sleep(Duration::from_millis(500));
    fetch_loader_over_tftp(&lab, master.dir.path())?;
    Ok(())
}
