/**
 * A request body over max_request_body_size gets a 413 OpenStack fault that
 * the client actually reads: the server reads and discards the rest of the
 * body (within bounds) before it answers, so a client that sends its whole
 * body first (node:http, python-requests) sees the fault, not "broken pipe"
 * or "connection reset".
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { request, Agent } from 'node:http';
import { promisify } from 'node:util';
import { ApiClient, cliEnv, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);
const bodyBytes = 20 * 1024 * 1024;

interface Answer {
  status: number;
  body: string;
  connection: string | undefined;
  socketReused: boolean;
}

/** Sends `body` to `path` with node:http and reads the whole answer. */
function send(url: string, path: string, token: string, body: Buffer, options: { chunked: boolean; agent?: Agent }): Promise<Answer> {
  return new Promise((resolveAnswer, reject) => {
    const target = new URL(path, url);
    const headers: Record<string, string | number> = { 'X-Auth-Token': token, 'Content-Type': 'application/json' };
    if (!options.chunked) headers['Content-Length'] = body.length;
    const req = request({ host: target.hostname, port: target.port, path: target.pathname, method: 'POST', headers, agent: options.agent }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolveAnswer({ status: res.statusCode ?? 0, body: text, connection: res.headers['connection'], socketReused: req.reusedSocket }));
      res.on('error', reject);
    });
    req.on('error', reject);
    // Written in 1 MiB pieces, as a client streaming a large body does.
    for (let offset = 0; offset < body.length; offset += 1 << 20) req.write(body.subarray(offset, offset + (1 << 20)));
    req.end();
  });
}

describe('request bodies over the limit', () => {
  let pumice: PumiceProcess;
  let api: ApiClient;
  const big = Buffer.from(JSON.stringify({ name: 'x', padding: 'p'.repeat(bodyBytes) }));

  before(async () => {
    pumice = await startPumice();
    api = await ApiClient.login(pumice.url, 'admin', pumice.adminPassword, 'admin');
  });
  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
  });

  test('20 MiB with Content-Length through node:http: the client reads the 413 fault, the connection stays usable', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const answer = await send(pumice.url, '/image/v2/images', api.token, big, { chunked: false, agent });
      assert.equal(answer.status, 413, answer.body);
      const fault = JSON.parse(answer.body) as { overLimit: { code: number; message: string } };
      assert.equal(fault.overLimit.code, 413);
      assert.match(fault.overLimit.message, /larger than the limit of \d+ bytes \(max_request_body_size\)/);
      // The body was read to its end, so the same connection serves the next request.
      const next = await send(pumice.url, '/image/v2/images', api.token, Buffer.from(JSON.stringify({ name: 'after-413' })), { chunked: false, agent });
      assert.equal(next.status, 201, next.body);
      assert.ok(next.socketReused, 'the keep-alive connection was closed after the 413');
      await api.request('DELETE', `/image/v2/images/${(JSON.parse(next.body) as { id: string }).id}`);
    } finally {
      agent.destroy();
    }
  });

  test('20 MiB chunked (no Content-Length) through node:http: 413 fault', async () => {
    const answer = await send(pumice.url, '/volume/v3/volumes', api.token, big, { chunked: true });
    assert.equal(answer.status, 413, answer.body);
    assert.equal((JSON.parse(answer.body) as { overLimit: { code: number } }).overLimit.code, 413);
  });

  test('20 MiB through python-requests: the 413 fault, not a broken pipe', async () => {
    const script = [
      'import json, sys, requests',
      'url, token, size = sys.argv[1], sys.argv[2], int(sys.argv[3])',
      "body = json.dumps({'name': 'x', 'padding': 'p' * size})",
      "r = requests.post(url + '/image/v2/images', data=body, headers={'X-Auth-Token': token, 'Content-Type': 'application/json'})",
      "print(json.dumps({'status': r.status_code, 'body': r.json()}))",
    ].join('\n');
    // Debian's python3 with python3-requests (scripts/install-deps.sh), as the other Python clients run.
    const { stdout } = await execFileAsync('/usr/bin/python3', ['-c', script, pumice.url, api.token, String(bodyBytes)], { env: cliEnv({}), maxBuffer: 1 << 20 });
    const answer = JSON.parse(stdout) as { status: number; body: { overLimit: { code: number; message: string } } };
    assert.equal(answer.status, 413, stdout);
    assert.equal(answer.body.overLimit.code, 413);
    assert.doesNotMatch(pumice.output(), /internal error|response failed/);
  });
});
