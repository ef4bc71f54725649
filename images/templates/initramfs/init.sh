#!/bin/sh
# clustermaker node /init: runs as PID 1 from the initramfs built by `cargo xtask build-image`.
#
# Stages (each printed on the console as `clustermaker-init: ...`, which tests and the demo
# wait for): mount the kernel filesystems, load the modules listed in /etc/modules-load.order
# (absolute paths, dependencies first), bring up the network with DHCP on the boot interface, report this node
# online to the master named by `cm.master=URL` on the kernel command line, then keep a shell
# on the console.
#
# With `cm.root=nfs:SERVER:/export/path` (and optionally `cm.nfsopts=`, `cm.init=`) the node
# boots into that root instead: the image is mounted read-only over NFS (retried with backoff,
# every failure printed and reported to the master), a tmpfs overlay goes on top, the node's
# overlay from the master is unpacked into it, the agent and its start hook for the image's
# init (systemd, SysV or busybox) are installed, and switch_root runs the image's init. When
# the root cannot be mounted, the node says why and stays here with the rescue shell.
#
# PID 1 must never exit (the kernel panics), so every failure below is logged and skipped.

export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export HOME=/root

log() { echo "clustermaker-init: $*"; }

# --- NFS root: functions (the tests source this file with CM_INIT_LIB=1 to run them) --------
LOWER=/run/cm/lower
RW=/run/cm/rw
NEWROOT=/newroot
NFS_ATTEMPTS=10
# Seconds one mount attempt may take before it is killed and counted as failed (NFS waits are
# killable): a server that accepts the connection but never answers must not hang the boot.
NFS_MOUNT_TIMEOUT=45
# Our NFS server answers MOUNT on the NFS port: no portmapper round trip (design nfs-server.md
# §1.1). `addr=` is mandatory with busybox mount (it passes the options to the kernel as text).
NFS_OPTS="ro,vers=3,proto=tcp,port=2049,mountport=2049,mountproto=tcp,nolock,noacl,rsize=1048576,hard,timeo=100,retrans=3"
AGENT=/usr/local/sbin/clustermaker
AGENT_ARGS="agent run --config /etc/clustermaker/agent.toml"

# Runs "$@" for at most $1 seconds. Debian's static busybox 1.35 wget crashes (SIGSEGV) when
# given -T, so network commands are timed out from outside instead.
timed() {
    secs=$1
    shift
    "$@" &
    tpid=$!
    tt=0
    while kill -0 "$tpid" 2>/dev/null; do
        if [ $tt -ge $((secs * 5)) ]; then
            kill -9 "$tpid" 2>/dev/null
            wait "$tpid" 2>/dev/null
            echo "timed out after ${secs}s" >&2
            return 124
        fi
        sleep 0.2
        tt=$((tt + 1))
    done
    wait "$tpid"
}

# Reports a boot event to the master: one short try, never blocking the boot for long.
report_stage() {
    [ -n "$CM_MASTER" ] && [ -n "$MAC" ] || return 0
    detail=$(printf '%s' "$2" | tr -d '"\\' | tr '\n\t' '  ' | cut -c1-400)
    timed 3 wget -q -O /dev/null --header 'Content-Type: application/json' \
        --post-data "{\"mac\":\"$MAC\",\"stage\":\"$1\",\"detail\":\"$detail\"}" \
        "$CM_MASTER/api/v1/nodes/stage" >/dev/null 2>&1 || true
}

