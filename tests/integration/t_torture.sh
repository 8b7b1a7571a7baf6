#!/usr/bin/env bash
# RFC 4475 torture messages (tests/data/sip/torture, classes.tsv) sent one by one to
# sipedge's public UDP port, Kamailio behind it logging every datagram it receives.
# Checks: sipedge stays up; nothing with must_not_forward=yes reaches Kamailio; invalid
# requests for which a response can be formed get a >= 400 reply; no response is ever
# answered; the valid REGISTERs (UDP Via) reach Kamailio; a normal REGISTER still works.
. "$(dirname "$0")/lib.sh"
it_init torture
need_cmd sipp python3 kamailio kamcmd
need_sipedge

PUB=$(it_addr 1)
CORE=$(it_addr 2)
KAM=$(it_addr 3)
CLI=$(it_addr 10)
TORTURE=$SIPEDGE_SRC/tests/data/sip/torture
[ -f "$TORTURE/classes.tsv" ] || fail "missing $TORTURE/classes.tsv"

test_policy_dir "$IT_TMP/policy"
cat >"$IT_TMP/sipedge.yaml" <<YAML
listen:
  udp: ["$PUB:5060"]
core:
  address: "$CORE:5070"
registrar:
  address: "$KAM:5060"
domains: [example.com, example.org, example.net, company.com, registrar.example.com,
          chair-dnrc.example.com, $PUB]
policy: "$IT_TMP/policy"
log:
  level: debug
YAML

start_kamailio "$IT_KAM_DIR/registrar.cfg" "$KAM" 5060 WITH_MSGLOG WITH_RAWLOG
start_sipedge -c "$IT_TMP/sipedge.yaml"

# Send every message; record replies. Each message comes from its own source address
# (.30 up) and from the port its top Via names (5060 if none), so a reply lands on our
# socket whether sipedge answers to the source port (rport) or to the Via port.
python3 - "$TORTURE" "$PUB" "$IT_NET" "$IT_TMP/replies.json" <<'PY' >&2 || fail "torture sender failed"
import json, os, re, socket, sys, time
tdir, pub, net, out = sys.argv[1:5]
rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(tdir, "classes.tsv"))
        if l.strip() and not l.startswith("#")]
result = {}
for i, (name, section, cls, mnf, expect) in enumerate(rows):
    data = open(os.path.join(tdir, name + ".dat"), "rb").read()
    src = f"{net}.{30 + i}"
    m = re.search(rb"^(?:via|v)\s*:\s*SIP\s*/\s*[\d.]+\s*/\s*\w+\s+[^\s;:,]+:(\d+)", data, re.M | re.I)
    port = int(m.group(1)) if m and 0 < int(m.group(1)) < 65536 else 5060
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((src, port))
    s.sendto(data, (pub, 5060))
    replies = []
    end = time.time() + 0.4
    while time.time() < end:
        s.settimeout(max(0.01, end - time.time()))
        try:
            rep, _ = s.recvfrom(65535)
        except socket.timeout:
            break
        replies.append(rep.split(b"\r\n", 1)[0].decode("latin-1"))
    s.close()
    result[name] = {"section": section, "class": cls, "must_not_forward": mnf == "yes",
                    "expect": expect, "replies": replies}
    print(f"sent {name:11s} {len(data):5d} bytes from {src}:{port}  replies={replies}")
json.dump(result, open(out, "w"), indent=1)
PY

sipedge_alive || fail "sipedge died during the torture messages"

# A normal REGISTER still goes through.
printf 'SEQUENTIAL\n3002;pw3002;\n' >"$IT_TMP/one.csv"
run_sipp reg -sf "$IT_SIPP_DIR/reg_uac.xml" -inf "$IT_TMP/one.csv" -key domain "$PUB" \
    -key expires 600 -i "$CLI" -p "$(free_udp_port "$CLI")" -m 1 -max_retrans 4 \
    -recv_timeout 5000 "$PUB:5060"
reg_rc=$?
sleep 0.5

python3 - "$TORTURE" "$IT_TMP/replies.json" "$KAM_LOG" <<'PY' >&2
import json, os, re, sys
tdir, rfile, klog = sys.argv[1:4]
res = json.load(open(rfile))
# The RAWLOG buffers span several lines (CRLF is not escaped): search the whole log.
raw = open(klog, encoding="latin-1").read()
fails, notes = [], []
for name, r in res.items():
    data = open(os.path.join(tdir, name + ".dat"), "rb").read()
    first = data.split(b"\r\n", 1)[0]
    is_req = not first.startswith(b"SIP/")
    m = re.search(rb"^(?:call-id|i)\s*:\s*([A-Za-z0-9.@_-]{6,})", data, re.M | re.I)
    if m:
        marker = m.group(1)[:40].decode()
    else:
        m = re.search(rb"branch=([A-Za-z0-9.!_-]+)", data)
        marker = m.group(1).decode()
    seen = marker in raw
    codes = []
    for line in r["replies"]:
        p = line.split(" ")
        codes.append(int(p[1]) if len(p) > 1 and p[1].isdigit() else -1)
    finals = [c for c in codes if c >= 200 or c < 0]
    method = first.split(b" ", 1)[0]
    via_udp = re.search(rb"^(?:via|v)\s*:\s*SIP/2.0/UDP", data, re.M | re.I) is not None
    verdict = []
    if r["must_not_forward"] and seen:
        verdict.append("FORWARDED (must not)")
    if not is_req and codes:
        verdict.append(f"answered a response with {r['replies']}")
    can_reply = is_req and name not in ("badinv01",) and (
        r["class"] == "invalid" or name in ("insuf", "zeromf"))
    if can_reply and not any(c >= 400 for c in finals):
        verdict.append(f"no >=400 reply (got {r['replies']})")
    if is_req and not seen and any(200 <= c < 300 for c in finals):
        verdict.append(f"2xx although the registrar never saw it: {r['replies']}")
    must_fwd = method == b"REGISTER" and not r["must_not_forward"] and via_udp
    if must_fwd and not seen:
        verdict.append("valid REGISTER not relayed to the registrar")
    status = "FAIL" if verdict else "ok  "
    line = (f"{status} {name:11s} {r['class']:8s} mnf={'yes' if r['must_not_forward'] else 'no '} "
            f"reached_registrar={'yes' if seen else 'no '} replies={r['replies']} {'; '.join(verdict)}")
    print(line)
    if verdict:
        fails.append(name)
print(f"{len(res) - len(fails)}/{len(res)} torture messages handled as expected; failing: {' '.join(fails)}")
sys.exit(1 if fails else 0)
PY
verdict_rc=$?
sipedge_alive || fail "sipedge died"
stop_sipedge
grep -E 'stats (edge|udp)' "$SIPEDGE_LOG" >&2
[ "$reg_rc" -eq 0 ] || fail "a valid REGISTER after the torture messages failed (sipp status $reg_rc)"
[ "$verdict_rc" -eq 0 ] || fail "torture expectations not met (see the table above)"
log PASS
