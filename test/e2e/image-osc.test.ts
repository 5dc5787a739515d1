/**
 * The Image API's PATCH dialects and Glance's Zed deactivate policy through
 * real clients: `openstack image set --property/--deactivate/--activate`
 * (OSC 6.0, openstacksdk: RFC 6902 in application/openstack-images-v2.1-json-patch)
 * and python-glanceclient's `glance image-update` (its own JSON patch), as a
 * member of the owner's project, not as admin.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { cliEnv, memberProject, openstack, openstackJson, startPumice, type PumiceProcess } from '../helpers/pumice.ts';

const execFileAsync = promisify(execFile);

describe('image set and glance image-update as the owner project member', () => {
  let pumice: PumiceProcess;
  let member: Record<string, string>;
  let work = '';
  let imageId = '';

  before(async () => {
    pumice = await startPumice();
    member = (await memberProject(pumice.adminEnv, 'osc-a', 'osc-member')).env;
    work = mkdtempSync(join(tmpdir(), 'image-osc-'));
    writeFileSync(join(work, 'disk.raw'), Buffer.alloc(1024 * 1024, 3));
    const created = await openstackJson(member, ['image', 'create', '--file', join(work, 'disk.raw'), '--disk-format', 'raw', '--container-format', 'bare', '--private', 'osc-image']);
    imageId = created['id'] as string;
  });
  after(async () => {
    await pumice?.stop();
    pumice?.cleanup();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('openstack image set --property k=v and image unset --property', async () => {
    await openstack(member, ['image', 'set', '--property', 'os_distro=debian', '--property', 'hw_disk_bus=virtio', '--name', 'osc-renamed', imageId]);
    const shown = await openstackJson(member, ['image', 'show', imageId]);
    assert.equal(shown['name'], 'osc-renamed');
    const properties = shown['properties'] as Record<string, string>;
    assert.equal(properties['os_distro'], 'debian');
    assert.equal(properties['hw_disk_bus'], 'virtio');
    await openstack(member, ['image', 'unset', '--property', 'hw_disk_bus', imageId]);
    const after = (await openstackJson(member, ['image', 'show', imageId]))['properties'] as Record<string, string>;
    assert.equal(after['hw_disk_bus'], undefined);
    assert.equal(after['os_distro'], 'debian');
  });

  test('openstack image set --deactivate / --activate by a member of the owner project', async () => {
    await openstack(member, ['image', 'set', '--deactivate', imageId]);
    assert.equal((await openstackJson(member, ['image', 'show', imageId]))['status'], 'deactivated');
    await openstack(member, ['image', 'set', '--activate', imageId]);
    assert.equal((await openstackJson(member, ['image', 'show', imageId]))['status'], 'active');
  });

  test('glance image-update (python-glanceclient) sets and removes properties', async () => {
    const glance = (args: string[]) => execFileAsync('/usr/bin/glance', ['--os-image-api-version', '2', ...args], { env: cliEnv(member), timeout: 120_000 });
    await glance(['image-update', '--property', 'os_version=12', '--min-ram', '128', imageId]);
    let shown = await openstackJson(member, ['image', 'show', imageId]);
    assert.equal((shown['properties'] as Record<string, string>)['os_version'], '12');
    assert.equal(shown['min_ram'], 128);
    await glance(['image-update', '--remove-property', 'os_version', imageId]);
    shown = await openstackJson(member, ['image', 'show', imageId]);
    assert.equal((shown['properties'] as Record<string, string>)['os_version'], undefined);
    const { stdout } = await glance(['image-tag-update', imageId, 'from-glance']);
    assert.match(stdout, /from-glance/);
    assert.deepEqual((await openstackJson(member, ['image', 'show', imageId]))['tags'], ['from-glance']);
    assert.doesNotMatch(pumice.output(), /response validation failed|internal error/);
  });

  test('glance md-* (python-glanceclient): the metadata definitions catalog, read by a member, changed by the admin', async () => {
    const glance = async (env: Record<string, string>, args: string[]) => (await execFileAsync('/usr/bin/glance', ['--os-image-api-version', '2', ...args], { env: cliEnv(env), timeout: 120_000 })).stdout;
    const listed = await glance(member, ['md-namespace-list']);
    for (const ns of ['OS::Compute::LibvirtImage', 'OS::Compute::VirtCPUTopology', 'OS::OperatingSystem']) assert.match(listed, new RegExp(ns));
    assert.match(await glance(member, ['md-namespace-show', 'OS::Compute::VirtCPUTopology', '--resource-type', 'OS::Nova::Flavor']), /hw:cpu_sockets/);
    assert.match(await glance(member, ['md-resource-type-list']), /OS::Glance::Image/);
    assert.match(await glance(member, ['md-property-list', 'OS::Compute::LibvirtImage']), /hw_disk_bus/);
    assert.match(await glance(member, ['md-object-list', 'OS::Compute::Quota']), /CPU Limits/);
    const admin = pumice.adminEnv;
    await glance(admin, ['md-namespace-create', 'Pumice::OscTest', '--display-name', 'OSC test', '--visibility', 'public']);
    await glance(admin, ['md-property-create', 'Pumice::OscTest', '--name', 'speed', '--title', 'Speed', '--schema', '{"type": "integer", "minimum": 0}']);
    await glance(admin, ['md-tag-create', '--name', 'fast', 'Pumice::OscTest']);
    assert.match(await glance(member, ['md-namespace-show', 'Pumice::OscTest']), /speed/);
    await glance(admin, ['md-namespace-delete', 'Pumice::OscTest']);
    assert.doesNotMatch(await glance(member, ['md-namespace-list']), /Pumice::OscTest/);
    assert.doesNotMatch(pumice.output(), /response validation failed|internal error/);
  });
});