# Splits CM_ROOT (nfs:SERVER:/path) into NFS_SERVER and NFS_PATH.
parse_root() {
    case "$CM_ROOT" in
        nfs:*:/*) ;;
        *) return 1 ;;
    esac
    rest=${CM_ROOT#nfs:}
    NFS_SERVER=${rest%%:*}
    NFS_PATH=${rest#*:}
    # busybox mount needs the server as an address (addr=); there is no resolver here.
    case "$NFS_SERVER" in
        '' | *[!0-9.]*) return 1 ;;
    esac
    [ -n "$NFS_PATH" ]
}

# One mount attempt, killed after NFS_MOUNT_TIMEOUT seconds; the error text in $RW.err.
nfs_mount_once() {
    opts="$NFS_OPTS,addr=$NFS_SERVER${CM_NFSOPTS:+,$CM_NFSOPTS}"
    mount -t nfs -o "$opts" "$NFS_SERVER:$NFS_PATH" "$LOWER" >"$RW.err" 2>&1 &
    pid=$!
    ticks=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ $ticks -ge $((NFS_MOUNT_TIMEOUT * 5)) ]; then
            kill -9 "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
            echo "no answer within ${NFS_MOUNT_TIMEOUT}s" >"$RW.err"
            return 1
        fi
        ticks=$((ticks + 1))
        if [ $((ticks % 50)) -eq 0 ]; then
            log "nfs mount attempt $1 still waiting ($((ticks / 5))s)"
        fi
        sleep 0.2
    done
    wait "$pid"
}

# Mounts the NFS root at LOWER, retrying with backoff; prints and reports every failure.
nfs_mount() {
    attempt=1
    delay=1
    while :; do
        if nfs_mount_once $attempt; then
            log "nfs root mounted from $NFS_SERVER:$NFS_PATH (attempt $attempt)"
            report_stage nfs-mounted "$NFS_SERVER:$NFS_PATH attempt $attempt"
            return 0
        fi
        err=$(tail -n 3 "$RW.err" 2>/dev/null | tr '\n' ' ')
        log "nfs mount attempt $attempt failed: ${err:-unknown error}"
        report_stage nfs-mount-failed "attempt $attempt of $NFS_ATTEMPTS: $NFS_SERVER:$NFS_PATH: $err"
        if [ $attempt -ge $NFS_ATTEMPTS ]; then
            log "nfs root $NFS_SERVER:$NFS_PATH not mounted after $attempt attempts; dropping to the rescue shell"
            report_stage rescue-shell "nfs root not mounted after $attempt attempts: $err"
            return 1
        fi
        log "retrying the nfs mount in ${delay}s"
        sleep $delay
        attempt=$((attempt + 1))
        delay=$((delay * 2))
        [ $delay -gt 30 ] && delay=30
    done
}

# NFS reads ahead 128 KB by default (per backing device): 4 MB makes reading binaries and
# libraries over the network much faster. The device is the mount's major:minor.
set_readahead() {
    majmin=$(awk -v m="$1" '$5 == m { d = $3 } END { print d }' /proc/self/mountinfo)
    ra=/sys/class/bdi/$majmin/read_ahead_kb
    if [ -n "$majmin" ] && [ -w "$ra" ]; then
        echo 4096 >"$ra" && log "nfs read-ahead 4096 KB ($majmin)"
    fi
}

# Fetches the node's overlay from the master and unpacks it into root $1 (retried).
apply_overlay() {
    if [ -z "$CM_MASTER" ]; then
        log "no cm.master=URL: no node overlay"
        return 1
    fi
    url="$CM_MASTER/api/v1/nodes/$(echo "$MAC" | tr : -)/overlay.tar?iface=$leased"
    n=1
    delay=1
    while [ $n -le 5 ]; do
        if timed 20 wget -q -O "$RW.tar" "$url" 2>"$RW.err" &&
            tar -x -f "$RW.tar" -C "$1" 2>"$RW.err"; then
            count=$(tar -t -f "$RW.tar" | wc -l)
            rm -f "$RW.tar"
            log "overlay applied ($count files from $CM_MASTER)"
            report_stage overlay-applied "$count files"
            return 0
        fi
        err=$(tail -n 2 "$RW.err" 2>/dev/null | tr '\n' ' ')
        log "overlay fetch attempt $n failed: ${err:-unknown error}"
        report_stage overlay-failed "attempt $n: $err"
        sleep $delay
        n=$((n + 1))
        delay=$((delay * 2))
    done
    rm -f "$RW.tar"
    return 1
}

# Follows the symlinks of path $2 inside root $1 (absolute links are relative to that root).
resolve_in() {
    p=$2
    n=0
    while [ -L "$1$p" ] && [ $n -lt 20 ]; do
        t=$(readlink "$1$p")
        case "$t" in
            /*) p=$t ;;
            *) p=${p%/*}/$t ;;
        esac
        n=$((n + 1))
    done
    echo "$p"
}

# Which init root $1 runs as $2: systemd, busybox or sysv.
init_kind() {
    target=$(resolve_in "$1" "$2")
    case "$target" in
        *systemd*) echo systemd ;;
        *busybox*) echo busybox ;;
        *)
            # A busybox copied or hard-linked as init still says so inside.
            if grep -q 'BusyBox v' "$1$target" 2>/dev/null; then
                echo busybox
            else
                echo sysv
            fi
            ;;
    esac
}

# Puts the agent at $AGENT in root $1: the image's own when it is this version, else ours
# with the loader and libraries it was built with in a directory of its own, so it runs on
# any image (a busybox root has no glibc; an older glibc may be too old for it).
install_agent() {
    src=$(command -v clustermaker) || {
        log "no clustermaker in the initramfs: agent not installed"
        return 1
    }
    want=$("$src" --version 2>/dev/null | head -n 1)
    for p in /usr/local/sbin/clustermaker /usr/sbin/clustermaker /usr/bin/clustermaker; do
        if [ -x "$1$p" ] && [ -n "$want" ] &&
            [ "$(chroot "$1" "$p" --version 2>/dev/null | head -n 1)" = "$want" ]; then
            if [ "$p" != "$AGENT" ]; then
                mkdir -p "$1${AGENT%/*}"
                ln -sf "$p" "$1$AGENT"
            fi
            log "agent: the image's own $p ($want)"
            return 0
        fi
    done
    d=/usr/local/lib/clustermaker
    mkdir -p "$1$d" "$1${AGENT%/*}"
    cp "$src" "$1$d/clustermaker" || return 1
    ldso=
    for l in /lib64/ld-linux-*.so.* /lib/ld-linux*.so.* /lib/ld-musl-*.so.*; do
        [ -e "$l" ] && ldso=$l && break
    done
    rm -f "$1$AGENT"
    if [ -n "$ldso" ]; then
        cp -L "$ldso" "$1$d/ld.so"
        "$ldso" --list "$src" 2>/dev/null |
            awk '$2 == "=>" && $3 ~ /^\// { print $3 }' |
            while read -r lib; do cp -L "$lib" "$1$d/"; done
        printf '#!/bin/sh\nexec %s/ld.so --library-path %s %s/clustermaker "$@"\n' \
            "$d" "$d" "$d" >"$1$AGENT"
        chmod 755 "$1$AGENT"
    else
        ln -s "$d/clustermaker" "$1$AGENT"
    fi
    log "agent: installed $want at $AGENT"
}

# Makes the image's init ($2: systemd, sysv, busybox) start the agent in root $1.
install_hook() {
    case "$2" in
        systemd)
            unit=/etc/systemd/system/clustermaker-agent.service
            mkdir -p "$1/etc/systemd/system/multi-user.target.wants"
            if [ ! -f "$1$unit" ]; then
                printf '[Unit]\nDescription=clustermaker node agent\nAfter=network.target\n\n[Service]\nExecStart=%s %s\nRestart=always\nRestartSec=5\n\n[Install]\nWantedBy=multi-user.target\n' \
                    "$AGENT" "$AGENT_ARGS" >"$1$unit"
            fi
            ln -sf "$unit" "$1/etc/systemd/system/multi-user.target.wants/clustermaker-agent.service"
            ;;
        sysv | busybox)
            # A respawn line in inittab: started once the runlevel is entered, restarted if it
            # dies, and no dependency on insserv or rc ordering.
            inittab=$1/etc/inittab
            if [ "$2" = busybox ] && [ ! -f "$inittab" ]; then
                # busybox init's built-in defaults, which a new inittab would otherwise replace.
                printf '::sysinit:/etc/init.d/rcS\n::askfirst:-/bin/sh\n::ctrlaltdel:/sbin/reboot\n::shutdown:/bin/umount -a -r\n::restart:/sbin/init\n' >"$inittab"
            fi
            if ! grep -q "$AGENT" "$inittab" 2>/dev/null; then
                if [ "$2" = busybox ]; then
                    echo "::respawn:$AGENT $AGENT_ARGS" >>"$inittab"
                else
                    echo "cm:2345:respawn:$AGENT $AGENT_ARGS" >>"$inittab"
                fi
            fi
            ;;
    esac
}

# Mounts the root, applies the overlay and switches into the image's init. Returns only when
# something failed (said on the console and reported); the caller then keeps the shell.
nfs_boot() {
    if ! parse_root; then
        log "cm.root=$CM_ROOT is not nfs:IPv4-ADDRESS:/path; dropping to the rescue shell"
        report_stage rescue-shell "bad cm.root=$CM_ROOT"
        return 1
    fi
    mkdir -p "$LOWER" "$RW" "$NEWROOT"
    nfs_mount || return 1
    set_readahead "$LOWER"
    if ! mount -t tmpfs -o mode=0755 tmpfs "$RW" ||
        ! mkdir -p "$RW/upper" "$RW/work" ||
        ! out=$(mount -t overlay -o "lowerdir=$LOWER,upperdir=$RW/upper,workdir=$RW/work" overlay "$NEWROOT" 2>&1); then
        log "overlay mount failed: $out (is the overlay module loaded?); dropping to the rescue shell"
        report_stage overlay-failed "overlay mount: $out"
        return 1
    fi
    if ! apply_overlay "$NEWROOT"; then
        log "overlay not applied: booting with the image's own configuration"
        hostname >"$NEWROOT/etc/hostname" 2>/dev/null
    fi
    init=${CM_INIT:-/sbin/init}
    target=$(resolve_in "$NEWROOT" "$init")
    if [ ! -x "$NEWROOT$target" ]; then
        log "the image has no init at $init; dropping to the rescue shell"
        report_stage rescue-shell "no init at $init in $NFS_PATH"
        return 1
    fi
    kind=$(init_kind "$NEWROOT" "$init")
    if [ -n "$CM_MASTER" ] && install_agent "$NEWROOT"; then
        if [ ! -f "$NEWROOT/etc/clustermaker/agent.toml" ]; then
            mkdir -p "$NEWROOT/etc/clustermaker"
            printf 'master = "%s"\nnode = "%s"\nmac = "%s"\n' "$CM_MASTER" "$(hostname)" "$MAC" \
                >"$NEWROOT/etc/clustermaker/agent.toml"
        fi
        install_hook "$NEWROOT" "$kind"
    fi
    log "switching to $init ($kind)"
    report_stage switch-root "$init ($kind)"
    # The kernel filesystems and /run (which holds the NFS and tmpfs mounts under /run/cm)
    # move into the new root, as initramfs-tools does; a /run already mounted keeps systemd
    # from mounting an empty one over it.
    umount /tmp 2>/dev/null
    for m in /dev /proc /sys /run; do
        mkdir -p "$NEWROOT$m"
        mount --move "$m" "$NEWROOT$m" || echo "clustermaker-init: cannot move $m"
    done
    exec switch_root "$NEWROOT" "$init"
}

# Sourced by a test: the functions only.
[ "${CM_INIT_LIB:-}" = 1 ] && return 0

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
CM_ROOT=
CM_NFSOPTS=
CM_INIT=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        cm.master=*) CM_MASTER=${arg#cm.master=} ;;
        cm.mac=*) CM_MAC=${arg#cm.mac=} ;;
        cm.node=*) CM_NODE=${arg#cm.node=} ;;
        cm.root=*) CM_ROOT=${arg#cm.root=} ;;
        cm.nfsopts=*) CM_NFSOPTS=${arg#cm.nfsopts=} ;;
        cm.init=*) CM_INIT=${arg#cm.init=} ;;
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
            if timed 5 wget -q -O /run/cm-online-reply \
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

# --- NFS root ------------------------------------------------------------------------------
if [ -n "$CM_ROOT" ]; then
    if [ -z "$leased" ]; then
        log "cm.root=$CM_ROOT needs the network, which failed; dropping to the rescue shell"
    else
        # Returns only on failure (it ends with exec switch_root).
        nfs_boot
    fi
    log "rescue shell: this node stays in its initramfs (see the messages above)"
fi

# Keep a shell on the console for as long as the node runs; respawn it when it exits.
while true; do
    setsid cttyhack sh
    sleep 1
done
