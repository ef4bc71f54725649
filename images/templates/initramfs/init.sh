#!/bin/sh
# clustermaker node /init: runs as PID 1 from the initramfs built by `cargo xtask build-image`.
#
# Stages (each printed on the console as `clustermaker-init: ...`, which tests and the demo
# wait for): mount the kernel filesystems, load the modules listed in /etc/modules-load.order
# (absolute paths, dependencies first), bring up the network with DHCP on the boot interface, report this node
# online to the master named by `cm.master=URL` on the kernel command line, then keep a shell
# on the console.
#
# PID 1 must never exit (the kernel panics), so every failure below is logged and skipped.

export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export HOME=/root

log() { echo "clustermaker-init: $*"; }

mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
# The kernel does not auto-mount devtmpfs over an initramfs; /dev/console and /dev/null in the
# archive keep stdout working until this mount.
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
mkdir -p /dev/pts /run /tmp /var/run
mount -t devpts -o nosuid,noexec,gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
mount -t tmpfs -o nosuid,nodev tmpfs /tmp

KVER=$(uname -r)
log "starting kernel=$KVER uptime=$(cut -d' ' -f1 /proc/uptime)s"

# --- kernel command line -------------------------------------------------------------------
CM_MASTER=
CM_MAC=
CM_NODE=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        cm.master=*) CM_MASTER=${arg#cm.master=} ;;
        cm.mac=*) CM_MAC=${arg#cm.mac=} ;;
        cm.node=*) CM_NODE=${arg#cm.node=} ;;
        # pxelinux style: BOOTIF=01-aa-bb-cc-dd-ee-ff (01 = Ethernet hardware type).
        BOOTIF=*) [ -z "$CM_MAC" ] && CM_MAC=$(echo "${arg#BOOTIF=}" | cut -c4- | tr '-' ':') ;;
    esac
done
CM_MAC=$(echo "$CM_MAC" | tr 'A-F' 'a-f')
# The node's name as the master knows it (empty for a node not yet added).
[ -n "$CM_NODE" ] && hostname "$CM_NODE"

# --- modules -------------------------------------------------------------------------------
log "loading modules"
loaded=0
failed=0
if [ -f /etc/modules-load.order ]; then
    while read -r ko; do
        case "$ko" in ''|'#'*) continue ;; esac
        name=$(basename "$ko" .ko)
        # Already there (built in, or loaded earlier): nothing to do.
        if [ -d "/sys/module/$(echo "$name" | tr '-' '_')" ]; then
            continue
        fi
        if out=$(insmod "$ko" 2>&1); then
            loaded=$((loaded + 1))
        else
            failed=$((failed + 1))
            log "insmod $name failed: $out"
        fi
    done < /etc/modules-load.order
fi
log "modules loaded=$loaded failed=$failed"

# --- network -------------------------------------------------------------------------------
ip link set lo up

# Ethernet interfaces (type 1), in name order; wait a little for drivers to register them.
ether_ifaces() {
    for d in /sys/class/net/*; do
        [ "$(cat "$d/type" 2>/dev/null)" = 1 ] && echo "${d##*/}"
    done
}
i=0
while [ -z "$(ether_ifaces)" ] && [ $i -lt 50 ]; do
    sleep 0.1
    i=$((i + 1))
done
IFACES=$(ether_ifaces)
[ -n "$IFACES" ] || log "no ethernet interface found (missing NIC driver module?)"
for ifc in $IFACES; do
    ip link set "$ifc" up
done

# The boot interface: the one whose MAC the boot loader passed, else the first to get a lease.
BOOT_IFACE=
if [ -n "$CM_MAC" ]; then
    for ifc in $IFACES; do
        [ "$(cat "/sys/class/net/$ifc/address")" = "$CM_MAC" ] && BOOT_IFACE=$ifc
    done
    [ -n "$BOOT_IFACE" ] || log "no interface has the boot MAC $CM_MAC; trying all"
fi

# udhcpc runs /etc/udhcpc.script, which configures the address and writes /run/cm-lease.
dhcp() {
    udhcpc -i "$1" -s /etc/udhcpc.script -q -f -n -t 5 -T 2 -A 1 \
        -V clustermaker-node 2>&1 | sed 's/^/clustermaker-init:   /'
    [ -f /run/cm-lease ]
}
leased=
attempt=1
while [ -z "$leased" ] && [ $attempt -le 5 ]; do
    for ifc in ${BOOT_IFACE:-$IFACES}; do
        if dhcp "$ifc"; then
            leased=$ifc
            break
        fi
    done
    attempt=$((attempt + 1))
done

if [ -z "$leased" ]; then
    log "network failed: no DHCP lease on ${BOOT_IFACE:-$IFACES}"
else
    . /run/cm-lease
    MAC=$(cat "/sys/class/net/$leased/address")
    log "network up ip=$CM_IP iface=$leased mac=$MAC router=${CM_ROUTER:-none} server=${CM_SERVER:-none}"

    # --- report online ---------------------------------------------------------------------
    if [ -z "$CM_MASTER" ]; then
        log "no cm.master=URL on the kernel command line: not reporting"
    else
        # Prefer the agent in the clustermaker binary; busybox wget posts the same JSON if the
        # binary is missing, fails, or does not have `agent online` yet.
        have_agent=
        if command -v clustermaker >/dev/null 2>&1 &&
            clustermaker agent online --help 2>&1 | grep -q -- '--master'; then
            have_agent=1
        fi
        reported=
        if [ -n "$have_agent" ]; then
            # The agent retries by itself (one second apart).
            if clustermaker agent online --master "$CM_MASTER" --interface "$leased" --attempts 5; then
                reported="clustermaker agent"
            else
                log "clustermaker agent online failed; falling back to wget"
            fi
        fi
        attempt=1
        while [ -z "$reported" ] && [ $attempt -le 5 ]; do
            up=$(cut -d. -f1 /proc/uptime)
            body="{\"mac\":\"$MAC\",\"ip\":\"$CM_IP\",\"kernel\":\"$KVER\",\"uptime_secs\":$up,\"hostname\":\"$(hostname)\"}"
            if wget -q -O /run/cm-online-reply -T 5 \
                --header 'Content-Type: application/json' \
                --post-data "$body" "$CM_MASTER/api/v1/nodes/online"; then
                reported="wget fallback"
            else
                log "wget POST to $CM_MASTER failed (attempt $attempt)"
                sleep 2
            fi
            attempt=$((attempt + 1))
        done
        if [ -n "$reported" ]; then
            log "reported online to $CM_MASTER via $reported"
        else
            log "could not report online to $CM_MASTER"
        fi
    fi
fi

log "online"

# Keep a shell on the console for as long as the node runs; respawn it when it exits.
while true; do
    setsid cttyhack sh
    sleep 1
done
