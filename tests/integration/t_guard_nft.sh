#!/usr/bin/env bash
# Guard with the nftables backend, in network namespaces:
#   srv (sipedge + embedded registrar), leg (legitimate client), atk (wrong passwords),
#   nat (ten phones from one address, one with a wrong password), alw (allowlisted).
# Checks: a brute-forcer's (address, port) is in the kernel set within a second of the
# threshold-crossing response, later packets are counted by the drop rule and never reach
# the registrar; the legitimate client never fails; only the bad phone behind the NAT is
# banned; the allowlisted source is never banned; sipedgectl ban/unban; a restart keeps
# bans; the ban expires (short ladder); SIGHUP with a broken policy keeps the old one.
. "$(dirname "$0")/lib.sh"
. "$SIPEDGE_SRC/scripts/netns.sh"

it_init guard_nft
if [ "$(id -u)" != 0 ]; then
    [ "${CI:-}" = true ] && fail "needs root (network namespaces, nftables)"
    skip "needs root"
fi
need_cmd sipp
need_cmd nft
need_cmd ip
need_sipedge
CTL=$SIPEDGE_BUILD/tools/sipedgectl
[ -x "$CTL" ] || fail "sipedgectl not built ($CTL)"
trap 'netns_cleanup; it_cleanup' EXIT

netns_add srv
for c in leg atk nat alw; do netns_add "$c"; done
netns_link srv 198.18.1.1 leg 198.18.1.2
netns_link srv 198.18.2.1 atk 198.18.2.2
netns_link srv 198.18.4.1 nat 198.18.4.2
netns_link srv 198.18.3.1 alw 198.18.3.2
for c in leg atk nat alw; do
    net=$(ip -n "$(netns_name $c)" -4 -o addr show | awk '/198\.18/{print $4}' | cut -d. -f3)
    netns_exec "$c" ip route add 198.18.0.0/15 via "198.18.$net.1" 2>/dev/null
done

POL=$IT_TMP/policy
EVENTS=$IT_TMP/events.jsonl
test_policy_dir "$POL" "guard:
  strikes: {threshold: 6, ip_threshold: 60, weights: {auth_failure: 2}}
  bans: {durations: [6, 12]}
  allowlist: [198.18.3.0/24]
  event_log: $EVENTS"
USERS=$SIPEDGE_SRC/tests/data/users.txt
SOCK=$IT_TMP/admin.sock

N_START=0
srv_start() {
    N_START=$((N_START + 1))
    SIPEDGE_LOG=$IT_TMP/sipedge-$N_START.log
    # ip netns exec execs the daemon, so $! is sipedge itself. The worker count as
    # start_sipedge gives it (lib.sh IT_WORKERS).
    ip netns exec "$(netns_name srv)" "$SIPEDGE_BIN" --workers "$IT_WORKERS" \
        --listen-udp 0.0.0.0:5060 --core 127.0.0.1:5070 \
        --registrar-listen 127.0.0.1:5080 --users "$USERS" --policy "$POL" \
        --ban-backend nftables --admin-socket "$SOCK" --log-level debug \
        2>>"$SIPEDGE_LOG" >/dev/null &
    SIPEDGE_PID=$!
    IT_PIDS+=("$SIPEDGE_PID")
    wait_for_line "$SIPEDGE_LOG" 'sipedge: ready' 5 "$SIPEDGE_PID" || fail "sipedge did not start"
}
in_set() { netns_exec srv nft list set inet sipedge "$1" 2>/dev/null | grep -q "$2"; }
ctl() { netns_exec srv "$CTL" -s "$SOCK" "$@"; }

srv_start
grep -q 'nftables backend ready' "$SIPEDGE_LOG" || fail "nftables backend not active"

# Legitimate client: steady registrations for the whole test.
make_csv "$IT_TMP/good.csv" 1000 50
(netns_exec leg sipp 198.18.1.1:5060 -sf "$IT_SIPP_DIR/reg_auth_uac.xml" -inf "$IT_TMP/good.csv" \
    -key domain example.com -key expires 60 -i 198.18.1.2 -p 5062 -r 2 -m 60 -nostdin \
    -trace_stat -stf "$IT_TMP/sipp-legit.csv" -fd 1 >"$IT_TMP/sipp-legit.out" 2>&1) &
