// The Stellar dashboard: hash routes, a snapshot pushed every second over server-sent events,
// and a few buttons. No framework, no build step: served as is from the node's binary.
'use strict';

// Errors the page met, for the browser test (and for anyone opening the console).
const pageErrors = [];
window.dashboardErrors = pageErrors;
window.addEventListener('error', (e) => pageErrors.push('error: ' + e.message));
window.addEventListener('unhandledrejection', (e) =>
  pageErrors.push('unhandled rejection: ' + ((e.reason && e.reason.message) || e.reason)));
document.addEventListener('securitypolicyviolation', (e) =>
  pageErrors.push('csp: ' + e.violatedDirective + ' ' + e.blockedURI));
const consoleError = console.error.bind(console);
console.error = (...args) => { pageErrors.push('console: ' + args.join(' ')); consoleError(...args); };

const PAGES = ['overview', 'failed', 'queues', 'nodes', 'tasks', 'scheduled', 'cache', 'bus'];
const HISTORY = 90; // snapshots kept for the chart (one a second)
const state = {
  session: null, // {mode, logged_in, csrf?, node_id}
  snapshot: null,
  history: [], // {at, processed, failed}
  failed: null, // the failed page last fetched
  failedPage: 1,
  failedKey: null, // the failed counts the failed page was last read at
  rendered: {}, // what each table shows now, so unchanged data is not redrawn
  events: null,
  ticks: 0, // snapshots received, to read the slower pages every few seconds
  delayedCount: null, // the delayed count the scheduled page was last read at
  task: null, // the task search's last answer: {id, task}
  scheduled: null, // {delayed, delayed_total, schedules}
  cachePrefix: '',
  cache: null, // {prefix, keys, total, truncated, max}
};

const $ = (id) => document.getElementById(id);

// An element with attributes and children (text is always set as text, never as HTML).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function duration(ms) {
  if (ms === null || ms === undefined) return '–';
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
  if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
}

function ago(ms) {
  return ms ? duration(Date.now() - ms) + ' ago' : '–';
}

// A time to come, relative: "in 5s", or "due" once it has passed.
function until(ms) {
  if (!ms) return '–';
  return ms > Date.now() ? 'in ' + duration(ms - Date.now()) : 'due';
}

// A time as UTC text, to the second.
function utc(ms) {
  return ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) + ' UTC' : '–';
}

// A button that runs `action` (with a confirm() first when `question` is given).
function button(label, attrs, action, question) {
  const onclick = () => { if (!question || window.confirm(question)) action(); };
  return el('button', Object.assign({ type: 'button', onclick }, attrs), label);
}

function say(text, ok) {
  const box = $('message');
  box.textContent = text;
  box.className = ok ? 'message ok' : 'message';
  box.hidden = !text;
}

const canAct = () => state.session && state.session.logged_in;

async function getJson(path) {
  const response = await fetch(path, { credentials: 'same-origin' });
  const body = await response.json();
  if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
  return body;
}

// A mutating request: JSON body, the session's CSRF token in a header.
async function act(path, body, done) {
  try {
    const response = await fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': state.session.csrf || '' },
      body: JSON.stringify(body || {}),
    });
    const answer = await response.json();
    if (!response.ok) {
      say((answer.error && answer.error.message) || response.statusText);
      return;
    }
    say(done, true);
    await refreshPage();
  } catch (err) {
    say('request failed: ' + err.message);
  }
}

function page() {
  const name = location.hash.replace(/^#\/?/, '');
  return PAGES.includes(name) ? name : 'overview';
}

function showPage() {
  const loginNeeded = state.session && state.session.mode === 'login' && !state.session.logged_in;
  const current = loginNeeded ? 'login' : page();
  for (const section of document.querySelectorAll('.page')) {
    section.hidden = section.id !== 'page-' + current;
  }
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('active', link.dataset.page === current);
  }
  $('nav').hidden = loginNeeded;
  if (!loginNeeded) render();
}

