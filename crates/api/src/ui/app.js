// The nodeagent web console: hash-routed views over the agent's API (see api.js) with live
// uPlot charts (charts.js). No build step: the browser loads these modules as they are.

import { api, stream, seg, bytes, cores, el, onUnauthorized, ApiError, tsNanos } from './api.js';
import { LiveChart, Sparkline } from './charts.js';
import { load as loadYaml } from './vendor/js-yaml/js-yaml.esm.min.mjs';

const main = document.getElementById('main');
let cleanup = null;

// ---------------------------------------------------------------- login

async function loginFromFragment() {
  const m = /(?:^#|&)login=([0-9a-f]+)/.exec(location.hash);
  if (!m) return;
  // Take the code out of the address bar and history before anything else.
  history.replaceState(null, '', '/ui/#/host');
  try {
    await api('POST', '/ui/session', { code: m[1] });
  } catch (e) {
    showLogin(e.message);
    throw e;
  }
}

function showLogin(why) {
  if (cleanup) { cleanup(); cleanup = null; }
  main.replaceChildren(el('div', { class: 'login card', id: 'login' },
    el('h2', {}, 'Log in to nodeagent'),
    why ? el('p', { class: 'error' }, why) : null,
    el('p', {}, 'The console needs a session. On the node, run ', el('code', {}, 'nodeagent ui'),
      ' (as a user who can reach the agent\'s socket or token) and open the URL it prints. ',
      'The link works once, within 60 seconds.'),
    el('p', { class: 'muted' }, 'Sessions end after an hour unused, 12 hours after login, when you log out, or when the agent restarts.')));
}

onUnauthorized.add(() => showLogin('Your session has ended or is not valid.'));

document.getElementById('logout').addEventListener('click', async () => {
  try { await api('POST', '/ui/logout'); } catch { /* ended anyway */ }
  showLogin('Logged out.');
});

// ---------------------------------------------------------------- shared live data

/** The newest sample of every object, from one /v1/metrics/stream shared by the views. */
const live = {
  listeners: new Set(),
  stop: null,
  every: '1s',
  subscribe(f) {
    this.listeners.add(f);
    if (!this.stop) {
      this.stop = stream(`/v1/metrics/stream?every=${this.every}`, (ev) => {
        if (ev.event !== 'samples') return;
        const v = JSON.parse(ev.data);
        for (const l of this.listeners) l(v);
      }, { onState: (ok) => document.getElementById('conn').classList.toggle('live', ok) });
    }
    return () => {
      this.listeners.delete(f);
      if (!this.listeners.size && this.stop) { this.stop(); this.stop = null; }
    };
  },
};

// ---------------------------------------------------------------- host view

const MODES = ['user', 'nice', 'system', 'iowait', 'irq', 'softirq', 'steal'];

async function hostView() {
  const info = await api('GET', '/v1/host');
  document.getElementById('node').textContent = `${info.hostname} · ${info.cpus} CPUs · ${bytes(info.memory_total_bytes)}`;
  const grid = el('div', { class: 'grid' });
  main.replaceChildren(el('h2', {}, `Host ${info.hostname}`),
    el('p', { class: 'muted' }, `node ${info.node} · kernel ${info.kernel} · cgroup ${info.cgroup_version} · agent ${info.agent_version}`),
    grid);
  const card = (title) => { const c = el('div', { class: 'card', 'data-chart': title }); grid.append(c); return c; };
  const pct = (v) => `${v.toFixed(1)}%`;
  const rate = (v) => `${bytes(Math.round(v))}/s`;
  const charts = {
    cpu: new LiveChart(card('cpu'), { title: 'CPU by mode (% of all CPUs)', series: MODES.map((m) => ({ label: m })), fmt: pct, yMin: 0 }),
    mem: new LiveChart(card('memory'), { title: 'Memory', series: [{ label: 'used' }, { label: 'available' }, { label: 'swap used' }], fmt: (v) => bytes(Math.round(v)), yMin: 0 }),
    load: new LiveChart(card('load'), { title: 'Load average', series: [{ label: '1 min' }, { label: '5 min' }, { label: '15 min' }], fmt: (v) => v.toFixed(2), yMin: 0 }),
    disk: new LiveChart(card('disk'), { title: 'Disk (all devices)', series: [{ label: 'read' }, { label: 'written' }], fmt: rate, yMin: 0 }),
    net: new LiveChart(card('net'), { title: 'Network (all interfaces)', series: [{ label: 'received' }, { label: 'sent' }], fmt: rate, yMin: 0 }),
  };
  let prev = null;
  const take = (s) => {
    const h = s.host;
    if (!h) return;
    const t = Date.parse(s.ts) / 1000;
    if (prev && prev.seq >= s.seq) return;
    if (prev) {
      const p = prev.host;
      const dt = t - Date.parse(prev.ts) / 1000;
      const d = MODES.map((m) => Math.max(0, h.cpu[m] - p.cpu[m]));
      const tot = d.reduce((a, b) => a + b, 0) + Math.max(0, h.cpu.idle - p.cpu.idle);
      if (tot > 0) charts.cpu.push(t, d.map((x) => (100 * x) / tot));
      const sum = (xs, k) => xs.reduce((a, x) => a + x[k], 0);
      if (dt > 0) {
        charts.disk.push(t, [(sum(h.disks, 'read_bytes') - sum(p.disks, 'read_bytes')) / dt, (sum(h.disks, 'write_bytes') - sum(p.disks, 'write_bytes')) / dt]);
        charts.net.push(t, [(sum(h.nets, 'read_bytes') - sum(p.nets, 'read_bytes')) / dt, (sum(h.nets, 'write_bytes') - sum(p.nets, 'write_bytes')) / dt]);
      }
    }
    charts.mem.push(t, [h.memory_total_bytes - h.memory_available_bytes, h.memory_available_bytes, h.swap_total_bytes - h.swap_free_bytes]);
    charts.load.push(t, [h.load1, h.load5, h.load15]);
    prev = s;
  };
  const recent = await api('GET', '/v1/objects/host/metrics?limit=300');
  recent.samples.forEach(take);
  const unsub = live.subscribe((v) => v.samples.filter((s) => s.id === 'host').forEach(take));
  return () => { unsub(); Object.values(charts).forEach((c) => c.destroy()); };
}

// ---------------------------------------------------------------- objects view

async function objectsView() {
  const state = { sort: 'cpu', asc: false, filter: '' };
  const rows = new Map(); // id -> {obj, tr, cells, spark, last, cpu, mem}
  const tbody = el('tbody');
  const cols = [['name', 'Name'], ['kind', 'Kind'], ['status', 'Status'], ['cpu', 'CPU (cores)', 'num'], ['memory', 'Memory', 'num'], ['limit', 'CPU limit', 'num'], ['spark', 'CPU, last minute']];
  const head = el('tr', {}, cols.map(([k, label, cls]) => el('th', {
    'data-sort': k, class: cls,
    onclick: () => { if (k === 'spark' || k === 'limit') return; state.asc = state.sort === k ? !state.asc : k === 'name'; state.sort = k; render(); },
  }, label)));
  const filter = el('input', { id: 'filter', placeholder: 'filter by name, kind, status, label', oninput: (e) => { state.filter = e.target.value.toLowerCase(); render(); } });
  const count = el('span', { class: 'muted' });
  main.replaceChildren(el('h2', {}, 'Objects'), el('div', { class: 'toolbar' }, filter, count,
    el('a', { href: '#/create' }, el('button', { class: 'primary', type: 'button' }, 'Create…'))),
  el('table', { id: 'objects' }, el('thead', {}, head), tbody));

  const upsert = (o) => {
    let r = rows.get(o.id);
    if (!r) {
      const cells = Object.fromEntries(cols.map(([k, , cls]) => [k, el('td', { class: cls })]));
      const tr = el('tr', { class: 'obj', 'data-name': o.name, onclick: () => { location.hash = `#/objects/${seg(o.name)}`; } }, Object.values(cells));
      r = { tr, cells, spark: null, last: null, cpu: null, mem: null };
      rows.set(o.id, r);
    }
    r.obj = o;
    r.cells.name.textContent = o.name;
    r.cells.kind.textContent = o.kind;
    r.cells.status.replaceChildren(el('span', { class: `status ${o.status}` }, o.status));
    r.cells.limit.textContent = o.spec?.resources?.cpu ?? '-';
  };
  const refresh = async () => {
    const { objects } = await api('GET', '/v1/objects');
    const seen = new Set();
    // The host has a view of its own.
    for (const o of objects) if (o.kind !== 'host') { upsert(o); seen.add(o.id); }
    for (const [id, r] of rows) if (!seen.has(id)) { r.spark?.destroy(); r.tr.remove(); rows.delete(id); }
    render();
  };
  const render = () => {
    const list = [...rows.values()].filter((r) => {
      if (!state.filter) return true;
      const o = r.obj;
      return [o.name, o.kind, o.status, ...Object.entries(o.spec?.labels || {}).map(([k, v]) => `${k}=${v}`)].some((x) => x.toLowerCase().includes(state.filter));
    });
    const key = (r) => ({ name: r.obj.name, kind: r.obj.kind, status: r.obj.status, cpu: r.cpu ?? -1, memory: r.mem ?? -1 }[state.sort]);
    list.sort((a, b) => {
      const x = key(a); const y = key(b);
      const c = typeof x === 'string' ? x.localeCompare(y) : x - y;
      return (state.asc ? c : -c) || a.obj.name.localeCompare(b.obj.name);
    });
    for (const th of head.children) {
      th.classList.toggle('sorted', th.dataset.sort === state.sort);
      th.classList.toggle('asc', state.asc);
    }
    const shown = new Set(list.map((r) => r.tr));
    for (const r of rows.values()) if (!shown.has(r.tr)) r.tr.remove();
    list.forEach((r) => {
      tbody.append(r.tr);
      if (!r.spark) r.spark = new Sparkline(r.cells.spark);
    });
    count.textContent = `${list.length} of ${rows.size}`;
  };
  await refresh();
  const unsub = live.subscribe((v) => {
    for (const s of v.samples) {
      const r = rows.get(s.id);
      if (!r) continue;
      const c = cores(r.last, s);
      r.last = s;
      r.mem = s.memory_bytes ?? null;
      r.cells.memory.textContent = bytes(r.mem);
      if (c != null) { r.cpu = c; r.cells.cpu.textContent = c.toFixed(3); r.spark?.push(c); }
    }
    if (v.gone.some((id) => rows.has(id)) || v.samples.some((s) => s.id !== 'host' && !rows.has(s.id))) refresh().catch(() => {});
    else render();
  });
  const timer = setInterval(() => refresh().catch(() => {}), 3000);
  return () => { unsub(); clearInterval(timer); rows.forEach((r) => r.spark?.destroy()); };
}

// ---------------------------------------------------------------- object view

async function objectView(key) {
  let obj = await api('GET', `/v1/objects/${seg(key)}`);
  const id = obj.id;
  const intervalMs = parseDuration(obj.spec?.collect?.interval) ?? 1000;
  // At most 2,000 points, and at most 60 s of them.
  const maxPoints = Math.max(60, Math.min(2000, Math.round(60000 / intervalMs)));
  const statusEl = el('span', { id: 'status', class: 'status' });
  const detail = el('dl', { class: 'kv', id: 'detail' });
  const specEl = el('pre', { id: 'spec' });
  const msg = el('div', { id: 'message' });
  const eventsBody = el('tbody');
  const chartsEl = el('div', { class: 'grid' });
  const say = (text, bad) => { msg.replaceChildren(el('div', { class: bad ? 'error' : 'note' }, text)); };
  const act = async (what, f) => {
    try { await f(); say(`${what}: done`); } catch (e) { say(errorText(e), true); }
    await reload();
  };
  const cpuIn = el('input', { id: 'cpu', size: 6, placeholder: 'cores' });
  const memIn = el('input', { id: 'memory', size: 8, placeholder: 'e.g. 64Mi' });
  const sinkSel = el('select', { id: 'sink' });
  const pushIv = el('input', { id: 'push-interval', size: 6, placeholder: 'interval' });
  const patch = (body) => api('PATCH', `/v1/objects/${seg(id)}?wait=true`, body);
  const confirmBox = el('div', { id: 'confirm', class: 'confirm', hidden: '' },
    `Delete ${obj.name}? Its workload is stopped and its cgroup removed. `,
    el('button', { id: 'confirm-delete', class: 'danger', type: 'button', onclick: () => act('delete', async () => { await api('DELETE', `/v1/objects/${seg(id)}?wait=true`); location.hash = '#/objects'; }) }, 'Delete'), ' ',
    el('button', { type: 'button', onclick: () => confirmBox.setAttribute('hidden', '') }, 'Cancel'));
  const controls = el('div', { class: 'card' }, el('div', { class: 'title' }, 'Controls'),
    el('div', { class: 'controls' },
      'CPU (cores)', cpuIn, el('button', { id: 'set-cpu', type: 'button', onclick: () => act(`cpu ${cpuIn.value}`, () => patch({ resources: { cpu: Number(cpuIn.value) } })) }, 'Set'),
      'Memory', memIn, el('button', { id: 'set-memory', type: 'button', onclick: () => act(`memory ${memIn.value}`, () => patch({ resources: { memory: memIn.value } })) }, 'Set'),
      'Run', el('button', { id: 'pause', type: 'button', onclick: () => act('pause', () => patch({ paused: true })) }, 'Pause'),
      el('button', { id: 'resume', type: 'button', onclick: () => act('resume', () => patch({ paused: false })) }, 'Resume'),
      'Push to', el('span', {}, sinkSel, ' ', pushIv),
      el('span', {},
        el('button', { id: 'push-on', type: 'button', onclick: () => act(`push on ${sinkSel.value}`, () => api('POST', `/v1/objects/${seg(id)}/push-on`, pushIv.value ? { sink: sinkSel.value, interval: pushIv.value } : { sink: sinkSel.value })) }, 'On'), ' ',
        el('button', { id: 'push-off', type: 'button', onclick: () => act(`push off ${sinkSel.value}`, () => api('POST', `/v1/objects/${seg(id)}/push-off`, { sink: sinkSel.value })) }, 'Off'), ' ',
        el('button', { id: 'push-once', type: 'button', onclick: () => act(`push once ${sinkSel.value}`, () => api('POST', `/v1/objects/${seg(id)}/push-once`, { sink: sinkSel.value })) }, 'Once'))),
    el('p', {}, el('button', { id: 'delete', class: 'danger', type: 'button', onclick: () => confirmBox.removeAttribute('hidden') }, 'Delete…')),
    confirmBox, msg);
  main.replaceChildren(
    el('h2', {}, `${obj.name} `, statusEl, el('span', { class: 'muted' }, ` · ${obj.kind} · every ${obj.spec?.collect?.interval}`)),
    el('div', { class: 'two' },
      el('div', {}, chartsEl, el('h3', {}, 'Events'), el('table', { class: 'events', id: 'object-events' }, eventsBody)),
      el('div', {}, controls, el('h3', {}, 'Status'), detail, el('h3', {}, 'Spec'), specEl)));
  api('GET', '/v1/sinks').then(({ sinks }) => sinkSel.replaceChildren(...sinks.map((s) => el('option', { value: s.name }, s.name)))).catch(() => {});

  const cpuChart = new LiveChart(el('div', { class: 'card', 'data-chart': 'cpu' }), { title: 'CPU (cores)', series: [{ label: 'usage' }, { label: 'limit', stroke: '#dc2626', dash: [4, 4] }], fmt: (v) => v.toFixed(3), maxPoints, yMin: 0 });
  const memChart = new LiveChart(el('div', { class: 'card', 'data-chart': 'memory' }), { title: 'Memory', series: [{ label: 'usage' }, { label: 'limit', stroke: '#dc2626', dash: [4, 4] }], fmt: (v) => bytes(Math.round(v)), maxPoints, yMin: 0 });
  chartsEl.append(cpuChart.u.root.parentElement, memChart.u.root.parentElement);

  const show = (o) => {
    obj = o;
    statusEl.textContent = o.status;
    statusEl.className = `status ${o.status}`;
    const rows = [['id', o.id], ['status', o.status], ['paused', String(o.paused)], ['pid', o.pid], ['exit code', o.exit_code], ['exit signal', o.exit_signal],
      ['restarts', o.restarts], ['cgroup', o.cgroup], ['created', o.created_at], ['updated', o.updated_at],
      ['push', Object.entries(o.push || {}).map(([k, v]) => `${k} every ${v}`).join(', ') || 'off'], ['stdout', o.stdout_path], ['stderr', o.stderr_path]];
    detail.replaceChildren(...rows.filter(([, v]) => v != null).flatMap(([k, v]) => [el('dt', {}, k), el('dd', { 'data-key': k }, v)]));
    specEl.textContent = JSON.stringify(o.spec, null, 2);
    if (document.activeElement !== cpuIn && o.spec?.resources?.cpu != null) cpuIn.value = o.spec.resources.cpu;
    if (document.activeElement !== memIn && o.spec?.resources?.memory != null) memIn.value = o.spec.resources.memory;
  };
  const reload = async () => { try { show(await api('GET', `/v1/objects/${seg(id)}`)); } catch (e) { if (e.status === 404) say('This object was deleted.', true); } };
  show(obj);

  let prev = null;
  const take = (s) => {
    if (prev && s.seq <= prev.seq) return;
    const t = tsNanos(s.ts) / 1e9;
    const c = cores(prev, s);
    const lim = obj.spec?.resources?.cpu ?? null;
    if (c != null) cpuChart.push(t, [c, lim]);
    memChart.push(t, [s.memory_bytes ?? null, s.memory_limit_bytes != null && s.memory_limit_bytes < 2 ** 60 ? s.memory_limit_bytes : null]);
    prev = s;
  };
  const recent = await api('GET', `/v1/objects/${seg(id)}/metrics?limit=${maxPoints}`);
  recent.samples.forEach(take);
  const stopSamples = stream(`/v1/objects/${seg(id)}/metrics/stream${prev ? `?since=${prev.seq}` : ''}`, (ev) => {
    if (ev.event === 'gone') { statusEl.textContent = 'deleted'; statusEl.className = 'status deleted'; return false; }
    if (ev.event === 'sample') take(JSON.parse(ev.data));
    return true;
  }, { resume: (seq) => `/v1/objects/${seg(id)}/metrics/stream?since=${seq}` });

  const addEvent = (e) => {
    eventsBody.prepend(el('tr', {}, el('td', {}, e.seq), el('td', {}, e.ts?.slice(11, 23)), el('td', {}, e.kind), el('td', { class: 'msg' }, e.message)));
    while (eventsBody.children.length > 200) eventsBody.lastChild.remove();
  };
  const log = await api('GET', '/v1/events');
  let lastSeq = 0;
  for (const e of log.events) { lastSeq = e.seq; if (e.object_id === id) addEvent(e); }
  const stopEvents = stream(`/v1/events?since=${lastSeq}`, (ev) => {
    const e = JSON.parse(ev.data);
    if (e.object_id === id) { addEvent(e); reload(); }
  }, { resume: (seq) => `/v1/events?since=${seq}` });
  const timer = setInterval(reload, 2000);
  return () => { stopSamples(); stopEvents(); clearInterval(timer); cpuChart.destroy(); memChart.destroy(); };
}

function parseDuration(s) {
  const m = /^(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)$/.exec(String(s ?? ''));
  if (!m) return null;
  const k = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60000, h: 3600000 }[m[2]];
  return Number(m[1]) * k;
}