LEGIT=$!
IT_PIDS+=("$LEGIT")

# Brute force: wrong passwords, bounded.
{ echo SEQUENTIAL; for u in $(seq 1000 1019); do echo "$u;bad;[authentication username=$u password=bad]"; done; } >"$IT_TMP/bad.csv"
t0=$(date +%s.%N)
(netns_exec atk timeout 20 sipp 198.18.1.1:5060 -sf "$IT_SIPP_DIR/reg_auth_uac.xml" \
    -inf "$IT_TMP/bad.csv" -key domain example.com -key expires 60 -i 198.18.2.2 -p 5090 \
    -r 10 -m 20 -recv_timeout 2000 -nostdin >"$IT_TMP/sipp-atk.out" 2>&1) &
ATK=$!
for _ in $(seq 1 100); do in_set ban4p '198.18.2.2 . 5090' && break; sleep 0.05; done
t_set=$(date +%s.%N)
in_set ban4p '198.18.2.2 . 5090' || fail "attacker (198.18.2.2 . 5090) not in ban4p"
# The event log is written by its own thread: give the line a moment to arrive.
wait_for_line "$EVENTS" '"event":"ban","source":"198\.18\.2\.2"' 1 "$SIPEDGE_PID" || true
ban_line=$(grep '"event":"ban"' "$EVENTS" | grep '198.18.2.2' | head -1)
[ -n "$ban_line" ] || fail "no ban event for the attacker"
log "ban event: $ban_line"
# The event is written right after the netlink batch is sent; the set must hold the
# element within one second of it (and of the threshold-crossing strike).
ev_ts=$(python3 -c 'import json,sys,datetime as d; t=json.loads(sys.argv[1])["ts"]; print(d.datetime.strptime(t,"%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=d.timezone.utc).timestamp())' "$ban_line")
lag=$(python3 -c "print(round($t_set - $ev_ts, 3))")
log "element seen in the set $lag s after the ban event (attack started $(python3 -c "print(round($t_set-$t0,2))") s before)"
python3 -c "import sys; sys.exit(0 if $lag < 1.0 else 1)" || fail "element appeared $lag s after the ban"
wait "$ATK"
# Later packets from the attacker are dropped and counted by the kernel.
before=$(grep -c '198.18.2.2:5090' "$SIPEDGE_LOG")
netns_exec atk timeout 10 sipp 198.18.1.1:5060 -sf "$IT_SIPP_DIR/reg_auth_uac.xml" \
    -inf "$IT_TMP/bad.csv" -key domain example.com -key expires 60 -i 198.18.2.2 -p 5090 \
    -r 10 -m 5 -recv_timeout 1000 -nostdin >/dev/null 2>&1
pk=$(netns_exec srv nft list chain inet sipedge input | awk '/@ban4p/{for(i=1;i<=NF;i++) if($i=="packets") print $(i+1)}' | head -1)
log "ban4p drop counter: ${pk:-none} packets"
[ "${pk:-0}" -gt 0 ] || fail "kernel drop counter did not move"
after=$(grep -c '198.18.2.2:5090' "$SIPEDGE_LOG")
[ "$before" = "$after" ] || fail "sipedge saw attacker packets after the ban ($before -> $after)"

# Ten phones behind one address; port 6001 has a wrong password. One registration per
# 2 s each, inside the per-AOR limit (a digest registration is two REGISTERs).
for p in $(seq 6001 6010); do
    u=$((1100 + p - 6001)); pw=pw$u; [ "$p" = 6001 ] && pw=wrong
    { echo SEQUENTIAL; echo "$u;$pw;[authentication username=$u password=$pw]"; } >"$IT_TMP/nat$p.csv"
    (netns_exec nat timeout 20 sipp 198.18.4.1:5060 -sf "$IT_SIPP_DIR/reg_auth_uac.xml" \
        -inf "$IT_TMP/nat$p.csv" -key domain example.com -key expires 60 -i 198.18.4.2 -p "$p" \
        -r 1 -rp 2000 -m 6 -recv_timeout 1000 -nostdin -trace_stat -stf "$IT_TMP/sipp-nat$p.csv" -fd 1 \
        >"$IT_TMP/sipp-nat$p.out" 2>&1) &
    NATP+=($!)