function render() {
  const snap = state.snapshot;
  if (!snap) return;
  $('served-by').textContent = 'served by ' + snap.node_id;
  $('failed-badge').textContent = snap.tasks.failed_now ? String(snap.tasks.failed_now) : '';
  switch (page()) {
    case 'overview': renderOverview(snap); break;
    case 'failed': renderFailed(); break;
    case 'queues': renderQueues(snap); break;
    case 'nodes': renderNodes(snap); break;
    case 'bus': renderBus(snap); break;
  }
}

// Replaces `tbody`'s rows only when `key` (the data they show) changed, so a button is not
// swapped under the pointer every second.
function fill(tbody, key, rows) {
  if (state.rendered[tbody.parentElement.id] === key) return;
  state.rendered[tbody.parentElement.id] = key;
  tbody.replaceChildren(...rows);
}

function renderOverview(snap) {
  $('live-nodes').textContent = String(snap.nodes.length);
  $('processed').textContent = String(snap.tasks.processed);
  $('failed-total').textContent = String(snap.tasks.failed);
  $('in-flight').textContent = String(snap.tasks.in_flight);
  $('delayed').textContent = String(snap.tasks.delayed);
  $('failed-now').textContent = String(snap.tasks.failed_now);
  const nodes = snap.nodes.map((n) => el('tr', { class: 'node', 'data-node': n.id },
    el('td', { class: 'mono' }, n.id),
    el('td', { class: 'state-' + n.state }, n.state),
    el('td', {}, n.in_flight ?? '–')));
  fill($('overview-nodes').tBodies[0], JSON.stringify(snap.nodes.map((n) => [n.id, n.state, n.in_flight])), nodes);
  const queues = snap.queues.map((q) => el('tr', { class: 'queue', 'data-queue': q.name },
    el('td', {}, q.name, q.paused ? el('span', { class: 'state-paused' }, ' (paused)') : null),
    el('td', {}, q.depth),
    el('td', {}, q.depth ? duration(q.oldest_ms) : '–')));
  fill($('overview-queues').tBodies[0], JSON.stringify(snap.queues), queues);
  drawChart();
}

// Processed and failed per second between consecutive snapshots, as two lines.
function drawChart() {
  const canvas = $('chart');
  const ctx = canvas.getContext('2d');
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const rates = [];
  for (let i = 1; i < state.history.length; i++) {
    const a = state.history[i - 1];
    const b = state.history[i];
    const seconds = Math.max((b.at - a.at) / 1000, 0.001);
    rates.push({
      processed: Math.max(b.processed - a.processed, 0) / seconds,
      failed: Math.max(b.failed - a.failed, 0) / seconds,
    });
  }
  const top = Math.max(1, ...rates.map((r) => Math.max(r.processed, r.failed)));
  const pad = 24;
  ctx.strokeStyle = '#dde1e8';
  ctx.fillStyle = '#6b7385';
  ctx.font = '11px system-ui, sans-serif';
  ctx.beginPath();
  ctx.moveTo(pad, height - pad);
  ctx.lineTo(width - 4, height - pad);
  ctx.stroke();
  ctx.fillText(top.toFixed(top < 10 ? 1 : 0) + '/s', 2, 12);
  ctx.fillText('0', 2, height - pad);
  const x = (i) => pad + ((width - pad - 4) * i) / Math.max(HISTORY - 2, 1);
  const y = (v) => height - pad - ((height - pad - 16) * v) / top;
  const offset = HISTORY - 1 - rates.length;
  for (const [field, colour] of [['processed', '#2f6fed'], ['failed', '#d6453d']]) {
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    rates.forEach((r, i) => (i ? ctx.lineTo(x(offset + i), y(r[field])) : ctx.moveTo(x(offset + i), y(r[field]))));
    ctx.stroke();
  }
}

async function refreshFailed() {
  if (page() !== 'failed' || !canRead()) return;
  try {
    state.failed = await getJson('/dashboard/api/failed?page=' + state.failedPage);
    if (state.failed.page > state.failed.pages && state.failedPage > 1) {
      state.failedPage = state.failed.pages;
      state.failed = await getJson('/dashboard/api/failed?page=' + state.failedPage);
    }
    renderFailed();
  } catch (err) {
    say('could not list failed tasks: ' + err.message);
  }
}

