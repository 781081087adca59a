#!/usr/bin/env bash
# The demo: two "hosts" on this machine (network namespaces joined by a veth pair, 10.77.250.1 and .2),
# a dest agent on one, a memory-verifying workload on the other (256 MiB, rewriting 16 MiB/s), one
# `ferry migrate` over mutual TLS (a throwaway CA and a certificate per host, made with `ferry certs`), then
# the restored copy checks every byte of its memory. Everything is removed at the end.
# Options: --mib N (default 256), --dirty MIB_PER_S (default 16), --rate RATE (shape the link, e.g. 1gbit).
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=256 DIRTY=16 RATE=
while [ $# -gt 0 ]; do
  case $1 in
    --mib) MIB=$2; shift 2 ;;
    --dirty) DIRTY=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    *) echo "usage: npm run demo -- [--mib N] [--dirty MIB_PER_S] [--rate RATE]" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh
mkdir -p build/workloads
gcc -O2 -pthread -o build/workloads/memtest testbed/workloads/memtest.c

SRC=ferry-demo-src DST=ferry-demo-dst
STATE=$(mktemp -d /tmp/ferry-demo.XXXXXX)
DEST_PID= RESTORED=
cleanup() {
  status=$?
  if [ $status -ne 0 ]; then
    rm -rf /tmp/ferry-demo-failed; cp -r "$STATE" /tmp/ferry-demo-failed 2>/dev/null || true; rm -rf /tmp/ferry-demo-failed/pki
    echo "demo FAILED; logs kept in /tmp/ferry-demo-failed (source.log, dest.log)" >&2
  fi
  [ -n "$RESTORED" ] && kill -9 "$RESTORED" 2>/dev/null || true
  [ -n "$DEST_PID" ] && kill "$DEST_PID" 2>/dev/null && wait "$DEST_PID" 2>/dev/null || true
  pkill -9 -f "memtest --name demo-$$" 2>/dev/null || true
  ip netns del $SRC 2>/dev/null || true
  ip netns del $DST 2>/dev/null || true
  rm -rf "$STATE"
}
trap cleanup EXIT

ip netns del $SRC 2>/dev/null || true; ip netns del $DST 2>/dev/null || true
ip netns add $SRC; ip netns add $DST
ip link add fdemo-src type veth peer name fdemo-dst
ip link set fdemo-src netns $SRC; ip link set fdemo-dst netns $DST
ip -n $SRC addr add 10.77.250.1/24 dev fdemo-src; ip -n $DST addr add 10.77.250.2/24 dev fdemo-dst
for ns in $SRC $DST; do ip -n $ns link set lo up; done
ip -n $SRC link set fdemo-src up; ip -n $DST link set fdemo-dst up
[ -n "$RATE" ] && ip netns exec $SRC tc qdisc add dev fdemo-src root tbf rate "$RATE" burst 1mb latency 50ms
in_src() { nsenter --net=/run/netns/$SRC "$@"; }
in_dst() { nsenter --net=/run/netns/$DST "$@"; }

echo "== certificates: a CA for the trust domain demo.ferry, one certificate each for host-a and host-b"
PKI=$STATE/pki
node bin/ferry.js certs init --dir "$PKI" --trust-domain demo.ferry >/dev/null
node bin/ferry.js certs issue --dir "$PKI" --host host-a --ip 10.77.250.1 >/dev/null
node bin/ferry.js certs issue --dir "$PKI" --host host-b --ip 10.77.250.2 >/dev/null
tls_of() { echo "--tls-cert $PKI/hosts/$1/cert.pem --tls-key $PKI/hosts/$1/key.pem --tls-ca $PKI/hosts/$1/ca.pem"; }

echo "== dest agent on 10.77.250.2:7070 (host B), accepting host-a only"
# nsenter execs node, so $! is the agent itself (a shell function in the background would be a subshell).
# shellcheck disable=SC2046
nsenter --net=/run/netns/$DST node bin/ferry.js dest-agent --listen 10.77.250.2:7070 $(tls_of host-b) \
  --allow-peer spiffe://demo.ferry/ferry/host-a --work-dir "$STATE/dest" --metrics 10.77.250.2:9470 \
  >"$STATE/dest.out" 2>"$STATE/dest.log" &
DEST_PID=$!
for _ in $(seq 100); do grep -q listening "$STATE/dest.out" 2>/dev/null && break; sleep 0.1; done
grep -q listening "$STATE/dest.out" || { cat "$STATE/dest.log"; exit 1; }

NAME=demo-$$
echo "== workload on host A: $MIB MiB, rewriting $DIRTY MiB/s"
PID=$(in_src node bin/ferry.js run --name "$NAME" --log-dir "$STATE/logs" -- \
  "$PWD/build/workloads/memtest" --name "$NAME" --mib "$MIB" --dirty-mib-per-s "$DIRTY" --state-dir "$STATE")
for _ in $(seq 600); do [ -f "$STATE/$NAME.ready.json" ] && break; sleep 0.1; done
echo "   pid $PID, RSS $(awk '/VmRSS/{print $2, $3}' /proc/$PID/status)"

echo "== ferry migrate $PID --to 10.77.250.2:7070 (mutual TLS: host-a to host-b)"
# shellcheck disable=SC2046
FERRY_LOG_LEVEL=info in_src node bin/ferry.js migrate "$PID" --to 10.77.250.2:7070 $(tls_of host-a) \
  --allow-peer spiffe://demo.ferry/ferry/host-b 2>"$STATE/source.log" | tee "$STATE/migrate.out" || true
RESTORED=$(sed -n 's/.*restored pid \([0-9]*\) on the dest.*/\1/p' "$STATE/migrate.out")
[ -n "$RESTORED" ] || { echo "migration failed; source log:"; tail -20 "$STATE/source.log"; exit 1; }

echo "== checking the restored copy (pid $RESTORED on host B)"
rm -f "$STATE/$NAME.verify.json"; kill -USR1 "$RESTORED"
for _ in $(seq 300); do [ -f "$STATE/$NAME.verify.json" ] && break; sleep 0.1; done
python3 - "$STATE/$NAME.verify.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"   pages {r['pages']}, bad pages {r['bad_pages']}, writes so far {r['writes']}")
sys.exit(0 if r['bad_pages'] == 0 else 1)
PY
[ -d /proc/"$PID" ] && { echo "the original still exists!"; exit 1; }
echo "   original pid $PID is gone; the copy runs in $(readlink /proc/$RESTORED/ns/net) (host B)"
echo "== dest metrics (excerpt)"
in_dst python3 -c "import urllib.request;print(urllib.request.urlopen('http://10.77.250.2:9470/metrics').read().decode())" \
  | grep -E '^ferry_(dest_sessions_total|dest_pages_received_total|restore_seconds_(sum|count))' || true
echo "demo OK"
