// Scripts of an app: the list (kind, version, imports, importers), and one script: the editor
// (check without saving, save, compile errors marked at their line), delete (with the 409's
// reason), version history with a line diff between any two versions, and rollback.

import { api, ApiError, can, enc } from './api.js';
import { busy, clear, confirmDialog, field, fmtTime, h, messageBox, table, toast } from './dom.js';
import { diffLines, editor } from './editor.js';

const NEW_ENDPOINT = '// An endpoint: its last value is the response.\n#{ ok: true, path: request.path }\n';
const NEW_MODULE = '// A module: fn definitions and constants only.\nfn hello(name) {\n  `hello ${name}`\n}\n';

export async function renderList(root, [app]) {
  const scripts = await api('GET', `/v1/apps/${enc(app)}/scripts`);
  const importers = {};
  for (const s of scripts) for (const m of s.imports) (importers[m] ||= []).push(s.name);
  root.append(h('h1', 'Scripts'));
  if (can('deploy')) {
    const name = h('input', { required: true, pattern: '[a-z0-9_][a-z0-9_\\-]{0,62}', placeholder: 'hello', 'data-test': 'new-script', autocomplete: 'off' });
    const kind = h('select', { 'data-test': 'new-kind' }, h('option', { value: 'endpoint' }, 'endpoint'), h('option', { value: 'module' }, 'module'));
    root.append(h('form.inline', {
      onsubmit: (e) => {
        e.preventDefault();
        sessionStorage.setItem('picloud.newkind', kind.value);
        location.hash = `#/apps/${enc(app)}/scripts/${enc(name.value)}`;
      },
    }, field('New script', name), field('Kind', kind), h('button', { type: 'submit', 'data-test': 'create-script' }, 'Create')));
  }
  if (!scripts.length) {
    root.append(h('p.muted', 'No scripts yet.'));
    return;
  }
  root.append(table(['Name', 'Kind', 'Version', 'Imports', 'Imported by', 'Updated'], scripts.map((s) => [
    h('a', { href: `#/apps/${enc(app)}/scripts/${enc(s.name)}`, 'data-test': 'script-link' }, s.name),
    h('span.badge.' + s.kind, s.kind),
    'v' + s.version,
    s.imports.join(', ') || '-',
    (importers[s.name] || []).join(', ') || '-',
    fmtTime(s.updated_at),
  ]), { 'data-test': 'scripts' }));
}

export async function renderScript(root, [app, name]) {
  const base = `/v1/apps/${enc(app)}/scripts/${enc(name)}`;
  let script = null;
  try {
    script = await api('GET', base);
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 404) throw e;
  }
  const editable = can('deploy');
  const newKind = sessionStorage.getItem('picloud.newkind') || 'endpoint';
  sessionStorage.removeItem('picloud.newkind');
  const kind = script ? script.kind : newKind;
  const ed = editor({ value: script ? script.source : (kind === 'module' ? NEW_MODULE : NEW_ENDPOINT), readOnly: !editable });
  const msg = messageBox();
  msg.setAttribute('data-test', 'editor-msg');
  const head = h('div.script-head',
    h('h1', name),
    h('span.badge.' + kind, kind),
    script ? h('span.muted', { 'data-test': 'version' }, `v${script.version} · ${script.hash.slice(0, 12)} · imports: ${script.imports.join(', ') || 'none'}`)
      : h('span.muted', 'new, not saved yet'));

  const showError = (err) => {
    if (err instanceof ApiError && err.code === 'compile_error' && err.line) {
      ed.markError(err.line, err.column);
      msg.show(`Line ${err.line}, column ${err.column}: ${err.message}`, 'error');
    } else {
      ed.clearError();
      msg.show(err.describe ? err.describe() : String(err));
    }
  };
  const check = h('button.secondary', { type: 'button', 'data-test': 'check' }, 'Check');
  check.addEventListener('click', () => busy(check, async () => {
    try {
      const r = await api('POST', `/v1/apps/${enc(app)}/check?kind=${kind}&name=${enc(name)}`, ed.value());
      ed.clearError();
      msg.show(`Compiles.${r.imports.length ? ' Imports: ' + r.imports.join(', ') : ''}`, 'ok');
    } catch (e) { showError(e); }
  }));
  const save = h('button', { type: 'button', 'data-test': 'save' }, 'Save');
  save.addEventListener('click', () => busy(save, async () => {
    try {
      const r = await api('PUT', `${base}?kind=${kind}`, ed.value());
      ed.clearError();
      toast(`Saved ${name} version ${r.version}`, 'ok');
      window.dispatchEvent(new HashChangeEvent('hashchange'));
    } catch (e) { showError(e); }
  }));
  const del = h('button.danger', { type: 'button', 'data-test': 'delete-script' }, 'Delete');
  del.addEventListener('click', async () => {
    if (!(await confirmDialog(`Delete script ${name} and its whole history?`))) return;
    await busy(del, async () => {
      try {
        await api('DELETE', base);
        toast('Deleted ' + name, 'ok');
        location.hash = `#/apps/${enc(app)}/scripts`;
      } catch (e) { showError(e); }
    });
  });
  // Ctrl/Cmd+S saves, Ctrl/Cmd+Enter checks.
  ed.textarea.addEventListener('keydown', (e) => {
    if (!(e.ctrlKey || e.metaKey)) return;
    if (e.key === 's' && editable) { e.preventDefault(); save.click(); }
    if (e.key === 'Enter') { e.preventDefault(); check.click(); }
  });
  root.append(head, ed.el,
    h('div.row', check, editable ? save : null, editable && script ? del : null,
      h('small.muted', editable ? 'Ctrl+S saves, Ctrl+Enter checks; Esc then Tab leaves the editor.' : 'Read only: your token cannot change scripts.')),
    msg);
  if (script) root.append(await history(app, name, base, editable, script.version));
}

