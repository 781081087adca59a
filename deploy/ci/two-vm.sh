#!/usr/bin/env bash
# Two QEMU guests with a soft-dirty kernel, and a Ferry migration from one to the other.
#
#   bash deploy/ci/two-vm.sh run       build (cached) + boot + scenario + collect + teardown, one command
#   bash deploy/ci/two-vm.sh build     only build/refresh the cached guest images
#
# Guests: Debian bookworm's kernel (linux-image-6.1, CONFIG_MEM_SOFT_DIRTY=y) booted directly as an ELF vmlinux
# (PVH), and an initramfs made of this host's binaries: busybox-static, node, bash, util-linux unshare/setsid,
# CRIU from the provisioned prefix (it carries its own glibc), libxxhash for Ferry's addon. Ferry itself (dist/,
# production node_modules, the addon, the memtest workload) travels as a tarball on a read-only 9p share and is
# unpacked to /opt/ferry on both guests: CRIU restores by path, so paths match on both sides.
# Network: a QEMU stream netdev over a unix socket between the two QEMU processes, addresses 10.79.0.1/.2. No
# host network device, no port, no user-mode NIC. The agents speak mutual TLS: a throwaway CA and one certificate
# per guest are made here with `ferry certs` (trust domain vm.ferry), each guest gets only its own key (in its
# own mailbox), installed at /etc/ferry/tls, the agents' default.
# Control: a 9p "mailbox" per guest; the guest runs req/ID.sh and writes out/ID.{out,err,rc}; a virtio-serial
# port (a host FIFO) wakes it, so an idle guest costs no host CPU.
#
# Knobs (environment): FERRY_VM_CACHE (/var/cache/ferry/two-vm), FERRY_VM_RESULTS (build/two-vm-results/<time>),
# FERRY_VM_KERNEL_DEB (a linux-image-6.1.*-amd64 .deb; default: apt-get download), FERRY_VM_ACCEL (auto|kvm|tcg),
# FERRY_VM_MEM (MiB, 1536), FERRY_VM_MIB (workload MiB, 64), FERRY_VM_DIRTY (workload MiB/s, 4),
# FERRY_VM_TRACKERS ("soft-dirty hash"), FERRY_VM_BOOT_TIMEOUT (s, 180), FERRY_VM_STEP_TIMEOUT (s, 300).
# Needs root. Every wait is bounded; the EXIT trap stops both QEMU processes and removes the run directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SELF=$ROOT/deploy/ci/two-vm.sh
CACHE=${FERRY_VM_CACHE:-/var/cache/ferry/two-vm}
CRIU_PREFIX=${FERRY_VM_CRIU_PREFIX:-/var/cache/ferry/criu-forky}
MEM=${FERRY_VM_MEM:-1536}
BOOT_TIMEOUT=${FERRY_VM_BOOT_TIMEOUT:-180}
STEP_TIMEOUT=${FERRY_VM_STEP_TIMEOUT:-300}
WORK_MIB=${FERRY_VM_MIB:-64}
WORK_DIRTY=${FERRY_VM_DIRTY:-4}
TRACKERS=${FERRY_VM_TRACKERS:-soft-dirty hash}
IP_A=10.79.0.1 IP_B=10.79.0.2
MODULES="virtio_pci virtio_net virtio_console 9pnet_virtio 9p nfnetlink nf_tables unix_diag inet_diag tcp_diag udp_diag netlink_diag af_packet_diag"
# Guest paths shared by both sides (CRIU reopens files by path after the move).
G_FERRY=/opt/ferry G_STATE=/var/lib/ferry-vm

