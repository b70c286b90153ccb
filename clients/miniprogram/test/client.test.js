// The client against a real formpush and a real `formpush sandbox` (the fake WeChat), with
// `wx` simulated (test/support/fake-wx.js). Each test has its own app, so the server's
// pool statistics and counters are its own.
'use strict';

const { after, before, test } = require('node:test');
const assert = require('node:assert/strict');

const { createClient, FormpushError, DEVTOOLS_MOCK } = require('..');
const { Servers, http, ok, waitFor } = require('./support/servers');
const { createFakeWx, createStorage } = require('./support/fake-wx');

const servers = new Servers();
const clients = [];
let started = false;

before(async () => {
  try {
    await servers.start();
    started = true;
  } catch (e) {
    servers.dumpLogs();
    throw e;
  }
});

after(async () => {
  for (const c of clients) c.close();
  await servers.stop();
});

/** A test that shows the servers' last log lines when it fails. */
function it(name, fn) {
  test(name, { timeout: 60_000 }, async (t) => {
    if (!started) return t.skip('the servers did not start');
    try {
      await fn(t);
    } catch (e) {
      servers.dumpLogs();
      throw e;
    }
  });
}

/** A user's phone: fake wx over its own (or a given) storage. */
function phone(appid, openid, storage) {
  return createFakeWx({ sandbox: servers.sandbox, appid, openid, storage });
}

/** A client with fast retries and no automatic flushing unless asked for. */
function client(fake, appid, options = {}) {
  const errors = [];
  const c = createClient({
    baseUrl: servers.api,
    appid,
    wx: fake.wx,
    autoFlush: false,
    retryBaseMs: 20,
    retryMaxMs: 2_000,
    maxAttempts: 4,
    onError: (err) => errors.push(err),
    ...options,
  });
  c.errors = errors;
  clients.push(c);
  return c;
}

/** Every formId in a formids call the server answered with 200, in order. */
function acknowledged(net) {
  return net
    .calls('/formids')
    .filter((e) => e.status === 200)
    .flatMap((e) => e.body.form_ids);
}

function assertNoRepeats(ids, what) {
  const seen = new Set();
  for (const id of ids) {
    assert.ok(!seen.has(id), `${what}: ${id} was sent twice`);
    seen.add(id);
  }
}

async function rejectsWith(promise, props) {
  const err = await promise.then(
    (v) => assert.fail(`expected a rejection, got ${JSON.stringify(v)}`),
    (e) => e,
  );
  assert.ok(err instanceof FormpushError, `not a FormpushError: ${err && err.stack}`);
  for (const [k, v] of Object.entries(props)) assert.equal(err[k], v, `${k} of ${err.message}`);
  return err;
}

