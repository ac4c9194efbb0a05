// Apps: the list (create, delete) and one app's settings (hosts, debug, limits), with its
// quarantine on this node, if any, and a button to lift it.

import { api, can, enc, whoami } from './api.js';
import { busy, confirmDialog, field, fmtTime, h, messageBox, table, toast } from './dom.js';

export async function renderList(root) {
  const apps = await api('GET', '/v1/apps');
  const msg = messageBox();
  root.append(h('h1', 'Apps'));
  if (can('admin')) {
    const name = h('input', { name: 'app', required: true, pattern: '[a-z0-9][a-z0-9\\-]{0,62}', placeholder: 'my-app', 'data-test': 'new-app', autocomplete: 'off' });
    const btn = h('button', { type: 'submit', 'data-test': 'create-app' }, 'Create app');
    root.append(h('form.inline', {
      onsubmit: async (e) => {
        e.preventDefault();
        await busy(btn, async () => {
          try {
            await api('GET', '/v1/apps/' + enc(name.value)).then(() => { throw new Error('exists'); }, (err) => { if (err.status !== 404) throw err; });
            await api('PUT', '/v1/apps/' + enc(name.value), '');
            toast('Created app ' + name.value, 'ok');
            await whoami(true);
            location.hash = '#/apps/' + enc(name.value) + '/scripts';
          } catch (err) {
            msg.show(err.message === 'exists' ? `App ${name.value} already exists.` : err.describe());
          }
        });
      },
    }, field('New app', name, 'a-z, 0-9 and -'), btn));
  }
  root.append(msg);
  if (!apps.length) {
    root.append(h('p.muted', 'No apps yet.'));
    return;
  }
  root.append(table(['Name', 'Hosts', 'Debug', 'Updated', ''], apps.map((a) => [
    h('a', { href: '#/apps/' + enc(a.name) + '/scripts', 'data-test': 'app-link' }, a.name),
    a.hosts.join(', ') || '-',
    a.debug ? 'yes' : 'no',
    fmtTime(a.updated_at),
    can('admin') ? h('button.danger.small', {
      type: 'button', 'data-test': 'delete-app',
      onclick: async (e) => {
        if (!(await confirmDialog(`Delete app ${a.name} with all its scripts, history, routes, KV data and logs?`))) return;
        await busy(e.target, async () => {
          try {
            await api('DELETE', '/v1/apps/' + enc(a.name));
            toast('Deleted app ' + a.name, 'ok');
            location.hash = '#/apps';
            window.dispatchEvent(new HashChangeEvent('hashchange'));
          } catch (err) {
            msg.show(err.describe());
          }
        });
      },
    }, 'Delete') : '',
  ]), { 'data-test': 'apps' }));
}

export async function renderSettings(root, [app]) {
  const a = await api('GET', '/v1/apps/' + enc(app));
  const msg = messageBox();
  const editable = can('admin');
  const hosts = h('input', { value: a.hosts.join(', '), disabled: !editable, 'data-test': 'hosts' });
  const debug = h('input', { type: 'checkbox', checked: a.debug, disabled: !editable, 'data-test': 'debug' });
  const limits = h('textarea.code', { rows: 6, disabled: !editable, spellcheck: 'false', 'data-test': 'limits' });
  limits.value = JSON.stringify(a.limits || {}, null, 2);
  const save = h('button', { type: 'submit', 'data-test': 'save-settings' }, 'Save settings');
  // Breakers are per node: this says what the node serving the dashboard does.
  const q = a.quarantine;
  const quarantine = q ? h('div.msg.error', { 'data-test': 'quarantine' },
    h('p', `Quarantined on this node since ${fmtTime(q.since_ms)} until ${fmtTime(q.until_ms)}: ${q.reason}. `
      + 'Its requests get 503 app_quarantined and its schedules and triggers are skipped; after the cool-down one run is let through.'),
    can('deploy') ? h('button.small', {
      'data-test': 'unquarantine',
      onclick: async (e) => {
        await busy(e.target, async () => {
          try {
            await api('POST', `/v1/apps/${enc(app)}/unquarantine`);
            toast('Quarantine lifted for ' + app, 'ok');
            window.dispatchEvent(new HashChangeEvent('hashchange'));
          } catch (err) {
            msg.show(err.describe());
          }
        });
      },
    }, 'Lift quarantine') : '') : '';
  root.append(h('h1', 'Settings'),
    h('p.muted', `Created ${fmtTime(a.created_at)}, updated ${fmtTime(a.updated_at)}. Public URL: /${app}/…`),
    quarantine,
    h('form.card', {
      onsubmit: async (e) => {
        e.preventDefault();
        let lim;
        try {
          lim = JSON.parse(limits.value || '{}');
        } catch (err) {
          msg.show('Limits are not JSON: ' + err.message);
          return;
        }
        await busy(save, async () => {
          try {
            await api('PUT', '/v1/apps/' + enc(app), {
              hosts: hosts.value.split(',').map((s) => s.trim()).filter(Boolean),
              debug: debug.checked,
              limits: lim,
            });
            msg.show('Saved.', 'ok');
          } catch (err) {
            msg.show(err.describe());
          }
        });
      },
    },
    field('Hosts (comma separated)', hosts),
    h('div.field.check', debug, h('label', { for: debug.id || (debug.id = 'dbg') }, 'Debug: show script errors to clients')),
    field('Limits (JSON; {} means the node defaults)', limits),
    editable ? save : h('p.muted', 'Read only: changing settings needs an admin token.'),
    msg));
}
