// An app's invocation log: a live tail (polls `GET …/logs?after=ID` about once a second, only
// while this page is open and the tab visible), filters by status class, script and trigger,
// one invocation's details, and a search by request id over the newest records.

import { api, enc } from './api.js';
import { clear, field, fmtBytes, fmtDuration, fmtTime, h, messageBox } from './dom.js';

const KEEP = 1000;

export async function render(root, [app]) {
  const url = `/v1/apps/${enc(app)}/logs`;
  let records = await api('GET', `${url}?limit=200`);
  let lastId = records.length ? records[records.length - 1].id : 0;
  const msg = messageBox();
  const status = h('select', { 'data-test': 'f-status' }, ['all', '2xx', '3xx', '4xx', '5xx'].map((s) => h('option', { value: s }, s)));
  const script = h('input', { 'data-test': 'f-script', placeholder: 'any', spellcheck: 'false', autocomplete: 'off' });
  const trigger = h('select', { 'data-test': 'f-trigger' }, ['all', 'http', 'cron', 'event'].map((s) => h('option', { value: s }, s)));
  const reqId = h('input', { 'data-test': 'f-request', placeholder: 'request id', spellcheck: 'false', autocomplete: 'off' });
  const live = h('input', { type: 'checkbox', checked: true, 'data-test': 'live' });
  const state = h('span.muted.live-state', { 'data-test': 'live-state' });
  const body = h('tbody');
  const details = h('div.details', { 'data-test': 'details' });

  const passes = (r) => {
    if (status.value !== 'all' && String(r.status)[0] !== status.value[0]) return false;
    if (script.value.trim() && !r.script.includes(script.value.trim())) return false;
    if (trigger.value !== 'all' && r.trigger !== trigger.value) return false;
    if (reqId.value.trim() && !(r.request_id || '').startsWith(reqId.value.trim())) return false;
    return true;
  };
  const row = (r) => h('tr', { class: r.status >= 500 ? 'bad' : r.status >= 400 ? 'warn' : null, tabindex: 0, 'data-test': 'log-row',
    onclick: () => showDetails(r),
    onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); showDetails(r); } },
  },
  h('td.nowrap', { title: fmtTime(r.ts) }, r.ts ? new Date(r.ts).toLocaleTimeString() : '-'), h('td', String(r.status)), h('td', r.script), h('td', r.trigger),
  h('td', fmtDuration(r.duration_us)), h('td', r.error || ''),
  h('td.msg-cell', r.lines.length ? r.lines[r.lines.length - 1].message : ''));
  const redraw = () => {
    clear(body);
    const shown = records.filter(passes).slice(-300).reverse();
    for (const r of shown) body.appendChild(row(r));
    if (!shown.length) body.appendChild(h('tr', h('td', { colspan: 7 }, h('span.muted', 'No invocations match.'))));
  };
  const showDetails = (r) => {
    clear(details).append(h('h2', `Invocation ${r.id}`),
      h('dl',
        h('dt', 'Request id'), h('dd', h('code', r.request_id || '-')),
        h('dt', 'Time'), h('dd', fmtTime(r.ts)),
        h('dt', 'Script'), h('dd', r.script),
        h('dt', 'Trigger'), h('dd', r.trigger),
        h('dt', 'Status'), h('dd', String(r.status)),
        h('dt', 'Duration'), h('dd', fmtDuration(r.duration_us)),
        h('dt', 'Operations'), h('dd', String(r.operations)),
        h('dt', 'Heap peak'), h('dd', fmtBytes(r.heap_peak_bytes)),
        h('dt', 'Error'), h('dd', r.error || '-')),
      h('h3', 'Lines'),
      r.lines.length ? h('pre.lines', { 'data-test': 'lines' }, r.lines.map((l) => h('span', { class: 'lvl-' + l.level }, `${l.level}: ${l.message}\n`)))
        : h('p.muted', 'No log lines.'));
    details.scrollIntoView({ block: 'nearest' });
  };
  for (const el of [status, trigger]) el.addEventListener('change', redraw);
  for (const el of [script, reqId]) el.addEventListener('input', redraw);

  const find = h('button.secondary', { type: 'button', 'data-test': 'find-request' }, 'Find');
  find.addEventListener('click', async () => {
    // Not in what is loaded: search the newest records the node keeps.
    const id = reqId.value.trim();
    if (!id) return;
    let hit = records.find((r) => (r.request_id || '').startsWith(id));
    if (!hit) {
      const all = await api('GET', `${url}?limit=${KEEP}`).catch((e) => { msg.show(e.describe()); return []; });
      hit = all.find((r) => (r.request_id || '').startsWith(id));
    }
    if (hit) showDetails(hit);
    else msg.show(`No invocation with request id ${id} among the newest ${KEEP}.`, 'info');
  });

  root.append(h('h1', 'Logs'),
    h('div.filters', field('Status', status), field('Script', script), field('Trigger', trigger),
      field('Request id', reqId), find,
      h('div.field.check', live, h('label', { for: live.id = 'live' }, 'Live tail')), state),
    msg,
    h('div.split.logs',
      h('div.table-wrap', h('table', { 'data-test': 'logs' },
        h('thead', h('tr', ['Time', 'Status', 'Script', 'Trigger', 'Duration', 'Error', 'Last line'].map((c) => h('th', { scope: 'col' }, c)))),
        body)),
      details));
  redraw();

  let timer = null;
  let stopped = false;
  const poll = async () => {
    timer = null;
    if (stopped) return;
    if (live.checked && document.visibilityState === 'visible') {
      try {
        const fresh = await api('GET', `${url}?after=${lastId}&limit=1000`);
        if (fresh.length) {
          records = records.concat(fresh).slice(-KEEP);
          lastId = fresh[fresh.length - 1].id;
          redraw();
        }
        state.textContent = 'live · ' + new Date().toLocaleTimeString();
        msg.hide();
      } catch (e) {
        state.textContent = 'paused: ' + e.message;
      }
    } else {
      state.textContent = live.checked ? 'paused while the tab is hidden' : 'paused';
    }
    if (!stopped) timer = setTimeout(poll, 1000);
  };
  // Back to visible: catch up at once instead of waiting for the next tick.
  const onVisible = () => {
    if (document.visibilityState === 'visible' && timer !== null) {
      clearTimeout(timer);
      poll();
    }
  };
  document.addEventListener('visibilitychange', onVisible);
  timer = setTimeout(poll, 1000);
  return () => {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
    document.removeEventListener('visibilitychange', onVisible);
  };
}
