// Status page check in headless Chromium (playwright-core, system browser).
// usage: node status_page.js URL SCREENSHOT AOR_SUBSTRING BANNED_IP HOSTILE_UA
'use strict';
const { chromium } = require('playwright-core');
const fs = require('fs');
const os = require('os');
const path = require('path');

const [url, shot, aor, bannedIp, hostileUa] = process.argv.slice(2);

(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-status-profile-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  let failed = null;
  try {
    const page = await ctx.newPage();
    let dialogs = 0;
    page.on('dialog', async (d) => { dialogs++; await d.dismiss(); });
    const resp = await page.goto(url, { waitUntil: 'load', timeout: 15000 });
    if (!resp || resp.status() !== 200) throw new Error('status page HTTP ' + (resp && resp.status()));
    // Three polls: two rate samples, the least the chart draws a line from.
    await page.waitForFunction(() => Number(document.body.dataset.polls || 0) >= 3,
                               null, { timeout: 15000 });
    const devices = await page.$$eval('#devices tbody tr',
      (rows) => rows.map((r) => Array.from(r.cells, (c) => c.textContent)));
    if (!devices.some((r) => r[0].includes(aor)))
      throw new Error('registered device ' + aor + ' not shown: ' + JSON.stringify(devices));
    // The hostile User-Agent is shown as text, and no element was injected.
    if (!devices.some((r) => r[3] === hostileUa))
      throw new Error('hostile User-Agent not shown verbatim: ' + JSON.stringify(devices));
    const injected = await page.$$eval('#devices script, #devices img', (e) => e.length);
    if (injected !== 0 || dialogs !== 0)
      throw new Error('markup from a User-Agent was interpreted (' + injected + ', ' + dialogs + ')');
    const bans = await page.$$eval('#bans tbody tr',
      (rows) => rows.map((r) => Array.from(r.cells, (c) => c.textContent)));
    if (!bans.some((r) => r[0] === bannedIp && r[2] === 'admin' && r[4] !== '-'))
      throw new Error('ban of ' + bannedIp + ' not shown: ' + JSON.stringify(bans));
    const registrar = await page.textContent('#registrar');
    if (registrar !== 'up') throw new Error('registrar health shows ' + registrar);
    const lines = await page.$$eval('#chart polyline', (e) => e.length);
    if (lines !== 3) throw new Error('rate chart has ' + lines + ' series, want 3');
    // The AOR filter hides rows that do not match.
    await page.fill('#filter-aor', 'no-such-aor');
    const left = await page.$$eval('#devices tbody tr', (r) => r.length);
    if (left !== 0) throw new Error('AOR filter left ' + left + ' rows');
    await page.fill('#filter-aor', '');
    await page.screenshot({ path: shot, fullPage: true });
    console.log('status page ok: ' + devices.length + ' devices, ' + bans.length + ' bans');
  } catch (e) {
    failed = e;
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  if (failed) {
    console.error('FAIL: ' + failed.message);
    process.exit(1);
  }
})();