it('logs in through wx.login, keeps the session in storage, and logs in again once on a 401', async () => {
  const appid = servers.appid; // the app formpush registered from WECHAT_APPID at start
  const openid = 'o-login';
  const fake = phone(appid, openid);
  const c = client(fake, appid);
  const [id1, id2, id3, id4] = await servers.formIds(appid, openid, 4);

  const session = await c.login();
  assert.equal(session.openid, openid);
  assert.ok(session.expiresAt > Date.now() + 6 * 24 * 3600 * 1000, 'a 7-day session');
  const stored = fake.wx.getStorageSync(`formpush:${appid}:session`);
  assert.equal(stored.token, session.token);

  // The stored session is used: no second login.
  await c.collect(id1);
  assert.equal((await c.flush()).accepted, 1);
  assert.equal(fake.net.logins, 1);
  assert.equal(fake.net.calls('/formids')[0].token, session.token);

  // A garbled token: 401, one login, the same call again.
  const garbled = stored.token.slice(0, -4) + (stored.token.endsWith('AAAA') ? 'BBBB' : 'AAAA');
  fake.wx.setStorageSync(`formpush:${appid}:session`, { ...stored, token: garbled });
  fake.net.log.length = 0;
  await c.collect(id2);
  assert.equal((await c.flush()).accepted, 1);
  assert.deepEqual(
    fake.net.log.map((e) => [e.path.split('/').pop(), e.status]),
    [['formids', 401], ['sessions', 200], ['formids', 200]],
  );
  assert.equal(fake.net.logins, 2);
  assert.equal(fake.net.log[2].answer.accepted, 1);

  // A session that expired (here: says so in storage) is renewed before the call, no 401.
  const renewed = fake.wx.getStorageSync(`formpush:${appid}:session`);
  assert.notEqual(renewed.token, garbled);
  fake.wx.setStorageSync(`formpush:${appid}:session`, { ...renewed, expiresAt: Date.now() - 1000 });
  fake.net.log.length = 0;
  await c.collect(id3);
  await c.flush();
  assert.deepEqual(
    fake.net.log.map((e) => [e.path.split('/').pop(), e.status]),
    [['sessions', 200], ['formids', 200]],
  );

  // 401 again after the new login: given up after that one login, the formId stays queued.
  fake.net.fail({ path: '/formids', status: 401, body: { error: 'invalid_session', message: 'no' }, times: 2 });
  fake.net.log.length = 0;
  await c.collect(id4);
  await rejectsWith(c.flush(), { status: 401, code: 'invalid_session', retryable: false });
  assert.deepEqual(fake.net.log.map((e) => e.path.split('/').pop()), ['formids', 'sessions', 'formids']);
  assert.equal(c.pending(), 1);
  assert.equal((await c.flush()).accepted, 1);

  assert.equal((await servers.stats(appid)).valid_formids, 4);
  assert.equal(await servers.metric('formpush_formids_rejected_total', { appid, reason: 'duplicate' }), 0);
});

it('a refused login is a FormpushError with the server code, not retried', async () => {
  const appid = await servers.newApp();
  const fake = phone(appid, 'o-refused');
  const c = client(fake, appid);
  // WeChat refused the code (what a reused or forged code gets).
  fake.net.fail({ path: '/sessions', status: 401, body: { error: 'invalid_code', message: 'WeChat refused the code' } });
  await rejectsWith(c.login(), { status: 401, code: 'invalid_code', retryable: false });
  assert.equal(fake.net.calls('/sessions').length, 1);
  // Offline, wx.login itself fails: retried, then reported.
  fake.net.setOnline(false);
  await rejectsWith(c.login(), { code: 'login_failed', retryable: true });
  fake.net.setOnline(true);
  assert.equal((await c.login()).openid, 'o-refused');
});

it('collect drops mocks and junk, exactly what the server refuses as mock', async () => {
  const appid = await servers.newApp();
  const openid = 'o-mocks';
  const fake = phone(appid, openid);
  const c = client(fake, appid);
  const [good] = await servers.formIds(appid, openid, 1);
  const mocks = [DEVTOOLS_MOCK, 'requestFormId:fail timeout', 'requestFormId:fail:no form'];

  for (const m of mocks) {
    assert.equal(await c.collect(m), false, m);
    assert.equal(await c.collect({ type: 'submit', detail: { formId: m, value: {} } }), false, m);
  }
  for (const junk of ['', undefined, null, 42, { detail: {} }, { detail: { formId: 7 } }, 'x'.repeat(200)]) {
    assert.equal(await c.collect(junk), false, JSON.stringify(junk));
  }
  assert.equal(await c.collect({ type: 'submit', detail: { formId: good, value: {} } }), true);
  assert.equal(c.pending(), 1);
  const result = await c.flush();
  assert.deepEqual(result, { sent: 1, accepted: 1, duplicates: 0, rejected: [] });
  assert.deepEqual(fake.net.calls('/formids').map((e) => e.body), [{ form_ids: [good] }]);
  assert.equal(await servers.metric('formpush_formids_rejected_total', { appid, reason: 'mock' }), 0);

  // The same values posted straight to the server are refused as mocks: the client's rule
  // is the server's.
  const token = await servers.sessionToken(appid, openid);
  const direct = await ok('POST', `${servers.api}/v1/apps/${appid}/formids`, { token, body: { form_ids: mocks } });
  assert.deepEqual(direct.rejected, mocks.map((form_id) => ({ form_id, reason: 'mock' })));
});

