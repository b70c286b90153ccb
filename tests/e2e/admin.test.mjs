// End-to-end test of the admin console (/admin) in headless Chromium.
//
// Starts `formpush sandbox` (the fake WeChat) and `formpush serve` (debug build) on free
// ports against a fresh database on the server named by PG_URL_BASE, seeds users and
// formIds through formpush's own admin API, then signs in to the console with
// playwright-core driving Debian's /usr/bin/chromium and works through it as an admin
// would (send hygiene included: a third app gets a frequency cap and quiet hours that hold
// a campaign's run, campaigns are previewed before creation, tested on a few users, and
// capped): in English, then every view again in Simplified Chinese, checking that each
// visible text comes from the language's message catalogue, on a desktop and on a
// phone-sized screen (390 px), with screenshots. Run it with scripts/e2e (builds, installs
// what is missing, sets PG_URL_BASE and the screenshot directory, and prints it).
//
// Environment: PG_URL_BASE (required, postgres://user@host:port), FORMPUSH_BIN (default
// target/debug/formpush), CHROMIUM (default /usr/bin/chromium), FORMPUSH_E2E_SHOTS (the
// screenshot directory; default a new one under the system's temporary directory).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = process.env.FORMPUSH_BIN || path.join(ROOT, 'target', 'debug', 'formpush');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.FORMPUSH_E2E_SHOTS || mkdtempSync(path.join(os.tmpdir(), 'formpush-e2e-shots-'));
const APPID = 'wxe2e0000000000001';
// A second app whose pool fills the charts.
const CHARTS_APPID = 'wxe2e0000000000002';
// A third app with a frequency cap and quiet hours (send hygiene).
const HYG_APPID = 'wxe2e0000000000003';
const SECRET = 'e2e-secret-' + randomBytes(8).toString('hex');
const HYG_SECRET = 'e2e-hygiene-' + randomBytes(8).toString('hex');
const ADMIN_TOKEN = 'e2e-admin-' + randomBytes(16).toString('hex');
const DB_NAME = 'formpush_e2e_' + randomBytes(6).toString('hex');
const STEP_TIMEOUT = 30_000;
// Screenshots: <language>-<view>[-phone].png in SHOTS.
mkdirSync(SHOTS, { recursive: true });
const shot = (view) => path.join(SHOTS, `${view}.png`);
console.log(`e2e: screenshots in ${SHOTS}`);

// ---------- processes ----------

const children = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function start(name, args, env) {
  const cwd = mkdtempSync(path.join(os.tmpdir(), 'formpush-e2e-')); // no stray .env is read
  const child = spawn(BIN, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = { name, child, cwd, log: [], exited: null };
  const keep = (chunk) => {
    proc.log.push(...chunk.toString().split('\n').filter(Boolean));
    if (proc.log.length > 400) proc.log.splice(0, proc.log.length - 400);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.on('exit', (code, signal) => { proc.exited = { code, signal }; });
  children.push(proc);
  return proc;
}

async function stop(proc) {
  if (!proc.exited) {
    const done = new Promise((resolve) => proc.child.once('exit', resolve));
    proc.child.kill('SIGTERM');
    const timer = setTimeout(() => proc.child.kill('SIGKILL'), 5_000);
    await done;
    clearTimeout(timer);
  }
  rmSync(proc.cwd, { recursive: true, force: true });
}

// Last resort if the runner is torn down before cleanup runs.
process.on('exit', () => {
  for (const p of children) if (!p.exited) p.child.kill('SIGKILL');
});

function dumpLogs() {
  for (const p of children) {
    console.error(`---- last lines of ${p.name} ${p.exited ? JSON.stringify(p.exited) : '(running)'} ----`);
    console.error(p.log.slice(-60).join('\n'));
  }
}

async function waitFor(what, fn, { timeout = 60_000, interval = 200, proc } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    if (proc && proc.exited) throw new Error(`${proc.name} exited ${JSON.stringify(proc.exited)} while waiting for ${what}`);
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? ': ' + last.message : ''}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

function pgTool(name) {
  for (const dir of (process.env.PATH || '').split(':')) {
    const p = path.join(dir, name);
    if (dir && existsSync(p)) return p;
  }
  const base = '/usr/lib/postgresql';
  if (existsSync(base)) {
    const versions = readdirSync(base).sort((a, b) => Number(b) - Number(a));
    for (const v of versions) {
      const p = path.join(base, v, 'bin', name);
      if (existsSync(p)) return p;
    }
  }
  return null;
}

function dropDatabase(pgBase) {
  const dropdb = pgTool('dropdb');
  if (!dropdb) {
    console.error(`dropdb not found: drop database ${DB_NAME} by hand`);
    return;
  }
  const r = spawnSync(dropdb, ['--if-exists', '--force', `--maintenance-db=${pgBase}/postgres`, DB_NAME], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (r.status !== 0) console.error(`dropdb ${DB_NAME} failed: ${r.stderr || r.error}`);
}

// ---------- HTTP helpers ----------

async function http(method, url, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = 'Bearer ' + token;
  const resp = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  return { status: resp.status, headers: resp.headers, text, json };
}

async function ok(method, url, opts) {
  const r = await http(method, url, opts);
  assert.ok(r.status >= 200 && r.status < 300, `${method} ${url} -> ${r.status} ${r.text}`);
  return r.json;
}

// ---------- the test ----------

// Steps run in order and share one browser page; after a failed step the rest are skipped.
const pgBase = process.env.PG_URL_BASE;
let browser;
let page;
let broken = false;
let sb; // sandbox base URL
let api; // formpush base URL
const consoleLines = [];
const pageErrors = [];
const bodies = [];
const byId = (id) => page.getByTestId(id);
const storedToken = () => page.evaluate(() => sessionStorage.getItem('formpush.adminToken'));

async function expectText(locator, expected, what) {
  await waitFor(what || `text ${expected}`, async () => {
    const text = (await locator.textContent()) || '';
    return expected instanceof RegExp ? expected.test(text) : text.trim() === String(expected);
  }, { timeout: STEP_TIMEOUT, interval: 100 });
}

function step(name, fn) {
  test(name, { timeout: 120_000 }, async (t) => {
    if (broken) {
      t.skip('an earlier step failed');
      return;
    }
    try {
      await fn();
    } catch (e) {
      broken = true;
      throw e;
    }
  });
}

before(async () => {
  try {
    assert.ok(pgBase, 'set PG_URL_BASE (postgres://user@host:port); scripts/e2e does');
    assert.ok(existsSync(BIN), `${BIN} is missing: run cargo build --bin formpush`);
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
    // ---- services ----
    const [sandboxPort, apiPort] = [await freePort(), await freePort()];
    const baseEnv = Object.fromEntries(Object.entries(process.env)
      .filter(([k]) => !/^(FORMPUSH_|WECHAT_|DATABASE_URL$)/.test(k)));
    const sandbox = start('sandbox',
      ['sandbox', '--bind', `127.0.0.1:${sandboxPort}`, '--app', `${APPID}:${SECRET}`,
        '--app', `${HYG_APPID}:${HYG_SECRET}`], baseEnv);
    sb = `http://127.0.0.1:${sandboxPort}`;
    await waitFor('the sandbox', async () => (await http('GET', `${sb}/sandbox/stats`)).status === 200,
      { proc: sandbox });

    const server = start('formpush', ['serve'], {
      ...baseEnv,
      DATABASE_URL: `${pgBase}/${DB_NAME}`,
      FORMPUSH_BIND: `127.0.0.1:${apiPort}`,
      FORMPUSH_ADMIN_TOKEN: ADMIN_TOKEN,
      FORMPUSH_DB_MAX_CONNECTIONS: '5',
      WECHAT_API_BASE: sb,
      WECHAT_APPID: APPID,
      WECHAT_SECRET: SECRET,
      RUST_LOG: process.env.RUST_LOG || 'info',
    });
    api = `http://127.0.0.1:${apiPort}`;
    await waitFor('formpush /readyz', async () => (await http('GET', `${api}/readyz`)).status === 200,
      { proc: server, timeout: 90_000 });

    // ---- seed: three users with two sandbox-issued formIds each, via the admin import ----
    const people = ['o-e2e-alice', 'o-e2e-bob', 'o-e2e-carol'];
    const items = [];
    for (const openid of people) {
      const { form_ids: ids } = await ok('POST', `${sb}/sandbox/formids`, { body: { appid: APPID, openid, count: 2 } });
      for (const form_id of ids) items.push({ openid, form_id });
    }
    const imported = await ok('POST', `${api}/v1/apps/${APPID}/formids:import`, { token: ADMIN_TOKEN, body: { items } });
    assert.equal(imported.accepted, 6, JSON.stringify(imported));

    // ---- the hygiene app: ann, ben and cat with two formIds each (dan, unknown, has none) ----
    await ok('PUT', `${api}/v1/apps/${HYG_APPID}`, { token: ADMIN_TOKEN, body: { secret: HYG_SECRET } });
    const hygItems = [];
    for (const openid of ['h-ann', 'h-ben', 'h-cat']) {
      const { form_ids: ids } = await ok('POST', `${sb}/sandbox/formids`, { body: { appid: HYG_APPID, openid, count: 2 } });
      for (const form_id of ids) hygItems.push({ openid, form_id });
    }
    const hygImported = await ok('POST', `${api}/v1/apps/${HYG_APPID}/formids:import`, { token: ADMIN_TOKEN, body: { items: hygItems } });
    assert.equal(hygImported.accepted, 6, JSON.stringify(hygImported));
  } catch (e) {
    broken = true;
    throw e;
  }
});

step('the console assets have strict headers and no secret', async () => {
  for (const [p, type] of [['/admin', 'text/html'], ['/admin/admin.js', 'text/javascript'],
    ['/admin/i18n.js', 'text/javascript'], ['/admin/charts.js', 'text/javascript'], ['/admin/admin.css', 'text/css']]) {
    const r = await http('GET', api + p);
    assert.equal(r.status, 200, p);
    assert.ok(r.headers.get('content-type').startsWith(type), `${p}: ${r.headers.get('content-type')}`);
    assert.equal(r.headers.get('cache-control'), 'no-store', p);
    const csp = r.headers.get('content-security-policy') || '';
    assert.match(csp, /default-src 'none'/, p);
    assert.match(csp, /script-src 'self'(;|$)/, p);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/, p);
    assert.ok(!r.text.includes(SECRET), `${p} contains the app secret`);
    assert.ok(!r.text.includes(ADMIN_TOKEN), `${p} contains the admin token`);
  }
});

step('headless Chromium opens /admin', async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 60_000,
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, timezoneId: 'Asia/Shanghai', locale: 'en-US' });
  context.setDefaultTimeout(STEP_TIMEOUT);
  page = await context.newPage();
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('response', (r) => { bodies.push(r.text().then((b) => ({ url: r.url(), b }), () => ({ url: r.url(), b: '' }))); });
  page.on('dialog', (d) => d.accept());
  await page.goto(`${api}/admin`);
  await byId('login-form').waitFor();
});

