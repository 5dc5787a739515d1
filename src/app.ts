/**
 * Builds and starts a whole Pumice process: database, identity, the volume
 * role with its backends and task runners, the NBD data path and the HTTP
 * listener. `serve` and the tests start Pumice through `startPumice`.
 */
import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import type { AddressInfo } from 'node:net';
import { loadConfig, recordHostName, type PumiceConfig } from './config/config.ts';
import { pumiceVersion } from './config/version.ts';
import { Db, databaseLocation, isPostgresUrl, openServiceDatabase } from './db/db.ts';
import { backupRoutes } from './backup/api.ts';
import { BackupService } from './backup/backups.ts';
import { BackupManager } from './backup/manager.ts';
import { createHttpServer } from './http/server.ts';
import { isDashboardPath, serveDashboard, wantsDashboard } from './dashboard/site.ts';
import { startTimeseriesSampler, timeseriesApp, timeseriesIntervalMs } from './dashboard/timeseries.ts';
import { identityApp } from './identity/api/app.ts';
import { bootstrapIdentity, writeAdminOpenrc } from './identity/bootstrap.ts';
import { defaultDomainId, IdentityService, renderEndpointUrl } from './identity/identity.ts';
import { imageApp } from './image/api.ts';
import { imagePolicy } from './image/policy.ts';
import { MetadefService, shippedMetadefsDirectory } from './image/metadefs.ts';
import { parseSeedDocument } from './image/metadefs-api.ts';
import { flushLog, moduleLogger, openEventLog } from './events.ts';
import { applyLogSettings, startObservability } from './observability.ts';
import { taskApp } from './tasks/api.ts';
import { responseValidationEnabled } from './http/declare.ts';
import { loadPolicyOverrides } from './http/policy.ts';
import { ImageService, type ImageStore } from './image/images.ts';
import { FileStore } from './image/stores/file.ts';
import { RbdStore } from './image/stores/rbd.ts';
import { RbdBackend } from './volume/drivers/rbd.ts';
import { importFilterOf } from './image/web-download.ts';
import { NbdExportTable } from './nbd/exports.ts';
import { NbdServer } from './nbd/server.ts';
import { ensurePrivateDirectory, makePrivate, unsafeDirectoryMode, usePrivateUmask } from './file-modes.ts';
import { TaskQueue } from './tasks/queue.ts';
import { startRetention } from './tasks/retention.ts';
import { volumeApp } from './volume/api.ts';
import type { BlockExporter } from './volume/drivers/local.ts';
import { ConversionArea, ImageServiceClient, type ImageEndpoint } from './volume/images.ts';
import { VolumeManager } from './volume/manager.ts';
import { Quotas } from './volume/quotas.ts';
import { VolumeService } from './volume/volumes.ts';
import { computeApiApp, computeParts, inProcessLookups, startComputeRole, startEvacuationMonitor } from './compute/role.ts';
import { allRoles, type Role } from './roles.ts';

export interface StartOptions {
  dataDir: string;
  host: string;
  port: number;
  configPath: string | null;
  log?: (message: string) => void;
  adminPassword?: string;
  /** An existing admin and a given password that differs: 'refuse' (serve, the default), 'reset' (init), 'keep'. */
  onExistingAdmin?: 'keep' | 'reset' | 'refuse';
  /** `[DEFAULT] host` from the command line (`--host`). */
  hostName?: string;
  /** Roles to run (src/roles.ts); default all. `compute` alone is startComputeHost. */
  roles?: readonly Role[];
}

export { allRoles, type Role } from './roles.ts';

export interface RunningPumice {
  /** The API listener's base URL; empty in a process without the api role. */
  url: string;
  config: PumiceConfig;
  openrcPath: string;
  generatedAdminPassword: string | null;
  db: Db;
  queue: TaskQueue;
  stop(): Promise<void>;
}

const tokenPurgeIntervalMs = 15 * 60_000;

