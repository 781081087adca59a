#!/usr/bin/env bash
# Make CRIU's ZDTM static tests available and print the path of test/zdtm/static on the last line of stdout.
#
# The suite comes from Debian's source package of CRIU (suite forky), like the binaries of provision-criu.sh:
# apt-get source with private lists, cache and status (the system's apt sources are untouched), only the
# upstream tarball (criu_VERSION.orig.tar.xz; the .debian.tar.xz beside it is not needed and 404s), checked
# against the hash apt verified from the signed Sources index. Then `make` builds test/zdtm/lib and static.
# Cached ($FERRY_CACHE_DIR/criu-src, default /var/cache/ferry): a second run only re-checks the build.
set -euo pipefail

SUITE=${FERRY_CRIU_SUITE:-forky}
CACHE=${FERRY_CACHE_DIR:-/var/cache/ferry}
DIR=$CACHE/criu-src
log() { echo "provision-zdtm: $*" >&2; }

built() { [ -f "$1/test/zdtm/static/.ferry-built" ]; }
for src in "$DIR"/criu-*/; do
  src=${src%/}
  if [ -d "$src" ] && built "$src"; then echo "$src/test/zdtm/static"; exit 0; fi
done

[ "$(id -u)" = 0 ] || { log "building ZDTM needs root (apt's sandbox; the tests themselves need root too)"; exit 1; }
for tool in gcc make xz; do command -v $tool >/dev/null || { log "needs $tool"; exit 1; }; done

. "$(dirname "$0")/private-apt.sh"
mirror=${FERRY_DEBIAN_MIRROR:-$(debian_mirror)}
[ -n "$mirror" ] || { log "no Debian mirror in /etc/apt; set FERRY_DEBIAN_MIRROR"; exit 1; }

mkdir -p "$DIR"
private_apt "$DIR/apt" "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $SUITE main" "$CACHE"

log "fetching the criu source package from $mirror ($SUITE) into $DIR"
apt-get "${apt_opts[@]}" -qq --error-on=any update >&2 || { log "cannot read $SUITE's Sources from $mirror"; exit 1; }
# --print-uris names the files with their sizes and hashes from the signed index; fetch only the orig tarball.
line=$(apt-get "${apt_opts[@]}" -qq --print-uris source criu | grep -E "_[0-9.]+\.orig\.tar\.xz' " | head -1)
[ -n "$line" ] || { log "no criu orig tarball in $SUITE's Sources"; exit 1; }
url=$(echo "$line" | awk '{print $1}' | tr -d "'")
file=$(echo "$line" | awk '{print $2}')
sha=$(echo "$line" | awk '{print $4}' | sed 's/^SHA256://')
if [ ! -f "$DIR/$file" ] || ! echo "$sha  $DIR/$file" | sha256sum -c --quiet - >/dev/null 2>&1; then
  # apt's own http method via apt-helper: same mirror, same proxy settings as apt.
  /usr/lib/apt/apt-helper download-file "$url" "$DIR/$file.partial" "SHA256:$sha" >&2
  mv "$DIR/$file.partial" "$DIR/$file"
fi
version=${file#criu_}; version=${version%.orig.tar.xz}
src=$DIR/criu-$version
rm -rf "$src"
tar -C "$DIR" -xJf "$DIR/$file"
[ -d "$src/test/zdtm/static" ] || { log "$file has no test/zdtm/static"; exit 1; }

log "building test/zdtm/lib and test/zdtm/static of criu $version"
jobs=$(nproc 2>/dev/null || echo 2)
make -s -C "$src/test/zdtm/lib" -j"$jobs" >&2
# -k: a test that needs a library or header this host lacks is left out; the runner reports it as not built.
make -s -k -C "$src/test/zdtm/static" -j"$jobs" >&2 || log "some static tests did not build (the runner lists them as not built)"
touch "$src/test/zdtm/static/.ferry-built"
log "ready: $src/test/zdtm/static"
echo "$src/test/zdtm/static"