done
wait "${NATP[@]}"
# The 6 s ban may already have expired: the event log is the record.
grep -q '"event":"ban","source":"198.18.4.2","port":6001,' "$EVENTS" || fail "bad phone (198.18.4.2 . 6001) not banned"
grep -q '"event":"ban","source":"198.18.4.2","reason"' "$EVENTS" && fail "whole NAT address banned"
for p in $(seq 6002 6010); do
    grep -q "\"event\":\"ban\",\"source\":\"198.18.4.2\",\"port\":$p," "$EVENTS" &&
        fail "good phone on port $p banned"
    f=$(python3 -c "import sys;r=[l.split(';') for l in open(sys.argv[1]) if l.strip()];print(r[-1][r[0].index('FailedCall(C)')])" "$IT_TMP/sipp-nat$p.csv")
    [ "$f" = 0 ] || fail "phone on port $p had $f failures"
done

# Allowlisted source: never banned.
netns_exec alw timeout 20 sipp 198.18.3.1:5060 -sf "$IT_SIPP_DIR/reg_auth_uac.xml" \
    -inf "$IT_TMP/bad.csv" -key domain example.com -key expires 60 -i 198.18.3.2 -p 5090 \
    -r 10 -m 20 -recv_timeout 1000 -nostdin >/dev/null 2>&1
in_set ban4p '198.18.3.2' && fail "allowlisted source banned"
in_set ban4 '198.18.3.2' && fail "allowlisted source banned"

# Operator ban/unban.
ctl ban 198.18.9.9 60 >/dev/null || fail "sipedgectl ban failed"
in_set ban4 '198.18.9.9' || fail "operator ban not in ban4"
ctl unban 198.18.9.9 >/dev/null || fail "sipedgectl unban failed"
in_set ban4 '198.18.9.9' && fail "operator unban left the element"
ctl ban 198.18.9.8 1h >/dev/null || fail "sipedgectl ban failed"

wait "$LEGIT"
fails=$(python3 -c "import sys;r=[l.split(';') for l in open(sys.argv[1]) if l.strip()];print(r[-1][r[0].index('FailedCall(C)')])" "$IT_TMP/sipp-legit.csv")
ok=$(python3 -c "import sys;r=[l.split(';') for l in open(sys.argv[1]) if l.strip()];print(r[-1][r[0].index('SuccessfulCall(C)')])" "$IT_TMP/sipp-legit.csv")
log "legitimate client: $ok registered, $fails failed"
[ "$fails" = 0 ] && [ "$ok" -gt 0 ] || fail "legitimate client failed $fails registrations"

# Restart keeps bans.
kill "$SIPEDGE_PID"
for _ in $(seq 1 50); do kill -0 "$SIPEDGE_PID" 2>/dev/null || break; sleep 0.1; done
srv_start
ctl bans | grep -q '"source":"198.18.9.8","port":0,.*"origin":"restored"' || fail "ban not restored after restart"

# SIGHUP with a broken policy keeps the old one.
echo "guard: {strikes: {threshold: oops}}" >"$POL/60-broken.yaml"
kill -HUP "$SIPEDGE_PID"; sleep 0.5
kill -0 "$SIPEDGE_PID" || fail "sipedge died on SIGHUP with a broken policy"
grep -q 'threshold' "$SIPEDGE_LOG" || fail "broken policy not reported"
rm -f "$POL/60-broken.yaml"
ctl stats | grep -q '"ok":true' || fail "stats after reload"

# Expiry lifts the drop (ladder [6, 12]: the attacker's first ban ends after 6 s).
for _ in $(seq 1 40); do in_set ban4p '198.18.2.2 . 5090' || break; sleep 0.5; done
in_set ban4p '198.18.2.2 . 5090' && fail "attacker ban did not expire"

log PASS