it('250 formIds go in batches of at most 100 and reach the server once each', async () => {
  const appid = await servers.newApp();
  const openid = 'o-batches';
  const fake = phone(appid, openid);
  const c = client(fake, appid);
  const ids = await servers.formIds(appid, openid, 250);
  for (const id of ids) assert.equal(await c.collect(id), true);
  assert.equal(c.pending(), 250);

  const result = await c.flush();
  assert.deepEqual(result, { sent: 250, accepted: 250, duplicates: 0, rejected: [] });
  assert.deepEqual(fake.net.calls('/formids').map((e) => e.body.form_ids.length), [100, 100, 50]);
  assert.deepEqual(acknowledged(fake.net), ids, 'in the order collected');
  assert.equal(c.pending(), 0);
  // Nothing left to send: no call at all.
  assert.deepEqual(await c.flush(), { sent: 0, accepted: 0, duplicates: 0, rejected: [] });
  assert.equal(fake.net.calls('/formids').length, 3);

  const stats = await servers.stats(appid);
  assert.equal(stats.valid_formids, 250);
  assert.equal(stats.users_with_valid_formid, 1);
  assert.equal(await servers.metric('formpush_formids_ingested_total', { appid }), 250);
  assert.equal(await servers.metric('formpush_formids_rejected_total', { appid, reason: 'duplicate' }), 0);

  // A smaller batchSize is honoured.
  const small = client(phone(appid, 'o-batches-small'), appid, { batchSize: 40 });
  const more = await servers.formIds(appid, 'o-batches-small', 90);
  for (const id of more) await small.collect(id);
  assert.equal((await small.flush()).accepted, 90);
});

it('offline the queue stays in storage; when the network returns it is sent by itself', async () => {
  const appid = await servers.newApp();
  const openid = 'o-offline';
  const storage = createStorage();
  const fake = phone(appid, openid, storage);
  const c = client(fake, appid, { autoFlush: true, flushDelayMs: 20, maxAttempts: 2 });
  const ids = await servers.formIds(appid, openid, 5);

  await c.login();
  fake.net.setOnline(false);
  for (const id of ids) assert.equal(await c.collect(id), true);
  // The automatic flush after collect failed and told onError.
  await waitFor('the background flush to fail', () => c.errors.length > 0);
  assert.ok(c.errors.every((e) => e instanceof FormpushError && e.code === 'network' && e.retryable));
  await rejectsWith(c.flush(), { code: 'network', status: 0, retryable: true });
  assert.equal(c.pending(), 5);
  const stored = JSON.parse(storage.get(`formpush:${appid}:queue`));
  assert.deepEqual(stored.queue.map((e) => e[0]), ids);
  assert.equal((await servers.stats(appid)).valid_formids, 0);

  // Back online: the network listener sends the queue without being asked.
  fake.net.setOnline(true);
  await waitFor('the queue to drain', () => c.pending() === 0, { timeout: 10_000 });
  assert.deepEqual(acknowledged(fake.net), ids);
  assert.equal((await servers.stats(appid)).valid_formids, 5);

  // While offline, requests failed with WeChat's errMsg and never reached the server.
  const offline = fake.net.log.filter((e) => e.error);
  assert.ok(offline.length > 0);
  assert.ok(offline.every((e) => e.error.startsWith('request:fail')));
});

