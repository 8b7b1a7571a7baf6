#!/usr/bin/env bash
# Registration cache: what must never be answered from the cache. A client behind NAT
# registers with digest auth at Kamailio through sipedge; then (each time counting the
# REGISTERs Kamailio receives and sipedge's regcache_hit):
#   1. an unchanged refresh on the same flow is answered by sipedge (the control);
#   2. a refresh with a new Contact goes to the registrar;
#   3. an unchanged refresh after that (new contact set, authenticated again) is cached;
#   4. the same registration from a new flow (another source port) goes to the registrar;
#   5. a registration the registrar accepted without credentials (no Authorization:
#      user "open1", let in unchallenged by registrar.cfg) is refreshed at the
#      registrar every time.
# About 15 s.
# shellcheck source=tests/integration/nat_lib.sh disable=SC2034
. "$(dirname "$0")/nat_lib.sh"
nat_enter "$0" "$@"
it_init nat_cache_bypass
need_cmd python3 kamailio kamcmd
need_sipedge

test_policy_dir "$IT_TMP/policy"
start_kamailio "$IT_KAM_DIR/registrar.cfg" "$SRV_REG" 5060 WITH_AUTH WITH_MSGLOG \
    "TRUSTED_EDGE=\"$SRV_CORE\"" "NOAUTH_PREFIX=\"open\""
start_sipedge --listen-udp "$SRV_PUB:5060" --core "$SRV_CORE:5070" --registrar "$SRV_REG:5060" \
    --policy "$IT_TMP/policy" --log-level debug

cli_py - "$NAT_CLI_IP" "$SRV_PUB" 5060 "$KAM_CTL" "$SIPEDGE_PID" "$SIPEDGE_LOG" >"$IT_TMP/steps.out" 2>&1 <<'PY'
import hashlib, os, re, signal, socket, subprocess, sys, time

src, dst, dport, kam_ctl, edge_pid, edge_log = sys.argv[1:7]
dport, edge_pid = int(dport), int(edge_pid)
ruri = f"sip:{dst}:{dport}"
errors = []

def kam_registers():
    out = subprocess.run(["kamcmd", "-s", kam_ctl, "stats.get_statistics", "all"],
                         capture_output=True, text=True, timeout=10).stdout
    return int(re.search(r"^core:rcv_requests_register = (\d+)", out, re.M).group(1))

# The process's line (the sum over the workers), not a "worker N stats edge" line.
sum_edge = re.compile(r"Z [a-z]+ +stats edge ")

def edge_hits():
    before = len(sum_edge.findall(open(edge_log, errors="replace").read()))
    os.kill(edge_pid, signal.SIGUSR1)
    for _ in range(100):
        text = open(edge_log, errors="replace").read()
        if len(sum_edge.findall(text)) > before:
            break
        time.sleep(0.05)
    line = [l for l in text.splitlines() if sum_edge.search(l)][-1]
    return int(re.search(r"\bregcache_hit=(\d+)", line).group(1))