function renderFailed() {
  const list = state.failed;
  if (!list) return;
  $('failed-count').textContent = '(' + list.total + ')';
  $('failed-pageinfo').textContent = 'page ' + list.page + ' of ' + list.pages;
  $('failed-prev').disabled = list.page <= 1;
  $('failed-next').disabled = list.page >= list.pages;
  $('retry-all').disabled = $('remove-all').disabled = list.total === 0;
  const rows = list.items.map((t) => el('tr', { class: 'failed-row', 'data-id': t.id },
    el('td', { class: 'mono' }, t.id),
    el('td', {}, t.name),
    el('td', {}, t.queue),
    el('td', {}, t.attempts + ' / ' + t.max_attempts),
    el('td', { class: 'error' }, t.error || ''),
    el('td', {}, ago(t.failed_at_ms)),
    el('td', {},
      el('button', { type: 'button', class: 'mutate retry', 'data-id': t.id,
        onclick: () => act('/dashboard/api/failed/retry', { id: t.id }, 'retried ' + t.id) }, 'Retry'),
      ' ',
      el('button', { type: 'button', class: 'mutate danger remove', 'data-id': t.id,
        onclick: () => act('/dashboard/api/failed/remove', { id: t.id }, 'removed ' + t.id) }, 'Remove'))));
  fill($('failed-table').tBodies[0], JSON.stringify(list.items.map((t) => [t.id, t.attempts, t.error])) + canAct(), rows);
}

function renderQueues(snap) {
  const rows = snap.queues.map((q) => el('tr', { class: 'queue-row', 'data-queue': q.name },
    el('td', {}, q.name),
    el('td', { class: 'depth' }, q.depth),
    el('td', {}, q.depth ? duration(q.oldest_ms) : '–'),
    el('td', { class: q.paused ? 'state-paused' : 'state-active' }, q.paused ? 'paused' : 'active'),
    el('td', {}, q.paused
      ? el('button', { type: 'button', class: 'mutate resume', 'data-queue': q.name,
        onclick: () => act('/dashboard/api/queues/resume', { queue: q.name }, 'resumed ' + q.name) }, 'Resume')
      : el('button', { type: 'button', class: 'mutate pause', 'data-queue': q.name,
        onclick: () => act('/dashboard/api/queues/pause', { queue: q.name }, 'paused ' + q.name) }, 'Pause'))));
  fill($('queues-table').tBodies[0], JSON.stringify(snap.queues.map((q) => [q.name, q.depth, q.paused, q.depth ? Math.floor(q.oldest_ms / 1000) : 0])), rows);
}

function renderNodes(snap) {
  const rows = snap.nodes.map((n) => el('tr', { class: 'node-row', 'data-node': n.id },
    el('td', { class: 'mono' }, n.id),
    el('td', {}, n.host),
    el('td', {}, duration(n.uptime_ms)),
    el('td', { class: 'state-' + n.state }, n.state),
    el('td', {}, n.in_flight ?? '–'),
    el('td', {}, n.version),
    el('td', {}, n.state === 'quiet'
      ? el('button', { type: 'button', class: 'mutate unquiet', 'data-node': n.id,
        onclick: () => act('/dashboard/api/nodes/quiet', { node: n.id, quiet: false }, n.id + ' takes tasks again') }, 'Unquiet')
      : el('button', { type: 'button', class: 'mutate quiet', 'data-node': n.id,
        onclick: () => act('/dashboard/api/nodes/quiet', { node: n.id, quiet: true }, n.id + ' is quiet') }, 'Quiet'),
      ' ',
      button('Stop', { class: 'mutate danger stop', 'data-node': n.id },
        () => act('/dashboard/api/nodes/stop', { node: n.id }, n.id + ' is stopping'),
        'Stop node ' + n.id + '? It finishes its running tasks (within its shutdown timeout) and leaves the cluster.'))));
  fill($('nodes-table').tBodies[0], JSON.stringify(snap.nodes.map((n) => [n.id, n.state, n.in_flight, Math.floor((n.uptime_ms || 0) / 10000)])), rows);
}

