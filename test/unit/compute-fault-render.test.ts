/**
 * Issue 12: a server fault as its owner and as an administrator read it. The
 * owner gets the message with file names but without the host's directories,
 * and no details of a 500 fault (Nova); the administrator gets both whole.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderServer, type RenderContext } from '../../src/compute/api/render.ts';
import type { ServerRow } from '../../src/compute/model.ts';

const row: ServerRow = {
  id: '11111111-2222-3333-4444-555555555555', name: 'vm', project_id: 'p1', user_id: 'u1', flavor_id: '42',
  flavor: JSON.stringify({ id: '42', name: 'm1', vcpus: 1, ram_mib: 512, root_gib: 1, ephemeral_gib: 0, swap_mib: 0, extra_specs: {} }),
  image_id: null, image_meta: '{}', host: 'compute01', availability_zone: 'nova', requested_zone: null, vm_state: 'error', task_state: null,
  power_state: 0, key_name: null, key_data: null, metadata: '{}', description: null, user_data: null, config_drive: '', access_ipv4: '',
  access_ipv6: '', locked: 0, locked_reason: null, progress: 0, root_source: 'volume', generation: 1,
  created_at: '2026-01-01T00:00:00.000Z', updated_at: null, launched_at: null, terminated_at: null, deleted_at: null,
  fault: JSON.stringify({
    code: 500,
    message: "QEMU exited at start: qemu-system-x86_64: Could not open '/srv/pumice/instances/1111/disk.qcow2': Permission denied",
    details: 'QEMU exited at start (full log in /srv/pumice/instances/1111/console.log)',
    created: '2026-01-01T00:00:00.000Z',
  }),
};

function context(isAdmin: boolean): RenderContext {
  return {
    serviceUrl: 'http://x/compute', microversion: 79, isAdmin, showExtended: isAdmin, showHostStatus: false, hostStatus: () => 'UP',
    privateDirectoriesOf: (host) => (host === 'compute01' ? ['/srv/pumice/instances', '/srv/pumice'] : []),
  };
}

test("the owner reads the fault without the host's directories or the details; the admin reads both", () => {
  const owner = renderServer(context(false), row, [], true)['fault'] as Record<string, unknown>;
  assert.equal(owner['message'], "QEMU exited at start: qemu-system-x86_64: Could not open '1111/disk.qcow2': Permission denied");
  assert.equal(owner['details'], undefined);
  const admin = renderServer(context(true), row, [], true)['fault'] as Record<string, unknown>;
  assert.match(admin['message'] as string, /'\/srv\/pumice\/instances\/1111\/disk\.qcow2'/);
  assert.match(admin['details'] as string, /\/srv\/pumice\/instances\/1111\/console\.log/);
});
