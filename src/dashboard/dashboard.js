// zenrelay operator dashboard. Plain DOM code, no library: it reads the admin API with the
// key kept in sessionStorage and redraws every few seconds. Nothing here builds markup from
// strings, so account names and dead-letter bodies are always shown as text.
'use strict';

(function () {
  const KEY_STORE = 'zenrelay.adminKey';
  const REFRESH_MS = 5000;
  const PAGE_SIZE = 50;
  const SVG = 'http://www.w3.org/2000/svg';

  const view = { offset: 0, sort: 'attention', q: '', selected: null, checked: new Set() };
  let timer = null;
  let busy = false;

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else if (k in node && typeof v !== 'string') node[k] = v;
      else node.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  // ---- the key ----

  // `#key=...` signs in; `#account=...` (alone or after the key) opens that account.
  function takeKeyFromFragment() {
    const account = /(?:^#|&)account=([^&]*)/.exec(location.hash);
    if (account && account[1]) view.selected = decodeURIComponent(account[1]);
    const m = /(?:^#|&)key=([^&]*)/.exec(location.hash);
    if (!m) return;
    const key = decodeURIComponent(m[1]);
    if (key) sessionStorage.setItem(KEY_STORE, key);
    // The key must not stay in the address bar, the history or a bookmark.
    history.replaceState(null, '', location.pathname + location.search);
  }

  const key = () => sessionStorage.getItem(KEY_STORE);

  function showLogin(message) {
    clearTimeout(timer);
    $('app').hidden = true;
    $('forget').hidden = true;
    $('health').hidden = true;
    $('updated').textContent = '';
    $('banner').hidden = true;
    $('login').hidden = false;
    $('login-error').hidden = !message;
    $('login-error').textContent = message || '';
    $('key').focus();
  }

  function showApp() {
    $('login').hidden = true;
    $('app').hidden = false;
    $('forget').hidden = false;
  }

  // ---- the API ----

  class AuthError extends Error {}
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(method, path, body) {
    const headers = { Authorization: 'Bearer ' + key() };
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    if (resp.status === 401 || resp.status === 403) {
      let message = 'this key was refused';
      try { message = (await resp.json()).message || message; } catch (_) { /* not JSON */ }
      throw new AuthError(message);
    }
    if (!resp.ok) {
      let message = resp.status + ' ' + resp.statusText;
      try { const j = await resp.json(); message = j.message || j.code || message; } catch (_) { /* not JSON */ }
      throw new ApiError(resp.status, message);
    }
    return resp.json();
  }

  // ---- formatting ----

  const nf = new Intl.NumberFormat('en-US');
  const num = (n) => (n === null || n === undefined ? '–' : nf.format(n));

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return '–';
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + String(s % 60).padStart(2, '0') + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + String(Math.floor((s % 3600) / 60)).padStart(2, '0') + 'm';
    return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
  }

  const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
  function stamp(iso) {
    const d = new Date(iso);
    const today = d.toDateString() === new Date().toDateString();
    return today ? d.toLocaleTimeString([], { hour12: false }) : d.toLocaleString([], { hour12: false });
  }

  function ageClass(seconds) {
    if (seconds === null || seconds === undefined) return '';
    if (seconds >= 300) return 'bad';
    if (seconds >= 60) return 'warn';
    return '';
  }

  const STATE_TEXT = {
    auth_failed: 'auth failed',
    paused: 'paused',
    rate_limited: '429 pause',
    window_full: 'window full',
    sending: 'sending',
    idle: 'idle',
  };

  function stateText(row, nowMs) {
    if (row.state === 'rate_limited' && row.next_send_at) {
      return '429 until ' + clock(Date.parse(row.next_send_at));
    }
    if (row.state === 'window_full' && row.next_send_at) {
      const wait = (Date.parse(row.next_send_at) - nowMs) / 1000;
      return wait >= 1 ? 'window full · ' + duration(wait) : 'window full';
    }
    return STATE_TEXT[row.state] || row.state;
  }

  function nextSend(row, nowMs) {
    if (row.paused || row.auth_failed) return 'held';
    if (!row.next_send_at) {
      if (row.in_flight > 0) return 'in flight';
      return row.scheduled_retries > 0 ? 'retry scheduled' : '–';
    }
    const wait = (Date.parse(row.next_send_at) - nowMs) / 1000;
    return wait <= 0.5 ? 'now' : 'in ' + duration(wait);
  }

  // ---- the totals ----

  function tile(id, value, note, level) {
    const t = $(id);
    t.querySelector('.value').textContent = value;
    t.querySelector('.note').textContent = note || '';
    t.classList.toggle('warn', level === 'warn');
    t.classList.toggle('bad', level === 'bad');
  }

  function renderTotals(q, hist) {
    const t = q.totals;
    tile('t-depth', num(t.depth), num(t.accounts) + ' accounts', null);
    tile('t-inflight', num(t.in_flight), '', null);
    tile('t-retries', num(t.scheduled_retries), 'scheduled', t.scheduled_retries > 0 ? 'warn' : null);
    tile('t-dead', num(t.dead), t.dead > 0 ? 'replay or purge below' : '', t.dead > 0 ? 'bad' : null);
    const total = (hist && hist.total) || [];
    const last = total.length ? total[total.length - 1].delivered_per_minute : null;
    tile('t-rate', last === null || last === undefined ? '–' : num(Math.round(last)),
      'over the last minute', null);
    tile('t-429', num(t.upstream_429), 'since first seen', null);
    tile('t-oldest', duration(t.oldest_age_seconds), 'waiting or in flight', ageClass(t.oldest_age_seconds) || null);
    const held = t.paused + t.auth_failed;
    tile('t-held', num(held),
      t.auth_failed > 0 ? t.auth_failed + ' auth failed · ' + t.paused + ' paused' : t.paused + ' paused',
      t.auth_failed > 0 ? 'bad' : (held > 0 ? 'warn' : null));
  }

  // ---- the accounts ----

  function windowBar(row) {
    const wrap = el('div', { class: 'bar', title: row.limit ? row.sent_in_window + ' of ' + row.limit + ' per ' + row.window_seconds + ' s' : '' });
    const fill = el('div', { class: 'fill' });
    const share = row.limit ? Math.min(1, row.sent_in_window / row.limit) : 0;
    fill.style.width = (share * 100).toFixed(1) + '%';
    if (share >= 1) fill.classList.add('full');
    else if (share >= 0.8) fill.classList.add('high');
    wrap.append(fill);
    const label = el('span', { class: 'bar-label', text: row.limit ? row.sent_in_window + ' / ' + row.limit : String(row.sent_in_window) });
    return el('div', { class: 'bar-cell' }, wrap, label);
  }

  function renderAccounts(q) {
    const nowMs = Date.parse(q.now);
    const body = $('rows');
    const rows = q.accounts.map((row) => {
      const tr = el('tr', {
        'data-account': row.account,
        class: (row.account === view.selected ? 'selected ' : '') + 'state-' + row.state,
        tabindex: '0',
        onclick: () => select(row.account),
        onkeydown: (e) => { if (e.key === 'Enter') select(row.account); },
      },
      el('td', { class: 'name', text: row.account }),
      el('td', {}, el('span', { class: 'badge ' + row.state, text: stateText(row, nowMs) })),
      el('td', { class: 'num depth', text: num(row.depth) }),
      el('td', { class: 'num ' + ageClass(row.oldest_age_seconds), text: duration(row.oldest_age_seconds) }),
      el('td', {}, windowBar(row)),
      el('td', { class: 'num' + (row.scheduled_retries > 0 ? ' warn' : ''), text: num(row.scheduled_retries) }),
      el('td', { class: 'num dead' + (row.dead > 0 ? ' bad' : ''), text: num(row.dead) }),
      el('td', { class: 'muted', text: nextSend(row, nowMs) }));
      return tr;
    });
    body.replaceChildren(...rows);
    $('empty').hidden = rows.length > 0;
    const first = q.total === 0 ? 0 : q.offset + 1;
    $('range').textContent = num(first) + '–' + num(q.offset + q.accounts.length) + ' of ' + num(q.total);
    $('prev').disabled = q.offset === 0;
    $('next').disabled = q.next_offset === null || q.next_offset === undefined;
  }

  // ---- charts: inline SVG ----

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function drawChart(node, points, field, hist, message) {
    const W = 600, H = 170, L = 44, R = 10, T = 10, B = 22;
    node.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    node.replaceChildren();
    const interval = (hist ? hist.interval_seconds : 10) * 1000;
    const full = interval * (hist ? hist.capacity : 360);
    const values = (points || []).filter((p) => p[field] !== null && p[field] !== undefined);
    const end = values.length ? values[values.length - 1].t : Date.now();
    // Until the ring is full, the time axis covers the samples there are.
    const span = values.length ? Math.min(full, Math.max(end - values[0].t, 10 * interval)) : full;
    const start = end - span;
    const max = niceMax(Math.max(0, ...values.map((p) => p[field])));
    const x = (t) => L + ((t - start) / span) * (W - L - R);
    const y = (v) => T + (1 - v / max) * (H - T - B);
    for (const f of [0, 0.5, 1]) {
      const v = max * f;
      node.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'gridline' }));
      const label = svg('text', { x: L - 6, y: y(v) + 4, class: 'axis', 'text-anchor': 'end' });
      label.textContent = v >= 1000 ? nf.format(Math.round(v)) : String(Math.round(v * 10) / 10);
      node.append(label);
    }
    const ago = (ms) => (ms >= 120000 ? '−' + Math.round(ms / 60000) + ' min' : '−' + Math.round(ms / 1000) + ' s');
    for (const [f, text] of [[0, ago(span)], [0.5, ago(span / 2)], [1, 'now']]) {
      const label = svg('text', { x: L + f * (W - L - R), y: H - 5, class: 'axis', 'text-anchor': f === 0 ? 'start' : (f === 1 ? 'end' : 'middle') });
      label.textContent = text;
      node.append(label);
    }
    if (values.length === 0) {
      const t = svg('text', { x: (L + W - R) / 2, y: H / 2, class: 'axis empty', 'text-anchor': 'middle' });
      t.textContent = message || 'collecting samples…';
      node.append(t);
      return;
    }
    // Break the line where samples are missing (the gateway could not read the queue);
    // points may be a couple of seconds late, as samples share a snapshot with scrapes.
    const gap = Math.max(interval * 3, 10000);
    const runs = [];
    let run = [];
    let prev = null;
    for (const p of values) {
      if (prev && p.t - prev.t > gap) { runs.push(run); run = []; }
      run.push(p);
      prev = p;
    }
    runs.push(run);
    for (const r of runs) {
      const line = r.map((p, i) => (i ? 'L' : 'M') + x(p.t).toFixed(1) + ' ' + y(p[field]).toFixed(1)).join(' ');
      const area = line + ' L' + x(r[r.length - 1].t).toFixed(1) + ' ' + y(0) + ' L' + x(r[0].t).toFixed(1) + ' ' + y(0) + ' Z';
      node.append(svg('path', { d: area, class: 'area' }));
      node.append(svg('path', { d: line, class: 'line' }));
      if (r.length === 1) node.append(svg('circle', { cx: x(r[0].t), cy: y(r[0][field]), r: 2.5, class: 'dot' }));
    }
    const lastValue = values[values.length - 1][field];
    const now = svg('text', { x: W - R, y: T + 12, class: 'current', 'text-anchor': 'end' });
    now.textContent = nf.format(Math.round(lastValue));
    node.append(now);
  }

  function renderCharts(hist) {
    const total = hist.total || [];
    const hidden = hist.total === null ? 'this key does not reach every account' : null;
    drawChart($('c-depth'), total, 'depth', hist, hidden);
    drawChart($('c-rate'), total, 'delivered_per_minute', hist, hidden);
    const acct = hist.account;
    let message = 'select an account';
    if (acct && !acct.tracked) message = 'no recent activity (no history kept)';
    drawChart($('c-acct-depth'), acct ? acct.points : [], 'depth', hist, message);
    drawChart($('c-acct-rate'), acct ? acct.points : [], 'delivered_per_minute', hist, message);
    const minutes = Math.round(hist.interval_seconds * hist.capacity / 60);
    $('history-note').textContent = 'one point every ' + hist.interval_seconds + ' s, last ' + minutes +
      ' min; ' + hist.tracked_accounts + ' accounts with history' +
      (hist.untracked_active_accounts ? ', ' + hist.untracked_active_accounts + ' active accounts over the cap' : '');
  }

  // ---- the selected account ----

  function select(account) {
    if (view.selected !== account) view.checked.clear();
    view.selected = account;
    refresh();
  }

  function renderDetail(row, letters, nowMs) {
    for (const n of document.querySelectorAll('.selected-name')) n.textContent = view.selected || 'no account selected';
    $('detail-none').hidden = !!view.selected;
    $('detail-body').hidden = !view.selected;
    if (!view.selected) return;
    $('detail-name').textContent = view.selected;
    const state = row ? row.state : 'idle';
    $('detail-state').className = 'badge ' + state;
    $('detail-state').textContent = row ? stateText(row, nowMs) : '';
    $('pause').hidden = !!(row && row.paused);
    $('resume').hidden = !(row && (row.paused || row.auth_failed));
    if (row) {
      const facts = [
        num(row.depth) + ' queued',
        num(row.in_flight) + ' in flight',
        num(row.scheduled_retries) + ' retries',
        'oldest ' + duration(row.oldest_age_seconds),
        num(row.delivered) + ' delivered',
        num(row.upstream_429) + ' upstream 429s',
      ];
      if (row.limit) facts.push('limit ' + row.limit + ' per ' + row.window_seconds + ' s');
      $('detail-facts').textContent = facts.join(' · ');
    }
    if (!letters) return;
    $('dead-count').textContent = letters.total > letters.items.length
      ? '(' + num(letters.items.length) + ' of ' + num(letters.total) + ' shown)'
      : '(' + num(letters.total) + ')';
    const ids = new Set(letters.items.map((l) => l.delivery_id));
    for (const id of [...view.checked]) if (!ids.has(id)) view.checked.delete(id);
    const rows = [];
    for (const l of letters.items) {
      const box = el('input', { type: 'checkbox', 'aria-label': 'Select ' + l.delivery_id });
      box.checked = view.checked.has(l.delivery_id);
      box.addEventListener('change', () => {
        if (box.checked) view.checked.add(l.delivery_id); else view.checked.delete(l.delivery_id);
        updateSelection(letters.items.length);
      });
      const replay = el('button', { class: 'small', type: 'button', text: 'Replay', 'data-action': 'replay-one' });
      replay.addEventListener('click', () => confirmThen(
        'Replay dead letter ' + l.delivery_id + ' of ' + view.selected + '?',
        'Replay', () => act('POST', '/dead-letters/replay', { ids: [l.delivery_id] })));
      rows.push(el('tr', { 'data-delivery-id': l.delivery_id },
        el('td', {}, box),
        el('td', { class: 'muted', text: stamp(l.dead_at) }),
        el('td', { class: 'reason', text: l.reason + (l.last_status ? ' · ' + l.last_status : '') }),
        el('td', { class: 'num', text: String(l.attempts) }),
        el('td', { class: 'error-text', title: l.last_error || '' },
          el('div', { class: 'clamp', text: l.last_error || '' })),
        el('td', {}, replay)));
      rows.push(el('tr', { class: 'body-row' }, el('td', {}), el('td', { colspan: '5' },
        el('details', {}, el('summary', { text: 'Notify body · event ' + l.event_id }),
          el('pre', { class: 'body', text: JSON.stringify(l.event, null, 2) })))));
    }
    $('letters').replaceChildren(...rows);
    $('letters-empty').hidden = letters.items.length > 0;
    $('replay-all').disabled = letters.total === 0;
    $('purge-all').disabled = letters.total === 0;
    updateSelection(letters.items.length);
  }

  function updateSelection(shown) {
    $('replay-selected').disabled = view.checked.size === 0;
    $('replay-selected').textContent = view.checked.size ? 'Replay ' + view.checked.size + ' selected' : 'Replay selected';
    $('select-all').checked = shown > 0 && view.checked.size === shown;
  }

  // ---- actions, each confirmed in the page ----

  let pending = null;

  function confirmThen(text, label, action) {
    pending = action;
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = label;
    $('confirm').hidden = false;
    $('confirm-ok').focus();
  }

  function closeConfirm() {
    pending = null;
    $('confirm').hidden = true;
  }

  async function act(method, suffix, body) {
    const account = view.selected;
    try {
      await api(method, '/v1/accounts/' + encodeURIComponent(account) + suffix, body);
      view.checked.clear();
    } catch (e) {
      if (e instanceof AuthError) return showLogin(e.message);
      showBanner('Action failed: ' + e.message, 'bad');
    }
    refresh();
  }

  // ---- refresh ----

  function showBanner(text, level) {
    const b = $('banner');
    b.textContent = text;
    b.className = 'banner ' + (level || 'bad');
    b.hidden = false;
  }

  async function readiness() {
    try {
      const r = await fetch('/readyz', { cache: 'no-store' });
      return r.ok ? 'ready' : 'redis';
    } catch (_) {
      return 'down';
    }
  }

  async function refresh() {
    clearTimeout(timer);
    if (!key()) return showLogin();
    if (busy) { timer = setTimeout(refresh, 500); return; }
    busy = true;
    try {
      const params = new URLSearchParams({ sort: view.sort, offset: String(view.offset), limit: String(PAGE_SIZE) });
      if (view.q) params.set('q', view.q);
      const acct = view.selected ? '?account=' + encodeURIComponent(view.selected) : '';
      const [ready, q, hist, letters] = await Promise.allSettled([
        readiness(),
        api('GET', '/v1/queues?' + params),
        api('GET', '/v1/history' + acct),
        view.selected
          ? api('GET', '/v1/accounts/' + encodeURIComponent(view.selected) + '/dead-letters?limit=100')
          : Promise.resolve(null),
      ]);
      for (const r of [q, hist, letters]) {
        if (r.status === 'rejected' && r.reason instanceof AuthError) {
          sessionStorage.removeItem(KEY_STORE);
          return showLogin('The key was refused: ' + r.reason.message);
        }
      }
      showApp();
      const health = $('health');
      health.hidden = false;
      const unread = q.status === 'fulfilled' ? (q.value.unread_partitions || []) : [];
      if (ready.value === 'down' || (q.status === 'rejected' && !(q.reason instanceof ApiError))) {
        health.className = 'health bad';
        health.textContent = 'gateway unreachable';
        showBanner('The gateway does not answer. The figures below are from ' + $('updated').dataset.at + ' and may be stale.', 'bad');
      } else if (unread.length) {
        // Part of Redis answers (/readyz fails while a Cluster shard is down): say which part.
        health.className = 'health bad';
        health.textContent = 'Redis partly down';
        showBanner('Queue partition' + (unread.length > 1 ? 's ' : ' ') + unread.join(', ') +
          ' cannot be read (a Redis shard down?): their accounts may not be served, and their ' +
          'figures below are from an earlier read or missing. The other partitions are current.', 'bad');
      } else if (ready.value === 'redis' || (q.status === 'rejected' && q.reason.status === 503)) {
        health.className = 'health bad';
        health.textContent = 'Redis down';
        showBanner('Redis does not answer (/readyz 503): ingress refuses events and nothing is delivered. Figures may be stale.', 'bad');
      } else if (q.status === 'rejected') {
        health.className = 'health warn';
        health.textContent = 'degraded';
        showBanner('Could not read the queues: ' + q.reason.message, 'warn');
      } else {
        health.className = 'health ok';
        health.textContent = 'healthy';
        $('banner').hidden = true;
      }
      if (q.status === 'fulfilled') {
        const nowMs = Date.parse(q.value.now);
        renderTotals(q.value, hist.status === 'fulfilled' ? hist.value : null);
        renderAccounts(q.value);
        if (!view.selected && q.value.accounts.length) {
          // Open the account that needs attention most.
          view.selected = q.value.accounts[0].account;
          busy = false;
          return refresh();
        }
        const row = q.value.accounts.find((a) => a.account === view.selected) || null;
        renderDetail(row, letters.status === 'fulfilled' ? letters.value : null, nowMs);
        $('updated').dataset.at = new Date().toLocaleTimeString([], { hour12: false });
        $('updated').textContent = 'updated ' + $('updated').dataset.at;
      }
      if (hist.status === 'fulfilled') renderCharts(hist.value);
    } finally {
      busy = false;
      timer = setTimeout(refresh, REFRESH_MS);
    }
  }

  // ---- wiring ----

  function start() {
    takeKeyFromFragment();
    $('updated').dataset.at = 'earlier';
    $('login-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const k = $('key').value.trim();
      if (!k) return;
      sessionStorage.setItem(KEY_STORE, k);
      $('key').value = '';
      refresh();
    });
    $('forget').addEventListener('click', () => {
      sessionStorage.removeItem(KEY_STORE);
      view.selected = null;
      showLogin();
    });
    let debounce = null;
    $('search').addEventListener('input', () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => { view.q = $('search').value.trim(); view.offset = 0; refresh(); }, 250);
    });
    $('sort').addEventListener('change', () => { view.sort = $('sort').value; view.offset = 0; refresh(); });
    $('prev').addEventListener('click', () => { view.offset = Math.max(0, view.offset - PAGE_SIZE); refresh(); });
    $('next').addEventListener('click', () => { view.offset += PAGE_SIZE; refresh(); });
    $('pause').addEventListener('click', () => confirmThen(
      'Pause delivery of ' + view.selected + '? Ingress keeps accepting its events; they wait until it is resumed.',
      'Pause', () => act('POST', '/pause')));
    $('resume').addEventListener('click', () => confirmThen(
      'Resume delivery of ' + view.selected + '? This also clears auth_failed.',
      'Resume', () => act('POST', '/resume')));
    $('replay-all').addEventListener('click', () => confirmThen(
      'Replay every dead letter of ' + view.selected + '? They go back in its queue with attempts reset.',
      'Replay all', () => act('POST', '/dead-letters/replay', { all: true })));
    $('replay-selected').addEventListener('click', () => {
      const ids = [...view.checked];
      confirmThen('Replay ' + ids.length + ' dead letter(s) of ' + view.selected + '?',
        'Replay', () => act('POST', '/dead-letters/replay', { ids }));
    });
    $('purge-all').addEventListener('click', () => confirmThen(
      'Purge every dead letter of ' + view.selected + '? They are forgotten and cannot be replayed.',
      'Purge all', () => act('DELETE', '/dead-letters')));
    $('select-all').addEventListener('change', () => {
      for (const row of document.querySelectorAll('#letters tr[data-delivery-id]')) {
        const box = row.querySelector('input[type=checkbox]');
        box.checked = $('select-all').checked;
        if (box.checked) view.checked.add(row.dataset.deliveryId); else view.checked.delete(row.dataset.deliveryId);
      }
      updateSelection(document.querySelectorAll('#letters tr[data-delivery-id]').length);
    });
    $('confirm-cancel').addEventListener('click', closeConfirm);
    $('confirm-ok').addEventListener('click', () => { const run = pending; closeConfirm(); if (run) run(); });
    document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && !$('confirm').hidden) closeConfirm(); });
    // A link with a key opened in a tab already showing the page changes only the fragment.
    window.addEventListener('hashchange', () => { takeKeyFromFragment(); refresh(); });
    refresh();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
