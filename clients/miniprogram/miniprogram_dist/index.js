/**
 * formpush mini-program client: logs the user in, keeps the formIds of form submits in a
 * queue in wx storage and sends them in batches, and reports subscribe-message grants.
 *
 * Plain ES2017 in CommonJS: WeChat's "build npm" and every base library in use run it as
 * it is, and so does node (the tests). No dependencies.
 */
'use strict';

/** The server refuses more formIds per call (413). */
const MAX_BATCH = 100;
/** WeChat honours a formId 7 days; an older one is worth nothing. */
const FORMID_VALIDITY_MS = 7 * 24 * 60 * 60 * 1000;
/** The developer tools hand this out instead of a formId. */
const DEVTOOLS_MOCK = 'the formId is a mock one';
/** What a failed form submit leaves in e.detail.formId ("requestFormId:fail timeout"...). */
const CLIENT_FAILURE_PREFIX = 'requestFormId:fail';
/** Real formIds are 13 to 36 characters; anything this long is junk that could only bloat a batch. */
const MAX_FORMID_LENGTH = 128;
/** Sent formIds remembered so a handler that fires twice does not send one again. */
const RECENT_LIMIT = 500;
/** A session this close to its expiry is renewed before use rather than after a 401. */
const SESSION_MARGIN_MS = 60 * 1000;

const DEFAULTS = {
  storageKey: 'formpush',
  batchSize: MAX_BATCH,
  autoFlush: true,
  flushDelayMs: 1000,
  maxQueue: 1000,
  maxAttempts: 5,
  retryBaseMs: 500,
  retryMaxMs: 30000,
  timeoutMs: 10000,
};

class FormpushError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, code: string, retryable?: boolean, retryAfterMs?: number,
   *          errCode?: number}} props
   */
  constructor(message, props) {
    super(message);
    this.name = 'FormpushError';
    /** HTTP status; 0 when no answer came (network, wx API failure). */
    this.status = props.status || 0;
    /** The server's `error` code, or one of the client's (see README). */
    this.code = props.code;
    /** Whether trying again later can succeed. */
    this.retryable = Boolean(props.retryable);
    if (props.retryAfterMs !== undefined) this.retryAfterMs = props.retryAfterMs;
    if (props.errCode !== undefined) this.errCode = props.errCode;
  }
}

/** True for the values WeChat gives instead of a formId (the server refuses them as mocks). */
function isMockFormId(formId) {
  return formId === DEVTOOLS_MOCK || String(formId).indexOf(CLIENT_FAILURE_PREFIX) === 0;
}