step('a wrong token is refused with the 401 message', async () => {
  await byId('token-input').fill('not-the-admin-token');
  await byId('login-submit').click();
  await expectText(byId('login-error'), /the admin token is wrong/);
  assert.equal(await storedToken(), null);
  assert.ok(await byId('login-form').isVisible());
});

step('sign in, see the app and its formId pool', async () => {
  await byId('token-input').fill(ADMIN_TOKEN);
  await byId('login-submit').click();
  const card = page.locator(`[data-testid="app-card"][data-appid="${APPID}"]`);
  await card.waitFor();
  assert.equal(await storedToken(), ADMIN_TOKEN);
  assert.equal(await byId('token-input').inputValue(), '', 'the token field is cleared');
  await expectText(card.getByTestId('stat-users'), 3, 'users = 3');
  await expectText(card.getByTestId('stat-valid_formids'), 6, 'valid formIds = 6');
  await expectText(card.getByTestId('stat-users_with_valid_formid'), 3);
  // A reload keeps the session (sessionStorage).
  await page.reload();
  await card.waitFor();
});

let csvCampaignId;
let cronCampaignId;
let subscribeCampaignId;
step('create a template campaign from a CSV and watch it complete', async () => {
  await byId('new-campaign').click();
  await byId('campaign-form').waitFor();
  await byId('cf-appid').selectOption(APPID);
  await byId('cf-name').fill('e2e csv campaign');
  // template-only and subscribe-only fields follow the kind.
  await byId('cf-kind').selectOption('subscribe');
  assert.ok(await byId('cf-mp-state').isVisible());
  assert.ok(await byId('cf-lang').isVisible());
  assert.ok(!(await byId('cf-emphasis').isVisible()));
  assert.ok(!(await byId('cf-formid-pick').isVisible()));
  await byId('cf-kind').selectOption('template');
  assert.ok(await byId('cf-emphasis').isVisible());
  assert.ok(!(await byId('cf-mp-state').isVisible()));
  await byId('cf-template-id').fill('TPL_E2E');
  await byId('cf-page').fill('pages/index/index');
  await byId('cf-emphasis').fill('keyword1.DATA');
  await byId('cf-audience-csv').check();
  const csv = 'openid,nickname\r\n' +
    'o-e2e-alice,Alice\r\n' +
    'o-e2e-bob,"Lee, Bob"\r\n' +
    'o-e2e-carol,"Carol ""CJ"" Jones"\r\n' +
    'o-e2e-dave,Dave\r\n';
  await byId('cf-csv').setInputFiles({ name: 'audience.csv', mimeType: 'text/csv', buffer: Buffer.from(csv) });
  await expectText(byId('cf-csv-summary'), /^4 users; variables: \{\{nickname\}\}/);
  await byId('cf-csv-preview').waitFor();
  // Invalid JSON is caught in the page, before anything is sent.
  await byId('cf-data').fill('{"keyword1": {"value": "{{nickname}}"}');
  await byId('cf-submit').click();
  await expectText(byId('cf-error'), /data is not valid JSON/);
  // The server's 422 is shown too (unknown placeholder).
  await byId('cf-data').fill('{"keyword1": {"value": "{{nickname}}"}, "keyword2": {"value": "{{city}}"}}');
  await byId('cf-submit').click();
  await expectText(byId('cf-error'), /city/);
  await byId('cf-data').fill('{"keyword1": {"value": "Hi {{nickname}}"}, "keyword2": {"value": "{{date}}"}}');
  await byId('cf-schedule-now').check();
  await page.screenshot({ path: shot('en-form-csv'), fullPage: true });
  await byId('cf-submit').click();

  await byId('campaign-view').waitFor();
  await expectText(byId('cv-name'), 'e2e csv campaign');
  csvCampaignId = (await byId('cv-id').textContent()).trim();
  await expectText(byId('cv-status'), 'completed', 'the campaign completes');
  await expectText(byId('cv-targeted'), 4);
  await expectText(byId('cv-sent'), 3);
  await expectText(byId('cv-no_formid'), 1);
  await expectText(byId('cv-failed'), 0);
  await expectText(byId('cv-pending'), 0);
  assert.equal(await page.getByTestId('run-row').count(), 1);

  // What WeChat (the sandbox) received: one message each, nickname filled in.
  const { messages } = await ok('GET', `${sb}/sandbox/messages?appid=${APPID}`);
  const got = Object.fromEntries(messages.map((m) => [m.touser, m.data.keyword1.value]));
  assert.deepEqual(got, {
    'o-e2e-alice': 'Hi Alice',
    'o-e2e-bob': 'Hi Lee, Bob',
    'o-e2e-carol': 'Hi Carol "CJ" Jones',
  });
  assert.ok(messages.every((m) => m.template_id === 'TPL_E2E' && m.page === 'pages/index/index'));
});

step('browse the deliveries', async () => {
  const rows = page.getByTestId('delivery-row');
  await waitFor('4 deliveries', async () => (await rows.count()) === 4);
  await byId('deliveries-status').selectOption('sent');
  await waitFor('3 sent deliveries', async () => (await rows.count()) === 3 &&
    (await page.locator('[data-testid="delivery-row"][data-status="sent"]').count()) === 3);
  await byId('deliveries-status').selectOption('no_formid');
  await waitFor('1 no_formid delivery', async () => (await rows.count()) === 1);
  await expectText(rows.first().getByTestId('delivery-openid'), 'o-e2e-dave');
  await byId('deliveries-status').selectOption('');
  await waitFor('4 deliveries again', async () => (await rows.count()) === 4);
  await page.screenshot({ path: shot('en-campaign-deliveries'), fullPage: true });
});

step('paste openids; page through deliveries with "more"', async () => {
  await byId('nav-new-campaign').click();
  await byId('campaign-form').waitFor();
  await byId('cf-appid').selectOption(APPID);
  await byId('cf-name').fill('e2e pasted openids');
  await byId('cf-template-id').fill('TPL_E2E');
  await byId('cf-data').fill('{"keyword1": {"value": "{{openid}}"}}');
  await byId('cf-audience-openids').check();
  const openids = Array.from({ length: 60 }, (_, i) => `o-e2e-bulk-${String(i).padStart(2, '0')}`);
  await byId('cf-openids').fill(openids.join('\n') + '\n');
  await byId('cf-submit').click();
  await expectText(byId('cv-name'), 'e2e pasted openids');
  await expectText(byId('cv-status'), 'completed', 'the pasted campaign completes');
  await expectText(byId('cv-no_formid'), 60);
  const rows = page.getByTestId('delivery-row');
  await waitFor('the first page of deliveries', async () => (await rows.count()) === 50);
  assert.ok(await byId('deliveries-more').isVisible());
  await byId('deliveries-more').click();
  await waitFor('all 60 deliveries', async () => (await rows.count()) === 60);
  await waitFor('no more pages', async () => !(await byId('deliveries-more').isVisible()));
  const shown = await page.locator('[data-testid="delivery-row"]').evaluateAll((rs) => rs.map((r) => r.dataset.openid));
  assert.deepEqual([...shown].sort(), openids);
});

