#!/usr/bin/env node
// Raw SIP-over-WebSocket client (RFC 7118) on the `ws` package, for the bad-input,
// forged-identity and good-client checks of the sipedge integration tests.
//
// usage: node sip_ws_raw.js CASE --url ws://H:P [options]
//   --origin O         Origin header to send
//   --user U --password P --domain D   SIP identity (register, forged-dereg)
//   --victim V         AOR user whose binding the forged de-REGISTER targets
//   --hold S           seconds to stay connected after registering (register)
//   --timeout S        overall limit (default 15)
//
// Cases (each prints "RESULT <case> ok|fail: detail" and exits 0 only when ok):
//   register        REGISTER (digest when challenged) -> 200; then answers INVITEs 486;
//                   answers server Pings (counted in the result) for --hold seconds
//   no-pong         registers like `register`, then stays silent and does not answer the
//                   server's Pings -> dropped; reports pings seen and seconds of silence
//   too-big         one 1 MiB text message -> close 1009
//   too-big-frag    40 fragments of 2 KiB (80 KiB message) -> close 1009
//   junk            junk text + binary garbage + a malformed SIP request; every reply
//                   must be a SIP response; reports whether the connection survived
//   crlf            "\r\n\r\n" -> "\r\n" (RFC 5626 §4.4.1 keepalive)
//   bad-utf8        a text frame that is not UTF-8 -> close 1007 (RFC 6455 §8.1)
//   idle            sends nothing after the handshake -> close 1008 (first-message timeout)
//   no-subprotocol  handshake without Sec-WebSocket-Protocol -> refused
//   wrong-subprotocol  offers only "xmpp" -> refused
//   handshake       plain handshake with "sip" (use with --origin) -> prints opened/refused
//   http-get        plain HTTP GET without Upgrade -> no 101, connection closed
//   forged-dereg    REGISTER Expires 0 for --victim with a forged P-Asserted-Identity
//                   -> prints the final status (expected: a challenge, 401/407, or 403)
'use strict';

const crypto = require('crypto');
const net = require('net');
const WebSocket = require('ws');

const argv = process.argv.slice(2);
const kase = argv[0];
const opt = {};
for (let i = 1; i < argv.length; i += 2) opt[argv[i].replace(/^--/, '')] = argv[i + 1];
const url = opt.url;
const timeoutS = Number(opt.timeout || 15);
const rnd = () => crypto.randomBytes(6).toString('hex');
const host = `${rnd()}.invalid`;
let t0 = Date.now();

function result(ok, detail) {
    console.log(`RESULT ${kase} ${ok ? 'ok' : 'fail'}: ${detail}`);
    process.exit(ok ? 0 : 1);
}
setTimeout(() => result(false, `no outcome within ${timeoutS}s`), timeoutS * 1000).unref();

function open(protocols, extra) {
    const o = { rejectUnauthorized: false, handshakeTimeout: 5000 };
    if (opt.origin) o.origin = opt.origin;
    return new WebSocket(url, protocols, Object.assign(o, extra || {}));
}

function parse(text) {
    const [head, ...body] = text.split('\r\n\r\n');
    const lines = head.split('\r\n');
    const hdrs = {};
    for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        if (i < 0) continue;
        const k = l.slice(0, i).trim().toLowerCase();
        (hdrs[k] = hdrs[k] || []).push(l.slice(i + 1).trim());
    }
    const m = /^SIP\/2\.0 (\d{3})/.exec(lines[0]);
    return { first: lines[0], status: m ? Number(m[1]) : 0, hdrs, body: body.join('\r\n\r\n') };
}

function hash(alg, s) {
    return crypto.createHash(alg === 'SHA-256' ? 'sha256' : 'md5').update(s).digest('hex');
}

// RFC 7616 / RFC 2617 digest answer to the first usable challenge (MD5 preferred).
function digest(challenges, method, uri, user, password) {
    const parsed = challenges.map((c) => {
        const p = {};
        c.replace(/^Digest\s+/i, '').replace(/(\w+)=("([^"]*)"|([^,\s]*))/g, (_, k, __, q, u) => {
            p[k.toLowerCase()] = q !== undefined ? q : u;
        });
        p.algorithm = (p.algorithm || 'MD5').toUpperCase();
        return p;
    });
    const c = parsed.find((p) => p.algorithm === 'MD5') ||
        parsed.find((p) => p.algorithm === 'SHA-256');
    if (!c) return null;
    const ha1 = hash(c.algorithm, `${user}:${c.realm}:${password}`);
    const ha2 = hash(c.algorithm, `${method}:${uri}`);
    const cnonce = rnd();
    const nc = '00000001';
    const qop = c.qop && c.qop.split(',').map((s) => s.trim()).includes('auth') ? 'auth' : null;
    const resp = qop ? hash(c.algorithm, `${ha1}:${c.nonce}:${nc}:${cnonce}:${qop}:${ha2}`)
        : hash(c.algorithm, `${ha1}:${c.nonce}:${ha2}`);
    let h = `Digest username="${user}", realm="${c.realm}", nonce="${c.nonce}", uri="${uri}", ` +
        `response="${resp}", algorithm=${c.algorithm}`;
    if (qop) h += `, qop=${qop}, nc=${nc}, cnonce="${cnonce}"`;
    if (c.opaque !== undefined) h += `, opaque="${c.opaque}"`;
    return h;
}

