#!/usr/bin/env bash
# TLS certificates over the TLS and wss listeners:
#  - SIGHUP reloads the certificate for new connections: a TLS connection opened before
#    keeps working (its CRLFCRLF ping is answered after the reload), new TLS and wss
#    handshakes present the new certificate;
#  - a reload with a key that does not match the certificate, or an unreadable file,
#    keeps the current certificate, and the log says why;
#  - mutual TLS (tls.client_ca, tls.require_client_cert): a client without a certificate
#    is refused in the handshake, one with a certificate from the CA is accepted, and the
#    audit log's flow-open event names the certificate's subject.
. "$(dirname "$0")/lib.sh"
it_init stream_tls_certs
need_cmd python3 openssl
need_sipedge

PUB=$(it_addr 1)
CORE=$(it_addr 2)
TLS_PORT=$(free_tcp_port "$PUB")
WSS_PORT=$(free_tcp_port "$PUB")
D=$IT_TMP/pki
mkdir -p "$D"

mk_cert() { # NAME CN: a certificate signed by the test CA
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$2" \
        -keyout "$D/$1.key" -out "$D/$1.csr" >/dev/null 2>&1 &&
        openssl x509 -req -in "$D/$1.csr" -CA "$D/ca.pem" -CAkey "$D/ca.key" -CAcreateserial \
            -days 2 -extfile <(printf 'subjectAltName=IP:%s\n' "$PUB") -out "$D/$1.pem" \
            >/dev/null 2>&1 || fail "openssl could not make certificate $1"
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=sipedge-test-ca -keyout "$D/ca.key" -out "$D/ca.pem" >/dev/null 2>&1 ||
    fail "openssl could not make the CA"
mk_cert a server-a
mk_cert b server-b
mk_cert phone phone-42
cp "$D/a.pem" "$D/cert.pem"
cp "$D/a.key" "$D/key.pem"

# tls_probe PORT [ws]: the CN of the certificate a new handshake presents.
tls_probe() {
    python3 - "$PUB" "$1" "$D/ca.pem" <<'PY'
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
ctx.check_hostname = False
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
    with ctx.wrap_socket(s) as t:
        cn = dict(x[0] for x in t.getpeercert()["subject"])["commonName"]
        print(cn)
PY
}

start_sipedge --listen-udp "$PUB:5060" --listen-tls "$PUB:$TLS_PORT" --listen-wss "$PUB:$WSS_PORT" \
    --tls-cert "$D/cert.pem" --tls-key "$D/key.pem" --core "$CORE:5070" --log-level debug

[ "$(tls_probe "$TLS_PORT")" = server-a ] || fail "TLS listener does not present certificate a"
[ "$(tls_probe "$WSS_PORT")" = server-a ] || fail "wss listener does not present certificate a"

# A connection held across the reload: it pings before and after.
mkfifo "$IT_TMP/go"
python3 - "$PUB" "$TLS_PORT" "$D/ca.pem" "$IT_TMP/go" >"$IT_TMP/held.out" 2>&1 <<'PY' &
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
ctx.check_hostname = False
s = ctx.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10))
def ping():
    s.sendall(b"\r\n\r\n")
    return s.recv(16) == b"\r\n"
print("before", ping(), flush=True)
open(sys.argv[4]).read()  # until the test has reloaded
print("after", ping(), flush=True)
PY
HELD=$!
IT_PIDS+=("$HELD")
wait_for_line "$IT_TMP/held.out" '^before True' 5 "$HELD" || fail "held TLS connection: no pong"

cp "$D/b.pem" "$D/cert.pem"
cp "$D/b.key" "$D/key.pem"
kill -HUP "$SIPEDGE_PID"
wait_for_line "$SIPEDGE_LOG" 'certificate reloaded' 5 "$SIPEDGE_PID" || fail "no reload logged"
echo go >"$IT_TMP/go"
wait "$HELD" || true
grep -q '^after True' "$IT_TMP/held.out" ||
    fail "the TLS connection made before the reload stopped working: $(cat "$IT_TMP/held.out")"
[ "$(tls_probe "$TLS_PORT")" = server-b ] || fail "TLS listener did not take certificate b"
[ "$(tls_probe "$WSS_PORT")" = server-b ] || fail "wss listener did not take certificate b"

# A mismatched pair (a's key with b's certificate) is refused; b stays.
cp "$D/a.key" "$D/key.pem"
kill -HUP "$SIPEDGE_PID"
wait_for_line "$SIPEDGE_LOG" 'certificate reload refused' 5 "$SIPEDGE_PID" ||
    fail "a mismatched key was not refused"
grep 'certificate reload refused' "$SIPEDGE_LOG" | tail -1 | grep -qi 'key' ||
    fail "the refusal does not say why: $(grep 'certificate reload refused' "$SIPEDGE_LOG" | tail -1)"
[ "$(tls_probe "$TLS_PORT")" = server-b ] || fail "a refused reload changed the TLS certificate"
[ "$(tls_probe "$WSS_PORT")" = server-b ] || fail "a refused reload changed the wss certificate"
rm -f "$D/key.pem"
kill -HUP "$SIPEDGE_PID"
sleep 0.5
[ "$(grep -c 'certificate reload refused' "$SIPEDGE_LOG")" -ge 2 ] || fail "an unreadable key was not refused"
[ "$(tls_probe "$TLS_PORT")" = server-b ] || fail "a missing key changed the TLS certificate"
stop_sipedge

# Mutual TLS.
cp "$D/b.key" "$D/key.pem"
cat >"$IT_TMP/mtls.yaml" <<EOF_YAML
tls:
  cert: $D/cert.pem
  key: $D/key.pem
  client_ca: $D/ca.pem
  require_client_cert: true
EOF_YAML
AUDIT=$IT_TMP/audit.log
start_sipedge -c "$IT_TMP/mtls.yaml" --listen-udp "$PUB:5060" --listen-tls "$PUB:$TLS_PORT" \
    --core "$CORE:5070" --audit "$AUDIT" --log-level debug
python3 - "$PUB" "$TLS_PORT" "$D" <<'PY' || fail "mutual TLS: see above"
import socket, ssl, sys, time
host, port, d = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def attempt(with_cert):
    ctx = ssl.create_default_context(cafile=d + "/ca.pem")
    ctx.check_hostname = False
    if with_cert:
        ctx.load_cert_chain(d + "/phone.pem", d + "/phone.key")
    try:
        s = ctx.wrap_socket(socket.create_connection((host, port), timeout=5))
        s.sendall(b"\r\n\r\n")
        ok = s.recv(16) == b"\r\n"   # TLS 1.3: a refused client learns it on its first read
        s.close()
        return ok
    except (ssl.SSLError, ConnectionError, OSError):
        return False
if attempt(False):
    print("a client without a certificate was accepted"); sys.exit(1)
if not attempt(True):
    print("a client with a certificate from the CA was refused"); sys.exit(1)
PY
for _ in $(seq 50); do grep -q 'phone-42' "$AUDIT" 2>/dev/null && break; sleep 0.1; done
grep '"flow_open\|open' "$AUDIT" | grep -q 'CN=phone-42' ||
    fail "the audit log does not name the client certificate: $(tail -3 "$AUDIT")"
st=$( (edge_stats >/dev/null; last_stats stream) )
[ "$(stat_of "$st" stream_tls_handshake_errors)" -ge 1 ] || fail "refused handshake not counted: $st"
stop_sipedge
log PASS
