#!/usr/bin/env bash
# Build sipedge (release) and run it in the foreground with the embedded registrar,
# ready for a softphone on this host's IP, UDP port 5060.
#   SIPEDGE_LISTEN   public UDP listener (default 0.0.0.0:5060)
#   SIPEDGE_LISTEN_WS, SIPEDGE_LISTEN_WSS  WebSocket listeners (0.0.0.0:8080, 0.0.0.0:8443)
#   SIPEDGE_LISTEN_TCP, SIPEDGE_LISTEN_TLS SIP over TCP and TLS (0.0.0.0:5060, 0.0.0.0:5061)
#   SIPEDGE_TLS_CERT, SIPEDGE_TLS_KEY      wss and TLS certificate (self-signed localhost if absent)
#   SIPEDGE_STATE_DIR  flows, bans and bindings kept across restarts (build/state)
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

# wss and TLS need a certificate: make a self-signed localhost pair once when none is given.
tls_cert=${SIPEDGE_TLS_CERT:-build/tls/cert.pem}
tls_key=${SIPEDGE_TLS_KEY:-build/tls/key.pem}
if [ ! -f "$tls_cert" ] || [ ! -f "$tls_key" ]; then
    mkdir -p "$(dirname "$tls_cert")" "$(dirname "$tls_key")"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$tls_key" -out "$tls_cert" 2>/dev/null
    chmod 600 "$tls_key"
    echo "created a self-signed certificate for localhost in $(dirname "$tls_cert")"
fi
listen_ws=${SIPEDGE_LISTEN_WS:-0.0.0.0:8080}
listen_wss=${SIPEDGE_LISTEN_WSS:-0.0.0.0:8443}
listen_tcp=${SIPEDGE_LISTEN_TCP:-0.0.0.0:5060}
listen_tls=${SIPEDGE_LISTEN_TLS:-0.0.0.0:5061}

listen=${SIPEDGE_LISTEN:-0.0.0.0:5060}
port=${listen##*:}
host_ip=${listen%:*}
if [ "$host_ip" = 0.0.0.0 ]; then
    host_ip=$(ip -4 route get 192.0.2.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
    [ -n "$host_ip" ] || host_ip=$(hostname -I 2>/dev/null | awk '{print $1}')
    [ -n "$host_ip" ] || host_ip=127.0.0.1
fi

cat <<INFO

sipedge is starting on udp:$listen, tcp:$listen_tcp and tls:$listen_tls with the
embedded registrar. Register a softphone with:
  server / proxy   $host_ip:$port (transport UDP or TCP), or $host_ip:${listen_tls##*:} (TLS)
  domain           $host_ip
  user             alice   (or bob)
  password         alice   (or bob)
Browsers (JsSIP, SIP.js): ws://$host_ip:${listen_ws##*:} or wss://$host_ip:${listen_wss##*:}
  (self-signed: open https://$host_ip:${listen_wss##*:}/ once to accept the certificate)
Users are in $users (user:password per line). Stop with Ctrl-C.

INFO

# shellcheck disable=SC2086
exec build/sipedge --listen-udp "$listen" --listen-ws "$listen_ws" --listen-wss "$listen_wss" \
    --listen-tcp "$listen_tcp" --listen-tls "$listen_tls" \
    --tls-cert "$tls_cert" --tls-key "$tls_key" --users "$users" --policy policies/default \
    --state-dir "${SIPEDGE_STATE_DIR:-build/state}" \
    ${SIPEDGE_ARGS:-}
