/**
 * Builds and starts a whole Pumice process: database, identity, the volume
 * role with its backends and task runners, the NBD data path and the HTTP
 * listener. `serve` and the tests start Pumice through `startPumice`.
 */
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { AddressInfo } from 'node:net';
import { loadConfig, type PumiceConfig } from './config/config.ts';
import { Db } from './db/db.ts';
import { backupRoutes } from './backup/api.ts';
import { BackupService } from './backup/backups.ts';
import { BackupManager } from './backup/manager.ts';
import { createHttpServer } from './http/server.ts';
import { identityRouter } from './identity/api.ts';
import { bootstrapIdentity, writeAdminOpenrc } from './identity/bootstrap.ts';
import { IdentityService } from './identity/identity.ts';
import { imageApp } from './image/api.ts';
import { ImageService, type ImageStore } from './image/images.ts';
import { FileStore } from './image/stores/file.ts';
import { RbdStore } from './image/stores/rbd.ts';
import { NbdServer, type NbdExport } from './nbd/server.ts';
import { TaskQueue } from './tasks/queue.ts';
import { volumeApp } from './volume/api.ts';
import type { BlockExporter } from './volume/drivers/local.ts';
import { VolumeManager } from './volume/manager.ts';
import { Quotas } from './volume/quotas.ts';
import { VolumeService } from './volume/volumes.ts';

export interface StartOptions {
  dataDir: string;
  host: string;
  port: number;
  configPath: string | null;
  log?: (message: string) => void;
  adminPassword?: string;
}

export interface RunningPumice {
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
  const log = options.log ?? ((message: string) => console.error(`${new Date().toISOString()} ${message}`));
  const dataDir = resolve(options.dataDir);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const config = loadConfig(options.configPath, dataDir);
  if (config.database.connection && !config.database.connection.startsWith('sqlite')) {
    throw new Error(`[database] connection = ${config.database.connection}: only SQLite is supported in this version; remove the option to use DATA_DIR/pumice.db`);
  }
  const db = new Db(join(dataDir, 'pumice.db'));
  const identity = new IdentityService(db, config.token.expiration);
  const boot = await bootstrapIdentity(db, identity, options.adminPassword ?? process.env['PUMICE_ADMIN_PASSWORD']);

  const exports = new Map<string, NbdExport>();
  const nbd = new NbdServer({
    host: config.DEFAULT.nbd_listen_host,
    port: config.DEFAULT.nbd_listen_port,
    resolveExport: (name) => exports.get(name),
    log,
  });
  const nbdAddress = await nbd.start();
  const exporter: BlockExporter = {
    publish: (name, path, sizeBytes, readOnly) => exports.set(name, { path, sizeBytes, readOnly }),
    unpublish: (name) => {
      if (exports.delete(name)) nbd.disconnectExport(name);
    },
    address: () => nbdAddress,
  };

  const queue = new TaskQueue({ db, log, concurrencyPerQueue: config.DEFAULT.volume_task_concurrency, attemptsMax: 3, pollIntervalMs: 2000 });
  const manager = new VolumeManager(db, config, queue, exporter, log);
  const quotas = new Quotas(db, config.DEFAULT);
  const volumes = new VolumeService(db, config, queue, manager, quotas);
  volumes.ensureDefaultType();
  await manager.start();
  const glanceStore = config.glance_store;
  let rbdStore: RbdStore | null = null;
  const imageStores = glanceStore.stores.map((id): ImageStore => {
    if (id !== 'rbd') return new FileStore(glanceStore.filesystem_store_datadir);
    rbdStore = new RbdStore({
      pool: glanceStore.rbd_store_pool,
      user: glanceStore.rbd_store_user,
      confPath: glanceStore.rbd_store_ceph_conf,
      chunkSizeMiB: glanceStore.rbd_store_chunk_size,
      probeDirectory: join(dataDir, 'image-probes'),
      log,
    });
    return rbdStore;
  });
  const defaultImageStore = imageStores.find((s) => s.id === glanceStore.default_store)!;
  const images = new ImageService(db, defaultImageStore, log, {
    otherStores: imageStores.filter((s) => s !== defaultImageStore),
    showDirectUrl: config.DEFAULT.show_image_direct_url,
    showMultipleLocations: config.DEFAULT.show_multiple_locations,
  });
  // Connects in the background (the fsid is needed for direct_url); a Ceph cluster that is down
  // makes image data requests answer 503 with the cause instead of delaying or failing the start.
  if (rbdStore) void (rbdStore as RbdStore).start();
  await images.recover();
  // The backup role has its own runner so long backups never hold the volume queues' slots.
  const backupTasks = new TaskQueue({ db, log, concurrencyPerQueue: 2, attemptsMax: 3, pollIntervalMs: 2000 });
  const backupManager = new BackupManager(db, config, backupTasks, manager, log);
  await backupManager.start();
  const backups = new BackupService(db, backupTasks, volumes, manager, backupManager);

  const server = createHttpServer({
    apps: [
      { prefix: '/identity', router: identityRouter(identity, db), faultStyle: 'keystone' },
      volumeApp(volumes, manager, db, config.DEFAULT.osapi_max_limit, config.DEFAULT.service_down_time, [backupRoutes(backups)]),
      imageApp(images),
    ],
    tokens: identity,
    requestBodyBytesMax: config.oslo_middleware.max_request_body_size,
    publicEndpoint: config.DEFAULT.public_endpoint,
    log,
    debug: config.DEFAULT.debug,
    rootDocument: (baseUrl) => ({
      name: 'Pumice',
      services: {
        identity: `${baseUrl}/identity/v3`,
        'block-storage': `${baseUrl}/volume/v3`,
        image: `${baseUrl}/image/v2`,
      },
    }),
  });
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolveListen());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  const openrcPath = writeAdminOpenrc(dataDir, `${config.DEFAULT.public_endpoint ?? url}/identity/v3`, boot.adminPassword);
  const purgeTimer = setInterval(() => identity.purgeExpiredTokens(), tokenPurgeIntervalMs);
  purgeTimer.unref();

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
      clearInterval(purgeTimer);
      await new Promise<void>((r) => {
        server.close(() => r());
        server.closeIdleConnections();
      });
      await backupManager.stop();
      await manager.stop();
      await nbd.stop();
      if (rbdStore) await (rbdStore as RbdStore).stop();
      db.close();
    },
  };
}
