# Sourced by provision-criu.sh and provision-zdtm.sh: apt against Debian's archive with private lists, status
# and cache under one dir, so that nothing of the system's apt (sources, lists, status) is read or changed.

# The Debian mirror this host already uses (never a host of our choosing); deb822 first, then one-line format.
debian_mirror() {
  { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
    grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | sed -E 's/\[[^]]*\] //' | awk '{print $2}'
  } | grep -E '/debian/?$' | grep -v -- '-security' | head -1 || true
}

# private_apt DIR "SOURCES LINE" CACHE: makes DIR's lists, archives and status, writes the one sources line, lets
# apt's sandbox user write there, and sets the array apt_opts for `apt-get "${apt_opts[@]}" ...`.
private_apt() {
  local dir=$1 line=$2 cache=$3
  mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/parts" "$dir/debs"
  : > "$dir/status"
  echo "$line" > "$dir/sources.list"
  if id _apt >/dev/null 2>&1; then  # apt's download sandbox user must be able to write
    chmod 755 "$cache" "$(dirname "$dir")" "$dir" "$dir/lists" "$dir/archives"
    chown _apt "$dir/lists/partial" "$dir/archives/partial" "$dir/debs"
  fi
  apt_opts=(-o Dir::Etc::SourceList="$dir/sources.list" -o Dir::Etc::SourceParts="$dir/parts"
    -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
    -o Dir::State::Lists="$dir/lists" -o Dir::State::status="$dir/status"
    -o Dir::Cache="$dir" -o Dir::Cache::archives="$dir/archives"
    -o APT::Architectures="$(dpkg --print-architecture)" -o Acquire::Languages=none -o APT::Get::List-Cleanup=false)
}
