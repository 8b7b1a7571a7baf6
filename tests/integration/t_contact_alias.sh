#!/usr/bin/env bash
# sipedge in front of a Kamailio registrar without Path support, with Contact aliases
# (policy nat.contact_alias): Kamailio stores each Contact as an alias at sipedge's
# core address that carries the flow token and the original URI, and no Path; the
# phone sees its own Contact in the 200; an INVITE sent to Kamailio goes to the alias,
# and sipedge delivers it to the phone with the original Request-URI.
. "$(dirname "$0")/lib.sh"
it_init contact_alias
need_cmd sipp python3 kamailio kamcmd
need_sipedge

PUB=$(it_addr 1)
CORE=$(it_addr 2)
KAM=$(it_addr 3)
CLI=$(it_addr 10)
PHONE=$(it_addr 11)
CALLER=$(it_addr 12)

make_csv "$IT_TMP/reg.csv" 1000 5
test_policy_dir "$IT_TMP/policy" "nat:
  contact_alias: true"

start_kamailio "$IT_KAM_DIR/registrar_nopath.cfg" "$KAM" 5060 WITH_AUTH WITH_MSGLOG
start_sipedge --listen-udp "$PUB:5060" --core "$CORE:5070" --registrar "$KAM:5060" \
    --policy "$IT_TMP/policy" --log-level debug

# A few authenticated registrations: every binding must be an alias.
CLI_PORT=$(free_udp_port "$CLI")
run_sipp reg -sf "$IT_SIPP_DIR/reg_auth_uac.xml" -inf "$IT_TMP/reg.csv" \
    -key domain "$PUB" -key expires 600 -i "$CLI" -p "$CLI_PORT" \
    -m 5 -r 5 -l 5 -max_retrans 4 -recv_timeout 5000 "$PUB:5060"
sipp_check reg $? 5
sipedge_alive || fail "sipedge died during registrations"
# Each worker has its own core port (lib.sh core_port_re).
PORTS=$(core_port_re)
grep -qE "MSGLOG req src=$CORE:$PORTS .*rm=\[REGISTER\] .*path=\[<null>\]" "$KAM_LOG" ||
    fail "no REGISTER without Path from sipedge's core address $CORE:$PORTS in the Kamailio log"

# The phone: registers, then waits for the INVITE on the same port.
PHONE_PORT=$(free_udp_port "$PHONE")
PHONE_URI="sip:1500@$PHONE:$PHONE_PORT;transport=udp"
phone_register 1500 "$PHONE_PORT"

# Kamailio holds aliases pointing at sipedge's core address, each decoding to the
# Contact the client registered, and no Path.
kam_ul_dump >"$IT_TMP/ul.dump" 2>&1 || fail "kamcmd ul.dump failed"
python3 - "$IT_TMP/ul.dump" "$CORE" "$CLI" "$CLI_PORT" "$PHONE_URI" "$PORTS" <<'PY' ||
import base64, re, sys
text = open(sys.argv[1]).read()
core, cli, cli_port, phone_uri, ports = sys.argv[2:7]
want = {str(u): "sip:%d@%s:%s;transport=udp" % (u, cli, cli_port) for u in range(1000, 1005)}
want["1500"] = phone_uri
got, paths, cur = {}, [], None
for line in text.splitlines():
    m = re.search(r'AoR: (\S+)', line)
    if m:
        cur = m.group(1)
    m = re.search(r'Address: (\S+)', line)
    if m and cur:
        got.setdefault(cur, []).append(m.group(1))
    m = re.search(r'Path: (.*)', line)
    if m:
        paths.append(m.group(1).strip())
bad = {}
for aor, orig in want.items():
    addrs = got.get(aor, [])
    ok = False
    for a in addrs:
        m = re.fullmatch(r'sip:([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]+)@' + re.escape(core) + ':' + ports, a)
        if m:
            enc = m.group(2)
            ok = ok or base64.urlsafe_b64decode(enc + '=' * (-len(enc) % 4)).decode() == orig
    if not ok:
        bad[aor] = addrs
if bad or any(p != '[not set]' for p in paths):
    print("bindings that are not aliases of the registered Contact:", bad, "paths:", paths)
    sys.exit(1)
print("%d bindings, each an alias at %s:%s without Path" % (len(want), core, ports))
PY
    fail "Kamailio's bindings are not Contact aliases through sipedge"

# The phone saw its own Contact in the 200, not the alias.
python3 - "$IT_TMP/sipp-phone-msg.log" "$PHONE_URI" "$CORE" "$PORTS" <<'PY' ||
import re, sys
log = open(sys.argv[1], encoding='latin-1').read()
phone_uri, core, ports = sys.argv[2], sys.argv[3], sys.argv[4]
oks = [m for m in re.split(r'\n(?=-{5,})', log) if re.search(r'^SIP/2\.0 200 ', m, re.M)
       and re.search(r'^CSeq: \d+ REGISTER', m, re.M)]
if not oks:
    print("no 200 to the REGISTER in the phone's trace"); sys.exit(1)
last = oks[-1]
if ('Contact: <%s>' % phone_uri) not in last or re.search(re.escape(core) + ':' + ports, last):
    print("200 to the phone does not show its own Contact:\n" + last); sys.exit(1)
PY
    fail "the phone's 200 does not show the Contact it registered"

phone_call 1500 "$KAM:5060"
grep -qE "ROUTE INVITE to ru=\[sip:[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*@$CORE:$PORTS\] du=\[<null>\]" "$KAM_LOG" ||
    fail "Kamailio did not send the INVITE to the alias at sipedge's core address"
grep -aqF "INVITE $PHONE_URI SIP/2.0" "$IT_TMP/sipp-phone-msg.log" ||
    fail "the INVITE at the phone does not carry the original Request-URI $PHONE_URI"
grep -aqE "$CORE:$PORTS" "$IT_TMP/sipp-phone-msg.log" &&
    fail "an alias at sipedge's core address reached the phone"

stop_sipedge
log PASS
