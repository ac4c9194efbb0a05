// An app's env (names only: values are write-only, the API never returns them) and its KV
// data (browse by prefix with paging, view as pretty JSON, set, delete).

import { api, ApiError, can, enc } from './api.js';
import { busy, clear, confirmDialog, field, h, messageBox, table, toast } from './dom.js';

export async function renderEnv(root, [app]) {
  const url = `/v1/apps/${enc(app)}/env`;
  const names = await api('GET', url);
  const editable = can('deploy');
  const msg = messageBox();
  root.append(h('h1', 'Env'), h('p.muted', 'Variables and secrets read by env::get(NAME). Values are never shown: the node never sends them back.'));
  if (editable) {
    const name = h('input', { required: true, pattern: '[A-Za-z_][A-Za-z0-9_]{0,127}', 'data-test': 'env-name', autocomplete: 'off', spellcheck: 'false' });
    const value = h('input', { type: 'password', 'data-test': 'env-value', autocomplete: 'new-password' });
    const btn = h('button', { type: 'submit', 'data-test': 'env-set' }, 'Set');
    root.append(h('form.inline', {
      onsubmit: (e) => {
        e.preventDefault();
        busy(btn, async () => {
          try {
            await api('PUT', `${url}/${enc(name.value)}`, value.value);
            value.value = '';
            toast('Set ' + name.value, 'ok');
            window.dispatchEvent(new HashChangeEvent('hashchange'));
          } catch (err) { msg.show(err.describe()); }
        });
      },
    }, field('Name', name), field('Value (write-only)', value), btn));
  }
  root.append(msg);
  if (!names.length) { root.append(h('p.muted', 'No variables.')); return; }
  root.append(table(['Name', ''], names.map((n) => [
    h('code', n),
    editable ? h('button.danger.small', {
      type: 'button', 'data-test': 'env-delete',
      onclick: async (e) => {
        if (!(await confirmDialog(`Delete variable ${n}?`))) return;
        await busy(e.target, async () => {
          try {
            await api('DELETE', `${url}/${enc(n)}`);
            toast('Deleted ' + n, 'ok');
            window.dispatchEvent(new HashChangeEvent('hashchange'));
          } catch (err) { msg.show(err.describe()); }
        });
      },
    }, 'Delete') : '',
  ]), { 'data-test': 'env' }));
}

const PAGE = 50;

export async function renderKv(root, [app]) {
  const url = `/v1/apps/${enc(app)}/kv`;
  const editable = can('deploy');
  const msg = messageBox();
  const prefix = h('input', { 'data-test': 'kv-prefix', placeholder: 'user/', spellcheck: 'false', autocomplete: 'off' });
  const listBox = h('div');
  const view = h('div.kv-view');
  let page = 0;

  const load = async () => {
    // The API lists keys from the start of the prefix; a page is a slice of the first
    // (page + 1) * PAGE + 1 keys (the extra one tells whether there is a next page).
    const want = Math.min((page + 1) * PAGE + 1, 10000);
    const r = await api('GET', `${url}?prefix=${enc(prefix.value)}&limit=${want}`);
    const keys = r.keys.slice(page * PAGE, (page + 1) * PAGE);
    const more = r.keys.length > (page + 1) * PAGE;
    clear(listBox).append(
      keys.length ? table(['Key'], keys.map((k) => [h('button.link', { type: 'button', 'data-test': 'kv-key', onclick: () => show(k) }, k)]), { 'data-test': 'kv' })
        : h('p.muted', 'No keys' + (prefix.value ? ' with this prefix.' : '.')),
      h('div.row.pager',
        h('button.secondary.small', { type: 'button', disabled: page === 0 || null, onclick: () => { page--; load().catch(fail); } }, '← Previous'),
        h('span.muted', `page ${page + 1}`),
        h('button.secondary.small', { type: 'button', disabled: !more || null, 'data-test': 'kv-next', onclick: () => { page++; load().catch(fail); } }, 'Next →')));
  };
  const fail = (e) => msg.show(e.describe ? e.describe() : String(e));

  const show = async (key) => {
    try {
      const v = await api('GET', `${url}/${enc(key)}`);
      clear(view).append(h('h2', key), h('pre.json', { 'data-test': 'kv-value' }, JSON.stringify(v, null, 2)),
        editable ? h('div.row',
          h('button.secondary.small', { type: 'button', onclick: () => { keyIn.value = key; valIn.value = JSON.stringify(v, null, 2); valIn.focus(); } }, 'Edit'),
          h('button.danger.small', {
            type: 'button', 'data-test': 'kv-delete',
            onclick: async (e) => {
              if (!(await confirmDialog(`Delete key ${key}?`))) return;
              await busy(e.target, async () => {
                try {
                  await api('DELETE', `${url}/${enc(key)}`);
                  toast('Deleted ' + key, 'ok');
                  clear(view);
                  await load();
                } catch (err) { fail(err); }
              });
            },
          }, 'Delete')) : null);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) clear(view).append(h('p.muted', `${key}: gone (deleted or expired).`));
      else fail(e);
    }
  };

  const keyIn = h('input', { required: true, 'data-test': 'kv-key-in', spellcheck: 'false', autocomplete: 'off' });
  const valIn = h('textarea.code', { rows: 4, required: true, 'data-test': 'kv-value-in', spellcheck: 'false', placeholder: '{"any": "JSON"}' });
  const ttl = h('input', { type: 'number', min: 1, 'data-test': 'kv-ttl', placeholder: 'none' });
  const setBtn = h('button', { type: 'submit', 'data-test': 'kv-set' }, 'Set');
  root.append(h('h1', 'KV'),
    h('form.inline', { onsubmit: (e) => { e.preventDefault(); page = 0; load().catch(fail); } },
      field('Prefix', prefix), h('button.secondary', { type: 'submit' }, 'List')),
    msg, h('div.split', listBox, view));
  if (editable) {
    root.append(h('form.card', {
      onsubmit: (e) => {
        e.preventDefault();
        let value;
        try { value = JSON.parse(valIn.value); } catch (err) { msg.show('The value is not JSON (a string needs quotes): ' + err.message); return; }
        busy(setBtn, async () => {
          try {
            await api('PUT', `${url}/${enc(keyIn.value)}${ttl.value ? '?ttl=' + enc(ttl.value) : ''}`, JSON.stringify(value), { type: 'application/json' });
            toast('Set ' + keyIn.value, 'ok');
            msg.hide();
            await load();
            await show(keyIn.value);
          } catch (err) { fail(err); }
        });
      },
    }, h('h2', 'Set a key'), field('Key', keyIn), field('Value (JSON)', valIn), field('TTL seconds (optional)', ttl), setBtn));
  }
  await load();
}