step('a cron campaign: pause, resume, cancel, and 409s shown', async () => {
  await byId('nav-new-campaign').click();
  await byId('campaign-form').waitFor();
  await byId('cf-appid').selectOption(APPID);
  await byId('cf-name').fill('e2e yearly cron');
  await byId('cf-template-id').fill('TPL_E2E');
  await byId('cf-data').fill('{"keyword1": {"value": "{{datetime}}"}}');
  await byId('cf-audience-openids').check();
  await byId('cf-openids').fill('o-e2e-alice\no-e2e-bob');
  await byId('cf-schedule-cron').check();
  await byId('cf-cron').fill('0 0 3 1 1 *');
  assert.equal(await byId('cf-timezone').inputValue(), 'Asia/Shanghai');
  await byId('cf-submit').click();
  await expectText(byId('cv-name'), 'e2e yearly cron');
  const id = (await byId('cv-id').textContent()).trim();
  cronCampaignId = id;
  await expectText(byId('cv-status'), 'scheduled');
  await expectText(byId('cv-schedule'), 'cron 0 0 3 1 1 * (Asia/Shanghai)');
  // Jan 1st, 03:00 in Shanghai; the browser runs in Asia/Shanghai too.
  await expectText(byId('cv-next-run'), /^Jan 1, \d{4}, 03:00:00$/);
  await expectText(byId('cv-live'), /^live/);

  await byId('cv-pause').click();
  await expectText(byId('cv-status'), 'paused');
  assert.equal((await ok('GET', `${api}/v1/campaigns/${id}`, { token: ADMIN_TOKEN })).status, 'paused');
  await byId('cv-pause').click();
  await expectText(byId('cv-error'), /a paused campaign cannot be paused/);

  await byId('cv-resume').click();
  await expectText(byId('cv-status'), 'scheduled');
  assert.equal(await byId('cv-error').isVisible(), false, 'the 409 message goes away');
  await byId('cv-resume').click();
  await expectText(byId('cv-error'), /a scheduled campaign cannot be resumed/);

  await byId('cv-cancel').click(); // confirm() is accepted
  await expectText(byId('cv-status'), 'cancelled');
  await expectText(byId('cv-next-run'), '—');
  const c = await ok('GET', `${api}/v1/campaigns/${id}`, { token: ADMIN_TOKEN });
  assert.equal(c.status, 'cancelled');
  assert.equal(c.totals.targeted, 0, 'the yearly cron never fired');
  await byId('cv-pause').click();
  await expectText(byId('cv-error'), /a cancelled campaign cannot be paused/);
});

step('an "at" campaign is scheduled at the chosen local time', async () => {
  await byId('nav-new-campaign').click();
  await byId('campaign-form').waitFor();
  await byId('cf-appid').selectOption(APPID);
  await byId('cf-name').fill('e2e at');
  await byId('cf-template-id').fill('TPL_E2E');
  await byId('cf-data').fill('{"keyword1": {"value": "x"}}');
  await byId('cf-audience-all').check();
  await byId('cf-schedule-at').check();
  await byId('cf-at').fill('2099-06-01T12:30:00');
  await byId('cf-submit').click();
  await expectText(byId('cv-name'), 'e2e at');
  await expectText(byId('cv-status'), 'scheduled');
  const id = (await byId('cv-id').textContent()).trim();
  const c = await ok('GET', `${api}/v1/campaigns/${id}`, { token: ADMIN_TOKEN });
  assert.equal(new Date(c.next_run_at).toISOString(), '2099-06-01T04:30:00.000Z'); // 12:30 +08:00
  await byId('cv-cancel').click();
  await expectText(byId('cv-status'), 'cancelled');
});

step('the dashboard lists the campaigns and the updated pool', async () => {
  await byId('nav-dashboard').click();
  const card = page.locator(`[data-testid="app-card"][data-appid="${APPID}"]`);
  await expectText(card.getByTestId('stat-users'), 64, 'users = 3 + dave + 60 pasted');
  await expectText(card.getByTestId('stat-valid_formids'), 3, 'one formId each was used');
  await expectText(card.getByTestId('stat-consumed'), 3);
  await waitFor('4 campaign rows', async () => (await page.getByTestId('campaign-row').count()) === 4);
  await page.screenshot({ path: shot('en-dashboard-updated'), fullPage: true });
  await page.locator(`[data-testid="campaign-row"][data-id="${csvCampaignId}"]`).getByTestId('campaign-link').click();
  await expectText(byId('cv-status'), 'completed');
});

step("an app's keys: one created and shown once, a message sent with it, then revoked", async () => {
  await byId('nav-dashboard').click();
  const card = page.locator(`[data-testid="app-card"][data-appid="${APPID}"]`);
  await card.getByTestId('app-keys-link').click();
  await byId('app-view').waitFor();
  await expectText(byId('av-appid'), APPID);
  await byId('keys-empty').waitFor();
  await byId('messages-empty').waitFor();
  await byId('kf-name').fill('e2e-backend');
  await byId('kf-scope-read').check(); // send is checked already
  await byId('kf-submit').click();
  await byId('key-dialog').waitFor();
  const key = await byId('kd-key').inputValue();
  assert.match(key, /^fpk_[A-Za-z0-9_-]{32,}$/);
  await byId('kd-copy').click();
  await expectText(byId('kd-copied'), 'Copied.');
  await byId('kd-done').click();
  assert.equal(await byId('kd-key').inputValue(), '', 'the key leaves the page');
  assert.ok(!(await page.content()).includes(key), 'the key is shown once only');
  const keyRow = page.getByTestId('key-row');
  await waitFor('one key row', async () => (await keyRow.count()) === 1);
  await expectText(keyRow.getByTestId('key-prefix'), key.slice(0, 8) + '…');

  // The team's backend sends a triggered message with it (alice has a formId left).
  const sent = await ok('POST', `${api}/v1/apps/${APPID}/messages`, {
    token: key,
    body: { openid: 'o-e2e-alice', kind: 'template', template_id: 'TPL_E2E', data: { keyword1: { value: 'shipped' } } },
  });
  assert.equal(sent.status, 'sending');
  await waitFor('the message is sent', async () =>
    (await ok('GET', `${api}/v1/apps/${APPID}/messages/${sent.id}`, { token: key })).status === 'sent');
  await byId('messages-refresh').click();
  const messageRow = page.locator(`[data-testid="message-row"][data-id="${sent.id}"]`);
  await messageRow.waitFor();
  await expectText(messageRow.getByTestId('message-status'), 'sent');
  await expectText(messageRow.getByTestId('message-openid'), 'o-e2e-alice');
  await page.screenshot({ path: shot('en-app-keys'), fullPage: true });

  // Revoked (confirm() is accepted): the key is refused at once.
  await keyRow.getByTestId('key-revoke').click();
  await byId('keys-empty').waitFor();
  assert.equal((await http('GET', `${api}/v1/apps/${APPID}/messages`, { token: key })).status, 401);
});

step('a subscribe campaign on a synced template: keywords checked while typing, previewed, checked per user', async () => {
  const template = 'TPL_E2E_MEETING_000000000000000000000000000';
  await ok('POST', `${sb}/sandbox/templates`, { body: {
    appid: APPID, template_id: template, title: '会议提醒', type: 2,
    content: '会议地点:{{thing1.DATA}}\n会议时间:{{time2.DATA}}\n房间类型:{{enum_string3.DATA}}\n',
    example: '会议地点:TIT会议室\n会议时间:15:01\n房间类型:大会议室\n',
    enum_values: { enum_string3: ['大会议室', '小会议室'] },
  } });
  // Alice and Bob each accept the template once, in WeChat and as reported to formpush.
  for (const openid of ['o-e2e-alice', 'o-e2e-bob']) {
    await ok('POST', `${sb}/sandbox/subscriptions`, { body: { appid: APPID, openid, template_id: template } });
    const { code } = await ok('POST', `${sb}/sandbox/login_codes`, { body: { appid: APPID, openid } });
    const { token } = await ok('POST', `${api}/v1/apps/${APPID}/sessions`, { body: { code } });
    await ok('POST', `${api}/v1/apps/${APPID}/subscriptions`, { token, body: { results: { [template]: 'accept' } } });
  }

  await byId('nav-new-campaign').click();
  await byId('campaign-form').waitFor();
  await byId('cf-appid').selectOption(APPID);
  await byId('cf-name').fill('e2e synced template');
  await byId('cf-kind').selectOption('subscribe');
  await expectText(byId('cf-template-status'), /No synced template/);
  await byId('cf-template-sync').click();
  await expectText(byId('cf-template-status'), /^1 template, synced/);
  await byId('cf-template-pick').selectOption(template);
  assert.equal(await byId('cf-template-id').inputValue(), template);
  const input = (key) => page.locator(`[data-testid="kw-input"][data-key="${key}"]`);
  const note = (key) => page.locator(`[data-testid="kw-note"][data-key="${key}"]`);
  const shown = (key) => page.locator(`[data-testid="preview-row"][data-key="${key}"]`).getByTestId('preview-value');
  const labels = await page.locator('[data-testid="kw-row"] label').allTextContents();
  assert.deepEqual(labels, ['会议地点', '会议时间', '房间类型']);
  assert.equal(await input('thing1').getAttribute('placeholder'), 'e.g. TIT会议室');

  // Literal values are checked as typed.
  await input('thing1').fill('一二三四五六七八九十一二三四五六七八九十一');
  await expectText(note('thing1'), 'at most 20 characters, got 21');
  await input('time2').fill('3pm');
  await expectText(note('time2'), /^a 24-hour time/);
  await input('enum_string3').fill('礼堂');
  await expectText(note('enum_string3'), 'one of 大会议室, 小会议室');
  await byId('cf-submit').click();
  await expectText(byId('cf-error'), /会议地点 \(thing1, rule thing\): at most 20 characters/);
  // Under truncate the long thing is cut, and the preview shows it cut.
  await byId('cf-data-policy').selectOption('truncate');
  await expectText(note('thing1'), 'cut to 20 characters when sent');
  await expectText(shown('thing1'), '一二三四五六七八九十一二三四五六七八九十');
  await byId('cf-data-policy').selectOption('reject');

  // Placeholders: checked for the sample user (the CSV's first row) and previewed for them.
  await byId('cf-audience-csv').check();
  const longRoom = '一二三四五六七八九十一二三四五六七八九十一二三';
  const csv = `openid,room\no-e2e-alice,三楼\no-e2e-bob,${longRoom}\n`;
  await byId('cf-csv').setInputFiles({ name: 'rooms.csv', mimeType: 'text/csv', buffer: Buffer.from(csv) });
  await expectText(byId('cf-csv-summary'), /^2 users; variables: \{\{room\}\}/);
  // (The enum field offers its values in a list that stays open while it has the focus.)
  await input('enum_string3').fill('大会议室');
  await input('thing1').fill('{{room}}');
  await input('time2').fill('{{datetime}}');
  await expectText(note('thing1'), 'checked for each user before their grant is spent');
  await expectText(byId('cf-preview-for'), 'As o-e2e-alice will see it:');
  await expectText(byId('preview-title'), '会议提醒');
  await expectText(shown('thing1'), '三楼');
  await expectText(shown('time2'), /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/);
  await expectText(shown('enum_string3'), '大会议室');
  assert.deepEqual(JSON.parse(await byId('cf-data').inputValue()), {
    thing1: { value: '{{room}}' }, time2: { value: '{{datetime}}' }, enum_string3: { value: '大会议室' },
  });
  await page.screenshot({ path: shot('en-form-template'), fullPage: true });
  await byId('cf-submit').click();

  // Bob's room breaks the thing rule: his delivery fails invalid_data and keeps his grant.
  await expectText(byId('cv-name'), 'e2e synced template');
  subscribeCampaignId = (await byId('cv-id').textContent()).trim();
  await expectText(byId('cv-status'), 'completed', 'the subscribe campaign completes');
  await expectText(byId('cv-sent'), 1);
  await expectText(byId('cv-failed'), 1);
  const bob = page.locator('[data-testid="delivery-row"][data-openid="o-e2e-bob"]');
  await bob.waitFor();
  assert.match(await bob.textContent(), /invalid_data.*data\.thing1 breaks rule thing: at most 20 characters, got 23/);
  const { messages } = await ok('GET', `${sb}/sandbox/messages?appid=${APPID}&openid=o-e2e-alice`);
  const sent = messages.filter((m) => m.template_id === template);
  assert.equal(sent.length, 1);
  assert.equal(sent[0].data.thing1.value, '三楼');
  const stats = await ok('GET', `${sb}/sandbox/stats`);
  assert.equal(stats.outcomes.subscribe['47003'], undefined, 'WeChat never saw the broken data');
});

