// DOM helpers. Every piece of data reaches the page as a text node or an attribute value set
// through the DOM: there is no HTML parsing of data anywhere in the dashboard.

/** h('tag.class#id', {attr: v, onclick: f}, child, ...): an element. Children may be
 * strings (text nodes), nodes, arrays, or null/false (skipped). */
export function h(spec, attrs, ...children) {
  const m = /^([a-z0-9]+)((?:[.#][\w-]+)*)$/i.exec(spec);
  const el = document.createElement(m ? m[1] : 'div');
  if (m) {
    for (const part of m[2].match(/[.#][\w-]+/g) || []) {
      if (part[0] === '.') el.classList.add(part.slice(1));
      else el.id = part.slice(1);
    }
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** A message line in the toast area (kind: 'ok' | 'error' | 'info'). */
export function toast(text, kind = 'info') {
  const box = document.getElementById('toast');
  if (!box) return;
  const item = h('div.toast-item.' + kind, { role: kind === 'error' ? 'alert' : null }, text);
  box.appendChild(item);
  setTimeout(() => item.remove(), kind === 'error' ? 8000 : 3500);
}

/** An inline message box that a page fills with the API's answer. */
export function messageBox() {
  const el = h('div.msg', { role: 'status', 'aria-live': 'polite' });
  el.show = (text, kind = 'error') => {
    el.className = 'msg ' + kind;
    el.textContent = text;
  };
  el.hide = () => {
    el.className = 'msg';
    el.textContent = '';
  };
  return el;
}

/** Runs `work` with `button` disabled and marked busy; the returned promise settles with it. */
export async function busy(button, work) {
  const label = button.textContent;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  button.classList.add('busy');
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    button.classList.remove('busy');
    button.textContent = label;
  }
}

/** A modal confirmation (a <dialog>, keyboard usable: Esc cancels, focus starts on Cancel). */
export function confirmDialog(question, action = 'Delete') {
  return new Promise((resolve) => {
    const cancel = h('button.secondary', { type: 'button', 'data-test': 'confirm-cancel' }, 'Cancel');
    const ok = h('button.danger', { type: 'button', 'data-test': 'confirm-ok' }, action);
    const dlg = h('dialog.confirm', h('p', question), h('div.row', cancel, ok));
    const done = (v) => {
      dlg.close();
      dlg.remove();
      resolve(v);
    };
    cancel.addEventListener('click', () => done(false));
    ok.addEventListener('click', () => done(true));
    dlg.addEventListener('cancel', (e) => {
      e.preventDefault();
      done(false);
    });
    document.body.appendChild(dlg);
    dlg.showModal();
    cancel.focus();
  });
}

/** A table: headers (strings or [label, onclick]) and rows of cells (strings or nodes). */
export function table(headers, rows, attrs = {}) {
  return h('div.table-wrap', h('table', attrs,
    h('thead', h('tr', headers.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', rows.map((r) => (r instanceof Node ? r : h('tr', r.map((c) => h('td', c))))))));
}

/** A labelled form field. */
export function field(label, input, hint) {
  const id = input.id || 'f' + Math.random().toString(36).slice(2, 9);
  input.id = id;
  return h('div.field', h('label', { for: id }, label), input, hint ? h('small.muted', hint) : null);
}

export function fmtTime(rfc3339) {
  if (!rfc3339) return '-';
  const d = new Date(rfc3339);
  return isNaN(d) ? String(rfc3339) : d.toLocaleString();
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '-';
  if (n < 1024) return n + ' B';
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
  return (n / 1024 / 1024).toFixed(1) + ' MiB';
}

export function fmtDuration(us) {
  if (us === null || us === undefined) return '-';
  if (us < 1000) return us + ' µs';
  if (us < 1e6) return (us / 1000).toFixed(1) + ' ms';
  return (us / 1e6).toFixed(2) + ' s';
}
