import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { errors } from '../../src/errors.ts';
import { withoutAbsolutePaths, withoutDirectories } from '../../src/redact.ts';
import { Router, type AuthContext } from '../../src/http/router.ts';
import { createHttpServer } from '../../src/http/server.ts';

test('directories are cut from the paths a message names; file names stay', () => {
  const dirs = ['/var/lib/pumice', '/var/lib/pumice/images/', '/srv/volumes', null, undefined, 'relative/dir'];
  assert.equal(
    withoutDirectories("qemu-img: Could not open '/var/lib/pumice/images/1234.ab.tmp': Unsupported qcow2 version 7", dirs, '<x>'),
    "qemu-img: Could not open '1234.ab.tmp': Unsupported qcow2 version 7",
  );
  assert.equal(withoutDirectories('ENOSPC: no space left on device, open /srv/volumes/volume-1', dirs, '<x>'), 'ENOSPC: no space left on device, open volume-1');
  assert.equal(withoutDirectories('cannot write /var/lib/pumice/conversion/a/b.raw', dirs, '<x>'), 'cannot write conversion/a/b.raw');
  assert.equal(withoutDirectories('directory /srv/volumes is full', dirs, '<x>'), 'directory <x> is full');
  // A longer name that starts the same is another directory, left alone; so are relative paths and URL paths.
  assert.equal(withoutDirectories('/srv/volumes-old/x and relative/dir/y and PUT /v2/images/1/stage', dirs, '<x>'), '/srv/volumes-old/x and relative/dir/y and PUT /v2/images/1/stage');
});

test('absolute file-system paths are cut to their last name; URLs, API paths with one segment and relative paths stay', () => {
  assert.equal(withoutAbsolutePaths('keyring /etc/ceph/ceph.client.cinder.keyring for client.cinder not found'), 'keyring ceph.client.cinder.keyring for client.cinder not found');
  assert.equal(withoutAbsolutePaths("cannot open '/var/lib/pumice/volumes/local/volume-1': EIO; conf /etc/ceph/ceph.conf/"), "cannot open 'volume-1': EIO; conf ceph.conf");
  assert.equal(withoutAbsolutePaths('see http://127.0.0.1:5000/identity/v3 and rbd:volumes/volume-1 and ./a/b and /healthcheck'), 'see http://127.0.0.1:5000/identity/v3 and rbd:volumes/volume-1 and ./a/b and /healthcheck');
});

test('a 5xx fault names no server directory to a member; an administrator and 4xx faults keep the text', async () => {
  const router = new Router();
  router.get('/down', () => {
    throw errors.backendUnavailable('Ceph is unreachable: check mon_host in /etc/ceph/ceph.conf and the keyring /etc/ceph/ceph.client.cinder.keyring');
  });
  router.get('/bad', () => {
    throw errors.badRequest('file /etc/x/y is not an image');
  });
  const roles: Record<string, string[]> = { member: ['member'], admin: ['admin', 'member'] };
  const server = createHttpServer({
    apps: [{ prefix: '/t', router, faultStyle: 'openstack' }],
    tokens: { validateToken: (token) => ({ userId: token, projectId: 'p', roles: roles[token] ?? [] }) as unknown as AuthContext },
    requestBodyBytesMax: 1 << 20,
    publicEndpoint: null,
    log: () => undefined,
    debug: false,
    rootDocument: () => ({}),
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  const get = async (path: string, token: string) => {
    const r = await fetch(`http://127.0.0.1:${port}/t${path}`, { headers: { 'X-Auth-Token': token } });
    return { status: r.status, body: (await r.json()) as Record<string, { message: string }> };
  };
  try {
    const member = await get('/down', 'member');
    assert.equal(member.status, 503);
    assert.equal(member.body['serviceUnavailable']?.message ?? Object.values(member.body)[0]!.message, 'Ceph is unreachable: check mon_host in ceph.conf and the keyring ceph.client.cinder.keyring');
    const admin = await get('/down', 'admin');
    assert.match(Object.values(admin.body)[0]!.message, /\/etc\/ceph\/ceph\.conf and the keyring \/etc\/ceph\/ceph\.client\.cinder\.keyring/);
    // A 4xx is about the request the caller sent: its text is left as it is.
    assert.match(Object.values((await get('/bad', 'member')).body)[0]!.message, /file \/etc\/x\/y is not an image/);
  } finally {
    server.close();
  }
});
