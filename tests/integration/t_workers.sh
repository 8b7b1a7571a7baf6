#!/usr/bin/env bash
# Edge workers (--workers N), with the embedded registrar. Each check can fail:
#   a. (2 workers) a UDP phone (sipp) and a WebSocket client (SIP.js) from source
#      addresses that steer to different workers register on their own worker (per-worker
#      counters), and each gets an INVITE the registrar sends along its Path, straight to
#      the owning worker's core socket (handed_to_owner stays 0);
#   b. (1, then 2 workers) wrong-password registrations from one address over 50 source
#      ports ban that address once, after as many failures as with one worker (one entry
#      in /api/bans, the same guard counters);
#   c. (2 workers) SIGHUP lowers the per-address limit on every worker: two sources on
#      different workers are answered 503 afterwards, and both workers count rejections;
#   d. (3 workers on this host, more than its CPUs: they share) /metrics
#      sipedge_edge_relayed_register_total equals the sum of the per-worker counters and
#      the REGISTERs sent, and each worker relayed the REGISTERs of the sources it owns.
# The worker of a source is worker_of (lib.sh), the kernel's steering function.
. "$(dirname "$0")/lib.sh"
it_init workers
. "$IT_LIB_DIR/ops_lib.sh"
. "$IT_LIB_DIR/clients/ws_lib.sh"
need_cmd sipp python3 curl
need_sipedge
ws_clients_setup

PUB=$(it_addr 1)
CORE=$(it_addr 2)
REG=$(it_addr 4)
CALLER=$(it_addr 12)
WS_PORT=$(free_tcp_port "$PUB")
make_users "$IT_TMP/users.txt"

# pick_host W N [NOT...]: a host number (20..250) of this test's block whose address
# worker W of N owns, other than NOT...
pick_host() {
    local w=$1 n=$2 h x skip
    shift 2
    for ((h = 20; h <= 250; h++)); do
        skip=0
        for x in "$@"; do [ "$x" = "$h" ] && skip=1; done
        [ "$skip" = 1 ] && continue
        [ "$(worker_of "$(it_addr "$h")" "$n")" = "$w" ] && { echo "$h"; return 0; }
    done
    return 1
}

# edge N POLICY_DIR: sipedge with N workers, the embedded registrar, ws and admin HTTP.
edge() {
    local n=$1 pol=$2
    OPS_ADMIN_PORT=$(free_tcp_port 127.0.0.1)
    SIPEDGE_WORKERS=$n start_sipedge --listen-udp "$PUB:5060" --listen-ws "$PUB:$WS_PORT" \
        --core "$CORE:5070" --registrar-listen "$REG:5080" --users "$IT_TMP/users.txt" \
        --realm workers-test --policy "$pol" --admin "127.0.0.1:$OPS_ADMIN_PORT" \
        --log-level debug
    grep -qE "sipedge: ready .* workers=$n\$" "$SIPEDGE_LOG" || fail "sipedge is not running $n workers"
}

# wstat I KIND KEY: KEY of worker I's latest "stats KIND" line (after edge_stats).
wstat() { stat_of "$(last_worker_stats "$1" "$2")" "$3"; }
# gstat KEY: KEY of the latest summed guard line.
gstat() { stat_of "$(last_stats guard)" "$1"; }

# stop_keep TAG: stop sipedge, keep its log as sipedge-TAG.log.
stop_keep() {
    stop_sipedge
    mv "$SIPEDGE_LOG" "$IT_TMP/sipedge-$1.log"
}

# ---- a. a UDP phone and a WebSocket client on different workers --------------------------
HA=$(pick_host 0 2) && HB=$(pick_host 1 2) || fail "no addresses for both workers"
PHONE=$(it_addr "$HA")
WSCLI=$(it_addr "$HB")
log "a: phone $PHONE (worker 0), WebSocket client $WSCLI (worker 1)"
test_policy_dir "$IT_TMP/policy"
edge 2 "$IT_TMP/policy"

phone_register 1500
node_bg sipjs sipjs_ua.mjs --ws "ws://$PUB:$WS_PORT" --uri "sip:alice@$PUB" --password alicepw \
    --wait-invite 20 --timeout 40 --local-address "$WSCLI"