// ---------- languages and charts ----------

// Runs in the page: every text the console shows must come from the message catalogue of
// the language on screen. Text nodes, option labels, tooltips, placeholders, aria-labels
// and the title are checked; data (inside translate="no") is not; dates and numbers
// formatted by Intl (data-l10n="intl", <time>) must be in the language's script. In the
// Chinese console, no English text of the catalogue may show either. Returns the problems.
function auditPage() {
  const I = window.FormpushI18n;
  const lang = document.documentElement.lang.startsWith('zh') ? 'zh' : 'en';
  const PARAM = /(?<!\{)\{\w+\}(?!\})/g;
  const forms = (v) => (typeof v === 'object' ? Object.values(v) : [v]);
  const values = Object.values(I.catalogues[lang]).flatMap(forms);
  const norm = (x) => x.replace(/\s+/g, ' ').trim();
  const esc = (x) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const letters = /\p{L}/u;
  const fragments = new Set(values.flatMap((v) => v.split(PARAM).map(norm)).filter(Boolean));
  // Whole messages with their parameters filled in (only those with words of their own).
  const patterns = values.filter((v) => letters.test(v.replace(PARAM, ''))).map((v) =>
    new RegExp('^\\s*' + v.trim().split(PARAM).map(esc).join('[\\s\\S]*?') + '\\s*$'));
  const fromCatalogue = (x) => !letters.test(x) || fragments.has(norm(x)) || patterns.some((re) => re.test(x));
  const isData = (e) => Boolean(e.closest('[translate="no"]'));
  const visible = (e) => e.checkVisibility({ visibilityProperty: true });
  const problems = [];
  const shown = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const text = n.nodeValue;
    const host = n.parentElement;
    if (!letters.test(text) || !host || isData(host) || host.closest('option, title, textarea, script, style')) continue;
    if (!visible(host)) continue;
    if (host.closest('[data-l10n="intl"], time')) {
      const wrong = lang === 'zh' ? /[A-Za-z]/.test(text.replace(/GMT|UTC/g, '')) : /[\u3000-\u9fff]/.test(text);
      if (wrong) problems.push(`formatted for the wrong language: ${JSON.stringify(text)}`);
      continue;
    }
    shown.push(text);
    if (!fromCatalogue(text)) problems.push(`text: ${JSON.stringify(norm(text))} (in <${host.tagName.toLowerCase()}>)`);
  }
  for (const select of document.querySelectorAll('select')) {
    if (isData(select) || !visible(select)) continue;
    for (const o of select.options) {
      if (isData(o)) continue;
      shown.push(o.text);
      if (!fromCatalogue(o.text)) problems.push(`option: ${JSON.stringify(o.text)}`);
    }
  }
  for (const title of document.querySelectorAll('svg title')) {
    if (isData(title) || !visible(title.parentElement)) continue;
    if (!fromCatalogue(title.textContent)) problems.push(`tooltip: ${JSON.stringify(title.textContent)}`);
  }
  for (const attr of ['placeholder', 'aria-label', 'title']) {
    for (const e of document.querySelectorAll(`[${attr}]`)) {
      if (isData(e) || !visible(e)) continue;
      const v = e.getAttribute(attr);
      shown.push(v);
      if (!fromCatalogue(v)) problems.push(`${attr}: ${JSON.stringify(v)}`);
    }
  }
  if (!fromCatalogue(document.title)) problems.push(`title: ${JSON.stringify(document.title)}`);
  if (lang === 'zh') {
    // No English text of the catalogue, even as part of another text; terms the Chinese
    // catalogue uses itself (openid, formId, cron...) are not English text.
    const all = shown.join('\n');
    const zhAll = Object.values(I.catalogues.zh).flatMap(forms).join('\n');
    const same = new Set(I.same);
    const within = (part, text) => new RegExp(`(^|[^A-Za-z_])${esc(part)}($|[^A-Za-z_])`).test(text);
    for (const [key, v] of Object.entries(I.catalogues.en)) {
      if (same.has(key)) continue;
      for (const part of forms(v).flatMap((x) => x.split(PARAM)).map(norm)) {
        if (part.length < 4 || !/[A-Za-z]{2}/.test(part) || within(part, zhAll)) continue;
        if (within(part, all)) problems.push(`English text of ${key}: ${JSON.stringify(part)}`);
      }
    }
  }
  return problems;
}

async function audit(view) {
  const lang = await page.evaluate(() => document.documentElement.lang);
  const problems = await page.evaluate(auditPage);
  assert.deepEqual(problems, [], `${lang} ${view}: texts not from the catalogue`);
}

step('the two message catalogues have the same keys, parameters and plural forms', async () => {
  const { en, zh, same } = await page.evaluate(() => ({
    en: window.FormpushI18n.catalogues.en, zh: window.FormpushI18n.catalogues.zh, same: window.FormpushI18n.same,
  }));
  assert.deepEqual(Object.keys(zh).sort(), Object.keys(en).sort(), 'same keys in both languages');
  const params = (v) => [...new Set((typeof v === 'object' ? Object.values(v) : [v])
    .flatMap((x) => [...x.matchAll(/(?<!\{)\{(\w+)\}(?!\})/g)].map((m) => m[1])))].sort();
  for (const key of Object.keys(en)) {
    assert.deepEqual(params(zh[key]), params(en[key]), `${key}: the same parameters`);
    if (typeof en[key] === 'object') assert.ok('other' in en[key] && 'one' in en[key], `${key}: one and other`);
    if (same.includes(key)) assert.equal(JSON.stringify(zh[key]), JSON.stringify(en[key]), `${key} is listed as the same`);
    else assert.notEqual(JSON.stringify(zh[key]), JSON.stringify(en[key]), `${key} is not translated`);
  }
  assert.ok(Object.keys(en).length > 300, 'every text of the console is in the catalogue');
});

step("the browser's language picks the console's; the switch changes it and is remembered", async () => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, locale: 'zh-CN', timezoneId: 'Asia/Shanghai' });
  try {
    const zhPage = await context.newPage();
    const errors = [];
    zhPage.on('pageerror', (e) => errors.push(String(e)));
    zhPage.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await zhPage.goto(`${api}/admin`);
    const title = zhPage.locator('#view-login h1');
    await waitFor('the Chinese login', async () => (await title.textContent()) === '登录');
    assert.equal(await zhPage.evaluate(() => document.documentElement.lang), 'zh-CN');
    assert.equal(await zhPage.getByTestId('lang-switch').textContent(), 'English');
    assert.equal(await zhPage.getByTestId('login-submit').textContent(), '登录');
    await zhPage.screenshot({ path: shot('zh-login-phone'), fullPage: true });
    await zhPage.getByTestId('lang-switch').click();
    await waitFor('the English login', async () => (await title.textContent()) === 'Sign in');
    await zhPage.reload();
    await waitFor('English after a reload', async () => (await title.textContent()) === 'Sign in');
    assert.equal(await zhPage.evaluate(() => localStorage.getItem('formpush.lang')), 'en');
    await zhPage.getByTestId('lang-switch').click();
    await zhPage.reload();
    await waitFor('Chinese after a reload', async () => (await title.textContent()) === '登录');
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
  // The signed-in page is English: its browser speaks English and nothing was chosen there.
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'en');
});

// Android formIds are millisecond timestamps (valid 7 days from then): these expire over the
// coming week, a few each day.
const chartPlan = [[0.3, 4], [1, 9], [2, 3], [3, 12], [4, 6], [5, 2], [6, 7], [6.95, 5]];
const chartCredits = chartPlan.reduce((s, [, n]) => s + n, 0);

