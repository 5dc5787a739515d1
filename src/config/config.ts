/**
 * Pumice's configuration: one INI file whose option names follow cinder.conf,
 * keystone.conf and glance-api.conf where those exist, so an operator's
 * existing sections read naturally. Unknown options, wrong types and missing
 * backend sections are reported at start with file, line and what was expected.
 */
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { backupDriverKind } from '../backup/drivers/driver.ts';
import { chunkCodecs } from '../backup/drivers/posix.ts';
import { journalSocketPath } from '../journal.ts';
import { ConfigError, parseIni, throwConfigErrors, type IniFile, type IniSection } from './ini.ts';

type OptionType = 'string' | 'int' | 'float' | 'bool' | 'list' | 'float_or_auto';

interface OptionSpec {
  type: OptionType;
  default: string | number | boolean | string[] | null;
  min?: number;
  help: string;
  /** What `pumice config sample` shows as the default when the real one depends on the machine (oslo's sample_default). */
  sampleDefault?: string;
}

const defaultOptions = {
  host: { type: 'string', default: 'pumice', sampleDefault: '<hostname>', help: "name of this host in service and backend host strings (host@backend#pool); unset: this machine's hostname, chosen at the first start of a data directory and kept in DATA_DIR/host (a data directory that predates that rule keeps 'pumice')" },
  cluster: { type: 'string', default: null, help: "volume hosts with the same cluster name serve their backends active/active: a backend's task is taken by any live member (Cinder's cluster; volumes are placed on cluster@backend#pool). Every member must reach the same storage" },
  enabled_backends: { type: 'list', default: ['local'], help: "volume backend section names, comma separated; NAME:TYPE entries (TYPE file or rbd) are Glance's named image stores, each configured in its own [NAME] section, with [glance_store] default_backend" },
  default_volume_type: { type: 'string', default: '__DEFAULT__', help: 'volume type used when a request names none' },
  default_group_type: { type: 'string', default: null, help: 'group type GET /group_types/default answers (Block Storage 3.11); none by default, as in Cinder' },
  storage_availability_zone: { type: 'string', default: 'nova', help: 'availability zone of this host' },
  default_availability_zone: { type: 'string', default: null, help: 'zone for volumes created without one' },
  report_interval: { type: 'int', default: 10, min: 1, help: 'seconds between service heartbeats' },
  service_down_time: { type: 'int', default: 60, min: 1, help: 'seconds without heartbeat after which a service is down' },
  osapi_max_limit: { type: 'int', default: 1000, min: 1, help: 'largest page a list call returns' },
  public_endpoint: { type: 'string', default: null, help: 'base URL advertised in the catalog (default: the address the client used)' },
  quota_volumes: { type: 'int', default: 10, min: -1, help: 'default volumes per project (-1 unlimited)' },
  quota_snapshots: { type: 'int', default: 10, min: -1, help: 'default snapshots per project' },
  quota_gigabytes: { type: 'int', default: 1000, min: -1, help: 'default GiB of volumes and snapshots per project' },
  quota_backups: { type: 'int', default: 10, min: -1, help: 'default backups per project' },
  quota_backup_gigabytes: { type: 'int', default: 1000, min: -1, help: 'default GiB of backups per project' },
  quota_groups: { type: 'int', default: 10, min: -1, help: 'default volume groups per project' },
  per_volume_size_limit: { type: 'int', default: -1, min: -1, help: 'largest volume in GiB (-1 unlimited)' },
  no_snapshot_gb_quota: { type: 'bool', default: false, help: 'do not count snapshots against gigabytes' },
  scheduler_default_filters: {
    type: 'list',
    default: ['AvailabilityZoneFilter', 'CapacityFilter', 'CapabilitiesFilter'],
    help: 'scheduler filters in order',
  },
  scheduler_default_weighers: { type: 'list', default: ['CapacityWeigher'], help: 'scheduler weighers' },
  volume_task_concurrency: { type: 'int', default: 16, min: 1, help: 'volume tasks run at once per backend' },
  task_failed_retention_days: { type: 'int', default: 7, min: 0, help: 'days failed and cancelled tasks are kept (pumice tasks list) before they are deleted; done tasks are deleted at once' },
  debug: { type: 'bool', default: false, help: 'log at DEBUG too: every request, task step and event (oslo.log debug)' },
  log_format: { type: 'string', default: 'text', help: "log line format: 'text' (TIMESTAMP PID LEVEL module [req-id user project] message, as oslo.log) or 'json' (one object per line)" },
  log_file: { type: 'string', default: null, help: 'file the log is appended to (0600; reopened on SIGHUP) instead of stderr' },
  use_journal: { type: 'bool', default: false, help: 'send the log to systemd-journald with structured fields (MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, LOGGER_NAME, REQUEST_ID, USER_ID, PROJECT_ID), as oslo.log: journalctl -u pumice REQUEST_ID=req-...; instead of stderr (log_file still gets the lines)' },
  my_ip: { type: 'string', default: '127.0.0.1', help: "IP address of this host that the other hosts reach (Nova's my_ip): a compute host reports it (os-hypervisors host_ip), names it in its volume connector, and takes incoming live migrations on it unless [libvirt] live_migration_inbound_addr says otherwise. Set it on every host of a multi-host cloud" },
  nbd_listen_host: { type: 'string', default: '127.0.0.1', help: 'address of the NBD server that exports local volumes (beyond loopback only with nbd_tls = true)' },
  nbd_listen_port: { type: 'int', default: 0, min: 0, help: 'port of the NBD server (0: a free port chosen at the first start and kept across restarts)' },
  // Past the handshake a client holds an attachment's secret: these bound a runaway consumer, not an attacker,
  // and a compute host holds one connection per attached local volume (on one host, all from loopback).
  nbd_connections_max: { type: 'int', default: 1024, min: 1, help: 'NBD connections past the handshake, server-wide (one per attached local volume)' },
  nbd_connections_per_source_max: { type: 'int', default: 512, min: 1, help: 'NBD connections past the handshake from one source address (a compute host holds one per attached local volume; on one host every local consumer comes from loopback)' },
  nbd_tls: { type: 'bool', default: false, help: 'require TLS-PSK on the NBD data path: every connection gets its own PSK identity and key (qemu tls-creds-psk, nbdinfo --tls-psk)' },
  // Backup service (cinder.conf names): the directory driver is the embedded default.
  backup_driver: { type: 'string', default: 'posix', help: "backup driver: 'posix' (chunks in a directory; cinder.backup.drivers.posix.PosixBackupDriver) or 'ceph' (RBD images; cinder.backup.drivers.ceph.CephBackupDriver)" },
  backup_posix_path: { type: 'string', default: null, help: 'directory of the posix backup driver (default: DATA_DIR/backups)' },
  backup_file_size: { type: 'int', default: 33554432, min: 65536, help: 'chunk size in bytes of the posix backup driver (Pumice default 32 MiB)' },
  backup_compression_algorithm: { type: 'string', default: 'brotli', help: "chunk codec: 'brotli' (quality 0) or 'none'" },
  restore_discard_excess_bytes: { type: 'bool', default: true, help: 'zero the bytes of a restore target beyond the backup size' },
  // Ceph backup driver (backup_driver = ceph or cinder.backup.drivers.ceph.CephBackupDriver).
  backup_ceph_conf: { type: 'string', default: '/etc/ceph/ceph.conf', help: 'ceph.conf of the cluster that holds the backups' },
  backup_ceph_user: { type: 'string', default: 'cinder-backup', help: 'Ceph user the backup driver writes as (its keyring: the keyring setting of backup_ceph_conf, else /etc/ceph/<cluster>.client.<user>.keyring)' },
  backup_ceph_pool: { type: 'string', default: 'backups', help: 'Ceph pool of the backup images' },
  backup_ceph_chunk_size: { type: 'int', default: 134217728, min: 4194304, help: 'bytes a Ceph backup or restore moves at once (in 4 MiB pieces)' },
  backup_ceph_stripe_unit: { type: 'int', default: 0, min: 0, help: 'RBD stripe unit of backup images (0: the object size)' },
  backup_ceph_stripe_count: { type: 'int', default: 0, min: 0, help: 'RBD stripe count of backup images (0: 1)' },
  // Image service (glance-api.conf names).
  show_image_direct_url: { type: 'bool', default: false, help: 'show direct_url (the store location) of images to admins and owners' },
  show_multiple_locations: { type: 'bool', default: false, help: 'show the locations list of images to admins and owners' },
  // How the volume service reaches the image service (cinder.conf names).
  glance_api_servers: { type: 'list', default: [], help: 'image API URLs (e.g. http://HOST:PORT/image); empty: the catalog entry glance_catalog_info names' },
  glance_catalog_info: { type: 'string', default: 'image:glance:publicURL', help: 'catalog entry of the image service, as TYPE:NAME:INTERFACE' },
  glance_request_timeout: { type: 'int', default: 60, min: 1, help: 'seconds to wait for the image service to answer' },
  image_conversion_dir: { type: 'string', default: null, help: 'scratch directory for image conversions (default: DATA_DIR/conversion)' },
} satisfies Record<string, OptionSpec>;