export async function startPumice(options: StartOptions): Promise<RunningPumice> {
  const log = options.log ?? moduleLogger('pumice');
  // Every file and directory this process creates is private to its user (0600 / 0700).
  usePrivateUmask();
  const dataDir = resolve(options.dataDir);
  const dataDirWarning = ensurePrivateDirectory(dataDir, 'the data directory');
  if (dataDirWarning) log(`WARNING: ${dataDirWarning}`);
  const closeEvents = openEventLog(dataDir);
  const config = loadConfig(options.configPath, dataDir);
  const closeLog = applyLogSettings(config);
  chooseHostName(config, options.hostName, log);
  const roles = new Set<Role>(options.roles ?? allRoles);
  const runCompute = roles.has('compute');
  const dbLocation = databaseLocation(config.database.connection, dataDir);
  for (const backend of config.backends) {
    if (backend.volume_driver !== 'local' || !backend.local_volume_dir) continue;
    const warning = unsafeDirectoryMode(backend.local_volume_dir, `[${backend.section}] local_volume_dir`);
    if (warning) log(`WARNING: ${warning}`);
  }
  const nbdHost = config.DEFAULT.nbd_listen_host;
  if (!isLoopbackHost(nbdHost) && !config.DEFAULT.nbd_tls) {
    throw new Error(
      `[DEFAULT] nbd_listen_host = ${nbdHost} listens beyond loopback without TLS: anyone on the network could try export names. ` +
        'Set [DEFAULT] nbd_tls = true (each connection then gets its own TLS-PSK key), or nbd_listen_host = 127.0.0.1',
    );
  }
  const dbPath = join(dataDir, 'pumice.db');
  // A database made by an older Pumice (or before the umask) may be readable by others.
  for (const suffix of ['', '-wal', '-shm']) makePrivate(dbPath + suffix);
  const db = await openServiceDatabase(dbLocation, { maxRetries: config.database.max_retries, retryIntervalS: config.database.retry_interval, log });
  db.startBackgroundCheckpoints();
  db.enableGroupCommit((error) => {
    // The turn's replies would say its writes were made: exit before they leave (a restart recovers the tasks).
    log(`ERROR: the database could not commit this moment's writes (${error.message}): a full or failing disk under ${dataDir}? Stopping so that no client is told a change was made that was not; free space or fix the disk and start again`);
    flushLog();
    process.exit(70);
  });
  const identity = new IdentityService(db, config.token.expiration, {
    lockoutFailureAttempts: config.security_compliance.lockout_failure_attempts,
    lockoutDurationSeconds: config.security_compliance.lockout_duration,
    passwordRegex: config.security_compliance.password_regex,
    passwordRegexDescription: config.security_compliance.password_regex_description,
    credentialKeyDirectory: dataDir,
    log,
  });
  // A generated admin password reaches admin-openrc before the admin user is written (the listener's
  // address is not known yet; the file is rewritten with it below): a start that fails later loses nothing.
  const provisionalAuthUrl = `${config.DEFAULT.public_endpoint ?? `http://${options.host.includes(':') ? `[${options.host}]` : options.host}:${options.port}`}/identity/v3`;
  const boot = await bootstrapIdentity(db, identity, options.adminPassword ?? process.env['PUMICE_ADMIN_PASSWORD'], (password) => writeAdminOpenrc(dataDir, provisionalAuthUrl, password), options.onExistingAdmin ?? 'refuse');

  // Exports of attached volumes survive restarts (grants in the database), and so does the port.
  const nbdTls = config.DEFAULT.nbd_tls;
  let nbd: NbdServer | null = null;
  const exportTable = new NbdExportTable(db, { tls: nbdTls, disconnect: (grantId) => nbd?.disconnectGrant(grantId), log });
  exportTable.sweep();
  const makeNbdServer = (port: number) =>
    new NbdServer({
      host: nbdHost,
      port,
      resolveExport: (name) => exportTable.resolve(name),
      tls: nbdTls ? { pskKey: (identity) => exportTable.pskKey(identity) } : undefined,
      connectionsMax: config.DEFAULT.nbd_connections_max,
      connectionsPerSourceMax: config.DEFAULT.nbd_connections_per_source_max,
      log,
    });
  const nbdStarted = await startNbdOnStablePort(db, config.DEFAULT.nbd_listen_port, makeNbdServer, log);
  nbd = nbdStarted.server;
  const nbdServer = nbdStarted.server;
  const nbdAddress = { ...nbdStarted.address, tls: nbdTls };
  const exporter: BlockExporter = {
    grant: (request) => exportTable.grant(request),
    revoke: (volumeId, connectionKey) => {
      exportTable.revoke(volumeId, connectionKey);
    },
    address: () => nbdAddress,
  };

  // A lease no longer than service_down_time: a dead volume host's tasks move to another member of its
  // cluster about when the host is reported down (lease, plus up to one poll), not later.
  const leaseMs = Math.min(30_000, config.DEFAULT.service_down_time * 1000);
  const queue = new TaskQueue({ db, log, concurrencyPerQueue: config.DEFAULT.volume_task_concurrency, attemptsMax: 3, pollIntervalMs: 2000, leaseMs });
  const manager = new VolumeManager(db, config, queue, exporter, log);
  // The volume role reaches the image service over HTTP, as Cinder reaches Glance: at
  // glance_api_servers, else at the catalog's image endpoint rendered for this listener.
  let listening: (baseUrl: string) => void = () => undefined;
  let ownBaseUrl: string | null = null;
  const ready = new Promise<void>((resolveReady) => {
    listening = (baseUrl) => {
      ownBaseUrl = baseUrl;
      resolveReady();
    };
  });
  const conversion = new ConversionArea(config.DEFAULT.image_conversion_dir ?? join(dataDir, 'conversion'), log);
  await conversion.start();
  manager.images = {
    client: new ImageServiceClient(() => imageEndpoint(config, identity, ownBaseUrl), config.DEFAULT.glance_request_timeout * 1000),
    serviceToken: serviceTokenSource(identity),
    conversion,
    ready,
  };
  const quotas = new Quotas(db, config.DEFAULT);
  const volumes = new VolumeService(db, config, queue, manager, quotas);
  volumes.ensureDefaultType();
  if (roles.has('volume')) await manager.start(roles.has('scheduler'));
  else {
    manager.startWithoutVolumes(roles.has('scheduler'));
    // Block Storage's attachment calls run the driver's initialize_connection in the API's own process (Cinder
    // sends it to the volume service): an API host without the volume role connects its RBD backends for them
    // (in the background, as a volume host would) and takes none of their tasks. A local backend's start cleans
    // its directory, which belongs to its volume hosts: it is left alone.
    if (roles.has('api')) {
      for (const state of manager.backends.values()) {
        if (state.driver instanceof RbdBackend) void state.driver.start().catch((error: Error) => log(`WARNING: backend [${state.config.section}] is not connected for attachments on this API host: ${error.message}`));
      }
    }
  }
  const glanceStore = config.glance_store;
  const rbdStores: RbdStore[] = [];
  // One store per enabled store, by its id (the NAME of enabled_backends NAME:TYPE, or the type); the default first.
  const imageStores = glanceStore.backends.map((store): ImageStore => {
    if (store.type === 'file') return new FileStore(store.filesystem_store_datadir, log, { id: store.id, description: store.description, section: store.section });
    const rbd = new RbdStore({
      id: store.id,
      section: store.section,
      description: store.description,
      pool: store.rbd_store_pool,
      user: store.rbd_store_user,
      confPath: store.rbd_store_ceph_conf,
      chunkSizeMiB: store.rbd_store_chunk_size,
      // Each store sweeps its own probe directory at start.
      probeDirectory: join(dataDir, 'image-probes', store.id),
      log,
    });
    rbdStores.push(rbd);
    return rbd;
  });
  const defaultImageStore = imageStores[0]!;
  // One policy file for every service ([oslo_policy] policy_file); each service's table takes its own rule names.
  const policyOverrides = loadPolicyOverrides(config.oslo_policy.policy_file);
  const validateResponses = responseValidationEnabled(config.api.validate_responses);
  const imageTasks = new TaskQueue({ db, log, concurrencyPerQueue: 2, attemptsMax: 3, pollIntervalMs: 2000 });
  const images = new ImageService(db, defaultImageStore, log, {
    policy: imagePolicy(policyOverrides),
    otherStores: imageStores.filter((s) => s !== defaultImageStore),
    namedStores: glanceStore.named,
    adoptedStoreIds: glanceStore.adopted,
    showDirectUrl: config.DEFAULT.show_image_direct_url,
    showMultipleLocations: config.DEFAULT.show_multiple_locations,
    workDirectory: glanceStore.staging_datadir ?? join(dataDir, 'image-staging'),
    convertToRaw: config.image_import_opts.image_import_plugins.includes('image_conversion'),
    // Imports have their own runner, so a long conversion never holds a volume queue's slot.
    tasks: imageTasks,
    importFilter: importFilterOf(config.import_filtering_opts),
  });
  // A volume role beside the image API reads the images of its file store in place, not over loopback HTTP.
  if (roles.has('api')) manager.images.localImageFile = (imageId) => images.localDataFile(imageId);
  // ...and uploads a volume as qcow2 into the rbd store raw, once, as the store would convert it back to raw anyway.
  if (roles.has('api')) manager.images.recordRawVolumeUpload = (imageId, storeId) => images.recordRawVolumeUpload(imageId, storeId);
  // Glance's metadata definitions catalog, seeded from etc/metadefs (namespaces that exist are kept as they are).
  const metadefs = new MetadefService(db, images.policy, log);
  metadefs.seed(shippedMetadefsDirectory, parseSeedDocument);
  // Connects in the background (the fsid is needed for direct_url); a Ceph cluster that is down
  // makes image data requests answer 503 with the cause instead of delaying or failing the start.
  for (const rbd of rbdStores) void rbd.start();
  if (roles.has('image')) {
    await images.recover();
    images.startTasks();
  }
  const compute = computeParts(db, config, queue, inProcessLookups(images, volumes));
  compute.flavors.ensureDefaults();
  // The backup role has its own runner so long backups never hold the volume queues' slots.
  const backupTasks = new TaskQueue({ db, log, concurrencyPerQueue: 2, attemptsMax: 3, pollIntervalMs: 2000, leaseMs });
  const backupManager = new BackupManager(db, config, backupTasks, manager, log);
  if (roles.has('backup')) await backupManager.start();
  else backupManager.startWithoutBackups();
  const backups = new BackupService(db, backupTasks, volumes, manager, backupManager);

  const sampleIntervalMs = timeseriesIntervalMs();
  // The dashboard's plots are sampled by the processes that serve them (every api host writes its own rows).
  const stopSampler = roles.has('api') ? startTimeseriesSampler(db, config.DEFAULT.host, { pools: () => manager.poolStates() }, sampleIntervalMs, log) : () => undefined;
  const observability = await startObservability({ config, db, tokens: identity, pools: () => manager.poolStates(), nbdConnections: () => nbdServer.connectionCount });
  if (observability.metricsUrl) log(`metrics without a token at ${observability.metricsUrl} ([metrics] listen)`);
  const server = createHttpServer({
    apps: [
      ...observability.apps,
      identityApp({ identity, policyOverrides, validateResponses, log }),
      volumeApp(volumes, manager, db, config.DEFAULT.osapi_max_limit, config.DEFAULT.service_down_time, [backupRoutes(backups)]),
      imageApp(images, { validateResponses, log, metadefs }),
      computeApiApp(compute, config, identity, log),
      taskApp(db, { policyOverrides, validateResponses, log }),
      timeseriesApp(db, { policyOverrides, validateResponses, intervalMs: sampleIntervalMs, log }),
    ],
    tokens: identity,
    requestBodyBytesMax: config.oslo_middleware.max_request_body_size,
    publicEndpoint: config.DEFAULT.public_endpoint,
    log,
    debug: config.DEFAULT.debug,
    site: { handles: (req, pathname) => isDashboardPath(pathname) || wantsDashboard(req, pathname), serve: serveDashboard },
    rootDocument: (baseUrl) => ({
      name: 'Pumice',
      version: pumiceVersion(),
      services: {
        identity: `${baseUrl}/identity/v3`,
        'block-storage': `${baseUrl}/volume/v3`,
        image: `${baseUrl}/image/v2`,
        compute: `${baseUrl}/compute/v2.1`,
      },
    }),
  });
  // Without the api role the process serves no HTTP; its roles reach the image API at public_endpoint (or glance_api_servers).
  let url = '';
  if (roles.has('api')) {
    await new Promise<void>((resolveListen, reject) => {
      server.once('error', reject);
      server.listen(options.port, options.host, () => resolveListen());
    });
    const address = server.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    url = `http://${host}:${address.port}`;
    compute.hosts.recordApiListener(config.DEFAULT.host, config.DEFAULT.public_endpoint ?? url);
  }
  listening(config.DEFAULT.public_endpoint ?? url);
  const schedulerHeartbeat = () => {
    if (!roles.has('scheduler')) return;
    compute.hosts.heartbeat('nova-scheduler', config.DEFAULT.host, 'internal');
    compute.hosts.heartbeat('nova-conductor', config.DEFAULT.host, 'internal');
  };
  schedulerHeartbeat();
  const apiHeartbeat = setInterval(schedulerHeartbeat, config.DEFAULT.report_interval * 1000);
  apiHeartbeat.unref();
  const evacuationMonitor = roles.has('scheduler') ? startEvacuationMonitor(compute, config, log) : { stop: () => undefined };
  const computeRole = runCompute ? await startComputeRole({ db, config, identity, parts: compute, serviceToken: serviceTokenSource(identity), log }) : null;
  const openrcPath = writeAdminOpenrc(dataDir, `${config.DEFAULT.public_endpoint ?? (url || provisionalAuthUrl.replace(/\/identity\/v3$/, ''))}/identity/v3`, boot.adminPassword);
  const purgeTimer = setInterval(() => identity.purgeExpiredTokens(), tokenPurgeIntervalMs);
  purgeTimer.unref();
  const stopRetention = startRetention({ db, failedRetentionDays: config.DEFAULT.task_failed_retention_days, intervalMs: tokenPurgeIntervalMs, log });

  let stopped = false;
  return {
    url,
    config,
    openrcPath,
    generatedAdminPassword: boot.generatedAdminPassword,
    db,
    queue,
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(apiHeartbeat);
      evacuationMonitor.stop();
      await computeRole?.stop();
      clearInterval(purgeTimer);
      stopRetention();
      stopSampler();
      if (server.listening) {
        await new Promise<void>((r) => {
          server.close(() => r());
          server.closeIdleConnections();
        });
      }
      await imageTasks.stop();
      await backupManager.stop();
      await manager.stop();
      await nbdServer.stop();
      for (const rbd of rbdStores) await rbd.stop();
      await observability.stop();
      db.close();
      closeEvents();
      closeLog();
    },
  };
}

