#!/usr/bin/env python3
"""One REGISTER with digest authentication (RFC 2617/7616, qop=auth when offered).

usage: sip_register.py SRC_ADDR DST_IP:PORT USER PASSWORD DOMAIN [ALGORITHM] [USER_AGENT]

Sends from an ephemeral port on SRC_ADDR. ALGORITHM (MD5 or SHA-256; "" for any) picks
that challenge, else the first one is answered. USER_AGENT, when given, is sent as a
User-Agent header after Python unicode_escape decoding, so a test can send raw bytes
("\\xff", "\\r\\n"). Prints the final status line; exits 0 on 200, 1 on another final
status, 2 when the wanted challenge is missing.
"""
import hashlib
import os
import re
import socket
import sys

src, dst, user, pw, domain = sys.argv[1:6]
want = sys.argv[6].upper() if len(sys.argv) > 6 and sys.argv[6] else None
ua = sys.argv[7].encode().decode("unicode_escape").encode("latin-1") if len(sys.argv) > 7 else None
host, port = dst.rsplit(":", 1)
port = int(port)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
lport = s.getsockname()[1]
cid = os.urandom(8).hex() + "@" + src
tag = os.urandom(4).hex()
ruri = f"sip:{host}:{port}"


def send(cseq, auth=None):
    h = [f"REGISTER {ruri} SIP/2.0",
         f"Via: SIP/2.0/UDP {src}:{lport};branch=z9hG4bK{os.urandom(6).hex()};rport",
         "Max-Forwards: 70", f"From: <sip:{user}@{domain}>;tag={tag}",
         f"To: <sip:{user}@{domain}>", f"Call-ID: {cid}", f"CSeq: {cseq} REGISTER",
         f"Contact: <sip:{user}@{src}:{lport}>", "Expires: 600"]
    if auth:
        h.append(auth)
    msg = "\r\n".join(h).encode() + b"\r\n"
    if ua is not None:
        msg += b"User-Agent: " + ua + b"\r\n"
    msg += b"Content-Length: 0\r\n\r\n"
    s.sendto(msg, (host, port))


def final():
    s.settimeout(3)
    while True:
        data, _ = s.recvfrom(65535)
        text = data.decode("latin-1")
        code = int(text.split(" ", 2)[1])
        if code >= 200:
            return code, text


send(1)
code, text = final()
if code == 401:
    chals = re.findall(r"^WWW-Authenticate:\s*Digest\s+(.*?)\r$", text, re.M | re.I)
    params = [{k.lower(): v1 or v2 for k, v1, v2 in
               re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', c)} for c in chals]
    if want:
        params = [p for p in params if p.get("algorithm", "MD5").upper() == want]
    if not params:
        print(f"no {want or 'digest'} challenge in 401: {chals}")
        sys.exit(2)
    p = params[0]
    alg = p.get("algorithm", "MD5")
    H = (lambda x: hashlib.sha256(x.encode()).hexdigest()) if alg.upper() == "SHA-256" else \
        (lambda x: hashlib.md5(x.encode()).hexdigest())
    ha1 = H(f"{user}:{p['realm']}:{pw}")
    ha2 = H(f"REGISTER:{ruri}")
    auth = (f'Authorization: Digest username="{user}", realm="{p["realm"]}", '
            f'nonce="{p["nonce"]}", uri="{ruri}", algorithm={alg}')
    if "qop" in p and "auth" in [q.strip() for q in p["qop"].split(",")]:
        cnonce = os.urandom(8).hex()
        resp = H(f"{ha1}:{p['nonce']}:00000001:{cnonce}:auth:{ha2}")
        auth += f', qop=auth, nc=00000001, cnonce="{cnonce}"'
    else:
        resp = H(f"{ha1}:{p['nonce']}:{ha2}")
    auth += f', response="{resp}"'
    if "opaque" in p:
        auth += f', opaque="{p["opaque"]}"'
    send(2, auth)
    code, text = final()
print(text.split("\r\n", 1)[0])
sys.exit(0 if code == 200 else 1)
