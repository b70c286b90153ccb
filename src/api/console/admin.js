// formpush admin console: plain JS, no build step, no third-party code.
// The admin token lives in this tab's sessionStorage only; it is never written to the
// page, the URL or the console. The language (English or Simplified Chinese) is the
// browser's until the admin picks one with the switch; the choice is kept in localStorage.
//
// Every text the page shows comes from the message catalogues in i18n.js: static elements
// carry a data-i18n key, dynamic ones are built with t() / tn(). Data from the server or
// typed by the admin (appids, openids, names, WeChat's messages) is inserted as a node
// marked translate="no"; dates and numbers are formatted by Intl for the language and
// marked data-l10n="intl" (or are <time> elements).
'use strict';

(() => {
  const TOKEN_KEY = 'formpush.adminToken';
  const LANG_KEY = 'formpush.lang';
  const ACTIVE = ['scheduled', 'running'];
  const FINAL = ['completed', 'failed', 'cancelled'];
  const STATS = ['users', 'users_with_valid_formid', 'valid_formids', 'expiring_within_24h',
    'consumed', 'invalid', 'subscription_grants'];
  const TOTALS = ['targeted', 'sent', 'failed', 'no_formid', 'no_quota', 'capped', 'pending'];
  // The outcomes a progress bar shows, in its order (pending is the bar's background).
  const OUTCOMES = ['sent', 'failed', 'no_formid', 'no_quota', 'capped'];
  // A test send names at most this many users (POST /v1/campaigns/{id}/test).
  const MAX_TEST_USERS = 10;
  // The timeline of a running campaign is read again at most this often (it reads every
  // delivery of the campaign; the totals above it refresh every second).
  const TIMELINE_EVERY_MS = 10_000;

  const $ = (id) => document.getElementById(id);
  const I18N = window.FormpushI18n;
  const Charts = window.FormpushCharts;
  let token = sessionStorage.getItem(TOKEN_KEY);
  let apps = [];
  let csvAudience = null; // {columns, users} from the uploaded CSV
  const synced = new Map(); // appid → the app's synced templates (GET .../templates items)
  let picked = null; // the synced template the campaign form is filling, if any
  // Everything tied to the view on screen; a new view bumps `gen` so late answers are dropped.
  const view = { gen: 0, timer: null };

  // ---------- language ----------

  function storedLang() {
    try {
      return localStorage.getItem(LANG_KEY);
    } catch (_) {
      return null;
    }
  }

  // The saved choice, else the first of the browser's languages that the console speaks.
  function initialLang() {
    const saved = storedLang();
    if (saved && I18N.catalogues[saved]) return saved;
    for (const tag of navigator.languages || [navigator.language || '']) {
      const base = String(tag).toLowerCase().split('-')[0];
      if (I18N.catalogues[base]) return base;
    }
    return 'en';
  }

  let lang = initialLang();
  const locale = () => I18N.locales[lang];
  let plural = new Intl.PluralRules(locale());

  const has = (key) => Object.prototype.hasOwnProperty.call(I18N.catalogues[lang], key);

  function lookup(key, params) {
    let v = I18N.catalogues[lang][key];
    if (v === undefined) {
      console.error('formpush console: no text for ' + key);
      return key;
    }
    if (typeof v === 'object') {
      const n = params && typeof params.n === 'number' ? params.n : 0;
      v = v[plural.select(n)] ?? v.other;
    }
    return v;
  }

  // {name} in a text, but not the {{name}} of campaign data.
  const PARAM = /(?<!\{)\{(\w+)\}(?!\})/g;

  // A translatable text to be rendered later (a nested parameter, an error, a rule note).
  const T = (key, params) => ({ i18n: key, params: params || {} });
  const isT = (v) => v && typeof v === 'object' && typeof v.i18n === 'string';

  class UiError extends Error {
    constructor(key, params) {
      super(key);
      this.i18n = key;
      this.params = params || {};
    }
  }

  // The text of a message, as a string (for attributes, dialogs, the title).
  function t(key, params) {
    return lookup(key, params).replace(PARAM, (whole, name) => {
      if (!params || !(name in params)) return whole;
      const v = params[name];
      if (isT(v)) return t(v.i18n, v.params);
      if (v instanceof ApiError) return errorString(v);
      if (typeof v === 'number') return fmtNum(v);
      if (v instanceof Node) return v.textContent;
      return String(v);
    });
  }

  // The text of a message as nodes: its own words as text, each parameter as a node that
  // says what it is (data: translate="no"; Intl output: data-l10n="intl").
  function tn(key, params) {
    const out = document.createDocumentFragment();
    const text = lookup(key, params);
    const re = new RegExp(PARAM.source, 'g');
    let last = 0;
    let m;
    while ((m = re.exec(text))) {
      if (!params || !(m[1] in params)) continue;
      if (m.index > last) out.append(text.slice(last, m.index));
      out.append(paramNode(params[m[1]]));
      last = m.index + m[0].length;
    }
    if (last < text.length) out.append(text.slice(last));
    return out;
  }

  function paramNode(v) {
    if (v instanceof Node) return v;
    if (isT(v)) return tn(v.i18n, v.params);
    if (v instanceof ApiError) return errorNodes(v);
    if (typeof v === 'number') return intl('bdi', fmtNum(v));
    return data(v);
  }

  // Data shown as it is, never translated.
  function data(v, tag = 'bdi') {
    const e = document.createElement(tag);
    e.setAttribute('translate', 'no');
    e.textContent = String(v);
    return e;
  }

  function intl(tag, text) {
    const e = document.createElement(tag);
    e.setAttribute('data-l10n', 'intl');
    e.textContent = text;
    return e;
  }

  // Fills the page's static texts: data-i18n (text; children with data-slot are kept and
  // put where the text names them), data-i18n-placeholder / -aria-label / -title.
  function applyStatic(root = document) {
    for (const e of root.querySelectorAll('[data-i18n]')) {
      if (!e.slots) {
        e.slots = {};
        for (const s of e.querySelectorAll('[data-slot]')) e.slots[s.dataset.slot] = s;
      }
      e.replaceChildren(tn(e.dataset.i18n, e.slots));
    }
    for (const attr of ['placeholder', 'aria-label', 'title']) {
      for (const e of root.querySelectorAll(`[data-i18n-${attr}]`)) {
        e.setAttribute(attr, t(e.getAttribute(`data-i18n-${attr}`)));
      }
    }
    document.documentElement.lang = locale();
    const other = lang === 'zh' ? 'en' : 'zh';
    const sw = $('lang-switch');
    // The other language's name, in that language: the one a reader of it looks for.
    sw.textContent = I18N.catalogues[other]['lang.name'];
    sw.setAttribute('lang', I18N.locales[other]);
    sw.setAttribute('aria-label', t('lang.switch_to', { name: I18N.catalogues[other]['lang.name'] }));
    sw.dataset.to = other;
  }

  function setLang(next) {
    if (!I18N.catalogues[next] || next === lang) return;
    lang = next;
    plural = new Intl.PluralRules(locale());
    formats.clear();
    try {
      localStorage.setItem(LANG_KEY, next);
    } catch (_) { /* private mode: the choice lasts as long as the page */ }
    applyStatic();
    // Redraw what is on screen in the new language (errors of the old view are dropped).
    for (const e of document.querySelectorAll('.error')) showError(e, null);
    if (flashed && !$('flash').hidden) $('flash').replaceChildren(tn(flashed.i18n, flashed.params));
    rebuildKeywordRows();
    route();
  }

  // ---------- formatting ----------

  const formats = new Map();
  function format(kind, zone, make) {
    const key = kind + '|' + (zone || '');
    if (!formats.has(key)) formats.set(key, make());
    return formats.get(key);
  }

  const browserZone = () => Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';

  function fmtNum(n) {
    return format('num', '', () => new Intl.NumberFormat(locale())).format(n);
  }

  function fmtCompact(n) {
    return format('compact', '', () => new Intl.NumberFormat(locale(), { notation: 'compact' })).format(n);
  }

  function fmtPct(x) {
    return format('pct', '', () => new Intl.NumberFormat(locale(), { style: 'percent', maximumFractionDigits: 1 })).format(x);
  }

  function dateFormat(zone, opts) {
    const key = JSON.stringify(opts);
    return format('date' + key, zone, () => {
      try {
        return new Intl.DateTimeFormat(locale(), { ...opts, timeZone: zone || undefined });
      } catch (_) {
        return new Intl.DateTimeFormat(locale(), opts);
      }
    });
  }

  const FULL = { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' };

  // A time in the zone (the current view's by default), as text.
  function fmtTime(iso, zone = view.zone) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return dateFormat(zone, FULL).format(d);
  }

  // A time as a <time> element (its UTC value in datetime), or a dash.
  function timeNode(iso, zone = view.zone) {
    if (!iso) return document.createTextNode('—');
    const e = document.createElement('time');
    e.dateTime = iso;
    e.setAttribute('data-l10n', 'intl');
    e.textContent = fmtTime(iso, zone);
    return e;
  }

  // "GMT+8": the zone's offset at `at`.
  function offsetName(zone, at = new Date()) {
    const parts = dateFormat(zone, { timeZoneName: 'shortOffset' }).formatToParts(at);
    return (parts.find((p) => p.type === 'timeZoneName') || {}).value || '';
  }

  const appOf = (appid) => apps.find((x) => x.appid === appid) || null;

  // The zone an app's times are shown in: the app's own (the time zone of its quiet hours,
  // the only zone GET /v1/apps gives), else the browser's.
  function zoneOf(appid) {
    const a = appOf(appid);
    return (a && a.quiet_hours && a.quiet_hours.timezone) || browserZone();
  }

  function zoneNote(node, zone, key = 'zone.note') {
    node.replaceChildren(tn(key, { zone: data(zone), offset: intl('bdi', offsetName(zone)) }));
  }

  function offsetString(d) {
    const off = -d.getTimezoneOffset();
    const sign = off >= 0 ? '+' : '-';
    const abs = Math.abs(off);
    return `${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
  }

  // datetime-local value (browser time) → RFC 3339 with the browser's UTC offset.
  function localToRfc3339(value) {
    const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?/.exec(value || '');
    if (!m) return null;
    const d = new Date(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0));
    if (Number.isNaN(d.getTime())) return null;
    return `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6] || '00'}${offsetString(d)}`;
  }

  // A value of a known set (a status, a kind) in the language; an unknown one as data.
  function word(prefix, value) {
    return has(prefix + value) ? T(prefix + value) : data(value);
  }

  function scheduleText(c) {
    const s = c.schedule || {};
    const tz = c.timezone || s.timezone || '';
    switch (s.type) {
      case 'now': return T('sched.now');
      case 'at': return T('sched.at', { at: timeNode(s.at) });
      case 'cron': return tz ? T('sched.cron_tz', { cron: s.cron, tz }) : T('sched.cron', { cron: s.cron });
      default: return JSON.stringify(s);
    }
  }

  // WeChat's {errcode, errmsg} (a campaign's last error), with what formpush knows of it.
  function wechatError(e) {
    if (!e || typeof e !== 'object') return String(e || '');
    const known = errcodeName(e.errcode);
    return known
      ? T('wx.error_known', { code: String(e.errcode ?? '?'), name: known, msg: e.errmsg ?? '' })
      : T('wx.error', { code: String(e.errcode ?? '?'), msg: e.errmsg ?? '' });
  }

  // What formpush's docs say an errcode means, if it is one they name.
  function errcodeName(code) {
    const key = 'errcode.' + code;
    return code !== null && code !== undefined && has(key) ? T(key) : null;
  }

  // ---------- the API ----------

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
      throw new ApiError(0, 'network', e.message);
    }
    const text = await resp.text();
    let answer = null;
    if (text) {
      try { answer = JSON.parse(text); } catch (_) { answer = null; }
    }
    if (!resp.ok) {
      const message = (answer && typeof answer.message === 'string' && answer.message) ||
        ('HTTP ' + resp.status + ' ' + resp.statusText).trim();
      const err = new ApiError(resp.status, (answer && answer.error) || 'http_' + resp.status, message);
      if (resp.status === 401 && !login) signOut(T('login.signed_out_because', { error: err }));
      throw err;
    }
    return answer;
  }

  // A server error: what its code means, in the language (or that the code is new to the
  // console), then the server's own words as data.
  function errorNodes(e) {
    const box = document.createDocumentFragment();
    const key = 'err.' + e.code;
    box.append(has(key) ? tn(key) : tn('err.unknown', { code: e.code, status: e.status || 0 }));
    if (e.message) {
      box.append(' ');
      const detail = data(`(${e.code}: ${e.message})`, 'span');
      detail.className = 'detail';
      detail.lang = 'en';
      box.append(detail);
    }
    return box;
  }

  function errorString(e) {
    const key = 'err.' + e.code;
    return (has(key) ? t(key) : t('err.unknown', { code: e.code, status: e.status || 0 })) +
      (e.message ? ` (${e.code}: ${e.message})` : '');
  }

  // Any failure as nodes: a server error, the console's own (UiError), or another.
  function failureNodes(e) {
    if (e instanceof ApiError) return errorNodes(e);
    if (isT(e)) return tn(e.i18n, e.params);
    const box = document.createDocumentFragment();
    box.append(tn('err.page'), ' ', data(String(e && e.message ? e.message : e), 'span'));
    return box;
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
      if (isT(c)) e.append(tn(c.i18n, c.params));
      else e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // A table cell (or other element) holding data: never translated.
  const cell = (value, attrs = {}) => el('td', { ...attrs, translate: 'no' }, value);
  const numCell = (n) => el('td', { class: 'num' }, intl('span', fmtNum(Number(n) || 0)));

  // Shows an error (ApiError, UiError, T(...)) in an error box; null hides it.
  function showError(node, e) {
    if (!e) {
      node.hidden = true;
      node.replaceChildren();
    } else {
      node.replaceChildren(failureNodes(e));
      node.hidden = false;
    }
  }

  let flashTimer = null;
  let flashed = null; // the message on show, to say again after a language change
  function flash(msg) {
    const f = $('flash');
    flashed = msg;
    f.replaceChildren(tn(msg.i18n, msg.params));
    f.hidden = false;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => { f.hidden = true; }, 4000);
  }

  function badge(status, testid) {
    return el('span', { class: 'badge ' + status, 'data-testid': testid }, word('status.', status));
  }

  function setProgress(bar, totals) {
    const tot = totals || {};
    const targeted = Number(tot.targeted) || 0;
    const done = OUTCOMES.reduce((sum, k) => sum + (Number(tot[k]) || 0), 0);
    for (const k of OUTCOMES) {
      const seg = bar.querySelector('.seg.' + k);
      const pct = targeted ? (100 * (Number(tot[k]) || 0)) / targeted : 0;
      if (seg) seg.style.width = pct.toFixed(2) + '%';
    }
    const pct = targeted ? Math.round((100 * done) / targeted) : 0;
    bar.setAttribute('aria-valuenow', String(pct));
    bar.title = t('progress.title', { done, targeted, pct });
  }

  function miniProgress(totals) {
    const bar = el('span', { class: 'mini progress' },
      OUTCOMES.map((k) => el('span', { class: 'seg ' + k })));
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
      if (closedQuote) throw new UiError('csv.after_quote', { line });
      if (c === '"') {
        if (field === '') { inQuotes = true; continue; }
        throw new UiError('csv.quote_inside', { line });
      }
      field += c;
    }
    if (inQuotes) throw new UiError('csv.unclosed', { line: rowLine });
    if (field !== '' || closedQuote || row.length) {
      endField();
      rows.push({ line: rowLine, fields: row });
    }
    return rows.filter((r) => !(r.fields.length === 1 && r.fields[0].trim() === ''));
  }

  function csvToAudience(text) {
    const rows = parseCsv(text);
    if (!rows.length) throw new UiError('csv.empty');
    const header = rows[0].fields.map((h) => h.trim());
    if ((header[0] || '').toLowerCase() !== 'openid') throw new UiError('csv.first_column');
    const columns = header.slice(1);
    const seenCols = new Set();
    for (const col of columns) {
      if (!col) throw new UiError('csv.empty_column');
      if (col.toLowerCase() === 'openid' || seenCols.has(col)) throw new UiError('csv.column_twice', { col });
      seenCols.add(col);
    }
    const users = [];
    const seen = new Set();
    for (const { line, fields } of rows.slice(1)) {
      if (fields.length !== header.length) {
        throw new UiError('csv.field_count', { line, n: header.length, found: fields.length });
      }
      const openid = fields[0].trim();
      if (!openid) throw new UiError('csv.no_openid', { line });
      if (seen.has(openid)) throw new UiError('csv.openid_twice', { line, openid });
      seen.add(openid);
      const vars = {};
      columns.forEach((col, i) => { vars[col] = fields[i + 1]; });
      users.push({ openid, vars });
    }
    if (!users.length) throw new UiError('csv.no_users');
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

    // null when the value is accepted, else what the rule wants (a T(...) text).
    function check(rule, value, values) {
      const chars = Array.from(value);
      const n = chars.length;
      if (!n) return T('rule.empty');
      const control = chars.find((c) => cls(c) === 'control');
      if (control) {
        return T('rule.control', {
          code: 'U+' + control.codePointAt(0).toString(16).toUpperCase().padStart(4, '0'),
        });
      }
      const longer = (max) => (n > max ? T('rule.longer', { max, n }) : null);
      const only = (allowed, what) => {
        const bad = chars.find((c) => !allowed.includes(cls(c)));
        return bad ? T('rule.only', { what: T(what), bad }) : null;
      };
      switch (rule) {
        case 'thing': return longer(20) || only(['chinese', 'letter', 'digit', 'symbol'], 'rule.what_thing');
        case 'number': return longer(32) || (isDecimal(value) ? null : T('rule.number'));
        case 'letter': return longer(32) || only(['letter'], 'rule.what_letters');
        case 'symbol': return longer(5) || only(['symbol'], 'rule.what_symbols');
        case 'character_string': return longer(32) || only(['letter', 'digit', 'symbol'], 'rule.what_character_string');
        case 'phone_number': return longer(17) || only(['digit', 'symbol'], 'rule.what_phone');
        case 'phrase': return longer(5) || only(['chinese'], 'rule.what_chinese');
        case 'name': {
          const bad = only(['chinese', 'letter', 'symbol'], 'rule.what_name');
          if (bad) return bad;
          if (chars.some((c) => cls(c) === 'chinese')) return n > 10 ? T('rule.name_chinese', { n }) : null;
          return longer(20);
        }
        case 'car_number': {
          const tooLong = longer(8);
          if (tooLong) return tooLong;
          const ok = chars.every((c, i) => {
            const k = cls(c);
            return k === 'letter' || k === 'digit' || (k === 'chinese' && (i === 0 || i === n - 1));
          });
          return ok ? null : T('rule.car_number');
        }
        case 'time': {
          const ms = momentRange(value);
          return ms && ms.every((m) => m.time) ? null : T('rule.time');
        }
        case 'date': {
          const ms = momentRange(value);
          return ms && ms.every((m) => m.date) ? null : T('rule.date');
        }
        case 'amount': return isAmount(value) ? null : T('rule.amount');
        case 'enum': return !values || !values.length || values.includes(value) ? null
          : T('rule.enum', { values: values.join(', ') });
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
    view.zone = browserZone();
    for (const v of VIEWS) $('view-' + v).hidden = v !== name;
    $('nav').hidden = name === 'login';
    document.title = t('title.console');
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

  // The app list, read once per sign-in (or when a view needs it and it is empty).
  async function ensureApps() {
    if (!apps.length) apps = (await api('GET', '/v1/apps')).items || [];
    return apps;
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
      'keys-body', 'messages-body', 'cf-keyword-rows', 'cf-preview-rows', 'pv-samples',
      'pv-problems-body', 'ts-body']) {
      $(id).replaceChildren();
    }
    lastPreview = null;
    $('pv').hidden = true;
    testSend.id = null;
    testSend.results = null;
    $('ts-openids').value = '';
    for (const id of CHARTS) Charts.clear($(id));
    closeKeyDialog();
    $('campaign-form').reset();
    $('token-input').value = '';
    showError($('login-error'), message || null);
    if (location.hash && location.hash !== '#/') history.replaceState(null, '', '#/');
    show('login');
  }

  // ---------- sign in ----------

  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = $('token-input');
    const given = input.value.trim();
    if (!given) {
      showError($('login-error'), T('login.enter_token'));
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
      showError($('login-error'), null);
      route();
    } catch (e) {
      token = null;
      showError($('login-error'), e);
      input.select();
    } finally {
      button.disabled = false;
    }
  });

  $('signout').addEventListener('click', () => signOut(T('login.signed_out')));
  $('lang-switch').addEventListener('click', () => setLang($('lang-switch').dataset.to));

  // ---------- dashboard ----------

  async function showDashboard() {
    const gen = show('dashboard');
    await Promise.all([loadApps(gen), loadCampaigns(gen)]);
  }

  function fillAppSelects() {
    const filter = $('campaigns-app');
    const chosen = filter.value;
    filter.replaceChildren(el('option', { value: '' }, T('dash.all_apps')),
      ...apps.map((a) => el('option', { value: a.appid, translate: 'no' }, a.appid)));
    if (apps.some((a) => a.appid === chosen)) filter.value = chosen;
    const formSelect = $('cf-appid');
    const formChosen = formSelect.value;
    formSelect.replaceChildren(...apps.map((a) => el('option', { value: a.appid }, a.appid)));
    if (apps.some((a) => a.appid === formChosen)) formSelect.value = formChosen;
  }

  // The dashboard's times: one zone if every app has the same, else each row says its own.
  function dashboardZones() {
    const zones = [...new Set(apps.map((a) => zoneOf(a.appid)))];
    if (zones.length <= 1) {
      view.zone = zones[0] || browserZone();
      zoneNote($('dash-zone'), view.zone);
    } else {
      $('dash-zone').replaceChildren(tn('zone.per_app'));
    }
  }

  async function loadApps(gen) {
    showError($('apps-error'), null);
    let r;
    try {
      r = await api('GET', '/v1/apps');
    } catch (e) {
      if (gen === view.gen) showError($('apps-error'), e);
      return;
    }
    if (gen !== view.gen) return;
    apps = r.items || [];
    fillAppSelects();
    dashboardZones();
    const box = $('apps');
    if (!apps.length) {
      box.replaceChildren(el('p', { class: 'muted' }, T('dash.no_apps', {
        put: data('PUT /v1/apps/{appid}', 'code'), vars: data('WECHAT_APPID, WECHAT_SECRET', 'code'),
      })));
      return;
    }
    box.replaceChildren(...apps.map((a) => {
      const stats = el('dl', { class: 'stats', 'data-testid': 'app-stats' },
        STATS.map((key) => el('div', null,
          el('dt', null, T('stat.' + key)),
          el('dd', { 'data-testid': 'stat-' + key, 'data-stat': key }, '…'))));
      const card = el('article', { class: 'app', 'data-testid': 'app-card', 'data-appid': a.appid },
        el('h3', { 'data-testid': 'app-appid', translate: 'no' }, a.appid),
        el('div', { class: 'meta' }, T('app.meta', {
          rate: a.send_rate_per_sec, api: a.token_api,
          token: T(a.has_token ? 'common.set' : 'common.not_set'),
          aes: T(a.has_encoding_aes_key ? 'common.set' : 'common.not_set'),
        })),
        stats,
        el('p', { class: 'error', 'data-testid': 'app-stats-error', hidden: true }),
        el('div', { class: 'actions' },
          el('a', { class: 'button', href: '#/new?appid=' + encodeURIComponent(a.appid) }, T('nav.new_campaign')),
          el('a', {
            class: 'button', href: '#/apps/' + encodeURIComponent(a.appid), 'data-testid': 'app-keys-link',
          }, T('app.open')),
          el('button', {
            type: 'button',
            onclick: () => { $('campaigns-app').value = a.appid; loadCampaigns(view.gen); },
          }, T('app.show_campaigns'))));
      loadStats(gen, a.appid, card);
      return card;
    }));
  }

  async function loadStats(gen, appid, card) {
    try {
      const s = await api('GET', '/v1/apps/' + encodeURIComponent(appid) + '/stats');
      if (gen !== view.gen) return;
      for (const key of STATS) {
        const dd = card.querySelector(`[data-stat="${key}"]`);
        dd.replaceChildren(s[key] === undefined ? '—' : intl('span', fmtNum(s[key])));
      }
    } catch (e) {
      if (gen === view.gen) showError(card.querySelector('[data-testid="app-stats-error"]'), e);
    }
  }

  async function loadCampaigns(gen) {
    showError($('campaigns-error'), null);
    const appid = $('campaigns-app').value;
    const q = new URLSearchParams({ limit: '100' });
    if (appid) q.set('appid', appid);
    let r;
    try {
      r = await api('GET', '/v1/campaigns?' + q);
    } catch (e) {
      if (gen === view.gen) showError($('campaigns-error'), e);
      return;
    }
    if (gen !== view.gen) return;
    const items = r.items || [];
    $('campaigns-empty').hidden = items.length > 0;
    const oneZone = new Set(apps.map((a) => zoneOf(a.appid))).size <= 1;
    $('campaigns-body').replaceChildren(...items.map((c) => {
      const href = '#/campaigns/' + encodeURIComponent(c.id);
      const tot = c.totals || {};
      const zone = zoneOf(c.appid);
      const created = timeNode(c.created_at, zone);
      return el('tr', {
        class: 'clickable', 'data-testid': 'campaign-row', 'data-id': c.id,
        onclick: (ev) => { if (ev.target.tagName !== 'A') location.hash = href; },
      },
      el('td', null, el('a', { href, 'data-testid': 'campaign-link', translate: 'no' }, c.name)),
      cell(c.appid, { class: 'mono' }),
      el('td', null, word('kind.', c.kind)),
      el('td', null, badge(c.status, 'campaign-status'), c.held_until
        ? el('div', { class: 'muted small', 'data-testid': 'campaign-held' }, T('dash.held', { time: timeNode(c.held_until, zone) }),
          oneZone ? null : [' ', data(zone, 'span')])
        : null),
      el('td', null, scheduleText(c)),
      el('td', null, miniProgress(tot), T('dash.progress', { sent: tot.sent ?? 0, targeted: tot.targeted ?? 0 })),
      el('td', null, created, oneZone ? null : [' ', data(zone, 'span')]));
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
    const code = (s) => data(s, 'code');
    $('cf-data-hint').replaceChildren(filling ? tn('cf.data_hint_generated') : tn('cf.data_hint', {
      name: code('{{name}}'), openid: code('{{openid}}'), date: code('{{date}}'), datetime: code('{{datetime}}'),
    }));
    const audience = radio('audience');
    form.querySelector('.audience-openids').hidden = audience !== 'openids';
    form.querySelector('.audience-csv').hidden = audience !== 'csv';
    const schedule = radio('schedule');
    form.querySelector('.schedule-at').hidden = schedule !== 'at';
    form.querySelector('.schedule-cron').hidden = schedule !== 'cron';
    $('cf-at-zone').replaceChildren(tn('cf.at_zone', { offset: 'UTC' + offsetString(new Date()) }));
    showCsvName();
  }

  async function showNew(appid) {
    const gen = show('new');
    document.title = t('title.view', { view: T('nav.new_campaign') });
    showError($('cf-error'), null);
    syncForm();
    try {
      await ensureApps();
    } catch (e) {
      if (gen === view.gen) showError($('cf-error'), e);
      return;
    }
    if (gen !== view.gen) return;
    fillAppSelects();
    if (appid && apps.some((a) => a.appid === appid)) $('cf-appid').value = appid;
    showQuietNote();
    if (lastPreview) renderPreview();
    $('cf-name').focus();
    await loadTemplates(gen);
  }

  // ---------- the campaign form's subscribe templates ----------

  async function loadTemplates(gen, { sync = false } = {}) {
    const appid = $('cf-appid').value;
    const status = $('cf-template-status');
    if (!appid) return;
    if (sync || !synced.has(appid)) {
      status.replaceChildren(sync ? tn('cf.syncing') : '');
      try {
        const path = `/v1/apps/${encodeURIComponent(appid)}/templates`;
        const r = sync ? await api('POST', path + ':sync') : await api('GET', path);
        synced.set(appid, r.items || []);
      } catch (e) {
        if (gen === view.gen) {
          status.replaceChildren(sync ? tn('cf.sync_failed', { error: e }) : errorNodes(e));
        }
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
    // An option holds text only: the template's title (data) with the words around it.
    select.replaceChildren(el('option', { value: '' }, T('cf.pick_none')),
      ...items.map((tpl) => el('option', { value: tpl.template_id, translate: 'no' },
        t('cf.pick_option', {
          title: tpl.title, type: T(tpl.type === 3 ? 'tpl.long_term' : 'tpl.one_time'),
          id: tpl.template_id.slice(0, 10) + '…',
        }))));
    const still = items.find((tpl) => tpl.template_id === chosen);
    select.value = still ? chosen : '';
    const newest = items.reduce((a, tpl) => (!a || tpl.synced_at > a ? tpl.synced_at : a), null);
    $('cf-template-status').replaceChildren(items.length
      ? tn('cf.templates_synced', { n: items.length, time: timeNode(newest) })
      : tn('cf.no_templates'));
    pickTemplate(still || null);
  }

  function pickTemplate(tpl) {
    const same = picked && tpl && picked.template_id === tpl.template_id;
    picked = tpl;
    if (tpl && !same) {
      $('cf-template-id').value = tpl.template_id;
      $('cf-keyword-rows').replaceChildren(...tpl.keywords.map(keywordRow));
      $('cf-preview-app').textContent = $('cf-appid').value;
      $('cf-preview-title').textContent = tpl.title;
    }
    if (!tpl) $('cf-keyword-rows').replaceChildren();
    syncForm();
    refreshKeywords();
  }

  // After a language change: the keyword rows again, in the new language, values kept.
  function rebuildKeywordRows() {
    if (!picked) return;
    const values = keywordData();
    $('cf-keyword-rows').replaceChildren(...picked.keywords.map(keywordRow));
    for (const [key, v] of Object.entries(values)) $('kw-' + key).value = v.value;
    syncForm();
    refreshKeywords();
  }

  // The example line of a keyword: WeChat's example has one "label:value" line per keyword.
  function exampleOf(tpl, label) {
    for (const line of (tpl.example || '').split('\n')) {
      const m = /^(.*?)[:：](.*)$/.exec(line.trim());
      if (m && m[1].trim() === label) return m[2].trim();
    }
    return '';
  }

  function keywordRow(k) {
    const example = exampleOf(picked, k.label);
    const rule = k.rule === 'enum'
      ? T('kw.enum', { values: (k.values || []).join(' / ') })
      : data(k.rule, 'span');
    const input = el('input', {
      id: 'kw-' + k.key, 'data-testid': 'kw-input', 'data-key': k.key, spellcheck: 'false',
      placeholder: example ? t('kw.example', { example }) : '', oninput: refreshKeywords,
      list: k.rule === 'enum' ? 'kw-values-' + k.key : null,
    });
    return el('div', { class: 'kw', 'data-testid': 'kw-row', 'data-key': k.key },
      el('div', { class: 'kw-head' },
        el('label', { for: 'kw-' + k.key, translate: 'no' }, k.label || k.key),
        el('span', { class: 'kw-rule' }, data(k.key, 'code'), ' ', rule)),
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
    const out = {};
    for (const k of picked ? picked.keywords : []) {
      out[k.key] = { value: $('kw-' + k.key).value };
    }
    return out;
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
      let text = null;
      let tone = '';
      if (!raw) {
        text = T('kw.required');
      } else if (problem) {
        text = perUser ? T('kw.problem_for', { openid: user.openid, problem }) : problem;
        tone = perUser ? 'warn' : 'bad';
      } else if (cut !== value) {
        text = T('kw.cut', { n: Array.from(cut).length });
      } else if (perUser) {
        text = T('kw.per_user');
      }
      note.replaceChildren(text ? tn(text.i18n, text.params) : '');
      note.className = 'kw-note' + (tone ? ' ' + tone : '');
      $('kw-' + k.key).classList.toggle('invalid', Boolean(raw) && Boolean(problem) && !perUser);
      value = cut;
      rows.push(el('div', { 'data-testid': 'preview-row', 'data-key': k.key },
        el('dt', { translate: 'no' }, k.label || k.key),
        el('dd', { class: problem ? 'bad' : null, 'data-testid': 'preview-value', translate: 'no' }, value || '—')));
    }
    $('cf-preview-rows').replaceChildren(...rows);
    $('cf-preview-for').replaceChildren(tn('cf.preview_for', { openid: user.openid }));
    $('cf-data').value = JSON.stringify(keywordData(), null, 2);
    showError($('cf-data-error'), null);
  }

  // The first problem with a literal value: the server would refuse the campaign for it.
  function keywordProblem() {
    const policy = $('cf-data-policy').value;
    for (const k of picked.keywords) {
      const raw = $('kw-' + k.key).value;
      const label = k.label || k.key;
      if (!raw) return new UiError('kw.missing', { label, key: k.key });
      if (hasPlaceholder(raw)) continue;
      const value = policy === 'truncate' ? Rules.truncate(k.rule, raw) : raw;
      const problem = Rules.check(k.rule, value, k.values);
      if (problem) return new UiError('kw.invalid', { label, key: k.key, rule: k.rule, problem });
    }
    return null;
  }

  $('cf-template-pick').addEventListener('change', () => {
    const items = synced.get($('cf-appid').value) || [];
    pickTemplate(items.find((tpl) => tpl.template_id === $('cf-template-pick').value) || null);
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
    showQuietNote();
    loadTemplates(view.gen);
  });
  for (const id of ['cf-data-policy', 'cf-timezone', 'cf-openids']) {
    $(id).addEventListener('input', refreshKeywords);
  }

  function parseData() {
    let parsed;
    try {
      parsed = JSON.parse($('cf-data').value);
    } catch (e) {
      throw new UiError('cf.data_not_json', { error: e.message });
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new UiError('cf.data_not_object', { example: '{"keyword1": {"value": "..."}}' });
    }
    const keys = Object.keys(parsed);
    if (!keys.length) throw new UiError('cf.data_empty');
    for (const k of keys) {
      const entry = parsed[k];
      if (!entry || typeof entry !== 'object' || typeof entry.value !== 'string') {
        throw new UiError('cf.data_entry', { key: 'data.' + k });
      }
    }
    return parsed;
  }

  $('cf-data').addEventListener('input', () => {
    try {
      parseData();
      showError($('cf-data-error'), null);
    } catch (e) {
      showError($('cf-data-error'), e);
    }
  });

  function renderCsvPreview(aud) {
    const table = $('cf-csv-preview');
    if (!aud) {
      table.replaceChildren();
      table.hidden = true;
      $('cf-csv-summary').replaceChildren();
      return;
    }
    const shown = aud.users.slice(0, 5);
    table.replaceChildren(
      el('thead', null, el('tr', null, el('th', null, 'openid'), aud.columns.map((c) => el('th', null, c)))),
      el('tbody', null, shown.map((u) => el('tr', null,
        el('td', { class: 'mono' }, u.openid), aud.columns.map((c) => el('td', null, u.vars[c]))))));
    table.hidden = false;
    const vars = aud.columns.length ? aud.columns.map((c) => '{{' + c + '}}').join(', ') : T('common.none');
    const summary = T('cf.csv_summary', { n: aud.users.length, vars });
    $('cf-csv-summary').replaceChildren(aud.users.length > shown.length
      ? tn('cf.csv_summary_first', { summary, shown: shown.length })
      : tn(summary.i18n, summary.params));
  }

  function showCsvName() {
    const file = $('cf-csv').files[0];
    $('cf-csv-name').replaceChildren(file ? data(file.name, 'span') : tn('cf.csv_none'));
  }

  $('cf-csv').addEventListener('change', async () => {
    const file = $('cf-csv').files[0];
    showCsvName();
    csvAudience = null;
    renderCsvPreview(null);
    showError($('cf-audience-error'), null);
    if (!file) return;
    try {
      csvAudience = csvToAudience(await file.text());
      renderCsvPreview(csvAudience);
      refreshKeywords();
    } catch (e) {
      showError($('cf-audience-error'), isT(e) ? T('cf.csv_error', { file: file.name, error: e }) : e);
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
        if (!openids.length) throw new UiError('cf.no_openids');
        const seen = new Set();
        for (const o of openids) {
          if (seen.has(o)) throw new UiError('cf.openid_twice', { openid: o });
          seen.add(o);
        }
        return { type: 'openids', openids };
      }
      case 'csv':
        if (!csvAudience) throw new UiError('cf.no_csv', { header: data('openid,var1,var2,…', 'code') });
        return { type: 'users', users: csvAudience.users };
      default:
        throw new UiError('cf.no_audience');
    }
  }

  function buildSchedule() {
    const timezone = $('cf-timezone').value.trim();
    const tz = timezone ? { timezone } : {};
    switch (radio('schedule')) {
      case 'at': {
        const at = localToRfc3339($('cf-at').value);
        if (!at) throw new UiError('cf.no_at');
        return { type: 'at', at, ...tz };
      }
      case 'cron': {
        const cron = $('cf-cron').value.trim();
        if (!cron) throw new UiError('cf.no_cron', { example: '0 0 9 * * Mon' });
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
    if (!body.appid) throw new UiError('cf.no_app');
    if (!body.name) throw new UiError('cf.no_name');
    if (!body.template_id) throw new UiError('cf.no_template_id');
    const page = $('cf-page').value.trim();
    if (page) body.page = page;
    if (kind === 'subscribe' && picked) {
      const problem = keywordProblem();
      if (problem) throw problem;
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
    if ($('cf-ignore-quiet').checked) body.ignore_quiet_hours = true;
    return body;
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError($('cf-error'), null);
    let body;
    try {
      body = buildCampaign();
    } catch (e) {
      showError($('cf-error'), e);
      return;
    }
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      const c = await api('POST', '/v1/campaigns', body);
      form.reset();
      lastPreview = null;
      $('pv').hidden = true;
      csvAudience = null;
      renderCsvPreview(null);
      pickTemplate(null);
      flash(T('cf.created', { name: c.name }));
      location.hash = '#/campaigns/' + encodeURIComponent(c.id);
    } catch (e) {
      showError($('cf-error'), e);
    } finally {
      button.disabled = false;
    }
  });

  // ---------- the campaign form's preview (POST /v1/campaigns:preview) ----------

  // The preview on show: the server's answer, the body it was asked for, the synced
  // template then picked, and whether the form changed since. Drawn again in another
  // language.
  let lastPreview = null;

  // An app's quiet hours as "22:00–08:00 (Asia/Shanghai)".
  const quietText = (q) => T('hy.quiet_window', { start: q.start, end: q.end, zone: q.timezone });

  function showQuietNote() {
    const a = appOf($('cf-appid').value);
    const q = a && a.quiet_hours;
    $('cf-quiet-note').replaceChildren(q ? tn('cf.quiet_note', { window: quietText(q) }) : tn('cf.quiet_none'));
  }

  // Whether the first run was moved to the end of the app's quiet hours: it starts exactly
  // when they end (the API gives no other sign of it).
  function movedByQuietHours(firstRunAt, body) {
    const q = (appOf(body.appid) || {}).quiet_hours;
    if (!q || body.ignore_quiet_hours || !firstRunAt) return false;
    const local = localParts(new Date(firstRunAt), q.timezone);
    return `${local.hour}:${local.minute}:${local.second}` === `${q.end}:00`;
  }

  function sampleCard(sample, body, tpl) {
    const label = (key) => {
      const k = tpl && tpl.keywords.find((x) => x.key === key);
      return (k && k.label) || key;
    };
    // The keywords in the order of the form (the template's), not the answer's.
    const rendered = sample.data || {};
    const keys = [...new Set([...Object.keys(body.data || {}), ...Object.keys(rendered)])]
      .filter((key) => key in rendered);
    return el('article', { class: 'wx-card', 'data-testid': 'pv-sample', 'data-openid': sample.openid },
      el('header', { class: 'wx-card-app' }, el('span', { class: 'wx-card-icon', 'aria-hidden': 'true' }),
        data(body.appid, 'span')),
      el('p', { class: 'sample-for' }, T('pv.sample_for', { openid: sample.openid })),
      el('h3', { translate: 'no' }, tpl ? tpl.title : body.template_id),
      el('dl', { class: 'wx-card-rows' }, keys.map((key) => {
        const entry = rendered[key];
        return el('div', { 'data-testid': 'pv-sample-row', 'data-key': key },
          el('dt', { translate: 'no' }, label(key)),
          el('dd', { translate: 'no', 'data-testid': 'pv-sample-value' },
            entry && typeof entry.value === 'string' ? entry.value : JSON.stringify(entry)));
      })),
      el('footer', { class: 'wx-card-foot' }, el('span', null, T('preview.open')), el('span', { 'aria-hidden': 'true' }, '›')));
  }

  function renderPreview() {
    const { answer: p, body, tpl, stale } = lastPreview;
    const zone = zoneOf(body.appid);
    $('pv').hidden = false;
    $('pv-stale').hidden = !stale;
    $('pv-first-run').replaceChildren(p.first_run_at
      ? tn(movedByQuietHours(p.first_run_at, body) ? 'pv.first_run_quiet' : 'pv.first_run',
        { time: timeNode(p.first_run_at, zone), zone })
      : tn('pv.never'));
    const willSend = Math.max(0, p.reachable - p.capped);
    const numbers = { audience: p.audience, reachable: p.reachable, no_credit: p.no_credit, capped: p.capped };
    for (const [k, n] of Object.entries(numbers)) $('pv-' + k).replaceChildren(intl('span', fmtNum(n)));
    $('pv-will-send').replaceChildren(intl('span', fmtNum(willSend)));
    const width = (n) => (p.audience ? (100 * n) / p.audience : 0).toFixed(2) + '%';
    const bar = $('pv-bar');
    bar.querySelector('.seg.sent').style.width = width(willSend);
    bar.querySelector('.seg.capped').style.width = width(p.capped);
    bar.querySelector('.seg.no_formid').style.width = width(p.no_credit);
    $('pv-samples').replaceChildren(...p.samples.map((sm) => sampleCard(sm, body, tpl)));
    $('pv-no-samples').hidden = p.samples.length > 0;
    $('pv-problems-body').replaceChildren(...p.problems.map((pr) => el('tr', { 'data-testid': 'pv-problem', 'data-openid': pr.openid },
      cell(pr.openid, { class: 'mono', 'data-testid': 'pv-problem-openid' }),
      el('td', { class: 'wrap' }, T('pv.problem', { what: errcodeName(pr.error) || pr.error, message: pr.message })))));
    $('pv-problems-wrap').hidden = p.problems.length === 0;
    $('pv-no-problems').hidden = p.problems.length > 0;
  }

  // Any change to the form after a preview: the preview no longer says what it would do.
  function previewStale() {
    if (!lastPreview || lastPreview.stale) return;
    lastPreview.stale = true;
    $('pv-stale').hidden = false;
  }
  form.addEventListener('input', previewStale);
  form.addEventListener('change', previewStale);

  $('cf-preview-run').addEventListener('click', async () => {
    showError($('cf-error'), null);
    let body;
    try {
      body = buildCampaign();
    } catch (e) {
      showError($('cf-error'), e);
      return;
    }
    const gen = view.gen;
    const button = $('cf-preview-run');
    button.disabled = true;
    $('pv-busy').replaceChildren(tn('pv.busy'));
    const tpl = body.kind === 'subscribe' && picked ? picked : null;
    try {
      const answer = await api('POST', '/v1/campaigns:preview', body);
      if (gen !== view.gen) return;
      lastPreview = { answer, body, tpl, stale: false };
      renderPreview();
    } catch (e) {
      if (gen !== view.gen) return;
      previewStale();
      showError($('cf-error'), e);
    } finally {
      button.disabled = false;
      $('pv-busy').replaceChildren();
    }
  });

  // ---------- charts ----------

  const SERIES = ['sent', 'failed', 'no_formid', 'no_quota', 'capped'];
  const CHARTS = ['chart-expiring', 'chart-ingestion', 'chart-timeline', 'chart-outcomes'];

  function chartFormat() {
    return { fmt: fmtNum, compact: fmtCompact, pct: fmtPct };
  }

  // A local date ("2026-12-01", as the API gives days) in the language, with its weekday.
  function fmtDay(date, opts) {
    const [y, m, d] = date.split('-').map(Number);
    return dateFormat('UTC', opts).format(new Date(Date.UTC(y, m - 1, d, 12)));
  }

  function drawExpiring(answer) {
    const days = answer.days || [];
    const f = chartFormat();
    Charts.bars($('chart-expiring'), {
      ...f,
      testid: 'expiring-svg',
      ariaLabel: t('chart.expiring_aria', { zone: answer.timezone }),
      emptyText: t('chart.empty'),
      series: [{ key: 'formids', label: t('chart.series_formids'), cls: 'credits' }],
      buckets: days.map((d, i) => ({
        label: i === 0 ? t('chart.today') : { text: fmtDay(d.date, { month: 'numeric', day: 'numeric' }), intl: true },
        title: t('chart.expiring_bar', {
          day: i === 0 ? T('chart.today') : fmtDay(d.date, { weekday: 'short', month: 'short', day: 'numeric' }),
          n: d.formids,
        }),
        values: { formids: d.formids },
        highlight: i === 0,
      })),
    });
    const total = days.reduce((s, d) => s + d.formids, 0);
    $('chart-expiring-note').replaceChildren(tn('chart.expiring_note', {
      n: total, today: days.length ? days[0].formids : 0, grants: answer.grants,
      zone: answer.timezone, offset: intl('bdi', offsetName(answer.timezone)),
    }));
  }

  function drawIngestion(answer) {
    const zone = answer.timezone;
    const hours = answer.hours || [];
    const hourOf = (iso) => Number(dateFormat(zone, { hour: 'numeric', hourCycle: 'h23' })
      .formatToParts(new Date(iso)).find((p) => p.type === 'hour').value);
    const f = chartFormat();
    Charts.bars($('chart-ingestion'), {
      ...f,
      testid: 'ingestion-svg',
      ariaLabel: t('chart.ingestion_aria', { zone }),
      emptyText: t('chart.empty'),
      series: [{ key: 'formids', label: t('chart.series_formids'), cls: 'credits' }],
      buckets: hours.map((h) => {
        const hour = hourOf(h.start);
        // Midnight shows the date; every third hour its time.
        let label = null;
        if (hour === 0) label = { text: dateFormat(zone, { month: 'numeric', day: 'numeric' }).format(new Date(h.start)), intl: true };
        else if (hour % 3 === 0) label = { text: dateFormat(zone, { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(new Date(h.start)), intl: true };
        return {
          label,
          title: t('chart.ingestion_bar', { from: fmtTime(h.start, zone), n: h.formids }),
          values: { formids: h.formids },
        };
      }),
    });
    $('chart-ingestion-note').replaceChildren(tn('chart.ingestion_note', {
      n: answer.total, hours: hours.length, zone, offset: intl('bdi', offsetName(zone)),
    }));
  }

  // Nominal bucket width as "10 seconds", "1 day" in the language.
  function fmtWidth(secs) {
    const units = [[604800, 'week'], [86400, 'day'], [3600, 'hour'], [60, 'minute'], [1, 'second']];
    const [size, unit] = units.find(([s]) => secs % s === 0);
    return format('unit-' + unit, '', () => new Intl.NumberFormat(locale(), {
      style: 'unit', unit, unitDisplay: 'long',
    })).format(secs / size);
  }

  function drawTimeline(answer, kind) {
    const zone = answer.timezone;
    const width = answer.bucket_secs || 0;
    const f = chartFormat();
    const labelOpts = width >= 86400 ? { month: 'numeric', day: 'numeric' }
      : width >= 60 ? { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }
        : { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' };
    const shown = SERIES.filter((k) => k in (answer.outcomes || {}));
    const series = shown.map((k) => ({ key: k, label: t('status.' + k), cls: k }));
    Charts.bars($('chart-timeline'), {
      ...f,
      testid: 'timeline-svg',
      legend: true,
      emptyWhenZero: true,
      ariaLabel: t('chart.timeline_aria', { zone }),
      emptyText: t('chart.timeline_empty'),
      series,
      buckets: (answer.buckets || []).map((b) => ({
        label: { text: dateFormat(zone, labelOpts).format(new Date(b.start)), intl: true },
        title: t('chart.timeline_bar', {
          from: fmtTime(b.start, zone),
          counts: shown.filter((k) => b[k]).map((k) => t('chart.count_of', { what: T('status.' + k), n: b[k] }))
            .join(t('common.list_sep')) || t('chart.nothing'),
        }),
        values: b,
      })),
    });
    $('chart-timeline-note').replaceChildren(width
      ? tn('chart.timeline_note', { width: intl('bdi', fmtWidth(width)), zone, offset: intl('bdi', offsetName(zone)) })
      : tn('chart.timeline_no_run'));
    drawOutcomes(answer, kind);
  }

  // Sent, no credit, failed by errcode, capped: one bar each.
  function drawOutcomes(answer, kind) {
    const o = answer.outcomes || {};
    const rows = [{ key: 'sent', label: t('status.sent'), value: o.sent || 0, cls: 'sent' }];
    const noCredit = kind === 'subscribe' ? 'no_quota' : 'no_formid';
    for (const k of [noCredit, noCredit === 'no_quota' ? 'no_formid' : 'no_quota']) {
      if (k === noCredit || o[k]) rows.push({ key: k, label: t('chart.no_credit', { what: T('status.' + k) }), value: o[k] || 0, cls: k });
    }
    for (const e of answer.failed_by_errcode || []) {
      const code = e.errcode === null || e.errcode === undefined ? '—' : String(e.errcode);
      const name = errcodeName(e.errcode);
      rows.push({
        key: 'failed:' + code,
        label: name ? t('chart.failed_code_named', { code, name }) : t('chart.failed_code', { code }),
        value: e.count, cls: 'failed',
      });
    }
    if (answer.failed_other) rows.push({ key: 'failed:other', label: t('chart.failed_other'), value: answer.failed_other, cls: 'failed' });
    // The frequency cap's outcome, when the server reports it.
    if ('capped' in o) rows.push({ key: 'capped', label: t('status.capped'), value: o.capped || 0, cls: 'capped' });
    Charts.breakdown($('chart-outcomes'), {
      ...chartFormat(),
      testid: 'outcomes-svg',
      ariaLabel: t('chart.outcomes_aria'),
      emptyText: t('chart.outcomes_empty'),
      rows,
    });
  }

  // ---------- one campaign ----------

  const deliveries = { id: null, next: null, pages: 0 };
  let current = null; // the campaign on screen
  const timeline = { at: 0, busy: false, status: null };

  async function showCampaign(id) {
    const gen = show('campaign');
    current = null;
    for (const k of ['cv-name', 'cv-id', 'cv-app', 'cv-kind', 'cv-template', 'cv-status',
      'cv-schedule', 'cv-next-run', 'cv-created', 'cv-pause-reason', 'cv-quiet', 'cv-live', 'cv-zone',
      'chart-timeline-note']) $(k).replaceChildren();
    Charts.clear($('chart-timeline'));
    Charts.clear($('chart-outcomes'));
    for (const k of TOTALS) $('cv-' + k).textContent = '0';
    setProgress($('cv-progress'), {});
    for (const k of ['cv-error', 'cv-last-error', 'chart-timeline-error']) showError($(k), null);
    $('runs-body').replaceChildren();
    $('deliveries-body').replaceChildren();
    $('deliveries-more').hidden = true;
    deliveries.id = id;
    if (testSend.id !== id) {
      testSend.id = id;
      testSend.results = null;
      $('ts-openids').value = '';
    }
    showError($('ts-error'), null);
    $('ts-busy').replaceChildren();
    renderTestResults();
    $('cv-held').hidden = true;
    timeline.at = 0;
    timeline.status = null;
    try {
      await ensureApps();
    } catch (_) { /* the campaign's own answer shows the error */ }
    if (gen !== view.gen) return;
    await tick(gen, id, true);
  }

  function renderCampaign(c) {
    current = c;
    view.zone = zoneOf(c.appid);
    zoneNote($('cv-zone'), view.zone);
    $('cv-name').textContent = c.name;
    $('cv-id').textContent = c.id;
    $('cv-app').textContent = c.appid;
    $('cv-kind').replaceChildren(el('span', null, word('kind.', c.kind)));
    $('cv-template').replaceChildren(tn('cv.template', { id: c.template_id }));
    const status = $('cv-status');
    status.replaceChildren(el('span', null, word('status.', c.status)));
    status.className = 'badge ' + c.status;
    status.dataset.status = c.status;
    const tot = c.totals || {};
    for (const k of TOTALS) $('cv-' + k).replaceChildren(intl('span', fmtNum(tot[k] ?? 0)));
    setProgress($('cv-progress'), tot);
    $('cv-schedule').replaceChildren(el('span', null, scheduleText(c)));
    $('cv-next-run').replaceChildren(timeNode(c.next_run_at));
    $('cv-created').replaceChildren(timeNode(c.created_at));
    $('cv-pause-reason').replaceChildren(c.status !== 'paused' ? '—'
      : el('span', null, c.pause_reason ? word('pause.', c.pause_reason) : '—',
        c.resume_at ? tn('cv.resumes', { time: timeNode(c.resume_at) }) : null));
    showError($('cv-last-error'), c.last_error ? T('cv.last_error', { error: wechatError(c.last_error) }) : null);
    const quiet = (appOf(c.appid) || {}).quiet_hours;
    $('cv-quiet').replaceChildren(el('span', null, c.ignore_quiet_hours ? T('cv.quiet_ignored')
      : quiet ? T('cv.quiet_kept', { window: quietText(quiet) }) : T('cv.quiet_none')));
    // A run holding its deliveries, or a cron firing waiting, for the app's quiet hours.
    $('cv-held').hidden = !c.held_until;
    $('cv-held').replaceChildren(c.held_until ? tn('cv.held', { time: timeNode(c.held_until) }) : '');
    document.title = t('title.view', { view: c.name });
  }

  function renderRuns(items) {
    $('runs-empty').hidden = items.length > 0;
    $('runs-body').replaceChildren(...items.map((r) => {
      const tot = r.totals || {};
      return el('tr', { 'data-testid': 'run-row', 'data-id': r.id },
        el('td', null, timeNode(r.scheduled_for)),
        el('td', null, badge(r.status, 'run-status'), r.held_until
          ? el('div', { class: 'muted small', 'data-testid': 'run-held' }, T('run.held', { time: timeNode(r.held_until) }))
          : null),
        TOTALS.map((k) => numCell(tot[k] ?? 0)),
        el('td', null, timeNode(r.finished_at)));
    }));
  }

  function deliveryRow(d) {
    return el('tr', { 'data-testid': 'delivery-row', 'data-openid': d.openid, 'data-status': d.status },
      cell(d.openid, { class: 'mono', 'data-testid': 'delivery-openid' }),
      el('td', null, badge(d.status, 'delivery-status')),
      cell(d.form_id || '—', { class: 'mono' }),
      cell(d.errcode === null || d.errcode === undefined ? '—' : String(d.errcode), { class: 'num' }),
      cell(d.errmsg || '—'),
      numCell(d.attempts ?? 0),
      el('td', null, timeNode(d.updated_at)));
  }

  async function loadDeliveries(gen, id, more) {
    showError($('deliveries-error'), null);
    const q = new URLSearchParams({ limit: '50' });
    const status = $('deliveries-status').value;
    if (status) q.set('status', status);
    if (more && deliveries.next) q.set('after', deliveries.next);
    let r;
    try {
      r = await api('GET', `/v1/campaigns/${encodeURIComponent(id)}/deliveries?${q}`);
    } catch (e) {
      if (gen === view.gen) showError($('deliveries-error'), e);
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

  // The timeline: on first sight, then at most every TIMELINE_EVERY_MS while the campaign
  // sends, and once more when it stops.
  async function loadTimeline(gen, c, force) {
    const settled = timeline.status !== null && !ACTIVE.includes(timeline.status) && !ACTIVE.includes(c.status);
    const due = force || (!settled && (Date.now() - timeline.at >= TIMELINE_EVERY_MS ||
      (ACTIVE.includes(timeline.status) && !ACTIVE.includes(c.status))));
    if (!due || timeline.busy) return;
    timeline.busy = true;
    timeline.at = Date.now();
    timeline.status = c.status;
    try {
      const q = new URLSearchParams({ timezone: view.zone });
      const answer = await api('GET', `/v1/campaigns/${encodeURIComponent(c.id)}/timeline?${q}`);
      if (gen !== view.gen) return;
      showError($('chart-timeline-error'), null);
      drawTimeline(answer, c.kind);
    } catch (e) {
      if (gen === view.gen) showError($('chart-timeline-error'), e);
    } finally {
      timeline.busy = false;
    }
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
      showError($('cv-error'), e);
      if (e.status === 404 || e.status === 401) return;
      view.timer = setTimeout(() => tick(gen, id, first), 2000);
      return;
    }
    if (gen !== view.gen) return;
    renderCampaign(c);
    renderRuns(runs.items || []);
    const changed = !before || before.status !== c.status ||
      JSON.stringify(before.totals) !== JSON.stringify(c.totals);
    await Promise.all([
      first || (changed && deliveries.pages <= 1) ? loadDeliveries(gen, id, false) : null,
      loadTimeline(gen, c, first),
    ]);
    if (gen !== view.gen) return;
    if (ACTIVE.includes(c.status)) {
      $('cv-live').replaceChildren(tn('cv.live', {
        time: intl('span', dateFormat(view.zone, { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }).format(new Date())),
      }));
      view.timer = setTimeout(() => tick(gen, id, false), 1000);
    } else {
      $('cv-live').replaceChildren(FINAL.includes(c.status) ? tn('cv.finished') : '');
    }
  }

  async function transition(action) {
    if (!current) return;
    if (action === 'cancel' && !window.confirm(t('cv.confirm_cancel', { name: current.name }))) return;
    const gen = view.gen;
    const id = current.id;
    showError($('cv-error'), null);
    const buttons = ['cv-pause', 'cv-resume', 'cv-cancel'].map($);
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const c = await api('POST', `/v1/campaigns/${encodeURIComponent(id)}/${action}`);
      if (gen !== view.gen) return;
      flash(T('cv.done_' + action));
      renderCampaign(c);
      // Restart the live refresh; an older refresh still in flight sees the new gen and stops.
      clearTimeout(view.timer);
      const next = ++view.gen;
      await tick(next, id, false);
    } catch (e) {
      if (gen === view.gen) showError($('cv-error'), e);
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

  // ---------- a campaign's test send (POST /v1/campaigns/{id}/test) ----------

  // The last test send's results, kept while its campaign is on screen (and drawn again in
  // another language).
  const testSend = { id: null, results: null };

  function errcodeCell(code) {
    if (code === null || code === undefined) return cell('—', { 'data-testid': 'ts-errcode' });
    const name = errcodeName(code);
    return el('td', { 'data-testid': 'ts-errcode' }, data(String(code)),
      name ? [' ', el('span', { class: 'muted' }, T('ts.errcode_name', { name }))] : null);
  }

  function renderTestResults() {
    const results = testSend.results;
    $('ts-results-wrap').hidden = !results;
    $('ts-summary').hidden = !results;
    if (!results) {
      $('ts-body').replaceChildren();
      $('ts-summary').replaceChildren();
      return;
    }
    const sent = results.filter((r) => r.status === 'sent').length;
    $('ts-summary').replaceChildren(tn('ts.summary', { sent, n: results.length }));
    $('ts-body').replaceChildren(...results.map((r) => el('tr', {
      'data-testid': 'ts-row', 'data-openid': r.openid, 'data-status': r.status,
    },
    cell(r.openid, { class: 'mono', 'data-testid': 'ts-openid' }),
    el('td', null, badge(r.status, 'ts-status')),
    errcodeCell(r.errcode),
    cell(r.errmsg || '—', { class: 'wrap', 'data-testid': 'ts-errmsg' }))));
  }

  $('ts-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!current) return;
    const id = current.id;
    showError($('ts-error'), null);
    const openids = $('ts-openids').value.split(/[\s,，、]+/).filter(Boolean);
    if (!openids.length) {
      showError($('ts-error'), T('ts.no_openids', { max: MAX_TEST_USERS }));
      return;
    }
    if (openids.length > MAX_TEST_USERS) {
      showError($('ts-error'), T('ts.too_many', { max: MAX_TEST_USERS, n: openids.length }));
      return;
    }
    const button = $('ts-form').querySelector('button[type="submit"]');
    button.disabled = true;
    $('ts-busy').replaceChildren(tn('ts.sending'));
    const here = () => current && current.id === id && !$('view-campaign').hidden;
    try {
      const r = await api('POST', `/v1/campaigns/${encodeURIComponent(id)}/test`, { openids });
      testSend.id = id;
      testSend.results = r.results || [];
      if (here()) renderTestResults();
    } catch (e) {
      if (here()) showError($('ts-error'), e);
    } finally {
      button.disabled = false;
      $('ts-busy').replaceChildren();
    }
  });

  // ---------- one app: pool charts, API keys and triggered messages ----------

  const appView = { appid: null, next: null };
  const appPath = () => '/v1/apps/' + encodeURIComponent(appView.appid);

  async function showApp(appid) {
    const gen = show('app');
    appView.appid = appid;
    appView.next = null;
    $('av-appid').textContent = appid;
    $('av-meta').replaceChildren();
    for (const id of ['av-error', 'keys-error', 'messages-error', 'chart-expiring-error', 'chart-ingestion-error',
      'hy-error']) {
      showError($(id), null);
    }
    for (const id of ['keys-body', 'messages-body', 'chart-expiring-note', 'chart-ingestion-note',
      'hy-cap-now', 'hy-quiet-now']) {
      $(id).replaceChildren();
    }
    Charts.clear($('chart-expiring'));
    Charts.clear($('chart-ingestion'));
    $('messages-more').hidden = true;
    document.title = t('title.view', { view: appid });
    try {
      await ensureApps();
    } catch (_) { /* the app's own answer shows the error */ }
    if (gen !== view.gen) return;
    view.zone = zoneOf(appid);
    zoneNote($('av-zone'), view.zone);
    await Promise.all([loadAppMeta(gen), loadExpiring(gen), loadIngestion(gen), loadKeys(gen),
      loadMessages(gen, false)]);
  }

  async function loadAppMeta(gen) {
    let a;
    try {
      a = await api('GET', appPath());
    } catch (e) {
      if (gen === view.gen) showError($('av-error'), e);
      return;
    }
    if (gen !== view.gen) return;
    remember(a);
    $('av-meta').replaceChildren(tn(a.webhook_url ? 'av.meta_webhook' : 'av.meta_no_webhook', {
      rate: a.send_rate_per_sec, url: a.webhook_url || '', field: data('webhook_url', 'code'),
      put: data('PUT /v1/apps/{appid}', 'code'),
    }));
    renderHygiene(a);
  }

  // An app as the API just gave it replaces the one in the app list.
  function remember(a) {
    const i = apps.findIndex((x) => x.appid === a.appid);
    const { webhook_secret: _, ...shown } = a;
    if (i >= 0) apps[i] = shown;
    else apps.push(shown);
  }

  // ---------- an app's frequency cap and quiet hours ----------

  const UNITS = [86400, 3600, 60, 1];

  function renderHygiene(a) {
    const cap = a.frequency_cap;
    const quiet = a.quiet_hours;
    $('hy-cap-now').replaceChildren(cap
      ? tn('hy.cap_now', { n: cap.max, window: intl('bdi', fmtWidth(cap.per_secs)) })
      : tn('hy.cap_none'));
    $('hy-quiet-now').replaceChildren(quiet ? tn('hy.quiet_now', { window: quietText(quiet) }) : tn('hy.quiet_none'));
    // The form starts from what is stored; a window shows in the largest unit that divides it.
    const secs = cap ? cap.per_secs : 86400;
    const unit = UNITS.find((u) => secs % u === 0);
    $('hy-cap-on').checked = Boolean(cap);
    $('hy-cap-max').value = cap ? String(cap.max) : '';
    $('hy-cap-per').value = String(secs / unit);
    $('hy-cap-unit').value = String(unit);
    $('hy-quiet-on').checked = Boolean(quiet);
    $('hy-quiet-start').value = quiet ? quiet.start : '';
    $('hy-quiet-end').value = quiet ? quiet.end : '';
    $('hy-quiet-zone').value = quiet ? quiet.timezone : view.zone;
    syncHygiene();
  }

  // A part switched off has its fields greyed out (the box in its legend stays usable).
  function syncHygiene() {
    $('hy-cap-on').closest('fieldset').disabled = !$('hy-cap-on').checked;
    $('hy-quiet-on').closest('fieldset').disabled = !$('hy-quiet-on').checked;
  }

  let zonesListed = false;
  function listZones() {
    if (zonesListed) return;
    zonesListed = true;
    let zones = [];
    try {
      zones = Intl.supportedValuesOf('timeZone');
    } catch (_) { /* an older browser: the field takes any name, the server checks it */ }
    $('hy-zones').replaceChildren(...zones.map((z) => el('option', { value: z })));
  }

  const wholeNumber = (v) => (/^\s*[0-9]+\s*$/.test(v) ? Number(v) : null);

  // "9:00" → "09:00" (the API takes HH:MM); anything else goes to the server as typed.
  function clockValue(v) {
    const text = v.trim().replace('：', ':');
    return /^[0-9]:[0-9]{2}$/.test(text) ? '0' + text : text;
  }

  // The PUT body: both settings, null for a part switched off (which removes it).
  function buildHygiene() {
    const body = { frequency_cap: null, quiet_hours: null };
    if ($('hy-cap-on').checked) {
      const max = wholeNumber($('hy-cap-max').value);
      const per = wholeNumber($('hy-cap-per').value);
      if (max === null || per === null) throw new UiError('hy.cap_numbers');
      body.frequency_cap = { max, per_secs: per * Number($('hy-cap-unit').value) };
    }
    if ($('hy-quiet-on').checked) {
      const start = clockValue($('hy-quiet-start').value);
      const end = clockValue($('hy-quiet-end').value);
      const timezone = $('hy-quiet-zone').value.trim();
      if (!start || !end || !timezone) throw new UiError('hy.quiet_fields');
      body.quiet_hours = { start, end, timezone };
    }
    return body;
  }

  $('hy-cap-on').addEventListener('change', () => {
    if ($('hy-cap-on').checked && !$('hy-cap-max').value) $('hy-cap-max').value = '1';
    syncHygiene();
  });
  $('hy-quiet-on').addEventListener('change', () => {
    if ($('hy-quiet-on').checked) listZones();
    syncHygiene();
  });
  $('hy-quiet-zone').addEventListener('focus', listZones);

  $('hy-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError($('hy-error'), null);
    let body;
    try {
      body = buildHygiene();
    } catch (e) {
      showError($('hy-error'), e);
      return;
    }
    const gen = view.gen;
    const appid = appView.appid;
    const button = $('hy-form').querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      // No secret: an update keeps the stored one.
      remember(await api('PUT', appPath(), body));
      flash(T('hy.saved', { appid }));
      // The app's zone may have changed with its quiet hours: every time on the page follows.
      if (gen === view.gen) await showApp(appid);
    } catch (e) {
      if (gen === view.gen) showError($('hy-error'), e);
    } finally {
      button.disabled = false;
    }
  });

  async function loadExpiring(gen) {
    try {
      const q = new URLSearchParams({ days: '8', timezone: view.zone });
      const answer = await api('GET', `${appPath()}/stats/expiring?${q}`);
      if (gen === view.gen) drawExpiring(answer);
    } catch (e) {
      if (gen === view.gen) showError($('chart-expiring-error'), e);
    }
  }

  async function loadIngestion(gen) {
    showError($('chart-ingestion-error'), null);
    try {
      const q = new URLSearchParams({ hours: $('ingestion-hours').value, timezone: view.zone });
      const answer = await api('GET', `${appPath()}/stats/ingestion?${q}`);
      if (gen === view.gen) drawIngestion(answer);
    } catch (e) {
      if (gen === view.gen) showError($('chart-ingestion-error'), e);
    }
  }

  $('ingestion-hours').addEventListener('change', () => loadIngestion(view.gen));

  async function loadKeys(gen) {
    showError($('keys-error'), null);
    let r;
    try {
      r = await api('GET', appPath() + '/keys');
    } catch (e) {
      if (gen === view.gen) showError($('keys-error'), e);
      return;
    }
    if (gen !== view.gen) return;
    const items = r.items || [];
    $('keys-empty').hidden = items.length > 0;
    $('keys-body').replaceChildren(...items.map((k) => el('tr', { 'data-testid': 'key-row', 'data-id': k.id },
      cell(k.name, { 'data-testid': 'key-name' }),
      el('td', null, (k.scopes || []).flatMap((s, i) => [i ? t('common.list_sep') : null, el('span', null, word('scope.', s))])),
      cell(k.prefix + '…', { class: 'mono', 'data-testid': 'key-prefix' }),
      el('td', null, timeNode(k.created_at)),
      el('td', null, timeNode(k.last_used_at)),
      el('td', null, el('button', {
        type: 'button', class: 'danger', 'data-testid': 'key-revoke', onclick: () => revokeKey(k),
      }, T('keys.revoke'))))));
  }

  async function revokeKey(k) {
    if (!window.confirm(t('keys.confirm_revoke', { name: k.name, prefix: k.prefix + '…' }))) return;
    const gen = view.gen;
    try {
      await api('DELETE', `${appPath()}/keys/${encodeURIComponent(k.id)}`);
      flash(T('keys.revoked', { name: k.name }));
    } catch (e) {
      if (gen === view.gen) showError($('keys-error'), e);
      return;
    }
    await loadKeys(gen);
  }

  $('key-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError($('keys-error'), null);
    const name = $('kf-name').value.trim();
    const scopes = [...$('key-form').querySelectorAll('input[name="scope"]:checked')].map((c) => c.value);
    if (!name) {
      showError($('keys-error'), T('keys.no_name'));
      return;
    }
    if (!scopes.length) {
      showError($('keys-error'), T('keys.no_scope'));
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
      if (gen === view.gen) showError($('keys-error'), e);
    } finally {
      button.disabled = false;
    }
  });

  // The key lives in the dialog's field only while the dialog is open.
  function openKeyDialog(key) {
    $('kd-key').value = key;
    $('kd-copied').replaceChildren();
    $('key-dialog').showModal();
    $('kd-key').select();
  }

  function closeKeyDialog() {
    $('kd-key').value = '';
    $('kd-copied').replaceChildren();
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
    $('kd-copied').replaceChildren(tn('kd.copied'));
  });
  $('kd-done').addEventListener('click', closeKeyDialog);
  // Escape closes the dialog too: forget the key then as well.
  $('key-dialog').addEventListener('close', () => { $('kd-key').value = ''; });

  function messageRow(m) {
    return el('tr', { 'data-testid': 'message-row', 'data-id': m.id, 'data-status': m.status },
      el('td', null, timeNode(m.created_at)),
      cell(m.openid, { class: 'mono', 'data-testid': 'message-openid' }),
      el('td', null, word('kind.', m.kind)),
      cell(m.template_id, { class: 'mono' }),
      el('td', null, badge(m.status, 'message-status')),
      el('td', null, timeNode(m.send_at)),
      cell(m.errcode === null || m.errcode === undefined ? '—' : String(m.errcode), { class: 'num' }),
      cell(m.errmsg || '—'));
  }

  async function loadMessages(gen, more) {
    showError($('messages-error'), null);
    const q = new URLSearchParams({ limit: '50' });
    const status = $('messages-status').value;
    if (status) q.set('status', status);
    if (more && appView.next) q.set('after', appView.next);
    let r;
    try {
      r = await api('GET', `${appPath()}/messages?${q}`);
    } catch (e) {
      if (gen === view.gen) showError($('messages-error'), e);
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
  applyStatic();
  syncForm();
  route();
})();