function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

/**
 * Starts the NBD server on `nbd_listen_port`, or with 0 on the port remembered from the first
 * start (a free one then), so the connection info of attached volumes stays valid across
 * restarts. If the remembered port is taken, a new one is chosen and the change is logged
 * loudly: consumers must re-initialize their connections.
 */
async function startNbdOnStablePort(
  db: Db,
  configuredPort: number,
  make: (port: number) => NbdServer,
  log: (message: string) => void,
): Promise<{ server: NbdServer; address: { host: string; port: number } }> {
  if (configuredPort !== 0) {
    const server = make(configuredPort);
    return { server, address: await server.start() };
  }
  const remembered = db.get<{ port: number }>('SELECT port FROM nbd_listener WHERE id = 1')?.port;
  if (remembered !== undefined) {
    const server = make(remembered);
    try {
      return { server, address: await server.start() };
    } catch (error) {
      log(`WARNING: nbd: the port used before (${remembered}) is not available (${(error as Error).message}); choosing another one. Attached local volumes must re-initialize their connections; set [DEFAULT] nbd_listen_port to pin a port.`);
    }
  }
  const server = make(0);
  const address = await server.start();
  db.run('INSERT INTO nbd_listener (id, port) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET port = excluded.port', address.port);
  return { server, address };
}

