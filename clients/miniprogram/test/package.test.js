// The package as published, and the client's local rules (no server needed: `wx.request`
// here is a stub answering like formpush).
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const { existsSync, readFileSync } = require('node:fs');
const path = require('node:path');
const acorn = require('acorn');

const { createClient, isMockFormId, FormpushError, MAX_BATCH, DEVTOOLS_MOCK } = require('..');

const ROOT = path.resolve(__dirname, '..');
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));

test('the code is ES2017 in CommonJS, what every mini-program base library runs untranspiled', () => {
  const source = readFileSync(path.join(ROOT, pkg.main), 'utf8');
  // Throws on newer syntax (?. ?? class fields, object spread...) and on import/export.
  acorn.parse(source, { ecmaVersion: 2017, sourceType: 'script' });
  assert.doesNotMatch(source, /\bglobalThis\b|\brequire\(/, 'no ES2020 global and no dependencies');
});

test('package.json points WeChat "build npm", node and TypeScript at files that exist', () => {
  assert.equal(pkg.miniprogram, 'miniprogram_dist');
  assert.equal(pkg.dependencies, undefined, 'no runtime dependencies');
  for (const f of [pkg.main, pkg.types, path.join(pkg.miniprogram, 'index.js')]) {
    assert.ok(existsSync(path.join(ROOT, f)), f);
  }
  const packed = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(packed.status, 0, packed.stderr);
  const files = JSON.parse(packed.stdout)[0].files.map((f) => f.path).sort();
  assert.deepEqual(files, ['README.md', 'miniprogram_dist/index.d.ts', 'miniprogram_dist/index.js', 'package.json']);
});

test('mock formIds are recognised as the server does', () => {
  assert.equal(MAX_BATCH, 100);
  assert.ok(isMockFormId(DEVTOOLS_MOCK));
  assert.ok(isMockFormId('requestFormId:fail timeout'));
  assert.ok(isMockFormId('requestFormId:fail'));
  assert.ok(!isMockFormId('1732500000000'));
  assert.ok(!isMockFormId('0123456789abcdef0123456789abcdef'));
  assert.ok(!isMockFormId('the formId is a mock one '));
});

/** A wx whose request answers with `answer(options)` ({statusCode, data, header}) or fails. */
function stubWx(answer) {
  const storage = new Map();
  const calls = [];
  return {
    calls,
    storage,
    getStorageSync: (k) => (storage.has(k) ? JSON.parse(storage.get(k)) : ''),
    setStorageSync: (k, v) => storage.set(k, JSON.stringify(v)),
    removeStorageSync: (k) => storage.delete(k),
    login: ({ success }) => setImmediate(() => success({ code: 'code-' + calls.length })),
    request(options) {
      calls.push(options);
      const res = answer(options);
      setImmediate(() => (res ? options.success({ header: {}, ...res }) : options.fail({ errMsg: 'request:fail' })));
    },
  };
}

function formpushLike(options) {
  if (options.url.endsWith('/sessions')) {
    return { statusCode: 200, data: { token: 't', openid: 'o', expires_at: new Date(Date.now() + 864e5).toISOString() } };
  }
  const n = options.data.form_ids.length;
  return { statusCode: 200, data: { accepted: n, duplicates: 0, rejected: [] } };
}

const base = { baseUrl: 'https://push.example.com/', appid: 'wxunit', autoFlush: false };

test('options are checked when the client is made', () => {
  const wx = stubWx(formpushLike);
  assert.throws(() => createClient({ appid: 'wx', wx }), TypeError);
  assert.throws(() => createClient({ baseUrl: 'push.example.com', appid: 'wx', wx }), TypeError);
  assert.throws(() => createClient({ baseUrl: 'https://x', wx }), TypeError);
  assert.throws(() => createClient({ baseUrl: 'https://x', appid: 'wx' }), /no wx API/);
  assert.throws(() => createClient({ ...base, wx, batchSize: 101 }), /batchSize/);
  assert.throws(() => createClient({ ...base, wx, batchSize: 0 }), /batchSize/);
  assert.throws(() => createClient({ ...base, wx, maxAttempts: 1.5 }), /maxAttempts/);
  assert.throws(() => createClient({ ...base, wx, storageKey: '' }), /storageKey/);
  createClient({ ...base, wx, batchSize: 100 }).close();
});

test('requests go to baseUrl without a doubled slash, as JSON, with the session token', async () => {
  const wx = stubWx(formpushLike);
  const c = createClient({ ...base, wx });
  await c.collect('1732500000000');
  await c.flush();
  assert.deepEqual(
    wx.calls.map((o) => [o.method, o.url]),
    [
      ['POST', 'https://push.example.com/v1/apps/wxunit/sessions'],
      ['POST', 'https://push.example.com/v1/apps/wxunit/formids'],
    ],
  );
  assert.equal(wx.calls[1].header.Authorization, 'Bearer t');
  assert.equal(wx.calls[1].header['content-type'], 'application/json');
  assert.deepEqual(wx.calls[1].data, { form_ids: ['1732500000000'] });
});

test('queued formIds older than 7 days are dropped unsent; over maxQueue the oldest go', async () => {
  const wx = stubWx(formpushLike);
  const day = 24 * 3600 * 1000;
  wx.setStorageSync('formpush:wxunit:queue', {
    v: 1,
    queue: [
      ['1111111111111', Date.now() - 8 * day],
      ['2222222222222', Date.now() - 6 * day],
    ],
    recent: [],
  });
  const c = createClient({ ...base, wx, maxQueue: 3 });
  assert.equal(c.pending(), 1);
  for (const id of ['3333333333333', '4444444444444', '5555555555555']) await c.collect(id);
  assert.deepEqual(wx.getStorageSync('formpush:wxunit:queue').queue.map((e) => e[0]), [
    '3333333333333',
    '4444444444444',
    '5555555555555',
  ]);
  assert.equal((await c.flush()).sent, 3);
});

test('unreadable storage is an empty queue, not a crash', async () => {
  const wx = stubWx(formpushLike);
  wx.setStorageSync('formpush:wxunit:queue', 'garbage');
  wx.setStorageSync('formpush:wxunit:session', { token: 42 });
  const c = createClient({ ...base, wx });
  assert.equal(c.pending(), 0);
  assert.equal(await c.collect('1732500000000'), true);
  assert.equal((await c.flush()).accepted, 1);
});

test('Retry-After as an HTTP date is understood', async () => {
  const at = new Date(Date.now() + 5_000).toUTCString();
  const wx = stubWx((o) =>
    o.url.endsWith('/sessions') ? formpushLike(o) : { statusCode: 503, header: { 'Retry-After': at }, data: '' },
  );
  const c = createClient({ ...base, wx, retryMaxMs: 100 });
  await c.collect('1732500000000');
  const err = await c.flush().catch((e) => e);
  assert.ok(err instanceof FormpushError);
  assert.equal(err.status, 503);
  assert.ok(err.retryAfterMs > 3_000 && err.retryAfterMs <= 5_000, String(err.retryAfterMs));
});

test('concurrent calls share one login and flushes run one at a time', async () => {
  // Calls in flight, and the most at once, per endpoint.
  const inFlight = {};
  const most = {};
  const wx = stubWx((o) => (o.url.endsWith('/subscriptions') ? { statusCode: 200, data: { granted: 1 } } : formpushLike(o)));
  const request = wx.request;
  wx.request = (o) => {
    const kind = o.url.split('/').pop();
    inFlight[kind] = (inFlight[kind] || 0) + 1;
    most[kind] = Math.max(most[kind] || 0, inFlight[kind]);
    const success = o.success;
    request({ ...o, success: (r) => { inFlight[kind] -= 1; success(r); } });
  };
  wx.requestSubscribeMessage = ({ tmplIds, success }) =>
    setImmediate(() => success({ errMsg: 'requestSubscribeMessage:ok', [tmplIds[0]]: 'accept' }));
  const c = createClient({ ...base, wx, batchSize: 2 });
  for (let i = 0; i < 6; i++) await c.collect(String(1732500000000 + i));
  const first = c.flush();
  assert.equal(c.flush(), first, 'callers of a flush that has not started share it');
  await new Promise((r) => setImmediate(r)); // the first flush is under way now
  const [second, third] = [c.flush(), c.flush()];
  assert.notEqual(second, first);
  assert.equal(second, third);
  const results = await Promise.all([first, second, c.subscribe(['T'])]);
  assert.deepEqual([results[0].sent, results[1].sent], [6, 0], 'the second flush waited for the first');
  assert.equal(wx.calls.filter((o) => o.url.endsWith('/sessions')).length, 1);
  assert.equal(wx.calls.filter((o) => o.url.endsWith('/formids')).length, 3);
  assert.equal(wx.calls.filter((o) => o.url.endsWith('/subscriptions')).length, 1);
  assert.deepEqual(most, { sessions: 1, formids: 1, subscriptions: 1 }, 'one login, one batch at a time');
});

test('calls that meet a 401 at different times log in once between them', async () => {
  const later = (ms, fn) => setTimeout(fn, ms);
  const wx = stubWx(() => null);
  let logins = 0;
  wx.request = (o) => {
    wx.calls.push(o);
    const old = o.header.Authorization === 'Bearer old';
    const answer = (res) => o.success({ header: {}, ...res });
    if (o.url.endsWith('/sessions')) {
      logins += 1;
      later(10, () => answer(formpushLike(o)));
    } else if (old) {
      // Both go out with the old token; the subscription report hears its 401 only after
      // the formIds call has logged in again.
      later(o.url.endsWith('/subscriptions') ? 80 : 20, () =>
        answer({ statusCode: 401, data: { error: 'session_expired', message: 'x' } }),
      );
    } else if (o.url.endsWith('/subscriptions')) {
      later(0, () => answer({ statusCode: 200, data: { granted: 1 } }));
    } else {
      later(0, () => answer(formpushLike(o)));
    }
  };
  wx.requestSubscribeMessage = ({ success }) => setImmediate(() => success({ errMsg: 'ok', T: 'accept' }));
  wx.setStorageSync('formpush:wxunit:session', { appid: 'wxunit', token: 'old', openid: 'o', expiresAt: Date.now() + 864e5 });
  const c = createClient({ ...base, wx });
  await c.collect('1732500000000');
  await Promise.all([c.flush(), c.subscribe(['T'])]);
  assert.equal(logins, 1);
  assert.deepEqual(
    wx.calls.filter((o) => !o.url.endsWith('/sessions')).map((o) => [o.url.split('/').pop(), o.header.Authorization]),
    [
      ['formids', 'Bearer old'],
      ['subscriptions', 'Bearer old'],
      ['formids', 'Bearer t'],
      ['subscriptions', 'Bearer t'],
    ],
  );
});

test('a subscribe result value that is not a string is left out of the report', async () => {
  const wx = stubWx((o) => (o.url.endsWith('/subscriptions') ? { statusCode: 200, data: { granted: 1 } } : formpushLike(o)));
  const results = { errMsg: 'requestSubscribeMessage:ok', A: 'accept', B: { status: 'accept' }, C: 'ban' };
  wx.requestSubscribeMessage = ({ success }) => setImmediate(() => success(results));
  const c = createClient({ ...base, wx });
  assert.equal(await c.subscribe(['A', 'B', 'C']), results);
  const report = wx.calls.find((o) => o.url.endsWith('/subscriptions'));
  assert.deepEqual(report.data, { results: { errMsg: 'requestSubscribeMessage:ok', A: 'accept', C: 'ban' } });
});
