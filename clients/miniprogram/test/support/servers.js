// Starts a real `formpush sandbox` (the fake WeChat) and a real `formpush serve` pointed at
// it, on free ports, against a fresh database that is dropped again at the end.
//
// Environment: FORMPUSH_BIN (required: the formpush binary), PG_URL_BASE (default
// postgres://postgres@127.0.0.1:5432), FORMPUSH_TEST_DB (database name; default random).
'use strict';

const { spawn, spawnSync } = require('node:child_process');
const { randomBytes } = require('node:crypto');
const { existsSync, mkdtempSync, readdirSync, rmSync } = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const ADMIN_TOKEN = 'client-test-admin-' + randomBytes(12).toString('hex');

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

async function waitFor(what, fn, { timeout = 60_000, interval = 100, proc } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    if (proc && proc.exited) {
      throw new Error(`${proc.name} exited ${JSON.stringify(proc.exited)} while waiting for ${what}`);
    }
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last ? ': ' + last.message : ''}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** One HTTP call; the answer's status, headers, text and parsed JSON (or null). */
async function http(method, url, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = 'Bearer ' + token;
  const resp = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    // not JSON
  }
  return { status: resp.status, headers: resp.headers, text, json };
}

/** Like http, but a non-2xx answer fails the test. */
async function ok(method, url, opts) {
  const r = await http(method, url, opts);
  if (r.status < 200 || r.status >= 300) throw new Error(`${method} ${url} -> ${r.status} ${r.text}`);
  return r.json;
}

function pgTool(name) {
  for (const dir of (process.env.PATH || '').split(':')) {
    const p = path.join(dir, name);
    if (dir && existsSync(p)) return p;
  }
  const base = '/usr/lib/postgresql';
  if (existsSync(base)) {
    for (const v of readdirSync(base).sort((a, b) => Number(b) - Number(a))) {
      const p = path.join(base, v, 'bin', name);
      if (existsSync(p)) return p;
    }
  }
  return null;
}

class Servers {
  constructor() {
    this.bin = process.env.FORMPUSH_BIN;
    this.pgBase = (process.env.PG_URL_BASE || 'postgres://postgres@127.0.0.1:5432').replace(/\/+$/, '');
    this.dbName = process.env.FORMPUSH_TEST_DB || 'formpush_client_' + randomBytes(6).toString('hex');
    this.adminToken = ADMIN_TOKEN;
    // The app formpush registers at start from WECHAT_APPID / WECHAT_SECRET.
    this.appid = 'wxclient' + randomBytes(5).toString('hex');
    this.secret = 'secret-' + randomBytes(8).toString('hex');
    this.children = [];
    this.sandbox = null; // base URL
    this.api = null; // base URL
    this.appCount = 0;
  }

