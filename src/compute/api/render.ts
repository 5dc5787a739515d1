/**
 * Compute response bodies and their schemas, per microversion, as Nova
 * renders them (nova/api/openstack/compute/views/servers.py) and as
 * tempest's published schemas check them. The schema of each microversion
 * range is built by the same function that decides which keys a body has,
 * so a key shown at the wrong version fails response validation.
 */
import { Type, type TSchema } from '@sinclair/typebox';
import { Nullable, type VersionRange } from '../../http/declare.ts';
import type { BdmRow, FlavorSnapshot, ServerFault, ServerRow } from '../model.ts';
import { instanceName, novaTime, serverStatus, usageTime } from '../model.ts';
import { ServerService } from '../servers.ts';
import { withoutDirectories } from '../../redact.ts';

export const computeMicroversionMin = 1;
export const computeMicroversionMax = 79;

/** Microversions at which a server body changes shape; ranges between them share one schema. */
const serverBreakpoints = [1, 3, 9, 16, 19, 26, 47, 63, 69, 71, 73];

/** One schema per microversion range, from `build(minor)` at each range's lower bound. */
export function versioned(breakpoints: number[], build: (minor: number) => TSchema): { versions: VersionRange; schema: TSchema }[] {
  return breakpoints.map((min, i) => ({ versions: { min, max: (breakpoints[i + 1] ?? computeMicroversionMax + 1) - 1 }, schema: build(min) }));
}

const Link = Type.Object({ href: Type.String(), rel: Type.String(), type: Type.Optional(Type.String()) }, { additionalProperties: false });
export const Links = Type.Array(Link);

export function links(serviceUrl: string, collection: string, id: string): { href: string; rel: string }[] {
  return [
    { href: `${serviceUrl}/v2.1/${collection}/${id}`, rel: 'self' },
    { href: `${serviceUrl}/${collection}/${id}`, rel: 'bookmark' },
  ];
}

export interface RenderContext {
  serviceUrl: string;
  microversion: number;
  isAdmin: boolean;
  /** Extended attributes (host, instance_name...) for callers the policy allows. */
  showExtended: boolean;
  showHostStatus: boolean;
  hostStatus: (host: string | null) => string;
  /** Directories of a host whose paths fault messages name (instances_path and its parent): cut for non-admins. */
  privateDirectoriesOf?: (host: string | null) => (string | null)[];
}

function flavorBody(ctx: RenderContext, flavor: FlavorSnapshot): Record<string, unknown> {
  if (ctx.microversion >= 47) {
    return { vcpus: flavor.vcpus, ram: flavor.ram_mib, disk: flavor.root_gib, ephemeral: flavor.ephemeral_gib, swap: flavor.swap_mib, original_name: flavor.name, extra_specs: flavor.extra_specs };
  }
  return { id: flavor.id, links: [{ href: `${ctx.serviceUrl}/flavors/${flavor.id}`, rel: 'bookmark' }] };
}

export function renderServerSummary(ctx: RenderContext, row: ServerRow): Record<string, unknown> {
  return { id: row.id, name: row.name, links: links(ctx.serviceUrl, 'servers', row.id) };
}

export const ServerSummary = Type.Object({ id: Type.String(), name: Type.String(), links: Links }, { additionalProperties: false });

