// Bench comparison server for Node.js (plain `node:http`, no framework).
// Usage: node servers/node.js PORT   — prints "node ready port=PORT" when listening.
// Same routes and answers as bench/ceiling and PiCloud's bench app:
//   GET /bench/hello -> "Hello, world"; POST /bench/json -> {name,sum,count}; GET /bench/fib -> 6765
'use strict';
const http = require('node:http');

function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

function jsonWorkload(text) {
  const b = JSON.parse(text);
  let sum = 0;
  for (const v of b.values) sum += v;
  return JSON.stringify({ name: b.name, sum, count: b.values.length });
}

const port = Number(process.argv[2] || process.env.PORT || 8091);
const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (req.method === 'GET' && path === '/bench/hello') {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('Hello, world');
  } else if (req.method === 'GET' && path === '/bench/fib') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(String(fib(20)));
  } else if (req.method === 'POST' && path === '/bench/json') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let out;
      try { out = jsonWorkload(Buffer.concat(chunks).toString('utf8')); } catch (e) {
        res.writeHead(400, { 'content-type': 'text/plain' });
        res.end('bad json');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(out);
    });
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  }
});
// Node's default keep-alive timeout (5 s) is fine for wrk; the footprint test does not use node.
server.listen(port, '127.0.0.1', () => console.log(`node ready port=${port}`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
