#!/usr/bin/env bash
# sipedge in front of a Kamailio registrar (digest auth on): challenges and
# authenticated REGISTERs pass through, Kamailio stores a Path naming sipedge's core
# address, and an INVITE sent to Kamailio reaches the phone through sipedge.
. "$(dirname "$0")/lib.sh"
it_init register_kamailio
need_cmd sipp python3 kamailio kamcmd
need_sipedge

PUB=$(it_addr 1)
CORE=$(it_addr 2)
KAM=$(it_addr 3)
CLI=$(it_addr 10)
PHONE=$(it_addr 11)
CALLER=$(it_addr 12)

make_csv "$IT_TMP/reg.csv" 1000 20
test_policy_dir "$IT_TMP/policy"

start_kamailio "$IT_KAM_DIR/registrar.cfg" "$KAM" 5060 WITH_AUTH WITH_MSGLOG
start_sipedge --listen-udp "$PUB:5060" --core "$CORE:5070" --registrar "$KAM:5060" \
    --policy "$IT_TMP/policy" --log-level debug

run_sipp reg -sf "$IT_SIPP_DIR/reg_auth_uac.xml" -inf "$IT_TMP/reg.csv" \
    -key domain "$PUB" -key expires 600 -i "$CLI" -p "$(free_udp_port "$CLI")" \
    -m 20 -r 20 -l 20 -max_retrans 4 -recv_timeout 5000 "$PUB:5060"
sipp_check reg $? 20
sipedge_alive || fail "sipedge died during registrations"

# Kamailio must have seen the REGISTERs from sipedge's core socket, not from sipp.
grep -q "MSGLOG req src=$CLI:" "$KAM_LOG" && fail "Kamailio received a request straight from the client"
# Each worker has its own core port (lib.sh core_port_re).
PORTS=$(core_port_re)
grep -qE "MSGLOG req src=$CORE:$PORTS .*rm=\[REGISTER\]" "$KAM_LOG" ||
    fail "no REGISTER from sipedge's core address $CORE:$PORTS in the Kamailio log"

kam_ul_dump >"$IT_TMP/ul.dump" 2>&1 || fail "kamcmd ul.dump failed"
python3 - "$IT_TMP/ul.dump" "$CORE" "$PORTS" <<'PY' || fail "bindings in ul.dump lack a Path through sipedge"
import re, sys
text = open(sys.argv[1]).read()
core, ports = sys.argv[2], sys.argv[3]
aors = {}
cur = None
for line in text.splitlines():
    m = re.search(r'AoR: (\S+)', line)
    if m:
        cur = m.group(1); aors.setdefault(cur, [])
    m = re.search(r'Path: (.*)', line)
    if m and cur:
        aors[cur].append(m.group(1).strip())
missing = [u for u in map(str, range(1000, 1020)) if u not in aors]
bad = [u for u in map(str, range(1000, 1020)) if u in aors and not any(
    re.search(r'<sip:[^>]*@' + re.escape(core) + r':' + ports + r';[^>]*lr', p) for p in aors[u])]
if missing or bad:
    print("missing AoRs:", missing, "bad Path:", {u: aors[u] for u in bad})
    sys.exit(1)
print("20 bindings, each with Path via", core)
PY

phone_register 1500
phone_call 1500 "$KAM:5060"
grep -qE "ROUTE INVITE .*du=\[sip:[^]]*$CORE:$PORTS" "$KAM_LOG" ||
    fail "Kamailio did not route the INVITE to sipedge's core address (Path not used)"

stop_sipedge
log PASS