UA_PID=$BG_PID
wait_for_line "$IT_TMP/sipjs.out" '^REGISTERED' 15 "$UA_PID" ||
    fail "a: SIP.js did not register over ws: $(tail -3 "$IT_TMP/sipjs.out" | tr '\n' ' ')"
grep -qE "ws $WSCLI:[0-9]+: connection .* open on $PUB:$WS_PORT" "$SIPEDGE_LOG" ||
    fail "a: sipedge logged no WebSocket connection from $WSCLI"
edge_stats >/dev/null || fail "a: no stats"
r0=$(wstat 0 edge relayed_register) r1=$(wstat 1 edge relayed_register)
h0=$(wstat 0 ws ws_handshakes_ok) h1=$(wstat 1 ws ws_handshakes_ok)
log "a: relayed_register worker 0=$r0 worker 1=$r1; ws handshakes worker 0=$h0 worker 1=$h1"
[ "${r0:-0}" -ge 1 ] || fail "a: worker 0 relayed no REGISTER (the phone's source steers to it)"
[ "${r1:-0}" -ge 1 ] || fail "a: worker 1 relayed no REGISTER (the WebSocket client's source steers to it)"
[ "${h1:-0}" = 1 ] && [ "${h0:-0}" = 0 ] ||
    fail "a: the WebSocket handshake is not on worker 1 alone (worker 0: $h0, worker 1: $h1)"
u0=$(wstat 0 edge flows) u1=$(wstat 1 edge flows)
[ "${u0:-0}" -ge 1 ] && [ "${u1:-0}" -ge 1 ] || fail "a: flows: worker 0 $u0, worker 1 $u1, want one or more each"

phone_call 1500 "$REG:5080"
run_sipp call-ws -sf "$WS_SIPP_DIR/ws_invite_busy.xml" -key callee alice -key domain "$PUB" \
    -i "$CALLER" -p "$(free_udp_port "$CALLER")" -m 1 -max_retrans 4 -recv_timeout 8000 \
    "$REG:5080"
sipp_check call-ws $? 1
wait_for_line "$IT_TMP/sipjs.out" '^INCOMING INVITE' 5 "$UA_PID" ||
    fail "a: SIP.js did not receive the INVITE"
wait "$UA_PID" || fail "a: the SIP.js client failed: $(tail -2 "$IT_TMP/sipjs.out" | tr '\n' ' ')"
edge_stats >/dev/null || fail "a: no stats"
d0=$(wstat 0 edge inbound_delivered) d1=$(wstat 1 edge inbound_delivered)
o0=$(wstat 0 edge handed_to_owner) o1=$(wstat 1 edge handed_to_owner)
log "a: inbound_delivered worker 0=$d0 worker 1=$d1; handed_to_owner $o0/$o1"
[ "${d0:-0}" -ge 1 ] || fail "a: worker 0 delivered no INVITE to the phone"
[ "${d1:-0}" -ge 1 ] || fail "a: worker 1 delivered no INVITE to the WebSocket client"
[ "$o0" = 0 ] && [ "$o1" = 0 ] ||
    fail "a: an INVITE reached the core socket of a worker that does not own its flow ($o0/$o1)"
stop_keep a

# ---- b. one address, 50 ports: banned once, at the one-worker threshold ------------------
# scope port, threshold = ip_threshold = 20, an auth failure weighs 2: one wrong answer per
# port never bans the port, the tenth failure of the address bans the address.
test_policy_dir "$IT_TMP/policy-flood" "guard:
  allowlist: []
  strikes: {threshold: 20, ip_threshold: 20, weights: {auth_failure: 2}}
  bans: {scope: port, durations: [120]}
  event_log: \"\""
HATK=$(pick_host 1 2 "$HA" "$HB") || fail "no attacker address for worker 1"
ATK=$(it_addr "$HATK")

