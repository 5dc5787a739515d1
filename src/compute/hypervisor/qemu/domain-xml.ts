/**
 * The libvirt domain XML Nova's libvirt driver would have produced for a
 * guest, written next to each instance (libvirt.xml) for operators who read
 * and compare exactly that. Pumice does not run libvirt: the XML describes
 * what the QEMU command line and hot-plugs do.
 */
import { defaultGuestHardware, type GuestDisk, type GuestSpec } from '../types.ts';
import { extraPciDevices, guestAgentChannelName, pciAddr, splitHostPort, videoPciSlot, type DiskPlacement, type ExtraPciDevice } from './blockdev.ts';

function esc(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}

/** Nova's libvirt domain name: `instance-` and 8 hex digits (Pumice takes them from the uuid). */
export function domainName(uuid: string): string {
  return `instance-${uuid.replace(/-/g, '').slice(0, 8)}`;
}

export function targetName(index: number, bus: 'virtio' | 'scsi' = 'virtio'): string {
  // vda..vdz, then vdaa.. as the Linux/libvirt naming (sda.. on SCSI).
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  let name = '';
  let n = index;
  do {
    name = letters[n % 26] + name;
    n = Math.floor(n / 26) - 1;
  } while (n >= 0);
  return `${bus === 'scsi' ? 'sd' : 'vd'}${name}`;
}

function diskXml(disk: GuestDisk, placement: Pick<DiskPlacement, 'slot' | 'target' | 'bus' | 'lun'>): string {
  const source = disk.source;
  const type = source.kind === 'file' ? (source.format === 'qcow2' ? 'qcow2' : 'raw') : 'raw';
  const lines: string[] = [];
  lines.push(`    <disk type='${source.kind === 'file' ? 'file' : 'network'}' device='disk'>`);
  lines.push(`      <driver name='qemu' type='${type}' cache='${disk.cache}' discard='${disk.discard}'/>`);
  switch (source.kind) {
    case 'rbd':
      lines.push(`      <auth username='${esc(source.user)}'>`);
      lines.push(
        source.secretUuid
          ? `        <secret type='ceph' uuid='${esc(source.secretUuid)}'/>`
          : `        <secret type='ceph' usage='client.${esc(source.user)} secret'/>`,
      );
      lines.push('      </auth>');
      lines.push(`      <source protocol='rbd' name='${esc(`${source.pool}/${source.image}`)}'>`);
      for (const monitor of source.monitorHosts) {
        const { host, port } = splitHostPort(monitor);
        lines.push(`        <host name='${esc(host)}' port='${port}'/>`);
      }
      if (source.cephConfPath) lines.push(`        <config file='${esc(source.cephConfPath)}'/>`);
      lines.push('      </source>');
      break;
    case 'nbd':
      lines.push(`      <source protocol='nbd' name='${esc(source.exportName)}'${source.tlsPsk ? ` tls='yes'` : ''}>`);
      lines.push(`        <host name='${esc(source.host)}' port='${source.port}'/>`);
      lines.push('      </source>');
      break;
    case 'file':
      lines.push(`      <source file='${esc(source.path)}'/>`);
      break;
  }
  lines.push(`      <target dev='${placement.target}' bus='${placement.bus === 'scsi' ? 'scsi' : 'virtio'}'/>`);
  if (disk.readOnly) lines.push('      <readonly/>');
  if (disk.bootIndex !== undefined) lines.push(`      <boot order='${disk.bootIndex}'/>`);
  lines.push(`      <serial>${esc(disk.serial)}</serial>`);
  lines.push(`      <alias name='ua-${esc(disk.diskId)}'/>`);
  lines.push(
    placement.bus === 'scsi'
      ? `      <address type='drive' controller='0' bus='0' target='0' unit='${placement.lun ?? 0}'/>`
      : `      <address type='pci' domain='0x0000' bus='0x00' slot='0x${placement.slot.toString(16).padStart(2, '0')}' function='0x0'/>`,
  );
  lines.push('    </disk>');
  return lines.join('\n');
}

