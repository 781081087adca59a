#!/usr/bin/env bash
# Everything Ferry needs on a fresh Debian host, idempotent and quick when already done:
# Debian packages (only the missing ones), npm dependencies (and the native addon), CRIU >= 4.2
# (provisioned into a private prefix when the system has none), and the compiled CLI in dist/.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "setup: $*" >&2; }

[ "$(id -u)" = 0 ] || { log "run as root: CRIU, ptrace and network namespaces need it"; exit 1; }

# Installs the Debian packages of the list that are missing (extra apt-get flags first, then `--`).
install_missing() {
  local flags=() need=() pkg
  while [ "$1" != -- ]; do flags+=("$1"); shift; done; shift
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  log "installing Debian packages: ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${flags[@]}" "${need[@]}" >&2 || {
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${flags[@]}" "${need[@]}" >&2; }
}

# gcc/make/python3: the native addon and the test workload; libxxhash-dev: page hashing;
# iproute2 + util-linux: network-namespace hosts, nsenter and unshare; openssl: `ferry certs` (mutual TLS).
install_missing -- gcc make python3 libxxhash-dev iproute2 util-linux openssl
# The tests' real Prometheus (and promtool, for the rule and exposition checks) and Pushgateway. The tests start
# them on ports of their own; no recommends, so no node exporter comes along as a service.
install_missing --no-install-recommends -- prometheus prometheus-pushgateway

# npm ci when node_modules is missing or older than the lock file (it also builds the native addon).
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ] || [ ! -f build/Release/ferry_native.node ]; then
  log "npm ci"
  npm ci --no-audit --no-fund >&2
fi

criu=$(bash scripts/provision-criu.sh | tail -1)
log "criu: $criu ($("$criu" --version | head -1))"

log "building"
npm run --silent build >&2
