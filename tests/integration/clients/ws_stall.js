#!/usr/bin/env node
// Clients that start a WebSocket message and never finish it (tests/integration/t_ws_bad_input.sh).
//
//   node ws_stall.js --url ws://H:P [--origin O] [--conns N] [--announce BYTES] [--timeout S]
//
// Each of N connections (default 1) offers "sip" and, once open, either sends a complete
// first fragment of a text message (FIN clear) with the `ws` sender, or with --announce
// writes by hand a frame header announcing BYTES of payload followed by a single byte.
// Then it stalls. Prints "STALLED n" when every connection has sent its start, and
// "RESULT stall ok: N closed (close 1008) max X.Xs after the start" when the server
// closed all of them with 1008; anything else is "RESULT stall fail: ...".
'use strict';
const crypto = require('crypto');
const WebSocket = require('ws');

const opt = {};
for (let i = 2; i < process.argv.length; i += 2) opt[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const url = opt.url;
const conns = Number(opt.conns || 1);
const announce = Number(opt.announce || 0);
const timeoutS = Number(opt.timeout || 30);

function result(ok, detail) {
    console.log(`RESULT stall ${ok ? 'ok' : 'fail'}: ${detail}`);
    process.exit(ok ? 0 : 1);
}
setTimeout(() => result(false, `no outcome within ${timeoutS}s (${closed} closed)`), timeoutS * 1000).unref();

// A masked frame header (RFC 6455 §5.2): FIN clear, text, 16- or 64-bit length; then one
// payload byte under the mask.
function partialFrame(len) {
    const mask = crypto.randomBytes(4);
    let hdr;
    if (len < 65536) {
        hdr = Buffer.alloc(4);
        hdr[1] = 0x80 | 126;
        hdr.writeUInt16BE(len, 2);
    } else {
        hdr = Buffer.alloc(10);
        hdr[1] = 0x80 | 127;
        hdr.writeBigUInt64BE(BigInt(len), 2);
    }
    hdr[0] = 0x01;
    const body = Buffer.from([0x52 ^ mask[0]]); // 'R'
    return Buffer.concat([hdr, mask, body]);
}

let started = 0;
let closed = 0;
let maxS = 0;
const codes = {};

function one(i) {
    const o = { rejectUnauthorized: false, handshakeTimeout: 5000 };
    if (opt.origin) o.origin = opt.origin;
    const ws = new WebSocket(url, ['sip'], o);
    let t0 = 0;
    ws.on('open', () => {
        t0 = Date.now();
        if (announce) ws._socket.write(partialFrame(announce));
        else ws.send(`REGISTER sip:stall.invalid SIP/2.0\r\nVia: SIP/2.0/WS s${i}.invalid`, { fin: false });
        if (++started === conns) console.log(`STALLED ${started}`);
        if (i + 1 < conns) one(i + 1); // one after the other: no handshake burst
    });
    ws.on('error', () => {});
    ws.on('close', (code) => {
        const s = t0 ? (Date.now() - t0) / 1000 : -1;
        if (s > maxS) maxS = s;
        codes[code] = (codes[code] || 0) + 1;
        if (++closed < conns) return;
        const summary = Object.entries(codes).map(([c, n]) => `${n}x${c}`).join(',');
        result(codes[1008] === conns && started === conns,
               `${closed} closed (close ${summary}) max ${maxS.toFixed(1)}s after the start`);
    });
}
one(0);