function register(ws, { user, password, domain, expires, contact, extra, cseq, callId, auth }) {
    const ruri = `sip:${domain}`;
    const lines = [
        `REGISTER ${ruri} SIP/2.0`,
        `Via: SIP/2.0/WS ${host};branch=z9hG4bK${rnd()};rport`,
        'Max-Forwards: 70',
        `From: <sip:${user}@${domain}>;tag=${rnd()}`,
        `To: <sip:${user}@${domain}>`,
        `Call-ID: ${callId}`,
        `CSeq: ${cseq} REGISTER`,
        `Contact: ${contact}`,
        `Expires: ${expires}`,
        'Supported: path, outbound',
        'User-Agent: sipedge-test-raw-ws',
    ];
    if (auth) lines.push(`Authorization: ${auth}`);
    for (const e of extra || []) lines.push(e);
    lines.push('Content-Length: 0', '', '');
    ws.send(lines.join('\r\n'));
}

// REGISTER with one retry on a challenge; resolves with the final response.
function registerFlow(ws, p) {
    return new Promise((resolve) => {
        const callId = `${rnd()}@${host}`;
        let cseq = 1;
        let tried = false;
        const onMsg = (data) => {
            const m = parse(data.toString());
            if (!m.status || !/REGISTER/.test((m.hdrs.cseq || [''])[0])) return;
            if (m.status < 200) return;
            if ((m.status === 401 || m.status === 407) && !tried && p.password) {
                tried = true;
                const ch = m.hdrs[m.status === 401 ? 'www-authenticate' : 'proxy-authenticate'] || [];
                const auth = digest(ch, 'REGISTER', `sip:${p.domain}`, p.user, p.password);
                if (auth) {
                    cseq++;
                    register(ws, Object.assign({}, p, { cseq, callId, auth }));
                    return;
                }
            }
            ws.off('message', onMsg);
            resolve(m);
        };
        ws.on('message', onMsg);
        register(ws, Object.assign({}, p, { cseq, callId }));
    });
}

// Answers an incoming request (RFC 3261 §8.2.6): copies Via/From/To/Call-ID/CSeq.
function answer(ws, text, code, reason) {
    const lines = text.split('\r\n\r\n')[0].split('\r\n');
    const out = [`SIP/2.0 ${code} ${reason}`];
    for (const l of lines.slice(1)) {
        if (/^(via|v|from|f|call-id|i|cseq)\s*:/i.test(l)) out.push(l);
        else if (/^(to|t)\s*:/i.test(l)) out.push(/;tag=/.test(l) ? l : `${l};tag=${rnd()}`);
    }
    out.push('Content-Length: 0', '', '');
    ws.send(out.join('\r\n'));
}

function expectRefused() {
    const protos = kase === 'no-subprotocol' ? undefined : kase === 'wrong-subprotocol' ? ['xmpp'] : ['sip'];
    const ws = open(protos);
    ws.on('open', () => {
        if (kase === 'handshake') result(true, `opened protocol="${ws.protocol}"`);
        result(false, `handshake accepted (protocol "${ws.protocol}")`);
    });
    ws.on('unexpected-response', (req, res) => {
        if (kase === 'handshake') result(true, `refused http ${res.statusCode}`);
        result(true, `refused with HTTP ${res.statusCode}`);
    });
    ws.on('error', (e) => {
        if (kase === 'handshake') result(true, `refused (${e.message})`);
        result(true, `refused (${e.message})`);
    });
}

function httpGet() {
    const u = new URL(url.replace(/^ws/, 'http'));
    const s = net.connect(Number(u.port), u.hostname, () => {
        s.write(`GET / HTTP/1.1\r\nHost: ${u.host}\r\n\r\n`);
    });
    let got = '';
    s.on('data', (d) => { got += d.toString('latin1'); });
    s.on('error', () => {});
    s.on('close', () => {
        const first = got.split('\r\n')[0];
        if (/ 101 /.test(first)) result(false, `got an upgrade: ${first}`);
        result(true, `closed, reply ${first ? JSON.stringify(first) : 'empty'}`);
    });
}

