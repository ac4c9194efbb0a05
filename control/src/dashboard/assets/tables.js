// Table editors for an app's routes, schedules and triggers: edit rows, then save the whole
// table in one PUT (the API replaces tables atomically), showing the API's error as is.

import { api, can, enc } from './api.js';
import { busy, fmtTime, h, messageBox } from './dom.js';

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', '*'];

/** cols: [{key, label, kind: 'text'|'method'|'script', readonly?, fmt?}] */
async function tableEditor(root, { app, title, path, cols, help, empty }) {
  const url = `/v1/apps/${enc(app)}/${path}`;
  const [rows, scripts] = await Promise.all([api('GET', url), api('GET', `/v1/apps/${enc(app)}/scripts`)]);
  const endpoints = scripts.filter((s) => s.kind === 'endpoint').map((s) => s.name);
  const editable = can('deploy');
  const msg = messageBox();
  const body = h('tbody');
  const list = h('datalist#endpoints-' + path, endpoints.map((n) => h('option', { value: n })));

  const addRow = (row = {}) => {
    const cells = cols.map((c) => {
      if (c.readonly) return h('td', c.fmt ? c.fmt(row[c.key]) : String(row[c.key] ?? '-'));
      let input;
      if (c.kind === 'method') {
        input = h('select', { 'aria-label': c.label, disabled: !editable }, METHODS.map((m) => h('option', { value: m, selected: row[c.key] === m || null }, m)));
      } else {
        input = h('input', { 'aria-label': c.label, value: row[c.key] ?? '', disabled: !editable, list: c.kind === 'script' ? 'endpoints-' + path : null, placeholder: c.placeholder || null, spellcheck: 'false' });
      }
      input.dataset.key = c.key;
      return h('td', input);
    });
    const tr = h('tr', cells, editable ? h('td', h('button.small.secondary', { type: 'button', 'aria-label': 'Remove row', onclick: () => tr.remove() }, 'Remove')) : null);
    body.appendChild(tr);
    return tr;
  };
  for (const r of rows) addRow(r);

  const save = h('button', { type: 'button', 'data-test': 'save-table' }, 'Save table');
  save.addEventListener('click', () => busy(save, async () => {
    const out = [...body.querySelectorAll('tr')].map((tr) => {
      const o = {};
      for (const input of tr.querySelectorAll('[data-key]')) o[input.dataset.key] = input.value.trim();
      return o;
    });
    try {
      const saved = await api('PUT', url, out);
      msg.show(`Saved ${saved.length} ${saved.length === 1 ? 'row' : 'rows'}.`, 'ok');
    } catch (e) {
      msg.show(e.describe());
    }
  }));
  const add = h('button.secondary', { type: 'button', 'data-test': 'add-row', onclick: () => addRow().querySelector('input,select')?.focus() }, 'Add row');
  root.append(h('h1', title), help ? h('p.muted', help) : null, list,
    h('div.table-wrap', h('table', { 'data-test': path },
      h('thead', h('tr', cols.map((c) => h('th', { scope: 'col' }, c.label)), editable ? h('th', '') : null)),
      body)),
    rows.length || editable ? null : h('p.muted', empty),
    editable ? h('div.row', add, save) : h('p.muted', 'Read only: your token cannot change this table.'),
    msg);
}

export function renderRoutes(root, [app]) {
  return tableEditor(root, {
    app, title: 'Routes', path: 'routes', empty: 'No routes.',
    help: `Public URL: /${app}/PATH on the public port. Patterns: static segments, :param, a final *rest.`,
    cols: [
      { key: 'method', label: 'Method', kind: 'method' },
      { key: 'path', label: 'Path', placeholder: '/items/:id' },
      { key: 'script', label: 'Script', kind: 'script' },
    ],
  });
}

export function renderSchedules(root, [app]) {
  return tableEditor(root, {
    app, title: 'Schedules', path: 'schedules', empty: 'No schedules.',
    help: 'Cron expressions (croner syntax, UTC), each running an endpoint script.',
    cols: [
      { key: 'name', label: 'Name' },
      { key: 'cron', label: 'Cron', placeholder: '*/5 * * * *' },
      { key: 'script', label: 'Script', kind: 'script' },
      { key: 'last_run', label: 'Last run', readonly: true, fmt: fmtTime },
      { key: 'next_run', label: 'Next run', readonly: true, fmt: fmtTime },
    ],
  });
}

export function renderTriggers(root, [app]) {
  return tableEditor(root, {
    app, title: 'Triggers', path: 'triggers', empty: 'No triggers.',
    help: 'events::emit(EVENT, payload) runs every script mapped to EVENT.',
    cols: [
      { key: 'event', label: 'Event' },
      { key: 'script', label: 'Script', kind: 'script' },
    ],
  });
}