step('a second app with a pool for the charts', async () => {
  await ok('PUT', `${api}/v1/apps/${CHARTS_APPID}`, { token: ADMIN_TOKEN, body: { secret: 'e2e-charts-secret' } });
  const now = Date.now();
  const items = [];
  chartPlan.forEach(([days, n], k) => {
    for (let i = 0; i < n; i++) {
      const created = Math.round(now + days * 86_400_000 - 7 * 86_400_000) + k * 100 + i;
      items.push({ openid: `o-chart-${String(i % 6)}`, form_id: String(created) });
    }
  });
  const imported = await ok('POST', `${api}/v1/apps/${CHARTS_APPID}/formids:import`, { token: ADMIN_TOKEN, body: { items } });
  assert.equal(imported.accepted, chartCredits, JSON.stringify(imported));
  // As if they had come in over the last three days (the API stamps the time of receipt).
  const psql = pgTool('psql');
  assert.ok(psql, 'psql is needed to date the credits back');
  const r = spawnSync(psql, [`${pgBase}/${DB_NAME}`, '-qXc',
    `update formids set received_at = now() - make_interval(hours => (id * 37 % 71)::int, mins => (id * 13 % 60)::int)
     where appid = '${CHARTS_APPID}'`], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
});

// The bars a chart drew: each bar's total, in order.
const barTotals = (testid) => page.locator(`[data-testid="${testid}"] g.bar`)
  .evaluateAll((gs) => gs.map((g) => Number(g.dataset.total)));

step('the app page charts the credits expiring per day and received per hour, as the API counts them', async () => {
  await page.goto(`${api}/admin#/apps/${CHARTS_APPID}`);
  await byId('expiring-svg').waitFor();
  await byId('ingestion-svg').waitFor();
  const q = 'timezone=Asia/Shanghai';
  const expiring = await ok('GET', `${api}/v1/apps/${CHARTS_APPID}/stats/expiring?days=8&${q}`, { token: ADMIN_TOKEN });
  assert.deepEqual(await barTotals('expiring-svg'), expiring.days.map((d) => d.formids));
  assert.equal(expiring.days.reduce((s, d) => s + d.formids, 0), chartCredits);
  const ingestion = await ok('GET', `${api}/v1/apps/${CHARTS_APPID}/stats/ingestion?hours=72&${q}`, { token: ADMIN_TOKEN });
  await waitFor('72 hourly bars', async () => (await barTotals('ingestion-svg')).length === 72);
  const drawn = await barTotals('ingestion-svg');
  assert.deepEqual(drawn.slice(0, 71), ingestion.hours.slice(0, 71).map((h) => h.formids));
  assert.equal(ingestion.total, chartCredits);
  await expectText(byId('av-zone'), /Asia\/Shanghai \(GMT\+8\)/);
  await expectText(byId('chart-expiring-note'), new RegExp(`^${chartCredits} usable`));
  // A week of hours: 168 bars.
  await byId('ingestion-hours').selectOption('168');
  await waitFor('168 hourly bars', async () => (await barTotals('ingestion-svg')).length === 168);
  await byId('ingestion-hours').selectOption('72');
  await waitFor('72 hourly bars again', async () => (await barTotals('ingestion-svg')).length === 72);
  await page.screenshot({ path: shot('en-app-charts'), fullPage: true });
});

step('the campaign page charts sends over time and the outcomes, failures by errcode', async () => {
  await page.goto(`${api}/admin#/campaigns/${csvCampaignId}`);
  await byId('timeline-svg').waitFor();
  const timeline = await ok('GET', `${api}/v1/campaigns/${csvCampaignId}/timeline?timezone=Asia/Shanghai`, { token: ADMIN_TOKEN });
  assert.deepEqual(await barTotals('timeline-svg'),
    timeline.buckets.map((b) => b.sent + b.failed + b.no_formid + b.no_quota + b.capped));
  const rows = () => page.locator('[data-testid="outcomes-svg"] g.row')
    .evaluateAll((gs) => Object.fromEntries(gs.map((g) => [g.dataset.key, Number(g.dataset.value)])));
  assert.deepEqual(await rows(), { sent: 3, no_formid: 1, capped: 0 });
  await expectText(byId('chart-timeline-note'), /^Each bar: 10 seconds, in Asia\/Shanghai/);

  await page.goto(`${api}/admin#/campaigns/${subscribeCampaignId}`);
  await byId('outcomes-svg').waitFor();
  await waitFor('the subscribe outcomes', async () => JSON.stringify(await rows()) ===
    JSON.stringify({ sent: 1, no_quota: 0, 'failed:invalid_data': 1, capped: 0 }));
  const failed = page.locator('[data-testid="outcomes-svg"] g.row[data-key="failed:invalid_data"] text.row-label');
  assert.equal(await failed.textContent(), 'failed: errcode invalid_data (data broke the template’s rules)');
  await page.screenshot({ path: shot('en-campaign-charts'), fullPage: true });
});

// ---------- send hygiene: frequency cap, quiet hours, preview, test send ----------

// HH:MM on the clock of `zone`, `minutes` from now.
function clockIn(zone, minutes) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat('en-GB', {
    timeZone: zone, hour: '2-digit', minute: '2-digit', hourCycle: 'h23',
  }).formatToParts(new Date(Date.now() + minutes * 60_000)).map((p) => [p.type, p.value]));
  return `${parts.hour}:${parts.minute}`;
}

// Quiet hours in Tokyo from an hour ago to two hours ahead: campaigns on the hygiene app
// hold until they end (unless they ignore them).
const QUIET = { start: clockIn('Asia/Tokyo', -60), end: clockIn('Asia/Tokyo', 120), timezone: 'Asia/Tokyo' };
const hygApp = () => ok('GET', `${api}/v1/apps/${HYG_APPID}`, { token: ADMIN_TOKEN });
const numbers = async () => Object.fromEntries(await Promise.all(['audience', 'reachable', 'no_credit', 'capped']
  .map(async (k) => [k, Number(((await byId('pv-' + k).textContent()) || '').replace(/,/g, ''))])));

step("an app's frequency cap and quiet hours: refused with the server's reason, then saved and shown", async () => {
  await page.goto(`${api}/admin#/apps/${HYG_APPID}`);
  await expectText(byId('hy-cap-now'), /^none: campaigns may message a user any number of times$/);
  await expectText(byId('hy-quiet-now'), 'none: campaigns send at any hour');
  await expectText(byId('av-zone'), /^Times in Asia\/Shanghai \(GMT\+8\)/, "the browser's zone");
  assert.ok(await byId('hy-cap-max').isDisabled(), 'the cap fields are off with the cap');
  await byId('hy-cap-on').check();
  await byId('hy-cap-max').fill('1');
  await byId('hy-cap-per').fill('31');
  await byId('hy-cap-unit').selectOption('86400');
  await byId('hy-save').click();
  await expectText(byId('hy-error'), /^The frequency cap is out of range: .* \(invalid_frequency_cap: .+\)$/);
  await byId('hy-cap-per').fill('1');
  await byId('hy-quiet-on').check();
  await byId('hy-quiet-start').fill(QUIET.start);
  await byId('hy-quiet-end').fill(QUIET.start);
  await byId('hy-quiet-zone').fill(QUIET.timezone);
  await byId('hy-save').click();
  await expectText(byId('hy-error'), /^The quiet hours are invalid: .* \(invalid_quiet_hours: .+\)$/);
  const refused = await hygApp();
  assert.deepEqual([refused.frequency_cap, refused.quiet_hours], [null, null], 'a refused PUT changed nothing');

  await byId('hy-quiet-end').fill(QUIET.end);
  await byId('hy-save').click();
  await expectText(byId('flash'), `Saved the frequency cap and quiet hours of ${HYG_APPID}.`);
  await expectText(byId('hy-cap-now'), 'at most 1 message per user in any 1 day');
  await expectText(byId('hy-quiet-now'), `${QUIET.start}–${QUIET.end} (Asia/Tokyo): no campaign message is sent then`);
  await expectText(byId('av-zone'), /^Times in Asia\/Tokyo \(GMT\+9\)/, "the app's zone: its quiet hours'");
  assert.equal(await byId('hy-error').isVisible(), false);
  const saved = await hygApp();
  assert.deepEqual(saved.frequency_cap, { max: 1, per_secs: 86_400 });
  assert.deepEqual(saved.quiet_hours, QUIET);
  // The form shows what is stored.
  assert.equal(await byId('hy-cap-max').inputValue(), '1');
  assert.equal(await byId('hy-cap-unit').inputValue(), '86400');
  assert.equal(await byId('hy-quiet-zone').inputValue(), 'Asia/Tokyo');
  await page.screenshot({ path: shot('en-app-hygiene'), fullPage: true });
});

// A sample message as the preview shows it: keyword → value.
const sampleShown = (card) => card.getByTestId('pv-sample-row').evaluateAll((rows) =>
  Object.fromEntries(rows.map((r) => [r.dataset.key, r.querySelector('dd').textContent])));

// Clicks "preview"; returns the body the page posted and the API's own answer to it.
async function preview() {
  const [request] = await Promise.all([
    page.waitForRequest((r) => r.url().endsWith('/v1/campaigns:preview') && r.method() === 'POST'),
    byId('cf-preview-run').click(),
  ]);
  const body = request.postDataJSON();
  await request.response();
  await waitFor('the preview drawn', async () => (await byId('pv-busy').textContent()) === '' &&
    await byId('pv').isVisible() && !(await byId('pv-stale').isVisible()));
  const answer = await ok('POST', `${api}/v1/campaigns:preview`, { token: ADMIN_TOKEN, body });
  return { body, answer };
}

