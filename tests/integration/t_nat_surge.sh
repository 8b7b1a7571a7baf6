#!/usr/bin/env bash
# Surge after a registrar outage (issue: surge protection). Kamailio is stopped (SIGSTOP)
# for OUTAGE_S while a few phones behind the NAT try to register; when it is back, 1,000
# phones register within 4 s (250/s, each from its own socket). sipedge's global budget
# towards the registrar (guard.limits.registrar: BUDGET/s, burst BURST) must hold:
#   - in every one-second window after the outage, sipedge relays at most
#     BUDGET + BURST REGISTERs, and Kamailio receives at most that many;
#   - the phones over the budget get 503 with a Retry-After inside the policy's
#     retry_after_min..retry_after_max, and the values are spread (not one value);
#   - the budget completes the registrations it admits: a REGISTER without credentials
#     pays for the answer to its challenge too, so nearly every phone whose first
#     REGISTER got through registers (at least 80 % of relayed REGISTERs / 2), instead of
#     the budget going to challenges whose answers are refused.
# Without the budget the relayed rate follows the clients' 500 REGISTERs/s (each phone
# sends two: the challenge, then credentials) and the test fails.
# shellcheck source=tests/integration/nat_lib.sh disable=SC2034
. "$(dirname "$0")/nat_lib.sh"
nat_enter "$0" "$@"
it_init nat_surge
need_cmd sipp python3 kamailio kamcmd
need_sipedge

CLIENTS=1000
SURGE_RATE=250
OUTAGE_S=8
BUDGET=100
BURST=100
RA_MIN=5
RA_MAX=30

# All phones share the NAT's one address: lift the per-IP and per-AOR limits so that
# only the registrar budget is under test.
test_policy_dir "$IT_TMP/policy" "guard:
  limits:
    per_ip: {rate: 100000, burst: 100000}
    registrar: {rate: $BUDGET, burst: $BURST, reserved_percent: 30}
    retry_after_min: $RA_MIN
    retry_after_max: $RA_MAX"
make_csv "$IT_TMP/users.csv" 1000 "$CLIENTS"
make_csv "$IT_TMP/early.csv" 1900 20

start_kamailio "$IT_KAM_DIR/registrar.cfg" "$SRV_REG" 5060 WITH_AUTH
start_sipedge --listen-udp "$SRV_PUB:5060" --core "$SRV_CORE:5070" --registrar "$SRV_REG:5060" \
    --policy "$IT_TMP/policy" --log-level info

# 1. The outage: 20 phones try to register while Kamailio is stopped; they fail.
kam_signal STOP
log "registrar outage: SIGSTOP to Kamailio's ${#KAM_ALL_PIDS[@]} processes for ${OUTAGE_S}s"
cli_run_sipp early -sf "$IT_SIPP_DIR/reg_auth_uac.xml" -inf "$IT_TMP/early.csv" \
    -key domain "$SRV_PUB" -key expires 600 -t un -i "$NAT_CLI_IP" -m 20 -r 10 \
    -max_retrans 2 -recv_timeout 3000 "$SRV_PUB:5060" || true
sleep $((OUTAGE_S > 5 ? OUTAGE_S - 5 : 0))
kam_signal CONT
# Stopped, Kamailio kept the early REGISTERs in its socket buffer and answers them now.
sleep 2
reg0=$(kam_stat core:rcv_requests_register)
[ -n "$reg0" ] || fail "kamcmd stats.get_statistics core:rcv_requests_register gave nothing"

# 2. The surge: 1,000 phones at 250/s, each from its own socket (its own NAT mapping).
cli_bg_sipp surge -sf "$IT_SIPP_DIR/reg_auth_uac.xml" -inf "$IT_TMP/users.csv" \
    -key domain "$SRV_PUB" -key expires 600 -t un -max_socket $((CLIENTS + 100)) \
    -i "$NAT_CLI_IP" -m "$CLIENTS" -l "$CLIENTS" -r "$SURGE_RATE" -max_retrans 2 \
    -recv_timeout 4000 "$SRV_PUB:5060"
SURGE_PID=$BG_PID