/**
 * nova.conf's options for the compute role: [DEFAULT] ones that Nova keeps there live in
 * [compute] here only when [DEFAULT] already has a Cinder option of the same name.
 */
const computeOptions = {
  instances_path: { type: 'string', default: null, help: 'directory of instance files: console logs, QMP sockets, domain XML, local disks (default: DATA_DIR/instances)' },
  cpu_allocation_ratio: { type: 'float', default: 4, help: 'virtual CPUs per physical CPU the scheduler allows (nova.conf default 4.0 from placement)' },
  ram_allocation_ratio: { type: 'float', default: 1, help: 'RAM over-commit ratio (1.0: none)' },
  disk_allocation_ratio: { type: 'float', default: 1, help: 'local disk over-commit ratio' },
  reserved_host_memory_mb: { type: 'int', default: 512, min: 0, help: 'MiB of host memory kept for the host itself' },
  reserved_host_cpus: { type: 'int', default: 0, min: 0, help: 'host CPUs kept for the host itself' },
  reserved_host_disk_mb: { type: 'int', default: 0, min: 0, help: 'MiB of local disk kept for the host itself' },
  default_availability_zone: { type: 'string', default: 'nova', help: 'availability zone of compute hosts that are in no aggregate' },
  shutdown_timeout: { type: 'int', default: 60, min: 0, help: 'seconds a guest gets to power off on ACPI before it is stopped hard' },
  max_concurrent_builds: { type: 'int', default: 10, min: 1, help: 'instance builds run at once on this host' },
  scheduler_enabled_filters: {
    type: 'list',
    default: ['ComputeFilter', 'AvailabilityZoneFilter', 'ComputeCapabilitiesFilter', 'ImagePropertiesFilter', 'RamFilter', 'CoreFilter', 'DiskFilter'],
    help: 'instance scheduler filters in order (nova.conf [filter_scheduler] enabled_filters)',
  },
  resume_guests_state_on_host_boot: { type: 'bool', default: false, help: 'start guests that were running when the compute agent starts and finds them stopped' },
  auto_evacuate: { type: 'bool', default: false, help: 'evacuate the servers of a compute host that stays down (heartbeat lost) longer than auto_evacuate_grace_s, after fencing it (never for a host forced down for maintenance)' },
  auto_evacuate_grace_s: { type: 'int', default: 60, min: 0, help: 'seconds a compute host must be down (beyond service_down_time) before its servers are evacuated automatically' },
  auto_evacuate_hosts_max: { type: 'int', default: 1, min: 1, help: 'compute hosts evacuated automatically at once' },
  failback_healthy_seconds: { type: 'int', default: 300, min: 0, help: "seconds a returning compute host must have been up without a gap before fail-back (pumice host rebalance, auto_failback) moves its servers home" },
  auto_failback: { type: 'bool', default: false, help: 'live-migrate servers back to their home host (where they were built) once it has been healthy failback_healthy_seconds, one at a time, never while a compute host is down' },
  auto_evacuate_down_fraction_max: { type: 'float', default: 0.5, help: 'no automatic evacuation while more than this fraction of compute hosts is down (a partition of the control plane, not host deaths)' },
  evacuation_blocklist_expire_s: { type: 'int', default: 3600, min: 60, help: "lifetime of the Ceph blocklist entries that fence an evacuated host's clients; the returning host removes them once its old guests are destroyed when its Ceph user may (mon 'profile rbd' may only add entries: then they expire)" },
} satisfies Record<string, OptionSpec>;

/** nova.conf's [libvirt]: the scenario's Ceph options, honoured although Pumice drives QEMU over QMP. */
const libvirtOptions = {
  virt_type: { type: 'string', default: 'auto', help: "accelerator: 'kvm', 'qemu' (TCG) or 'auto' (a real probe boot decides; /dev/kvm alone proves nothing)" },
  images_type: { type: 'string', default: 'default', help: "root disks of instances booted from images: 'rbd' (COW clone in images_rbd_pool), 'qcow2' or 'default' (qcow2 overlay in instances_path)" },
  images_rbd_pool: { type: 'string', default: 'rbd', help: 'Ceph pool of instance root disks when images_type = rbd' },
  images_rbd_ceph_conf: { type: 'string', default: '', help: 'ceph.conf of the instance disk pool' },
  rbd_user: { type: 'string', default: null, help: 'Ceph user (client.NAME) for instance disks and RBD volumes' },
  rbd_secret_uuid: { type: 'string', default: null, help: 'libvirt secret uuid of rbd_user (shown in the domain XML)' },
  rbd_keyring: { type: 'string', default: null, help: 'keyring of rbd_user (default: the keyring of images_rbd_ceph_conf, else /etc/ceph/ceph.client.USER.keyring)' },
  disk_cachemodes: { type: 'list', default: [], help: "cache modes per disk type, e.g. 'network=writeback,file=none'" },
  hw_disk_discard: { type: 'string', default: null, help: "'unmap' passes discards to the storage; unset ignores them" },
  inject_password: { type: 'bool', default: false, help: 'not supported (as the scenario: no injection)' },
  inject_key: { type: 'bool', default: false, help: 'not supported (as the scenario: no injection)' },
  inject_partition: { type: 'int', default: -2, min: -2, help: 'not supported (-2: no injection)' },
  live_migration_flag: { type: 'string', default: null, help: 'accepted for the scenario (libvirt flags; QEMU is driven over QMP, so they change nothing)' },
  live_migration_inbound_addr: { type: 'string', default: null, help: "address this host's QEMU listens on for an incoming live migration (the source connects to it); unset: [DEFAULT] my_ip" },
  live_migration_bandwidth: { type: 'int', default: 0, min: 0, help: 'MiB/s a live migration may use (0: 1 GiB/s, more than a LAN carries)' },
  live_migration_completion_timeout: { type: 'int', default: 800, min: 1, help: 'seconds per GiB of guest memory a live migration may take before it is cancelled (the guest stays on the source)' },
  qemu_binary: { type: 'string', default: 'qemu-system-x86_64', help: 'QEMU system emulator to run guests with' },
} satisfies Record<string, OptionSpec>;

