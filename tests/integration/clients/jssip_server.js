#!/usr/bin/env node
// Tiny static server for the JsSIP test page: serves jssip/index.html at "/" and JsSIP
// (CommonJS from node_modules, wrapped into one browser script) at "/jssip.js".
// usage: node jssip_server.js HOST PORT   (PORT 0: any); prints "LISTENING http://H:P/"
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');

const root = __dirname;

// Resolves a require() like Node does, for the few packages JsSIP uses, preferring a
// package's "browser" entry (debug has one).
function resolve(from, spec) {
    const tryFile = (p) => {
        for (const c of [p, `${p}.js`, path.join(p, 'index.js')]) {
            if (fs.existsSync(c) && fs.statSync(c).isFile()) return c;
        }
        return null;
    };
    if (spec.startsWith('.')) return tryFile(path.resolve(path.dirname(from), spec));
    const [name, ...rest] = spec.split('/');
    const dir = path.join(root, 'node_modules', name);
    if (rest.length) return tryFile(path.join(dir, ...rest));
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
    const entry = (typeof pkg.browser === 'string' && pkg.browser) || pkg.main || 'index.js';
    return tryFile(path.join(dir, entry));
}

// One script defining every module reachable from JsSIP.js, plus a require() shim.
function bundle() {
    const mods = new Map();
    const queue = [path.join(root, 'node_modules/jssip/lib/JsSIP.js')];
    while (queue.length) {
        const file = queue.shift();
        if (mods.has(file)) continue;
        let src = fs.readFileSync(file, 'utf8');
        if (file.endsWith('.json')) {
            mods.set(file, `module.exports = ${src};`);
            continue;
        }
        const deps = {};
        src = src.replace(/require\(\s*['"]([^'"]+)['"]\s*\)/g, (all, spec) => {
            const r = resolve(file, spec);
            if (!r) throw new Error(`cannot resolve ${spec} from ${file}`);
            deps[spec] = r;
            queue.push(r);
            return `__req(${JSON.stringify(r)})`;
        });
        mods.set(file, src);
    }
    let out = '(function () {\nvar process = { env: {} };\nvar defs = {}, cache = {};\n' +
        'function __req(id) {\n  if (cache[id]) return cache[id].exports;\n' +
        '  var module = cache[id] = { exports: {} };\n' +
        '  defs[id].call(module.exports, module, module.exports, __req);\n' +
        '  return module.exports;\n}\n';
    for (const [file, src] of mods) {
        out += `defs[${JSON.stringify(file)}] = function (module, exports, __req) {\n${src}\n};\n`;
    }
    out += `window.JsSIP = __req(${JSON.stringify(path.join(root, 'node_modules/jssip/lib/JsSIP.js'))});\n})();\n`;
    return out;
}

const js = bundle();
const html = fs.readFileSync(path.join(root, 'jssip/index.html'));
const server = http.createServer((req, res) => {
    const p = req.url.split('?')[0];
    if (p === '/' || p === '/index.html') {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
        res.end(html);
    } else if (p === '/jssip.js') {
        res.writeHead(200, { 'Content-Type': 'application/javascript; charset=utf-8' });
        res.end(js);
    } else {
        res.writeHead(404);
        res.end();
    }
});
server.listen(Number(process.argv[3] || 0), process.argv[2] || '127.0.0.1', () => {
    const a = server.address();
    console.log(`LISTENING http://${process.argv[2] || '127.0.0.1'}:${a.port}/`);
});
