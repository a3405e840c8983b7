#!/bin/bash
# Fetch Debian trixie's ipxe package (1.21.1+git20250501, whose EFI loader
# runs autoexec.ipxe) and unpack it into DEST, using private apt state
# directories: the system's apt sources and state are not touched. The
# archive is the one this system's apt already uses. A second argument
# names another suite: "sid" gives iPXE 2.0 (2.0.0+dfsg, DESIGN 3).
set -euo pipefail
dest=${1:-.cache/trixie-ipxe}
suite=${2:-trixie}
if [ -f "$dest/usr/lib/ipxe/ipxe.iso" ]; then
    exit 0
fi
uri=""
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}' "$f")
    [ -n "$uri" ] && break
done
if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $2 ~ /debian\/?$/ {print $2; exit}' \
        /etc/apt/sources.list)
fi
if [ -z "$uri" ]; then
    echo "fetch-trixie-ipxe: no Debian archive in this system's apt" \
         "sources; cannot fetch $suite's ipxe" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/etc"
cat > "$work/etc/$suite.sources" <<EOF
Types: deb
URIs: $uri
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
opts=(-o "Dir::State=$work" -o "Dir::State::Lists=$work/lists"
      -o "Dir::Cache=$work/cache" -o "Dir::Etc::SourceList=/dev/null"
      -o "Dir::Etc::SourceParts=$work/etc"
      -o "Dir::Etc::Preferences=/dev/null"
      -o "Dir::Etc::PreferencesParts=/dev/null"
      -o "APT::Sandbox::User=root" -q)
apt-get "${opts[@]}" update >/dev/null
(cd "$work" && apt-get "${opts[@]}" download ipxe >/dev/null)
mkdir -p "$dest.tmp"
dpkg -x "$work"/ipxe_*.deb "$dest.tmp"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "fetch-trixie-ipxe: $(basename "$work"/ipxe_*.deb) unpacked into $dest" >&2