/** nova.conf's [cinder]: how the compute role reaches the Block Storage API. */
const novaCinderOptions = {
  catalog_info: { type: 'string', default: 'volumev3:cinderv3:publicURL', help: 'catalog entry of Block Storage, TYPE:NAME:INTERFACE (NAME may be empty)' },
  endpoint_override: { type: 'string', default: null, help: 'Block Storage URL up to /v3 (overrides the catalog)' },
  os_region_name: { type: 'string', default: null, help: 'region of the Block Storage endpoint' },
  http_timeout: { type: 'int', default: 60, min: 1, help: 'seconds to wait for Block Storage to answer' },
} satisfies Record<string, OptionSpec>;

const tokenOptions = {
  expiration: { type: 'int', default: 3600, min: 60, help: 'token lifetime in seconds' },
} satisfies Record<string, OptionSpec>;

/** keystone.conf's [security_compliance]: account lockout after repeated failed logins, and the rule new passwords follow. */
const securityComplianceOptions = {
  lockout_failure_attempts: { type: 'int', default: 10, min: 0, help: 'failed password logins in a row after which a user is locked out (0: never; Keystone default: unset)' },
  lockout_duration: { type: 'int', default: 300, min: 1, help: 'seconds a locked-out user stays locked (Keystone default 1800)' },
  password_regex: { type: 'string', default: '', help: 'regular expression every new password must match (user create, update, self-service change); empty: any' },
  password_regex_description: { type: 'string', default: '', help: 'what password_regex asks for, in words, shown when a password is refused' },
} satisfies Record<string, OptionSpec>;

const databaseOptions = {
  connection: { type: 'string', default: null, help: 'database URL (default: SQLite in the data directory)' },
  max_retries: { type: 'int', default: 10, min: -1, help: 'PostgreSQL: attempts after the first failed connect at start while the server or its network is not there yet (-1: keep trying); a refused login fails at once' },
  retry_interval: { type: 'int', default: 10, min: 1, help: 'PostgreSQL: seconds between those attempts' },
} satisfies Record<string, OptionSpec>;

/** Pumice's [api]: how the HTTP layer checks itself. */
const apiOptions = {
  validate_responses: { type: 'bool', default: false, help: 'check every API response against its declared schema; a mismatch becomes a 500 (tests turn it on; also PUMICE_VALIDATE_RESPONSES=1)' },
} satisfies Record<string, OptionSpec>;

/** oslo.policy's [oslo_policy]: the operator's overrides of the services' policy tables. */
const osloPolicyOptions = {
  policy_file: { type: 'string', default: null, help: 'YAML or JSON file of policy rules (rule name: check string) overriding the defaults of every service' },
} satisfies Record<string, OptionSpec>;

const middlewareOptions = {
  max_request_body_size: { type: 'int', default: 114688, min: 1024, help: 'largest JSON request body in bytes' },
} satisfies Record<string, OptionSpec>;

/** GET /healthcheck (oslo.middleware's healthcheck). */
const healthcheckOptions = {
  detailed: { type: 'bool', default: false, help: 'show every check with its reason to callers without an admin token (reasons may name hosts and paths)' },
  task_stuck_seconds: { type: 'int', default: 600, min: 1, help: 'a task ready to run but waiting longer, or holding a lease expired longer, fails the task queue check' },
} satisfies Record<string, OptionSpec>;

/** GET /metrics (Prometheus text format). */
const metricsOptions = {
  allow_anonymous: { type: 'bool', default: false, help: 'serve /metrics on the API listener without a token (default: admin token required)' },
  listen: { type: 'string', default: null, help: 'HOST:PORT of a separate listener serving only /metrics without a token (e.g. 127.0.0.1:9464 or a management address)' },
} satisfies Record<string, OptionSpec>;

/**
 * glance-api.conf's [glance_store]. Two forms, as Glance: the single-store one (`stores`,
 * `default_store` and the store options here; store ids are the types), or named stores
 * (`[DEFAULT] enabled_backends = NAME:TYPE,...`, each configured in its own [NAME] section, and
 * `default_backend` here). The store options here then only say where images recorded before
 * the switch live, so they are adopted by the named store holding the same directory or pool.
 */
const glanceStoreOptions = {
  default_store: { type: 'string', default: 'file', help: "store of new images: 'file' or 'rbd' (single-store form; with named stores use default_backend)" },
  stores: { type: 'list', default: ['file'], help: 'enabled image stores, by type (single-store form; named stores: NAME:TYPE entries in [DEFAULT] enabled_backends)' },
  default_backend: { type: 'string', default: null, help: 'the named store of new images (required when [DEFAULT] enabled_backends has NAME:TYPE entries, as Glance)' },
  filesystem_store_datadir: { type: 'string', default: null, help: 'directory of the file image store (default: DATA_DIR/images)' },
  rbd_store_pool: { type: 'string', default: 'images', help: 'Ceph pool of the rbd image store' },
  rbd_store_user: { type: 'string', default: 'glance', help: 'Ceph user (client.NAME) of the rbd image store' },
  rbd_store_ceph_conf: { type: 'string', default: '/etc/ceph/ceph.conf', help: 'path of ceph.conf for the rbd image store' },
  rbd_store_chunk_size: { type: 'int', default: 8, min: 1, help: 'RBD object size in MiB of stored images' },
} satisfies Record<string, OptionSpec>;

/** A named file store's section ([NAME] of enabled_backends NAME:file), glance_store's filesystem options. */
const fileStoreOptions = {
  store_description: { type: 'string', default: null, help: 'what GET /v2/info/stores says of this store' },
  filesystem_store_datadir: { type: 'string', default: null, help: 'directory of this store (required: two stores never share one)' },
} satisfies Record<string, OptionSpec>;

/** A named rbd store's section ([NAME] of enabled_backends NAME:rbd), glance_store's RBD options. */
const rbdStoreOptions = {
  store_description: { type: 'string', default: null, help: 'what GET /v2/info/stores says of this store' },
  rbd_store_pool: { type: 'string', default: null, help: 'Ceph pool of this store (required: two stores never share one)' },
  rbd_store_user: { type: 'string', default: 'glance', help: 'Ceph user (client.NAME) of this store' },
  rbd_store_ceph_conf: { type: 'string', default: '/etc/ceph/ceph.conf', help: 'path of ceph.conf for this store' },
  rbd_store_chunk_size: { type: 'int', default: 8, min: 1, help: 'RBD object size in MiB of stored images (a power of two)' },
} satisfies Record<string, OptionSpec>;

/** Glance's reserved stores: staging (glance-direct, web-download) and tasks; only their directory is read. */
const reservedStoreOptions = {
  filesystem_store_datadir: { type: 'string', default: null, help: 'directory of the reserved store (os_glance_staging_store: staged and spooled image data; default DATA_DIR/image-staging)' },
} satisfies Record<string, OptionSpec>;

/** An enabled image store, whichever form configured it. */
export interface ImageStoreConfig {
  /** Its identifier everywhere (the API's store ids): NAME of NAME:TYPE, or the type in the single-store form. */
  id: string;
  type: 'file' | 'rbd';
  /** The section its options come from: [NAME], or [glance_store]. */
  section: string;
  description: string | null;
  filesystem_store_datadir: string;
  rbd_store_pool: string;
  rbd_store_user: string;
  rbd_store_ceph_conf: string;
  rbd_store_chunk_size: number;
}

