/** The QEMU hypervisor driver: QEMU driven directly over QMP, no libvirt. */
export { QemuHypervisor, processAlive, type AdoptedGuest, type MigrationProgress, type MigrationResult, type QemuHypervisorOptions } from './driver.ts';
export { checkQemu, probeAccelerator, probeBootOnce, probeBootSector, type ProbeOptions, type ProbeResult, type QemuCheck } from './probe.ts';
export { renderDomainXml, domainName } from './domain-xml.ts';
export { cephConfText } from './blockdev.ts';
