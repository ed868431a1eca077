// The Node.js server of the ws-* bench rows: a WebSocket echo with the `ws`
// package (make deps puts it in spec/.node). argv: mode (ignored), port.
'use strict';
const path = require('path');
const WebSocket = require(path.join(__dirname, '..', 'spec', '.node', 'node_modules', 'ws'));
const port = Number(process.argv[3]);
const wss = new WebSocket.Server({ host: '127.0.0.1', port, perMessageDeflate: false,
                                   maxPayload: 16 * 1024 * 1024 });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
