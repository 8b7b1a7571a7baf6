#!/usr/bin/env bash
# HTTP admin listener: /metrics passes a strict text-format 0.0.4 parse and moves by the
# right amounts after N registrations and a ban; the JSON API answers with the documented
# status codes (404, 405, 400, 413, 403 for a non-trusted peer without the token, 200 with
# it; 421 for a Host that does not name the listener, as a DNS-rebinding page sends; 403
# for a state-changing call without the token even from loopback, and for every one when
# no token is configured) and bans set through it reach the guard (sipedgectl sees them).
. "$(dirname "$0")/lib.sh"
it_init ops_admin
. "$(dirname "$0")/ops_lib.sh"
need_cmd python3 curl

TOKEN=ops-test-token-$$
cat >"$IT_TMP/sipedge.yaml" <<EOF_CFG
admin:
  token: "$TOKEN"
EOF_CFG
ops_start -c "$IT_TMP/sipedge.yaml" --admin-socket "$IT_TMP/admin.sock"
AUTH=(-H "Authorization: Bearer $TOKEN")

expect() { # expect WANT_STATUS DESCRIPTION "STATUS BODY"
    local want=$1 what=$2 got=$3
    [ "${got%% *}" = "$want" ] || fail "$what: want HTTP $want, got: $got"
    log "$what: $want"
}

m() { ops_metric "$@" || fail "metrics scrape: $1{$2} (see metrics.txt)"; }

ok0=$(m sipedge_register_total 'outcome="ok"')
rej0=$(m sipedge_register_total 'outcome="rejected"')
udp0=$(m sipedge_flows 'transport="udp"')
rel0=$(m sipedge_edge_relayed_register_total)
lat0=$(m sipedge_relay_latency_seconds_count)
up=$(m sipedge_registrar_up)
[ "$up" = 1 ] || fail "sipedge_registrar_up is $up before any traffic"

N=4
for ((i = 0; i < N; i++)); do
    out=$(ops_register $((1200 + i)) 'Phone/1.0') || fail "REGISTER $((1200 + i)): $out"
done
ok1=$(m sipedge_register_total 'outcome="ok"')
rej1=$(m sipedge_register_total 'outcome="rejected"')
udp1=$(m sipedge_flows 'transport="udp"')
rel1=$(m sipedge_edge_relayed_register_total)
lat1=$(m sipedge_relay_latency_seconds_count)
[ $((ok1 - ok0)) -eq $N ] || fail "register ok moved by $((ok1 - ok0)), want $N"
# Every digest registration is challenged once (401) first.
[ $((rej1 - rej0)) -eq $N ] || fail "register rejected moved by $((rej1 - rej0)), want $N"
[ $((udp1 - udp0)) -eq $N ] || fail "udp flows moved by $((udp1 - udp0)), want $N"
[ $((rel1 - rel0)) -eq $((2 * N)) ] || fail "relayed_register moved by $((rel1 - rel0))"
[ $((lat1 - lat0)) -eq $((2 * N)) ] || fail "latency count moved by $((lat1 - lat0))"
log "metrics after $N registrations: ok +$N, rejected +$N, udp flows +$N"

# A ban through the API: gauge +1, guard counter +1, visible to sipedgectl's socket.
bans0=$(m sipedge_bans_active)
gb0=$(m sipedge_guard_bans_total)
expect 200 "POST /api/bans" "$(ops_http POST /api/bans '{"ip":"198.51.100.77","duration":600}' "${AUTH[@]}")"
bans1=$(m sipedge_bans_active)
gb1=$(m sipedge_guard_bans_total)
[ $((bans1 - bans0)) -eq 1 ] || fail "bans_active moved by $((bans1 - bans0)), want 1"
[ $((gb1 - gb0)) -eq 1 ] || fail "guard bans moved by $((gb1 - gb0)), want 1"
res=$(printf 'bans\n' | python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"bans\n")
print(s.recv(65536).decode())' "$IT_TMP/admin.sock")
grep -q '198.51.100.77' <<<"$res" || fail "ban set via HTTP not visible on the admin socket: $res"
r=$(ops_http GET /api/bans)
expect 200 "GET /api/bans" "$r"
grep -q '"source":"198.51.100.77"' <<<"$r" || fail "GET /api/bans lacks the ban: $r"

# Inventory and filters.
r=$(ops_http GET '/api/flows?aor=sip:1201@')
expect 200 "GET /api/flows?aor=" "$r"
python3 -c '
import json, sys
d = json.loads(sys.argv[1].split(" ", 1)[1])
f = d["flows"]
assert len(f) == 1 and f[0]["registrations"][0]["aor"].startswith("sip:1201@"), f
assert f[0]["registrations"][0]["user_agent"] == "Phone/1.0", f' "$r" ||
    fail "flows filtered by aor: $r"