function errorText(e) {
  if (e instanceof ApiError && e.field) return `${e.field}: ${e.message}`;
  return e.message;
}

// ---------------------------------------------------------------- create view

const EXAMPLE = `# A process: YAML or JSON, as for \`nodeagent create -f\`
name: web-1
kind: process
labels: {team: a}
process:
  command: ["/bin/sh", "-c", "while :; do :; done"]
resources:
  cpu: 0.5
  memory: 64Mi
collect:
  interval: 100ms
`;

function createView() {
  const ta = el('textarea', { id: 'editor', spellcheck: 'false' });
  ta.value = sessionStorage.getItem('nodeagent-draft') || EXAMPLE;
  ta.addEventListener('input', () => sessionStorage.setItem('nodeagent-draft', ta.value));
  const out = el('div', { id: 'create-result' });
  const submit = async () => {
    out.replaceChildren();
    let spec;
    try {
      spec = ta.value.trim().startsWith('{') ? JSON.parse(ta.value) : loadYaml(ta.value);
    } catch (e) {
      out.replaceChildren(el('div', { class: 'error', id: 'create-error' }, `The text is not valid YAML or JSON: ${e.message}`));
      return;
    }
    try {
      const o = await api('POST', '/v1/objects?wait=true', spec);
      sessionStorage.removeItem('nodeagent-draft');
      location.hash = `#/objects/${seg(o.name)}`;
    } catch (e) {
      const line = e.field ? lineOf(ta.value, e.field) : null;
      out.replaceChildren(el('div', { class: 'error', id: 'create-error', 'data-field': e.field || '' },
        e.field ? el('span', { class: 'field' }, e.field) : null, e.field ? ': ' : '', e.message,
        line != null ? el('span', { class: 'muted' }, ` (line ${line + 1})`) : null));
      if (line != null) selectLine(ta, line);
    }
  };
  main.replaceChildren(el('h2', {}, 'Create an object'),
    el('p', { class: 'muted' }, 'The spec of DESIGN.md §4, in YAML or JSON. The server checks it; an error names the field at fault.'),
    ta, el('div', { class: 'toolbar' }, el('button', { id: 'create', class: 'primary', type: 'button', onclick: submit }, 'Create'),
      el('button', { type: 'button', onclick: () => { ta.value = EXAMPLE; } }, 'Reset')), out);
  return null;
}

