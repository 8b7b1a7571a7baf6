#!/usr/bin/env bash
# Bad input on the public UDP port: oversized datagram, REGISTER without Call-ID,
# Max-Forwards: 0, garbage To, random binary, a stray response. sipedge must answer
# where an answer is due (483, 400), forward none of them to the registrar (Kamailio
# logs every datagram it receives), stay up, and still relay a valid REGISTER.
. "$(dirname "$0")/lib.sh"
it_init bad_input
need_cmd sipp python3 kamailio kamcmd
need_sipedge

PUB=$(it_addr 1)
CORE=$(it_addr 2)
KAM=$(it_addr 3)
CLI=$(it_addr 10)
MAX_BYTES=4096

# Site overlay, applied after policy.yaml (files apply in name order).
test_policy_dir "$IT_TMP/policy" "limits:
  max_message_bytes: $MAX_BYTES"
start_kamailio "$IT_KAM_DIR/registrar.cfg" "$KAM" 5060 WITH_MSGLOG WITH_RAWLOG
start_sipedge --listen-udp "$PUB:5060" --core "$CORE:5070" --registrar "$KAM:5060" \
    --policy "$IT_TMP/policy" --log-level debug

# Each bad message is sent from its own source address (.20 up), so strikes or a ban
# earned by one case cannot hide another case's reply. Markers: bad-<case>-<pid>.
python3 - "$PUB" "$IT_NET" "$$" "$MAX_BYTES" >"$IT_TMP/bad.out" 2>&1 <<'PY'
import os, socket, sys, time
pub, net, pid, max_bytes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def register(case, src, port, drop=(), extra=(), replace=None):
    h = [
        f"REGISTER sip:{pub}:5060 SIP/2.0",
        f"Via: SIP/2.0/UDP {src}:{port};branch=z9hG4bK{case}{pid};rport",
        "Max-Forwards: 70",
        f"From: <sip:2001@{pub}>;tag=bad-{case}-{pid}",
        f"To: <sip:2001@{pub}>",
        f"Call-ID: bad-{case}-{pid}",
        "CSeq: 1 REGISTER",
        f"Contact: <sip:2001@{src}:{port}>",
        "Expires: 600",
    ]
    h = [x for x in h if not any(x.startswith(d) for d in drop)]
    if replace:
        h = [replace.get(x.split(':', 1)[0], x) for x in h]
    h += list(extra)
    h.append("Content-Length: 0")
    return ("\r\n".join(h) + "\r\n\r\n").encode()

cases = []  # (name, payload builder, allowed replies: set of codes, None = no reply)
cases.append(("oversize", lambda s, p: register("oversize", s, p,
    extra=["X-Pad: " + "a" * (max_bytes + 1000)]), {None, 513}))
cases.append(("nocallid", lambda s, p: register("nocallid", s, p, drop=("Call-ID",)), {None, 400}))
cases.append(("maxfwd0", lambda s, p: register("maxfwd0", s, p,
    replace={"Max-Forwards": "Max-Forwards: 0"}), {483}))
cases.append(("badto", lambda s, p: register("badto", s, p,
    replace={"To": "To: <<<garbage@@@;;;>"}), {400}))
cases.append(("binary", lambda s, p: b"\xff\xfe" + os.urandom(200) + f"bad-binary-{pid}".encode()
    + os.urandom(200), {None}))
cases.append(("stray", lambda s, p: (
    f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.77:5060;branch=z9hG4bKstray{pid}\r\n"
    f"From: <sip:2001@{pub}>;tag=bad-stray-{pid}\r\nTo: <sip:2001@{pub}>;tag=x\r\n"
    f"Call-ID: bad-stray-{pid}\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n").encode(), {None}))

bad = 0
for i, (name, build, allowed) in enumerate(cases):
    src = f"{net}.{20 + i}"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    data = build(src, s.getsockname()[1])
    s.sendto(data, (pub, 5060))
    codes = []
    end = time.time() + 1.0
    while time.time() < end:
        s.settimeout(max(0.01, end - time.time()))
        try:
            rep, _ = s.recvfrom(65535)
        except socket.timeout:
            break
        line = rep.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        codes.append(int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else line)
    s.close()
    final = [c for c in codes if not (isinstance(c, int) and c < 200)]
    got = final[0] if final else None
    ok = got in allowed and len(final) <= 1
    print(f"{'ok ' if ok else 'BAD'} {name:9s} {len(data):6d} bytes  replies={codes}  allowed={sorted(map(str, allowed))}")
    bad += not ok
sys.exit(1 if bad else 0)
PY
py_rc=$?
cat "$IT_TMP/bad.out" >&2
sipedge_alive || fail "sipedge died on bad input"
errs=()
[ "$py_rc" -eq 0 ] || errs+=("unexpected replies to bad input (see above);")

# Still relays a valid REGISTER (from a clean source address).
printf 'SEQUENTIAL\n3001;pw3001;\n' >"$IT_TMP/one.csv"
run_sipp reg -sf "$IT_SIPP_DIR/reg_uac.xml" -inf "$IT_TMP/one.csv" -key domain "$PUB" \
    -key expires 600 -i "$CLI" -p "$(free_udp_port "$CLI")" -m 1 -max_retrans 4 \
    -recv_timeout 5000 "$PUB:5060"
sipp_check reg $? 1

sleep 0.3
grep -q 'RAWLOG' "$KAM_LOG" || fail "Kamailio logged no RAWLOG line (WITH_RAWLOG broken?)"
leaked=$(grep -oE "bad-[a-z0-9]+-$$" "$KAM_LOG" | sort -u)
[ -z "$leaked" ] || errs+=("bad input reached the registrar: $(echo $leaked);")

stop_sipedge
grep -E 'stats (edge|udp)' "$SIPEDGE_LOG" >&2
[ ${#errs[@]} -eq 0 ] || fail "${errs[*]}"
log PASS