it('an app restart in the middle of the queue sends the rest, each formId once', async () => {
  const appid = await servers.newApp();
  const openid = 'o-restart';
  const storage = createStorage();
  const ids = await servers.formIds(appid, openid, 250);

  // First launch: queue 250, the phone loses the network right after the first batch.
  const first = phone(appid, openid, storage);
  const a = client(first, appid, { maxAttempts: 2 });
  for (const id of ids) await a.collect(id);
  first.net.onAnswer = (entry) => {
    if (entry.path.endsWith('/formids')) first.net.online = false;
  };
  await rejectsWith(a.flush(), { code: 'network', retryable: true });
  a.close(); // the app is killed
  assert.deepEqual(acknowledged(first.net), ids.slice(0, 100));
  assert.equal((await servers.stats(appid)).valid_formids, 100);

  // Second launch over the same storage, network back: the rest goes out by itself.
  const second = phone(appid, openid, storage);
  const b = client(second, appid, { autoFlush: true, flushDelayMs: 0 });
  await waitFor('the second launch to drain the queue', () => b.pending() === 0, { timeout: 10_000 });
  assert.deepEqual(second.net.calls('/formids').map((e) => e.body.form_ids.length), [100, 50]);
  assert.deepEqual(acknowledged(second.net), ids.slice(100));
  assertNoRepeats([...acknowledged(first.net), ...acknowledged(second.net)], 'both launches');
  assert.equal(b.errors.length, 0);

  const stats = await servers.stats(appid);
  assert.equal(stats.valid_formids, 250);
  assert.equal(await servers.metric('formpush_formids_rejected_total', { appid, reason: 'duplicate' }), 0);
  // The session of the first launch was reused, not a new login.
  assert.equal(second.net.logins, 0);
});

it('duplicates are not resent: queued twice, sent before, or known to the server', async () => {
  const appid = await servers.newApp();
  const openid = 'o-dups';
  const fake = phone(appid, openid);
  const c = client(fake, appid);
  const [x, y, z] = await servers.formIds(appid, openid, 3);

  // A submit handler that fires twice queues once.
  assert.equal(await c.collect(x), true);
  assert.equal(await c.collect({ detail: { formId: x } }), false);
  assert.deepEqual(await c.flush(), { sent: 1, accepted: 1, duplicates: 0, rejected: [] });
  // Already sent: remembered, not queued again.
  assert.equal(await c.collect(x), false);
  assert.equal(c.pending(), 0);

  // The server already has y (posted by hand): it answers duplicate; dropped, not retried.
  const token = await servers.sessionToken(appid, openid);
  assert.equal((await ok('POST', `${servers.api}/v1/apps/${appid}/formids`, { token, body: { form_id: y } })).accepted, 1);
  await c.collect(y);
  assert.deepEqual(await c.flush(), { sent: 1, accepted: 0, duplicates: 1, rejected: [] });
  // Rejected by the server (not a formId's shape): reported, dropped, not retried.
  await c.collect('12345');
  assert.deepEqual(await c.flush(), {
    sent: 1,
    accepted: 0,
    duplicates: 0,
    rejected: [{ form_id: '12345', reason: 'malformed' }],
  });
  await c.flush();
  assert.equal(fake.net.calls('/formids').length, 3);
  assert.equal(await servers.metric('formpush_formids_rejected_total', { appid, reason: 'duplicate' }), 1);

  // An answer lost after the server stored the batch: the retry carries the same formIds,
  // the server counts them as duplicates, and the client drops them.
  fake.net.fail({ path: '/formids', lose: true });
  await c.collect(z);
  assert.deepEqual(await c.flush(), { sent: 1, accepted: 0, duplicates: 1, rejected: [] });
  assert.deepEqual(fake.net.calls('/formids').slice(-2).map((e) => [e.body.form_ids, e.error || e.status]), [
    [[z], 'request:fail timeout'],
    [[z], 200],
  ]);
  assert.equal(c.pending(), 0);
  const stats = await servers.stats(appid);
  assert.equal(stats.valid_formids, 3, 'x, y and z, each stored once');
});

