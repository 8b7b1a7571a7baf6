#!/usr/bin/env bash
# Installs the Debian 12 packages sipedge needs.
#   deps-debian.sh run    build + runtime dependencies
#   deps-debian.sh test   the above plus test peers and tools (Kamailio, sipp, nftables, clang)
set -euo pipefail
mode=${1:-run}
pkgs=(build-essential cmake pkg-config libuv1-dev libssl-dev libyaml-dev openssl
      libwebsockets-dev libwebsockets-evlib-uv libnftnl-dev libmnl-dev libnftables-dev nftables
      libsqlite3-dev)
if [ "$mode" = test ]; then
    pkgs+=(libcmocka-dev clang libclang-rt-14-dev kamailio sip-tester iproute2 nftables
           procps python3 netcat-openbsd chromium curl baresip-core linphone-cli sipvicious)
    # Node.js may come from another source (it bundles npm); only add Debian's when absent.
    command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
    command -v npm >/dev/null 2>&1 || pkgs+=(npm)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