/** `single`: show, update and rebuild (not lists) carry server_groups from 2.71, as Nova's. */
export function renderServer(ctx: RenderContext, row: ServerRow, bdms: BdmRow[], single = false): Record<string, unknown> {
  const v = ctx.microversion;
  const flavor = JSON.parse(row.flavor) as FlavorSnapshot;
  const status = serverStatus(row.vm_state, row.task_state);
  const body: Record<string, unknown> = {
    id: row.id,
    name: row.name,
    status,
    tenant_id: row.project_id,
    user_id: row.user_id,
    metadata: JSON.parse(row.metadata) as Record<string, string>,
    hostId: ServerService.hostId(row.project_id, row.host),
    image: row.image_id ? { id: row.image_id, links: [{ href: `${ctx.serviceUrl}/images/${row.image_id}`, rel: 'bookmark' }] } : '',
    flavor: flavorBody(ctx, flavor),
    created: novaTime(row.created_at),
    updated: novaTime(row.updated_at ?? row.created_at),
    addresses: {},
    accessIPv4: row.access_ipv4,
    accessIPv6: row.access_ipv6,
    links: links(ctx.serviceUrl, 'servers', row.id),
    'OS-DCF:diskConfig': 'MANUAL',
    'OS-EXT-AZ:availability_zone': row.availability_zone ?? '',
    config_drive: row.config_drive,
    key_name: row.key_name,
    'OS-SRV-USG:launched_at': usageTime(row.launched_at),
    'OS-SRV-USG:terminated_at': usageTime(row.terminated_at),
    'OS-EXT-STS:task_state': row.task_state,
    'OS-EXT-STS:vm_state': row.vm_state,
    'OS-EXT-STS:power_state': row.power_state,
    'os-extended-volumes:volumes_attached': bdms
      .filter((b) => b.destination_type === 'volume' && b.volume_id && b.status !== 'detached')
      .map((b) => (v >= 3 ? { id: b.volume_id!, delete_on_termination: b.delete_on_termination === 1 } : { id: b.volume_id! })),
    security_groups: [{ name: 'default' }],
  };
  if (['ACTIVE', 'BUILD', 'REBUILD', 'RESIZE', 'VERIFY_RESIZE', 'MIGRATING'].includes(status)) body['progress'] = row.progress;
  if (row.fault && (status === 'ERROR' || status === 'DELETED')) {
    const fault = JSON.parse(row.fault) as ServerFault;
    // As Nova: the details of a 500 fault (which host, which filter, free capacity, host paths) are for
    // administrators; the owner reads the message, written for it (issue 12).
    // A build error quotes QEMU, which names files: the owner reads the file names, not the host's directories.
    const message = ctx.isAdmin ? fault.message : withoutDirectories(fault.message, ctx.privateDirectoriesOf?.(row.host) ?? [], '<host directory>');
    body['fault'] = { code: fault.code, created: novaTime(fault.created), message, ...(ctx.isAdmin || fault.code !== 500 ? { details: fault.details } : {}) };
  }
  if (ctx.showExtended) {
    body['OS-EXT-SRV-ATTR:host'] = row.host;
    body['OS-EXT-SRV-ATTR:instance_name'] = instanceName(row.id);
    body['OS-EXT-SRV-ATTR:hypervisor_hostname'] = row.host;
    if (v >= 3) {
      body['OS-EXT-SRV-ATTR:reservation_id'] = `r-${row.id.slice(0, 8)}`;
      body['OS-EXT-SRV-ATTR:launch_index'] = 0;
      body['OS-EXT-SRV-ATTR:hostname'] = row.name.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 63) || 'server';
      body['OS-EXT-SRV-ATTR:kernel_id'] = '';
      body['OS-EXT-SRV-ATTR:ramdisk_id'] = '';
      body['OS-EXT-SRV-ATTR:root_device_name'] = rootDeviceName(row.image_meta);
      body['OS-EXT-SRV-ATTR:user_data'] = row.user_data;
    }
  }
  if (v >= 9) body['locked'] = row.locked === 1;
  if (v >= 16 && ctx.showHostStatus) body['host_status'] = ctx.hostStatus(row.host);
  if (v >= 19) body['description'] = row.description;
  if (v >= 26) body['tags'] = [];
  if (v >= 63) body['trusted_image_certificates'] = null;
  if (v >= 71 && single) body['server_groups'] = [];
  if (v >= 73) body['locked_reason'] = row.locked ? row.locked_reason : null;
  return body;
}

const Fault = Type.Object({ code: Type.Integer(), created: Type.String(), message: Type.String(), details: Type.Optional(Type.String()) }, { additionalProperties: false });

