#!/usr/bin/env node
// SIP.js (npm "sip.js") user agent in Node, with the `ws` package as its WebSocket.
//
// usage: node sipjs_ua.mjs --ws ws://H:P --uri sip:U@D --password P
//                          [--wait-invite S] [--timeout S] [--local-address A]
// --local-address: the address the WebSocket connection is made from.
// Prints one line per step: REGISTERED, INCOMING INVITE from=<uri>, UNREGISTERED.
// Registers, waits up to --wait-invite seconds for an INVITE (answered 486 Busy Here:
// Node has no media stack), then unregisters and exits 0. Any failure exits 1.
import WebSocket from 'ws';
import { UserAgent, Registerer, RegistererState } from 'sip.js';

const opt = {};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) opt[argv[i].replace(/^--/, '')] = argv[i + 1];

// SIP.js' transport calls `new WebSocket(server, "sip")`; Node 20 has no global one.
//
// SIP.js 0.21 answers only one WWW-Authenticate of a 401 and gives up when that one is
// not MD5, even when another offers MD5 (the embedded registrar offers MD5 and SHA-256,
// RFC 8760 §2.4: the UAC picks one it supports). The wrapper drops the challenges
// SIP.js cannot answer from what SIP.js sees; nothing sent on the wire changes.
const onlyMd5 = (text) => {
    if (!/^SIP\/2\.0 40[17] /.test(text)) return text;
    const [head, ...rest] = text.split('\r\n\r\n');
    const lines = head.split('\r\n');
    const isChallenge = (l) => /^(WWW|Proxy)-Authenticate\s*:/i.test(l);
    const md5 = lines.filter((l) => isChallenge(l) && !/algorithm\s*=\s*"?(?!MD5\b)[\w-]+/i.test(l));
    if (md5.length === 0) return text;
    const kept = lines.filter((l) => !isChallenge(l) || md5.includes(l));
    return [kept.join('\r\n'), ...rest].join('\r\n\r\n');
};
globalThis.WebSocket = class extends WebSocket {
    constructor(u, protocols) {
        super(u, protocols, Object.assign({ rejectUnauthorized: false },
            opt['local-address'] ? { localAddress: opt['local-address'] } : {}));
    }

    addEventListener(type, fn, o) {
        if (type !== 'message') return super.addEventListener(type, fn, o);
        return super.addEventListener(type, (ev) => {
            const data = typeof ev.data === 'string' ? ev.data : Buffer.from(ev.data).toString();
            fn.call(this, { data: onlyMd5(data), type: 'message', target: this });
        }, o);
    }
};

const die = (why) => {
    console.log(`FAIL ${why}`);
    process.exit(1);
};
setTimeout(() => die(`no outcome within ${opt.timeout || 30}s`), 1000 * Number(opt.timeout || 30)).unref();

// Invitations are rejected before any SDP work, so a handler that refuses is enough.
const noMedia = () => {
    throw new Error('no media in this client');
};

let gotInvite;
const invited = new Promise((resolve) => { gotInvite = resolve; });

const ua = new UserAgent({
    uri: UserAgent.makeURI(opt.uri),
    authorizationUsername: UserAgent.makeURI(opt.uri).user,
    authorizationPassword: opt.password,
    transportOptions: { server: opt.ws, traceSip: !!process.env.SIPJS_TRACE },
    sessionDescriptionHandlerFactory: noMedia,
    logLevel: process.env.SIPJS_TRACE ? 'debug' : 'error',
    delegate: {
        onInvite(invitation) {
            console.log(`INCOMING INVITE from=${invitation.remoteIdentity.uri.toString()}`);
            invitation.reject({ statusCode: 486 }).catch(() => {});
            gotInvite();
        },
    },
});

async function main() {
    await ua.start();
    const reg = new Registerer(ua, { expires: 600 });
    const registered = new Promise((resolve, reject) => {
        reg.stateChange.addListener((s) => {
            if (s === RegistererState.Registered) resolve();
            if (s === RegistererState.Unregistered) reject(new Error('unregistered'));
        });
    });
    await reg.register({
        requestDelegate: {
            onReject: (r) => die(`REGISTER rejected: ${r.message.statusCode} ${r.message.reasonPhrase}`),
        },
    });
    await registered;
    console.log('REGISTERED');
    const waitS = Number(opt['wait-invite'] || 0);
    if (waitS > 0) {
        const t = setTimeout(() => die(`no INVITE within ${waitS}s`), waitS * 1000);
        await invited;
        clearTimeout(t);
        await new Promise((r) => setTimeout(r, 300)); // let the 486 go out
    }
    const unregistered = new Promise((resolve) => {
        reg.stateChange.addListener((s) => {
            if (s === RegistererState.Unregistered) resolve();
        });
    });
    await reg.unregister({
        requestDelegate: {
            onReject: (r) => die(`un-REGISTER rejected: ${r.message.statusCode}`),
        },
    });
    await unregistered;
    console.log('UNREGISTERED');
    await ua.stop();
    process.exit(0);
}

main().catch((e) => die(e.stack || String(e)));