let heldCampaignId;
step('the campaign form previews reach, samples and problems as the API counts them, before creating', async () => {
  await byId('nav-new-campaign').click();
  await byId('campaign-form').waitFor();
  await byId('cf-appid').selectOption(HYG_APPID);
  await expectText(byId('cf-quiet-note'), `The app’s quiet hours: ${QUIET.start}–${QUIET.end} (Asia/Tokyo). A run due inside them waits for their end, unless the box above is ticked.`);
  await byId('cf-name').fill('e2e held for quiet hours');
  await byId('cf-kind').selectOption('template');
  await byId('cf-template-id').fill('TPL_E2E');
  await byId('cf-data').fill('{"keyword1": {"value": "Hi {{openid}}"}, "keyword2": {"value": "{{date}}"}}');
  await byId('cf-audience-openids').check();
  await byId('cf-openids').fill('h-ann\nh-ben\nh-cat\nh-dan');
  await byId('cf-schedule-now').check();
  const { body, answer } = await preview();
  assert.equal(body.appid, HYG_APPID);
  assert.deepEqual(body.audience, { type: 'openids', openids: ['h-ann', 'h-ben', 'h-cat', 'h-dan'] });
  assert.equal(body.ignore_quiet_hours, undefined);
  assert.deepEqual({ ...answer, first_run_at: undefined, samples: undefined, problems: undefined },
    { audience: 4, reachable: 3, no_credit: 1, capped: 0, first_run_at: undefined, samples: undefined, problems: undefined });
  assert.deepEqual(await numbers(), { audience: 4, reachable: 3, no_credit: 1, capped: 0 });
  await expectText(byId('pv-will-send'), '3');
  // Quiet hours now: the first run would start when they end.
  assert.equal(clockIn('Asia/Tokyo', (Date.parse(answer.first_run_at) - Date.now()) / 60_000), QUIET.end);
  await expectText(byId('pv-first-run'), new RegExp(`^The first run would send from .*${QUIET.end}:00 \\(Asia/Tokyo\\), when the app’s quiet hours end\\.$`));
  // The samples as the API renders them.
  const cards = page.getByTestId('pv-sample');
  await waitFor('3 samples', async () => (await cards.count()) === 3);
  assert.deepEqual(answer.samples.map((x) => x.openid), ['h-ann', 'h-ben', 'h-cat']);
  for (const [i, sample] of answer.samples.entries()) {
    assert.equal(await cards.nth(i).getAttribute('data-openid'), sample.openid);
    assert.deepEqual(await sampleShown(cards.nth(i)), Object.fromEntries(Object.entries(sample.data).map(([k, d]) => [k, d.value])));
  }
  assert.equal(answer.samples[0].data.keyword1.value, 'Hi h-ann');
  await byId('pv-no-problems').waitFor();
  await page.screenshot({ path: shot('en-form-preview'), fullPage: true });

  // Ignoring quiet hours: the preview goes stale, and once asked again starts now.
  await byId('cf-ignore-quiet').check();
  await byId('pv-stale').waitFor();
  const again = await preview();
  assert.equal(again.body.ignore_quiet_hours, true);
  assert.ok(Math.abs(Date.parse(again.answer.first_run_at) - Date.now()) < 60_000, again.answer.first_run_at);
  await expectText(byId('pv-first-run'), /^The first run would send from .* \(Asia\/Tokyo\)\.$/);
  // Created respecting them: the run holds.
  await byId('cf-ignore-quiet').uncheck();
  await byId('cf-submit').click();
  await expectText(byId('cv-name'), 'e2e held for quiet hours');
  heldCampaignId = (await byId('cv-id').textContent()).trim();
  const created = await ok('GET', `${api}/v1/campaigns/${heldCampaignId}`, { token: ADMIN_TOKEN });
  assert.equal(created.ignore_quiet_hours, false);
});

step('a subscribe preview names the users whose data breaks the synced template', async () => {
  await byId('nav-new-campaign').click();
  await byId('campaign-form').waitFor();
  await byId('cf-appid').selectOption(APPID);
  await byId('cf-name').fill('e2e preview problems');
  await byId('cf-kind').selectOption('subscribe');
  await waitFor('the synced template', async () => (await byId('cf-template-pick').locator('option').count()) > 1);
  await byId('cf-template-pick').selectOption({ index: 1 });
  await byId('cf-audience-csv').check();
  const longRoom = '一二三四五六七八九十一二三四五六七八九十一二三';
  await byId('cf-csv').setInputFiles({ name: 'rooms.csv', mimeType: 'text/csv',
    buffer: Buffer.from(`openid,room\no-e2e-alice,三楼\no-e2e-bob,${longRoom}\no-e2e-carol,五楼\n`) });
  await byId('cf-csv-preview').waitFor();
  const input = (key) => page.locator(`[data-testid="kw-input"][data-key="${key}"]`);
  await input('thing1').fill('{{room}}');
  await input('time2').fill('{{datetime}}');
  await input('enum_string3').fill('小会议室');
  const { answer } = await preview();
  assert.deepEqual(await numbers(), { audience: answer.audience, reachable: answer.reachable, no_credit: answer.no_credit, capped: answer.capped });
  // Bob kept the grant his broken room did not spend.
  assert.deepEqual([answer.audience, answer.reachable, answer.no_credit], [3, 1, 2]);
  assert.deepEqual(answer.problems.map((x) => x.openid), ['o-e2e-bob']);
  const problem = page.getByTestId('pv-problem');
  await waitFor('one problem', async () => (await problem.count()) === 1);
  await expectText(problem.getByTestId('pv-problem-openid'), 'o-e2e-bob');
  await expectText(problem.locator('td').nth(1),
    `data broke the template’s rules: ${answer.problems[0].message}`);
  assert.match(answer.problems[0].message, /data\.thing1 breaks rule thing: at most 20 characters, got 23/);
  // Samples for the others, with the keywords' labels.
  const cards = page.getByTestId('pv-sample');
  await waitFor('2 samples', async () => (await cards.count()) === 2);
  assert.deepEqual(await cards.evaluateAll((cs) => cs.map((c) => c.dataset.openid)), ['o-e2e-alice', 'o-e2e-carol']);
  // In the template's order, with its labels.
  assert.deepEqual(await cards.first().locator('dt').allTextContents(), ['会议地点', '会议时间', '房间类型']);
  await expectText(cards.first().locator('h3'), '会议提醒');
  const alice = await sampleShown(cards.first());
  // The page's preview and the test's own (the same body, asked a moment later) fill
  // {{datetime}} each at its own second: equal but for time2, which is a second or two apart.
  const { time2: shownTime, ...shownRest } = alice;
  const { time2: apiTime, ...apiRest } = Object.fromEntries(
    Object.entries(answer.samples[0].data).map(([k, d]) => [k, d.value]));
  assert.deepEqual(shownRest, apiRest);
  const at = (t) => Date.parse(t.replace(' ', 'T') + 'Z');
  assert.ok(Math.abs(at(shownTime) - at(apiTime)) <= 5000, `${shownTime} vs ${apiTime}`);
  assert.equal(alice.thing1, '三楼');
  await page.screenshot({ path: shot('en-form-preview-problems'), fullPage: true });
});

step('the campaign page says the run holds for quiet hours and when it resumes; a test send shows each result', async () => {
  await page.goto(`${api}/admin#/campaigns/${heldCampaignId}`);
  const c = await waitFor('the run holding', async () => {
    const got = await ok('GET', `${api}/v1/campaigns/${heldCampaignId}`, { token: ADMIN_TOKEN });
    return got.held_until ? got : null;
  });
  assert.equal(clockIn('Asia/Tokyo', (Date.parse(c.held_until) - Date.now()) / 60_000), QUIET.end);
  await expectText(byId('cv-held'), new RegExp(`^Holding for the app’s quiet hours: sending resumes .*, ${QUIET.end}:00\\.$`));
  await expectText(byId('cv-status'), 'running');
  await expectText(byId('cv-quiet'), `waits them out: ${QUIET.start}–${QUIET.end} (Asia/Tokyo)`);
  await expectText(byId('cv-zone'), /^Times in Asia\/Tokyo \(GMT\+9\)/);
  await expectText(page.getByTestId('run-held').first(), new RegExp(`^holding until .*${QUIET.end}:00$`));
  assert.equal(c.totals.sent, 0);

  // A test send: ann gets it at once (quiet hours hold campaigns, not tests); dan and an
  // unknown user hold no formId.
  await byId('ts-openids').fill('h-ann\nh-dan, h-nobody');
  await byId('ts-submit').click();
  const rows = page.getByTestId('ts-row');
  await waitFor('3 results', async () => (await rows.count()) === 3);
  const row = (openid) => page.locator(`[data-testid="ts-row"][data-openid="${openid}"]`);
  await expectText(row('h-ann').getByTestId('ts-status'), 'sent');
  await expectText(row('h-ann').getByTestId('ts-errcode'), '0');
  await expectText(row('h-ann').getByTestId('ts-errmsg'), 'ok');
  for (const openid of ['h-dan', 'h-nobody']) {
    await expectText(row(openid).getByTestId('ts-status'), 'no formId');
    await expectText(row(openid).getByTestId('ts-errcode'), '—');
  }
  assert.deepEqual(await rows.evaluateAll((rs) => rs.map((r) => r.dataset.openid)), ['h-ann', 'h-dan', 'h-nobody']);
  await expectText(byId('ts-summary'), '1 of 3 test messages sent:');
  const { messages } = await ok('GET', `${sb}/sandbox/messages?appid=${HYG_APPID}&openid=h-ann`);
  assert.equal(messages.length, 1);
  assert.equal(messages[0].data.keyword1.value, 'Hi h-ann');
  const after = await ok('GET', `${api}/v1/campaigns/${heldCampaignId}`, { token: ADMIN_TOKEN });
  assert.equal(after.totals.sent, 0, 'a test is outside the totals');
  await page.screenshot({ path: shot('en-campaign-held-test'), fullPage: true });
  // The dashboard says so too, beside the campaign's status.
  await byId('nav-dashboard').click();
  const listed = page.locator(`[data-testid="campaign-row"][data-id="${heldCampaignId}"]`);
  await expectText(listed.getByTestId('campaign-held'), new RegExp(`^holding for quiet hours until .*${QUIET.end}:00 Asia/Tokyo$`));
  await listed.getByTestId('campaign-link').click();
  await byId('ts-form').waitFor();

  // Too many users is caught in the page; the same user twice by the server.
  await byId('ts-openids').fill(Array.from({ length: 11 }, (_, i) => `h-${i}`).join('\n'));
  await byId('ts-submit').click();
  await expectText(byId('ts-error'), 'At most 10 openids at a time (11 entered).');
  await byId('ts-openids').fill('h-ann\nh-ann');
  await byId('ts-submit').click();
  await expectText(byId('ts-error'), /^Name 1 to 10 different openids\. \(invalid_openids: .+\)$/);
  assert.equal((await ok('GET', `${sb}/sandbox/messages?appid=${HYG_APPID}&openid=h-ann`)).messages.length, 1);
});