/** The line of the editor where the field's last key is written (`resources.memory` → `memory:`). */
function lineOf(text, field) {
  const parts = field.split('.').filter((p) => !/^\d+$/.test(p) && !/^\[/.test(p));
  const last = parts[parts.length - 1]?.replace(/\[\d+\]$/, '');
  if (!last) return null;
  const lines = text.split('\n');
  const re = new RegExp(`(^|[\\s{,"'])${last.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}["']?\\s*:`);
  const i = lines.findIndex((l) => re.test(l));
  return i < 0 ? null : i;
}

function selectLine(ta, line) {
  const lines = ta.value.split('\n');
  const start = lines.slice(0, line).reduce((a, l) => a + l.length + 1, 0);
  ta.focus();
  ta.setSelectionRange(start, start + lines[line].length);
}

// ---------------------------------------------------------------- events view

async function eventsView() {
  const tbody = el('tbody');
  const filter = el('input', { id: 'events-filter', placeholder: 'filter' });
  main.replaceChildren(el('h2', {}, 'Events'), el('div', { class: 'toolbar' }, filter, el('span', { class: 'muted' }, 'newest first, live')),
    el('table', { class: 'events', id: 'events' }, el('thead', {}, el('tr', {}, ['seq', 'time', 'kind', 'object', 'message'].map((h) => el('th', {}, h)))), tbody));
  const add = (e) => {
    const tr = el('tr', { 'data-kind': e.kind }, el('td', {}, e.seq), el('td', {}, e.ts?.replace('T', ' ').slice(0, 23)), el('td', {}, e.kind),
      el('td', {}, e.name ? el('a', { href: `#/objects/${seg(e.name)}` }, e.name) : (e.object_id || '')), el('td', { class: 'msg' }, e.message));
    tr.hidden = !match(tr);
    tbody.prepend(tr);
    while (tbody.children.length > 1000) tbody.lastChild.remove();
  };
  const match = (tr) => !filter.value || tr.textContent.toLowerCase().includes(filter.value.toLowerCase());
  filter.addEventListener('input', () => { for (const tr of tbody.children) tr.hidden = !match(tr); });
  const log = await api('GET', '/v1/events');
  const recent = log.events.slice(-500);
  recent.forEach(add);
  const last = recent.length ? recent[recent.length - 1].seq : 0;
  const stop = stream(`/v1/events?since=${last}`, (ev) => { add(JSON.parse(ev.data)); }, { resume: (seq) => `/v1/events?since=${seq}` });
  return stop;
}

// ---------------------------------------------------------------- router

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  // A login link opened in a tab that has the console already.
  try { await loginFromFragment(); } catch { return; }
  const h = location.hash.replace(/^#\/?/, '');
  const [view, ...rest] = h.split('/');
  for (const a of document.querySelectorAll('header nav a')) a.classList.toggle('active', a.dataset.view === (view || 'host'));
  try {
    let c;
    if (view === 'objects' && rest.length) c = await objectView(decodeURIComponent(rest.join('/')));
    else if (view === 'objects') c = await objectsView();
    else if (view === 'create') c = createView();
    else if (view === 'events') c = await eventsView();
    else c = await hostView();
    cleanup = c || null;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    main.replaceChildren(el('div', { class: 'error' }, errorText(e)));
  }
}

window.addEventListener('hashchange', route);
route();
