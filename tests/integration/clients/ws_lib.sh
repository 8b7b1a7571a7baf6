# shellcheck shell=bash
# Helpers for the WebSocket tests (tests/integration/t_ws_*.sh). Source after lib.sh
# and it_init.
#
#   ws_clients_setup     need node/npm, install the npm clients (npm ci) once
#   ws_make_cert DIR     self-signed cert.pem/key.pem for 127.0.0.1/localhost in DIR
#   free_tcp_port ADDR   (lib.sh) a TCP port currently free on ADDR
#   node_bg TAG ARGS...  node in the background, output in $IT_TMP/TAG.out; sets BG_PID
#   node_run TAG ARGS... node in the foreground (bounded), output in $IT_TMP/TAG.out
#   ws_stats             ask sipedge for its counters (SIGUSR1); prints the ws ones
#   ws_stat NAME         one ws counter from the latest stats line
#   sip_final TAG        final status codes (>= 300 or 200) seen by sipp[TAG], one a line

WS_CLIENTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WS_SIPP_DIR=$WS_CLIENTS_DIR/sipp

ws_clients_setup() {
    need_cmd node npm openssl
    local rc=0
    # Tests run in parallel under ctest: one npm at a time in the clients directory.
    # (No subshell here: it would run lib.sh's EXIT trap and remove the temp dir.)
    exec 9>/tmp/sipedge-ws-clients-npm.lock
    flock -w 300 9 || fail "could not lock /tmp/sipedge-ws-clients-npm.lock"
    # node_modules/.package-lock.json is npm's record of what is installed.
    if [ -f "$WS_CLIENTS_DIR/node_modules/.package-lock.json" ] &&
        [ "$WS_CLIENTS_DIR/node_modules/.package-lock.json" -nt "$WS_CLIENTS_DIR/package-lock.json" ] &&
        (cd "$WS_CLIENTS_DIR" && exec node -e \
            "require('ws'); require('playwright-core'); require.resolve('jssip')") 2>/dev/null; then
        :
    else
        log "npm ci in $WS_CLIENTS_DIR"
        (cd "$WS_CLIENTS_DIR" && exec npm ci --no-audit --no-fund) >"$IT_TMP/npm.log" 2>&1 || rc=$?
    fi
    exec 9>&-
    [ "$rc" -eq 0 ] || fail "npm ci could not install the WebSocket test clients (npm.log)"
}

ws_make_cert() {
    local dir=$1
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:$IT_NET.1" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1 ||
        fail "openssl could not make a test certificate"
}

node_bg() {
    local tag=$1
    shift
    log "node[$tag] (bg) $*"
    (cd "$WS_CLIENTS_DIR" && exec timeout -k 5 "${NODE_TIMEOUT:-90}" node "$@") \
        >"$IT_TMP/$tag.out" 2>&1 &
    BG_PID=$!
    IT_PIDS+=("$BG_PID")
}

node_run() {
    local tag=$1 rc
    shift
    log "node[$tag] $*"
    (cd "$WS_CLIENTS_DIR" && timeout -k 5 "${NODE_TIMEOUT:-60}" node "$@") >"$IT_TMP/$tag.out" 2>&1
    rc=$?
    log "node[$tag] status $rc: $(grep -E '^(RESULT|FAIL)' "$IT_TMP/$tag.out" | tail -1)"
    return $rc
}

# The "stats ws" line is the sum over the workers (STATS_RE in lib.sh), not a
# "worker N stats ws" line.
ws_stats() {
    local n i re
    re=$(STATS_RE ws)
    n=$(grep -cE "$re" "$SIPEDGE_LOG")
    kill -USR1 "$SIPEDGE_PID"
    for ((i = 0; i < 40; i++)); do
        [ "$(grep -cE "$re" "$SIPEDGE_LOG")" -gt "$n" ] && break
        sleep 0.05
    done
    grep -E "$re" "$SIPEDGE_LOG" | tail -1 | sed 's/.*stats ws //'
}

ws_stat() {
    grep -E "$(STATS_RE ws)" "$SIPEDGE_LOG" | tail -1 | tr ' ' '\n' | sed -n "s/^ws_$1=//p"
}

sip_final() {
    grep -aoE '^SIP/2\.0 [2-6][0-9][0-9]' "$IT_TMP/sipp-$1-msg.log" 2>/dev/null |
        awk '{print $2}' | grep -vE '^1' | sort -u
}
