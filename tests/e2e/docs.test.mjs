// `/docs` works with no internet: formpush serves the interactive API page and every asset
// it needs. Starts `formpush serve` on a free port against a fresh database, opens /docs in
// headless Chromium with every request to another host aborted, and checks that Swagger UI
// rendered formpush's operations from /openapi.json, that nothing else was requested, and
// that the page logged no error (a blocked asset or a content-security-policy violation
// would). Run by scripts/e2e, which sets PG_URL_BASE.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = process.env.FORMPUSH_BIN || path.join(ROOT, 'target', 'debug', 'formpush');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = process.env.FORMPUSH_DOCS_SCREENSHOT || '/tmp/formpush-docs.png';
const DB_NAME = 'formpush_e2e_docs_' + randomBytes(6).toString('hex');
const pgBase = process.env.PG_URL_BASE;

let server;
let serverLog = [];
let workDir;
let base;
let browser;

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

before(async () => {
  assert.ok(pgBase, 'set PG_URL_BASE (postgres://user@host:port); scripts/e2e does');
  assert.ok(existsSync(BIN), `${BIN} is missing: run cargo build --bin formpush`);
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  workDir = mkdtempSync(path.join(os.tmpdir(), 'formpush-docs-')); // no stray .env is read
  server = spawn(BIN, ['serve'], {
    cwd: workDir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH,
      DATABASE_URL: `${pgBase}/${DB_NAME}`,
      FORMPUSH_BIND: `127.0.0.1:${port}`,
      FORMPUSH_ADMIN_TOKEN: 'docs-' + randomBytes(12).toString('hex'),
      FORMPUSH_SCHEDULER: 'off',
    },
  });
  const keep = (chunk) => { serverLog.push(chunk.toString()); };
  server.stdout.on('data', keep);
  server.stderr.on('data', keep);
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const r = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(2_000) });
      if (r.ok) break;
    } catch (_) { /* not up yet */ }
    assert.ok(server.exitCode === null, `formpush exited: ${serverLog.join('')}`);
    assert.ok(Date.now() < deadline, `formpush did not become ready: ${serverLog.join('')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});

after(async () => {
  if (browser) await browser.close();
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server.once('exit', r));
    server.kill('SIGTERM');
    await exited;
  }
  if (workDir) rmSync(workDir, { recursive: true, force: true });
  if (pgBase) {
    spawnSync('dropdb', ['--if-exists', '--force', `--maintenance-db=${pgBase}/postgres`, DB_NAME], {
      timeout: 30_000,
    });
  }
});

test('/docs renders the API from formpush alone, with every other host blocked', { timeout: 120_000 }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const own = new URL(base).host;
  const elsewhere = [];
  const errors = [];
  // The network to anything but formpush is gone, as on an intranet.
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.host === own) return route.continue();
    elsewhere.push(url.href);
    return route.abort('internetdisconnected');
  });
  page.on('console', (msg) => { if (msg.type() === 'error') errors.push(msg.text()); });
  page.on('pageerror', (err) => errors.push(String(err)));

  const resp = await page.goto(`${base}/docs`);
  assert.equal(resp.status(), 200);
  // Swagger UI draws one block per operation once it has read /openapi.json.
  await page.locator('.opblock').first().waitFor({ timeout: 30_000 });
  const paths = await page.locator('.opblock-summary-path').allTextContents();
  const shown = paths.map((p) => p.replace(/\u200b/g, ''));
  for (const expected of ['/v1/campaigns', '/v1/apps/{appid}/formids', '/wechat/{appid}']) {
    assert.ok(shown.includes(expected), `${expected} is not on the page: ${shown.join(', ')}`);
  }
  await page.screenshot({ path: SCREENSHOT, fullPage: false });
  assert.deepEqual(elsewhere, [], 'the page asked other hosts for something');
  assert.deepEqual(errors, [], 'the page logged errors');
  await context.close();
});
