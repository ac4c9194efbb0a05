// The dashboard's shell: sign-in, navigation and the hash router (`#/apps/demo/scripts`).
// Each page module exports `render(root, params)`, which may return a cleanup function the
// router calls when the user leaves the page (the log tail stops polling that way).

import { ApiError, current, signIn, signOut, token, whoami } from './api.js';
import { clear, field, h, messageBox } from './dom.js';
import * as overview from './overview.js';
import * as apps from './apps.js';
import * as scripts from './scripts.js';
import * as tables from './tables.js';
import * as data from './data.js';
import * as logs from './logs.js';
import * as deploy from './deploy.js';
import * as access from './access.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
let cleanup = null;
let renderSeq = 0;

// [pattern, page render, app tab name]
const ROUTES = [
  [/^\/?$/, overview.render],
  [/^\/apps$/, apps.renderList],
  [/^\/apps\/([^/]+)$/, apps.renderSettings, 'settings'],
  [/^\/apps\/([^/]+)\/scripts$/, scripts.renderList, 'scripts'],
  [/^\/apps\/([^/]+)\/scripts\/([^/]+)$/, scripts.renderScript, 'scripts'],
  [/^\/apps\/([^/]+)\/routes$/, tables.renderRoutes, 'routes'],
  [/^\/apps\/([^/]+)\/schedules$/, tables.renderSchedules, 'schedules'],
  [/^\/apps\/([^/]+)\/triggers$/, tables.renderTriggers, 'triggers'],
  [/^\/apps\/([^/]+)\/env$/, data.renderEnv, 'env'],
  [/^\/apps\/([^/]+)\/kv$/, data.renderKv, 'kv'],
  [/^\/apps\/([^/]+)\/logs$/, logs.render, 'logs'],
  [/^\/deploy$/, deploy.render],
  [/^\/tokens$/, access.renderTokens],
  [/^\/audit$/, access.renderAudit],
];

const APP_TABS = ['settings', 'scripts', 'routes', 'schedules', 'triggers', 'env', 'kv', 'logs'];

function renderNav() {
  clear(nav);
  clear(who);
  if (!token() || !current()) return;
  const s = current();
  const links = [['#/', 'Overview'], ['#/apps', 'Apps'], ['#/deploy', 'Deploy']];
  if (s.node) links.push(['#/tokens', 'Tokens'], ['#/audit', 'Audit']);
  const here = location.hash || '#/';
  for (const [href, label] of links) {
    const active = href === '#/' ? here === '#/' || here === '' : here.startsWith(href);
    nav.appendChild(h('a', { href, 'aria-current': active ? 'page' : null }, label));
  }
  who.appendChild(h('span.role', { 'data-test': 'role', title: 'the role of your token' },
    (s.tokenName ? s.tokenName + ' · ' : '') + s.role));
  who.appendChild(h('button.link', {
    type: 'button', 'data-test': 'signout',
    onclick: () => { signOut(); location.hash = '#/'; route(); },
  }, 'Sign out'));
}

function signInPage() {
  const input = h('input', { type: 'password', autocomplete: 'off', spellcheck: 'false', name: 'token', 'data-test': 'token', required: true });
  const msg = messageBox();
  const form = h('form.card.signin', {
    onsubmit: async (e) => {
      e.preventDefault();
      signIn(input.value);
      try {
        await whoami(true);
        input.value = '';
        route();
      } catch (err) {
        signOut();
        msg.show(err instanceof ApiError && err.status === 401
          ? 'That token is not valid on this node (401 unauthorized).'
          : 'Sign-in failed: ' + (err.describe ? err.describe() : err));
      }
    },
  },
  h('h1', 'Sign in'),
  h('p.muted', 'Paste an admin API token (pc_…). It is kept in this tab only (sessionStorage) and sent as a bearer header.'),
  field('Token', input),
  h('button', { type: 'submit', 'data-test': 'signin' }, 'Sign in'),
  msg);
  clear(main).appendChild(form);
  input.focus();
}

function appTabs(app, active) {
  return h('nav.tabs', { 'aria-label': 'App ' + app },
    h('strong.app-name', app),
    APP_TABS.map((t) => h('a', {
      href: `#/apps/${encodeURIComponent(app)}${t === 'settings' ? '' : '/' + t}`,
      'aria-current': t === active ? 'page' : null,
      'data-test': 'tab-' + t,
    }, t === 'kv' ? 'KV' : t[0].toUpperCase() + t.slice(1))));
}

export async function route() {
  const seq = ++renderSeq;
  if (cleanup) {
    try { cleanup(); } catch { /* a page's cleanup must not block navigation */ }
    cleanup = null;
  }
  if (!token()) {
    renderNav();
    signInPage();
    return;
  }
  try {
    await whoami();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut();
      renderNav();
      signInPage();
      return;
    }
    clear(main).appendChild(h('div.msg.error', 'Cannot reach the admin API: ' + (err.describe ? err.describe() : err)));
    return;
  }
  if (seq !== renderSeq) return;
  renderNav();
  const rawPath = (location.hash || '#/').slice(1).replace(/\?.*$/, '');
  let path = rawPath;
  try { path = decodeURI(rawPath); } catch { /* a malformed %XX: shown as typed */ }
  for (const [re, render, tab] of ROUTES) {
    const m = re.exec(rawPath);
    if (!m) continue;
    const params = m.slice(1).map((p) => { try { return decodeURIComponent(p); } catch { return p; } });
    clear(main);
    const root = h('div.page');
    if (tab) main.appendChild(appTabs(params[0], tab));
    main.appendChild(root);
    try {
      const c = await render(root, params);
      if (seq === renderSeq) cleanup = typeof c === 'function' ? c : null;
      else if (typeof c === 'function') c();
    } catch (err) {
      root.appendChild(h('div.msg.error', { role: 'alert' }, err.describe ? err.describe() : String(err)));
    }
    return;
  }
  clear(main).appendChild(h('div.msg.error', 'No such page: ' + path));
}

window.addEventListener('hashchange', route);
window.addEventListener('picloud-unauthorized', () => {
  // A token revoked while the page is open: back to sign-in, with a reason. (While signing
  // in there is no session yet: the sign-in form reports the 401 itself.)
  if (!current()) return;
  signOut();
  renderNav();
  signInPage();
  const box = document.querySelector('.signin .msg');
  if (box) box.show('The node refused the token (401): it was revoked or is wrong. Sign in again.');
});
route();
