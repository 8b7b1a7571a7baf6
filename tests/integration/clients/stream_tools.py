#!/usr/bin/env python3
"""SIP over TCP and TLS clients for the stream transport tests (t_stream_*.sh).

usage: stream_tools.py CASE [options]

Every case prints "RESULT CASE ok: ..." and exits 0 when the server behaved as the case
expects, or prints "RESULT CASE fail: ..." and exits 1. Progress lines are flushed as
they happen, so a test can wait for them (REGISTERED, PONG, REQUEST, CLOSED).

Cases:
  register     REGISTER with digest auth (RFC 2617, qop=auth when offered) over one
               TCP/TLS connection; --ob adds +sip.instance/reg-id (RFC 5626) and
               Supported: outbound, path; --body-bytes N sends an N-byte body with the
               REGISTER; --ping sends CRLFCRLF after the 200 and wants CRLF back;
               --hold S keeps the connection for S seconds, answering requests that
               come over it (INVITE: 486, others: 200; prints "REQUEST ..." for each)
               and, with --ping-every S, sending a CRLFCRLF ping that must be answered;
               --rst-when FILE: when FILE appears, close with RST (SO_LINGER 0).
  ping         connect, CRLFCRLF, want CRLF back.
  no-cl        a REGISTER without Content-Length: want a 400 and then EOF.
  silent       connect (TCP, or TLS with the handshake done) and send nothing: prints
               how long until the server closed.
  stall        headers with Content-Length: 200 and 10 bytes of body, then silence:
               prints how long until the server closed.
  big-header   a header block that never ends (up to --bytes, default 1 MiB), sent in
               8 KiB chunks: prints how much was sent when the server closed and the
               status line if one was readable.
  hello-stall  raw TCP to a TLS port: part of a real ClientHello, then silence: prints
               how long until the server closed.
  plain-tls    plain SIP text on a TLS port: the server must close without any SIP.
  flood        --conns N connections at once from --src, then a CRLFCRLF ping on each:
               prints how many got a pong and how many were closed.
  hold-many    --conns N registered connections (no auth), held idle --hold S seconds
               (scripts/bench_tcp.sh).
  rate         --conns N connections one after another (connect, ping, close): prints
               how many got a pong and how many were closed, and the elapsed time.
"""
import argparse
import hashlib
import os
import re
import select
import socket
import ssl
import struct
import sys
import time


def out(line):
    print(line, flush=True)


def result(case, ok, msg):
    out(f"RESULT {case} {'ok' if ok else 'fail'}: {msg}")
    sys.exit(0 if ok else 1)


def hostport(s):
    h, p = s.rsplit(":", 1)
    return h, int(p)


def connect(args, tls=None, timeout=5.0):
    """A TCP connection from args.src to args.dst, TLS-wrapped when tls (or args.tls)."""
    host, port = hostport(args.dst)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.bind((args.src, 0))
    s.settimeout(timeout)
    s.connect((host, port))
    if tls if tls is not None else args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname=None)
    return s


def rst_close(s):
    """Close with RST: SO_LINGER on, 0 seconds."""
    raw = s
    try:
        if isinstance(s, ssl.SSLSocket):
            raw = socket.socket(fileno=os.dup(s.fileno()))
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            raw.close()
            return
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        try:
            s.close()
        except OSError:
            pass


class Reader:
    """Message framing on the client side: CRLF pongs, and SIP messages by
    Content-Length."""

    def __init__(self, sock):
        self.s = sock
        self.buf = b""
        self.eof = False

    def fill(self, timeout):
        self.s.settimeout(timeout)
        try:
            d = self.s.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            self.eof = True
            return False
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def next(self, timeout):
        """('pong', None) | ('msg', (start_line, headers_text, body)) | (None, None) on
        timeout or EOF."""
        end = time.time() + timeout
        while True:
            # A pong: CRLF outside a message.
            if self.buf.startswith(b"\r\n"):
                if self.buf.startswith(b"\r\n\r\n"):
                    self.buf = self.buf[4:]
                    return "ping", None
                self.buf = self.buf[2:]
                return "pong", None
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                head = self.buf[:i].decode("latin-1")
                m = re.search(r"^(?:Content-Length|l)\s*:\s*(\d+)", head, re.M | re.I)
                cl = int(m.group(1)) if m else 0
                if len(self.buf) >= i + 4 + cl:
                    body = self.buf[i + 4:i + 4 + cl]
                    self.buf = self.buf[i + 4 + cl:]
                    first, _, rest = head.partition("\r\n")
                    return "msg", (first, rest.replace("\r\n", "\n"), body)
            left = end - time.time()
            if left <= 0 or self.eof:
                return None, None
            self.fill(left)