/** Store types this version has, and the Glance ones it does not (named in the refusal). */
export const imageStoreTypes = ['file', 'rbd'] as const;
const glanceOnlyStoreTypes = ['http', 'swift', 'cinder', 'vmware', 's3'];

/**
 * glance-image-import.conf's [image_import_opts] (one file here): the import
 * plugins that run on every upload and import. `image_conversion` converts
 * non-raw images to raw for the rbd store; without it they are refused there.
 */
const imageImportOptions = {
  image_import_plugins: { type: 'list', default: ['image_conversion'], help: "import plugins: 'image_conversion' (convert non-raw images to raw for the rbd store), or empty" },
} satisfies Record<string, OptionSpec>;

/**
 * glance-image-import.conf's [import_filtering_opts]: where the web-download
 * import may fetch from. Unlike Glance, an empty allowed_hosts turns
 * web-download off: a server that fetches any URL is a way into networks
 * its users cannot reach.
 */
const importFilteringOptions = {
  allowed_schemes: { type: 'list', default: ['http', 'https'], help: 'URL schemes web-download may use' },
  disallowed_schemes: { type: 'list', default: [], help: 'URL schemes refused when allowed_schemes is empty' },
  allowed_hosts: { type: 'list', default: [], help: 'host names or addresses web-download may fetch from (empty: web-download is off)' },
  disallowed_hosts: { type: 'list', default: [], help: 'hosts refused even when listed in allowed_hosts' },
  allowed_ports: { type: 'list', default: ['80', '443'], help: 'ports web-download may connect to (empty: any not in disallowed_ports)' },
  disallowed_ports: { type: 'list', default: [], help: 'ports refused when allowed_ports is empty' },
} satisfies Record<string, OptionSpec>;

/** glance-image-import.conf's [image_conversion]. */
const imageConversionOptions = {
  output_format: { type: 'string', default: 'raw', help: "format image_conversion converts to: 'raw' (what booting from RBD needs)" },
} satisfies Record<string, OptionSpec>;

const backendOptions = {
  volume_driver: { type: 'string', default: null, help: "driver: 'local' (sparse files); 'rbd' comes with the Ceph backend" },
  volume_backend_name: { type: 'string', default: null, help: 'name volume types match with volume_backend_name (default: section name)' },
  backend_availability_zone: { type: 'string', default: null, help: 'zone of this backend (default: storage_availability_zone)' },
  max_over_subscription_ratio: { type: 'float_or_auto', default: 20, help: 'thin provisioning ratio, a float >= 1 or auto' },
  reserved_percentage: { type: 'int', default: 0, min: 0, help: 'percent of capacity kept free' },
  local_volume_dir: { type: 'string', default: null, help: 'directory of the local backend (default: DATA_DIR/volumes/SECTION)' },
  report_discard_supported: { type: 'bool', default: false, help: 'tell consumers discard/unmap is supported' },
  // Ceph RBD options (scenario §4); read here so the scenario's section parses,
  // used by the RBD driver.
  rbd_pool: { type: 'string', default: 'rbd', help: 'Ceph pool of volumes' },
  rbd_user: { type: 'string', default: null, help: 'Ceph user (client.NAME)' },
  rbd_ceph_conf: { type: 'string', default: '', help: 'path of ceph.conf' },
  rbd_keyring_conf: { type: 'string', default: null, help: 'path of the keyring' },
  rbd_cluster_name: { type: 'string', default: 'ceph', help: 'Ceph cluster name' },
  rbd_secret_uuid: { type: 'string', default: null, help: 'libvirt secret uuid' },
  rbd_flatten_volume_from_snapshot: { type: 'bool', default: false, help: 'flatten volumes created from snapshots' },
  rbd_max_clone_depth: { type: 'int', default: 5, min: 0, help: 'clone chain length before flatten' },
  rbd_store_chunk_size: { type: 'int', default: 4, min: 1, help: 'RBD object size in MiB' },
  rados_connect_timeout: { type: 'int', default: -1, min: -1, help: 'seconds to wait for the cluster (-1: library default)' },
} satisfies Record<string, OptionSpec>;

type Value<S extends OptionSpec> = S['type'] extends 'int' | 'float'
  ? number
  : S['type'] extends 'bool'
    ? boolean
    : S['type'] extends 'list'
      ? string[]
      : S['type'] extends 'float_or_auto'
        ? number | 'auto'
        : S['default'] extends null
          ? string | null
          : string;
type Values<T extends Record<string, OptionSpec>> = { -readonly [K in keyof T]: Value<T[K]> };

export type DefaultConfig = Values<typeof defaultOptions>;
export type BackendConfig = Values<typeof backendOptions> & { section: string; volume_driver: string; volume_backend_name: string };

export interface PumiceConfig {
  path: string | null;
  dataDir: string;
  /** Why DEFAULT.host is what it is (the start log says it). */
  hostReason?: string;
  /** DEFAULT.host is a default not yet in DATA_DIR/host: recordHostName writes it. */
  hostToRecord?: boolean;
  DEFAULT: DefaultConfig;
  token: Values<typeof tokenOptions>;
  security_compliance: Values<typeof securityComplianceOptions>;
  database: Values<typeof databaseOptions>;
  oslo_middleware: Values<typeof middlewareOptions>;
  api: Values<typeof apiOptions>;
  oslo_policy: Values<typeof osloPolicyOptions>;
  healthcheck: Values<typeof healthcheckOptions>;
  metrics: Values<typeof metricsOptions>;
  glance_store: Omit<Values<typeof glanceStoreOptions>, 'default_backend'> & {
    filesystem_store_datadir: string;
    /** Every enabled store, the default first (both forms). */
    backends: ImageStoreConfig[];
    /** The id of the store of new images (default_backend, or default_store in the single-store form). */
    default_backend: string;
    /** Named stores (enabled_backends NAME:TYPE): ids are names, `stores` shows even with one store. */
    named: boolean;
    /** Store ids images recorded before named stores may carry ('file', 'rbd') → the named store holding their data. */
    adopted: Record<string, string>;
    /** [os_glance_staging_store] filesystem_store_datadir, else null (DATA_DIR/image-staging). */
    staging_datadir: string | null;
  };
  image_import_opts: Values<typeof imageImportOptions>;
  import_filtering_opts: ImportFilteringConfig;
  image_conversion: Values<typeof imageConversionOptions>;
  compute: Values<typeof computeOptions> & { instances_path: string };
  libvirt: Values<typeof libvirtOptions>;
  cinder: Values<typeof novaCinderOptions>;
  backends: BackendConfig[];
}

const fixedSections: Record<string, Record<string, OptionSpec>> = {
  DEFAULT: defaultOptions,
  token: tokenOptions,
  security_compliance: securityComplianceOptions,
  database: databaseOptions,
  oslo_middleware: middlewareOptions,
  api: apiOptions,
  oslo_policy: osloPolicyOptions,
  healthcheck: healthcheckOptions,
  metrics: metricsOptions,
  glance_store: glanceStoreOptions,
  os_glance_staging_store: reservedStoreOptions,
  os_glance_tasks_store: reservedStoreOptions,
  image_import_opts: imageImportOptions,
  import_filtering_opts: importFilteringOptions,
  image_conversion: imageConversionOptions,
  compute: computeOptions,
  libvirt: libvirtOptions,
  cinder: novaCinderOptions,
};