it('retries network errors and 5xx with growing delays, waits for Retry-After, and not 4xx', async () => {
  const appid = await servers.newApp();
  const openid = 'o-retry';
  const fake = phone(appid, openid);
  const c = client(fake, appid, { retryBaseMs: 100, maxAttempts: 3 });
  const ids = await servers.formIds(appid, openid, 8);
  await c.login();
  const calls = () => fake.net.calls('/formids');

  // Two 500s, then through: three tries, each gap at least half its backoff.
  fake.net.fail({ path: '/formids', status: 500, body: { error: 'internal', message: 'x' }, times: 2 });
  await c.collect(ids[0]);
  assert.equal((await c.flush()).accepted, 1);
  const [t1, t2, t3] = calls().map((e) => e.at);
  assert.ok(t2 - t1 >= 50 && t3 - t2 >= 100, `gaps ${t2 - t1} ms, ${t3 - t2} ms`);

  // 500 on every try: given up after maxAttempts, the formId stays queued.
  fake.net.fail({ path: '/formids', status: 502, body: '<html>bad gateway</html>', times: 3 });
  await c.collect(ids[1]);
  let before = calls().length;
  await rejectsWith(c.flush(), { status: 502, code: 'http_502', retryable: true });
  assert.equal(calls().length - before, 3);
  assert.equal(c.pending(), 1);
  assert.equal((await c.flush()).accepted, 1);

  // 503 with Retry-After: 1 waits a second although the backoff is 100 ms.
  fake.net.fail({ path: '/formids', status: 503, headers: { 'Retry-After': '1' }, body: { error: 'not_ready', message: 'x' } });
  await c.collect(ids[2]);
  const start = Date.now();
  assert.equal((await c.flush()).accepted, 1);
  assert.ok(Date.now() - start >= 990, `waited ${Date.now() - start} ms`);

  // A 2xx that is not formpush's answer (a captive portal, a proxy) acknowledges nothing.
  fake.net.fail({ path: '/formids', status: 200, body: '<html>log in to the wifi</html>' });
  fake.net.fail({ path: '/formids', status: 200, body: { status: 'ok' } });
  await c.collect(ids[3]);
  assert.equal((await c.flush()).accepted, 1);
  assert.deepEqual(calls().slice(-3).map((e) => e.body.form_ids), [[ids[3]], [ids[3]], [ids[3]]]);

  // 400: not retried; the formId stays queued (the fault is not in it).
  fake.net.fail({ path: '/formids', status: 400, body: { error: 'malformed_json', message: 'x' } });
  await c.collect(ids[4]);
  before = calls().length;
  await rejectsWith(c.flush(), { status: 400, code: 'malformed_json', retryable: false });
  assert.equal(calls().length - before, 1);
  assert.equal(c.pending(), 1);
  assert.equal((await c.flush()).accepted, 1);

  // 422: the server refused these formIds as such; not retried, dropped.
  fake.net.fail({ path: '/formids', status: 422, body: { error: 'invalid_body', message: 'x' } });
  await c.collect(ids[5]);
  before = calls().length;
  await rejectsWith(c.flush(), { status: 422, code: 'invalid_body' });
  assert.equal(calls().length - before, 1);
  assert.equal(c.pending(), 0);

  // 413: the server takes fewer per call than asked; the batch is halved.
  const many = await servers.formIds(appid, openid, 100);
  for (const id of many) await c.collect(id);
  fake.net.fail({ path: '/formids', status: 413, body: { error: 'payload_too_large', message: 'x' } });
  before = calls().length;
  assert.equal((await c.flush()).accepted, 100);
  assert.deepEqual(calls().slice(before).map((e) => e.body.form_ids.length), [100, 50, 50]);

  // A Retry-After longer than retryMaxMs: no waiting in the call, and no request at all
  // until it has passed.
  const patient = client(fake, appid, { retryMaxMs: 500 });
  fake.net.fail({ path: '/formids', status: 503, headers: { 'retry-after': '60' }, body: { error: 'not_ready', message: 'x' } });
  await patient.collect(ids[6]);
  before = calls().length;
  const err = await rejectsWith(patient.flush(), { status: 503, retryable: true });
  assert.equal(err.retryAfterMs, 60_000);
  const held = await rejectsWith(patient.flush(), { code: 'retry_later', retryable: true });
  assert.ok(held.retryAfterMs > 50_000 && held.retryAfterMs <= 60_000, String(held.retryAfterMs));
  assert.equal(calls().length - before, 1);
  assert.equal(patient.pending(), 1);

  assert.equal((await servers.stats(appid)).valid_formids, 105);
});

