/**
 * Image hardware properties (Glance's `hw_*` / `os_require_quiesce`, as
 * Nova's libvirt driver reads them) turned into the guest hardware the
 * hypervisor driver builds. Parsed once at boot (API: a 400 naming the
 * accepted values before anything exists) and again by the agent from the
 * server's image_meta snapshot, so both always agree.
 */
import { defaultGuestHardware, type GuestHardware } from './hypervisor/types.ts';

/** Accepted values per property, shown in the 400 when a value is not one of them. */
export const acceptedHardwareValues = {
  hw_disk_bus: ['virtio', 'scsi'],
  hw_scsi_model: ['virtio-scsi'],
  hw_qemu_guest_agent: ['yes', 'no', 'true', 'false'],
  os_require_quiesce: ['yes', 'no', 'true', 'false'],
  hw_rng_model: ['virtio'],
  hw_video_model: ['none', 'vga', 'cirrus', 'virtio'],
  // q35 would move every device to PCIe root ports (hot-plug layout differs): not offered.
  hw_machine_type: ['pc', 'pc-i440fx-X.Y'],
} as const;

const machineTypePattern = /^pc(-i440fx-\d+\.\d+)?$/;

/** A property whose value Pumice does not build; `message` names the property, the value, the accepted values and the fix. */
export class HardwarePropertyError extends Error {}

function flag(properties: Record<string, string>, key: 'hw_qemu_guest_agent' | 'os_require_quiesce'): boolean {
  const raw = properties[key];
  if (raw === undefined) return false;
  const value = String(raw).trim().toLowerCase();
  if (value === 'yes' || value === 'true') return true;
  if (value === 'no' || value === 'false') return false;
  throw refusal(key, raw);
}

function refusal(key: keyof typeof acceptedHardwareValues, value: string, extra = ''): HardwarePropertyError {
  return new HardwarePropertyError(
    `Image property ${key}=${JSON.stringify(value)} is not supported by this cloud: accepted values are ${acceptedHardwareValues[key].join(', ')}.${extra} ` +
      `Fix the image (openstack image set --property ${key}=${acceptedHardwareValues[key][0]} IMAGE, or --remove-property ${key}) and boot again.`,
  );
}

/**
 * The guest hardware an image's properties ask for. Properties Pumice does
 * not read are ignored (Glance images carry many); a property it reads with a
 * value it does not build throws HardwarePropertyError.
 */
export function guestHardwareFromImage(properties: Record<string, string>): GuestHardware {
  const hardware: GuestHardware = { ...defaultGuestHardware };
  const bus = properties['hw_disk_bus'];
  if (bus !== undefined) {
    if (bus !== 'virtio' && bus !== 'scsi') throw refusal('hw_disk_bus', bus);
    hardware.diskBus = bus;
  }
  const scsiModel = properties['hw_scsi_model'];
  if (scsiModel !== undefined && scsiModel !== 'virtio-scsi') throw refusal('hw_scsi_model', scsiModel);
  // Nova leaves the SCSI model to libvirt (lsilogic); the only one Pumice builds is virtio-scsi.
  if (hardware.diskBus === 'scsi') hardware.scsiModel = 'virtio-scsi';
  hardware.guestAgent = flag(properties, 'hw_qemu_guest_agent');
  hardware.requireQuiesce = flag(properties, 'os_require_quiesce');
  if (hardware.requireQuiesce && !hardware.guestAgent) {
    throw new HardwarePropertyError(
      'Image property os_require_quiesce=yes needs the QEMU guest agent to freeze file systems, but hw_qemu_guest_agent is not yes: ' +
        'set both (openstack image set --property hw_qemu_guest_agent=yes IMAGE) and run qemu-guest-agent in the guest, or remove os_require_quiesce.',
    );
  }
  const rng = properties['hw_rng_model'];
  if (rng !== undefined) {
    if (rng !== 'virtio') throw refusal('hw_rng_model', rng);
    hardware.rngModel = 'virtio';
  }
  const video = properties['hw_video_model'];
  if (video !== undefined) {
    if (video !== 'none' && video !== 'vga' && video !== 'cirrus' && video !== 'virtio') throw refusal('hw_video_model', video);
    hardware.videoModel = video;
  }
  const machine = properties['hw_machine_type'];
  if (machine !== undefined) {
    if (!machineTypePattern.test(machine)) throw refusal('hw_machine_type', machine, ' (X.Y is a QEMU version this host runs, e.g. pc-i440fx-7.2; q35 is not offered)');
    hardware.machineType = machine;
  }
  return hardware;
}