// What the page shows instead of arguments the node keeps to logged-in sessions.
const HIDDEN_ARGS = 'log in to see arguments (read-only dashboard: set dashboard_secret on the node)';

// Whether the page may read the API now (read-only mode, or logged in).
const canRead = () => state.session && (state.session.mode === 'read-only' || canAct());

// Tasks: one task by id, read again while it is not finished.
async function searchTask(id) {
  if (!id) return;
  state.task = { id, task: undefined };
  await refreshTask();
}

async function refreshTask() {
  if (page() !== 'tasks' || !canRead() || !state.task) return;
  try {
    state.task = await getJson('/dashboard/api/task?id=' + encodeURIComponent(state.task.id));
    renderTask();
  } catch (err) {
    say('could not read the task: ' + err.message);
  }
}

function renderTask() {
  const answer = state.task;
  $('task-missing').hidden = !answer || answer.task !== null;
  $('task-missing').textContent = answer ? 'no task with id ' + answer.id : '';
  $('task-result').hidden = !answer || !answer.task;
  if (!answer || !answer.task) return;
  const t = answer.task;
  const rows = [
    ['Id', t.id], ['State', el('span', { class: 'state-' + t.state, id: 'task-state' }, t.state)],
    ['Name', t.name], ['Queue', t.queue], ['Attempts', t.attempts + ' / ' + t.max_attempts],
    ['Node', t.node || '–'], ['Progress', t.progress === null ? '–' : JSON.stringify(t.progress)],
    ['Last error', el('span', { class: 'error' }, t.error || '–')],
    ['Trace', el('span', { class: 'mono' }, t.trace_id || '–')],
    ['Arguments', t.args_hidden
      ? el('span', { id: 'task-args-hidden', class: 'muted' }, HIDDEN_ARGS)
      : el('pre', { id: 'task-args', class: 'mono' }, t.args)],
  ].map(([label, value]) => el('tr', {}, el('th', {}, label), el('td', {}, value)));
  $('task-fields').replaceChildren(...rows);
  const events = t.timeline.map((e) => el('li', {}, el('span', { class: 'mono' }, utc(e.at_ms)), ' ', e.event));
  $('task-timeline').replaceChildren(...events);
}

// Scheduled: delayed tasks and recurring schedules.
async function refreshScheduled() {
  if (page() !== 'scheduled' || !canRead()) return;
  try {
    state.scheduled = await getJson('/dashboard/api/scheduled');
    state.delayedCount = state.snapshot ? state.snapshot.tasks.delayed : null;
    renderScheduled();
  } catch (err) {
    say('could not list scheduled tasks: ' + err.message);
  }
}

function renderScheduled() {
  const list = state.scheduled;
  if (!list) return;
  $('delayed-count').textContent = list.delayed_total > list.delayed.length
    ? '(the first ' + list.delayed.length + ' of ' + list.delayed_total + ')' : '(' + list.delayed_total + ')';
  const delayed = list.delayed.map((t) => el('tr', { class: 'delayed-row', 'data-id': t.id },
    el('td', { class: 'mono' }, t.id), el('td', {}, t.name), el('td', {}, t.queue),
    el('td', { title: utc(t.due_at_ms) }, until(t.due_at_ms)), el('td', {}, t.attempts + ' / ' + t.max_attempts),
    el('td', {},
      button('Run now', { class: 'mutate run-now', 'data-id': t.id }, () => act('/dashboard/api/scheduled/run-now', { id: t.id }, t.id + ' runs now')),
      ' ',
      button('Delete', { class: 'mutate danger delete-delayed', 'data-id': t.id }, () => act('/dashboard/api/scheduled/delete', { id: t.id }, 'deleted ' + t.id), 'Delete task ' + t.id + '?'))));
  fill($('delayed-table').tBodies[0], JSON.stringify(list.delayed.map((t) => [t.id, t.attempts, until(t.due_at_ms)])) + canAct(), delayed);
  const schedules = list.schedules.map((s) => el('tr', { class: 'schedule-row', 'data-id': s.id },
    el('td', { class: 'mono' }, s.id), el('td', {}, s.task), el('td', {}, s.queue), el('td', {}, s.recurrence),
    el('td', { title: utc(s.next_run_at_ms) }, s.problem ? el('span', { class: 'error' }, s.problem) : until(s.next_run_at_ms)),
    s.args_hidden ? el('td', { class: 'muted args-hidden' }, HIDDEN_ARGS) : el('td', { class: 'mono' }, s.args),
    el('td', {},
      button('Run now', { class: 'mutate run-schedule', 'data-id': s.id }, () => act('/dashboard/api/schedules/run-now', { id: s.id }, s.id + ' runs once now')),
      ' ',
      button('Unschedule', { class: 'mutate danger unschedule', 'data-id': s.id }, () => act('/dashboard/api/schedules/unschedule', { id: s.id }, 'unscheduled ' + s.id), 'Unschedule ' + s.id + '?'))));
  fill($('schedules-table').tBodies[0], JSON.stringify(list.schedules.map((s) => [s.id, s.problem, until(s.next_run_at_ms)])) + canAct(), schedules);
}