/** Where the image API is for the volume role: `glance_api_servers`, else the catalog entry `glance_catalog_info` names. */
export function imageEndpoint(config: PumiceConfig, identity: IdentityService, baseUrl: string | null): ImageEndpoint {
  const servers = config.DEFAULT.glance_api_servers;
  if (servers.length > 0) {
    const url = /^https?:\/\//.test(servers[0]!) ? servers[0]! : `http://${servers[0]}`;
    return { url, origin: `[DEFAULT] glance_api_servers = ${servers.join(',')}` };
  }
  const info = config.DEFAULT.glance_catalog_info;
  const [type = 'image', name = '', interfaceUrl = 'publicURL'] = info.split(':');
  const iface = interfaceUrl.replace(/URL$/, '');
  const service = identity.services().find((s) => s.type === type && s.enabled && (!name || s.name === name));
  const endpoint = service && identity.endpoints().find((e) => e.service_id === service.id && e.interface === iface && e.enabled);
  if (!endpoint) {
    throw new Error(
      `the catalog has no ${iface} endpoint of a service of type '${type}'${name ? ` named '${name}'` : ''} ([DEFAULT] glance_catalog_info = ${info}): ` +
        `add one (openstack endpoint create ${type} ${iface} URL) or set [DEFAULT] glance_api_servers = http://HOST:PORT/image`,
    );
  }
  const url = renderEndpointUrl(endpoint.url, baseUrl ?? 'http://127.0.0.1', null);
  return { url, origin: `the catalog (${type} ${iface} endpoint ${endpoint.url}, glance_catalog_info = ${info})` };
}

