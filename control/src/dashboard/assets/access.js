// Tokens (list, create — the secret is shown once —, revoke) and the audit log; both need an
// admin token on every app ("*"), which is the only kind the navigation shows them to.

import { api, enc } from './api.js';
import { busy, clear, confirmDialog, field, fmtTime, h, messageBox, table, toast } from './dom.js';

export async function renderTokens(root) {
  const tokens = await api('GET', '/v1/tokens');
  const msg = messageBox();
  const name = h('input', { required: true, 'data-test': 'token-name', autocomplete: 'off', spellcheck: 'false' });
  const role = h('select', { 'data-test': 'token-role' }, ['read', 'deploy', 'admin'].map((r) => h('option', { value: r }, r)));
  const apps = h('input', { required: true, value: '*', 'data-test': 'token-apps', spellcheck: 'false' });
  const create = h('button', { type: 'submit', 'data-test': 'token-create' }, 'Create token');
  const secret = h('div');
  root.append(h('h1', 'Tokens'),
    h('form.inline', {
      onsubmit: (e) => {
        e.preventDefault();
        busy(create, async () => {
          try {
            const list = apps.value.trim() === '*' ? '*' : apps.value.split(',').map((s) => s.trim()).filter(Boolean);
            const t = await api('POST', '/v1/tokens', { name: name.value, role: role.value, apps: list });
            const out = h('input.secret', { readonly: true, value: t.token, 'data-test': 'token-secret', 'aria-label': 'The new token' });
            clear(secret).append(h('div.msg.ok', h('p', `Token ${t.name} (role ${t.role}). This is the only time it is shown: copy it now.`), out));
            out.select();
            msg.hide();
          } catch (err) { msg.show(err.describe()); }
        });
      },
    }, field('Name', name), field('Role', role), field('Apps ("*" or a,b)', apps), create),
    msg, secret,
    table(['Name', 'Role', 'Apps', 'Created', 'Last used', ''], tokens.map((t) => [
      t.name, t.role, Array.isArray(t.apps) ? t.apps.join(', ') : t.apps, fmtTime(t.created_at), t.last_used_at ? fmtTime(t.last_used_at) : 'never',
      h('button.danger.small', {
        type: 'button',
        onclick: async (e) => {
          if (!(await confirmDialog(`Revoke token ${t.name}? Clients using it get 401 from now on.`, 'Revoke'))) return;
          await busy(e.target, async () => {
            try {
              await api('DELETE', '/v1/tokens/' + enc(t.name));
              toast('Revoked ' + t.name, 'ok');
              window.dispatchEvent(new HashChangeEvent('hashchange'));
            } catch (err) { msg.show(err.describe()); }
          });
        },
      }, 'Revoke'),
    ]), { 'data-test': 'tokens' }));
}

export async function renderAudit(root) {
  const box = h('div');
  const more = h('button.secondary', { type: 'button' }, 'Older entries');
  let entries = await api('GET', '/v1/audit?limit=100');
  const draw = () => clear(box).append(table(['Id', 'Time', 'Token', 'Method', 'Path', 'App', 'Outcome', 'Revision', 'Details'],
    entries.slice().reverse().map((a) => [
      String(a.id), fmtTime(a.ts), a.token, a.method, h('code', a.path), a.app || '-',
      String(a.status) + (a.code ? ' ' + a.code : ''), a.revision ?? '-',
      a.details && Object.keys(a.details).length ? h('code', JSON.stringify(a.details)) : '-',
    ]), { 'data-test': 'audit' }));
  // The API pages forward from `after`; older pages are read by stepping back from the oldest id.
  more.addEventListener('click', () => busy(more, async () => {
    const oldest = entries.length ? entries[0].id : 0;
    if (oldest <= 1) { more.disabled = true; return; }
    const after = Math.max(0, oldest - 101);
    const older = (await api('GET', `/v1/audit?after=${after}&limit=100`)).filter((a) => a.id < oldest);
    entries = older.concat(entries);
    draw();
  }));
  root.append(h('h1', 'Audit log'), h('p.muted', 'Every authenticated admin write, refused ones included; newest first.'), box, more);
  draw();
}
