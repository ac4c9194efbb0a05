// The admin API client: the token lives in sessionStorage (gone when the tab closes), is sent
// only as `Authorization: Bearer`, never in a URL or a cookie. Every call goes to this page's
// own origin (the admin address that served it).

const KEY = 'picloud.token';
const RANKS = { read: 1, deploy: 2, admin: 3 };

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || (status ? 'HTTP ' + status : 'network error'));
    this.status = status;
    this.code = err.code || (status ? 'http_' + status : 'network');
    this.line = err.line;
    this.column = err.column;
    this.script = err.script;
  }
  /** The text a page shows for this failure. */
  describe() {
    if (this.status === 401) return 'Not signed in or the token is no longer valid (401): sign in again.';
    if (this.status === 403) return 'Your token may not do this (403 forbidden): ' + this.message;
    if (this.code === 'network') return 'Cannot reach the node: ' + this.message;
    let where = '';
    if (this.line) where = ` (${this.script ? this.script + ' ' : ''}line ${this.line}, column ${this.column})`;
    return `${this.code}: ${this.message}${where}`;
  }
}

export const enc = encodeURIComponent;

export function token() {
  return sessionStorage.getItem(KEY);
}

export function signIn(t) {
  sessionStorage.setItem(KEY, t.trim());
}

export function signOut() {
  sessionStorage.removeItem(KEY);
  session = null;
}

/** Calls the admin API. `body`: an object (sent as JSON) or a string (sent as is).
 * Resolves to the parsed JSON answer (or text, or null for 204); rejects with ApiError. */
export async function api(method, path, body, opts = {}) {
  const headers = {};
  const t = token();
  if (t) headers.Authorization = 'Bearer ' + t;
  let payload;
  if (body !== undefined && body !== null) {
    if (typeof body === 'string') {
      payload = body;
      headers['Content-Type'] = opts.type || 'text/plain; charset=utf-8';
    } else {
      payload = JSON.stringify(body);
      headers['Content-Type'] = 'application/json';
    }
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: payload, cache: 'no-store', credentials: 'omit' });
  } catch (e) {
    throw new ApiError(0, { error: { code: 'network', message: String(e.message || e) } });
  }
  if (resp.status === 204) return null;
  const text = await resp.text();
  let data = text;
  if ((resp.headers.get('content-type') || '').includes('json')) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!resp.ok) {
    const err = new ApiError(resp.status, typeof data === 'object' ? data : null);
    if (resp.status === 401) window.dispatchEvent(new CustomEvent('picloud-unauthorized'));
    throw err;
  }
  return data;
}

let session = null;

/** What this token may do, learned without writing anything (so nothing lands in the audit
 * log): `GET /v1/tokens` answers 200 only to an admin token on every app; any other token gets
 * a 403 whose message names its role (`token "x" (role deploy) lacks ...`). `GET /v1/apps`
 * lists exactly the token's apps. An unreadable 403 counts as `read`: the UI then shows no
 * edit controls, and the API enforces the rights anyway. */
export async function whoami(force = false) {
  if (session && !force) return session;
  const apps = await api('GET', '/v1/apps');
  let role = 'read';
  let node = false;
  let tokenName = null;
  try {
    await api('GET', '/v1/tokens');
    role = 'admin';
    node = true;
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 403) throw e;
    const m = /token "([^"]*)" \(role (read|deploy|admin)\)/.exec(e.message);
    if (m) {
      tokenName = m[1];
      role = m[2];
    }
  }
  session = { role, node, tokenName, apps: apps.map((a) => a.name) };
  return session;
}

/** Whether the signed-in token holds `right` ('read' | 'deploy' | 'admin'). */
export function can(right) {
  return !!session && RANKS[session.role] >= RANKS[right];
}

export function current() {
  return session;
}