export function renderDomainXml(
  spec: GuestSpec,
  placements: ReadonlyMap<string, Pick<DiskPlacement, 'slot' | 'target' | 'bus' | 'lun'>>,
  paths: { consoleLogPath: string; emulator: string; guestAgentSocketPath: string },
): string {
  const hardware = spec.hardware ?? defaultGuestHardware;
  const extras = extraPciDevices(hardware);
  const address = (id: ExtraPciDevice['id']): string => {
    const device = extras.find((d) => d.id === id)!;
    return `<address type='pci' domain='0x0000' bus='0x00' slot='${pciAddr(device.slot)}' function='0x${device.function}'${device.multifunction ? ` multifunction='on'` : ''}/>`;
  };
  const hardwareXml: string[] = [];
  if (hardware.diskBus === 'scsi') {
    hardwareXml.push(`    <controller type='scsi' index='0' model='virtio-scsi'>`, `      ${address('scsi0')}`, '    </controller>');
  }
  if (hardware.guestAgent) {
    hardwareXml.push(`    <controller type='virtio-serial' index='0'>`, `      ${address('virtio-serial0')}`, '    </controller>');
    hardwareXml.push(
      `    <channel type='unix'>`,
      `      <source mode='bind' path='${esc(paths.guestAgentSocketPath)}'/>`,
      `      <target type='virtio' name='${guestAgentChannelName}'/>`,
      `      <address type='virtio-serial' controller='0' bus='0' port='1'/>`,
      '    </channel>',
    );
  }
  if (hardware.rngModel === 'virtio') {
    hardwareXml.push(`    <rng model='virtio'>`, `      <backend model='random'>/dev/urandom</backend>`, `      ${address('rng0')}`, '    </rng>');
  }
  hardwareXml.push(
    hardware.videoModel === 'none'
      ? `    <video><model type='none'/></video>`
      : `    <video><model type='${hardware.videoModel}' primary='yes'/><address type='pci' domain='0x0000' bus='0x00' slot='${pciAddr(videoPciSlot)}' function='0x0'/></video>`,
  );
  const memoryKiB = spec.memoryMiB * 1024;
  const disks = spec.disks
    .map((disk) => {
      const placement = placements.get(disk.diskId);
      return placement ? diskXml(disk, placement) : null;
    })
    .filter((x): x is string => x !== null);
  return [
    `<domain type='${spec.virtType}'>`,
    `  <name>${domainName(spec.uuid)}</name>`,
    `  <uuid>${esc(spec.uuid)}</uuid>`,
    '  <metadata>',
    `    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">`,
    `      <nova:name>${esc(spec.name)}</nova:name>`,
    '    </nova:instance>',
    '  </metadata>',
    `  <memory unit='KiB'>${memoryKiB}</memory>`,
    `  <currentMemory unit='KiB'>${memoryKiB}</currentMemory>`,
    `  <vcpu placement='static'>${spec.vcpus}</vcpu>`,
    '  <os>',
    `    <type arch='x86_64' machine='${esc(hardware.machineType)}'>hvm</type>`,
    '  </os>',
    '  <features>',
    '    <acpi/>',
    '    <apic/>',
    '  </features>',
    spec.virtType === 'kvm' ? `  <cpu mode='host-passthrough'/>` : `  <cpu mode='custom' match='exact'><model>qemu64</model></cpu>`,
    `  <clock offset='utc'/>`,
    '  <on_poweroff>destroy</on_poweroff>',
    '  <on_reboot>restart</on_reboot>',
    '  <on_crash>destroy</on_crash>',
    '  <devices>',
    `    <emulator>${esc(paths.emulator)}</emulator>`,
    ...disks,
    ...hardwareXml,
    `    <serial type='file'>`,
    `      <source path='${esc(paths.consoleLogPath)}' append='on'/>`,
    `      <target port='0'/>`,
    '    </serial>',
    `    <console type='file'>`,
    `      <source path='${esc(paths.consoleLogPath)}' append='on'/>`,
    `      <target type='serial' port='0'/>`,
    '    </console>',
    `    <memballoon model='none'/>`,
    '  </devices>',
    '</domain>',
    '',
  ].join('\n');
}