# flood: 50 sockets on $ATK, one after another: REGISTER, then an answer to the challenge
# with a wrong password. Once one is not answered, the others send their REGISTER once.
flood() {
    timeout 60 python3 - "$ATK" "$PUB" 5060 50 <<'EOF_PY'
import hashlib, os, re, socket, sys, time
src, dst, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ruri = f"sip:{dst}:{port}"

def msg(s, user, cseq, cid, auth=None):
    lp = s.getsockname()[1]
    h = [f"REGISTER {ruri} SIP/2.0",
         f"Via: SIP/2.0/UDP {src}:{lp};branch=z9hG4bK{os.urandom(6).hex()};rport",
         "Max-Forwards: 70", f"From: <sip:{user}@{dst}>;tag={cid[:8]}", f"To: <sip:{user}@{dst}>",
         f"Call-ID: {cid}", f"CSeq: {cseq} REGISTER", f"Contact: <sip:{user}@{src}:{lp}>",
         "Expires: 600"] + ([auth] if auth else []) + ["Content-Length: 0", "", ""]
    s.sendto("\r\n".join(h).encode(), (dst, port))

def final(s, secs):
    end = time.time() + secs
    while time.time() < end:
        s.settimeout(max(0.01, end - time.time()))
        try:
            d = s.recv(65535).decode("latin-1")
        except socket.timeout:
            return None
        code = int(d.split(" ", 2)[1])
        if code >= 200:
            return code, d
    return None

failures, codes, silent_from, late = 0, [], None, []
socks = []
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    socks.append(s)
    user, cid = str(1000 + i), os.urandom(8).hex()
    if silent_from is not None:
        msg(s, user, 1, cid)
        late.append(s)
        continue
    msg(s, user, 1, cid)
    r = final(s, 1.0)
    if not r or r[0] != 401:
        silent_from = i
        codes.append(r[0] if r else 0)
        continue
    p = dict((k.lower(), v1 or v2) for k, v1, v2 in re.findall(
        r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))',
        re.search(r"^WWW-Authenticate:\s*Digest\s+(.*?)\r$", r[1], re.M | re.I).group(1)))
    H = (lambda x: hashlib.sha256(x.encode()).hexdigest()) if p.get("algorithm", "MD5").upper() == "SHA-256" \
        else (lambda x: hashlib.md5(x.encode()).hexdigest())
    ha1 = H("%s:%s:wrong" % (user, p["realm"]))
    resp = H("%s:%s:%s" % (ha1, p["nonce"], H("REGISTER:" + ruri)))
    auth = (f'Authorization: Digest username="{user}", realm="{p["realm"]}", nonce="{p["nonce"]}", '
            f'uri="{ruri}", algorithm={p.get("algorithm", "MD5")}, response="{resp}"')
    if "opaque" in p:
        auth += f', opaque="{p["opaque"]}"'
    msg(s, user, 2, cid, auth)
    r = final(s, 1.0)
    if not r:
        silent_from = i
        codes.append(0)
        continue
    failures += 1
    codes.append(r[0])
time.sleep(0.5)
answered_late = 0
for s in late:
    s.setblocking(False)
    try:
        s.recv(65535)
        answered_late += 1
    except BlockingIOError:
        pass
print(f"failures={failures} silent_from={silent_from} late={len(late)} answered_late={answered_late}"
      f" codes={','.join(map(str, sorted(set(codes))))}")
EOF_PY
}