let cappedCampaignId;
step('a delivery over the frequency cap ends capped: previewed, counted, and filtered', async () => {
  await byId('nav-new-campaign').click();
  await byId('campaign-form').waitFor();
  await byId('cf-appid').selectOption(HYG_APPID);
  await byId('cf-name').fill('e2e capped');
  await byId('cf-kind').selectOption('template');
  await byId('cf-template-id').fill('TPL_E2E');
  await byId('cf-data').fill('{"keyword1": {"value": "Again {{openid}}"}}');
  await byId('cf-audience-openids').check();
  await byId('cf-openids').fill('h-ann\nh-ben');
  await byId('cf-schedule-now').check();
  await byId('cf-ignore-quiet').check();
  // Ann had her one message of the day (the test).
  const { answer } = await preview();
  assert.deepEqual([answer.audience, answer.reachable, answer.capped], [2, 2, 1]);
  assert.deepEqual(await numbers(), { audience: 2, reachable: 2, no_credit: 0, capped: 1 });
  await expectText(byId('pv-will-send'), '1');
  await byId('cf-submit').click();
  await expectText(byId('cv-name'), 'e2e capped');
  cappedCampaignId = (await byId('cv-id').textContent()).trim();
  await expectText(byId('cv-status'), 'completed', 'the campaign ignoring quiet hours completes');
  await expectText(byId('cv-quiet'), 'ignored: it sends inside them');
  await expectText(byId('cv-capped'), 1);
  await expectText(byId('cv-sent'), 1);
  const rows = page.getByTestId('delivery-row');
  await waitFor('2 deliveries', async () => (await rows.count()) === 2);
  await byId('deliveries-status').selectOption('capped');
  await waitFor('1 capped delivery', async () => (await rows.count()) === 1 &&
    (await rows.first().getAttribute('data-status')) === 'capped');
  await expectText(rows.first().getByTestId('delivery-openid'), 'h-ann');
  await expectText(rows.first().getByTestId('delivery-status'), 'capped');
  const capped = await ok('GET', `${api}/v1/campaigns/${cappedCampaignId}/deliveries?status=capped`, { token: ADMIN_TOKEN });
  assert.deepEqual(capped.items.map((d) => d.openid), ['h-ann']);
  const runCells = await page.getByTestId('run-row').first().locator('td.num').allTextContents();
  assert.deepEqual(runCells, ['2', '1', '0', '0', '0', '1', '0'], 'targeted, sent, failed, no formId, no quota, capped, pending');
  await page.screenshot({ path: shot('en-campaign-capped'), fullPage: true });
  await byId('deliveries-status').selectOption('');
});

// Every view, audited and photographed in the language on screen.
async function walkViews(lang) {
  // Dashboard.
  await byId('nav-dashboard').click();
  const card = page.locator(`[data-testid="app-card"][data-appid="${CHARTS_APPID}"]`);
  await expectText(card.getByTestId('stat-valid_formids'), String(chartCredits));
  await waitFor('the campaign rows', async () => (await page.getByTestId('campaign-row').count()) >= 5);
  await audit('dashboard');
  await page.screenshot({ path: shot(`${lang}-dashboard`), fullPage: true });

  // The charts app.
  await card.getByTestId('app-keys-link').click();
  await byId('expiring-svg').waitFor();
  await byId('ingestion-svg').waitFor();
  await byId('keys-empty').waitFor();
  await audit('app with charts');
  await page.screenshot({ path: shot(`${lang}-app-charts`), fullPage: true });

  // The hygiene app: its cap and quiet hours, then a change the server refuses (not saved).
  await page.goto(`${api}/admin#/apps/${HYG_APPID}`);
  await waitFor('the stored settings', async () => (await byId('hy-cap-max').inputValue()) === '1' &&
    ((await byId('hy-quiet-now').textContent()) || '').includes(QUIET.end));
  await audit('app with a cap and quiet hours');
  await byId('hy-cap-max').fill('0');
  await byId('hy-save').click();
  await expectText(byId('hy-error'), /invalid_frequency_cap/);
  await audit('app: a cap refused');
  await page.screenshot({ path: shot(`${lang}-app-hygiene`), fullPage: true });
  await byId('hy-cap-max').fill('');
  await byId('hy-save').click();
  await waitFor('the cap caught in the page', async () => !/invalid_frequency_cap/.test(await byId('hy-error').textContent()));
  await audit('app: a cap that is no number');

  // The first app: a key shown once in its dialog, then revoked; its messages.
  await page.goto(`${api}/admin#/apps/${APPID}`);
  await byId('message-row').first().waitFor();
  await byId('kf-name').fill(`e2e-${lang}`);
  await byId('kf-submit').click();
  await byId('key-dialog').waitFor();
  await byId('kd-copy').click();
  await byId('kd-copied').waitFor();
  await audit('new key dialog');
  await byId('kd-done').click();
  await byId('key-row').first().waitFor();
  await audit('app with a key');
  await page.screenshot({ path: shot(`${lang}-app-keys`), fullPage: true });
  await byId('key-revoke').first().click();
  await byId('keys-empty').waitFor();

  // Campaigns: the CSV one, the subscribe one, and the cancelled cron one refusing a pause.
  for (const [name, id] of [['campaign-csv', csvCampaignId], ['campaign-subscribe', subscribeCampaignId]]) {
    await page.goto(`${api}/admin#/campaigns/${id}`);
    await byId('outcomes-svg').waitFor();
    await byId('delivery-row').first().waitFor();
    await audit(name);
    await page.screenshot({ path: shot(`${lang}-${name}`), fullPage: true });
  }
  await page.goto(`${api}/admin#/campaigns/${cronCampaignId}`);
  await byId('runs-empty').waitFor();
  await byId('cv-pause').click();
  await byId('cv-error').waitFor();
  await audit('campaign refusing a transition');

  // Holding for quiet hours, with a test send (to a user without a formId: nothing spent).
  await page.goto(`${api}/admin#/campaigns/${heldCampaignId}`);
  await byId('cv-held').waitFor();
  await byId('run-held').first().waitFor();
  await byId('ts-openids').fill('h-nobody');
  await byId('ts-submit').click();
  await waitFor('one test result', async () => (await page.getByTestId('ts-row').count()) === 1);
  await audit('campaign holding, a test sent');
  await page.screenshot({ path: shot(`${lang}-campaign-held`), fullPage: true });
  await byId('ts-openids').fill('');
  await byId('ts-submit').click();
  await byId('ts-error').waitFor();
  await audit('campaign: a test send without users');
  // Capped deliveries, filtered.
  await page.goto(`${api}/admin#/campaigns/${cappedCampaignId}`);
  await byId('delivery-row').first().waitFor();
  await byId('deliveries-status').selectOption('capped');
  await waitFor('the capped delivery', async () => (await page.getByTestId('delivery-row').count()) === 1);
  await audit('campaign: capped deliveries');
  await page.screenshot({ path: shot(`${lang}-campaign-capped`), fullPage: true });
  await byId('deliveries-status').selectOption('');

  // The form: a subscribe campaign on the synced template with a CSV audience and a value
  // breaking its rule, a refused submit; then template data that is not JSON, and one the
  // server refuses.
  await byId('nav-new-campaign').click();
  await byId('campaign-form').waitFor();
  await byId('cf-appid').selectOption(APPID);
  await byId('cf-name').fill(`e2e ${lang} form`);
  await byId('cf-kind').selectOption('subscribe');
  await waitFor('the synced template', async () => (await byId('cf-template-pick').locator('option').count()) > 1);
  await byId('cf-template-pick').selectOption({ index: 1 });
  await byId('cf-audience-csv').check();
  await byId('cf-csv').setInputFiles({ name: 'rooms.csv', mimeType: 'text/csv',
    buffer: Buffer.from('openid,room\no-e2e-alice,三楼\no-e2e-bob,一二三四五六七八九十一二三四五六七八九十一二三\n') });
  await byId('cf-csv-preview').waitFor();
  const input = (key) => page.locator(`[data-testid="kw-input"][data-key="${key}"]`);
  await input('thing1').fill('{{room}}');
  await input('time2').fill('{{datetime}}');
  await input('enum_string3').fill('大会议室');
  // Previewed: one sample, one problem.
  await preview();
  await byId('pv-problem').first().waitFor();
  await audit('form: subscribe preview with a problem');
  await page.screenshot({ path: shot(`${lang}-form-preview-problems`), fullPage: true });
  await input('time2').fill('3pm');
  await byId('cf-submit').click();
  await byId('cf-error').waitFor();
  await audit('form: subscribe, synced template, CSV');
  await page.screenshot({ path: shot(`${lang}-form-subscribe`), fullPage: true });
  await byId('cf-kind').selectOption('template');
  await byId('cf-template-id').fill('TPL_E2E');
  await byId('cf-audience-openids').check();
  // On the app with quiet hours: the preview starts when they end; ignoring them makes it stale.
  await byId('cf-appid').selectOption(HYG_APPID);
  await byId('cf-openids').fill('h-ann\nh-dan');
  await byId('cf-data').fill('{"keyword1": {"value": "{{openid}}"}}');
  await byId('cf-schedule-now').check();
  await preview();
  await byId('pv-sample').first().waitFor();
  await audit('form: template preview inside quiet hours');
  await page.screenshot({ path: shot(`${lang}-form-preview`), fullPage: true });
  await byId('cf-ignore-quiet').check();
  await byId('pv-stale').waitFor();
  await audit('form: preview gone stale');
  await byId('cf-ignore-quiet').uncheck();
  await byId('cf-openids').fill('o-e2e-alice');
  await byId('cf-schedule-cron').check();
  await byId('cf-data').fill('{"keyword1": ');
  await byId('cf-submit').click();
  await expectText(byId('cf-error'), /JSON/);
  await audit('form: template, cron, data not JSON');
  await byId('cf-schedule-at').check();
  await byId('cf-at').waitFor();
  await audit('form: template, at a time');
  await byId('cf-data').fill('{"keyword1": {"value": "{{city}}"}}');
  await byId('cf-schedule-now').check();
  await byId('cf-submit').click();
  await expectText(byId('cf-error'), /unknown_placeholder/);
  await audit('form: refused by the server');
  await page.screenshot({ path: shot(`${lang}-form-template`), fullPage: true });

  // Signed out, a wrong token, signed in again.
  await byId('signout').click();
  await byId('login-form').waitFor();
  await audit('login, signed out');
  await byId('token-input').fill('not-the-admin-token');
  await byId('login-submit').click();
  await expectText(byId('login-error'), /invalid_admin_token/);
  await audit('login, wrong token');
  await page.screenshot({ path: shot(`${lang}-login`), fullPage: true });
  await byId('token-input').fill(ADMIN_TOKEN);
  await byId('login-submit').click();
  await page.locator('[data-testid="app-card"]').first().waitFor();
}