/** A token of the cloud admin for the volume role's own image calls, renewed before it expires. */
function serviceTokenSource(identity: IdentityService): () => string {
  let current: { id: string; renewAfterMs: number } | null = null;
  return () => {
    if (current && Date.now() < current.renewAfterMs) return current.id;
    const admin = identity.findUserByName('admin', defaultDomainId);
    const project = identity.findProjectByName('admin', defaultDomainId);
    if (!admin || !project) throw new Error('the bootstrap admin user or project is missing; the volume role cannot call the image service');
    const token = identity.issueToken(admin, { kind: 'project', projectId: project.id }, ['password']);
    const lifetimeMs = Date.parse(token.expiresAt) - Date.now();
    current = { id: token.tokenId, renewAfterMs: Date.now() + lifetimeMs / 2 };
    return current.id;
  };
}

/** `--host` wins over `[DEFAULT] host` and the name kept in the data directory; the start log says which was used. */
function chooseHostName(config: PumiceConfig, fromFlag: string | undefined, log: (line: string) => void): void {
  if (fromFlag) config.DEFAULT.host = fromFlag;
  else recordHostName(config);
  log(`host name ${config.DEFAULT.host}: ${fromFlag ? 'set by --host' : config.hostReason}`);
}

/**
 * A compute host that joins a running cloud (`pumice serve --roles compute --host NAME --data-dir DIR`):
 * only the compute agent, on the cloud's database, with no listener of its own.
 */
