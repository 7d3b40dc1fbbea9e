// WebSocket plumbing for the browser tests, loaded by the page tests/browser.py serves.
// Every socket gets a name and a queue of its events, so a test can open sockets,
// send, and wait for what arrives (`await harness.next(name)`) from Python one step at
// a time. Errors in the page are kept in harness.errors for the failure message.
'use strict';

(() => {
  const sockets = new Map();
  const errors = [];
  window.addEventListener('error', (e) => errors.push(String(e.message)));
  window.addEventListener('unhandledrejection', (e) => errors.push(String(e.reason)));

  function entry(name) {
    const found = sockets.get(name);
    if (found === undefined) throw new Error(`no socket named ${name}`);
    return found;
  }

  function push(item, event) {
    item.events.push(event);
    for (const wake of item.waiters.splice(0)) wake();
  }

  function hex(buffer) {
    return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, '0')).join('');
  }

  window.harness = {
    errors,

    // Resolves with what was negotiated once open; rejects with the close event's
    // code when the connection fails before that.
    open(name, url, protocols = []) {
      return new Promise((resolve, reject) => {
        const ws = new WebSocket(url, protocols);
        ws.binaryType = 'arraybuffer';
        const item = { ws, events: [], waiters: [] };
        sockets.set(name, item);
        ws.onopen = () => resolve({ extensions: ws.extensions, protocol: ws.protocol });
        ws.onmessage = (e) => push(item, { type: 'message', data: e.data });
        ws.onerror = () => push(item, { type: 'error' });
        ws.onclose = (e) => {
          push(item, { type: 'close', code: e.code, reason: e.reason, wasClean: e.wasClean });
          reject(new Error(`${url} closed before opening: ${e.code}`));
        };
      });
    },

    send(name, data) { entry(name).ws.send(data); },
    close(name, code, reason) { entry(name).ws.close(code, reason); },

    // The next event of socket `name` (message, error or close), in arrival order.
    async next(name, timeoutMs = 20000) {
      const item = entry(name);
      const deadline = Date.now() + timeoutMs;
      while (item.events.length === 0) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no event on ${name} within ${timeoutMs} ms`);
        await new Promise((resolve) => {
          const timer = setTimeout(resolve, left);
          item.waiters.push(() => { clearTimeout(timer); resolve(); });
        });
      }
      return item.events.shift();
    },

    // An event as plain JSON for the test: binary data as length and SHA-256.
    async describe(event) {
      if (event.type !== 'message') return event;
      if (typeof event.data === 'string') return { type: 'text', text: event.data };
      return { type: 'binary', length: event.data.byteLength,
               sha256: await harness.sha256(event.data) };
    },

    async sha256(bytes) { return hex(await crypto.subtle.digest('SHA-256', bytes)); },

    randomBytes(n) {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
      return out;
    },

    equal(a, b) {
      const x = new Uint8Array(a);
      const y = new Uint8Array(b);
      if (x.length !== y.length) return false;
      for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
      return true;
    },
  };
})();