/** Every section's options with type, default and help (`pumice config sample`); `backend` is the table of each enabled_backends section. */
export function optionTables(): { sections: Record<string, Record<string, OptionSpec>>; backend: Record<string, OptionSpec>; imageStores: Record<'file' | 'rbd', Record<string, OptionSpec>> } {
  return { sections: fixedSections, backend: backendOptions, imageStores: { file: fileStoreOptions, rbd: rbdStoreOptions } };
}

export type { OptionSpec };

/** Loads and validates a configuration file; `path` null gives the embedded defaults. */
export function loadConfig(path: string | null, dataDir: string): PumiceConfig {
  const ini: IniFile = path
    ? parseIni(readText(path), path)
    : { path: '(defaults)', sections: new Map() };
  const config = buildConfig(ini, dataDir, path);
  if (lineOf(ini, 'DEFAULT', 'host') === undefined) {
    const chosen = defaultHostName(dataDir);
    config.DEFAULT.host = chosen.host;
    config.hostReason = chosen.reason;
    config.hostToRecord = !chosen.recorded;
  } else config.hostReason = `[DEFAULT] host in ${path}`;
  return config;
}

/** DATA_DIR/host: the host name chosen at a data directory's first start, when the configuration names none. */
const hostNameFile = 'host';

/**
 * The host name of a configuration without `[DEFAULT] host`: the one recorded in DATA_DIR/host;
 * else 'pumice' for a data directory that was in use before the hostname became the default
 * (its volumes, services and tasks carry 'pumice'); else this machine's hostname, as Cinder's
 * default. `recordHostName` writes the choice at the first start, so it never changes after.
 */
export function defaultHostName(dataDir: string): { host: string; reason: string; recorded: boolean } {
  const record = join(dataDir, hostNameFile);
  if (existsSync(record)) return { host: readFileSync(record, 'utf8').trim(), reason: `recorded in ${record} at the data directory's first start`, recorded: true };
  const events = join(dataDir, 'log', 'events.jsonl');
  // A compute-only host (on the cloud's PostgreSQL) writes none of the files but its guests' directories: named anew,
  // it would take its own guests for another host's and destroy them.
  const instances = join(dataDir, 'instances');
  const inUse = ['pumice.db', 'admin-openrc', 'credential.key'].some((name) => existsSync(join(dataDir, name))) || (existsSync(events) && statSync(events).size > 0)
    || (existsSync(instances) && readdirSync(instances).some((name) => !name.startsWith('.')));
  if (inUse) return { host: 'pumice', reason: `the data directory ${dataDir} predates the hostname default (it was 'pumice' before)`, recorded: false };
  return { host: hostname(), reason: "this machine's hostname (no [DEFAULT] host)", recorded: false };
}

