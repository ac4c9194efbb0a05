// A source editor: a textarea over a coloured copy of its text, with a line-number gutter and
// an error marker on one line. The coloured copy is built from text nodes in <span>s, so a
// script's text is never parsed as HTML.

import { clear, h } from './dom.js';

const KEYWORDS = new Set(('let const fn private if else switch while loop do until for in return ' +
  'break continue throw try catch import export as true false this global is_shared').split(' '));

const TOKEN = /(\/\/[^\n]*|\/\*[\s\S]*?(?:\*\/|$))|("(?:[^"\\\n]|\\.)*"?|`(?:[^`\\]|\\.)*`?|'(?:[^'\\\n]|\\.)*'?)|(\b\d[\d_]*(?:\.\d+)?(?:e[+-]?\d+)?\b|\b0x[0-9a-f_]+\b)|([A-Za-z_]\w*)/gi;

/** Appends the coloured form of `src` to `el`. */
export function colour(el, src) {
  let last = 0;
  for (const m of src.matchAll(TOKEN)) {
    if (m.index > last) el.appendChild(document.createTextNode(src.slice(last, m.index)));
    let cls = null;
    if (m[1]) cls = 'tk-comment';
    else if (m[2]) cls = 'tk-string';
    else if (m[3]) cls = 'tk-number';
    else if (m[4] && KEYWORDS.has(m[4])) cls = 'tk-keyword';
    else if (m[4] && src[m.index + m[0].length] === '(') cls = 'tk-call';
    el.appendChild(cls ? h('span.' + cls, m[0]) : document.createTextNode(m[0]));
    last = m.index + m[0].length;
  }
  if (last < src.length) el.appendChild(document.createTextNode(src.slice(last)));
  // A trailing newline needs something after it to get its own line's height.
  el.appendChild(document.createTextNode('\n'));
}

/** An editor. Returns {el, textarea, value(), setValue(s), markError(line, col, text), clearError(), onInput(f)}. */
export function editor({ value = '', readOnly = false, label = 'Source' } = {}) {
  const ta = h('textarea.ed-input', {
    spellcheck: 'false', autocapitalize: 'off', autocomplete: 'off', wrap: 'off',
    'aria-label': label, 'data-test': 'source', readonly: readOnly || null,
  });
  ta.value = value;
  const gutter = h('div.ed-gutter', { 'aria-hidden': 'true' });
  const shade = h('pre.ed-colour', { 'aria-hidden': 'true' });
  const marker = h('div.ed-marker', { 'aria-hidden': 'true', hidden: true });
  const box = h('div.ed-box', shade, marker, ta);
  const el = h('div.editor', gutter, box);
  let errorLine = 0;
  let listeners = [];

  const refresh = () => {
    const lines = ta.value.split('\n').length;
    if (gutter.childElementCount !== lines || errorLine) {
      clear(gutter);
      for (let i = 1; i <= lines; i++) {
        gutter.appendChild(h('div', { class: i === errorLine ? 'err' : null, 'data-line': i }, String(i)));
      }
    }
    clear(shade);
    colour(shade, ta.value);
    sync();
  };
  const sync = () => {
    shade.scrollTop = ta.scrollTop;
    shade.scrollLeft = ta.scrollLeft;
    gutter.scrollTop = ta.scrollTop;
    if (errorLine) {
      const lh = parseFloat(getComputedStyle(ta).lineHeight) || 18;
      const pad = parseFloat(getComputedStyle(ta).paddingTop) || 0;
      marker.style.top = (pad + (errorLine - 1) * lh - ta.scrollTop) + 'px';
      marker.style.height = lh + 'px';
    }
  };
  ta.addEventListener('input', () => {
    refresh();
    for (const f of listeners) f();
  });
  ta.addEventListener('scroll', sync);
  // Tab inserts two spaces; Esc then Tab leaves the editor (keyboard users are never trapped).
  let escaped = false;
  ta.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { escaped = true; return; }
    if (e.key === 'Tab' && !e.shiftKey && !escaped && !ta.readOnly) {
      e.preventDefault();
      const { selectionStart: s, selectionEnd: t } = ta;
      ta.setRangeText('  ', s, t, 'end');
      ta.dispatchEvent(new Event('input'));
    }
    escaped = false;
  });
  refresh();
  return {
    el,
    textarea: ta,
    value: () => ta.value,
    setValue(v) { ta.value = v; refresh(); },
    onInput(f) { listeners.push(f); },
    markError(line, column) {
      errorLine = line || 0;
      marker.hidden = !errorLine;
      refresh();
      if (errorLine) {
        // Move the caret to the error so the user lands on it.
        const lines = ta.value.split('\n');
        let pos = 0;
        for (let i = 0; i < Math.min(errorLine - 1, lines.length); i++) pos += lines[i].length + 1;
        pos += Math.max(0, (column || 1) - 1);
        ta.setSelectionRange(pos, pos);
      }
    },
    clearError() {
      errorLine = 0;
      marker.hidden = true;
      refresh();
    },
    errorLine: () => errorLine,
  };
}

/** A line diff (longest common subsequence) of two texts: [[' '|'-'|'+', line], ...]. */
export function diffLines(a, b) {
  const x = a.split('\n'), y = b.split('\n');
  const n = x.length, m = y.length;
  // Sources are small (a script is at most a few hundred KiB); past 4M cells, fall back to
  // "all removed, all added" rather than freeze the tab.
  if (n * m > 4e6) return [...x.map((l) => ['-', l]), ...y.map((l) => ['+', l])];
  const L = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
    }
  }
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push([' ', x[i]]); i++; j++; }
    else if (L[i + 1][j] >= L[i][j + 1]) out.push(['-', x[i++]]);
    else out.push(['+', y[j++]]);
  }
  while (i < n) out.push(['-', x[i++]]);
  while (j < m) out.push(['+', y[j++]]);
  return out;
}
