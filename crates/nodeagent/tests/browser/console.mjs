// The web console in a real headless Chromium (Debian's /usr/bin/chromium), driven by
// playwright-core. Run by crates/nodeagent/tests/e2e_browser.rs, which starts the agent, gets a
// login URL from `nodeagent ui`, and passes in:
//   PLAYWRIGHT_CORE   the playwright-core package directory (cached outside the clone)
//   LOGIN_URL         the one-time login URL
//   CHROMIUM          the browser binary
//   SCREENSHOTS       optional: a directory to write console-{host,objects,object}.png into
//   VENDOR_DIR        crates/api/src/ui/vendor, whose README's hashes are checked
// Every step throws (and the process exits non-zero) on failure, saying which step.

import { createRequire } from 'node:module';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const LOGIN_URL = process.env.LOGIN_URL;
const SHOTS = process.env.SCREENSHOTS || '';
const origin = new URL(LOGIN_URL).origin;

function step(name) { console.log(`step: ${name}`); }

// The vendored files are the ones their README names.
step('vendored files match their recorded sha256');
{
  const dir = process.env.VENDOR_DIR;
  const readme = fs.readFileSync(path.join(dir, 'README.md'), 'utf8');
  let n = 0;
  for (const m of readme.matchAll(/\| `([^`]+)` \|[^\n]*\| `([0-9a-f]{64})` \|/g)) {
    const got = createHash('sha256').update(fs.readFileSync(path.join(dir, m[1]))).digest('hex');
    if (got !== m[2]) throw new Error(`${m[1]}: sha256 ${got}, README says ${m[2]}`);
    n++;
  }
  if (n < 3) throw new Error(`only ${n} hashes found in ${dir}/README.md`);
}

const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodeagent-chromium-'));
// A fresh profile (--user-data-dir, which playwright sets from the first argument).
const context = await chromium.launchPersistentContext(userDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1400, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const errors = [];
try {
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(15000);
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });

  // What the page's session can do, through its own cookie.
  const apiGet = (p) => page.evaluate(async (p) => {
    const r = await fetch(p, { headers: { Accept: 'application/json' } });
    return { status: r.status, body: await r.text() };
  }, p);

  step('no session: the API refuses, the console says how to log in');
  {
    const r = await (await fetch(`${origin}/v1/objects`)).text();
    if (!r.includes('unauthorized')) throw new Error(`an unauthenticated API call was not refused: ${r}`);
    await page.goto(`${origin}/ui/`);
    await page.waitForSelector('#login');
  }

  step('open the console with the login URL');
  await page.goto(LOGIN_URL);
  await page.waitForFunction(() => document.getElementById('node').textContent.includes('CPUs'));
  if (page.url().includes('login=')) throw new Error(`the code stayed in the address bar: ${page.url()}`);
  const cookies = await context.cookies();
  const sess = cookies.find((c) => c.name === 'nodeagent_session');
  if (!sess || !sess.httpOnly || sess.sameSite !== 'Strict') throw new Error(`session cookie: ${JSON.stringify(cookies)}`);
  if ((await apiGet('/v1/objects')).status !== 200) throw new Error('the session cannot read the API');
  await page.waitForSelector('[data-chart=cpu] canvas');
  // A login link works once.
  {
    const p2 = await context.newPage();
    const r = await p2.evaluate(async (code) => (await fetch('/ui/session', { method: 'POST', body: JSON.stringify({ code }) })).status,
      new URL(LOGIN_URL).hash.split('login=')[1]).catch(async () => {
      await p2.goto(`${origin}/ui/`);
      return p2.evaluate(async (code) => (await fetch('/ui/session', { method: 'POST', body: JSON.stringify({ code }) })).status,
        new URL(LOGIN_URL).hash.split('login=')[1]);
    });
    if (r !== 401) throw new Error(`a used login code answered ${r}`);
    await p2.close();
  }

  step('host view: live charts of CPU, memory, load, disk and network');
  for (const c of ['cpu', 'memory', 'load', 'disk', 'net']) await page.waitForSelector(`[data-chart=${c}] canvas`);
  await page.waitForTimeout(2500);
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, 'console-host.png') });

  step('create a process from YAML');
  await page.goto(`${origin}/ui/#/create`);
  await page.fill('#editor', [
    'name: ui-proc',
    'kind: process',
    'labels: {test: browser}',
    'process:',
    '  command: ["/bin/sh", "-c", "while :; do :; done"]',
    'resources:',
    '  cpu: 0.5',
    '  memory: 64Mi',
    'collect:',
    '  interval: 100ms',
  ].join('\n'));
  await page.click('#create');
  await page.waitForFunction(() => location.hash === '#/objects/ui-proc');
  await page.waitForFunction(() => document.getElementById('status')?.textContent === 'running');

  step('its chart updates');
  {
    const canvas = '[data-chart=cpu] canvas';
    await page.waitForSelector(canvas);
    await page.waitForTimeout(1500);
    const a = await page.$eval(canvas, (c) => c.toDataURL());
    await page.waitForTimeout(1500);
    const b = await page.$eval(canvas, (c) => c.toDataURL());
    if (a === b) throw new Error('the CPU chart did not change in 1.5 s');
  }

  step('move its CPU limit; the cgroup file follows');
  {
    const cg = await page.$eval('#detail [data-key=cgroup]', (e) => e.textContent);
    const quotaFile = path.join('/sys/fs/cgroup/cpu', cg, 'cpu.cfs_quota_us');
    const before = fs.readFileSync(quotaFile, 'utf8').trim();
    if (before !== '50000') throw new Error(`${quotaFile} holds ${before} before the change`);
    await page.fill('#cpu', '0.2');
    await page.click('#set-cpu');
    await page.waitForFunction(() => document.getElementById('message').textContent.includes('cpu 0.2: done'));
    const after = fs.readFileSync(quotaFile, 'utf8').trim();
    if (after !== '20000') throw new Error(`${quotaFile} holds ${after} after setting 0.2 cores`);
    // The limit line shows it within a second.
    await page.waitForFunction(() => document.getElementById('spec').textContent.includes('"cpu": 0.2'), null, { timeout: 1000 });
  }

  step('pause it and see the status change; resume');
  await page.click('#pause');
  await page.waitForFunction(() => document.getElementById('status').textContent === 'paused');
  await page.waitForFunction(() => document.querySelector('#detail [data-key=paused]')?.textContent === 'true');
  await page.click('#resume');
  await page.waitForFunction(() => document.getElementById('status').textContent === 'running');

  step('push once to stdout');
  await page.selectOption('#sink', 'stdout');
  await page.click('#push-once');
  await page.waitForFunction(() => document.getElementById('message').textContent.includes('push once stdout: done'));
  await page.waitForFunction(() => document.querySelectorAll('#object-events tr').length > 0);
  await page.waitForTimeout(1500);
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, 'console-object.png') });

  step('objects view: the table, live, filtered and sorted');
  await page.goto(`${origin}/ui/#/objects`);
  await page.waitForSelector('#objects tr[data-name=ui-proc]');
  await page.waitForFunction(() => /\d\.\d{3}/.test(document.querySelector('#objects tr[data-name=ui-proc] td:nth-child(4)').textContent));
  await page.click('th[data-sort=cpu]'); // ascending
  await page.click('th[data-sort=cpu]'); // descending: the busy loop first
  await page.waitForFunction(() => document.querySelector('#objects tbody tr')?.dataset.name === 'ui-proc');
  await page.waitForTimeout(2500);
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, 'console-objects.png') });
  await page.fill('#filter', 'ui-proc');
  await page.waitForFunction(() => document.querySelectorAll('#objects tbody tr').length === 1);
  await page.fill('#filter', '');

  step('a bad spec: the error names the field');
  await page.goto(`${origin}/ui/#/create`);
  await page.fill('#editor', 'name: ui-bad\nkind: process\nprocess:\n  command: ["/bin/sleep", "5"]\nresources:\n  memory: lots\n');
  await page.click('#create');
  await page.waitForSelector('#create-error');
  const field = await page.$eval('#create-error', (e) => e.dataset.field);
  const text = await page.$eval('#create-error', (e) => e.textContent);
  if (field !== 'resources.memory' || !text.includes('resources.memory') || !text.includes('line 6')) {
    throw new Error(`the error shown: field ${field}, text ${text}`);
  }

  step('events view, live');
  await page.goto(`${origin}/ui/#/events`);
  await page.waitForSelector('#events tr[data-kind=created]');
  // Something happens now: it shows up without a reload. (Without the console's header a
  // write with the session cookie is refused: that is what a cross-site form would send.)
  {
    const csrf = await page.evaluate(async () => (await fetch('/v1/objects/ui-sleeper-0/push-once', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ sink: 'stdout' }),
    })).status);
    if (csrf !== 401) throw new Error(`a session write without X-Nodeagent-Console answered ${csrf}`);
    const st = await page.evaluate(async () => (await fetch('/v1/objects/ui-sleeper-0/push-once', {
      method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Nodeagent-Console': '1' },
      body: JSON.stringify({ sink: 'stdout' }),
    })).status);
    if (st !== 200) throw new Error(`push-once answered ${st}`);
    await page.waitForFunction(() => [...document.querySelectorAll('#events tbody tr')]
      .some((tr) => tr.textContent.includes('ui-sleeper-0') && tr.textContent.includes('push-once')));
  }

  step('delete it, with a confirmation');
  await page.goto(`${origin}/ui/#/objects/ui-proc`);
  await page.waitForFunction(() => document.getElementById('status')?.textContent === 'running');
  await page.click('#delete');
  await page.waitForSelector('#confirm:not([hidden])');
  await page.click('#confirm-delete');
  await page.waitForFunction(() => location.hash === '#/objects');
  await page.waitForSelector('#objects');
  await page.waitForFunction(() => !document.querySelector('#objects tr[data-name=ui-proc]'));
  const gone = await apiGet('/v1/objects/ui-proc');
  if (gone.status !== 404) throw new Error(`after the delete GET answers ${gone.status}: ${gone.body}`);

  step('log out: the session ends');
  await page.click('#logout');
  await page.waitForSelector('#login');
  if ((await apiGet('/v1/objects')).status !== 401) throw new Error('the session still works after logout');

  // The browser logs every non-2xx answer as "Failed to load resource"; the test makes some on
  // purpose (401 before login, 400 for the bad spec, 404 after the delete). Script errors count.
  const real = errors.filter((e) => !e.includes('Failed to load resource'));
  if (real.length) throw new Error(`errors in the page:\n${real.join('\n')}`);
  console.log('ok');
} catch (e) {
  // What the page showed when the step failed, for the test's failure message.
  const page = context.pages()[0];
  const shown = await page?.evaluate(() => `${location.href}\n${document.querySelector('main')?.innerText}`).catch(() => '');
  console.log(`the page at the failure: ${shown}`);
  if (errors.length) console.log(errors.join('\n'));
  throw e;
} finally {
  await context.close();
  fs.rmSync(userDir, { recursive: true, force: true });
}