# One sample a second for 8 s: sipedge's relayed REGISTERs and Kamailio's received ones.
rel0=$(edge_stat relayed_register)
prev_rel=$rel0
t0=$(date +%s.%N)
prev_kam=$reg0
prev_t=$(date +%s.%N)
peak_rel=0
peak_kam=0
samples=()
for ((i = 0; i < 8; i++)); do
    sleep 1
    rel=$(edge_stat relayed_register)
    kam=$(kam_stat core:rcv_requests_register)
    t=$(date +%s.%N)
    d_rel=$((rel - prev_rel))
    d_kam=$((kam - prev_kam))
    dt=$(awk -v a="$prev_t" -v b="$t" 'BEGIN { printf "%.2f", b - a }')
    samples+=("${dt}s:relayed=$d_rel,kamailio=$d_kam")
    # A window somewhat over one second may hold a little more than one second's budget.
    lim=$(awk -v dt="$dt" -v b="$BUDGET" -v k="$BURST" 'BEGIN { printf "%d", b * dt + k + 10 }')
    [ "$d_rel" -gt "$peak_rel" ] && peak_rel=$d_rel
    [ "$d_kam" -gt "$peak_kam" ] && peak_kam=$d_kam
    [ "$d_rel" -le "$lim" ] ||
        fail "sipedge relayed $d_rel REGISTERs in ${dt}s (budget $BUDGET/s, burst $BURST): ${samples[*]}"
    [ "$d_kam" -le "$lim" ] ||
        fail "Kamailio received $d_kam REGISTERs in ${dt}s (budget $BUDGET/s, burst $BURST): ${samples[*]}"
    prev_rel=$rel
    prev_kam=$kam
    prev_t=$t
done
total_rel=$((prev_rel - rel0))
total_dt=$(awk -v a="$t0" -v b="$prev_t" 'BEGIN { printf "%.2f", b - a }')
total_lim=$(awk -v dt="$total_dt" -v b="$BUDGET" -v k="$BURST" 'BEGIN { printf "%d", b * dt + k + 10 }')
log "per-second samples after the outage: ${samples[*]}"
log "in ${total_dt}s sipedge relayed $total_rel REGISTERs (limit $total_lim)"
[ "$total_rel" -le "$total_lim" ] || fail "sipedge relayed $total_rel REGISTERs in ${total_dt}s, over the budget"

log "peak: sipedge relayed $peak_rel/s, Kamailio received $peak_kam/s (budget $BUDGET/s + burst $BURST)"
wait "$SURGE_PID"

S=$(edge_stats)
over=$(stat_of "$(last_stats guard)" over_limit_registrar)
ok=$(sipp_stat surge 'SuccessfulCall(C)' 2>/dev/null)
log "surge: $ok of $CLIENTS phones registered; guard over_limit_registrar=${over:-?}; $S"
[ "$peak_rel" -ge $((BUDGET / 2)) ] || fail "the surge never reached the budget (peak $peak_rel/s): nothing was tested"
prepaid=$(stat_of "$(last_stats guard)" registrar_prepaid_served)
log "challenge answers passed on their prepaid budget: ${prepaid:-?}"
[ $((${ok:-0} * 2 * 10)) -ge $((total_rel * 8)) ] ||
    fail "only ${ok:-0} phones registered for $total_rel relayed REGISTERs: the budget went to challenges whose answers were refused"
[ "${ok:-0}" -lt "$CLIENTS" ] || fail "all $CLIENTS phones registered at once: the budget did not apply"

# The phones over the budget: 503 with a spread Retry-After inside the policy's bounds.
python3 - "$IT_TMP/sipp-surge-msg.log" "$RA_MIN" "$RA_MAX" <<'PY' || fail "503 answers to the surge are wrong"
import re, sys
log = open(sys.argv[1], encoding="latin-1").read()
lo, hi = int(sys.argv[2]), int(sys.argv[3])
msgs = re.split(r"\n(?=-{5,})", log)
n503 = 0
values = []
for m in msgs:
    if not re.search(r"^SIP/2\.0 503 ", m, re.M):
        continue
    n503 += 1
    ra = re.search(r"^Retry-After:\s*(\d+)", m, re.M | re.I)
    if not ra:
        print("a 503 without Retry-After:\n" + m[:400]); sys.exit(1)
    values.append(int(ra.group(1)))
if n503 == 0:
    print("no 503 in the surge"); sys.exit(1)
bad = [v for v in values if v < lo or v > hi]
if bad:
    print("Retry-After outside %d..%d: %s" % (lo, hi, sorted(set(bad))[:10])); sys.exit(1)
if len(set(values)) < 3:
    print("Retry-After not spread: %s" % sorted(set(values))); sys.exit(1)
print("%d answers 503, Retry-After %d..%d over %d distinct values" % (n503, min(values), max(values), len(set(values))))
PY

stop_sipedge
log PASS
