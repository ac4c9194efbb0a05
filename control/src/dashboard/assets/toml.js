// The part of TOML that `picloud deploy` reads from picloud.toml: top-level `app`, `hosts`,
// `debug`, `modules`, `prune`; a `[limits]` table of integers (and booleans); `[[routes]]`
// tables of `method`, `path`, `script`. Strings ("basic" with escapes, 'literal'), integers,
// booleans, arrays of those (over several lines too), `#` comments. Unknown keys are errors,
// as in the CLI (which uses serde's deny_unknown_fields). Errors say `picloud.toml:LINE: …`.

export class TomlError extends Error {
  constructor(line, message) {
    super(`picloud.toml:${line}: ${message}`);
    this.line = line;
  }
}

const TOP = { app: 'string', hosts: 'strings', debug: 'bool', modules: 'strings', prune: 'bool' };
const ROUTE = { method: 'string', path: 'string', script: 'string' };

function parseValue(src, pos, line) {
  const ws = () => { while (pos.i < src.length && /[ \t\r\n]/.test(src[pos.i])) { if (src[pos.i] === '\n') line.n++; pos.i++; } };
  const skip = () => {
    for (;;) {
      ws();
      if (src[pos.i] === '#') { while (pos.i < src.length && src[pos.i] !== '\n') pos.i++; } else return;
    }
  };
  const c = src[pos.i];
  if (c === '"') {
    let out = '';
    pos.i++;
    while (pos.i < src.length && src[pos.i] !== '"') {
      const ch = src[pos.i];
      if (ch === '\n') throw new TomlError(line.n, 'newline in a string');
      if (ch === '\\') {
        const e = src[pos.i + 1];
        const map = { n: '\n', t: '\t', r: '\r', '"': '"', '\\': '\\', b: '\b', f: '\f' };
        if (e in map) { out += map[e]; pos.i += 2; continue; }
        if (e === 'u' || e === 'U') {
          const len = e === 'u' ? 4 : 8;
          const hex = src.slice(pos.i + 2, pos.i + 2 + len);
          if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== len) throw new TomlError(line.n, 'bad unicode escape');
          out += String.fromCodePoint(parseInt(hex, 16));
          pos.i += 2 + len;
          continue;
        }
        throw new TomlError(line.n, 'bad escape \\' + e);
      }
      out += ch;
      pos.i++;
    }
    if (src[pos.i] !== '"') throw new TomlError(line.n, 'unterminated string');
    pos.i++;
    return out;
  }
  if (c === "'") {
    const end = src.indexOf("'", pos.i + 1);
    const nl = src.indexOf('\n', pos.i + 1);
    if (end < 0 || (nl >= 0 && nl < end)) throw new TomlError(line.n, 'unterminated string');
    const out = src.slice(pos.i + 1, end);
    pos.i = end + 1;
    return out;
  }
  if (c === '[') {
    pos.i++;
    const out = [];
    for (;;) {
      skip();
      if (src[pos.i] === ']') { pos.i++; return out; }
      out.push(parseValue(src, pos, line));
      skip();
      if (src[pos.i] === ',') { pos.i++; continue; }
      if (src[pos.i] === ']') { pos.i++; return out; }
      throw new TomlError(line.n, 'expected , or ] in an array');
    }
  }
  const m = /^(true|false|[+-]?\d[\d_]*)/.exec(src.slice(pos.i, pos.i + 40));
  if (!m) throw new TomlError(line.n, 'expected a string, number, boolean or array');
  pos.i += m[0].length;
  if (m[0] === 'true') return true;
  if (m[0] === 'false') return false;
  return Number(m[0].replace(/_/g, ''));
}

function check(type, v, line, key) {
  const ok = type === 'string' ? typeof v === 'string'
    : type === 'bool' ? typeof v === 'boolean'
      : type === 'strings' ? Array.isArray(v) && v.every((s) => typeof s === 'string') : true;
  if (!ok) throw new TomlError(line, `${key}: expected ${type === 'strings' ? 'an array of strings' : type === 'bool' ? 'a boolean' : 'a string'}`);
}

/** Parses picloud.toml into {app, hosts?, debug?, modules, prune, limits?, routes?}. */
export function parseManifest(src) {
  const out = { modules: [], prune: false };
  let table = null; // null: top level; 'limits'; or a route object
  const seen = new Set();
  const line = { n: 1 };
  const pos = { i: 0 };
  while (pos.i < src.length) {
    const ch = src[pos.i];
    if (ch === '\n') { line.n++; pos.i++; continue; }
    if (/[ \t\r]/.test(ch)) { pos.i++; continue; }
    if (ch === '#') { while (pos.i < src.length && src[pos.i] !== '\n') pos.i++; continue; }
    const rest = src.slice(pos.i, src.indexOf('\n', pos.i) < 0 ? src.length : src.indexOf('\n', pos.i));
    let m;
    if ((m = /^\[\[\s*([A-Za-z0-9_-]+)\s*\]\]\s*(#.*)?$/.exec(rest))) {
      if (m[1] !== 'routes') throw new TomlError(line.n, `unknown table [[${m[1]}]]`);
      table = {};
      (out.routes ||= []).push(table);
      pos.i += rest.length;
      continue;
    }
    if ((m = /^\[\s*([A-Za-z0-9_-]+)\s*\]\s*(#.*)?$/.exec(rest))) {
      if (m[1] !== 'limits') throw new TomlError(line.n, `unknown table [${m[1]}]`);
      if (out.limits) throw new TomlError(line.n, 'duplicate table [limits]');
      out.limits = {};
      table = 'limits';
      pos.i += rest.length;
      continue;
    }
    m = /^([A-Za-z0-9_-]+|"[^"\n]*")\s*=\s*/.exec(rest);
    if (!m) throw new TomlError(line.n, 'expected key = value');
    const key = m[1].replace(/^"|"$/g, '');
    const at = line.n;
    pos.i += m[0].length;
    const value = parseValue(src, pos, line);
    // The rest of the line: only a comment.
    const tail = /^[ \t\r]*(#[^\n]*)?(\n|$)/.exec(src.slice(pos.i));
    if (!tail) throw new TomlError(line.n, 'unexpected text after the value');
    pos.i += tail[0].length;
    if (tail[2] === '\n') line.n++;
    if (table === null) {
      if (!(key in TOP) && key !== 'limits' && key !== 'routes') throw new TomlError(at, `unknown key ${key}`);
      if (seen.has(key)) throw new TomlError(at, `duplicate key ${key}`);
      seen.add(key);
      check(TOP[key], value, at, key);
      out[key] = value;
    } else if (table === 'limits') {
      if (key in out.limits) throw new TomlError(at, `duplicate key limits.${key}`);
      out.limits[key] = value;
    } else {
      if (!(key in ROUTE)) throw new TomlError(at, `unknown key ${key} in [[routes]]`);
      check(ROUTE[key], value, at, key);
      table[key] = value;
    }
  }
  if (typeof out.app !== 'string' || !out.app) throw new TomlError(1, 'missing key app');
  for (const [i, r] of (out.routes || []).entries()) {
    for (const k of Object.keys(ROUTE)) if (!(k in r)) throw new TomlError(line.n, `[[routes]] #${i + 1}: missing ${k}`);
  }
  return out;
}
