/**
 * Issue 12, NBD findings, reproduced as an attacker would: a raw NBD client that knows a
 * volume id (but not the per-connection secret) gets nothing; terminate revokes; a restart keeps
 * the exports of attachments on the same port; TLS-PSK works with qemu-io and nbdinfo and is
 * required when on; pipelined big reads and a disconnect cannot grow the server's memory;
 * idle sockets cannot lock consumers out; established connections are bounded per source
 * address and server-wide, with a reason the client shows; a listener beyond loopback needs TLS.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, truncateSync, writeFileSync, closeSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ApiClient, startPumice, type PumiceProcess } from '../helpers/pumice.ts';
import { NbdServer } from '../../src/nbd/server.ts';
import { NBD_CMD_READ, NBD_REP_ACK, NBD_REP_ERR_POLICY, NBD_REP_ERR_TLS_REQD, encodeRequestHeader } from '../../src/nbd/protocol.ts';
import { NbdTestClient as Raw } from '../helpers/nbd-client.ts';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;

async function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(cmd, args, { timeout: 20_000, maxBuffer: 16 * MiB });
    return { code: 0, out: stdout + stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

interface Conn {
  host: string;
  port: number;
  export_name: string;
  uri: string;
  tls: boolean;
  tls_psk_identity?: string;
  tls_psk_key?: string;
}

describe('NBD data path through Pumice (no TLS)', () => {
  let pumice: PumiceProcess;
  let api: ApiClient;
  let volumeId: string;
  let a: Conn;
  let b: Conn;
  const action = (id: string, body: unknown) => api.request('POST', `/volume/v3/${api.projectId}/volumes/${id}/action`, body);
  const connect = async (id: string, connector: Record<string, unknown>): Promise<Conn> => {
    const r = await action(id, { 'os-initialize_connection': { connector } });
    assert.equal(r.status, 200, r.text);
    return r.body.connection_info.data as Conn;
  };

  before(async () => {
    pumice = await startPumice();
    api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const r = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { size: 1, name: 'sec-nbd' } });
    assert.equal(r.status, 202, r.text);
    volumeId = r.body.volume.id;
    await api.waitVolume(volumeId, ['available']);
  });

  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
  });

  test('each connection gets its own 256-bit export name; qemu-io and nbdcopy work with it', async () => {
    a = await connect(volumeId, { host: 'compute-a', attachment_id: 'att-a' });
    b = await connect(volumeId, { host: 'compute-b', attachment_id: 'att-b' });
    assert.match(a.export_name, /^[A-Za-z0-9_-]{43}$/);
    assert.notEqual(a.export_name, b.export_name);
    assert.equal(a.tls, false);
    const io = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 64k', '-c', 'read -P 0x5a 0 64k', a.uri]);
    assert.equal(io.code, 0, io.out);
    assert.match(io.out, /read 65536\/65536/);
    const scratch = mkdtempSync(join(tmpdir(), 'pumice-sec-nbd-'));
    try {
      const copy = await run('nbdcopy', [b.uri, join(scratch, 'copy.raw')]);
      assert.equal(copy.code, 0, copy.out);
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  });

  test('a raw client that knows the volume id, or guesses, is refused', async () => {
    for (const name of [`volume-${volumeId}`, volumeId, randomBytes(32).toString('base64url'), a.export_name.slice(0, 42)]) {
      const raw = await Raw.connect(a.port);
      try {
        const reply = await raw.negotiate(name);
        assert.notEqual(reply, NBD_REP_ACK, `export ${name} opened without the secret`);
      } finally {
        raw.close();
      }
    }
    const info = await run('nbdinfo', [`nbd://127.0.0.1:${a.port}/volume-${volumeId}`]);
    assert.notEqual(info.code, 0, info.out);
  });

  test('the secret is not stored in the database nor the log', async () => {
    const dump = await run('sqlite3', [join(pumice.dataDir, 'pumice.db'), '.dump nbd_exports']);
    if (dump.code === 0) assert.ok(!dump.out.includes(a.export_name), 'export name stored in clear');
    assert.ok(!pumice.output().includes(a.export_name), 'export name logged');
  });

  test('terminate revokes one connection: its live client is cut, the other keeps working', async () => {
    const r = await action(volumeId, { 'os-terminate_connection': { connector: { host: 'compute-a', attachment_id: 'att-a' } } });
    assert.equal(r.status, 202, r.text);
    const gone = await run('nbdinfo', [a.uri]);
    assert.notEqual(gone.code, 0, `revoked export still opens: ${gone.out}`);
    const still = await run('nbdinfo', ['--size', b.uri]);
    assert.equal(still.code, 0, still.out);
  });

  test('a restart keeps the exports of live connections, on the same port', async () => {
    await pumice.stop();
    const again = await startPumice({ dataDir: pumice.dataDir });
    pumice = again;
    const io = await run('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x5a 0 64k', b.uri]);
    assert.equal(io.code, 0, `after restart: ${io.out}\n${again.output()}`);
    api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
    const r = await action(volumeId, { 'os-terminate_connection': { connector: null } });
    assert.equal(r.status, 202, r.text);
    assert.notEqual((await run('nbdinfo', [b.uri])).code, 0, 'export survives terminate with no connector');
  });
});

describe('NBD data path with TLS-PSK', () => {
  let pumice: PumiceProcess;
  let api: ApiClient;
  let scratch: string;

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'pumice-sec-psk-'));
    pumice = await startPumice({ config: '[DEFAULT]\nnbd_tls = true\n' });
    api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  });

  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('the connection info carries a PSK; qemu-io and nbdinfo work with it and fail without it', async () => {
    const r = await api.request('POST', `/volume/v3/${api.projectId}/volumes`, { volume: { size: 1, name: 'sec-psk' } });
    const volumeId = r.body.volume.id as string;
    await api.waitVolume(volumeId, ['available']);
    const ci = await api.request('POST', `/volume/v3/${api.projectId}/volumes/${volumeId}/action`, { 'os-initialize_connection': { connector: { host: 'h1' } } });
    assert.equal(ci.status, 200, ci.text);
    const c = ci.body.connection_info.data as Conn;
    assert.equal(c.tls, true);
    assert.ok(c.tls_psk_identity && /^[0-9a-f]{64}$/.test(c.tls_psk_key ?? ''), JSON.stringify(c));
    assert.match(c.uri, /^nbds:\/\//);
    writeFileSync(join(scratch, 'keys.psk'), `${c.tls_psk_identity}:${c.tls_psk_key}\n`, { mode: 0o600 });
    const tls = `tls-creds-psk,id=tls0,endpoint=client,dir=${scratch},username=${c.tls_psk_identity}`;
    const blockdev = `driver=nbd,server.type=inet,server.host=${c.host},server.port=${c.port},export=${c.export_name},tls-creds=tls0`;
    const io = await run('qemu-io', ['--object', tls, '--image-opts', blockdev, '-c', 'write -P 0x33 0 64k', '-c', 'read -P 0x33 0 64k']);
    assert.equal(io.code, 0, io.out);
    assert.match(io.out, /read 65536\/65536/);
    const info = await run('nbdinfo', ['--size', `nbds://${c.tls_psk_identity}@${c.host}:${c.port}/${c.export_name}?tls-psk-file=${join(scratch, 'keys.psk')}`]);
    assert.equal(info.code, 0, info.out);
    assert.equal(info.out.trim(), String(1024 * MiB));
    // The export name alone (no TLS) is refused, as is a raw client in clear.
    assert.notEqual((await run('nbdinfo', [`nbd://${c.host}:${c.port}/${c.export_name}`])).code, 0);
    const raw = await Raw.connect(c.port);
    try {
      assert.equal(await raw.negotiate(c.export_name), NBD_REP_ERR_TLS_REQD);
    } finally {
      raw.close();
    }
    // A wrong key fails the TLS handshake.
    writeFileSync(join(scratch, 'keys.psk'), `${c.tls_psk_identity}:${randomBytes(32).toString('hex')}\n`);
    assert.notEqual((await run('qemu-io', ['--object', tls, '--image-opts', blockdev, '-r', '-c', 'read 0 4k'])).code, 0);
  });

  test('a listener beyond loopback without TLS refuses to start, naming the option', async () => {
    await assert.rejects(startPumice({ config: '[DEFAULT]\nnbd_listen_host = 0.0.0.0\n' }), /nbd_tls = true/);
  });
});

describe('NBD server bounds', () => {
  let dir: string;
  let disk: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'pumice-sec-nbdmem-'));
    disk = join(dir, 'disk');
    closeSync(openSync(disk, 'w'));
    truncateSync(disk, 1024 * MiB);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('pipelined 32 MiB reads on 4 connections, then a disconnect: memory stays bounded and is released', async () => {
    const logs: string[] = [];
    const server = new NbdServer({
      host: '127.0.0.1',
      port: 0,
      resolveExport: (name) => (name === 'disk' ? { path: disk, sizeBytes: 1024 * MiB, readOnly: true } : undefined),
      log: (m) => logs.push(m),
    });
    const { port } = await server.start();
    const rssBefore = process.memoryUsage().rss;
    let peakInFlight = 0;
    let peakRss = rssBefore;
    const sampler = setInterval(() => {
      peakInFlight = Math.max(peakInFlight, server.inFlightBytes);
      peakRss = Math.max(peakRss, process.memoryUsage().rss);
    }, 5);
    try {
      const clients = await Promise.all([0, 1, 2, 3].map(() => Raw.connect(port)));
      for (const c of clients) assert.equal(await c.negotiate('disk'), NBD_REP_ACK);
      for (const c of clients) {
        // The client never reads a reply: 80 x 32 MiB = 2.5 GiB asked for in 2,240 bytes.
        c.socket.pause();
        const headers = [];
        for (let i = 0; i < 80; i++) {
          headers.push(encodeRequestHeader({ flags: 0, type: NBD_CMD_READ, handle: Buffer.alloc(8, i), offset: BigInt((i % 30) * 32 * MiB), length: 32 * MiB }));
        }
        c.socket.write(Buffer.concat(headers));
      }
      await new Promise((r) => setTimeout(r, 1500));
      for (const c of clients) c.close();
      await Promise.all(clients.map((c) => c.closedPromise));
      for (let i = 0; i < 200 && server.inFlightBytes > 0; i++) await new Promise((r) => setTimeout(r, 25));
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      clearInterval(sampler);
      await server.stop();
    }
    assert.ok(peakInFlight <= 256 * MiB + 32 * MiB, `in flight peaked at ${peakInFlight / MiB} MiB`);
    assert.equal(server.inFlightBytes, 0, 'bytes still held after every client left');
    const growthMiB = (peakRss - rssBefore) / MiB;
    assert.ok(growthMiB < 700, `RSS grew by ${growthMiB.toFixed(0)} MiB (unbounded: 2.9 GB for 80 reads on one connection)`);
  });

  test('idle sockets that never negotiate cannot lock a consumer out', async () => {
    const server = new NbdServer({
      host: '127.0.0.1',
      port: 0,
      resolveExport: (name) => (name === 'disk' ? { path: disk, sizeBytes: 1024 * MiB, readOnly: true } : undefined),
    });
    const { port } = await server.start();
    const idle: Raw[] = [];
    try {
      for (let i = 0; i < 100; i++) idle.push(await Raw.connect(port));
      const info = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/disk`]);
      assert.equal(info.code, 0, info.out);
      assert.ok(server.connectionCount <= 32 + 1, `${server.connectionCount} connections held`);
    } finally {
      for (const c of idle) c.close();
      await server.stop();
    }
  });

  test('established connections are bounded per source address and server-wide; other sources still connect', async () => {
    const logs: string[] = [];
    const server = new NbdServer({
      host: '127.0.0.1',
      port: 0,
      resolveExport: (name) => (name === 'disk' ? { path: disk, sizeBytes: 1024 * MiB, readOnly: true } : undefined),
      connectionsPerSourceMax: 3,
      connectionsMax: 5,
      log: (m) => logs.push(m),
    });
    const { port } = await server.start();
    const open: Raw[] = [];
    const refusalLines = (source: string) => logs.filter((l) => l.startsWith(`nbd: refusing a connection from ${source}:`));
    try {
      for (let i = 0; i < 3; i++) {
        const c = await Raw.connect(port, '127.0.0.1');
        assert.equal(await c.negotiate('disk'), NBD_REP_ACK);
        open.push(c);
      }
      // A fourth from the same address is refused at NBD_OPT_GO, with the reason, before anything is opened.
      for (let i = 0; i < 5; i++) {
        const extra = await Raw.connect(port, '127.0.0.1');
        assert.equal(await extra.negotiate('disk'), NBD_REP_ERR_POLICY);
        extra.close();
      }
      // Real clients are refused too; qemu shows the server's reason.
      const info = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/disk`]);
      assert.notEqual(info.code, 0, info.out);
      assert.match(info.out, /server policy prevents NBD_OPT_GO/);
      const qemu = await run('qemu-img', ['info', '--image-opts', `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},export=disk`]);
      assert.notEqual(qemu.code, 0, qemu.out);
      assert.match(qemu.out, /nbd_connections_per_source_max = 3/);
      const lines = refusalLines('127.0.0.1');
      assert.ok(lines.length >= 1 && lines.length < 7, `seven refusals, ${lines.length} log lines:\n${lines.join('\n')}`);
      assert.match(lines[0]!, /127\.0\.0\.1 has 3 connections open, the limit per source address \(nbd_connections_per_source_max = 3\); close connections or raise the limit/);
      // Another source still gets in, up to the server-wide limit.
      for (let i = 0; i < 2; i++) {
        const c = await Raw.connect(port, '127.0.0.2');
        assert.equal(await c.negotiate('disk'), NBD_REP_ACK);
        open.push(c);
      }
      const third = await Raw.connect(port, '127.0.0.3');
      assert.equal(await third.negotiate('disk'), NBD_REP_ERR_POLICY);
      third.close();
      assert.match(refusalLines('127.0.0.3')[0] ?? '', /the server has 5 connections open, its limit \(nbd_connections_max = 5\)/);
      // A closed connection frees its source's slot.
      open.shift()!.close();
      for (let i = 0; i < 200 && server.connectionCount > 4; i++) await new Promise((r) => setTimeout(r, 25));
      const again = await Raw.connect(port, '127.0.0.1');
      assert.equal(await again.negotiate('disk'), NBD_REP_ACK);
      open.push(again);
      assert.equal(server.connectionCount, 5);
    } finally {
      for (const c of open) c.close();
      await server.stop();
    }
  });

  test('a client that stalls in the handshake is dropped after the timeout', async () => {
    const server = new NbdServer({ host: '127.0.0.1', port: 0, resolveExport: () => undefined, handshakeTimeoutMs: 300 });
    const { port } = await server.start();
    try {
      const c = await Raw.connect(port);
      const started = Date.now();
      await c.closedPromise;
      assert.ok(Date.now() - started < 3000);
    } finally {
      await server.stop();
    }
  });
});
