// The npm `socks` client against socks4d, for tests/tests/socks5_clients.rs.
// Usage: node socks_client.js MODE PROXY_HOST PROXY_PORT USER PASSWORD [DEST_HOST DEST_PORT]
//   connect: CONNECT to DEST, send "hello from node\n", print what comes back.
//   bind:    BIND (0.0.0.0:0, as this library sends it), print the first reply's address,
//            connect to it as the peer, print the second reply's address, move data both ways.
//   udp:     UDP ASSOCIATE, send one datagram to DEST through the relay, print the answer.
// Every step has a time limit; any failure exits 1 with a message on stderr.
'use strict';
const net = require('net');
const dgram = require('dgram');
const { SocksClient } = require('socks');

const [mode, proxyHost, proxyPort, user, password, destHost, destPort] = process.argv.slice(2);
const proxy = { host: proxyHost, port: Number(proxyPort), type: 5 };
if (user) {
  proxy.userId = user;
  proxy.password = password;
}
setTimeout(() => fail('timed out'), 15000).unref();

function fail(why) {
  process.stderr.write(`node socks client: ${why}\n`);
  process.exit(1);
}

function readLine(socket) {
  return new Promise((resolve, reject) => {
    let got = '';
    socket.on('data', (d) => {
      got += d.toString();
      if (got.endsWith('\n')) resolve(got);
    });
    socket.on('error', reject);
    socket.on('end', () => resolve(got));
  });
}

async function connect() {
  const { socket } = await SocksClient.createConnection({
    proxy,
    command: 'connect',
    destination: { host: destHost, port: Number(destPort) },
  });
  socket.write('hello from node\n');
  const answer = await readLine(socket);
  process.stdout.write(answer);
  socket.end();
}

async function bind() {
  const client = new SocksClient({ proxy, command: 'bind', destination: { host: '0.0.0.0', port: 0 } });
  const bound = new Promise((resolve) => client.once('bound', resolve));
  const established = new Promise((resolve) => client.once('established', resolve));
  client.once('error', (e) => fail(`bind: ${e}`));
  client.connect();
  const first = await bound;
  console.log(`bound ${first.remoteHost.host}:${first.remoteHost.port}`);
  const peer = net.connect(first.remoteHost.port, first.remoteHost.host);
  await new Promise((resolve, reject) => {
    peer.once('connect', resolve);
    peer.once('error', reject);
  });
  console.log(`peer ${peer.localAddress}:${peer.localPort}`);
  const second = await established;
  console.log(`established ${second.remoteHost.host}:${second.remoteHost.port}`);
  const socket = second.socket;
  peer.write('from the peer\n');
  console.log(`client got ${JSON.stringify(await readLine(socket))}`);
  socket.write('from the client\n');
  console.log(`peer got ${JSON.stringify(await readLine(peer))}`);
  peer.destroy();
  socket.destroy();
}

async function udp() {
  // createConnection does CONNECT only; associate goes through the event API.
  const client = new SocksClient({ proxy, command: 'associate', destination: { host: '0.0.0.0', port: 0 } });
  const established = new Promise((resolve) => client.once('established', resolve));
  client.once('error', (e) => fail(`associate: ${e}`));
  client.connect();
  const { socket, remoteHost } = await established;
  console.log(`relay ${remoteHost.host}:${remoteHost.port}`);
  const udpSocket = dgram.createSocket('udp4');
  const answer = new Promise((resolve) => udpSocket.once('message', resolve));
  const frame = SocksClient.createUDPFrame({
    remoteHost: { host: destHost, port: Number(destPort) },
    data: Buffer.from('datagram from node'),
  });
  udpSocket.send(frame, remoteHost.port, remoteHost.host);
  const parsed = SocksClient.parseUDPFrame(await answer);
  console.log(`answer from ${parsed.remoteHost.host}:${parsed.remoteHost.port} ${JSON.stringify(parsed.data.toString())}`);
  udpSocket.close();
  socket.destroy();
}

({ connect, bind, udp })[mode]()
  .then(() => process.exit(0))
  .catch((e) => fail(`${mode}: ${e && e.stack ? e.stack : e}`));