it('subscribe reports the accepts, and the grants are spent by a subscribe campaign', async () => {
  const templates = ['TPL_SHIPPED', 'TPL_NEWS', 'TPL_VOICE'];
  const appid = await servers.newApp({ templates });
  const openid = 'o-subscribe';
  const fake = phone(appid, openid);
  const c = client(fake, appid);

  fake.net.subscribeChoices = { TPL_SHIPPED: 'accept', TPL_NEWS: 'reject', TPL_VOICE: 'acceptWithAudio' };
  const results = await c.subscribe(templates);
  assert.deepEqual(results, {
    errMsg: 'requestSubscribeMessage:ok',
    TPL_SHIPPED: 'accept',
    TPL_NEWS: 'reject',
    TPL_VOICE: 'acceptWithAudio',
  });
  const [report] = fake.net.calls('/subscriptions');
  assert.deepEqual(report.body, { results });
  assert.deepEqual(report.answer, { granted: 2 });
  assert.equal((await servers.stats(appid)).subscription_grants, 2);

  // Nothing accepted: nothing to report, no call.
  fake.net.subscribeChoices = {};
  assert.equal((await c.subscribe(['TPL_NEWS'])).TPL_NEWS, 'reject');
  // The dialog failed (the user switched subscriptions off): an error, no call.
  fake.net.subscribeFailure = { errMsg: 'requestSubscribeMessage:fail switch is off', errCode: 20004 };
  await rejectsWith(c.subscribe(['TPL_SHIPPED']), { code: 'subscribe_failed', errCode: 20004 });
  fake.net.subscribeFailure = null;
  assert.equal(fake.net.calls('/subscriptions').length, 1);
  await assert.rejects(c.subscribe([]), TypeError);

  // A report that cannot be made after the user accepted: the error carries the choices.
  fake.net.subscribeChoices = { TPL_SHIPPED: 'accept' };
  fake.net.fail({ path: '/subscriptions', status: 400, body: { error: 'malformed_json', message: 'x' } });
  const failed = await rejectsWith(c.subscribe(['TPL_SHIPPED']), { status: 400 });
  assert.equal(failed.results.TPL_SHIPPED, 'accept');
  assert.equal((await servers.stats(appid)).subscription_grants, 2);

  // The grant reported by the client buys a real send.
  const campaign = await ok('POST', `${servers.api}/v1/campaigns`, {
    token: servers.adminToken,
    body: {
      appid,
      name: 'client test',
      kind: 'subscribe',
      template_id: 'TPL_SHIPPED',
      page: 'pages/index/index',
      miniprogram_state: 'formal',
      lang: 'zh_CN',
      data: { thing1: { value: 'Your order shipped' } },
      audience: { type: 'all' },
      schedule: { type: 'now' },
    },
  });
  const done = await waitFor(
    'the campaign to complete',
    async () => {
      const r = await http('GET', `${servers.api}/v1/campaigns/${campaign.id}`, { token: servers.adminToken });
      return r.json && r.json.status === 'completed' && r.json;
    },
    { timeout: 30_000, interval: 200 },
  );
  assert.equal(done.totals.sent, 1, JSON.stringify(done));
  const inbox = await ok('GET', `${servers.sandbox}/sandbox/messages?appid=${appid}`);
  assert.deepEqual(inbox.messages.map((m) => [m.touser, m.template_id]), [[openid, 'TPL_SHIPPED']]);
});
