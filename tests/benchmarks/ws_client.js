// Websocket ping-pong load client for the benchmark.
// Usage: node ws_client.js URL CONNECTIONS SECONDS [MESSAGE_BYTES]
// Opens CONNECTIONS sockets; once all are open, each sends a message, waits for
// the echo and sends again, for SECONDS. Prints one JSON line:
//   {"roundtrips": N, "seconds": S, "connections": C, "errors": [...]}
// and exits 0, or 2 if any connection failed (e.g. the proxy refused the
// upgrade), so the harness can report "n/a" instead of a number.
// Stops by itself: a hard deadline exits even if sockets hang.
"use strict";
const WebSocket = require("ws");

const [url, connectionsArg, secondsArg, bytesArg] = process.argv.slice(2);
const connections = Number(connectionsArg);
const seconds = Number(secondsArg);
const message = Buffer.alloc(Number(bytesArg || 32), 0x61);
const OPEN_TIMEOUT_MS = 5000;

const errors = [];
const sockets = [];
let roundtrips = 0;
let counting = false;
let startedAt = 0;

function report(elapsedSeconds) {
  console.log(JSON.stringify({ roundtrips, seconds: elapsedSeconds, connections, errors: errors.slice(0, 5) }));
  process.exit(errors.length ? 2 : 0);
}

function finish() {
  const elapsed = counting ? (performance.now() - startedAt) / 1000 : 0;
  counting = false;
  for (const socket of sockets) socket.terminate();
  report(elapsed);
}

function startPingPong() {
  counting = true;
  startedAt = performance.now();
  for (const socket of sockets) socket.send(message);
  setTimeout(finish, seconds * 1000);
}

let opened = 0;
for (let i = 0; i < connections; i++) {
  const socket = new WebSocket(url, { perMessageDeflate: false });
  sockets.push(socket);
  socket.on("open", () => {
    opened += 1;
    if (opened === connections) startPingPong();
  });
  socket.on("message", () => {
    if (!counting) return;
    roundtrips += 1;
    socket.send(message);
  });
  socket.on("unexpected-response", (request, response) => {
    errors.push(`upgrade refused: HTTP ${response.statusCode}`);
    finish();
  });
  socket.on("error", (error) => {
    errors.push(String(error.message || error));
    finish();
  });
}
// Sockets that never open, or a run that hangs, still end the process.
setTimeout(() => {
  if (!counting) errors.push(`only ${opened}/${connections} connections opened in ${OPEN_TIMEOUT_MS} ms`);
  finish();
}, OPEN_TIMEOUT_MS + seconds * 1000 + 2000).unref();