def hdr(headers, name):
    m = re.search(r"^" + name + r"\s*:\s*(.*)$", headers, re.M | re.I)
    return m.group(1).strip() if m else None


def case_register(args):
    s = connect(args)
    proto = "TLS" if args.tls else "TCP"
    lhost, lport = s.getsockname()[:2]
    host, port = hostport(args.dst)
    ruri = f"sip:{host}:{port};transport={proto.lower()}"
    cid = os.urandom(8).hex() + "@" + lhost
    tag = os.urandom(4).hex()
    inst = "urn:uuid:" + "-".join([os.urandom(4).hex(), os.urandom(2).hex(), os.urandom(2).hex(),
                                    os.urandom(2).hex(), os.urandom(6).hex()])
    body = b""
    if args.body_bytes:
        # An SDP-like body of exactly body_bytes bytes, ending in CRLF, with a marker to
        # find it again on the other side.
        line = b"a=x-pad:" + b"0123456789abcdef" * 4 + b"\r\n"
        body = b"v=0\r\no=- 1 1 IN IP4 " + lhost.encode() + b"\r\ns=stream-test\r\n"
        while len(body) + len(line) <= args.body_bytes - 8:
            body += line
        body += b"a=" + b"z" * (args.body_bytes - len(body) - 4) + b"\r\n"
        assert len(body) == args.body_bytes
    rd = Reader(s)
    cseq = [0]

    def send_register(auth=None):
        cseq[0] += 1
        contact = f"<sip:{args.user}@{lhost}:{lport};transport={proto.lower()}>"
        if args.ob:
            contact += f';reg-id=1;+sip.instance="<{inst}>"'
        h = [f"REGISTER {ruri} SIP/2.0",
             f"Via: SIP/2.0/{proto} {lhost}:{lport};branch=z9hG4bK{os.urandom(6).hex()};rport",
             "Max-Forwards: 70", f"From: <sip:{args.user}@{args.domain}>;tag={tag}",
             f"To: <sip:{args.user}@{args.domain}>", f"Call-ID: {cid}",
             f"CSeq: {cseq[0]} REGISTER", f"Contact: {contact}", f"Expires: {args.expires}",
             "User-Agent: stream-tools"]
        if args.ob:
            h.append("Supported: outbound, path")
        if auth:
            h.append(auth)
        if body:
            h.append("Content-Type: application/sdp")
        h.append(f"Content-Length: {len(body)}")
        s.sendall(("\r\n".join(h) + "\r\n\r\n").encode() + body)

    def final():
        while True:
            kind, m = rd.next(args.timeout)
            if kind is None:
                result("register", False, "no final response (closed)" if rd.eof else "no final response")
            if kind != "msg":
                continue
            first = m[0]
            if not first.startswith("SIP/2.0 "):
                continue
            code = int(first.split(" ", 2)[1])
            if code >= 200:
                return code, m

    send_register()
    code, m = final()
    if code == 401 and args.password is not None:
        chal = hdr(m[1], "WWW-Authenticate")
        chals = re.findall(r"^WWW-Authenticate\s*:\s*Digest\s+(.*)$", m[1], re.M | re.I)
        params = [{k.lower(): v1 or v2 for k, v1, v2 in
                   re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', c)} for c in chals]
        params = [p for p in params if p.get("algorithm", "MD5").upper() == "MD5"] or params
        if not params:
            result("register", False, f"401 without a digest challenge: {chal}")
        p = params[0]
        H = lambda x: hashlib.md5(x.encode()).hexdigest()  # noqa: E731
        ha1 = H(f"{args.user}:{p['realm']}:{args.password}")
        ha2 = H(f"REGISTER:{ruri}")
        auth = (f'Authorization: Digest username="{args.user}", realm="{p["realm"]}", '
                f'nonce="{p["nonce"]}", uri="{ruri}", algorithm=MD5')
        if "qop" in p and "auth" in [q.strip() for q in p["qop"].split(",")]:
            cnonce = os.urandom(8).hex()
            resp = H(f"{ha1}:{p['nonce']}:00000001:{cnonce}:auth:{ha2}")
            auth += f', qop=auth, nc=00000001, cnonce="{cnonce}"'
        else:
            resp = H(f"{ha1}:{p['nonce']}:{ha2}")
        auth += f', response="{resp}"'
        if "opaque" in p:
            auth += f', opaque="{p["opaque"]}"'
        send_register(auth)
        code, m = final()
    if code != 200:
        result("register", False, f"final response {m[0]}")
    out(f"REGISTERED {args.user} {m[0]} local={lhost}:{lport} cid={cid} "
        f"body={len(body)} md5={hashlib.md5(body).hexdigest()} path={hdr(m[1], 'Path')}")

    def ping(label):
        t0 = time.time()
        s.sendall(b"\r\n\r\n")
        while True:
            kind, m = rd.next(max(0.1, 3 - (time.time() - t0)))
            if kind == "pong":
                out(f"PONG {label} {int((time.time() - t0) * 1000)} ms")
                return True
            if kind is None:
                result("register", False, f"no CRLF answer to the CRLFCRLF ping ({label})"
                       + (", connection closed" if rd.eof else ""))
            if kind == "msg":
                handle(m)

    def handle(m):
        first, headers, mbody = m
        if first.startswith("SIP/2.0"):
            return
        method = first.split(" ", 1)[0]
        cl = hdr(headers, "Content-Length")
        out(f"REQUEST {first} cl={cl} body={len(mbody)} md5={hashlib.md5(mbody).hexdigest()}")
        if method == "ACK":
            return
        code = "486 Busy Here" if method == "INVITE" else "200 OK"
        vias = re.findall(r"^(?:Via|v)\s*:.*$", headers, re.M | re.I)
        keep = [h for h in re.findall(r"^(?:From|To|Call-ID|CSeq|f|t|i)\s*:.*$", headers, re.M | re.I)]
        resp = [f"SIP/2.0 {code}"] + vias + keep
        resp = [x + (";tag=" + tag if re.match(r"^(To|t)\s*:", x, re.I) and ";tag=" not in x else "")
                for x in resp]
        s.sendall(("\r\n".join(resp) + "\r\nContent-Length: 0\r\n\r\n").encode())

    if args.ping:
        ping("after-register")
    if args.hold:
        end = time.time() + args.hold
        next_ping = time.time() + args.ping_every if args.ping_every else None
        while time.time() < end:
            if args.rst_when and os.path.exists(args.rst_when):
                rst_close(s)
                out(f"CLOSED rst {int(time.time() * 1000)}")
                result("register", True, f"{args.user} registered, closed with RST")
            if next_ping and time.time() >= next_ping:
                ping("hold")
                next_ping = time.time() + args.ping_every
            kind, m = rd.next(0.1)
            if kind == "msg":
                handle(m)
            elif kind is None and rd.eof:
                out("CLOSED by server")
                result("register", False, f"server closed the connection of {args.user} while held")
    result("register", True, f"{args.user} registered over {proto}")


def case_ping(args):
    s = connect(args)
    rd = Reader(s)
    s.sendall(b"\r\n\r\n")
    kind, _ = rd.next(3)
    result("ping", kind == "pong", "CRLF answer" if kind == "pong" else f"no CRLF answer ({kind})")


def wait_eof(s, secs):
    """Read until EOF/RST or secs; returns (seconds waited or None, bytes read)."""
    t0 = time.time()
    got = b""
    s.settimeout(0.2)
    while time.time() - t0 < secs:
        try:
            d = s.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            return time.time() - t0, got
        if not d:
            return time.time() - t0, got
        got += d
    return None, got


def case_no_cl(args):
    s = connect(args)
    lhost, lport = s.getsockname()
    proto = "TLS" if args.tls else "TCP"
    req = (f"REGISTER sip:{args.dst} SIP/2.0\r\nVia: SIP/2.0/{proto} {lhost}:{lport};branch=z9hG4bKnocl{os.getpid()}\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:nocl@{args.domain}>;tag=1\r\nTo: <sip:nocl@{args.domain}>\r\n"
           f"Call-ID: nocl-{os.getpid()}@{lhost}\r\nCSeq: 1 REGISTER\r\n"
           f"Contact: <sip:nocl@{lhost}:{lport};transport=tcp>\r\n\r\n")
    s.sendall(req.encode())
    t, got = wait_eof(s, args.timeout)
    first = got.split(b"\r\n", 1)[0].decode("latin-1")
    if t is None:
        result("no-cl", False, f"connection still open after {args.timeout}s (got {first!r})")
    ok = first.startswith("SIP/2.0 400")
    result("no-cl", ok, f"{first!r}, then EOF after {t:.2f}s")


def case_silent(args):
    s = connect(args)
    t0 = time.time()
    t, got = wait_eof(s, args.timeout)
    if t is None:
        result("silent", False, f"still open after {args.timeout}s of silence")
    result("silent", True, f"closed after {time.time() - t0:.2f}s of silence, {len(got)} bytes back")


def case_stall(args):
    s = connect(args)
    lhost, lport = s.getsockname()
    req = (f"MESSAGE sip:stall@{args.domain} SIP/2.0\r\nVia: SIP/2.0/TCP {lhost}:{lport};branch=z9hG4bKst{os.getpid()}\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:stall@{args.domain}>;tag=1\r\nTo: <sip:stall@{args.domain}>\r\n"
           f"Call-ID: stall-{os.getpid()}@{lhost}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n"
           f"Content-Length: 200\r\n\r\n0123456789")
    t0 = time.time()
    s.sendall(req.encode())
    t, got = wait_eof(s, args.timeout)
    if t is None:
        result("stall", False, f"still open {args.timeout}s after a message stalled")
    first = got.split(b"\r\n", 1)[0][:60]
    result("stall", True, f"closed after {time.time() - t0:.2f}s, {len(got)} bytes back {first!r}")


def case_big_header(args):
    s = connect(args)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    lhost, lport = s.getsockname()
    start = (f"OPTIONS sip:big@{args.domain} SIP/2.0\r\nVia: SIP/2.0/TCP {lhost}:{lport};branch=z9hG4bKbig\r\n"
             f"Max-Forwards: 70\r\nFrom: <sip:big@{args.domain}>;tag=1\r\nTo: <sip:big@{args.domain}>\r\n"
             f"Call-ID: big-{os.getpid()}@{lhost}\r\nCSeq: 1 OPTIONS\r\n").encode()
    pad = b"X-Pad: " + b"p" * 1014 + b"\r\n"   # 1 KiB a line, the block never ends
    data = start + pad * (args.bytes // len(pad) + 1)
    data = data[:args.bytes]
    sent, got, closed = 0, b"", None
    s.setblocking(False)
    t0 = time.time()
    while time.time() - t0 < args.timeout:
        r, w, _ = select.select([s], [s] if sent < len(data) else [], [], 0.2)
        if r:
            try:
                d = s.recv(65536)
            except (ConnectionResetError, OSError) as e:
                closed = f"reset ({e.__class__.__name__})"
                break
            if not d:
                closed = "EOF"
                break
            got += d
        if w:
            try:
                sent += s.send(data[sent:sent + 8192])
            except (BrokenPipeError, ConnectionResetError, OSError) as e:
                closed = f"send failed ({e.__class__.__name__})"
                break
            time.sleep(0.002)
        if sent >= len(data) and not r and not w and time.time() - t0 > 5:
            break
    first = got.split(b"\r\n", 1)[0].decode("latin-1")
    if closed is None:
        result("big-header", False, f"not closed: {sent} bytes sent, got {first!r}")
    ok = sent < args.bytes and (not first or first.startswith("SIP/2.0 513"))
    result("big-header", ok, f"closed ({closed}) after {sent} of {args.bytes} bytes sent, status {first!r}")


def client_hello():
    """The first flight of a real TLS client (ClientHello record)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(i, o, server_side=False)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return o.read()


def case_hello_stall(args):
    hello = client_hello()
    if len(hello) < 20 or hello[0] != 0x16:
        result("hello-stall", False, f"no ClientHello made ({len(hello)} bytes)")
    s = connect(args, tls=False)
    t0 = time.time()
    s.sendall(hello[:len(hello) // 2])
    t, got = wait_eof(s, args.timeout)
    if t is None:
        result("hello-stall", False, f"still open {args.timeout}s after half a ClientHello")
    result("hello-stall", True, f"closed after {time.time() - t0:.2f}s ({len(hello) // 2} of "
           f"{len(hello)} ClientHello bytes sent, {len(got)} bytes back)")


def case_plain_tls(args):
    s = connect(args, tls=False)
    lhost, lport = s.getsockname()
    req = (f"OPTIONS sip:{args.dst} SIP/2.0\r\nVia: SIP/2.0/TCP {lhost}:{lport};branch=z9hG4bKplain\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:plain@{args.domain}>;tag=1\r\nTo: <sip:plain@{args.domain}>\r\n"
           f"Call-ID: plain-{os.getpid()}@{lhost}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    t0 = time.time()
    s.sendall(req.encode())
    t, got = wait_eof(s, args.timeout)
    if t is None:
        result("plain-tls", False, f"still open {args.timeout}s after plain text on the TLS port")
    if b"SIP/2.0" in got:
        result("plain-tls", False, f"SIP answer over a TLS port to plain text: {got[:60]!r}")
    result("plain-tls", True, f"closed after {time.time() - t0:.2f}s, {len(got)} bytes back "
           f"(first {got[:1].hex() or 'none'})")


def ping_all(socks, secs):
    """CRLFCRLF on each; returns (pongs, closed, silent)."""
    state = {}
    for s in socks:
        try:
            s.send(b"\r\n\r\n")
            state[s] = b""
        except OSError:
            state[s] = None
    pong, closed = set(), set(s for s in socks if state[s] is None)
    end = time.time() + secs
    while time.time() < end:
        live = [s for s in socks if s not in pong and s not in closed]
        if not live:
            break
        r, _, _ = select.select(live, [], [], 0.2)
        for s in r:
            try:
                d = s.recv(4096)
            except OSError:
                closed.add(s)
                continue
            if not d:
                closed.add(s)
                continue
            state[s] += d
            if state[s].startswith(b"\r\n"):
                pong.add(s)
    return len(pong), len(closed), len(socks) - len(pong) - len(closed)


def case_flood(args):
    host, port = hostport(args.dst)
    socks, failed = [], 0
    t0 = time.time()
    for _ in range(args.conns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((args.src, 0))
        s.settimeout(3)
        try:
            s.connect((host, port))
        except OSError:
            failed += 1
            s.close()
            continue
        s.setblocking(False)
        socks.append(s)
    pong, closed, silent = ping_all(socks, args.timeout)
    msg = (f"pong={pong} closed={closed + failed} silent={silent} of {args.conns} "
           f"({time.time() - t0:.2f}s)")
    out(f"FLOOD {msg}")
    if args.hold:
        time.sleep(args.hold)
    result("flood", silent == 0, msg)


def case_rate(args):
    host, port = hostport(args.dst)
    pong = closed = 0
    t0 = time.time()
    for _ in range(args.conns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((args.src, 0))
        s.settimeout(3)
        try:
            s.connect((host, port))
        except OSError:
            closed += 1
            s.close()
            continue
        s.setblocking(False)
        p, c, _ = ping_all([s], 2)
        pong += p
        closed += c
        s.close()
    el = time.time() - t0
    msg = f"pong={pong} closed={closed} silent={args.conns - pong - closed} of {args.conns} in {el:.2f}s"
    result("rate", pong + closed == args.conns, msg)


def case_hold_many(args):
    """--conns N connections from the addresses in --src (comma-separated, round robin),
    each registering user PREFIX<i> without authentication (an open registrar), then all
    held idle for --hold seconds. Prints "HELD n=N registered=R setup_s=S" when every
    connection is set up (before the hold), then RESULT."""
    srcs = args.src.split(",")
    host, port = hostport(args.dst)
    proto = "TLS" if args.tls else "TCP"
    ctx = None
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    socks, registered, failed = [], 0, 0
    t0 = time.time()
    deadline = t0 + args.timeout
    for i in range(args.conns):
        if time.time() > deadline:
            break
        src = srcs[i % len(srcs)]
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((src, 0))
            s.settimeout(5)
            s.connect((host, port))
            if ctx:
                s = ctx.wrap_socket(s)
            lh, lp = s.getsockname()[:2]
            u = f"{args.user}{i}"
            req = (f"REGISTER sip:{host}:{port};transport={proto.lower()} SIP/2.0\r\n"
                   f"Via: SIP/2.0/{proto} {lh}:{lp};branch=z9hG4bKhm{i}x{os.getpid()};rport\r\n"
                   f"Max-Forwards: 70\r\nFrom: <sip:{u}@{args.domain}>;tag=hm{i}\r\n"
                   f"To: <sip:{u}@{args.domain}>\r\nCall-ID: hm{i}-{os.getpid()}@{lh}\r\n"
                   f"CSeq: 1 REGISTER\r\nContact: <sip:{u}@{lh}:{lp};transport={proto.lower()}>\r\n"
                   f"Expires: 3600\r\nContent-Length: 0\r\n\r\n")
            s.sendall(req.encode())
            rd = Reader(s)
            kind, m = rd.next(5)
            if kind == "msg" and m[0].startswith("SIP/2.0 200"):
                registered += 1
            else:
                failed += 1
            socks.append(s)
        except (OSError, ssl.SSLError):
            failed += 1
    el = time.time() - t0
    out(f"HELD n={len(socks)} registered={registered} failed={failed} setup_s={el:.2f}")
    end = time.time() + args.hold
    while time.time() < end:
        time.sleep(0.2)
    result("hold-many", registered == args.conns, f"{registered} of {args.conns} registered in {el:.2f}s, held {args.hold}s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case")
    ap.add_argument("--src", default="127.0.0.1")
    ap.add_argument("--dst", required=True, help="HOST:PORT")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--user", default="alice")
    ap.add_argument("--password")
    ap.add_argument("--domain", default="example.test")
    ap.add_argument("--expires", type=int, default=600)
    ap.add_argument("--ob", action="store_true")
    ap.add_argument("--body-bytes", type=int, default=0)
    ap.add_argument("--ping", action="store_true")
    ap.add_argument("--ping-every", type=float, default=0)
    ap.add_argument("--hold", type=float, default=0)
    ap.add_argument("--rst-when")
    ap.add_argument("--bytes", type=int, default=1 << 20)
    ap.add_argument("--conns", type=int, default=500)
    ap.add_argument("--timeout", type=float, default=10)
    args = ap.parse_args()
    cases = {"register": case_register, "ping": case_ping, "no-cl": case_no_cl,
             "stall": case_stall, "silent": case_silent, "big-header": case_big_header, "hello-stall": case_hello_stall,
             "plain-tls": case_plain_tls, "flood": case_flood, "hold-many": case_hold_many, "rate": case_rate}
    if args.case not in cases:
        ap.error(f"unknown case {args.case}")
    try:
        cases[args.case](args)
    except (OSError, ssl.SSLError) as e:
        result(args.case, False, f"{e.__class__.__name__}: {e}")


if __name__ == "__main__":
    main()
