#!/usr/bin/env bash
# Make a working CRIU (>= 4.2) available to Ferry and print its path on the last line of stdout.
#
# 1. FERRY_CRIU set: use it as is (the operator chose).
# 2. The system's criu is >= 4.2 and `criu check` passes: use it.
# 3. Otherwise: unpack Debian's criu 4.2.x (suite forky) and its own glibc into a private prefix and run it
#    through that glibc's loader. Nothing of the system changes: apt runs with private lists, status and cache,
#    the debs are only unpacked (dpkg-deb -x), the host glibc and /etc/apt are untouched.
# The prefix is cached ($FERRY_CACHE_DIR, default /var/cache/ferry): a second run only re-checks it.
#
# --find-only: steps 1 and 2 and the cached prefix of 3, never a download; exit 3 when none is there. The
# agents and the CLI find CRIU this way: only `ferry setup` (and scripts/setup.sh) provision, as an explicit
# step of the operator's (docs/operations.md, Install).
set -euo pipefail

find_only=
[ "${1:-}" = --find-only ] && find_only=1

MIN_MAJOR=4 MIN_MINOR=2
SUITE=${FERRY_CRIU_SUITE:-forky}
CACHE=${FERRY_CACHE_DIR:-/var/cache/ferry}
PREFIX=$CACHE/criu-$SUITE
log() { echo "provision-criu: $*" >&2; }

version_ok() { # "Version: 4.2.1" on the first line of `criu --version`
  local v; v=$("$1" --version 2>/dev/null | sed -n 's/^Version: *//p' | head -1)
  [ -n "$v" ] || return 1
  local major=${v%%.*} rest=${v#*.}; local minor=${rest%%.*}
  [ "$major" -gt $MIN_MAJOR ] || { [ "$major" -eq $MIN_MAJOR ] && [ "$minor" -ge $MIN_MINOR ]; }
}
usable() { version_ok "$1" && "$1" check >/dev/null 2>&1; }

if [ -n "${FERRY_CRIU:-}" ]; then
  usable "$FERRY_CRIU" || { log "FERRY_CRIU=$FERRY_CRIU is not a working criu >= $MIN_MAJOR.$MIN_MINOR"; exit 1; }
  echo "$FERRY_CRIU"; exit 0
fi
if sys=$(command -v criu) && usable "$sys"; then echo "$sys"; exit 0; fi
if [ -x "$PREFIX/bin/criu" ] && usable "$PREFIX/bin/criu"; then echo "$PREFIX/bin/criu"; exit 0; fi
[ -z "$find_only" ] || { log "no criu >= $MIN_MAJOR.$MIN_MINOR here (FERRY_CRIU unset, none on PATH, none provisioned in $PREFIX): run \`ferry setup\`"; exit 3; }

[ "$(id -u)" = 0 ] || { log "installing CRIU needs root (CRIU itself needs root too)"; exit 1; }
arch=$(dpkg --print-architecture)
[ "$arch" = amd64 ] || { log "only amd64 is supported for the private CRIU prefix (this host: $arch); install criu >= 4.2 yourself"; exit 1; }
multiarch=x86_64-linux-gnu

. "$(dirname "$0")/private-apt.sh"
mirror=${FERRY_DEBIAN_MIRROR:-$(debian_mirror)}
[ -n "$mirror" ] || { log "no Debian mirror in /etc/apt; set FERRY_DEBIAN_MIRROR"; exit 1; }

# The shared-library closure of criu (readelf NEEDED, then ld.so --list), as package names of the suite.
# libcompel1 is not needed: the criu binary does not link libcompel.so.
pkgs=(criu libc6 libbsd0 libmd0 libgnutls30t64 libp11-kit0 libffi8 libidn2-0 libunistring5 libtasn1-6
      libnettle8t64 libhogweed6t64 libgmp10 libnftables1 libnftnl11 libmnl0 libxtables12 libjansson4
      libprotobuf-c1 libnl-3-200 libnet9 libuuid1)

work=$PREFIX.partial
rm -rf "$work"; mkdir -p "$work/bin"
private_apt "$work/apt" "deb [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $SUITE main" "$CACHE"

log "fetching criu and its libraries from $mirror ($SUITE) into $PREFIX"
apt-get "${apt_opts[@]}" -qq update >&2
(cd "$work/apt/debs" && apt-get "${apt_opts[@]}" -qq download "${pkgs[@]}" >&2)
for deb in "$work"/apt/debs/*.deb; do dpkg-deb -x "$deb" "$work/root"; done

cat > "$work/bin/criu" <<WRAPPER
#!/bin/sh
# CRIU from Debian $SUITE, run under its own glibc through its own loader. --library-path (not
# LD_LIBRARY_PATH) so that programs criu starts (ip, iptables, action scripts) use the host's libraries.
R=$PREFIX/root
exec "\$R/usr/lib/$multiarch/ld-linux-x86-64.so.2" --library-path "\$R/usr/lib/$multiarch:\$R/lib/$multiarch" "\$R/usr/sbin/criu" "\$@"
WRAPPER
chmod 755 "$work/bin/criu"

# Every library must resolve inside the prefix; a host path means the closure above is incomplete.
closure=$("$work/root/usr/lib/$multiarch/ld-linux-x86-64.so.2" --library-path "$work/root/usr/lib/$multiarch" --list "$work/root/usr/sbin/criu")
if echo "$closure" | grep -E 'not found|=> /(usr/)?lib' >&2; then log "library closure incomplete (above)"; exit 1; fi
rm -rf "$work/apt" "$PREFIX"
mv "$work" "$PREFIX"
usable "$PREFIX/bin/criu" || { log "installed criu fails 'criu check':"; "$PREFIX/bin/criu" check >&2 || true; exit 1; }
log "ready: $("$PREFIX/bin/criu" --version | head -1)"
echo "$PREFIX/bin/criu"