export async function startComputeHost(options: StartOptions): Promise<{ config: PumiceConfig; stop(): Promise<void> }> {
  const log = options.log ?? moduleLogger('pumice');
  const dataDir = resolve(options.dataDir);
  const config = loadConfig(options.configPath, dataDir);
  const closeLog = applyLogSettings(config);
  chooseHostName(config, options.hostName, log);
  const dbLocation = databaseLocation(config.database.connection, dataDir);
  if (!isPostgresUrl(dbLocation) && !existsSync(dbLocation)) throw new Error(`${dbLocation} does not exist: --data-dir must be the data directory of a running cloud (the api role creates it), or [database] connection must name the cloud's PostgreSQL`);
  const db = await openServiceDatabase(dbLocation, { maxRetries: config.database.max_retries, retryIntervalS: config.database.retry_interval, log });
  const closeEvents = openEventLog(dataDir);
  const identity = new IdentityService(db, config.token.expiration, {
    lockoutFailureAttempts: config.security_compliance.lockout_failure_attempts,
    lockoutDurationSeconds: config.security_compliance.lockout_duration,
    passwordRegex: config.security_compliance.password_regex,
    passwordRegexDescription: config.security_compliance.password_regex_description,
    credentialKeyDirectory: dataDir,
    log,
  });
  const noLookups = {
    image: () => {
      throw new Error('the compute role does not answer API requests');
    },
    volume: () => {
      throw new Error('the compute role does not answer API requests');
    },
  };
  const queue = new TaskQueue({ db, log, concurrencyPerQueue: 1, attemptsMax: 3, pollIntervalMs: 2000 });
  const parts = computeParts(db, config, queue, noLookups);
  const role = await startComputeRole({ db, config, identity, parts, serviceToken: serviceTokenSource(identity), log });
  return {
    config,
    async stop() {
      await role.stop();
      db.close();
      closeEvents();
      closeLog();
    },
  };
}
