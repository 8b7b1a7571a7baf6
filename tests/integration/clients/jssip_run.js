#!/usr/bin/env node
// Drives the JsSIP page in Debian's headless Chromium through playwright-core (no browser
// download: executablePath is /usr/bin/chromium, with a fresh user-data-dir).
//
// usage: node jssip_run.js --page http://localhost:P/ --ws wss://H:P --uri sip:U@D
//          --password PW --close-when FILE [--timeout S] [--shot FILE.png]
// Prints every page event as "EVENT <text>" as it happens. When FILE exists, closes the
// tab (the browser's WebSocket goes with it), prints "TAB CLOSED <epoch ms>" and exits 0.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const opt = {};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) opt[argv[i].replace(/^--/, '')] = argv[i + 1];
const limitMs = 1000 * Number(opt.timeout || 60);

async function main() {
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-chromium-'));
    const ctx = await chromium.launchPersistentContext(profile, {
        executablePath: '/usr/bin/chromium',
        headless: true,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update', '--disable-sync',
            '--ignore-certificate-errors'],
    });
    let code = 1;
    try {
        const page = await ctx.newPage();
        page.on('pageerror', (e) => console.log(`PAGEERROR ${e.message}`));
        page.on('console', (m) => {
            if (m.type() === 'error') console.log(`CONSOLE ${m.text()}`);
        });
        const q = new URLSearchParams({ ws: opt.ws, uri: opt.uri, password: opt.password });
        await page.goto(`${opt.page}?${q}`);
        const start = Date.now();
        let seen = 0;
        for (;;) {
            const evs = await page.evaluate(() => window.sipEvents || []);
            for (; seen < evs.length; seen++) console.log(`EVENT ${evs[seen]}`);
            if (opt['close-when'] && fs.existsSync(opt['close-when'])) break;
            if (Date.now() - start > limitMs) throw new Error('timeout');
            await new Promise((r) => setTimeout(r, 100));
        }
        if (opt.shot) await page.screenshot({ path: opt.shot });
        await page.close();
        console.log(`TAB CLOSED ${Date.now()}`);
        code = 0;
    } catch (e) {
        console.log(`FAIL ${e.message}`);
    } finally {
        await ctx.close().catch(() => {});
        fs.rmSync(profile, { recursive: true, force: true });
    }
    process.exit(code);
}

main();