/** Writes DATA_DIR/host once (0600), when the host name came from defaultHostName and is not recorded yet. */
export function recordHostName(config: PumiceConfig): void {
  if (!config.hostToRecord) return;
  try {
    writeFileSync(join(config.dataDir, hostNameFile), `${config.DEFAULT.host}\n`, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
}

export function parseConfigText(text: string, dataDir: string, path = 'pumice.conf'): PumiceConfig {
  return buildConfig(parseIni(text, path), dataDir, path);
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(path, undefined, `cannot read the configuration file: ${(error as Error).message}`);
  }
}

/**
 * Reads every section and runs every check `serve` runs before it touches anything, collecting
 * the errors: check-config and serve report them all at once, each with its file:line.
 */
function buildConfig(ini: IniFile, dataDir: string, path: string | null): PumiceConfig {
  const problems = (ini.errors ??= []);
  /** Runs one check; its ConfigError joins the list and `fallback` stands in for the value. */
  const attempt = <T>(check: () => T, fallback: () => T): T => {
    try {
      return check();
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      problems.push(error);
      return fallback();
    }
  };
  const read = <T extends Record<string, OptionSpec>>(name: string, specs: T): Values<T> =>
    readSection(ini, ini.sections.get(name), specs);
  const DEFAULT = read('DEFAULT', defaultOptions);
  // NAME:TYPE entries are Glance's named image stores; the others are Cinder's volume backends.
  const storeEntries = DEFAULT.enabled_backends.filter((entry) => entry.includes(':'));
  // Only image stores named: the volume backends are the default ones, as when the option is unset.
  const onlyStores = storeEntries.length > 0 && storeEntries.length === DEFAULT.enabled_backends.length;
  if (storeEntries.length > 0) {
    DEFAULT.enabled_backends = onlyStores ? [...defaultOptions.enabled_backends.default] : DEFAULT.enabled_backends.filter((entry) => !entry.includes(':'));
  }
  const storeNames = storeEntries.map((entry) => entry.slice(0, entry.indexOf(':')).trim());
  let backendNames = DEFAULT.enabled_backends;
  if (backendNames.length === 0) {
    problems.push(new ConfigError(ini.path, lineOf(ini, 'DEFAULT', 'enabled_backends'), 'enabled_backends is empty: name at least one backend section'));
    backendNames = [];
  }
  for (const [name, section] of ini.sections) {
    if (name in fixedSections || backendNames.includes(name) || storeNames.includes(name)) continue;
    problems.push(new ConfigError(
      ini.path,
      section.line,
      `unknown section [${name}]; expected one of ${Object.keys(fixedSections).map((s) => `[${s}]`).join(', ')} or a backend named in enabled_backends (${backendNames.join(', ')})${suggest(name, [...Object.keys(fixedSections), ...backendNames])}`,
    ));
  }
  const backendsExplicit = (ini.sections.get('DEFAULT')?.entries.has('enabled_backends') ?? false) && !onlyStores;
  const backends: BackendConfig[] = [];
  for (const section of backendNames) {
    const iniSection = ini.sections.get(section);
    if (!iniSection && backendsExplicit) {
      problems.push(new ConfigError(
        ini.path,
        lineOf(ini, 'DEFAULT', 'enabled_backends'),
        `enabled_backends names '${section}' but the file has no [${section}] section; add it with at least 'volume_driver = local'`,
      ));
      continue;
    }
    const values = readSection(ini, iniSection, backendOptions);
    const driver = values.volume_driver ?? (section === 'local' || !iniSection ? 'local' : null);
    if (!driver) {
      problems.push(new ConfigError(ini.path, iniSection?.line, `[${section}] has no volume_driver; set 'volume_driver = local' (or rbd)`));
      continue;
    }
    if (!volumeDrivers.includes(driver)) {
      problems.push(new ConfigError(
        ini.path,
        lineOf(ini, section, 'volume_driver') ?? iniSection?.line,
        `[${section}] volume_driver = ${driver} is not available; accepted values: ${volumeDrivers.join(', ')} (${driverAdvice(driver)})${suggest(driver, volumeDrivers, false)}`,
      ));
    }
    backends.push({
      ...values,
      section,
      volume_driver: driver,
      volume_backend_name: values.volume_backend_name ?? section,
      local_volume_dir: values.local_volume_dir ?? join(dataDir, 'volumes', section),
      backend_availability_zone: values.backend_availability_zone ?? DEFAULT.storage_availability_zone,
    });
  }
  const database = read('database', databaseOptions);
  checkServeOptions(ini, DEFAULT, database, problems);
  const config: PumiceConfig = {
    path,
    dataDir,
    DEFAULT,
    token: read('token', tokenOptions),
    security_compliance: read('security_compliance', securityComplianceOptions),
    database,
    oslo_middleware: read('oslo_middleware', middlewareOptions),
    api: read('api', apiOptions),
    oslo_policy: read('oslo_policy', osloPolicyOptions),
    healthcheck: read('healthcheck', healthcheckOptions),
    metrics: read('metrics', metricsOptions),
    glance_store: attempt(() => readGlanceStore(ini, dataDir, storeEntries, backendNames), () => fallbackGlanceStore(dataDir)),
    import_filtering_opts: attempt(() => readImportFiltering(ini), () => readImportFiltering({ path: ini.path, sections: new Map() })),
    ...attempt(() => readImageImport(ini), () => ({ image_import_opts: { image_import_plugins: [] }, image_conversion: readSection(ini, undefined, imageConversionOptions) })),
    ...attempt(() => readCompute(ini, dataDir), () => readCompute({ path: ini.path, sections: new Map() }, dataDir)),
    backends,
  };
  throwConfigErrors(problems);
  return config;
}

/** volume_driver values this version runs: the short names and Cinder's class path of the RBD driver. */
export const volumeDrivers = ['local', 'rbd', 'cinder.volume.drivers.rbd.RBDDriver'];

/** Why a driver name Cinder knows is refused: never a silent substitute (LVM once became sparse files). */
function driverAdvice(driver: string): string {
  if (/lvm/i.test(driver)) return "Pumice has no LVM driver; 'local' keeps sparse files in local_volume_dir, 'rbd' uses Ceph";
  if (/^cinder\./.test(driver)) return "Pumice implements only Cinder's RBD driver of Cinder's drivers";
  return "'local' keeps sparse files in local_volume_dir, 'rbd' uses Ceph";
}

/** The checks `serve` made at start with a plain Error (backup driver, codec, NBD exposure, database), now made for every command. */
function checkServeOptions(ini: IniFile, d: DefaultConfig, database: Values<typeof databaseOptions>, problems: ConfigError[]): void {
  const at = (key: string) => lineOf(ini, 'DEFAULT', key);
  if (!backupDriverKind(d.backup_driver)) {
    problems.push(new ConfigError(ini.path, at('backup_driver'), `[DEFAULT] backup_driver = ${d.backup_driver} is unknown; use 'posix' (chunks in backup_posix_path; cinder.backup.drivers.posix.PosixBackupDriver) or 'ceph' (RBD images in backup_ceph_pool; cinder.backup.drivers.ceph.CephBackupDriver)`));
  }
  if (!(chunkCodecs as readonly string[]).includes(d.backup_compression_algorithm)) {
    problems.push(new ConfigError(ini.path, at('backup_compression_algorithm'), `[DEFAULT] backup_compression_algorithm = ${d.backup_compression_algorithm} is unknown; use ${chunkCodecs.join(' or ')}`));
  }
  const nbdHost = d.nbd_listen_host;
  const loopback = nbdHost === 'localhost' || nbdHost === '::1' || /^127\.\d+\.\d+\.\d+$/.test(nbdHost);
  if (!loopback && !d.nbd_tls) {
    problems.push(new ConfigError(ini.path, at('nbd_listen_host'), `[DEFAULT] nbd_listen_host = ${nbdHost} listens beyond loopback without TLS: set [DEFAULT] nbd_tls = true (each connection then gets its own TLS-PSK key), or nbd_listen_host = 127.0.0.1`));
  }
  if (d.log_format !== 'text' && d.log_format !== 'json') {
    problems.push(new ConfigError(ini.path, at('log_format'), `[DEFAULT] log_format = ${d.log_format} is unknown; use 'text' (oslo.log's line format) or 'json'`));
  }
  if (d.use_journal && !existsSync(journalSocketPath)) {
    problems.push(new ConfigError(ini.path, at('use_journal'), `[DEFAULT] use_journal = true, but ${journalSocketPath} does not exist: systemd-journald does not run here. Run Pumice under systemd, or set use_journal = false (log_file, or stderr)`));
  }
  if (database.connection && !database.connection.startsWith('sqlite') && !/^postgres(ql)?:\/\//.test(database.connection)) {
    problems.push(new ConfigError(ini.path, lineOf(ini, 'database', 'connection'), `[database] connection = ${database.connection.replace(/^(\w+:\/\/[^:@/]*):[^@/]*@/, '$1:***@')}: unknown database; use postgresql://user:password@host:port/database, or remove the option for SQLite in DATA_DIR/pumice.db`));
  }
}

/** Stands in for [glance_store] when it has errors: the embedded file store, so the other checks still run. */
function fallbackGlanceStore(dataDir: string): PumiceConfig['glance_store'] {
  const values = readSection({ path: '', sections: new Map() }, undefined, glanceStoreOptions);
  const datadir = join(dataDir, 'images');
  return {
    ...values, filesystem_store_datadir: datadir, default_backend: 'file', named: false, adopted: {}, staging_datadir: null,
    backends: [{ id: 'file', type: 'file', section: 'glance_store', description: null, filesystem_store_datadir: datadir, rbd_store_pool: values.rbd_store_pool, rbd_store_user: values.rbd_store_user, rbd_store_ceph_conf: values.rbd_store_ceph_conf, rbd_store_chunk_size: values.rbd_store_chunk_size }],
  };
}

/** Store identifiers: they appear in URLs (/v2/stores/{store}/{image}) and headers, so a plain word. */
const storeNamePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/**
 * [glance_store] and, with named stores, each store's [NAME] section. Every problem is a
 * ConfigError naming the option and the fix; the first one found is thrown (buildConfig still
 * checks the rest of the file).
 */
function readGlanceStore(ini: IniFile, dataDir: string, storeEntries: string[], volumeBackends: string[]): PumiceConfig['glance_store'] {
  const values = readSection(ini, ini.sections.get('glance_store'), glanceStoreOptions);
  const at = (key: string) => lineOf(ini, 'glance_store', key);
  const checkChunk = (section: string, chunk: number) => {
    if ((chunk & (chunk - 1)) !== 0) {
      throw new ConfigError(ini.path, lineOf(ini, section, 'rbd_store_chunk_size'), `[${section}] rbd_store_chunk_size = ${chunk} must be a power of two (MiB), e.g. 8`);
    }
  };
  const legacyDatadir = values.filesystem_store_datadir ?? join(dataDir, 'images');
  const staging = ini.sections.get('os_glance_staging_store') ? readSection(ini, ini.sections.get('os_glance_staging_store'), reservedStoreOptions).filesystem_store_datadir : null;
  checkChunk('glance_store', values.rbd_store_chunk_size);
  const legacyOf = (id: 'file' | 'rbd'): ImageStoreConfig => ({
    id, type: id, section: 'glance_store', description: null, filesystem_store_datadir: legacyDatadir,
    rbd_store_pool: values.rbd_store_pool, rbd_store_user: values.rbd_store_user, rbd_store_ceph_conf: values.rbd_store_ceph_conf, rbd_store_chunk_size: values.rbd_store_chunk_size,
  });
  if (storeEntries.length === 0) {
    if (values.default_backend !== null) {
      throw new ConfigError(ini.path, at('default_backend'), `[glance_store] default_backend = ${values.default_backend} names a store, but [DEFAULT] enabled_backends has no NAME:TYPE entries: add the stores there (e.g. enabled_backends = ${values.default_backend}:file, and a [${values.default_backend}] section with filesystem_store_datadir), or remove default_backend and use stores/default_store`);
    }
    for (const [key, value] of [['default_store', [values.default_store]], ['stores', values.stores]] as const) {
      const unknown = value.find((store) => store !== 'file' && store !== 'rbd');
      if (unknown !== undefined) {
        throw new ConfigError(ini.path, at(key), `[glance_store] ${key}: store '${unknown}' is not available; this version has the 'file' and 'rbd' stores`);
      }
    }
    if (!values.stores.includes(values.default_store)) {
      throw new ConfigError(ini.path, at('default_store'), `[glance_store] default_store = ${values.default_store} is not in stores (${values.stores.join(', ')}): add it to stores`);
    }
    const ids = [values.default_store, ...values.stores.filter((id) => id !== values.default_store)] as ('file' | 'rbd')[];
    return { ...values, filesystem_store_datadir: legacyDatadir, default_backend: values.default_store, named: false, adopted: {}, staging_datadir: staging, backends: [...new Set(ids)].map(legacyOf) };
  }

  // Named stores, as Glance's multi-store: NAME:TYPE in [DEFAULT] enabled_backends, [NAME] sections, default_backend.
  const enabledAt = lineOf(ini, 'DEFAULT', 'enabled_backends');
  const fail = (message: string, line = enabledAt): never => {
    throw new ConfigError(ini.path, line, message);
  };
  for (const key of ['stores', 'default_store'] as const) {
    if (at(key) !== undefined) {
      fail(`[glance_store] ${key} is the single-store form and [DEFAULT] enabled_backends names image stores (${storeEntries.join(', ')}): remove ${key}; ${key === 'stores' ? 'the NAME:TYPE entries are the stores' : 'default_backend names the store of new images'}`, at(key));
    }
  }
  const backends: ImageStoreConfig[] = [];
  for (const entry of storeEntries) {
    const [rawName, rawType, ...rest] = entry.split(':').map((part) => part.trim());
    const name = rawName!;
    const type = rawType!;
    if (rest.length > 0 || !storeNamePattern.test(name)) {
      fail(`[DEFAULT] enabled_backends entry '${entry}' is not NAME:TYPE with a store name of letters, digits, '_', '.', '-' (at most 64), e.g. fast:rbd`);
    }
    if (name.startsWith('os_glance_')) fail(`[DEFAULT] enabled_backends: the store name '${name}' uses the prefix os_glance_, which Glance reserves for its own stores: rename it`);
    if (!(imageStoreTypes as readonly string[]).includes(type)) {
      const glanceOnly = glanceOnlyStoreTypes.includes(type) ? ` (Glance has a ${type} store; Pumice does not)` : suggest(type, [...imageStoreTypes], false);
      fail(`[DEFAULT] enabled_backends: store '${name}' has type '${type}', which is not available${glanceOnly}; use ${imageStoreTypes.join(' or ')}, e.g. ${name}:rbd`);
    }
    if (backends.some((b) => b.id === name)) fail(`[DEFAULT] enabled_backends names the image store '${name}' twice: give each store its own name (e.g. ${name}:${type},${name}2:${type})`);
    if (volumeBackends.includes(name)) fail(`[DEFAULT] enabled_backends names '${name}' both as a volume backend and as an image store (${entry}): one [${name}] section cannot configure both; rename the store, e.g. ${name}_images:${type}`);
    if (name in fixedSections) fail(`[DEFAULT] enabled_backends: the store name '${name}' is the name of the [${name}] section of other options: rename the store, e.g. ${name}_store:${type}`);
    if ((name === 'file' || name === 'rbd') && type !== name) {
      fail(`[DEFAULT] enabled_backends: a store named '${name}' must have type ${name} (images recorded in the single-store form carry '${name}' as their store): rename it or use ${name}:${name}`);
    }
    const section = ini.sections.get(name);
    if (!section) {
      fail(`[DEFAULT] enabled_backends names the image store ${entry} but the file has no [${name}] section: add it with ${type === 'rbd' ? 'rbd_store_pool = POOL (and rbd_store_user, rbd_store_ceph_conf)' : 'filesystem_store_datadir = DIRECTORY'}`);
    }
    const storeType = type as 'file' | 'rbd';
    if (storeType === 'file') {
      const own = readSection(ini, section, fileStoreOptions);
      if (own.filesystem_store_datadir === null) fail(`[${name}] is a file store (enabled_backends ${entry}) without filesystem_store_datadir: add filesystem_store_datadir = DIRECTORY (each store its own)`, section!.line);
      backends.push({ ...legacyOf('file'), id: name, section: name, description: own.store_description, filesystem_store_datadir: own.filesystem_store_datadir! });
    } else {
      const own = readSection(ini, section, rbdStoreOptions);
      if (own.rbd_store_pool === null) fail(`[${name}] is an rbd store (enabled_backends ${entry}) without rbd_store_pool: add rbd_store_pool = POOL (each store its own pool)`, section!.line);
      checkChunk(name, own.rbd_store_chunk_size);
      backends.push({ ...legacyOf('rbd'), id: name, section: name, description: own.store_description, rbd_store_pool: own.rbd_store_pool!, rbd_store_user: own.rbd_store_user, rbd_store_ceph_conf: own.rbd_store_ceph_conf, rbd_store_chunk_size: own.rbd_store_chunk_size });
    }
  }
  // Two stores over the same data would delete each other's images (and sweep them as orphans).
  for (const [i, store] of backends.entries()) {
    const twin = backends.slice(0, i).find((other) => other.type === store.type && (store.type === 'file'
      ? resolve(other.filesystem_store_datadir) === resolve(store.filesystem_store_datadir)
      : other.rbd_store_pool === store.rbd_store_pool && resolve(other.rbd_store_ceph_conf) === resolve(store.rbd_store_ceph_conf)));
    if (twin) {
      const what = store.type === 'file' ? `filesystem_store_datadir ${store.filesystem_store_datadir}` : `rbd_store_pool ${store.rbd_store_pool} of ${store.rbd_store_ceph_conf}`;
      fail(`image stores [${twin.id}] and [${store.id}] both use ${what}: each store needs its own (a delete in one would remove the other's data)`, lineOf(ini, store.id, store.type === 'file' ? 'filesystem_store_datadir' : 'rbd_store_pool'));
    }
  }
  const ids = backends.map((b) => b.id);
  if (values.default_backend === null) {
    fail(`[DEFAULT] enabled_backends names image stores (${ids.join(', ')}) but [glance_store] has no default_backend: set [glance_store] default_backend = ${ids[0]} (the store of new images, as Glance requires)`);
  }
  const defaultBackend = values.default_backend!;
  const chosen = backends.find((b) => b.id === defaultBackend);
  if (!chosen) fail(`[glance_store] default_backend = ${defaultBackend} is not an image store of [DEFAULT] enabled_backends (${ids.join(', ')})${suggest(defaultBackend, ids, false)}: set it to one of them`, at('default_backend'));
  // Images recorded in the single-store form ('file', 'rbd') belong to the named store over the same data.
  const adopted: Record<string, string> = {};
  const legacyFile = backends.find((b) => b.type === 'file' && resolve(b.filesystem_store_datadir) === resolve(legacyDatadir));
  if (legacyFile && legacyFile.id !== 'file') adopted['file'] = legacyFile.id;
  const legacyRbd = backends.find((b) => b.type === 'rbd' && b.rbd_store_pool === values.rbd_store_pool && resolve(b.rbd_store_ceph_conf) === resolve(values.rbd_store_ceph_conf));
  if (legacyRbd && legacyRbd.id !== 'rbd') adopted['rbd'] = legacyRbd.id;
  return {
    ...values, filesystem_store_datadir: legacyDatadir, default_backend: defaultBackend, named: true, adopted, staging_datadir: staging,
    backends: [chosen!, ...backends.filter((b) => b !== chosen)],
  };
}

export type ImportFilteringConfig = Omit<Values<typeof importFilteringOptions>, 'allowed_ports' | 'disallowed_ports'> & { allowed_ports: number[]; disallowed_ports: number[] };

/** [import_filtering_opts]: lists may be written Glance's way (`['http', 'https']`); hosts compared in lower case; ports are numbers. */
function readImportFiltering(ini: IniFile): ImportFilteringConfig {
  const values = readSection(ini, ini.sections.get('import_filtering_opts'), importFilteringOptions);
  const clean = (list: string[]) => list.map((v) => v.replace(/^\[/, '').replace(/\]$/, '').trim().replace(/^['"]|['"]$/g, '').toLowerCase()).filter((v) => v.length > 0);
  const ports = (key: 'allowed_ports' | 'disallowed_ports') => clean(values[key]).map((text) => {
    const port = Number(text);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new ConfigError(ini.path, lineOf(ini, 'import_filtering_opts', key), `[import_filtering_opts] ${key}: '${text}' is not a port number (1-65535)`);
    }
    return port;
  });
  return {
    allowed_schemes: clean(values.allowed_schemes),
    disallowed_schemes: clean(values.disallowed_schemes),
    allowed_hosts: clean(values.allowed_hosts).map((h) => h.replace(/^\[|\]$/g, '')),
    disallowed_hosts: clean(values.disallowed_hosts).map((h) => h.replace(/^\[|\]$/g, '')),
    allowed_ports: ports('allowed_ports'),
    disallowed_ports: ports('disallowed_ports'),
  };
}

/** [image_import_opts] and [image_conversion]; the list may be written Glance's way, `['image_conversion']`. */
function readImageImport(ini: IniFile): Pick<PumiceConfig, 'image_import_opts' | 'image_conversion'> {
  const importOpts = readSection(ini, ini.sections.get('image_import_opts'), imageImportOptions);
  const plugins = importOpts.image_import_plugins.map((p) => p.replace(/^\[/, '').replace(/\]$/, '').trim().replace(/^['"]|['"]$/g, '')).filter((p) => p.length > 0);
  const unknown = plugins.find((p) => p !== 'image_conversion');
  if (unknown !== undefined) {
    throw new ConfigError(ini.path, lineOf(ini, 'image_import_opts', 'image_import_plugins'), `[image_import_opts] image_import_plugins: plugin '${unknown}' is not available; this version has 'image_conversion' (or leave the list empty)`);
  }
  const conversion = readSection(ini, ini.sections.get('image_conversion'), imageConversionOptions);
  if (conversion.output_format !== 'raw') {
    throw new ConfigError(ini.path, lineOf(ini, 'image_conversion', 'output_format'), `[image_conversion] output_format = ${conversion.output_format} is not available: only raw (what booting from RBD needs)`);
  }
  return { image_import_opts: { image_import_plugins: plugins }, image_conversion: conversion };
}

function readCompute(ini: IniFile, dataDir: string): Pick<PumiceConfig, 'compute' | 'libvirt' | 'cinder'> {
  const compute = readSection(ini, ini.sections.get('compute'), computeOptions);
  const libvirt = readSection(ini, ini.sections.get('libvirt'), libvirtOptions);
  const oneOf = (key: keyof typeof libvirtOptions, value: string | null, allowed: string[]) => {
    if (value !== null && !allowed.includes(value)) {
      throw new ConfigError(ini.path, lineOf(ini, 'libvirt', key), `[libvirt] ${key} = ${value} is not valid: expected one of ${allowed.join(', ')}${suggest(value, allowed)}`);
    }
  };
  oneOf('virt_type', libvirt.virt_type, ['auto', 'kvm', 'qemu']);
  oneOf('images_type', libvirt.images_type, ['default', 'qcow2', 'raw', 'flat', 'rbd']);
  oneOf('hw_disk_discard', libvirt.hw_disk_discard, ['unmap', 'ignore']);
  for (const entry of libvirt.disk_cachemodes) {
    if (!/^(file|block|network)=(none|writeback|writethrough|directsync|unsafe)$/.test(entry)) {
      throw new ConfigError(ini.path, lineOf(ini, 'libvirt', 'disk_cachemodes'), `[libvirt] disk_cachemodes entry '${entry}' is not valid: expected TYPE=MODE with TYPE file, block or network and MODE none, writeback, writethrough, directsync or unsafe (e.g. network=writeback)`);
    }
  }
  if (libvirt.images_type === 'rbd' && !libvirt.rbd_user) {
    throw new ConfigError(ini.path, lineOf(ini, 'libvirt', 'images_type'), '[libvirt] images_type = rbd needs rbd_user (the Ceph user of instance disks, e.g. cinder) and images_rbd_ceph_conf');
  }
  return {
    compute: { ...compute, instances_path: compute.instances_path ?? join(dataDir, 'instances') },
    libvirt,
    cinder: readSection(ini, ini.sections.get('cinder'), novaCinderOptions),
  };
}

function lineOf(ini: IniFile, section: string, key: string): number | undefined {
  return ini.sections.get(section)?.entries.get(key)?.line;
}

function readSection<T extends Record<string, OptionSpec>>(ini: IniFile, section: IniSection | undefined, specs: T): Values<T> {
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(specs)) out[key] = spec.default;
  if (!section) return out as Values<T>;
  const problems = (ini.errors ??= []);
  for (const [key, entry] of section.entries) {
    const spec = specs[key];
    if (!spec) {
      problems.push(new ConfigError(ini.path, entry.line, `unknown option '${key}' in [${section.name}]${suggest(key, Object.keys(specs))}`));
      continue;
    }
    try {
      out[key] = convert(ini.path, entry.line, section.name, key, entry.value, spec);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      problems.push(error);
    }
  }
  return out as Values<T>;
}

function convert(path: string, line: number, section: string, key: string, raw: string, spec: OptionSpec): unknown {
  const value = raw.trim();
  const fail = (expected: string): never => {
    throw new ConfigError(path, line, `[${section}] ${key} = '${value}' is not valid: expected ${expected} (${spec.help})`);
  };
  switch (spec.type) {
    case 'string':
      return value;
    case 'list':
      return value.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
    case 'bool': {
      const lower = value.toLowerCase();
      if (['true', 'yes', '1', 'on'].includes(lower)) return true;
      if (['false', 'no', '0', 'off'].includes(lower)) return false;
      return fail('true or false');
    }
    case 'int': {
      if (!/^-?\d+$/.test(value)) return fail('an integer');
      const n = Number(value);
      if (spec.min !== undefined && n < spec.min) fail(`an integer >= ${spec.min}`);
      return n;
    }
    case 'float':
    case 'float_or_auto': {
      if (spec.type === 'float_or_auto' && value.toLowerCase() === 'auto') return 'auto';
      const n = Number(value);
      if (value === '' || !Number.isFinite(n)) return fail(spec.type === 'float' ? 'a number' : "a number or 'auto'");
      if (spec.type === 'float_or_auto' && n < 1) fail("a number >= 1 or 'auto'");
      return n;
    }
  }
}

function suggest(name: string, candidates: string[], listAll = true): string {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = editDistance(name.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = candidate;
    }
  }
  if (best && bestDistance <= Math.max(2, Math.floor(best.length / 4))) return `; did you mean '${best}'?`;
  return listAll ? `; known options: ${candidates.join(', ')}` : '';
}

/** Levenshtein distance between `a` and `b` (the "did you mean" of options, commands and values). */
export function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = current;
    }
  }
  return row[b.length]!;
}
