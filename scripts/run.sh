#!/usr/bin/env bash
# Build sipedge (release) and run it in the foreground with the embedded registrar,
# ready for a softphone on this host's IP, UDP port 5060.
#   SIPEDGE_LISTEN   public UDP listener (default 0.0.0.0:5060)
#   SIPEDGE_ARGS     extra daemon arguments (e.g. "--log-level debug")
#   SKIP_DEPS=1      do not install Debian packages
set -euo pipefail
cd "$(dirname "$0")/.."

[ "${SKIP_DEPS:-0}" = 1 ] || scripts/deps-debian.sh run
scripts/build.sh build -DCMAKE_BUILD_TYPE=Release -DSIPEDGE_BUILD_TESTS=OFF

users=build/users.txt
if [ ! -f "$users" ]; then
    printf 'alice:alice\nbob:bob\n' >"$users"
    chmod 600 "$users"
    echo "created demo users file $users (alice/alice, bob/bob)"
fi

listen=${SIPEDGE_LISTEN:-0.0.0.0:5060}
port=${listen##*:}
host_ip=${listen%:*}
if [ "$host_ip" = 0.0.0.0 ]; then
    host_ip=$(ip -4 route get 192.0.2.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
    [ -n "$host_ip" ] || host_ip=$(hostname -I 2>/dev/null | awk '{print $1}')
    [ -n "$host_ip" ] || host_ip=127.0.0.1
fi

cat <<INFO

sipedge is starting on udp:$listen with the embedded registrar.
Register a softphone with:
  server / proxy   $host_ip:$port (transport UDP)
  domain           $host_ip
  user             alice   (or bob)
  password         alice   (or bob)
Users are in $users (user:password per line). Stop with Ctrl-C.

INFO

# shellcheck disable=SC2086
exec build/sipedge --listen-udp "$listen" --users "$users" --policy policies/default ${SIPEDGE_ARGS:-}
