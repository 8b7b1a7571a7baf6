#!/usr/bin/env bash
# tools/sipload through sipedge to the embedded registrar: 200 users over 4 sockets on two
# source addresses register with MD5 digest, then refresh at 500/s for 3 s. Every user
# registers, nothing times out or gets another final status, the 200s come at the offered
# rate (within 20%), and sipedge counts every REGISTER as relayed. A second run with one
# user's password wrong on the registrar: that user fails, the others register.
. "$(dirname "$0")/lib.sh"
it_init sipload
need_sipedge
SIPLOAD=$SIPEDGE_BUILD/tools/sipload
[ -x "$SIPLOAD" ] || fail "sipload not built at $SIPLOAD"

PUB=$(it_addr 1)  # public listener
CORE=$(it_addr 2) # sipedge core-side socket
REG=$(it_addr 4)  # embedded registrar
CLI1=$(it_addr 10)
CLI2=$(it_addr 11)
USERS=200
RATE=500

# The default guard limits are sized for one phone per address; raise them as
# scripts/bench.sh does. Regcache off: every refresh goes to the registrar.
test_policy_dir "$IT_TMP/policy" 'guard:
  limits:
    per_ip: {rate: 1000000, burst: 1000000}
    per_ip_port: {rate: 1000000, burst: 1000000}
    per_aor_register: {rate: 1000, burst: 1000}
    registrar: {rate: 1000000, burst: 1000000}
regcache:
  enabled: false'
for ((u = 1000; u < 1000 + USERS; u++)); do echo "u$u:pwu$u"; done >"$IT_TMP/users.txt"

# val FILE KEY: KEY's value in sipload's key=value output.
val() { sed -n "s/^$2=//p" "$1" | head -n 1; }

start_sipedge --listen-udp "$PUB:5060" --core "$CORE:5070" --registrar-listen "$REG:5080" \
    --users "$IT_TMP/users.txt" --realm sipedge-test --policy "$IT_TMP/policy"

# 1. All users register, then refresh at the offered rate.
relayed0=$(edge_stat relayed_register)
"$SIPLOAD" --to "$PUB:5060" --users $USERS --start 1000 --sockets 4 --src "$CLI1,$CLI2" \
    --rate $RATE --duration 3 --timeout 2000 --register-timeout 5 \
    >"$IT_TMP/sipload1.out" 2>"$IT_TMP/sipload1.log" || true
relayed1=$(edge_stat relayed_register)
cat "$IT_TMP/sipload1.out" >&2
O=$IT_TMP/sipload1.out
[ "$(val "$O" registered)" = $USERS ] || fail "registered $(val "$O" registered) of $USERS"
[ "$(val "$O" failed)" = 0 ] || fail "failed users: $(val "$O" failed)"
[ "$(val "$O" timeouts)" = 0 ] || fail "timeouts: $(val "$O" timeouts)"
[ "$(val "$O" other_final)" = 0 ] || fail "other final statuses: $(val "$O" other_final)"
sent=$(val "$O" sent)
ok=$(val "$O" ok_200)
c401=$(val "$O" challenged_401)
# Every request got a final answer: a 200 or a challenge (one per user at least).
[ "$((ok + c401))" = "$sent" ] || fail "sent $sent but $ok 200s and $c401 401s"
[ "$c401" -ge $USERS ] || fail "only $c401 challenges for $USERS users"
rate=$(val "$O" rate_200)
awk -v r="$rate" -v o=$RATE 'BEGIN { exit !(r >= 0.8 * o && r <= 1.2 * o) }' ||
    fail "200s at $rate/s, offered $RATE/s"
[ $((relayed1 - relayed0)) -eq "$sent" ] ||
    fail "sipedge relayed $((relayed1 - relayed0)) REGISTERs, sipload sent $sent"
log "run 1: $sent REGISTERs, $ok 200s at $rate/s, sipedge relayed $((relayed1 - relayed0))"

# 2. One user's password differs on the registrar: that user fails, the others register.
stop_sipedge
sed -i 's/^u1007:.*/u1007:notthepassword/' "$IT_TMP/users.txt"
start_sipedge --listen-udp "$PUB:5060" --core "$CORE:5070" --registrar-listen "$REG:5080" \
    --users "$IT_TMP/users.txt" --realm sipedge-test --policy "$IT_TMP/policy"
"$SIPLOAD" --to "$PUB:5060" --users 20 --start 1000 --sockets 2 --src "$CLI1" \
    --rate 200 --duration 1 --timeout 2000 --register-timeout 5 \
    >"$IT_TMP/sipload2.out" 2>"$IT_TMP/sipload2.log" && fail "sipload exited 0 with a user failing"
cat "$IT_TMP/sipload2.out" >&2
O=$IT_TMP/sipload2.out
[ "$(val "$O" registered)" = 19 ] || fail "registered $(val "$O" registered) of 19"
[ "$(val "$O" failed)" = 1 ] || fail "failed users: $(val "$O" failed), want 1"
[ "$(val "$O" timeouts)" = 0 ] || fail "timeouts: $(val "$O" timeouts)"
[ "$(val "$O" other_final)" = 0 ] || fail "other final statuses: $(val "$O" other_final)"

sipedge_alive || fail "sipedge died"
stop_sipedge
log PASS
