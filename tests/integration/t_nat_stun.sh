#!/usr/bin/env bash
# STUN on the SIP UDP port (RFC 5626 §4.4.2, RFC 5389): a Binding request to sipedge's
# public port gets a Binding success response with the same transaction ID and an
# XOR-MAPPED-ADDRESS naming the request's source:
#   - from a host without NAT: exactly its address and port;
#   - from behind the NAT: the NAT's public address and the mapped port, the same port
#     sipedge puts in rport= when a SIP request comes from that socket.
# About 5 s.
# shellcheck source=tests/integration/nat_lib.sh disable=SC2034
. "$(dirname "$0")/nat_lib.sh"
nat_enter "$0" "$@"
it_init nat_stun
need_cmd python3 kamailio kamcmd
need_sipedge

test_policy_dir "$IT_TMP/policy"
start_kamailio "$IT_KAM_DIR/registrar.cfg" "$SRV_REG" 5060
start_sipedge --listen-udp "$SRV_PUB:5060" --core "$SRV_CORE:5070" --registrar "$SRV_REG:5060" \
    --policy "$IT_TMP/policy" --log-level debug

cat >"$IT_TMP/stun.py" <<'PY'
import os, re, socket, struct, sys
src, dst, port, want_ip = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
COOKIE = 0x2112A442
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.settimeout(3)
lport = s.getsockname()[1]

def binding():
    tid = os.urandom(12)
    s.sendto(struct.pack("!HHI", 0x0001, 0, COOKIE) + tid, (dst, port))
    data, _ = s.recvfrom(2048)
    typ, length, cookie = struct.unpack("!HHI", data[:8])
    if typ != 0x0101 or cookie != COOKIE or data[8:20] != tid or len(data) != 20 + length:
        sys.exit(f"not a Binding success for our transaction: type {typ:#06x} len {length} "
                 f"cookie {cookie:#x} tid match {data[8:20] == tid} size {len(data)}")
    i = 20
    while i + 4 <= len(data):
        at, al = struct.unpack("!HH", data[i:i + 4])
        v = data[i + 4:i + 4 + al]
        if at == 0x0020 and v[1] == 0x01:
            xport = struct.unpack("!H", v[2:4])[0] ^ (COOKIE >> 16)
            xip = socket.inet_ntoa(struct.pack("!I", struct.unpack("!I", v[4:8])[0] ^ COOKIE))
            return xip, xport
        i += 4 + al + (-al % 4)
    sys.exit("no IPv4 XOR-MAPPED-ADDRESS in the response")

ip1, port1 = binding()
print(f"local {src}:{lport} -> XOR-MAPPED-ADDRESS {ip1}:{port1}")
if ip1 != want_ip:
    sys.exit(f"mapped address {ip1}, want {want_ip}")
# The same socket sends SIP: the rport sipedge records must be the mapped port.
opt = (f"OPTIONS sip:{dst}:{port} SIP/2.0\r\n"
       f"Via: SIP/2.0/UDP {src}:{lport};branch=z9hG4bK{os.urandom(6).hex()};rport\r\n"
       f"Max-Forwards: 70\r\nFrom: <sip:stun@{dst}>;tag=1\r\nTo: <sip:{dst}>\r\n"
       f"Call-ID: {os.urandom(6).hex()}@{src}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
s.sendto(opt.encode(), (dst, port))
while True:
    data, _ = s.recvfrom(65535)
    if data.startswith(b"SIP/2.0 "):
        break
text = data.decode("latin-1")
m = re.search(r"received=([0-9.]+);rport=(\d+)", text)
print(f"SIP answer: {text.splitlines()[0]}; Via received/rport: {m.groups() if m else None}")
if not m or m.group(1) != ip1 or int(m.group(2)) != port1:
    sys.exit(f"STUN said {ip1}:{port1} but SIP saw {m.groups() if m else None}")
ip2, port2 = binding()
if (ip2, port2) != (ip1, port1):
    sys.exit(f"second Binding from the same socket mapped to {ip2}:{port2}")
if src == want_ip and port1 != lport:
    sys.exit(f"without NAT the mapped port {port1} must be the local port {lport}")
print("ok")
PY

out=$(python3 "$IT_TMP/stun.py" "$SRV_PLAIN" "$SRV_PUB" 5060 "$SRV_PLAIN" 2>&1) ||
    fail "STUN without NAT: $out"
log "without NAT: $(echo "$out" | tr '\n' ' ')"
out=$(cli_py "$IT_TMP/stun.py" "$NAT_CLI_IP" "$SRV_PUB" 5060 "$NAT_OUT_IP" 2>&1) ||
    fail "STUN behind NAT: $out"
log "behind NAT: $(echo "$out" | tr '\n' ' ')"
n=$(edge_stat stun_answered)
[ "$n" = 4 ] || fail "stun_answered=$n, want 4"
stop_sipedge
log PASS