// Cache: keys by prefix, one value as text.
async function refreshCache() {
  if (page() !== 'cache' || !canRead()) return;
  try {
    state.cache = await getJson('/dashboard/api/cache/keys?prefix=' + encodeURIComponent(state.cachePrefix));
    renderCache();
  } catch (err) {
    say('could not list cache keys: ' + err.message);
  }
}

function renderCache() {
  const list = state.cache;
  const total = list.total_exact ? String(list.total) : 'at least ' + list.total;
  $('cache-count').textContent = list.truncated
    ? '(the first ' + list.keys.length + ' of ' + total + ' keys: narrow the prefix)' : '(' + total + ')';
  const rows = list.keys.map((k) => el('tr', { class: 'cache-row', 'data-key': k.key },
    el('td', { class: 'mono' }, k.key), el('td', {}, k.kind),
    el('td', {}, k.ttl_ms === null ? 'no expiry' : duration(k.ttl_ms)),
    el('td', {}, k.kind === 'list' ? k.size + ' items' : k.size + ' bytes'),
    el('td', {},
      // Values are user data: only a logged-in session may read them.
      canAct() ? button('View', { class: 'view-key', 'data-key': k.key }, () => viewKey(k.key)) : null,
      ' ',
      button('Delete', { class: 'mutate danger delete-key', 'data-key': k.key }, () => act('/dashboard/api/cache/delete', { key: k.key }, 'deleted ' + k.key), 'Delete key ' + k.key + '?'))));
  fill($('cache-table').tBodies[0], JSON.stringify(list.keys.map((k) => [k.key, k.size, Math.floor((k.ttl_ms || 0) / 1000)])) + canAct(), rows);
}

async function viewKey(key) {
  try {
    const item = await getJson('/dashboard/api/cache/value?key=' + encodeURIComponent(key));
    $('cache-view').hidden = false;
    $('cache-view-key').textContent = key;
    $('cache-value').textContent = item.found ? item.text : '(no such key any more)';
    // A long list is read only in part: its size in bytes is then unknown (null).
    const size = item.kind === 'list'
      ? item.items + ' items' + (item.bytes === null ? '' : ', ' + item.bytes + ' bytes')
      : item.bytes + ' bytes';
    $('cache-value-note').textContent = !item.found ? '' : item.kind + ', ' + size
      + (item.ttl_ms === null ? ', no expiry' : ', expires in ' + duration(item.ttl_ms))
      + (item.truncated ? ' (truncated: the first ' + item.text.length + ' characters shown)' : '');
  } catch (err) {
    say('could not read ' + key + ': ' + err.message);
  }
}

// Bus health: this node's counters, and every node's from its status.
const BUS_FIELDS = ['accepted', 'oversized', 'malformed', 'bad_signature', 'outside_window', 'replayed', 'before_start', 'possibly_lost', 'handler_failures'];

function busCells(bus) {
  return BUS_FIELDS.map((f) => el('td', { class: 'bus-' + f }, bus ? bus[f] : '–'));
}