step('every view in English: each text from the English catalogue', async () => {
  await walkViews('en');
});

step('every view in Chinese: each text from the Chinese catalogue, dates and numbers for zh-CN', async () => {
  await byId('lang-switch').click();
  await waitFor('the Chinese dashboard', async () => (await byId('nav-dashboard').textContent()) === '总览');
  assert.equal(await page.evaluate(() => localStorage.getItem('formpush.lang')), 'zh');
  await walkViews('zh');
  // Dates and numbers as zh-CN writes them, in the app's zone (shown).
  await page.goto(`${api}/admin#/campaigns/${csvCampaignId}`);
  await byId('outcomes-svg').waitFor();
  await expectText(page.locator('#cv-created'), /^\d{4}年\d{1,2}月\d{1,2}日 \d{2}:\d{2}:\d{2}$/);
  await expectText(byId('cv-zone'), /^时间按 Asia\/Shanghai（GMT\+8）显示/);
  await expectText(byId('cv-status'), '已完成');
  await expectText(byId('chart-timeline-note'), /^每根柱子：10秒钟，时间按 Asia\/Shanghai/);
  assert.equal(await page.locator('[data-testid="outcomes-svg"] g.row[data-key="sent"] text.row-label').textContent(), '已发送');
  // A server error: its code in Chinese, the server's words beside it.
  await page.goto(`${api}/admin#/campaigns/${cronCampaignId}`);
  await byId('runs-empty').waitFor();
  await byId('cv-pause').click();
  await expectText(byId('cv-error'), /^推送活动当前的状态下不能这样操作。 \(invalid_transition: a cancelled campaign cannot be paused\)$/);
});

step('a phone-sized screen (390 px): no page-wide scrolling, charts fit, in both languages', async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  try {
    for (const lang of ['zh', 'en']) {
      const current = await page.evaluate(() => document.documentElement.lang);
      if (!current.startsWith(lang)) await byId('lang-switch').click();
      for (const [name, hash, ready] of [
        ['dashboard', '#/', 'app-card'],
        ['app-charts', `#/apps/${CHARTS_APPID}`, 'ingestion-svg'],
        ['campaign-subscribe', `#/campaigns/${subscribeCampaignId}`, 'outcomes-svg'],
        ['form', '#/new', 'campaign-form'],
        ['app-hygiene', `#/apps/${HYG_APPID}`, 'hygiene-card'],
        ['campaign-held', `#/campaigns/${heldCampaignId}`, 'cv-held'],
      ]) {
        await page.goto(`${api}/admin${hash}`);
        await page.getByTestId(ready).first().waitFor();
        await page.waitForTimeout(300); // charts redraw for the width
        const widths = await page.evaluate(() => ({
          page: document.documentElement.scrollWidth,
          charts: [...document.querySelectorAll('svg.chart-svg')]
            .filter((svg) => svg.checkVisibility())
            .map((svg) => [svg.getBoundingClientRect().width, svg.parentElement.clientWidth]),
        }));
        assert.ok(widths.page <= 390, `${lang} ${name}: the page is ${widths.page} px wide`);
        for (const [svg, box] of widths.charts) assert.ok(svg <= box + 0.5, `${lang} ${name}: a chart overflows`);
        await audit(`${name} on a phone`);
        await page.screenshot({ path: shot(`${lang}-${name}-phone`), fullPage: true });
      }
    }
  } finally {
    await page.setViewportSize({ width: 1280, height: 900 });
  }
  await page.goto(`${api}/admin#/`);
});

step('without quiet hours the held run resumes and completes; the page no longer says it holds', async () => {
  await page.goto(`${api}/admin#/apps/${HYG_APPID}`);
  await waitFor('the stored settings', async () => (await byId('hy-quiet-on').isChecked()) &&
    (await byId('hy-quiet-zone').inputValue()) === 'Asia/Tokyo');
  await byId('hy-quiet-on').uncheck();
  assert.ok(await byId('hy-quiet-start').isDisabled());
  await byId('hy-save').click();
  await expectText(byId('hy-quiet-now'), 'none: campaigns send at any hour');
  await expectText(byId('hy-cap-now'), 'at most 1 message per user in any 1 day', 'the cap is kept');
  await expectText(byId('av-zone'), /^Times in Asia\/Shanghai/, "back to the browser's zone");
  const app = await hygApp();
  assert.equal(app.quiet_hours, null);
  assert.deepEqual(app.frequency_cap, { max: 1, per_secs: 86_400 });

  await page.goto(`${api}/admin#/campaigns/${heldCampaignId}`);
  await expectText(byId('cv-status'), 'completed', 'the held campaign completes');
  assert.equal(await byId('cv-held').isVisible(), false);
  assert.equal(await page.getByTestId('run-held').count(), 0);
  await expectText(byId('cv-quiet'), 'the app has none');
  // Cat was sent; Ann (the test) and Ben (the capped campaign) had their message of the day.
  const c = await ok('GET', `${api}/v1/campaigns/${heldCampaignId}`, { token: ADMIN_TOKEN });
  assert.deepEqual(c.totals, { targeted: 4, sent: 1, failed: 0, no_formid: 1, no_quota: 0, capped: 2, pending: 0 });
  assert.equal(c.held_until, null);
  for (const k of ['sent', 'capped', 'no_formid', 'pending']) await expectText(byId('cv-' + k), c.totals[k]);
  await page.screenshot({ path: shot('en-campaign-resumed'), fullPage: true });
});

step('no secret in the page; sign out forgets the token', async () => {
  const html = await page.content();
  assert.ok(!html.includes(SECRET) && !html.includes(HYG_SECRET), 'the page contains an app secret');
  assert.ok(!html.includes(ADMIN_TOKEN), 'the page contains the admin token');
  for (const { url, b } of await Promise.all(bodies)) {
    assert.ok(!b.includes(SECRET) && !b.includes(HYG_SECRET), `${url} returned an app secret`);
  }
  assert.ok(!page.url().includes(ADMIN_TOKEN));
  for (const line of consoleLines) {
    assert.ok(!line.includes(ADMIN_TOKEN) && !line.includes(SECRET), `console: ${line}`);
    // Only the browser's own notes on 4xx answers (the 401/409s above) are expected.
    if (/^(error|warning)/.test(line)) assert.match(line, /Failed to load resource: the server responded with a status of 4\d\d/);
  }
  assert.deepEqual(pageErrors, []);

  await byId('signout').click();
  await byId('login-form').waitFor();
  assert.equal(await storedToken(), null);
  assert.equal(await page.getByTestId('campaign-row').count(), 0, 'signed-out page keeps no data');
  assert.equal(await page.getByTestId('message-row').count(), 0, 'signed-out page keeps no messages');
  await page.reload();
  await byId('login-form').waitFor();
  assert.ok(!(await byId('campaign-view').isVisible()));
});

after(async () => {
  if (broken) dumpLogs();
  if (browser) await browser.close().catch(() => {});
  for (const p of [...children].reverse()) await stop(p);
  if (pgBase) dropDatabase(pgBase);
});
