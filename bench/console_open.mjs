// Opens the web console in headless Chromium for bench/console_cost.py: logs in with LOGIN_URL,
// goes to VIEW (a hash route), prints "ready" once the view shows live data, stays SECONDS, exits.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodeagent-bench-chromium-'));
const ctx = await chromium.launchPersistentContext(dir, {
  executablePath: '/usr/bin/chromium', headless: true, viewport: { width: 1400, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = ctx.pages()[0] || await ctx.newPage();
  await page.goto(process.env.LOGIN_URL);
  await page.waitForFunction(() => document.getElementById('node').textContent.includes('CPUs'));
  const origin = new URL(process.env.LOGIN_URL).origin;
  await page.goto(`${origin}/ui/${process.env.VIEW}`);
  await page.waitForSelector('canvas', { timeout: 20000 });
  console.log('ready');
  await page.waitForTimeout(Number(process.env.SECONDS) * 1000);
} finally {
  await ctx.close();
  fs.rmSync(dir, { recursive: true, force: true });
}