T_START=$(date +%s.%N)
log() { printf '[two-vm %6ss] %s\n' "$(awk -v a="$T_START" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
secs_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

# ------------------------------------------------------------------------------------------------ build
host_packages() {
  local want=()
  command -v qemu-system-x86_64 >/dev/null || want+=(qemu-system-x86)
  { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || want+=(busybox-static)
  command -v cpio >/dev/null || want+=(cpio)
  command -v xz >/dev/null || want+=(xz-utils)
  command -v modprobe >/dev/null && command -v depmod >/dev/null || want+=(kmod)
  if [ ${#want[@]} -gt 0 ]; then
    log "apt-get install ${want[*]}"
    timeout 900 apt-get install -y --no-install-recommends "${want[@]}" >/dev/null
  fi
  { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || die "/bin/busybox must be the static one (busybox-static)"
  [ -x /usr/bin/node ] || die "no /usr/bin/node on this host"
  [ -x "$CRIU_PREFIX/bin/criu" ] || die "no CRIU prefix at $CRIU_PREFIX (run scripts/provision-criu.sh first)"
}

kernel() {  # -> $CACHE/kernel/{KVER,vmlinux or vmlinuz,root/}
  local K=$CACHE/kernel
  [ -s "$K/KVER" ] && return 0
  rm -rf "$K"; mkdir -p "$K/dl"
  local deb=${FERRY_VM_KERNEL_DEB:-}
  if [ -z "$deb" ]; then
    local pkg
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1=="Depends:" && $2 ~ /^linux-image-6\.1\./ {print $2; exit}')
    if [ -z "$pkg" ]; then timeout 300 apt-get update >/dev/null; pkg=$(apt-cache depends linux-image-amd64 | awk '$1=="Depends:" && $2 ~ /^linux-image-6\.1\./ {print $2; exit}'); fi
    [ -n "$pkg" ] || die "cannot resolve a linux-image-6.1 package (set FERRY_VM_KERNEL_DEB)"
    log "kernel: apt-get download $pkg"
    chown _apt "$K/dl" 2>/dev/null || true
    (cd "$K/dl" && timeout 600 apt-get download "$pkg" >/dev/null)
    deb=$(ls "$K"/dl/linux-image-*.deb)
  fi
  dpkg-deb -x "$deb" "$K/root"
  # Kernels of merged-/usr releases (trixie on) keep their modules under usr/lib.
  if [ ! -d "$K/root/lib/modules" ] && [ -d "$K/root/usr/lib/modules" ]; then mkdir -p "$K/root/lib"; mv "$K/root/usr/lib/modules" "$K/root/lib/modules"; fi
  local kver; kver=$(ls "$K/root/lib/modules")
  grep -q '^CONFIG_MEM_SOFT_DIRTY=y' "$K/root/boot/config-$kver" || die "kernel $kver has no CONFIG_MEM_SOFT_DIRTY"
  depmod -b "$K/root" "$kver"
  # The bzImage decompresses itself with xz, ~5 s under TCG: boot the ELF inside it instead (PVH entry).
  local at
  at=$(LC_ALL=C grep -abo $'\xfd7zXZ\x00' "$K/root/boot/vmlinuz-$kver" | head -1 | cut -d: -f1 || true)
  if [ -n "$at" ]; then tail -c +$((at + 1)) "$K/root/boot/vmlinuz-$kver" | xz -dc --single-stream > "$K/vmlinux" 2>/dev/null || true; fi
  if ! head -c 4 "$K/vmlinux" 2>/dev/null | grep -q ELF; then rm -f "$K/vmlinux"; cp "$K/root/boot/vmlinuz-$kver" "$K/vmlinuz"; fi
  rm -rf "$K/dl"
  echo "$kver" > "$K/KVER"
}

add_binary() {  # add_binary STAGE FILE...: the file and its shared-library closure, at the same paths
  local S=$1 f lib; shift
  for f in "$@"; do
    mkdir -p "$S$(dirname "$f")"; cp -L "$f" "$S$f"
    for lib in $(ldd "$f" 2>/dev/null | awk '$2=="=>" && $3 ~ /^\// {print $3} $1 ~ /^\/.*ld-linux/ {print $1}'); do
      [ -e "$S$lib" ] || { mkdir -p "$S$(dirname "$lib")"; cp -L "$lib" "$S$lib"; }
    done
  done
}

guest_init() {  # the guest's /init (busybox sh)
  cat <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin HOME=/root
mkdir -p /proc /sys /dev /tmp /run /root /var/tmp /etc
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run; mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/mounts /etc/mtab
echo 0 > /proc/sys/kernel/printk
while read -r m; do insmod "$m" 2>/dev/null; done < /etc/modules.order
for kv in $(cat /proc/cmdline); do case $kv in ferry.name=*) NAME=${kv#*=};; ferry.ip=*) IP=${kv#*=};; esac; done
hostname "$NAME"; printf '127.0.0.1 localhost %s\n' "$NAME" > /etc/hosts
ip link set lo up
# The stream netdev has no offloads: per-packet cost dominates, so a large MTU is several times faster.
ip link set eth0 mtu 65000; ip addr add "$IP/24" dev eth0; ip link set eth0 up
mkdir -p /ctl /share
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none ctl /ctl || poweroff -f
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro share /share
mkdir -p /ctl/req /ctl/out
echo "$(cut -d' ' -f1 /proc/uptime)" > /ctl/ready.tmp && mv /ctl/ready.tmp /ctl/ready
PORT=/dev/null
for p in /sys/class/virtio-ports/*; do [ "$(cat "$p/name" 2>/dev/null)" = ferry.kick ] && PORT=/dev/${p##*/}; done
exec 3< "$PORT"
while :; do
  for f in /ctl/req/*.sh; do
    [ -e "$f" ] || continue
    id=${f##*/}; id=${id%.sh}
    mv "$f" "/ctl/out/$id.sh" || continue
    # Jobs get no inherited descriptor beyond 0-2: CRIU refuses to dump a task holding the kick port.
    ( setsid sh "/ctl/out/$id.sh" > "/ctl/out/$id.out" 2> "/ctl/out/$id.err" < /dev/null 3<&-
      echo $? > "/ctl/out/$id.rc.tmp"; mv "/ctl/out/$id.rc.tmp" "/ctl/out/$id.rc" ) 3<&- &
  done
  read -r -t 5 _ <&3 || sleep 0.2
done
INIT
}

initrd_key() {
  { cat "$CACHE/kernel/KVER"; guest_init; echo "$MODULES"
    for f in /usr/bin/node /bin/busybox /bin/bash /usr/bin/unshare /usr/bin/setsid "$(readlink -f /lib/x86_64-linux-gnu/libxxhash.so.0)" "$CRIU_PREFIX/root/usr/sbin/criu" "$CRIU_PREFIX/bin/criu"; do
      stat -Lc '%n %s %Y' "$f"
    done
  } | sha256sum | cut -c1-16
}

build() {
  local t0; t0=$(date +%s.%N)
  mkdir -p "$CACHE"
  host_packages
  kernel
  local key; key=$(initrd_key)
  if [ -s "$CACHE/initrd.img" ] && [ "$(cat "$CACHE/initrd.key" 2>/dev/null)" = "$key" ]; then
    log "build: cached (key $key)"; return 0
  fi
  local S=$CACHE/stage kver; kver=$(cat "$CACHE/kernel/KVER")
  rm -rf "$S"; mkdir -p "$S"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,proc,sys,dev,tmp,run,root,lib64}
  chmod 1777 "$S/tmp"
  cp /bin/busybox "$S/bin/busybox"
  add_binary "$S" /usr/bin/node /bin/bash /usr/bin/unshare /usr/bin/setsid /lib/x86_64-linux-gnu/libxxhash.so.0
  mkdir -p "$S$CRIU_PREFIX"; cp -a "$CRIU_PREFIX/." "$S$CRIU_PREFIX/"
  : > "$S/etc/modules.order"
  local K=$CACHE/kernel/root m
  for m in $MODULES; do modprobe -d "$K" -S "$kver" --show-depends "$m" | awk '$1=="insmod" {print $2}'; done |
    awk '!seen[$0]++' | while read -r m; do
      mkdir -p "$S$(dirname "${m#"$K"}")"; cp "$m" "$S${m#"$K"}"; echo "${m#"$K"}" >> "$S/etc/modules.order"
    done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n' > "$S/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$S/etc/group"
  guest_init > "$S/init"; chmod 755 "$S/init"
  (cd "$S" && find . -print0 | cpio --null -o -H newc --quiet) > "$CACHE/initrd.img.tmp"
  mv "$CACHE/initrd.img.tmp" "$CACHE/initrd.img"; echo "$key" > "$CACHE/initrd.key"; rm -rf "$S"
  log "build: initrd $(du -h "$CACHE/initrd.img" | cut -f1) for kernel $kver in $(secs_since "$t0") s"
}

# ------------------------------------------------------------------------------------------------ Ferry payload
payload() {  # RUN/share/ferry.tar: what /opt/ferry holds in the guests
  local R=$1
  (cd "$ROOT" && timeout 300 npx tsc -p tsconfig.build.json) || die "npm run build failed"
  [ -x "$ROOT/build/workloads/memtest" ] && [ "$ROOT/build/workloads/memtest" -nt "$ROOT/testbed/workloads/memtest.c" ] ||
    { mkdir -p "$ROOT/build/workloads"; gcc -O2 -pthread -o "$ROOT/build/workloads/memtest" "$ROOT/testbed/workloads/memtest.c"; }
  # The in-guest checks (fixture capture and the soft-dirty contract) compiled with their imports.
  local tsc=$R/tsconfig.vm.json
  printf '{"extends":"%s/tsconfig.json","compilerOptions":{"typeRoots":["%s/node_modules/@types"],"outDir":"%s/stage/vmjs","rootDir":"%s","noEmit":false,"sourceMap":false},"include":[],"files":["%s/test/vm/soft-dirty-in-vm.ts"]}\n' "$ROOT" "$ROOT" "$R" "$ROOT" "$ROOT" > "$tsc"
  (cd "$ROOT" && timeout 300 npx tsc -p "$tsc") || die "compiling test/vm/soft-dirty-in-vm.ts failed"
  gcc -O2 -static -o "$R/share/pagemap-capture" "$ROOT/test/vm/pagemap-capture.c" || die "gcc pagemap-capture.c failed"
  gcc -O2 -static -o "$R/share/tracker-target" "$ROOT/testbed/workloads/tracker-target.c" || die "gcc tracker-target.c failed"
  local deps; deps=$(cd "$ROOT" && npm ls --omit=dev --all --parseable 2>/dev/null | sed -n "s|^$ROOT/||p" | grep '^node_modules/')
  # shellcheck disable=SC2086
  tar -C "$ROOT" -cf "$R/share/ferry.tar" package.json bin dist proto scripts build/Release/ferry_native.node build/Release/ferry_pager build/workloads/memtest $deps
  tar -C "$R/stage" -rf "$R/share/ferry.tar" --transform 's|^vmjs|.vm|' vmjs
}

certs() {  # certs RUN: the CA (stays on this host) and each guest's certificate in that guest's mailbox
  local R=$1 n ip
  node "$ROOT/bin/ferry.js" certs init --dir "$R/pki" --trust-domain vm.ferry >/dev/null || die "ferry certs init failed"
  for n in a b; do
    ip=$IP_A; [ $n = b ] && ip=$IP_B
    node "$ROOT/bin/ferry.js" certs issue --dir "$R/pki" --host $n --ip $ip --out "$R/$n/ctl/tls" >/dev/null || die "ferry certs issue $n failed"
  done
}

# ------------------------------------------------------------------------------------------------ VMs
ACCEL=
accel() {
  case ${FERRY_VM_ACCEL:-auto} in
    kvm|tcg) ACCEL=$FERRY_VM_ACCEL ;;
    # /dev/kvm may exist and still fail when the vCPU is set up: start a real (paused) machine to know.
    *) if [ -w /dev/kvm ] && (echo quit | timeout 20 qemu-system-x86_64 -machine pc -accel kvm -cpu host -m 64 -display none -nodefaults -S -monitor stdio) >/dev/null 2>&1
       then ACCEL=kvm; else ACCEL=tcg; fi ;;
  esac
}

vm_start() {  # vm_start RUN NAME IP MAC server|client
  local R=$1 N=$2 D=$1/$2
  mkdir -p "$D/ctl"; mkfifo "$D/kick.in" "$D/kick.out"
  local img=$CACHE/kernel/vmlinux; [ -s "$img" ] || img=$CACHE/kernel/vmlinuz
  local cpu=max; [ "$ACCEL" = kvm ] && cpu=host
  qemu-system-x86_64 -name "ferry-two-vm-$N" -nodefaults -no-user-config -display none -vga none \
    -machine pc -accel "$ACCEL" -cpu "$cpu" -smp 1 -m "$MEM" \
    -kernel "$img" -initrd "$CACHE/initrd.img" \
    -append "console=ttyS0 quiet loglevel=1 panic=-1 mitigations=off ferry.name=$N ferry.ip=$3" \
    -serial "file:$D/console.log" -no-reboot \
    -netdev "stream,id=n0,server=$([ "$5" = server ] && echo on || echo off),addr.type=unix,addr.path=$R/net.sock" \
    -device "virtio-net-pci,netdev=n0,mac=$4,romfile=" \
    -virtfs "local,path=$D/ctl,mount_tag=ctl,security_model=none,id=ctl" \
    -virtfs "local,path=$R/share,mount_tag=share,security_model=none,readonly=on,id=share" \
    -chardev "pipe,id=kick,path=$D/kick" -device virtio-serial-pci -device "virtserialport,chardev=kick,name=ferry.kick" \
    -pidfile "$D/qemu.pid" -daemonize 2> "$D/qemu.err" || { cat "$D/qemu.err" >&2; die "qemu $N did not start"; }
}

vm_alive() { local pid; pid=$(cat "$1/$2/qemu.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null; }

vm_ready() {  # vm_ready RUN NAME: bounded wait for the guest's mailbox
  local end=$(( $(date +%s) + BOOT_TIMEOUT ))
  until [ -e "$1/$2/ctl/ready" ]; do
    vm_alive "$1" "$2" || { tail -20 "$1/$2/console.log" >&2; die "VM $2 died while booting"; }
    [ "$(date +%s)" -lt "$end" ] || { tail -20 "$1/$2/console.log" >&2; die "VM $2 not ready after $BOOT_TIMEOUT s"; }
    sleep 0.2
  done
}

vm_spawn() {  # vm_spawn RUN NAME SCRIPT -> job id on stdout (called in $(...): the id cannot come from a counter)
  local D=$1/$2/ctl id; id=j$(date +%s%N)$RANDOM
  vm_alive "$1" "$2" || die "VM $2 is not running"
  printf '%s\n' "$3" > "$D/req/.$id"; mv "$D/req/.$id" "$D/req/$id.sh"
  { echo >&9; } 9<>"$1/$2/kick.in" 2>/dev/null || true   # O_RDWR: never blocks, even if qemu is gone
  echo "$id"
}

vm_wait() {  # vm_wait RUN NAME ID TIMEOUT: prints the job's stdout (stderr to ours); its exit code, 124 timeout, 125 VM gone
  local D=$1/$2/ctl/out end=$(( $(date +%s) + $4 ))
  until [ -e "$D/$3.rc" ]; do
    vm_alive "$1" "$2" || { log "VM $2 is gone (console: $1/$2/console.log)"; return 125; }
    [ "$(date +%s)" -lt "$end" ] || { log "job $3 on $2 timed out after $4 s"; return 124; }
    sleep 0.1
  done
  cat "$D/$3.out"; cat "$D/$3.err" >&2
  return "$(cat "$D/$3.rc")"
}

vm_exec() { local id; id=$(vm_spawn "$1" "$2" "$4"); vm_wait "$1" "$2" "$id" "$3"; }   # vm_exec RUN NAME TIMEOUT SCRIPT

vm_stop_all() {  # SIGTERM both, bounded wait, then SIGKILL; only the pids we started, while they are our qemu
  local R=$1 n pid pids=()
  for n in a b; do
    pid=$(cat "$R/$n/qemu.pid" 2>/dev/null) || continue
    grep -q "ferry-two-vm-$n" "/proc/$pid/cmdline" 2>/dev/null && kill "$pid" 2>/dev/null && pids+=("$pid")
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null && grep -q ferry-two-vm- "/proc/$pid/cmdline" 2>/dev/null; then kill -9 "$pid"; fi
  done
}

# ------------------------------------------------------------------------------------------------ scenario
GUEST_ENV="export PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin FERRY_CRIU=$CRIU_PREFIX/bin/criu FERRY_STATE_DIR=$G_STATE/ferry FERRY_LOG_LEVEL=info"

unpack_ferry() {  # the same tree at the same path on both guests
  cat <<EOF
$GUEST_ENV
set -e
mkdir -p $G_FERRY $G_STATE/state $G_STATE/logs
tar -C $G_FERRY -xf /share/ferry.tar
printf '#!/bin/sh\nexec node $G_FERRY/bin/ferry.js "\$@"\n' > /usr/local/bin/ferry; chmod 755 /usr/local/bin/ferry
mkdir -p /etc/ferry/tls; chmod 700 /etc/ferry/tls; cp /ctl/tls/cert.pem /ctl/tls/key.pem /ctl/tls/ca.pem /etc/ferry/tls/; chmod 600 /etc/ferry/tls/key.pem
uname -r; node --version; \$FERRY_CRIU --version | head -1
EOF
}

migrate_script() {  # on A: start memtest with ferry run, migrate it, print the summary line last
  local tracker=$1 name=$2
  cat <<EOF
$GUEST_ENV
set -e
PID=\$(ferry run --name $name --log-dir $G_STATE/logs -- $G_FERRY/build/workloads/memtest --name $name --mib $WORK_MIB --dirty-mib-per-s $WORK_DIRTY --state-dir $G_STATE/state)
for i in \$(seq 600); do [ -s $G_STATE/state/$name.ready.json ] && break; sleep 0.1; done
[ -s $G_STATE/state/$name.ready.json ] || { echo "memtest did not get ready" >&2; exit 1; }
sleep 2
t0=\$(cut -d' ' -f1 /proc/uptime)
set +e
ferry migrate \$PID --to $IP_B:7070 --allow-peer spiffe://vm.ferry/ferry/b --tracker $tracker --json > /ctl/out/migrate-$tracker.jsonl
rc=\$?
echo "migrate rc=\$rc in \$(awk -v a=\$t0 -v b=\$(cut -d' ' -f1 /proc/uptime) 'BEGIN{print b-a}') s" >&2
cp -r /dev/shm/ferry/logs /ctl/out/source-criu-logs-$tracker 2>/dev/null
exit \$rc
EOF
}

verify_script() {  # on B: SIGUSR1 to the restored copy, wait for its verify report, then stop it
  local pid=$1 name=$2
  cat <<EOF
$GUEST_ENV
f=$G_STATE/state/$name.verify.json
rm -f \$f
kill -USR1 $pid || { echo "restored pid $pid is not running" >&2; exit 1; }
for i in \$(seq 600); do [ -s \$f ] && break; sleep 0.1; done
[ -s \$f ] || { echo "no verify report from $pid" >&2; exit 1; }
cat \$f
kill -KILL $pid 2>/dev/null; true
EOF
}

capture_script() {  # on A: real pagemap fixtures and the soft-dirty contract against this kernel
  cat <<EOF
$GUEST_ENV
set -e
mkdir -p /ctl/out/fixtures
/share/pagemap-capture /ctl/out/fixtures
ferry check --json > /ctl/out/check-a.json || true
cd $G_FERRY && node .vm/test/vm/soft-dirty-in-vm.js /ctl/out/soft-dirty-contract.json
EOF
}

run() {
  [ "$(id -u)" = 0 ] || die "needs root"
  local t_all t0 rc=0
  t_all=$(date +%s.%N)
  RESULTS=${FERRY_VM_RESULTS:-$ROOT/build/two-vm-results/$(date +%Y%m%d-%H%M%S)}
  mkdir -p "$RESULTS"; RESULTS=$(cd "$RESULTS" && pwd)
  t0=$(date +%s.%N); build; local build_s; build_s=$(secs_since "$t0")
  RUN=$(mktemp -d /tmp/ferry-two-vm.XXXXXX)
  trap 'collect_and_down' EXIT; trap 'exit 130' INT TERM
  mkdir -p "$RUN/share" "$RUN/stage"
  t0=$(date +%s.%N); payload "$RUN"; certs "$RUN"; local payload_s; payload_s=$(secs_since "$t0")
  accel
  t0=$(date +%s.%N)
  vm_start "$RUN" a $IP_A 52:54:00:79:00:01 server   # a listens on the netdev socket: it must start first
  vm_start "$RUN" b $IP_B 52:54:00:79:00:02 client
  vm_ready "$RUN" a; vm_ready "$RUN" b
  local boot_s; boot_s=$(secs_since "$t0"); log "both VMs ready ($ACCEL) in $boot_s s"
  t0=$(date +%s.%N)
  local ja jb
  ja=$(vm_spawn "$RUN" a "$(unpack_ferry)"); jb=$(vm_spawn "$RUN" b "$(unpack_ferry)")
  vm_wait "$RUN" a "$ja" 120 >&2 || die "unpacking Ferry on a failed"
  vm_wait "$RUN" b "$jb" 120 >&2 || die "unpacking Ferry on b failed"
  log "Ferry unpacked on both guests in $(secs_since "$t0") s"
  vm_spawn "$RUN" b "$GUEST_ENV
exec ferry dest-agent --listen $IP_B:7070 --allow-peer spiffe://vm.ferry/ferry/a --work-dir $G_STATE/dest" > "$RUN/dest.job"
  t0=$(date +%s.%N)
  vm_exec "$RUN" a "$STEP_TIMEOUT" "$(capture_script)" >&2 || rc=1
  log "fixtures + soft-dirty contract in the guest: rc=$rc in $(secs_since "$t0") s"
  local tracker n=0 summaries=()
  for tracker in $TRACKERS; do
    n=$((n + 1)); local name=mt$n t1 mrc=0
    t1=$(date +%s.%N)
    # CRIU reopens the task's stdout/stderr files by path: they must exist on B (ferry run names them NAME.out/.err).
    vm_exec "$RUN" b 30 "touch $G_STATE/logs/$name.out $G_STATE/logs/$name.err" >&2 || rc=1
    vm_exec "$RUN" a "$STEP_TIMEOUT" "$(migrate_script "$tracker" "$name")" >&2 || mrc=$?
    log "migrate --tracker $tracker: rc=$mrc in $(secs_since "$t1") s"
    local summary="$RUN/a/ctl/out/migrate-$tracker.jsonl"
    local restored; restored=$(node -e '
      const lines = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => JSON.parse(l));
      const s = lines.reverse().find((l) => l.restoredPid !== undefined || (l.summary && l.summary.restoredPid !== undefined));
      process.stdout.write(String(s ? (s.restoredPid ?? s.summary.restoredPid) : ""));' "$summary" 2>/dev/null || true)
    if [ "$mrc" != 0 ] || [ -z "$restored" ]; then rc=1; continue; fi
    if vm_exec "$RUN" b 120 "$(verify_script "$restored" "$name")" > "$RUN/b/ctl/out/verify-$tracker.json"; then
      node -e 'const v = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); if (v.bad_pages !== 0) process.exit(1)' "$RUN/b/ctl/out/verify-$tracker.json" || { log "restored copy ($tracker) has bad pages"; rc=1; }
    else rc=1; fi
    summaries+=("$tracker=$summary")
  done
  local exec_s; exec_s=$(secs_since "$t0")
  report "$RESULTS/report.json" "build=$build_s" "payload=$payload_s" "boot=$boot_s" "exec=$exec_s" "accel=$ACCEL" "${summaries[@]}" || rc=1
  TOTAL_S=$(secs_since "$t_all")
  return $rc
}

report() {  # report OUT key=value... tracker=summary.jsonl...: timings and pages read per round, as JSON and text
  node --input-type=module - "$@" <<'JS' >&2
import { readFileSync, writeFileSync } from 'node:fs';
const [out, ...args] = process.argv.slice(2);
const report = { times: {}, migrations: {} };
for (const a of args) {
  const [k, v = ''] = a.split('=');
  if (!v.endsWith('.jsonl')) { report.times[k] = v; continue; }
  const lines = readFileSync(v, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const s = lines.find((l) => l.kind === 'summary')?.summary;
  if (!s) { report.migrations[k] = { error: lines.at(-1) ?? 'no output' }; continue; }
  report.migrations[k] = {
    rounds: s.rounds.length,
    pagesReadPerRound: s.rounds.map((r) => r.bytesRead / 4096),
    pagesSentPerRound: s.rounds.map((r) => r.dirtyPages),
    presentPages: s.presentPages, finalDeltaPages: s.finalDeltaPages, finalDeltaTaskPages: s.finalDeltaTaskPages,
    downtimeMs: Math.round(s.downtimeMs), totalMs: Math.round(s.totalMs), decision: s.decision, dumpKind: s.dumpKind,
    restoreMode: s.restoreMode, fillMs: Math.round(s.fillMs ?? 0), replacedPages: s.replacedPages,
  };
}
writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
for (const [k, m] of Object.entries(report.migrations)) console.log(`${k}: ${JSON.stringify(m)}`);
// The point of soft-dirty: after round 0 a round reads only the pages written since the last one, never all.
const sd = report.migrations['soft-dirty'];
if (sd && !sd.error) {
  const later = sd.pagesReadPerRound.slice(1);
  const bad = later.filter((n) => n >= sd.presentPages);
  if (later.length === 0 || bad.length > 0) {
    console.log(`FAIL: soft-dirty rounds after round 0 must read fewer pages than the ${sd.presentPages} present: ${later.join(', ')}`);
    process.exit(1);
  }
  console.log(`soft-dirty read ${later.join(', ')} pages in rounds 1.., of ${sd.presentPages} present`);
}
JS
}

collect_and_down() {
  local rc=$?
  [ -n "${RUN:-}" ] && [ -d "$RUN" ] || exit $rc
  [ -n "${RESULTS:-}" ] || RESULTS=${FERRY_VM_RESULTS:-$ROOT/build/two-vm-results/last}
  mkdir -p "$RESULTS"
  # The dest agent's log and restore logs, while B still runs.
  if vm_alive "$RUN" b; then
    vm_exec "$RUN" b 30 "cp -r $G_STATE/dest/logs /ctl/out/dest-criu-logs 2>/dev/null; cp -r $G_STATE/logs /ctl/out/task-logs 2>/dev/null; true" >/dev/null 2>&1 || true
  fi
  local t0; t0=$(date +%s.%N)
  vm_stop_all "$RUN"
  for n in a b; do
    [ -d "$RUN/$n" ] || continue
    mkdir -p "$RESULTS/$n"; cp -r "$RUN/$n/ctl/out/." "$RESULTS/$n/" 2>/dev/null || true
    cp "$RUN/$n/console.log" "$RUN/$n/qemu.err" "$RESULTS/$n/" 2>/dev/null || true
  done
  # A run never edits the checkout: fresh pagemap captures stay in the results unless asked for.
  if [ -d "$RESULTS/a/fixtures" ] && [ "${FERRY_VM_UPDATE_FIXTURES:-}" = 1 ]; then
    mkdir -p "$ROOT/test/fixtures/soft-dirty"; cp "$RESULTS/a/fixtures/"* "$ROOT/test/fixtures/soft-dirty/"
  fi
  rm -rf "$RUN"
  log "teardown $(secs_since "$t0") s; results in $RESULTS; total ${TOTAL_S:-$(secs_since "$T_START")} s; rc=$rc"
  exit $rc
}

case ${1:-} in
  build) build ;;
  run) RESULTS=${FERRY_VM_RESULTS:-$ROOT/build/two-vm-results/$(date +%Y%m%d-%H%M%S)}; export FERRY_VM_RESULTS=$RESULTS; run ;;
  *) sed -n '2,22p' "$SELF"; exit 2 ;;
esac