/** The detailed server body's schema at microversion `v` (required keys exactly as Nova shows them). */
export function serverSchema(v: number): TSchema {
  const flavor = v >= 47
    ? Type.Object({ vcpus: Type.Integer(), ram: Type.Integer(), disk: Type.Integer(), ephemeral: Type.Integer(), swap: Type.Integer(), original_name: Type.String(), extra_specs: Type.Record(Type.String(), Type.String()) }, { additionalProperties: false })
    : Type.Object({ id: Type.String(), links: Links }, { additionalProperties: false });
  const attached = v >= 3
    ? Type.Object({ id: Type.String(), delete_on_termination: Type.Boolean() }, { additionalProperties: false })
    : Type.Object({ id: Type.String() }, { additionalProperties: false });
  const props: Record<string, TSchema> = {
    id: Type.String({ format: 'uuid' }),
    name: Type.String(),
    status: Type.String(),
    tenant_id: Type.String(),
    user_id: Type.String(),
    metadata: Type.Record(Type.String(), Type.String()),
    hostId: Type.String(),
    image: Type.Union([Type.Literal(''), Type.Object({ id: Type.String(), links: Links }, { additionalProperties: false })]),
    flavor,
    created: Type.String(),
    updated: Type.String(),
    addresses: Type.Object({}, { additionalProperties: false }),
    accessIPv4: Type.String(),
    accessIPv6: Type.String(),
    links: Links,
    'OS-DCF:diskConfig': Type.String(),
    'OS-EXT-AZ:availability_zone': Type.String(),
    config_drive: Type.String(),
    key_name: Nullable(Type.String()),
    'OS-SRV-USG:launched_at': Nullable(Type.String()),
    'OS-SRV-USG:terminated_at': Nullable(Type.String()),
    'OS-EXT-STS:task_state': Nullable(Type.String()),
    'OS-EXT-STS:vm_state': Type.String(),
    'OS-EXT-STS:power_state': Type.Integer(),
    'os-extended-volumes:volumes_attached': Type.Array(attached),
    security_groups: Type.Array(Type.Object({ name: Type.String() }, { additionalProperties: false })),
    progress: Type.Optional(Type.Integer()),
    fault: Type.Optional(Fault),
    'OS-EXT-SRV-ATTR:host': Type.Optional(Nullable(Type.String())),
    'OS-EXT-SRV-ATTR:instance_name': Type.Optional(Type.String()),
    'OS-EXT-SRV-ATTR:hypervisor_hostname': Type.Optional(Nullable(Type.String())),
  };
  if (v >= 3) {
    for (const key of ['reservation_id', 'hostname', 'kernel_id', 'ramdisk_id', 'root_device_name']) props[`OS-EXT-SRV-ATTR:${key}`] = Type.Optional(Nullable(Type.String()));
    props['OS-EXT-SRV-ATTR:launch_index'] = Type.Optional(Type.Integer());
    props['OS-EXT-SRV-ATTR:user_data'] = Type.Optional(Nullable(Type.String()));
  }
  if (v >= 9) props['locked'] = Type.Boolean();
  // As tempest's v2_16 schema: the four states, or '' for a server with no host.
  if (v >= 16) props['host_status'] = Type.Optional(Type.Union(['UP', 'DOWN', 'MAINTENANCE', 'UNKNOWN', ''].map((state) => Type.Literal(state))));
  if (v >= 19) props['description'] = Nullable(Type.String());
  if (v >= 26) props['tags'] = Type.Array(Type.String());
  if (v >= 63) props['trusted_image_certificates'] = Nullable(Type.Array(Type.String()));
  if (v >= 71) props['server_groups'] = Type.Optional(Type.Array(Type.String({ format: 'uuid' }), { maxItems: 1 }));
  if (v >= 73) props['locked_reason'] = Nullable(Type.String());
  return Type.Object(props, { additionalProperties: false });
}

export const serverDetailResponses = versioned(serverBreakpoints, (v) => Type.Object({ server: serverSchema(v) }, { additionalProperties: false }));
export const serverListDetailResponses = versioned(serverBreakpoints, (v) =>
  Type.Object({ servers: Type.Array(serverSchema(v)), servers_links: Type.Optional(Links) }, { additionalProperties: false }),
);

/** The guest's first disk name as Nova reports it: sda on the image's hw_disk_bus=scsi, else vda. */
function rootDeviceName(imageMetaJson: string): string {
  try {
    return (JSON.parse(imageMetaJson || '{}') as Record<string, string>)['hw_disk_bus'] === 'scsi' ? '/dev/sda' : '/dev/vda';
  } catch {
    return '/dev/vda';
  }
}
