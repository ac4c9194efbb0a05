// Deploy: a folder (or several .rhai files and a picloud.toml) sent as one
// `POST /v1/apps/APP/deploy`, the way `picloud deploy DIR` builds it (control/src/cli/deploy.rs):
// every top-level *.rhai file is a script named after the file, `modules` lists the modules,
// the manifest's hosts/debug/limits become `app` when any is set, `[[routes]]` the route table.

import { api, can, enc, whoami } from './api.js';
import { busy, clear, field, h, messageBox, table } from './dom.js';
import { parseManifest, TomlError } from './toml.js';

const NAME = /^[a-z0-9_][a-z0-9_-]{0,62}$/;

/** Builds {app, body, files} from a list of File objects; throws Error with a file:line text. */
export async function bundle(files) {
  // A folder pick gives paths like `todo/list.rhai`; only the folder's top level counts.
  const top = files.filter((f) => (f.webkitRelativePath || f.name).split('/').length <= 2);
  const manifestFile = top.find((f) => f.name === 'picloud.toml');
  if (!manifestFile) throw new Error('picloud.toml is missing: pick the app folder, or add its picloud.toml to the files');
  const manifest = parseManifest(await manifestFile.text());
  const scripts = {};
  const names = {};
  for (const f of top.filter((x) => x.name.endsWith('.rhai'))) {
    const name = f.name.slice(0, -5);
    if (!NAME.test(name)) throw new Error(`${f.name}: a script name is 1-63 of a-z 0-9 _ - (not starting with -)`);
    scripts[name] = { kind: manifest.modules.includes(name) ? 'module' : 'endpoint', source: await f.text() };
    names[name] = f.webkitRelativePath || f.name;
  }
  for (const m of manifest.modules) if (!(m in scripts)) throw new Error(`picloud.toml: module ${m} has no file ${m}.rhai`);
  const body = { scripts, prune: manifest.prune };
  if (manifest.hosts !== undefined || manifest.debug !== undefined || manifest.limits !== undefined) {
    body.app = {};
    if (manifest.hosts !== undefined) body.app.hosts = manifest.hosts;
    if (manifest.debug !== undefined) body.app.debug = manifest.debug;
    if (manifest.limits !== undefined) body.app.limits = manifest.limits;
  }
  if (manifest.routes) body.routes = manifest.routes;
  return { app: manifest.app, body, names };
}

export async function render(root) {
  root.append(h('h1', 'Deploy'));
  if (!can('deploy')) {
    root.append(h('p.muted', 'Read only: deploying needs a deploy or admin token.'));
    return;
  }
  const folder = h('input', { type: 'file', webkitdirectory: true, multiple: true, 'data-test': 'folder' });
  const files = h('input', { type: 'file', multiple: true, accept: '.rhai,.toml', 'data-test': 'files' });
  const prune = h('input', { type: 'checkbox', 'data-test': 'prune' });
  const go = h('button', { type: 'submit', 'data-test': 'deploy' }, 'Deploy');
  const msg = messageBox();
  msg.setAttribute('data-test', 'deploy-msg');
  const out = h('div', { 'data-test': 'deploy-out' });
  root.append(h('p.muted', 'Like picloud deploy DIR: picloud.toml plus every top-level .rhai file, applied all or nothing.'),
    h('form.card', {
      onsubmit: async (e) => {
        e.preventDefault();
        msg.hide();
        clear(out);
        const picked = [...folder.files, ...files.files];
        if (!picked.length) { msg.show('Pick a folder or files first.'); return; }
        await busy(go, async () => {
          let b;
          try {
            b = await bundle(picked);
          } catch (err) {
            msg.show(err instanceof TomlError ? err.message : err.message || String(err));
            return;
          }
          if (prune.checked) b.body.prune = true;
          try {
            const r = await api('POST', `/v1/apps/${enc(b.app)}/deploy`, b.body);
            msg.show(`Deployed ${r.app} at revision ${r.revision}.`, 'ok');
            const rows = [];
            if (r.app_created) rows.push(['created', r.app + ' (app)']);
            for (const k of ['created', 'updated', 'deleted']) for (const n of r.scripts[k]) rows.push([k, `${n} (${b.body.scripts[n]?.kind || 'script'})`]);
            rows.push(['unchanged', `${r.scripts.unchanged.length} scripts`]);
            if (r.routes_changed) rows.push(['routes', `replaced (${(b.body.routes || []).length} routes)`]);
            if (r.config_changed) rows.push(['settings', 'replaced']);
            out.append(table(['Change', 'What'], rows), h('p', h('a', { href: `#/apps/${enc(r.app)}/scripts` }, `Open ${r.app}`)));
            await whoami(true);
          } catch (err) {
            if (err.line && err.script) msg.show(`${b.names[err.script] || err.script + '.rhai'}:${err.line}:${err.column}: ${err.message}`);
            else msg.show(err.describe());
          }
        });
      },
    },
    field('App folder', folder, 'the folder holding picloud.toml'),
    field('…or files', files, '.rhai files and picloud.toml'),
    h('div.field.check', prune, h('label', { for: prune.id = 'prune' }, 'Prune: delete the app\'s scripts that are not in the folder')),
    go, msg), out);
}