declare -A FLOOD
flood_run() { # N: the flood against sipedge with N workers; FLOOD[N.key]=value
    local n=$1 out bans k v
    edge "$n" "$IT_TMP/policy-flood"
    out=$(flood) || fail "b: the flood sender failed ($n workers): $out"
    log "b: $n worker(s): $out"
    for kv in $out; do FLOOD[$n.${kv%%=*}]=${kv#*=}; done
    bans=$(ops_http GET /api/bans)
    FLOOD[$n.entries]=$(grep -o "\"source\":\"$ATK\"" <<<"$bans" | wc -l)
    FLOOD[$n.all_entries]=$(grep -o '"source":' <<<"$bans" | wc -l)
    FLOOD[$n.port]=$(grep -o "\"source\":\"$ATK\",\"port\":[0-9]*" <<<"$bans" | sed 's/.*://' | head -1)
    edge_stats >/dev/null || fail "b: no stats"
    for k in strikes auth_failures bans drop_banned; do FLOOD[$n.$k]=$(gstat "$k"); done
    FLOOD[$n.metric_bans]=$(ops_metric sipedge_guard_bans_total) || fail "b: /metrics ($n workers)"
    log "b: $n worker(s): /api/bans ${FLOOD[$n.entries]} entry for $ATK (port ${FLOOD[$n.port]}), guard strikes=${FLOOD[$n.strikes]} auth_failures=${FLOOD[$n.auth_failures]} bans=${FLOOD[$n.bans]} drop_banned=${FLOOD[$n.drop_banned]}"
    if [ "$n" -gt 1 ]; then
        local w i
        w=$(worker_of "$ATK" "$n")
        for ((i = 0; i < n; i++)); do
            v=$(wstat "$i" edge guard_dropped)
            if [ "$i" = "$w" ]; then
                [ "${v:-0}" -ge 1 ] || fail "b: worker $i (the attacker's) dropped nothing"
            else
                [ "${v:-0}" = 0 ] || fail "b: worker $i, not the attacker's, dropped $v"
            fi
        done
    fi
    stop_keep "flood-$n"
}
flood_run 1
flood_run 2
for n in 1 2; do
    [ "${FLOOD[$n.entries]}" = 1 ] && [ "${FLOOD[$n.all_entries]}" = 1 ] ||
        fail "b: $n worker(s): /api/bans holds ${FLOOD[$n.all_entries]} entries (${FLOOD[$n.entries]} for $ATK), want exactly one"
    [ "${FLOOD[$n.port]}" = 0 ] || fail "b: $n worker(s): the ban is not of the whole address (port ${FLOOD[$n.port]})"
    [ "${FLOOD[$n.bans]}" = 1 ] && [ "${FLOOD[$n.metric_bans]}" = 1 ] ||
        fail "b: $n worker(s): bans=${FLOOD[$n.bans]}, sipedge_guard_bans_total=${FLOOD[$n.metric_bans]}, want 1"
    [ "${FLOOD[$n.failures]}" = 10 ] ||
        fail "b: $n worker(s): banned after ${FLOOD[$n.failures]} failures, want 10 (ip_threshold 20 / weight 2)"
    [ "${FLOOD[$n.answered_late]}" = 0 ] && [ "${FLOOD[$n.drop_banned]:-0}" -ge 1 ] ||
        fail "b: $n worker(s): ports after the ban answered ${FLOOD[$n.answered_late]}, drop_banned=${FLOOD[$n.drop_banned]}"
done
for k in failures silent_from strikes auth_failures bans drop_banned; do
    [ "${FLOOD[1.$k]}" = "${FLOOD[2.$k]}" ] ||
        fail "b: $k differs: ${FLOOD[1.$k]} with one worker, ${FLOOD[2.$k]} with two"
done

# ---- c. SIGHUP changes the per-address limit on every worker ------------------------------
HC0=$(pick_host 0 2 "$HA" "$HB" "$HATK") && HC1=$(pick_host 1 2 "$HA" "$HB" "$HATK") ||
    fail "no addresses for c"
C0=$(it_addr "$HC0")
C1=$(it_addr "$HC1")
limits() { # RATE BURST: the policy override
    test_policy_dir "$IT_TMP/policy-hup" "guard:
  limits:
    per_ip: {rate: $1, burst: $2}
    per_ip_port: {rate: $1, burst: $2}
    over_limit_action: reject"
}
# burst SRC: 20 OPTIONS from one socket on SRC, at once; prints "replies=N r503=M".
burst() {
    timeout 20 python3 - "$1" "$PUB" 5060 20 <<'EOF_PY'
import os, socket, sys, time
src, dst, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
lp = s.getsockname()[1]
for i in range(n):
    s.sendto(("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bK%s;rport\r\n"
              "Max-Forwards: 70\r\nFrom: <sip:probe@%s>;tag=%s\r\nTo: <sip:%s>\r\n"
              "Call-ID: %s\r\nCSeq: %d OPTIONS\r\nContent-Length: 0\r\n\r\n"
              % (dst, src, lp, os.urandom(6).hex(), dst, os.urandom(3).hex(), dst,
                 os.urandom(8).hex(), i + 1)).encode(), (dst, port))
replies = r503 = 0
end = time.time() + 2
while time.time() < end:
    s.settimeout(max(0.01, end - time.time()))
    try:
        d = s.recv(65535)
    except socket.timeout:
        break
    code = int(d.split(b" ", 2)[1])
    if code >= 200:
        replies += 1
        r503 += code == 503
print(f"replies={replies} r503={r503}")
EOF_PY
}
limits 1000 1000
edge 2 "$IT_TMP/policy-hup"
for src in "$C0" "$C1"; do
    out=$(burst "$src")
    log "c: before SIGHUP, 20 OPTIONS from $src (worker $(worker_of "$src" 2)): $out"
    [ "$(stat_of "$out" replies)" = 20 ] && [ "$(stat_of "$out" r503)" = 0 ] ||
        fail "c: before the reload the source $src was limited: $out"
done
edge_stats >/dev/null
g0=$(wstat 0 edge guard_rejected) g1=$(wstat 1 edge guard_rejected)
limits 1 3
kill -HUP "$SIPEDGE_PID"
wait_for_line "$SIPEDGE_LOG" 'policy reloaded from .*\(2 workers\)' 5 "$SIPEDGE_PID" ||
    fail "c: no reload of both workers after SIGHUP"
for src in "$C0" "$C1"; do
    out=$(burst "$src")
    log "c: after SIGHUP, 20 OPTIONS from $src (worker $(worker_of "$src" 2)): $out"
    [ "$(stat_of "$out" r503)" -ge 15 ] ||
        fail "c: after the reload the source $src (worker $(worker_of "$src" 2)) is not limited: $out"
done
edge_stats >/dev/null
n0=$(wstat 0 edge guard_rejected) n1=$(wstat 1 edge guard_rejected)
log "c: guard_rejected worker 0: $g0 -> $n0, worker 1: $g1 -> $n1"
[ $((n0 - g0)) -ge 15 ] && [ $((n1 - g1)) -ge 15 ] ||
    fail "c: not every worker rejects after the reload (worker 0: +$((n0 - g0)), worker 1: +$((n1 - g1)))"
stop_keep hup

# ---- d. /metrics sums the workers (3 workers on a host with fewer CPUs) -------------------
test_policy_dir "$IT_TMP/policy"
edge 3 "$IT_TMP/policy"
declare -a HD WANT
used=("$HA" "$HB" "$HATK" "$HC0" "$HC1")
sent=0
u=1100
for w in 0 1 2; do
    HD[w]=$(pick_host "$w" 3 "${used[@]}") || fail "d: no address for worker $w"
    used+=("${HD[w]}")
    # Worker w gets w + 1 registrations, two REGISTERs each (the challenge, the answer).
    for ((k = 0; k <= w; k++)); do
        out=$(py_register "$(it_addr "${HD[w]}")" "$PUB:5060" "$u" "pw$u" "$PUB") ||
            fail "d: REGISTER of $u from $(it_addr "${HD[w]}") failed: $out"
        u=$((u + 1))
        sent=$((sent + 2))
    done
    WANT[w]=$((2 * (w + 1)))
done
edge_stats >/dev/null || fail "d: no stats"
sum=0
for w in 0 1 2; do
    v=$(wstat "$w" edge relayed_register)
    log "d: worker $w ($(it_addr "${HD[w]}")): relayed_register=$v, want ${WANT[w]}"
    [ "$v" = "${WANT[w]}" ] || fail "d: worker $w relayed $v REGISTERs, want ${WANT[w]} (its source's)"
    sum=$((sum + v))
done
m=$(ops_metric sipedge_edge_relayed_register_total) || fail "d: /metrics: $m"
s=$(stat_of "$(last_stats edge)" relayed_register)
hits=$(stat_of "$(last_stats edge)" regcache_hit)
log "d: sent $sent REGISTERs; per-worker sum $sum; stats edge $s; /metrics $m; regcache_hit $hits"
[ "$hits" = 0 ] || fail "d: the registration cache answered $hits REGISTERs (not relayed)"
[ "$m" = "$sum" ] && [ "$m" = "$sent" ] && [ "$s" = "$sent" ] ||
    fail "d: sipedge_edge_relayed_register_total=$m, per-worker sum $sum, stats edge $s, sent $sent"
stop_keep metrics

log PASS