class Client:
    def __init__(self, user, pw, cid=None):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind((src, 0))
        self.port = self.s.getsockname()[1]
        self.user, self.pw = user, pw
        self.cid = cid or os.urandom(8).hex() + "@" + src
        self.tag = os.urandom(4).hex()
        self.cseq = 0
        self.chal = None

    def send(self, contact, auth):
        self.cseq += 1
        h = [f"REGISTER {ruri} SIP/2.0",
             f"Via: SIP/2.0/UDP {src}:{self.port};branch=z9hG4bK{os.urandom(6).hex()};rport",
             "Max-Forwards: 70", f"From: <sip:{self.user}@{dst}>;tag={self.tag}",
             f"To: <sip:{self.user}@{dst}>", f"Call-ID: {self.cid}",
             f"CSeq: {self.cseq} REGISTER", f"Contact: <{contact}>", "Expires: 3600"]
        if auth:
            h.append(auth)
        h.append("Content-Length: 0")
        self.s.sendto(("\r\n".join(h) + "\r\n\r\n").encode(), (dst, dport))

    def final(self):
        self.s.settimeout(4)
        while True:
            data, _ = self.s.recvfrom(65535)
            text = data.decode("latin-1")
            if not text.startswith("SIP/2.0 "):
                continue
            code = int(text.split(" ", 2)[1])
            if code >= 200:
                return code, text

    def authorization(self):
        p = self.chal
        H = lambda x: hashlib.md5(x.encode()).hexdigest()
        ha1, ha2 = H(f"{self.user}:{p['realm']}:{self.pw}"), H(f"REGISTER:{ruri}")
        a = (f'Authorization: Digest username="{self.user}", realm="{p["realm"]}", '
             f'nonce="{p["nonce"]}", uri="{ruri}", algorithm=MD5')
        if "qop" in p:
            cn = os.urandom(8).hex()
            return a + f', qop=auth, nc=00000001, cnonce="{cn}", response="' + \
                H(f"{ha1}:{p['nonce']}:00000001:{cn}:auth:{ha2}") + '"'
        return a + f', response="{H(ha1 + ":" + p["nonce"] + ":" + ha2)}"'

    def register(self, contact):
        """REGISTER without credentials; answer one challenge. Returns (codes, last text)."""
        self.send(contact, None)
        code, text = self.final()
        codes = [code]
        if code == 401:
            c = re.search(r"^WWW-Authenticate:\s*Digest\s+(.*?)\r$", text, re.M | re.I).group(1)
            self.chal = {k.lower(): v1 or v2 for k, v1, v2 in
                         re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', c)}
            self.send(contact, self.authorization())
            code, text = self.final()
            codes.append(code)
        return codes, text

def step(name, client, contact, want_upstream, want_codes):
    r0, h0 = kam_registers(), edge_hits()
    codes, text = client.register(contact)
    time.sleep(0.2)
    r1, h1 = kam_registers(), edge_hits()
    exp = re.findall(r"^Contact:.*?expires=(\d+)", text, re.M | re.I)
    print(f"{name}: codes {codes}, registrar saw {r1 - r0}, regcache_hit +{h1 - h0}, "
          f"2xx expires {exp}")
    if codes != want_codes:
        errors.append(f"{name}: answers {codes}, want {want_codes}")
    if want_upstream and (r1 - r0 < 1 or h1 != h0):
        errors.append(f"{name}: answered from the cache (registrar saw {r1 - r0}, hits +{h1 - h0})")
    if not want_upstream and (r1 != r0 or h1 - h0 != 1):
        errors.append(f"{name}: not answered from the cache (registrar saw {r1 - r0}, hits +{h1 - h0})")
    if codes[-1] == 200 and (not exp or int(exp[0]) > 60):
        errors.append(f"{name}: 2xx to a NATed client with expires {exp} (want <= nat.expires 60)")

a = Client("1700", "pw1700")
x = f"sip:1700@{src}:{a.port}"
y = f"sip:1700@{src}:{a.port};line=2"
step("0 initial authenticated registration", a, x, True, [401, 200])
step("1 unchanged refresh, same flow", a, x, False, [200])
step("2 new Contact", a, y, True, [401, 200])
step("3 unchanged refresh after the new Contact", a, y, False, [200])
b = Client("1700", "pw1700", cid=a.cid)
b.cseq = a.cseq
step("4 same registration from a new flow (source port)", b, y, True, [401, 200])
o = Client("open1", "")
z = f"sip:open1@{src}:{o.port}"
step("5a registration accepted without credentials", o, z, True, [200])
step("5b refresh of it", o, z, True, [200])
step("5c another refresh of it", o, z, True, [200])
for e in errors:
    print("ERROR:", e)
sys.exit(1 if errors else 0)
PY
rc=$?
while read -r l; do log "$l"; done <"$IT_TMP/steps.out"
[ "$rc" -eq 0 ] || fail "cache bypass checks failed (see above)"
grep -q 'NOAUTH user=open1' "$KAM_LOG" || fail "Kamailio did not take open1 without a challenge"
stop_sipedge
log PASS