  async start() {
    if (!this.bin) throw new Error('set FORMPUSH_BIN to the formpush binary (scripts/client-test does)');
    if (!existsSync(this.bin)) throw new Error(`${this.bin} does not exist`);
    // Last resort if the runner is torn down before stop() runs.
    process.on('exit', () => {
      for (const p of this.children) if (!p.exited) p.child.kill('SIGKILL');
    });
    const [sandboxPort, apiPort] = [await freePort(), await freePort()];
    const baseEnv = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !/^(FORMPUSH_|WECHAT_|DATABASE_URL$)/.test(k)),
    );
    const sandbox = this._spawn(
      'sandbox',
      ['sandbox', '--bind', `127.0.0.1:${sandboxPort}`, '--app', `${this.appid}:${this.secret}`],
      baseEnv,
    );
    this.sandbox = `http://127.0.0.1:${sandboxPort}`;
    await waitFor('the sandbox', async () => (await http('GET', `${this.sandbox}/sandbox/stats`)).status === 200, {
      proc: sandbox,
    });
    const server = this._spawn('formpush', ['serve'], {
      ...baseEnv,
      DATABASE_URL: `${this.pgBase}/${this.dbName}`,
      FORMPUSH_BIND: `127.0.0.1:${apiPort}`,
      FORMPUSH_ADMIN_TOKEN: this.adminToken,
      FORMPUSH_DB_MAX_CONNECTIONS: '5',
      // Every test logs in from 127.0.0.1; the default 60 a minute is for real clients.
      FORMPUSH_SESSION_RATE_PER_MIN: '1000',
      WECHAT_API_BASE: this.sandbox,
      WECHAT_APPID: this.appid,
      WECHAT_SECRET: this.secret,
      RUST_LOG: process.env.RUST_LOG || 'info',
    });
    this.api = `http://127.0.0.1:${apiPort}`;
    await waitFor('formpush /readyz', async () => (await http('GET', `${this.api}/readyz`)).status === 200, {
      proc: server,
      timeout: 90_000,
    });
  }

  _spawn(name, args, env) {
    const cwd = mkdtempSync(path.join(os.tmpdir(), 'formpush-client-')); // no stray .env is read
    const child = spawn(this.bin, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const proc = { name, child, cwd, log: [], exited: null };
    const keep = (chunk) => {
      proc.log.push(...chunk.toString().split('\n').filter(Boolean));
      if (proc.log.length > 400) proc.log.splice(0, proc.log.length - 400);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('exit', (code, signal) => {
      proc.exited = { code, signal };
    });
    this.children.push(proc);
    return proc;
  }

  dumpLogs() {
    for (const p of this.children) {
      console.error(`---- last lines of ${p.name} ${p.exited ? JSON.stringify(p.exited) : '(running)'} ----`);
      console.error(p.log.slice(-60).join('\n'));
    }
  }

  async stop() {
    for (const proc of this.children.slice().reverse()) {
      if (!proc.exited) {
        const done = new Promise((resolve) => proc.child.once('exit', resolve));
        proc.child.kill('SIGTERM');
        const timer = setTimeout(() => proc.child.kill('SIGKILL'), 12_000);
        await done;
        clearTimeout(timer);
      }
      rmSync(proc.cwd, { recursive: true, force: true });
    }
    const dropdb = pgTool('dropdb');
    if (!dropdb) {
      console.error(`dropdb not found: drop database ${this.dbName} by hand`);
      return;
    }
    const r = spawnSync(
      dropdb,
      ['--if-exists', '--force', `--maintenance-db=${this.pgBase}/postgres`, this.dbName],
      { encoding: 'utf8', timeout: 30_000 },
    );
    if (r.status !== 0) console.error(`dropdb ${this.dbName} failed: ${r.stderr || r.error}`);
  }

  /** A new app in both the sandbox and formpush, so each test has its own pool and metrics. */
  async newApp({ templates } = {}) {
    this.appCount += 1;
    const appid = `wxclient${this.appCount}x${randomBytes(4).toString('hex')}`;
    const secret = 'secret-' + randomBytes(8).toString('hex');
    await ok('POST', `${this.sandbox}/sandbox/apps`, { body: { appid, secret, templates } });
    await ok('PUT', `${this.api}/v1/apps/${appid}`, { token: this.adminToken, body: { secret } });
    return appid;
  }

  /** formIds the sandbox issued to this user (Android style, valid 7 days). */
  async formIds(appid, openid, count) {
    const r = await ok('POST', `${this.sandbox}/sandbox/formids`, { body: { appid, openid, count } });
    return r.form_ids;
  }

  /** A session token for the user, obtained the way the README's curl does. */
  async sessionToken(appid, openid) {
    const { code } = await ok('POST', `${this.sandbox}/sandbox/login_codes`, { body: { appid, openid } });
    return (await ok('POST', `${this.api}/v1/apps/${appid}/sessions`, { body: { code } })).token;
  }

  stats(appid) {
    return ok('GET', `${this.api}/v1/apps/${appid}/stats`, { token: this.adminToken });
  }

  /** The value of a formpush counter for one app (0 when it has no sample yet). */
  async metric(name, labels) {
    const text = (await http('GET', `${this.api}/metrics`)).text;
    let total = 0;
    for (const line of text.split('\n')) {
      const m = /^([a-z_]+)\{([^}]*)\}\s+(\S+)$/.exec(line);
      if (!m || m[1] !== name) continue;
      const have = Object.fromEntries([...m[2].matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
      if (Object.entries(labels).every(([k, v]) => have[k] === v)) total += Number(m[3]);
    }
    return total;
  }
}

module.exports = { Servers, http, ok, waitFor };