function main() {
    if (['no-subprotocol', 'wrong-subprotocol', 'handshake'].includes(kase)) return expectRefused();
    if (kase === 'http-get') return httpGet();
    const ws = open(['sip'], kase === 'no-pong' ? { autoPong: false } : undefined);
    let pings = 0;
    let silentSince = 0;
    ws.on('ping', () => { pings++; console.log(`PING ${((Date.now() - t0) / 1000).toFixed(1)}`); });
    ws.on('error', (e) => console.log(`error ${e.message}`));
    ws.on('unexpected-response', (req, res) => result(false, `handshake refused: HTTP ${res.statusCode}`));
    ws.on('close', (code, reason) => {
        console.log(`CLOSED ${code} ${reason}`);
        if (kase === 'too-big' || kase === 'too-big-frag') {
            result(code === 1009, `close ${code} "${reason}"`);
        }
        if (kase === 'bad-utf8') result(code === 1007, `close ${code} "${reason}"`);
        if (kase === 'idle') {
            const s = ((Date.now() - t0) / 1000).toFixed(1);
            result(code === 1008, `close ${code} "${reason}" after ${s}s`);
        }
        if (kase === 'register') result(false, `connection closed (${code})`);
        if (kase === 'no-pong') {
            const s = silentSince ? ((Date.now() - silentSince) / 1000).toFixed(1) : '-';
            result(pings >= 1 && code === 1006 && silentSince > 0,
                `dropped (close ${code}) after ${s}s of silence, ${pings} pings`);
        }
        if (kase === 'crlf') result(false, `closed ${code} before the CRLF answer`);
    });
    ws.on('open', async () => {
        console.log(`OPEN protocol=${ws.protocol}`);
        if (ws.protocol !== 'sip') result(false, `server did not echo "sip": "${ws.protocol}"`);
        if (kase === 'too-big') {
            ws.send('x'.repeat(1 << 20));
        } else if (kase === 'too-big-frag') {
            for (let i = 0; i < 40; i++) ws.send('y'.repeat(2048), { fin: i === 39 });
        } else if (kase === 'idle') {
            t0 = Date.now();
        } else if (kase === 'bad-utf8') {
            ws.send(Buffer.from('REGISTER sip:x SIP/2.0\r\nFrom: \xff\xfe\r\n\r\n', 'latin1'),
                { binary: false });
        } else if (kase === 'crlf') {
            ws.on('message', (d, isBinary) => {
                const s = d.toString();
                result(s === '\r\n', `answer ${JSON.stringify(s)} (${isBinary ? 'binary' : 'text'})`);
            });
            ws.send('\r\n\r\n');
        } else if (kase === 'junk') {
            const replies = [];
            ws.on('message', (d) => replies.push(d.toString('latin1')));
            ws.send('hello, this is not SIP');
            ws.send(crypto.randomBytes(512));
            ws.send(Buffer.from([0, 0xff, 0xfe, 0x80, 0x0d, 0x0a]));
            ws.send('INVITE sip:x SIP/2.0\r\nVia: garbage\r\n\r\n');
            ws.send('SIP/2.0 200 OK\r\nVia: SIP/2.0/WS nowhere.invalid;branch=z9hG4bKjunk\r\n\r\n');
            setTimeout(() => {
                const bad = replies.filter((r) => !/^SIP\/2\.0 [1-6]\d\d /.test(r));
                const open = ws.readyState === WebSocket.OPEN;
                for (const r of replies) console.log(`REPLY ${JSON.stringify(r.split('\r\n')[0])}`);
                result(bad.length === 0,
                    `${replies.length} replies, ${bad.length} not SIP responses; connection ${open ? 'open' : 'closed'}`);
            }, 1500);
        } else if (kase === 'register' || kase === 'forged-dereg' || kase === 'no-pong') {
            const domain = opt.domain;
            if (kase !== 'forged-dereg') {
                ws.on('message', (d) => {
                    const s = d.toString();
                    if (/^[A-Z]+ sip:/.test(s)) {
                        const method = s.split(' ')[0];
                        console.log(`INCOMING ${method}`);
                        if (method === 'INVITE') answer(ws, s, 486, 'Busy Here');
                        else if (method !== 'ACK') answer(ws, s, 200, 'OK');
                    }
                });
            }
            const p = { user: opt.user, password: opt.password, domain, expires: 600,
                contact: `<sip:${opt.user}@${host};transport=ws>` };
            if (kase === 'forged-dereg') {
                // Someone else's AOR, Contact "*", Expires 0, and an identity assertion
                // the client has no right to make (RFC 3325 §5: only trusted nodes).
                Object.assign(p, { user: opt.victim, password: null, expires: 0, contact: '*',
                    extra: [`P-Asserted-Identity: <sip:${opt.victim}@${domain}>`] });
            }
            const m = await registerFlow(ws, p);
            console.log(`FINAL ${m.first}`);
            if (kase === 'forged-dereg') {
                result(m.status === 401 || m.status === 407 || m.status === 403,
                    `forged de-REGISTER answered ${m.status}`);
            }
            if (m.status !== 200) result(false, `REGISTER answered ${m.first}`);
            console.log(`REGISTERED ${opt.user}`);
            t0 = Date.now();
            if (kase === 'no-pong') {
                silentSince = Date.now();
                return; // the outcome is the server dropping us (close handler)
            }
            const hold = Number(opt.hold || 0);
            setTimeout(() => {
                ws.close(1000);
                result(true, `registered ${opt.user}, ${pings} pings answered`);
            }, hold * 1000);
        } else {
            result(false, `unknown case ${kase}`);
        }
    });
}

main();