/** The formId in a `report-submit` form's submit event, or the string itself. */
function formIdOf(eventOrFormId) {
  if (typeof eventOrFormId === 'string') return eventOrFormId;
  const detail = eventOrFormId && eventOrFormId.detail;
  return detail && typeof detail.formId === 'string' ? detail.formId : undefined;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function headerValue(headers, name) {
  if (!headers || typeof headers !== 'object') return undefined;
  // wx.request keeps the server's spelling of header names.
  for (const key of Object.keys(headers)) {
    if (key.toLowerCase() === name) return headers[key];
  }
  return undefined;
}

/** Retry-After as milliseconds from now (delta-seconds or an HTTP date), or undefined. */
function parseRetryAfter(value, now) {
  if (value === undefined || value === null || value === '') return undefined;
  const text = String(value).trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

function isRetryableStatus(status) {
  return status >= 500 || status === 429 || status === 408;
}

function errorFromResponse(res, what) {
  const status = res.statusCode;
  const body = res.data && typeof res.data === 'object' ? res.data : null;
  const code = body && typeof body.error === 'string' ? body.error : 'http_' + status;
  const text = body && typeof body.message === 'string' ? body.message : 'HTTP ' + status;
  return new FormpushError(what + ': ' + text, {
    status,
    code,
    retryable: isRetryableStatus(status),
    retryAfterMs: parseRetryAfter(headerValue(res.header, 'retry-after'), Date.now()),
  });
}

function positiveInt(options, name, max) {
  const value = options[name] === undefined ? DEFAULTS[name] : options[name];
  if (!Number.isInteger(value) || value < 1 || (max !== undefined && value > max)) {
    throw new TypeError(
      'formpush: ' + name + ' must be an integer from 1' + (max !== undefined ? ' to ' + max : ''),
    );
  }
  return value;
}

function nonNegativeInt(options, name) {
  const value = options[name] === undefined ? DEFAULTS[name] : options[name];
  if (!Number.isInteger(value) || value < 0) {
    throw new TypeError('formpush: ' + name + ' must be a non-negative integer');
  }
  return value;
}

class FormpushClient {
  constructor(options) {
    if (!options || typeof options !== 'object') throw new TypeError('formpush: options are required');
    if (typeof options.baseUrl !== 'string' || !/^https?:\/\//.test(options.baseUrl)) {
      throw new TypeError('formpush: baseUrl must be an http(s) URL');
    }
    if (typeof options.appid !== 'string' || options.appid === '') {
      throw new TypeError('formpush: appid is required');
    }
    const wxApi = options.wx || (typeof wx !== 'undefined' ? wx : undefined);
    if (!wxApi || typeof wxApi.request !== 'function' || typeof wxApi.login !== 'function') {
      throw new TypeError('formpush: no wx API: pass options.wx outside a mini-program');
    }
    const storageKey = options.storageKey === undefined ? DEFAULTS.storageKey : options.storageKey;
    if (typeof storageKey !== 'string' || storageKey === '') {
      throw new TypeError('formpush: storageKey must be a non-empty string');
    }
    this._wx = wxApi;
    this._baseUrl = options.baseUrl.replace(/\/+$/, '');
    this._appid = options.appid;
    this._appPath = '/v1/apps/' + encodeURIComponent(options.appid);
    // Per app, so two clients for two apps never share a queue or a session.
    this._sessionKey = storageKey + ':' + options.appid + ':session';
    this._queueKey = storageKey + ':' + options.appid + ':queue';
    this._batchSize = positiveInt(options, 'batchSize', MAX_BATCH);
    this._maxQueue = positiveInt(options, 'maxQueue');
    this._maxAttempts = positiveInt(options, 'maxAttempts');
    this._retryBaseMs = nonNegativeInt(options, 'retryBaseMs');
    this._retryMaxMs = nonNegativeInt(options, 'retryMaxMs');
    this._timeoutMs = positiveInt(options, 'timeoutMs');
    this._flushDelayMs = nonNegativeInt(options, 'flushDelayMs');
    this._autoFlush = options.autoFlush === undefined ? DEFAULTS.autoFlush : Boolean(options.autoFlush);
    this._onError =
      typeof options.onError === 'function'
        ? options.onError
        : (err) => {
            if (typeof console !== 'undefined') console.warn('formpush: background flush failed:', err);
          };

    this._notBefore = 0; // no request before this time (a Retry-After longer than retryMaxMs)
    this._loggingIn = null; // the login in progress, shared by every caller
    this._running = Promise.resolve(); // the drain in progress (flushes run one at a time)
    this._pendingFlush = null; // a flush waiting for the running one, shared by callers
    this._timer = null;
    this._timerAt = 0;
    this._closed = false;
    this._networkListener = null;

    if (this._autoFlush) {
      if (typeof wxApi.onNetworkStatusChange === 'function') {
        this._networkListener = (res) => {
          if (res && res.isConnected && this.pending() > 0) this._schedule(0);
        };
        wxApi.onNetworkStatusChange(this._networkListener);
      }
      // What an earlier launch left unsent goes out now.
      if (this.pending() > 0) this._schedule(this._flushDelayMs);
    }
  }

  // ---- session ----------------------------------------------------------------------

  /** wx.login → a session token from formpush, kept in storage. Always a new login. */
  login() {
    return this._withRetries(() => this._loginOnce());
  }

  /** Forgets the stored session (e.g. the user switched accounts); the queue stays. */
  logout() {
    this._wx.removeStorageSync(this._sessionKey);
    return Promise.resolve();
  }

  _storedSession() {
    const s = this._wx.getStorageSync(this._sessionKey);
    const usable =
      s &&
      typeof s === 'object' &&
      s.appid === this._appid &&
      typeof s.token === 'string' &&
      typeof s.expiresAt === 'number' &&
      s.expiresAt - SESSION_MARGIN_MS > Date.now();
    return usable ? { token: s.token, openid: s.openid, expiresAt: s.expiresAt } : null;
  }

  /** One wx.login and one POST, shared by concurrent callers. */
  _loginOnce() {
    if (!this._loggingIn) {
      const done = () => {
        this._loggingIn = null;
      };
      this._loggingIn = this._doLogin().then(
        (session) => {
          done();
          return session;
        },
        (err) => {
          done();
          throw err;
        },
      );
    }
    return this._loggingIn;
  }

  async _doLogin() {
    // A fresh code per attempt: a code is single use, and a lost answer may have used it.
    const code = await new Promise((resolve, reject) => {
      this._wx.login({
        timeout: this._timeoutMs,
        success: (res) => resolve(res && res.code),
        fail: (err) =>
          reject(
            new FormpushError('wx.login: ' + ((err && err.errMsg) || 'login:fail'), {
              code: 'login_failed',
              retryable: true,
            }),
          ),
      });
    });
    if (typeof code !== 'string' || code === '') {
      throw new FormpushError('wx.login gave no code', { code: 'login_failed', retryable: true });
    }
    const res = await this._request('POST', this._appPath + '/sessions', { code }, null);
    if (res.statusCode < 200 || res.statusCode >= 300) throw errorFromResponse(res, 'login');
    const body = res.data;
    const expiresAt = body && Date.parse(body.expires_at);
    if (!body || typeof body.token !== 'string' || Number.isNaN(expiresAt)) {
      throw new FormpushError('login: the answer has no session token', {
        status: res.statusCode,
        code: 'bad_response',
        retryable: true,
      });
    }
    const session = { token: body.token, openid: body.openid, expiresAt };
    this._wx.setStorageSync(this._sessionKey, {
      appid: this._appid,
      token: session.token,
      openid: session.openid,
      expiresAt,
    });
    return session;
  }

  /** A call with the session token; a 401 logs in again once and repeats the call. */
  async _authed(method, path, data) {
    let session = this._storedSession() || (await this._loginOnce());
    let res = await this._request(method, path, data, session.token);
    if (res.statusCode === 401) {
      const current = this._storedSession();
      // Another call may have logged in already since this one started.
      if (current && current.token !== session.token) {
        session = current;
      } else {
        this._wx.removeStorageSync(this._sessionKey);
        session = await this._loginOnce();
      }
      res = await this._request(method, path, data, session.token);
    }
    if (res.statusCode >= 200 && res.statusCode < 300) return res;
    throw errorFromResponse(res, method + ' ' + path);
  }

  // ---- transport --------------------------------------------------------------------

  /** wx.request as a promise; resolves with every HTTP answer, rejects when none came. */
  _request(method, path, data, token) {
    const wait = this._notBefore - Date.now();
    if (wait > 0) {
      return Promise.reject(
        new FormpushError('the server asked to wait ' + Math.ceil(wait / 1000) + ' s (Retry-After)', {
          code: 'retry_later',
          retryable: true,
          retryAfterMs: wait,
        }),
      );
    }
    return new Promise((resolve, reject) => {
      const header = { 'content-type': 'application/json' };
      if (token) header.Authorization = 'Bearer ' + token;
      const fail = (errMsg) =>
        reject(
          new FormpushError(method + ' ' + path + ': ' + errMsg, { code: 'network', retryable: true }),
        );
      try {
        this._wx.request({
          url: this._baseUrl + path,
          method,
          data,
          header,
          dataType: 'json',
          timeout: this._timeoutMs,
          success: resolve,
          fail: (err) => fail((err && err.errMsg) || 'request:fail'),
        });
      } catch (err) {
        fail('request:fail ' + (err && err.message));
      }
    });
  }

  /** Repeats `attempt` on retryable failures with exponential backoff and jitter. */
  async _withRetries(attempt) {
    for (let n = 1; ; n++) {
      try {
        return await attempt();
      } catch (err) {
        if (!(err instanceof FormpushError) || !err.retryable) throw err;
        const retryAfter = err.retryAfterMs;
        if (retryAfter !== undefined && retryAfter > this._retryMaxMs) {
          // Longer than we wait in one go: hold every call until then, and come back then.
          this._notBefore = Math.max(this._notBefore, Date.now() + retryAfter);
          if (this.pending() > 0) this._schedule(0);
          throw err;
        }
        if (n >= this._maxAttempts) throw err;
        const backoff = Math.min(this._retryMaxMs, this._retryBaseMs * Math.pow(2, n - 1));
        // Jitter keeps phones that lost the network together from coming back together.
        const delay = backoff / 2 + (Math.random() * backoff) / 2;
        await sleep(Math.max(delay, retryAfter || 0));
      }
    }
  }

  // ---- formIds ----------------------------------------------------------------------

  /**
   * Queues the formId of a form submit event (or a formId string). Resolves true when it
   * was queued, false when it was dropped: a mock, empty, already queued or already sent.
   */
  collect(eventOrFormId) {
    try {
      const formId = formIdOf(eventOrFormId);
      if (!formId || formId.length > MAX_FORMID_LENGTH || isMockFormId(formId)) {
        return Promise.resolve(false);
      }
      const state = this._loadQueue();
      if (state.recent.indexOf(formId) >= 0 || state.queue.some((e) => e[0] === formId)) {
        return Promise.resolve(false);
      }
      state.queue.push([formId, Date.now()]);
      // Over the limit the oldest go: they expire first and are claimed last.
      if (state.queue.length > this._maxQueue) state.queue.splice(0, state.queue.length - this._maxQueue);
      this._saveQueue(state);
      this._schedule(this._flushDelayMs);
      return Promise.resolve(true);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** How many formIds wait to be sent. */
  pending() {
    return this._loadQueue().queue.length;
  }

  /**
   * Sends every queued formId. Resolves with the totals when the queue is empty; rejects
   * with the error that stopped it (what was not acknowledged stays queued).
   */
  flush() {
    if (!this._pendingFlush) {
      const run = this._running.then(() => {
        this._pendingFlush = null;
        return this._drain();
      });
      this._pendingFlush = run;
      this._running = run.catch(() => undefined);
    }
    return this._pendingFlush;
  }

  async _drain() {
    const totals = { sent: 0, accepted: 0, duplicates: 0, rejected: [] };
    let batchSize = this._batchSize;
    for (;;) {
      const queue = this._loadQueue().queue;
      if (queue.length === 0) return totals;
      const batch = queue.slice(0, batchSize).map((e) => e[0]);
      let answer;
      try {
        answer = await this._withRetries(() => this._sendBatch(batch));
      } catch (err) {
        if (err instanceof FormpushError && err.status === 413 && batch.length > 1) {
          // The server takes fewer per call than we thought: halve and go on.
          batchSize = Math.ceil(batch.length / 2);
          continue;
        }
        if (err instanceof FormpushError && (err.status === 413 || err.status === 422)) {
          // The server judged these very formIds unacceptable; they would block the queue forever.
          this._acknowledge(batch);
        }
        throw err;
      }
      // Acknowledged: stored, duplicate or rejected alike, none of them is sent again.
      this._acknowledge(batch);
      totals.sent += batch.length;
      totals.accepted += answer.accepted;
      totals.duplicates += answer.duplicates;
      totals.rejected = totals.rejected.concat(answer.rejected);
    }
  }

  async _sendBatch(formIds) {
    const res = await this._authed('POST', this._appPath + '/formids', { form_ids: formIds });
    const body = res.data;
    // Anything but formpush's answer (a captive portal's page, say) acknowledges nothing.
    if (
      !body ||
      typeof body !== 'object' ||
      !Number.isInteger(body.accepted) ||
      !Number.isInteger(body.duplicates) ||
      !Array.isArray(body.rejected)
    ) {
      throw new FormpushError('POST formids: the answer is not formpush\'s', {
        status: res.statusCode,
        code: 'bad_response',
        retryable: true,
      });
    }
    return { accepted: body.accepted, duplicates: body.duplicates, rejected: body.rejected };
  }

  _loadQueue() {
    const raw = this._wx.getStorageSync(this._queueKey);
    const queue =
      raw && Array.isArray(raw.queue)
        ? raw.queue.filter((e) => Array.isArray(e) && typeof e[0] === 'string' && typeof e[1] === 'number')
        : [];
    const recent =
      raw && Array.isArray(raw.recent) ? raw.recent.filter((id) => typeof id === 'string') : [];
    const cutoff = Date.now() - FORMID_VALIDITY_MS;
    const fresh = queue.filter((e) => e[1] > cutoff);
    const state = { queue: fresh, recent };
    // An expired formId is dropped here: the server would store an iOS one as new.
    if (fresh.length !== queue.length) this._saveQueue(state);
    return state;
  }

  _saveQueue(state) {
    // One key for queue and memory: every write leaves them consistent.
    this._wx.setStorageSync(this._queueKey, { v: 1, queue: state.queue, recent: state.recent });
  }

  _acknowledge(formIds) {
    const state = this._loadQueue();
    const done = {};
    for (const id of formIds) done[id] = true;
    state.queue = state.queue.filter((e) => !done[e[0]]);
    state.recent = state.recent.concat(formIds).slice(-RECENT_LIMIT);
    this._saveQueue(state);
  }

  _schedule(delayMs) {
    if (!this._autoFlush || this._closed) return;
    const at = Math.max(Date.now() + delayMs, this._notBefore);
    if (this._timer !== null && this._timerAt <= at) return;
    if (this._timer !== null) clearTimeout(this._timer);
    this._timerAt = at;
    this._timer = setTimeout(() => {
      this._timer = null;
      this.flush().catch((err) => this._onError(err));
    }, Math.max(0, at - Date.now()));
    // node: a pending flush does not keep the process alive (the mini-program has no unref).
    if (this._timer && typeof this._timer.unref === 'function') this._timer.unref();
  }

  // ---- subscriptions ----------------------------------------------------------------

  /**
   * wx.requestSubscribeMessage, then reports the accepts to formpush. Call it straight
   * from a tap handler: WeChat shows the dialog only during a user's tap.
   */
  subscribe(tmplIds) {
    if (!Array.isArray(tmplIds) || tmplIds.length === 0 || !tmplIds.every((t) => typeof t === 'string' && t)) {
      return Promise.reject(new TypeError('formpush: subscribe takes a non-empty array of template ids'));
    }
    if (typeof this._wx.requestSubscribeMessage !== 'function') {
      return Promise.reject(new TypeError('formpush: wx.requestSubscribeMessage is not available'));
    }
    // The dialog must be requested synchronously, before anything is awaited.
    const asked = new Promise((resolve, reject) => {
      this._wx.requestSubscribeMessage({
        tmplIds,
        success: resolve,
        fail: (err) =>
          reject(
            new FormpushError('wx.requestSubscribeMessage: ' + ((err && err.errMsg) || 'fail'), {
              code: 'subscribe_failed',
              errCode: err && err.errCode,
            }),
          ),
      });
    });
    return asked.then((results) => this._report(results));
  }

  async _report(results) {
    const report = {};
    let accepts = 0;
    for (const key of Object.keys(results || {})) {
      const value = results[key];
      // The server refuses the whole report over one value that is not a string.
      if (typeof value !== 'string') continue;
      report[key] = value;
      if (key !== 'errMsg' && (value === 'accept' || value === 'acceptWithAudio')) accepts += 1;
    }
    // Rejections grant nothing: no call for them.
    if (accepts === 0) return results;
    try {
      await this._withRetries(() => this._authed('POST', this._appPath + '/subscriptions', { results: report }));
    } catch (err) {
      if (err instanceof FormpushError) err.results = results;
      throw err;
    }
    return results;
  }

  /** Stops the automatic flushes (timer, network listener); explicit calls still work. */
  close() {
    this._closed = true;
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
    if (this._networkListener && typeof this._wx.offNetworkStatusChange === 'function') {
      this._wx.offNetworkStatusChange(this._networkListener);
    }
    this._networkListener = null;
  }
}

function createClient(options) {
  return new FormpushClient(options);
}

module.exports = {
  createClient,
  FormpushClient,
  FormpushError,
  isMockFormId,
  MAX_BATCH,
  DEVTOOLS_MOCK,
};
