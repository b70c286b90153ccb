// A stand-in for the mini-program's `wx`, with WeChat's calling conventions: callbacks,
// `success` for every HTTP answer whatever its status, `fail` with `request:fail …` when
// no answer came, storage that keeps a copy of what was stored (and '' for a missing key).
//
// wx.request goes to the real formpush with node's fetch. `net` steers it: go offline,
// answer the next matching calls with a canned response, or lose an answer after the
// server applied the call. Every call is logged in `net.log`.
'use strict';

const { ok } = require('./servers');

/** Storage shared by the wx objects of one "phone": an app restart keeps it. */
function createStorage() {
  return new Map();
}

function createFakeWx({ sandbox, appid, openid, storage = createStorage() }) {
  const net = {
    online: true,
    /** { method, path, body, token, status | error, canned } per wx.request, in order. */
    log: [],
    faults: [],
    listeners: new Set(),
    /** Called with each log entry of a call the server answered, before `success` runs. */
    onAnswer: null,
    /** The user's choices in the subscribe dialog: template id → accept, reject, ... */
    subscribeChoices: {},
    /** When set, wx.requestSubscribeMessage fails with this { errMsg, errCode }. */
    subscribeFailure: null,
    logins: 0,

    setOnline(online) {
      this.online = online;
      for (const l of this.listeners) l({ isConnected: online, networkType: online ? 'wifi' : 'none' });
    },
    /**
     * The next `times` calls whose path ends with `path` get `{status, headers, body}`
     * without reaching the server, or, with `lose: true`, reach it and lose the answer.
     */
    fail(fault) {
      this.faults.push({ times: 1, ...fault });
    },
    /** Logged calls whose path ends with `suffix`. */
    calls(suffix) {
      return this.log.filter((e) => e.path.endsWith(suffix));
    },
  };

  function takeFault(path) {
    const i = net.faults.findIndex((f) => path.endsWith(f.path));
    if (i < 0) return null;
    const fault = net.faults[i];
    fault.times -= 1;
    if (fault.times <= 0) net.faults.splice(i, 1);
    return fault;
  }

  // WeChat calls back asynchronously, never inside the call.
  const later = (fn, arg) => setImmediate(() => fn && fn(arg));

  const wx = {
    getStorageSync(key) {
      return storage.has(key) ? JSON.parse(storage.get(key)) : '';
    },
    setStorageSync(key, value) {
      storage.set(key, JSON.stringify(value));
    },
    removeStorageSync(key) {
      storage.delete(key);
    },

    login({ success, fail }) {
      if (!net.online) {
        later(fail, { errMsg: 'login:fail -2:net::ERR_INTERNET_DISCONNECTED' });
        return;
      }
      net.logins += 1;
      ok('POST', `${sandbox}/sandbox/login_codes`, { body: { appid, openid } }).then(
        ({ code }) => later(success, { code, errMsg: 'login:ok' }),
        (err) => later(fail, { errMsg: 'login:fail ' + err.message }),
      );
    },

    request({ url, method = 'GET', data, header = {}, timeout = 60_000, dataType = 'json', success, fail }) {
      const path = new URL(url).pathname;
      const auth = Object.entries(header).find(([k]) => k.toLowerCase() === 'authorization');
      const entry = {
        at: Date.now(),
        method,
        path,
        body: data,
        token: auth ? String(auth[1]).replace(/^Bearer /, '') : null,
      };
      net.log.push(entry);
      const failWith = (errMsg) => {
        entry.error = errMsg;
        later(fail, { errMsg, errno: 600001 });
      };
      if (!net.online) {
        failWith('request:fail -2:net::ERR_INTERNET_DISCONNECTED');
        return;
      }
      const fault = takeFault(path);
      if (fault && !fault.lose) {
        entry.status = fault.status;
        entry.canned = true;
        const body = fault.body === undefined ? '' : fault.body;
        later(success, {
          statusCode: fault.status,
          header: fault.headers || {},
          data: typeof body === 'string' ? body : JSON.parse(JSON.stringify(body)),
          errMsg: 'request:ok',
        });
        return;
      }
      fetch(url, {
        method,
        headers: header,
        body: data === undefined || method === 'GET' ? undefined : typeof data === 'string' ? data : JSON.stringify(data),
        signal: AbortSignal.timeout(timeout),
      })
        .then(async (resp) => {
          const text = await resp.text();
          if (fault && fault.lose) {
            // The server applied the call; the phone never hears of it.
            if (fault.thenOffline) net.online = false;
            failWith('request:fail timeout');
            return;
          }
          let parsed = text;
          if (dataType === 'json') {
            try {
              parsed = JSON.parse(text);
            } catch (_) {
              // WeChat hands over the text when it is not JSON
            }
          }
          entry.status = resp.status;
          entry.answer = parsed;
          if (net.onAnswer) net.onAnswer(entry);
          later(success, {
            statusCode: resp.status,
            header: Object.fromEntries(resp.headers.entries()),
            data: parsed,
            errMsg: 'request:ok',
          });
        })
        .catch((err) => failWith(err.name === 'TimeoutError' ? 'request:fail timeout' : 'request:fail ' + err.message));
    },

    requestSubscribeMessage({ tmplIds, success, fail }) {
      if (net.subscribeFailure) {
        later(fail, { ...net.subscribeFailure });
        return;
      }
      const results = { errMsg: 'requestSubscribeMessage:ok' };
      for (const id of tmplIds) results[id] = net.subscribeChoices[id] || 'reject';
      const accepted = tmplIds.filter((id) => ['accept', 'acceptWithAudio'].includes(results[id]));
      // WeChat records the grant on its side too: that is what lets a send succeed later.
      Promise.all(
        accepted.map((template_id) =>
          ok('POST', `${sandbox}/sandbox/subscriptions`, { body: { appid, openid, template_id } }),
        ),
      ).then(
        () => later(success, results),
        (err) => later(fail, { errMsg: 'requestSubscribeMessage:fail ' + err.message, errCode: 10002 }),
      );
    },

    onNetworkStatusChange(listener) {
      net.listeners.add(listener);
    },
    offNetworkStatusChange(listener) {
      net.listeners.delete(listener);
    },
  };

  return { wx, net, storage };
}

module.exports = { createFakeWx, createStorage };
