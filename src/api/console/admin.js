// formpush admin console: plain JS, no build step, no third-party code.
// The admin token lives in this tab's sessionStorage only; it is never written to the
// page, the URL or the console.
'use strict';

(() => {
  const TOKEN_KEY = 'formpush.adminToken';
  const ACTIVE = ['scheduled', 'running'];
  const FINAL = ['completed', 'failed', 'cancelled'];
  const STAT_LABELS = [
    ['users', 'users'],
    ['users_with_valid_formid', 'users with formId'],
    ['valid_formids', 'valid formIds'],
    ['expiring_within_24h', 'expiring < 24 h'],
    ['consumed', 'consumed'],
    ['invalid', 'invalid'],
    ['subscription_grants', 'subscribe grants'],
  ];
  const TOTALS = ['targeted', 'sent', 'failed', 'no_formid', 'no_quota', 'pending'];

  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(TOKEN_KEY);
  let apps = [];
  let csvAudience = null; // {columns, users} from the uploaded CSV
  const synced = new Map(); // appid → the app's synced templates (GET .../templates items)
  let picked = null; // the synced template the campaign form is filling, if any
  // Everything tied to the view on screen; a new view bumps `gen` so late answers are dropped.
  const view = { gen: 0, timer: null };

  // ---------- helpers ----------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body, { login = false } = {}) {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network', 'cannot reach formpush (' + e.message + ')');
    }
    const text = await resp.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!resp.ok) {
      const message = (data && typeof data.message === 'string' && data.message) ||
        'HTTP ' + resp.status + ' ' + resp.statusText;
      const err = new ApiError(resp.status, (data && data.error) || 'http_' + resp.status, message);
      if (resp.status === 401 && !login) signOut('Signed out: ' + message);
      throw err;
    }
    return data;
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function showError(node, message) {
    if (!message) {
      node.hidden = true;
      node.textContent = '';
    } else {
      node.textContent = message;
      node.hidden = false;
    }
  }

  let flashTimer = null;
  function flash(message) {
    const f = $('flash');
    f.textContent = message;
    f.hidden = false;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => { f.hidden = true; }, 4000);
  }

  const pad = (n, w = 2) => String(n).padStart(w, '0');

  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function offsetString(d) {
    const off = -d.getTimezoneOffset();
    const sign = off >= 0 ? '+' : '-';
    const abs = Math.abs(off);
    return `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
  }

  // datetime-local value (browser time) → RFC 3339 with the browser's UTC offset.
  function localToRfc3339(value) {
    const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?/.exec(value || '');
    if (!m) return null;
    const d = new Date(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0));
    if (Number.isNaN(d.getTime())) return null;
    return `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6] || '00'}${offsetString(d)}`;
  }

  function scheduleText(c) {
    const s = c.schedule || {};
    const tz = c.timezone || s.timezone || '';
    switch (s.type) {
      case 'now': return 'now';
      case 'at': return 'at ' + fmtTime(s.at);
      case 'cron': return `cron ${s.cron}${tz ? ' (' + tz + ')' : ''}`;
      default: return JSON.stringify(s);
    }
  }

  function errorText(e) {
    if (!e) return '';
    if (typeof e === 'string') return e;
    if (typeof e === 'object' && ('errcode' in e || 'errmsg' in e)) {
      return `errcode ${e.errcode ?? '?'}: ${e.errmsg ?? ''}`;
    }
    return JSON.stringify(e);
  }

  function badge(status, testid) {
    return el('span', { class: 'badge ' + status, 'data-testid': testid }, status);
  }

  function setProgress(bar, totals) {
    const t = totals || {};
    const targeted = Number(t.targeted) || 0;
    const done = ['sent', 'failed', 'no_formid', 'no_quota']
      .reduce((sum, k) => sum + (Number(t[k]) || 0), 0);
    for (const k of ['sent', 'failed', 'no_formid', 'no_quota']) {
      const seg = bar.querySelector('.seg.' + k);
      const pct = targeted ? (100 * (Number(t[k]) || 0)) / targeted : 0;
      if (seg) seg.style.width = pct.toFixed(2) + '%';
    }
    const pct = targeted ? Math.round((100 * done) / targeted) : 0;
    bar.setAttribute('aria-valuenow', String(pct));
    bar.title = `${done} of ${targeted} done (${pct}%)`;
  }

  function miniProgress(totals) {
    const bar = el('span', { class: 'mini progress' },
      ['sent', 'failed', 'no_formid', 'no_quota'].map((k) => el('span', { class: 'seg ' + k })));
    setProgress(bar, totals);
    return bar;
  }

  // ---------- CSV ----------

  // RFC 4180: comma separated, fields may be quoted with "", "" inside quotes is a quote,
  // quoted fields may hold commas and line breaks; CRLF or LF; a UTF-8 BOM is ignored.
  function parseCsv(text) {
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    const rows = [];
    let row = [];
    let field = '';
    let inQuotes = false;
    let closedQuote = false;
    let line = 1;
    let rowLine = 1;
    const endField = () => { row.push(field); field = ''; closedQuote = false; };
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (inQuotes) {
        if (c === '"') {
          if (text[i + 1] === '"') { field += '"'; i++; } else { inQuotes = false; closedQuote = true; }
        } else {
          if (c === '\n') line++;
          field += c;
        }
        continue;
      }
      if (c === ',') { endField(); continue; }
      if (c === '\n' || c === '\r') {
        endField();
        rows.push({ line: rowLine, fields: row });
        row = [];
        if (c === '\r' && text[i + 1] === '\n') i++;
        line++;
        rowLine = line;
        continue;
      }
      if (closedQuote) throw new Error(`line ${line}: unexpected text after a closing quote`);
      if (c === '"') {
        if (field === '') { inQuotes = true; continue; }
        throw new Error(`line ${line}: a quote inside an unquoted field (quote the whole field)`);
      }
      field += c;
    }
    if (inQuotes) throw new Error(`line ${rowLine}: a quoted field is not closed`);
    if (field !== '' || closedQuote || row.length) {
      endField();
      rows.push({ line: rowLine, fields: row });
    }
    return rows.filter((r) => !(r.fields.length === 1 && r.fields[0].trim() === ''));
  }

  function csvToAudience(text) {
    const rows = parseCsv(text);
    if (!rows.length) throw new Error('the CSV file is empty');
    const header = rows[0].fields.map((h) => h.trim());
    if ((header[0] || '').toLowerCase() !== 'openid') {
      throw new Error('the first column of the header must be "openid" (header: openid,var1,var2,…)');
    }
    const columns = header.slice(1);
    const seenCols = new Set();
    for (const col of columns) {
      if (!col) throw new Error('line 1: a column name is empty');
      if (col.toLowerCase() === 'openid' || seenCols.has(col)) {
        throw new Error(`line 1: column "${col}" appears twice`);
      }
      seenCols.add(col);
    }
    const users = [];
    const seen = new Set();
    for (const { line, fields } of rows.slice(1)) {
      if (fields.length !== header.length) {
        throw new Error(`line ${line}: expected ${header.length} fields, found ${fields.length}`);
      }
      const openid = fields[0].trim();
      if (!openid) throw new Error(`line ${line}: openid is empty`);
      if (seen.has(openid)) throw new Error(`line ${line}: openid ${openid} appears twice`);
      seen.add(openid);
      const vars = {};
      columns.forEach((col, i) => { vars[col] = fields[i + 1]; });
      users.push({ openid, vars });
    }
    if (!users.length) throw new Error('the CSV file has a header but no users');
    return { columns, users };
  }


  // ---------- WeChat's value rules for subscribe data ----------
  // The same table as the server (docs/wechat.md, "Subscribe data value rules"): the server
  // decides, this only lets the admin see problems while typing. Lengths count code points.

  const Rules = (() => {
    const LIMITS = { thing: 20, character_string: 32, letter: 32, number: 32 };
    const SYMBOL_BLOCKS = [[0xa1, 0xbf], [0xd7, 0xd7], [0xf7, 0xf7], [0x2010, 0x2027],
      [0x2030, 0x205e], [0x20a0, 0x20c0], [0x2100, 0x22ff], [0x2460, 0x24ff], [0x25a0, 0x25ff],
      [0x2605, 0x2606], [0x3000, 0x303f], [0xff01, 0xff65], [0xffe0, 0xffe6]];
    const CHINESE_BLOCKS = [[0x3400, 0x4dbf], [0x4e00, 0x9fff], [0xf900, 0xfaff], [0x20000, 0x323af]];
    const CURRENCY = new Set([0x24, 0xa2, 0xa3, 0xa4, 0xa5, 0xe3f, 0xfe69, 0xff04, 0xffe0, 0xffe1, 0xffe5, 0xffe6]);
    const within = (u, blocks) => blocks.some(([lo, hi]) => u >= lo && u <= hi);

    function cls(ch) {
      const u = ch.codePointAt(0);
      if (u >= 0x30 && u <= 0x39) return 'digit';
      if ((u >= 0x41 && u <= 0x5a) || (u >= 0x61 && u <= 0x7a)) return 'letter';
      if (u < 0x20 || (u >= 0x7f && u <= 0x9f) || u === 0x2028 || u === 0x2029) return 'control';
      if (within(u, CHINESE_BLOCKS)) return 'chinese';
      if (u <= 0x7e || within(u, SYMBOL_BLOCKS)) return 'symbol';
      return 'other';
    }

    const isDigits = (s) => /^[0-9]+$/.test(s);
    const isDecimal = (s) => /^[0-9]+(\.[0-9]+)?$/.test(s);

    function validDate(y, m, d) {
      const year = y === null ? 2000 : Number(y); // no year: 02-29 exists (in a leap year)
      const month = Number(m);
      const day = d === null ? 1 : Number(d);
      if (month < 1 || month > 12 || day < 1) return false;
      const last = new Date(0);
      last.setUTCFullYear(year, month, 0); // day 0 of the next month: this month's last day
      return day <= last.getUTCDate();
    }

    // null: not shaped like a time; otherwise whether it is a valid one.
    function timeOfDay(s) {
      const f = s.split(':');
      if (f.length < 2 || f.length > 3 || !f.every(isDigits)) return null;
      if (f[0].length > 2 || f.slice(1).some((x) => x.length !== 2)) return null;
      return Number(f[0]) < 24 && f.slice(1).every((x) => Number(x) < 60);
    }

    // Length (UTF-16 units) of a valid date at the start of s, or null.
    function datePrefix(s) {
      const yi = s.indexOf('年');
      if (yi >= 0) {
        const m = /^([0-9]{4})年([0-9]{1,2})月([0-9]{1,2})日/.exec(s);
        return m && validDate(m[1], m[2], m[3]) ? m[0].length : null;
      }
      const date = s.split(' ')[0];
      const sep = (/[-/.]/.exec(date) || [])[0];
      if (!sep) return null;
      const f = date.split(sep);
      if (!f.every(isDigits)) return null;
      let ok = false;
      if (f.length === 3) ok = f[0].length === 4 && f[1].length <= 2 && f[2].length <= 2 && validDate(f[0], f[1], f[2]);
      else if (f.length === 2 && f[0].length === 4) ok = f[1].length <= 2 && validDate(f[0], f[1], null);
      else if (f.length === 2) ok = f[0].length <= 2 && f[1].length <= 2 && validDate(null, f[0], f[1]);
      return ok ? date.length : null;
    }

    function moment(s) {
      const t = timeOfDay(s);
      if (t !== null) return t ? { date: false, time: true } : null;
      const len = datePrefix(s);
      if (len === null) return null;
      const rest = s.slice(len);
      if (!rest) return { date: true, time: false };
      return timeOfDay(rest.replace(/^ +/, '')) === true ? { date: true, time: true } : null;
    }

    function momentRange(v) {
      const parts = v.split('~').map((p) => p.replace(/^ +| +$/g, ''));
      if (parts.length > 2) return null;
      const ms = parts.map(moment);
      return ms.every(Boolean) ? ms : null;
    }

    function isAmount(v) {
      const chars = Array.from(v);
      if (!chars.length) return false;
      const u = chars[0].codePointAt(0);
      if (!CURRENCY.has(u) && !(u >= 0x20a0 && u <= 0x20c0)) return false;
      let rest = chars.slice(1).join('');
      if (rest.endsWith('元')) rest = rest.slice(0, -1);
      return isDecimal(rest) && rest.replace(/[^0-9]/g, '').length <= 10;
    }

    // null when the value is accepted, else what the rule wants.
    function check(rule, value, values) {
      const chars = Array.from(value);
      const n = chars.length;
      if (!n) return 'must not be empty';
      const control = chars.find((c) => cls(c) === 'control');
      if (control) {
        return 'must not contain control characters such as line breaks (found U+' +
          control.codePointAt(0).toString(16).toUpperCase().padStart(4, '0') + ')';
      }
      const longer = (max) => (n > max ? `at most ${max} characters, got ${n}` : null);
      const only = (allowed, what) => {
        const bad = chars.find((c) => !allowed.includes(cls(c)));
        return bad ? `${what} only, not "${bad}"` : null;
      };
      switch (rule) {
        case 'thing': return longer(20) || only(['chinese', 'letter', 'digit', 'symbol'], 'Chinese, letters, digits or symbols');
        case 'number': return longer(32) || (isDecimal(value) ? null : 'digits only, with at most one decimal point between them');
        case 'letter': return longer(32) || only(['letter'], 'letters');
        case 'symbol': return longer(5) || only(['symbol'], 'symbols');
        case 'character_string': return longer(32) || only(['letter', 'digit', 'symbol'], 'letters, digits or symbols');
        case 'phone_number': return longer(17) || only(['digit', 'symbol'], 'digits or symbols');
        case 'phrase': return longer(5) || only(['chinese'], 'Chinese characters');
        case 'name': {
          const bad = only(['chinese', 'letter', 'symbol'], 'Chinese characters, letters or symbols');
          if (bad) return bad;
          if (chars.some((c) => cls(c) === 'chinese')) return n > 10 ? `at most 10 characters when it holds Chinese, got ${n}` : null;
          return longer(20);
        }
        case 'car_number': {
          const tooLong = longer(8);
          if (tooLong) return tooLong;
          const ok = chars.every((c, i) => {
            const k = cls(c);
            return k === 'letter' || k === 'digit' || (k === 'chinese' && (i === 0 || i === n - 1));
          });
          return ok ? null : 'letters or digits, with Chinese only as the first or last character';
        }
        case 'time': {
          const ms = momentRange(value);
          return ms && ms.every((m) => m.time) ? null
            : 'a 24-hour time (15:01 or 15:01:30), optionally after a date; two joined by ~ for a range';
        }
        case 'date': {
          const ms = momentRange(value);
          return ms && ms.every((m) => m.date) ? null
            : 'a date (2019年10月1日, 2019-10-01, 2019/10/01, 2019.10.01, 2019-10 or 10-01), optionally with a 24-hour time; two joined by ~ for a range';
        }
        case 'amount': return isAmount(value) ? null
          : 'one currency symbol, then at most 10 digits (a decimal point allowed), optionally ending in 元';
        case 'enum': return !values || !values.length || values.includes(value) ? null : 'one of ' + values.join(', ');
        default: return null;
      }
    }

    // The value cut to the rule's limit (data_policy truncate); other rules unchanged.
    function truncate(rule, value) {
      const chars = Array.from(value);
      let limit = LIMITS[rule];
      if (rule === 'name') {
        const first = chars.slice(0, 21).findIndex((c) => cls(c) === 'chinese');
        limit = first >= 0 && first < 20 ? Math.max(first, 10) : 20;
      }
      if (limit === undefined || chars.length <= limit) return value;
      let cut = chars.slice(0, limit).join('');
      if (rule === 'number') cut = cut.replace(/\.+$/, '');
      return cut;
    }

    return { check, truncate };
  })();

  const hasPlaceholder = (v) => /\{\{[\s\S]*?\}\}/.test(v);

  // Fills {{placeholders}} like the server: built-ins first, then the user's vars
  // (strings as they are, other JSON as its text); unknown ones stay as written.
  function renderValue(template, user, now, timeZone) {
    const local = localParts(now, timeZone);
    const builtins = {
      openid: user.openid,
      date: `${local.year}-${local.month}-${local.day}`,
      datetime: `${local.year}-${local.month}-${local.day} ${local.hour}:${local.minute}:${local.second}`,
    };
    let out = '';
    let rest = template;
    for (;;) {
      const start = rest.indexOf('{{');
      if (start < 0) break;
      const end = rest.indexOf('}}', start + 2);
      if (end < 0) break;
      const name = rest.slice(start + 2, end).trim();
      let value;
      if (name in builtins) value = builtins[name];
      else if (user.vars && Object.prototype.hasOwnProperty.call(user.vars, name)) {
        const v = user.vars[name];
        value = typeof v === 'string' ? v : JSON.stringify(v);
      }
      out += rest.slice(0, start) + (value === undefined ? rest.slice(start, end + 2) : value);
      rest = rest.slice(end + 2);
    }
    return out + rest;
  }

  function localParts(date, timeZone) {
    let fmt;
    try {
      fmt = new Intl.DateTimeFormat('en-GB', {
        timeZone: timeZone || undefined, year: 'numeric', month: '2-digit', day: '2-digit',
        hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
      });
    } catch (_) {
      fmt = new Intl.DateTimeFormat('en-GB', {
        year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit',
        second: '2-digit', hourCycle: 'h23',
      });
    }
    const parts = {};
    for (const p of fmt.formatToParts(date)) parts[p.type] = p.value;
    return parts;
  }

  // ---------- views ----------

  const VIEWS = ['login', 'dashboard', 'new', 'campaign', 'app'];

  function show(name) {
    view.gen++;
    clearTimeout(view.timer);
    view.timer = null;
    for (const v of VIEWS) $('view-' + v).hidden = v !== name;
    $('nav').hidden = name === 'login';
    return view.gen;
  }

  function route() {
    if (!token) {
      show('login');
      $('token-input').focus();
      return;
    }
    const hash = location.hash.replace(/^#/, '') || '/';
    const [path, query] = hash.split('?');
    const params = new URLSearchParams(query || '');
    let m;
    if (path === '/new') showNew(params.get('appid'));
    else if ((m = /^\/campaigns\/([^/]+)$/.exec(path))) showCampaign(decodeURIComponent(m[1]));
    else if ((m = /^\/apps\/([^/]+)$/.exec(path))) showApp(decodeURIComponent(m[1]));
    else showDashboard();
  }

  function signOut(message) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    apps = [];
    csvAudience = null;
    synced.clear();
    picked = null;
    // Leave nothing of the signed-in session in the page.
    for (const id of ['apps', 'campaigns-body', 'runs-body', 'deliveries-body', 'cf-csv-preview',
      'keys-body', 'messages-body', 'cf-keyword-rows', 'cf-preview-rows']) {
      $(id).replaceChildren();
    }
    closeKeyDialog();
    $('campaign-form').reset();
    $('token-input').value = '';
    showError($('login-error'), message || '');
    if (location.hash && location.hash !== '#/') history.replaceState(null, '', '#/');
    show('login');
  }

  // ---------- sign in ----------

  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = $('token-input');
    const given = input.value.trim();
    if (!given) {
      showError($('login-error'), 'enter the admin token');
      return;
    }
    const button = ev.submitter || $('login-form').querySelector('button');
    button.disabled = true;
    token = given;
    try {
      const r = await api('GET', '/v1/apps', undefined, { login: true });
      apps = r.items || [];
      sessionStorage.setItem(TOKEN_KEY, given);
      input.value = '';
      showError($('login-error'), '');
      route();
    } catch (e) {
      token = null;
      showError($('login-error'), e.message);
      input.select();
    } finally {
      button.disabled = false;
    }
  });

  $('signout').addEventListener('click', () => signOut('Signed out.'));

  // ---------- dashboard ----------

  async function showDashboard() {
    const gen = show('dashboard');
    await Promise.all([loadApps(gen), loadCampaigns(gen)]);
  }

  function fillAppSelects() {
    const filter = $('campaigns-app');
    const chosen = filter.value;
    filter.replaceChildren(el('option', { value: '' }, 'all apps'),
      apps.map((a) => el('option', { value: a.appid }, a.appid)));
    if (apps.some((a) => a.appid === chosen)) filter.value = chosen;
    const formSelect = $('cf-appid');
    const formChosen = formSelect.value;
    formSelect.replaceChildren(...apps.map((a) => el('option', { value: a.appid }, a.appid)));
    if (apps.some((a) => a.appid === formChosen)) formSelect.value = formChosen;
  }

  async function loadApps(gen) {
    showError($('apps-error'), '');
    let r;
    try {
      r = await api('GET', '/v1/apps');
    } catch (e) {
      if (gen === view.gen) showError($('apps-error'), e.message);
      return;
    }
    if (gen !== view.gen) return;
    apps = r.items || [];
    fillAppSelects();
    const box = $('apps');
    if (!apps.length) {
      box.replaceChildren(el('p', { class: 'muted' },
        'No app is registered yet: PUT /v1/apps/{appid} or set WECHAT_APPID and WECHAT_SECRET.'));
      return;
    }
    box.replaceChildren(...apps.map((a) => {
      const stats = el('dl', { class: 'stats', 'data-testid': 'app-stats' },
        STAT_LABELS.map(([key, label]) => el('div', null,
          el('dt', null, label),
          el('dd', { 'data-testid': 'stat-' + key, 'data-stat': key }, '…'))));
      const card = el('article', { class: 'app', 'data-testid': 'app-card', 'data-appid': a.appid },
        el('h3', { 'data-testid': 'app-appid' }, a.appid),
        el('div', { class: 'meta' },
          `send rate ${a.send_rate_per_sec}/s · token API ${a.token_api} · push token ${a.has_token ? 'set' : 'not set'}` +
          ` · AES key ${a.has_encoding_aes_key ? 'set' : 'not set'}`),
        stats,
        el('p', { class: 'error', 'data-testid': 'app-stats-error', hidden: true }),
        el('div', { class: 'actions' },
          el('a', { class: 'button', href: '#/new?appid=' + encodeURIComponent(a.appid) }, 'New campaign'),
          el('a', {
            class: 'button', href: '#/apps/' + encodeURIComponent(a.appid), 'data-testid': 'app-keys-link',
          }, 'Keys & messages'),
          el('button', {
            type: 'button',
            onclick: () => { $('campaigns-app').value = a.appid; loadCampaigns(view.gen); },
          }, 'Show campaigns')));
      loadStats(gen, a.appid, card);
      return card;
    }));
  }

  async function loadStats(gen, appid, card) {
    try {
      const s = await api('GET', '/v1/apps/' + encodeURIComponent(appid) + '/stats');
      if (gen !== view.gen) return;
      for (const [key] of STAT_LABELS) {
        card.querySelector(`[data-stat="${key}"]`).textContent = String(s[key] ?? '—');
      }
    } catch (e) {
      if (gen === view.gen) showError(card.querySelector('[data-testid="app-stats-error"]'), e.message);
    }
  }

  async function loadCampaigns(gen) {
    showError($('campaigns-error'), '');
    const appid = $('campaigns-app').value;
    const q = new URLSearchParams({ limit: '100' });
    if (appid) q.set('appid', appid);
    let r;
    try {
      r = await api('GET', '/v1/campaigns?' + q);
    } catch (e) {
      if (gen === view.gen) showError($('campaigns-error'), e.message);
      return;
    }
    if (gen !== view.gen) return;
    const items = r.items || [];
    $('campaigns-empty').hidden = items.length > 0;
    $('campaigns-body').replaceChildren(...items.map((c) => {
      const href = '#/campaigns/' + encodeURIComponent(c.id);
      const t = c.totals || {};
      return el('tr', {
        class: 'clickable', 'data-testid': 'campaign-row', 'data-id': c.id,
        onclick: (ev) => { if (ev.target.tagName !== 'A') location.hash = href; },
      },
      el('td', null, el('a', { href, 'data-testid': 'campaign-link' }, c.name)),
      el('td', { class: 'mono' }, c.appid),
      el('td', null, c.kind),
      el('td', null, badge(c.status, 'campaign-status')),
      el('td', null, scheduleText(c)),
      el('td', null, miniProgress(t), `${t.sent ?? 0} / ${t.targeted ?? 0}`),
      el('td', null, fmtTime(c.created_at)));
    }));
  }

  $('refresh-dashboard').addEventListener('click', () => showDashboard());
  $('campaigns-app').addEventListener('change', () => loadCampaigns(view.gen));

  // ---------- new campaign ----------

  const form = $('campaign-form');
  const radio = (name) => (form.querySelector(`input[name="${name}"]:checked`) || {}).value;

  function syncForm() {
    const kind = $('cf-kind').value;
    form.querySelectorAll('.only-template').forEach((n) => { n.hidden = kind !== 'template'; });
    form.querySelectorAll('.only-subscribe').forEach((n) => { n.hidden = kind !== 'subscribe'; });
    const filling = kind === 'subscribe' && picked !== null;
    $('cf-keywords').hidden = !filling;
    $('cf-data').readOnly = filling;
    $('cf-template-id').readOnly = filling;
    $('cf-data-hint').textContent = filling
      ? '(generated from the keywords above)'
      : '(JSON; {{name}} is filled from the audience\'s variables; built-ins {{openid}}, {{date}}, {{datetime}})';
    const audience = radio('audience');
    form.querySelector('.audience-openids').hidden = audience !== 'openids';
    form.querySelector('.audience-csv').hidden = audience !== 'csv';
    const schedule = radio('schedule');
    form.querySelector('.schedule-at').hidden = schedule !== 'at';
    form.querySelector('.schedule-cron').hidden = schedule !== 'cron';
    $('cf-at-zone').textContent = '(your browser time, UTC' + offsetString(new Date()) + ')';
  }

  async function showNew(appid) {
    const gen = show('new');
    showError($('cf-error'), '');
    syncForm();
    if (!apps.length) {
      try {
        apps = (await api('GET', '/v1/apps')).items || [];
      } catch (e) {
        if (gen === view.gen) showError($('cf-error'), e.message);
        return;
      }
      if (gen !== view.gen) return;
    }
    fillAppSelects();
    if (appid && apps.some((a) => a.appid === appid)) $('cf-appid').value = appid;
    $('cf-name').focus();
    await loadTemplates(gen);
  }

  // ---------- the campaign form's subscribe templates ----------

  async function loadTemplates(gen, { sync = false } = {}) {
    const appid = $('cf-appid').value;
    const status = $('cf-template-status');
    if (!appid) return;
    if (sync || !synced.has(appid)) {
      status.textContent = sync ? 'Reading the templates from WeChat…' : '';
      try {
        const path = `/v1/apps/${encodeURIComponent(appid)}/templates`;
        const r = sync ? await api('POST', path + ':sync') : await api('GET', path);
        synced.set(appid, r.items || []);
      } catch (e) {
        if (gen === view.gen) status.textContent = (sync ? 'Sync failed: ' : '') + e.message;
        return;
      }
    }
    if (gen !== view.gen || appid !== $('cf-appid').value) return;
    fillTemplatePick();
  }

  function fillTemplatePick() {
    const items = synced.get($('cf-appid').value) || [];
    const select = $('cf-template-pick');
    const chosen = picked ? picked.template_id : select.value;
    select.replaceChildren(el('option', { value: '' }, '— none: type the template ID —'),
      ...items.map((t) => el('option', { value: t.template_id },
        `${t.title} · ${t.type === 3 ? 'long-term' : 'one-time'} · ${t.template_id.slice(0, 10)}…`)));
    const still = items.find((t) => t.template_id === chosen);
    select.value = still ? chosen : '';
    const newest = items.reduce((a, t) => (!a || t.synced_at > a ? t.synced_at : a), null);
    $('cf-template-status').textContent = items.length
      ? `${items.length} template${items.length === 1 ? '' : 's'}, synced ${fmtTime(newest)}`
      : 'No synced template: sync to read the app\'s templates from WeChat.';
    pickTemplate(still || null);
  }

  function pickTemplate(t) {
    const same = picked && t && picked.template_id === t.template_id;
    picked = t;
    if (t && !same) {
      $('cf-template-id').value = t.template_id;
      $('cf-keyword-rows').replaceChildren(...t.keywords.map(keywordRow));
      $('cf-preview-app').textContent = $('cf-appid').value;
      $('cf-preview-title').textContent = t.title;
    }
    if (!t) $('cf-keyword-rows').replaceChildren();
    syncForm();
    refreshKeywords();
  }

  // The example line of a keyword: WeChat's example has one "label:value" line per keyword.
  function exampleOf(t, label) {
    for (const line of (t.example || '').split('\n')) {
      const m = /^(.*?)[:：](.*)$/.exec(line.trim());
      if (m && m[1].trim() === label) return m[2].trim();
    }
    return '';
  }

  function keywordRow(k) {
    const example = exampleOf(picked, k.label);
    const rule = k.rule === 'enum' ? `enum: ${(k.values || []).join(' / ')}` : k.rule;
    const input = el('input', {
      id: 'kw-' + k.key, 'data-testid': 'kw-input', 'data-key': k.key, spellcheck: 'false',
      placeholder: example ? 'e.g. ' + example : '', oninput: refreshKeywords,
      list: k.rule === 'enum' ? 'kw-values-' + k.key : null,
    });
    return el('div', { class: 'kw', 'data-testid': 'kw-row', 'data-key': k.key },
      el('div', { class: 'kw-head' },
        el('label', { for: 'kw-' + k.key }, k.label || k.key),
        el('span', { class: 'kw-rule' }, el('code', null, k.key), ' ', rule)),
      input,
      k.rule === 'enum' ? el('datalist', { id: 'kw-values-' + k.key },
        (k.values || []).map((v) => el('option', { value: v }))) : null,
      el('p', { class: 'kw-note', 'data-testid': 'kw-note', 'data-key': k.key }));
  }

  // Whom the preview shows: the first user of the audience as it stands.
  function sampleUser() {
    const audience = radio('audience');
    if (audience === 'csv' && csvAudience && csvAudience.users.length) return csvAudience.users[0];
    if (audience === 'openids') {
      const first = $('cf-openids').value.split(/\r?\n/).map((x) => x.trim()).find(Boolean);
      if (first) return { openid: first, vars: {} };
    }
    return { openid: 'o_sample_user', vars: {} };
  }

  function keywordData() {
    const data = {};
    for (const k of picked ? picked.keywords : []) {
      data[k.key] = { value: $('kw-' + k.key).value };
    }
    return data;
  }

  // Checks every keyword as typed (literal values) or as the sample user gets it
  // (values with placeholders), and redraws the JSON and the preview.
  function refreshKeywords() {
    if (!picked) return;
    const policy = $('cf-data-policy').value;
    const user = sampleUser();
    const timeZone = $('cf-timezone').value.trim();
    const now = new Date();
    const rows = [];
    for (const k of picked.keywords) {
      const raw = $('kw-' + k.key).value;
      const perUser = hasPlaceholder(raw);
      let value = perUser ? renderValue(raw, user, now, timeZone) : raw;
      const cut = policy === 'truncate' ? Rules.truncate(k.rule, value) : value;
      const problem = Rules.check(k.rule, cut, k.values);
      const note = form.querySelector(`[data-testid="kw-note"][data-key="${k.key}"]`);
      let text = '';
      let tone = '';
      if (!raw) {
        text = 'required';
      } else if (problem) {
        text = perUser ? `for ${user.openid}: ${problem} (that user would not be sent to)` : problem;
        tone = perUser ? 'warn' : 'bad';
      } else if (cut !== value) {
        text = `cut to ${Array.from(cut).length} characters when sent`;
      } else if (perUser) {
        text = 'checked for each user before their grant is spent';
      }
      note.textContent = text;
      note.className = 'kw-note' + (tone ? ' ' + tone : '');
      $('kw-' + k.key).classList.toggle('invalid', Boolean(raw) && Boolean(problem) && !perUser);
      value = cut;
      rows.push(el('div', { 'data-testid': 'preview-row', 'data-key': k.key },
        el('dt', null, k.label || k.key),
        el('dd', { class: problem ? 'bad' : null, 'data-testid': 'preview-value' }, value || '—')));
    }
    $('cf-preview-rows').replaceChildren(...rows);
    $('cf-preview-for').textContent = `As ${user.openid} will see it:`;
    $('cf-data').value = JSON.stringify(keywordData(), null, 2);
    showError($('cf-data-error'), '');
  }

  // The first problem with a literal value: the server would refuse the campaign for it.
  function keywordProblem() {
    const policy = $('cf-data-policy').value;
    for (const k of picked.keywords) {
      const raw = $('kw-' + k.key).value;
      if (!raw) return `${k.label || k.key} (${k.key}) is required`;
      if (hasPlaceholder(raw)) continue;
      const value = policy === 'truncate' ? Rules.truncate(k.rule, raw) : raw;
      const problem = Rules.check(k.rule, value, k.values);
      if (problem) return `${k.label || k.key} (${k.key}, rule ${k.rule}): ${problem}`;
    }
    return null;
  }

  $('cf-template-pick').addEventListener('change', () => {
    const items = synced.get($('cf-appid').value) || [];
    pickTemplate(items.find((t) => t.template_id === $('cf-template-pick').value) || null);
  });
  $('cf-template-sync').addEventListener('click', async () => {
    const button = $('cf-template-sync');
    button.disabled = true;
    try {
      await loadTemplates(view.gen, { sync: true });
    } finally {
      button.disabled = false;
    }
  });
  $('cf-appid').addEventListener('change', () => {
    picked = null;
    loadTemplates(view.gen);
  });
  for (const id of ['cf-data-policy', 'cf-timezone', 'cf-openids']) {
    $(id).addEventListener('input', refreshKeywords);
  }

  function parseData() {
    let data;
    try {
      data = JSON.parse($('cf-data').value);
    } catch (e) {
      throw new Error('data is not valid JSON: ' + e.message);
    }
    if (!data || typeof data !== 'object' || Array.isArray(data)) {
      throw new Error('data must be a JSON object like {"keyword1": {"value": "..."}}');
    }
    const keys = Object.keys(data);
    if (!keys.length) throw new Error('data must name at least one keyword');
    for (const k of keys) {
      const entry = data[k];
      if (!entry || typeof entry !== 'object' || typeof entry.value !== 'string') {
        throw new Error(`data.${k} must be an object with a string "value"`);
      }
    }
    return data;
  }

  $('cf-data').addEventListener('input', () => {
    try {
      parseData();
      showError($('cf-data-error'), '');
    } catch (e) {
      showError($('cf-data-error'), e.message);
    }
  });

  function renderCsvPreview(aud) {
    const table = $('cf-csv-preview');
    if (!aud) {
      table.replaceChildren();
      table.hidden = true;
      $('cf-csv-summary').textContent = '';
      return;
    }
    const shown = aud.users.slice(0, 5);
    table.replaceChildren(
      el('thead', null, el('tr', null, el('th', null, 'openid'), aud.columns.map((c) => el('th', null, c)))),
      el('tbody', null, shown.map((u) => el('tr', null,
        el('td', { class: 'mono' }, u.openid), aud.columns.map((c) => el('td', null, u.vars[c]))))));
    table.hidden = false;
    const cols = aud.columns.length ? aud.columns.map((c) => '{{' + c + '}}').join(', ') : 'none';
    $('cf-csv-summary').textContent =
      `${aud.users.length} user${aud.users.length === 1 ? '' : 's'}; variables: ${cols}` +
      (aud.users.length > shown.length ? ` (first ${shown.length} shown)` : '');
  }

  $('cf-csv').addEventListener('change', async () => {
    const file = $('cf-csv').files[0];
    csvAudience = null;
    renderCsvPreview(null);
    showError($('cf-audience-error'), '');
    if (!file) return;
    try {
      csvAudience = csvToAudience(await file.text());
      renderCsvPreview(csvAudience);
      refreshKeywords();
    } catch (e) {
      showError($('cf-audience-error'), `${file.name}: ${e.message}`);
    }
  });

  form.addEventListener('change', (ev) => {
    if (['audience', 'schedule'].includes(ev.target.name) || ev.target.id === 'cf-kind') syncForm();
    if (ev.target.name === 'audience' || ev.target.id === 'cf-data-policy') refreshKeywords();
  });

  function buildAudience() {
    switch (radio('audience')) {
      case 'all':
        return { type: 'all' };
      case 'openids': {
        const openids = $('cf-openids').value.split(/\r?\n/).map((s) => s.trim()).filter(Boolean);
        if (!openids.length) throw new Error('paste at least one openid, one per line');
        const seen = new Set();
        for (const o of openids) {
          if (seen.has(o)) throw new Error(`openid ${o} appears twice`);
          seen.add(o);
        }
        return { type: 'openids', openids };
      }
      case 'csv':
        if (!csvAudience) throw new Error('choose a CSV file with the header openid,var1,var2,…');
        return { type: 'users', users: csvAudience.users };
      default:
        throw new Error('choose an audience');
    }
  }

  function buildSchedule() {
    const timezone = $('cf-timezone').value.trim();
    const tz = timezone ? { timezone } : {};
    switch (radio('schedule')) {
      case 'at': {
        const at = localToRfc3339($('cf-at').value);
        if (!at) throw new Error('choose the date and time to send at');
        return { type: 'at', at, ...tz };
      }
      case 'cron': {
        const cron = $('cf-cron').value.trim();
        if (!cron) throw new Error('enter a cron expression (6 fields, seconds first), e.g. 0 0 9 * * Mon');
        return { type: 'cron', cron, ...tz };
      }
      default:
        return { type: 'now', ...tz };
    }
  }

  function buildCampaign() {
    const kind = $('cf-kind').value;
    const body = {
      appid: $('cf-appid').value,
      name: $('cf-name').value.trim(),
      kind,
      template_id: $('cf-template-id').value.trim(),
    };
    if (!body.appid) throw new Error('choose an app');
    if (!body.name) throw new Error('enter a name');
    if (!body.template_id) throw new Error('enter the template ID');
    const page = $('cf-page').value.trim();
    if (page) body.page = page;
    if (kind === 'subscribe' && picked) {
      const problem = keywordProblem();
      if (problem) throw new Error(problem);
      body.data = keywordData();
    } else {
      body.data = parseData();
    }
    if (kind === 'template') {
      const emphasis = $('cf-emphasis').value.trim();
      if (emphasis) body.emphasis_keyword = emphasis;
      body.formid_pick = $('cf-formid-pick').value;
    } else {
      if ($('cf-mp-state').value) body.miniprogram_state = $('cf-mp-state').value;
      if ($('cf-lang').value) body.lang = $('cf-lang').value;
      if ($('cf-data-policy').value !== 'reject') body.data_policy = $('cf-data-policy').value;
    }
    body.audience = buildAudience();
    body.schedule = buildSchedule();
    return body;
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError($('cf-error'), '');
    let body;
    try {
      body = buildCampaign();
    } catch (e) {
      showError($('cf-error'), e.message);
      return;
    }
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      const c = await api('POST', '/v1/campaigns', body);
      form.reset();
      csvAudience = null;
      renderCsvPreview(null);
      pickTemplate(null);
      flash(`Campaign "${c.name}" created.`);
      location.hash = '#/campaigns/' + encodeURIComponent(c.id);
    } catch (e) {
      showError($('cf-error'), e.message);
    } finally {
      button.disabled = false;
    }
  });

  // ---------- one campaign ----------

  const deliveries = { id: null, next: null, pages: 0 };
  let current = null; // the campaign on screen

  async function showCampaign(id) {
    const gen = show('campaign');
    current = null;
    for (const k of ['cv-name', 'cv-id', 'cv-app', 'cv-kind', 'cv-template', 'cv-status',
      'cv-schedule', 'cv-next-run', 'cv-created', 'cv-pause-reason', 'cv-live']) $(k).textContent = '';
    for (const k of TOTALS) $('cv-' + k).textContent = '0';
    setProgress($('cv-progress'), {});
    showError($('cv-error'), '');
    showError($('cv-last-error'), '');
    $('runs-body').replaceChildren();
    $('deliveries-body').replaceChildren();
    $('deliveries-more').hidden = true;
    deliveries.id = id;
    await tick(gen, id, true);
  }

  function renderCampaign(c) {
    current = c;
    $('cv-name').textContent = c.name;
    $('cv-id').textContent = c.id;
    $('cv-app').textContent = c.appid;
    $('cv-kind').textContent = c.kind;
    $('cv-template').textContent = 'template ' + c.template_id;
    const status = $('cv-status');
    status.textContent = c.status;
    status.className = 'badge ' + c.status;
    const t = c.totals || {};
    for (const k of TOTALS) $('cv-' + k).textContent = String(t[k] ?? 0);
    setProgress($('cv-progress'), t);
    $('cv-schedule').textContent = scheduleText(c);
    $('cv-next-run').textContent = fmtTime(c.next_run_at);
    $('cv-created').textContent = fmtTime(c.created_at);
    $('cv-pause-reason').textContent = c.status === 'paused'
      ? (c.pause_reason || '—') + (c.resume_at ? ' · resumes ' + fmtTime(c.resume_at) : '')
      : '—';
    showError($('cv-last-error'), c.last_error ? 'Last error: ' + errorText(c.last_error) : '');
    document.title = c.name + ' · formpush admin';
  }

  function renderRuns(items) {
    $('runs-empty').hidden = items.length > 0;
    $('runs-body').replaceChildren(...items.map((r) => {
      const t = r.totals || {};
      return el('tr', { 'data-testid': 'run-row', 'data-id': r.id },
        el('td', null, fmtTime(r.scheduled_for)),
        el('td', null, badge(r.status, 'run-status')),
        TOTALS.map((k) => el('td', { class: 'num' }, String(t[k] ?? 0))),
        el('td', null, fmtTime(r.finished_at)));
    }));
  }

  function deliveryRow(d) {
    return el('tr', { 'data-testid': 'delivery-row', 'data-openid': d.openid, 'data-status': d.status },
      el('td', { class: 'mono', 'data-testid': 'delivery-openid' }, d.openid),
      el('td', null, badge(d.status, 'delivery-status')),
      el('td', { class: 'mono' }, d.form_id || '—'),
      el('td', { class: 'num' }, d.errcode === null || d.errcode === undefined ? '—' : String(d.errcode)),
      el('td', null, d.errmsg || '—'),
      el('td', { class: 'num' }, String(d.attempts ?? 0)),
      el('td', null, fmtTime(d.updated_at)));
  }

  async function loadDeliveries(gen, id, more) {
    showError($('deliveries-error'), '');
    const q = new URLSearchParams({ limit: '50' });
    const status = $('deliveries-status').value;
    if (status) q.set('status', status);
    if (more && deliveries.next) q.set('after', deliveries.next);
    let r;
    try {
      r = await api('GET', `/v1/campaigns/${encodeURIComponent(id)}/deliveries?${q}`);
    } catch (e) {
      if (gen === view.gen) showError($('deliveries-error'), e.message);
      return;
    }
    if (gen !== view.gen) return;
    const rows = (r.items || []).map(deliveryRow);
    if (more) {
      $('deliveries-body').append(...rows);
      deliveries.pages++;
    } else {
      $('deliveries-body').replaceChildren(...rows);
      deliveries.pages = 1;
    }
    deliveries.next = r.next || null;
    $('deliveries-more').hidden = !deliveries.next;
    $('deliveries-empty').hidden = $('deliveries-body').children.length > 0;
  }

  // One refresh of the campaign view; re-arms itself every second while the campaign is
  // scheduled or running.
  async function tick(gen, id, first) {
    const before = current;
    let c;
    let runs;
    try {
      [c, runs] = await Promise.all([
        api('GET', '/v1/campaigns/' + encodeURIComponent(id)),
        api('GET', `/v1/campaigns/${encodeURIComponent(id)}/runs`),
      ]);
    } catch (e) {
      if (gen !== view.gen) return;
      showError($('cv-error'), e.message);
      if (e.status === 404 || e.status === 401) return;
      view.timer = setTimeout(() => tick(gen, id, first), 2000);
      return;
    }
    if (gen !== view.gen) return;
    renderCampaign(c);
    renderRuns(runs.items || []);
    const changed = !before || before.status !== c.status ||
      JSON.stringify(before.totals) !== JSON.stringify(c.totals);
    if (first || (changed && deliveries.pages <= 1)) await loadDeliveries(gen, id, false);
    if (gen !== view.gen) return;
    if (ACTIVE.includes(c.status)) {
      $('cv-live').textContent = 'live · updated ' + fmtTime(new Date().toISOString()).slice(11);
      view.timer = setTimeout(() => tick(gen, id, false), 1000);
    } else {
      $('cv-live').textContent = FINAL.includes(c.status) ? 'finished' : '';
    }
  }

  async function transition(action) {
    if (!current) return;
    if (action === 'cancel' && !window.confirm(`Cancel campaign "${current.name}"? This cannot be undone.`)) return;
    const gen = view.gen;
    const id = current.id;
    showError($('cv-error'), '');
    const buttons = ['cv-pause', 'cv-resume', 'cv-cancel'].map($);
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const c = await api('POST', `/v1/campaigns/${encodeURIComponent(id)}/${action}`);
      if (gen !== view.gen) return;
      flash({ pause: 'Paused.', resume: 'Resumed.', cancel: 'Cancelled.' }[action]);
      renderCampaign(c);
      // Restart the live refresh; an older refresh still in flight sees the new gen and stops.
      clearTimeout(view.timer);
      const next = ++view.gen;
      await tick(next, id, false);
    } catch (e) {
      if (gen === view.gen) showError($('cv-error'), e.message);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  $('cv-pause').addEventListener('click', () => transition('pause'));
  $('cv-resume').addEventListener('click', () => transition('resume'));
  $('cv-cancel').addEventListener('click', () => transition('cancel'));
  $('deliveries-status').addEventListener('change', () => loadDeliveries(view.gen, deliveries.id, false));
  $('deliveries-refresh').addEventListener('click', () => loadDeliveries(view.gen, deliveries.id, false));
  $('deliveries-more').addEventListener('click', async () => {
    const more = $('deliveries-more');
    more.disabled = true;
    try {
      await loadDeliveries(view.gen, deliveries.id, true);
    } finally {
      more.disabled = false;
    }
  });

  // ---------- one app: API keys and triggered messages ----------

  const appView = { appid: null, next: null };
  const appPath = () => '/v1/apps/' + encodeURIComponent(appView.appid);

  async function showApp(appid) {
    const gen = show('app');
    appView.appid = appid;
    appView.next = null;
    $('av-appid').textContent = appid;
    $('av-meta').textContent = '';
    for (const id of ['av-error', 'keys-error', 'messages-error']) showError($(id), '');
    $('keys-body').replaceChildren();
    $('messages-body').replaceChildren();
    $('messages-more').hidden = true;
    document.title = appid + ' · formpush admin';
    await Promise.all([loadAppMeta(gen), loadKeys(gen), loadMessages(gen, false)]);
  }

  async function loadAppMeta(gen) {
    let a;
    try {
      a = await api('GET', appPath());
    } catch (e) {
      if (gen === view.gen) showError($('av-error'), e.message);
      return;
    }
    if (gen !== view.gen) return;
    $('av-meta').textContent = `send rate ${a.send_rate_per_sec}/s · ` +
      (a.webhook_url ? `webhook ${a.webhook_url}` : 'no webhook (set webhook_url with PUT /v1/apps/{appid})');
  }

  async function loadKeys(gen) {
    showError($('keys-error'), '');
    let r;
    try {
      r = await api('GET', appPath() + '/keys');
    } catch (e) {
      if (gen === view.gen) showError($('keys-error'), e.message);
      return;
    }
    if (gen !== view.gen) return;
    const items = r.items || [];
    $('keys-empty').hidden = items.length > 0;
    $('keys-body').replaceChildren(...items.map((k) => el('tr', { 'data-testid': 'key-row', 'data-id': k.id },
      el('td', { 'data-testid': 'key-name' }, k.name),
      el('td', null, (k.scopes || []).join(', ')),
      el('td', { class: 'mono', 'data-testid': 'key-prefix' }, k.prefix + '…'),
      el('td', null, fmtTime(k.created_at)),
      el('td', null, fmtTime(k.last_used_at)),
      el('td', null, el('button', {
        type: 'button', class: 'danger', 'data-testid': 'key-revoke', onclick: () => revokeKey(k),
      }, 'Revoke')))));
  }

  async function revokeKey(k) {
    if (!window.confirm(`Revoke the key "${k.name}" (${k.prefix}…)? Backends using it get 401 at once.`)) return;
    const gen = view.gen;
    try {
      await api('DELETE', `${appPath()}/keys/${encodeURIComponent(k.id)}`);
      flash(`Key "${k.name}" revoked.`);
    } catch (e) {
      if (gen === view.gen) showError($('keys-error'), e.message);
      return;
    }
    await loadKeys(gen);
  }

  $('key-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError($('keys-error'), '');
    const name = $('kf-name').value.trim();
    const scopes = [...$('key-form').querySelectorAll('input[name="scope"]:checked')].map((c) => c.value);
    if (!name) {
      showError($('keys-error'), 'enter a name for the key');
      return;
    }
    if (!scopes.length) {
      showError($('keys-error'), 'choose at least one scope');
      return;
    }
    const gen = view.gen;
    const button = $('key-form').querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      const created = await api('POST', appPath() + '/keys', { name, scopes });
      if (gen !== view.gen) return;
      $('key-form').reset();
      openKeyDialog(created.key);
      await loadKeys(gen);
    } catch (e) {
      if (gen === view.gen) showError($('keys-error'), e.message);
    } finally {
      button.disabled = false;
    }
  });

  // The key lives in the dialog's field only while the dialog is open.
  function openKeyDialog(key) {
    $('kd-key').value = key;
    $('kd-copied').textContent = '';
    $('key-dialog').showModal();
    $('kd-key').select();
  }

  function closeKeyDialog() {
    $('kd-key').value = '';
    $('kd-copied').textContent = '';
    if ($('key-dialog').open) $('key-dialog').close();
  }

  $('kd-copy').addEventListener('click', async () => {
    const field = $('kd-key');
    try {
      await navigator.clipboard.writeText(field.value);
    } catch (_) {
      // No clipboard API (an http origin other than localhost): copy the selection.
      field.select();
      document.execCommand('copy');
    }
    $('kd-copied').textContent = 'Copied.';
  });
  $('kd-done').addEventListener('click', closeKeyDialog);
  // Escape closes the dialog too: forget the key then as well.
  $('key-dialog').addEventListener('close', () => { $('kd-key').value = ''; });

  function messageRow(m) {
    return el('tr', { 'data-testid': 'message-row', 'data-id': m.id, 'data-status': m.status },
      el('td', null, fmtTime(m.created_at)),
      el('td', { class: 'mono', 'data-testid': 'message-openid' }, m.openid),
      el('td', null, m.kind),
      el('td', { class: 'mono' }, m.template_id),
      el('td', null, badge(m.status, 'message-status')),
      el('td', null, fmtTime(m.send_at)),
      el('td', { class: 'num' }, m.errcode === null || m.errcode === undefined ? '—' : String(m.errcode)),
      el('td', null, m.errmsg || '—'));
  }

  async function loadMessages(gen, more) {
    showError($('messages-error'), '');
    const q = new URLSearchParams({ limit: '50' });
    const status = $('messages-status').value;
    if (status) q.set('status', status);
    if (more && appView.next) q.set('after', appView.next);
    let r;
    try {
      r = await api('GET', `${appPath()}/messages?${q}`);
    } catch (e) {
      if (gen === view.gen) showError($('messages-error'), e.message);
      return;
    }
    if (gen !== view.gen) return;
    const rows = (r.items || []).map(messageRow);
    if (more) $('messages-body').append(...rows);
    else $('messages-body').replaceChildren(...rows);
    appView.next = r.next || null;
    $('messages-more').hidden = !appView.next;
    $('messages-empty').hidden = $('messages-body').children.length > 0;
  }

  $('messages-status').addEventListener('change', () => loadMessages(view.gen, false));
  $('messages-refresh').addEventListener('click', () => loadMessages(view.gen, false));
  $('messages-more').addEventListener('click', async () => {
    const button = $('messages-more');
    button.disabled = true;
    try {
      await loadMessages(view.gen, true);
    } finally {
      button.disabled = false;
    }
  });

  // ---------- start ----------

  window.addEventListener('hashchange', route);
  syncForm();
  route();
})();