function renderBus(snap) {
  const rows = [el('tr', { class: 'bus-row this', 'data-node': snap.node_id },
    el('td', { class: 'mono' }, snap.node_id, el('span', { class: 'muted' }, ' (this node)')), ...busCells(snap.bus))];
  for (const n of snap.nodes.filter((n) => n.id !== snap.node_id)) {
    rows.push(el('tr', { class: 'bus-row', 'data-node': n.id }, el('td', { class: 'mono' }, n.id), ...busCells(n.bus)));
  }
  fill($('bus-table').tBodies[0], JSON.stringify([snap.bus, snap.nodes.map((n) => [n.id, n.bus])]), rows);
}

function onSnapshot(snap) {
  state.snapshot = snap;
  state.history.push({ at: snap.at_ms, processed: snap.tasks.processed, failed: snap.tasks.failed });
  if (state.history.length > HISTORY) state.history.shift();
  render();
  // The failed list is read again only when the failed set may have changed.
  const failedKey = snap.tasks.failed_now + ':' + snap.tasks.failed;
  if (failedKey !== state.failedKey) {
    state.failedKey = failedKey;
    refreshFailed();
  }
  state.ticks += 1;
  const slow = state.ticks % 5 === 0;
  if (slow || snap.tasks.delayed !== state.delayedCount) refreshScheduled();
  if (slow) refreshCache();
  if (state.task && state.task.task && !['completed', 'failed'].includes(state.task.task.state)) refreshTask();
}

// Reads again what the current page shows (after an action, or when the page opens).
async function refreshPage() {
  await Promise.all([refreshFailed(), refreshScheduled(), refreshCache(), refreshTask()]);
}

// Live updates: the server pushes a snapshot every second; the browser reconnects by itself.
function listen() {
  if (state.events) return;
  const events = new EventSource('/dashboard/api/events');
  state.events = events;
  events.addEventListener('open', () => { $('live').textContent = 'live'; $('live').className = 'live on'; });
  events.addEventListener('error', () => { $('live').textContent = 'reconnecting'; $('live').className = 'live'; });
  events.addEventListener('snapshot', (e) => onSnapshot(JSON.parse(e.data)));
  events.addEventListener('trouble', (e) => say('the node could not read the cluster: ' + JSON.parse(e.data).error));
}

async function start() {
  try {
    state.session = await getJson('/dashboard/api/session');
  } catch (err) {
    say('could not reach the node: ' + err.message);
    return;
  }
  const session = state.session;
  if (session.mode === 'read-only') {
    document.body.classList.add('read-only');
    const banner = $('banner');
    banner.textContent = 'Read-only: this node has no dashboard_secret, so the dashboard shows the cluster but cannot act on it.';
    banner.hidden = false;
  }
  $('logout').hidden = !session.logged_in;
  $('logout').addEventListener('click', async () => {
    await act('/dashboard/logout', {}, 'logged out');
    location.reload();
  });
  $('retry-all').addEventListener('click', () => act('/dashboard/api/failed/retry-all', {}, 'retried every failed task'));
  $('remove-all').addEventListener('click', () => {
    if (window.confirm('Remove every failed task?')) act('/dashboard/api/failed/remove-all', {}, 'removed every failed task');
  });
  $('failed-prev').addEventListener('click', () => { state.failedPage = Math.max(1, state.failedPage - 1); refreshFailed(); });
  $('failed-next').addEventListener('click', () => { state.failedPage += 1; refreshFailed(); });
  $('task-form').addEventListener('submit', (e) => { e.preventDefault(); searchTask($('task-id').value.trim()); });
  $('cache-form').addEventListener('submit', (e) => { e.preventDefault(); state.cachePrefix = $('cache-prefix').value; refreshCache(); });
  window.addEventListener('hashchange', () => { say(''); showPage(); refreshPage(); });
  showPage();
  if (session.mode === 'login' && !session.logged_in) {
    $('secret').focus();
    return;
  }
  try {
    onSnapshot(await getJson('/dashboard/api/snapshot'));
  } catch (err) {
    say('could not read the cluster: ' + err.message);
  }
  listen();
  refreshPage();
}

document.addEventListener('DOMContentLoaded', start);
