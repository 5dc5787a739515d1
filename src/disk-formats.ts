/**
 * Glance's disk_format names against qemu-img's format names, shared by the
 * image service (format checks, conversion), the volume role (volumes from
 * images) and `pumice image import` (format detection).
 */

/** qemu-img's name of each disk_format whose content it can recognise; formats not listed are raw bytes to qemu. */
export const qemuFormatOf: Readonly<Record<string, string>> = {
  raw: 'raw', qcow2: 'qcow2', vmdk: 'vmdk', vdi: 'vdi', vhd: 'vpc', vhdx: 'vhdx', iso: 'raw', ami: 'raw', ari: 'raw', aki: 'raw', ploop: 'parallels',
};

/** The disk_format of a format qemu-img detected (its names differ for vhd and ploop). */
export function diskFormatOfQemu(qemuFormat: string): string {
  return qemuFormat === 'vpc' ? 'vhd' : qemuFormat === 'parallels' ? 'ploop' : qemuFormat;
}