r=$(ops_http GET "/api/registrations?ip=$OPS_CLI")
python3 -c '
import json, sys
d = json.loads(sys.argv[1].split(" ", 1)[1])
assert len(d["registrations"]) == int(sys.argv[2]), d' "$r" "$N" ||
    fail "registrations filtered by ip: $r"
r=$(ops_http GET "/api/registrations?ip=192.0.2.1")
grep -q '"registrations":\[\]' <<<"$r" || fail "ip filter for an unknown address: $r"
expect 200 "GET /api/stats" "$(ops_http GET /api/stats)"

# Status codes.
expect 404 "unknown path" "$(ops_http GET /api/nope)"
expect 405 "wrong method" "$(ops_http PUT /metrics '' "${AUTH[@]}")"
expect 400 "bad JSON" "$(ops_http POST /api/bans '{"ip":' "${AUTH[@]}")"
expect 400 "unknown member" "$(ops_http POST /api/bans '{"ip":"198.51.100.1","x":1}' "${AUTH[@]}")"
expect 400 "bad address" "$(ops_http POST /api/bans '{"ip":"1.2.3.4 5"}' "${AUTH[@]}")"
head -c 5000 /dev/zero | tr '\0' ' ' >"$IT_TMP/big.json"
expect 413 "body over 4 KiB" "$(ops_http POST /api/bans @"$IT_TMP/big.json" "${AUTH[@]}")"
expect 403 "non-loopback peer, no token" \
    "$(ops_http GET /api/stats '' --interface "$OPS_OTHER")"
expect 403 "non-loopback peer, wrong token" \
    "$(ops_http GET /api/stats '' --interface "$OPS_OTHER" -H 'Authorization: Bearer nope')"
expect 200 "non-loopback peer with the token" \
    "$(ops_http GET /api/stats '' --interface "$OPS_OTHER" -H "Authorization: Bearer $TOKEN")"
expect 403 "cross-origin POST" \
    "$(ops_http POST /api/reload '' -H 'Origin: http://evil.example' "${AUTH[@]}")"
# DNS rebinding: the page's own name in Host (and Origin) is refused, reads included.
expect 421 "Host evil.example" \
    "$(ops_http GET /api/stats '' -H "Host: evil.example:$OPS_ADMIN_PORT")"
expect 421 "Host evil.example, same-origin POST with the token" \
    "$(ops_http POST /api/reload '' -H "Host: evil.example:$OPS_ADMIN_PORT" \
        -H "Origin: http://evil.example:$OPS_ADMIN_PORT" "${AUTH[@]}")"
expect 421 "no Host" "$(ops_http GET /api/stats '' -H 'Host:')"
expect 200 "Host localhost:PORT" \
    "$(ops_http GET /api/stats '' -H "Host: localhost:$OPS_ADMIN_PORT")"
# Changes need the token from loopback as well.
expect 403 "POST from loopback without the token" "$(ops_http POST /api/reload)"
expect 403 "DELETE from loopback without the token" "$(ops_http DELETE /api/bans/198.51.100.77)"
expect 403 "POST from loopback with a wrong token" \
    "$(ops_http POST /api/reload '' -H 'Authorization: Bearer nope')"
expect 200 "POST /api/reload" "$(ops_http POST /api/reload '' "${AUTH[@]}")"
expect 200 "DELETE /api/bans/IP" "$(ops_http DELETE /api/bans/198.51.100.77 '' "${AUTH[@]}")"
expect 404 "DELETE of an address not banned" \
    "$(ops_http DELETE /api/bans/198.51.100.77 '' "${AUTH[@]}")"
[ "$(m sipedge_bans_active)" -eq "$bans0" ] || fail "bans_active did not go back after unban"
stop_sipedge

# Without admin.token the HTTP listener is read-only: changes go through the UNIX socket.
ops_start --admin-socket "$IT_TMP/admin.sock"
expect 200 "no token: GET /api/stats" "$(ops_http GET /api/stats)"
r=$(ops_http POST /api/bans '{"ip":"198.51.100.78"}')
expect 403 "no token: POST /api/bans" "$r"
grep -q 'sipedgectl' <<<"$r" || fail "the refusal does not point at the admin socket: $r"
expect 403 "no token: POST with any bearer" \
    "$(ops_http POST /api/reload '' -H 'Authorization: Bearer ')"
stop_sipedge
log PASS
