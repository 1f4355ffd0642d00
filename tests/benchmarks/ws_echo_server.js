// Websocket echo backend for the benchmark: echoes every message back on the
// same connection, on any path. Usage: node ws_echo_server.js PORT
// Binds 127.0.0.1 only; prints "listening PORT" once it accepts connections.
"use strict";
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2]);
const server = new WebSocketServer({ host: "127.0.0.1", port });
server.on("connection", (socket) => {
  socket.on("message", (data, isBinary) => socket.send(data, { binary: isBinary }));
  // A client that vanishes mid-run must not crash the backend.
  socket.on("error", () => socket.terminate());
});
server.on("listening", () => console.log(`listening ${port}`));
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => process.exit(0));
}
