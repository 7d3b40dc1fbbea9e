// A remote-controlled peer built on Node's ws, for tests/test_node_ws.py.
//
//   node peer.js client URL deflate|plain
//   node peer.js server PORT deflate|plain [echo]
//
// Commands come in as JSON lines on stdin and act on the open connection; everything
// ws reports goes out as JSON lines on stdout, so the Python test sees exactly what
// this independent implementation sent and received. The server binds 127.0.0.1 only
// and serves one connection at a time (the latest one).
'use strict';

const readline = require('readline');
const WebSocket = require('ws');

const [role, target, compression, mode] = process.argv.slice(2);
// threshold 0: compress every message, so a negotiated extension is really exercised.
const perMessageDeflate = compression === 'deflate' ? { threshold: 0 } : false;
let current = null;

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

function pattern(size) {
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i++) buf[i] = i % 251;
  return buf;
}

// A command's payload: text, base64 bytes, or `size` bytes of the i % 251 pattern
// (`size` with "text": true gives that many 'x' characters).
function payload(cmd) {
  if (cmd.text !== undefined) return cmd.text;
  if (cmd.b64 !== undefined) return Buffer.from(cmd.b64, 'base64');
  if (cmd.size !== undefined) return cmd.textual ? 'x'.repeat(cmd.size) : pattern(cmd.size);
  return Buffer.alloc(0);
}

function attach(ws, extensionsHeader) {
  current = ws;
  // header: the Sec-WebSocket-Extensions this side received (a client: the server's
  // answer; the server: the client's offer).
  emit({ ev: 'open', extensions: ws.extensions, header: extensionsHeader || null });
  ws.on('message', (data, isBinary) => {
    if (isBinary) emit({ ev: 'message', binary: true, b64: data.toString('base64') });
    else emit({ ev: 'message', binary: false, text: data.toString('utf8') });
    if (mode === 'echo') ws.send(data, { binary: isBinary });
  });
  ws.on('ping', (data) => emit({ ev: 'ping', b64: data.toString('base64') }));
  ws.on('pong', (data) => emit({ ev: 'pong', b64: data.toString('base64') }));
  ws.on('close', (code, reason) => emit({ ev: 'close', code, reason: reason.toString('utf8') }));
  ws.on('error', (err) => emit({ ev: 'error', message: err.message, code: err.code || null }));
}

function run(cmd) {
  if (current === null) throw new Error('no connection yet');
  switch (cmd.cmd) {
    case 'send': {
      const data = payload(cmd);
      const options = { fin: cmd.fin !== false };
      if (cmd.binary !== undefined) options.binary = cmd.binary;
      current.send(data, options, (err) => {
        if (err) emit({ ev: 'send-error', message: err.message });
      });
      break;
    }
    case 'ping': current.ping(payload(cmd)); break;
    case 'pong': current.pong(payload(cmd)); break;
    case 'close': current.close(cmd.code, cmd.reason); break;
    default: throw new Error(`unknown command ${cmd.cmd}`);
  }
}

if (role === 'client') {
  const ws = new WebSocket(target, { perMessageDeflate, handshakeTimeout: 10000 });
  let header = null;
  ws.on('upgrade', (res) => { header = res.headers['sec-websocket-extensions']; });
  ws.on('open', () => attach(ws, header));
  ws.on('unexpected-response', (req, res) => emit({ ev: 'refused', status: res.statusCode }));
  ws.on('error', (err) => { if (current === null) emit({ ev: 'error', message: err.message }); });
} else if (role === 'server') {
  const server = new WebSocket.WebSocketServer({
    host: '127.0.0.1', port: Number(target), perMessageDeflate,
  });
  server.on('listening', () => emit({ ev: 'listening', port: server.address().port }));
  server.on('connection', (ws, req) => attach(ws, req.headers['sec-websocket-extensions']));
  server.on('error', (err) => { emit({ ev: 'error', message: err.message }); process.exit(1); });
} else {
  process.stderr.write(`unknown role ${role}\n`);
  process.exit(2);
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  try {
    run(JSON.parse(line));
  } catch (err) {
    emit({ ev: 'command-error', message: err.message });
  }
});