async function history(app, name, base, editable, currentVersion) {
  const versions = await api('GET', base + '/versions');
  const box = h('section.history', h('h2', 'History'));
  const out = h('div.diff-out');
  const pick = (test, sel) => h('select', { 'data-test': test },
    versions.map((v) => h('option', { value: v.version, selected: v.version === sel || null }, `v${v.version} (${fmtTime(v.created_at)})`)));
  const newest = versions.length ? versions[versions.length - 1].version : 0;
  const older = versions.length > 1 ? versions[versions.length - 2].version : newest;
  const from = pick('diff-from', older);
  const to = pick('diff-to', newest);
  const show = h('button.secondary', { type: 'button', 'data-test': 'diff' }, 'Show diff');
  show.addEventListener('click', () => busy(show, async () => {
    try {
      const [a, b] = await Promise.all([from.value, to.value].map((v) => api('GET', `${base}/versions/${enc(v)}`)));
      clear(out).append(renderDiff(diffLines(a.source, b.source), a.version, b.version));
    } catch (e) {
      clear(out).append(h('div.msg.error', e.describe ? e.describe() : String(e)));
    }
  }));
  box.append(h('div.row', field('From', from), field('To', to), show), out);
  box.append(table(['Version', 'Hash', 'Saved', ''], versions.slice().reverse().map((v) => [
    'v' + v.version + (v.version === currentVersion ? ' (current)' : ''),
    h('code', v.hash.slice(0, 12)),
    fmtTime(v.created_at),
    editable && v.version !== currentVersion ? h('button.small.secondary', {
      type: 'button', 'data-test': 'rollback', 'data-version': v.version,
      onclick: async (e) => {
        if (!(await confirmDialog(`Serve version ${v.version}'s source as a new version of ${name}?`, 'Roll back'))) return;
        await busy(e.target, async () => {
          try {
            const r = await api('POST', base + '/rollback', { version: v.version });
            toast(`Rolled back to v${v.version}'s source: now v${r.version}`, 'ok');
            window.dispatchEvent(new HashChangeEvent('hashchange'));
          } catch (err) {
            toast(err.describe(), 'error');
          }
        });
      },
    }, 'Roll back') : '',
  ]), { 'data-test': 'versions' }));
  return box;
}

function renderDiff(lines, a, b) {
  const added = lines.filter((l) => l[0] === '+').length;
  const removed = lines.filter((l) => l[0] === '-').length;
  return h('div',
    h('p.muted', `v${a} → v${b}: ${added} added, ${removed} removed`),
    h('pre.diff', { 'data-test': 'diff-out' }, lines.map(([op, text]) =>
      h('span', { class: op === '+' ? 'add' : op === '-' ? 'del' : 'same' }, op + ' ' + text + '\n'))));
}
