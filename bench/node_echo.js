// node_echo.js -- the Node.js peer of `make bench`, written the usual way.
//   node bench/node_echo.js echo|line|udp PORT
'use strict';
const net = require('net');
const dgram = require('dgram');
const [mode, port] = process.argv.slice(2);
const host = '127.0.0.1';

if (mode === 'udp') {
  const s = dgram.createSocket('udp4');
  s.on('message', (msg, rinfo) => s.send(msg, rinfo.port, rinfo.address));
  s.bind(+port, host);
} else if (mode === 'echo') {
  net.createServer({ noDelay: true }, (sock) => {
    sock.on('data', (d) => sock.write(d));
    sock.on('error', () => {});
  }).listen(+port, host, 511);
} else if (mode === 'line') {
  net.createServer({ noDelay: true }, (sock) => {
    let pending = '';
    sock.setEncoding('latin1');
    sock.on('data', (d) => {
      pending += d;
      let i;
      while ((i = pending.indexOf('\n')) >= 0) {
        sock.write(pending.slice(0, i + 1), 'latin1');
        pending = pending.slice(i + 1);
      }
    });
    sock.on('error', () => {});
  }).listen(+port, host, 511);
} else {
  console.error('usage: node node_echo.js echo|line|udp PORT');
  process.exit(2);
}
