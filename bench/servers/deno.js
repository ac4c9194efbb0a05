// Bench comparison server for Deno, using its native HTTP server (`Deno.serve`, hyper inside).
// Usage: deno run --allow-net servers/deno.js PORT  — prints "deno ready port=PORT" when listening.
// Same routes and answers as bench/ceiling, bench/servers/node.js and PiCloud's bench app.

function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

function jsonWorkload(b) {
  let sum = 0;
  for (const v of b.values) sum += v;
  return JSON.stringify({ name: b.name, sum, count: b.values.length });
}

const TEXT = { 'content-type': 'text/plain; charset=utf-8' };
const JSONH = { 'content-type': 'application/json' };
const port = Number(Deno.args[0] || 8092);

Deno.serve({
  hostname: '127.0.0.1',
  port,
  onListen: () => console.log(`deno ready port=${port}`),
}, async (req) => {
  const path = new URL(req.url).pathname;
  if (req.method === 'GET' && path === '/bench/hello') {
    return new Response('Hello, world', { headers: TEXT });
  }
  if (req.method === 'GET' && path === '/bench/fib') {
    return new Response(String(fib(20)), { headers: JSONH });
  }
  if (req.method === 'POST' && path === '/bench/json') {
    let out;
    try { out = jsonWorkload(JSON.parse(await req.text())); } catch (_) {
      return new Response('bad json', { status: 400, headers: TEXT });
    }
    return new Response(out, { headers: JSONH });
  }
  return new Response('not found', { status: 404, headers: TEXT });
});
