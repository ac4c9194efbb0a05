// Overview: the node (GET /v1/health) and, where the node has it, its traffic (GET /v1/stats):
// uptime, engines, queue, rate, errors, latency charts (inline SVG drawn here) and a sortable
// per-app table. Refreshes every 5 s while the tab is visible.

import { api, current } from './api.js';
import { clear, h, table } from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

/** A line chart of one or more series (arrays of numbers or null gaps). */
export function chart(title, series, unit) {
  const W = 600, H = 140, P = 4;
  const all = series.flatMap((s) => s.values.filter((v) => typeof v === 'number'));
  const max = Math.max(1e-9, ...all);
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': title, preserveAspectRatio: 'none' });
  root.appendChild(svg('line', { x1: 0, y1: H - P, x2: W, y2: H - P, class: 'axis' }));
  for (const [i, s] of series.entries()) {
    const n = s.values.length;
    let d = '';
    let pen = false;
    s.values.forEach((v, j) => {
      if (typeof v !== 'number') { pen = false; return; }
      const x = n <= 1 ? W : (j / (n - 1)) * W;
      const y = H - P - (v / max) * (H - 2 * P);
      d += (pen ? 'L' : 'M') + x.toFixed(1) + ' ' + y.toFixed(1);
      pen = true;
    });
    if (d) root.appendChild(svg('path', { d, class: 'line s' + i }));
  }
  const legend = h('div.legend', series.map((s, i) => h('span.key.s' + i, s.label)),
    h('span.muted', `max ${fmt(max)}${unit}`));
  return h('figure.chart-box', h('figcaption', title), root, legend);
}

function fmt(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '-';
  if (Math.abs(n) >= 100) return Math.round(n).toString();
  return (Math.round(n * 100) / 100).toString();
}

function uptime(s) {
  const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return (d ? d + 'd ' : '') + (d || hr ? hr + 'h ' : '') + m + 'm ' + (s % 60) + 's';
}

/** Sums a per-second series into buckets of `k` seconds (per-second rate kept). */
function bucket(values, k) {
  const out = [];
  for (let i = 0; i < values.length; i += k) {
    const part = values.slice(i, i + k);
    out.push(part.reduce((a, b) => a + (b || 0), 0) / part.length);
  }
  return out;
}

function tile(label, value, test) {
  return h('div.tile', h('div.tile-label', label), h('div.tile-value', { 'data-test': test }, value));
}

const COLS = [
  ['app', 'App'], ['requests', 'Requests'], ['errors', 'Errors'], ['rps', 'Req/s'],
  ['error_rate', 'Error rate'], ['p50_ms', 'p50 ms'], ['p99_ms', 'p99 ms'],
];

function appTable(apps, sort) {
  const sorted = [...apps].sort((a, b) => {
    const x = a[sort.key], y = b[sort.key];
    const c = typeof x === 'string' ? String(x).localeCompare(String(y)) : (x ?? -1) - (y ?? -1);
    return sort.desc ? -c : c;
  });
  const wrap = h('div');
  const heads = COLS.map(([key, label]) => h('button.link.sort', {
    type: 'button',
    'aria-sort': sort.key === key ? (sort.desc ? 'descending' : 'ascending') : null,
    onclick: () => {
      sort.desc = sort.key === key ? !sort.desc : key !== 'app';
      sort.key = key;
      wrap.replaceWith(appTable(apps, sort));
    },
  }, label + (sort.key === key ? (sort.desc ? ' ▼' : ' ▲') : '')));
  wrap.appendChild(table(heads, sorted.map((a) => [
    h('a', { href: '#/apps/' + encodeURIComponent(a.app) + '/logs' }, a.app),
    fmt(a.requests), fmt(a.errors), fmt(a.rps),
    fmt((a.error_rate || 0) * 100) + ' %', fmt(a.p50_ms), fmt(a.p99_ms),
  ]), { 'data-test': 'stats-apps' }));
  return wrap;
}

export async function render(root) {
  const sort = { key: 'requests', desc: true };
  const box = h('div');
  // One app's traffic (`/v1/stats?app=NAME`) or the whole node's.
  const only = h('select', { 'data-test': 'stats-app', 'aria-label': 'Traffic of' },
    h('option', { value: '' }, 'all apps'),
    (current()?.apps || []).map((a) => h('option', { value: a }, a)));
  only.addEventListener('change', () => draw().catch(() => {}));
  root.append(h('div.row', h('h1', 'Overview'), only), box);
  let timer = null;
  let first = true;
  const draw = async () => {
    const health = await api('GET', '/v1/health');
    let stats = null;
    let statsError = null;
    try {
      stats = await api('GET', '/v1/stats' + (only.value ? '?app=' + encodeURIComponent(only.value) : ''));
    } catch (e) {
      // Every node serves stats; a 404 names an app that is gone (deleted while selected).
      statsError = e;
    }
    const parts = [h('div.tiles',
      tile('Revision', String(health.revision), 'revision'),
      tile('Store', health.store, 'store'),
      tile('SDK version', health.sdk_version || '-', 'sdk'),
      tile('Your apps', h('a', { href: '#/apps' }, String((current()?.apps || []).length)), 'apps'),
      stats && tile('Uptime', uptime(stats.node.uptime_s), 'uptime'),
      stats && tile('Engines busy', `${stats.node.engines_busy} / ${stats.node.engines}`, 'engines'),
      stats && tile('Queue depth', String(stats.node.queue_depth), 'queue'),
      stats && tile('Requests/s', fmt(stats.total.rps), 'rps'),
      stats && tile('Error rate', fmt(stats.total.error_rate * 100) + ' %', 'error-rate'),
      stats && tile('p50 / p99', `${fmt(stats.total.p50_ms)} / ${fmt(stats.total.p99_ms)} ms`, 'latency'),
    )];
    if (stats) {
      const s = stats.series;
      parts.push(h('div.charts',
        chart(`Requests and errors per second (last ${Math.round(stats.window_s / 60)} min, 10 s buckets)`,
          [{ label: 'requests/s', values: bucket(s.requests, 10) }, { label: 'errors/s', values: bucket(s.errors, 10) }], '/s'),
        chart('Latency', [{ label: 'p50', values: s.p50_ms }, { label: 'p99', values: s.p99_ms }], ' ms')));
      parts.push(h('h2', 'Apps'), stats.apps.length ? appTable(stats.apps, sort) : h('p.muted', 'No app has had traffic in this window.'));
    } else {
      parts.push(h('div.msg.error', 'Stats: ' + statsError.describe()));
    }
    clear(box).append(...parts);
    if (first) {
      first = false;
      // Read by the browser test: time from navigation start to the overview drawn.
      performance.mark('picloud-overview-rendered');
      box.setAttribute('data-rendered', String(Math.round(performance.now())));
    }
  };
  await draw();
  const tick = () => {
    timer = setTimeout(async () => {
      if (document.visibilityState === 'visible') {
        try { await draw(); } catch { /* shown on the next successful draw */ }
      }
      if (timer !== null) tick();
    }, 5000);
  };
  tick();
  return () => { clearTimeout(timer); timer = null; };
}
