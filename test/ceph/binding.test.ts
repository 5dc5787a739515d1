/**
 * The librbd/librados binding (native/ + src/ceph/rbd.ts) against a real Ceph
 * cluster, as the scenario's `client.cinder` (rwx volumes/vms, rx images,
 * mon 'allow r').
 *
 * Cluster: PUMICE_CEPH_LAB (an existing lab directory) when set; otherwise a
 * throwaway lab from src/ceph/lab.ts in a temp directory, purged afterwards.
 * Skipped when the binding is not built (npm run build:native) or Ceph's
 * daemons are not installed.
 *
 *   npm run build:native && node --import tsx --test test/ceph/binding.test.ts
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

import {
  bindingAvailable,
  type Extent,
  type IoCtx,
  RadosCluster,
  RBD_FEATURE_DEEP_FLATTEN,
  RBD_FEATURE_EXCLUSIVE_LOCK,
  RBD_FEATURE_FAST_DIFF,
  RBD_FEATURE_LAYERING,
  RBD_FEATURE_OBJECT_MAP,
  type RbdImage,
  RbdError,
  type TrashEntry,
} from '../../src/ceph/rbd.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const FEATURES = RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_OBJECT_MAP | RBD_FEATURE_FAST_DIFF | RBD_FEATURE_DEEP_FLATTEN;
const IMAGE_SIZE = 64 * MiB;
const OBJ = 4 * MiB;

interface Lab {
  confPath: string;
  adminKeyringPath: string;
  keyringPath(user: string): string;
}
interface LabModule {
  labUp(dir: string, options?: { log?: (m: string) => void }): Promise<Lab>;
  labPurge(dir: string): Promise<void>;
  readLab(dir: string): Lab;
}

const labModulePath = fileURLToPath(new URL('../../src/ceph/lab.ts', import.meta.url));
const envLab = process.env.PUMICE_CEPH_LAB;

function skipReason(): string | false {
  if (!bindingAvailable()) return 'the Ceph binding is not built (npm run build:native)';
  if (envLab) return false;
  if (!existsSync(labModulePath)) return 'no PUMICE_CEPH_LAB and no src/ceph/lab.ts to create a lab';
  if (!existsSync('/usr/bin/ceph-mon') || !existsSync('/usr/bin/ceph-osd')) return 'Ceph daemons are not installed (ceph-mon, ceph-osd)';
  return false;
}

async function loadLabModule(): Promise<LabModule> {
  // A computed specifier: this file type-checks whether or not lab.ts exists.
  const spec = pathToFileURL(labModulePath).href;
  return (await import(spec)) as LabModule;
}

/** Rejects with an RbdError matching code(s), operation and message. */
async function assertRbdError(p: Promise<unknown>, codes: string[], operation: string, message?: RegExp): Promise<RbdError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof RbdError, `expected an RbdError, got ${String(caught)}`);
  assert.ok(codes.includes(caught.code), `code ${caught.code} not in ${codes.join('/')}: ${caught.message}`);
  assert.equal(caught.operation, operation, caught.message);
  assert.ok(caught.errno > 0);
  if (message) assert.match(caught.message, message);
  return caught;
}

async function readAll(img: RbdImage, size: number): Promise<Buffer> {
  const parts = await Promise.all(Array.from({ length: Math.ceil(size / OBJ) }, (_, i) => img.read(i * OBJ, Math.min(OBJ, size - i * OBJ))));
  return Buffer.concat(parts);
}

function sameBytes(actual: Buffer, expected: Buffer, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  if (!actual.equals(expected)) {
    let i = 0;
    while (i < actual.length && actual[i] === expected[i]) i++;
    assert.fail(`${what}: first difference at byte ${i} (${actual[i]} != ${expected[i]})`);
  }
}

/** Writes model[off, off+len) to the image, every write issued before any completes. */
async function writeConcurrently(img: RbdImage, model: Buffer, ranges: [number, number][]): Promise<number> {
  const ps = ranges.map(([off, len]) => img.write(off, model.subarray(off, off + len)));
  const inFlight = img.inFlight;
  await Promise.all(ps);
  return inFlight;
}

/** rbd_remove, retried while a dead client's watch lingers (EBUSY, `osd client watch timeout`). */
async function removeImage(io: IoCtx, name: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await io.removeImage(name);
    } catch (e) {
      if (!(e instanceof RbdError && e.code === 'EBUSY') || attempt >= 30) throw e;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

/** Milliseconds since t0 (process.hrtime.bigint()). */
function msSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/** 'median m (min a, max b) ms' of a series of milliseconds. */
function summary(ms: number[]): string {
  const s = [...ms].sort((a, b) => a - b);
  const mid = s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return `median ${mid.toFixed(1)} (min ${s[0]!.toFixed(1)}, max ${s.at(-1)!.toFixed(1)}) ms`;
}

function sortExtents(e: Extent[]): Extent[] {
  return [...e].sort((a, b) => a.offset - b.offset);
}

/** Sequential I/O of `total` bytes in `ioSize` pieces with `depth` in flight; returns MB/s. */
async function sequential(img: RbdImage, kind: 'write' | 'read', total: number, ioSize: number, depth: number): Promise<number> {
  const buffers = Array.from({ length: depth }, () => randomBytes(ioSize));
  let next = 0;
  const t0 = process.hrtime.bigint();
  async function lane(i: number): Promise<void> {
    while (next < total) {
      const off = next;
      next += ioSize;
      if (kind === 'write') await img.write(off, buffers[i]!);
      else await img.readInto(off, buffers[i]!);
    }
  }
  await Promise.all(Array.from({ length: depth }, (_, i) => lane(i)));
  if (kind === 'write') await img.flush();
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return total / 1e6 / s;
}

const skip = skipReason();

describe('Ceph RBD binding as client.cinder', { skip }, () => {
  let labDir = '';
  let ownLab = false;
  let lab: Lab;
  let labModule: LabModule | undefined;
  let cinder: RadosCluster;
  let cinder2: RadosCluster | undefined;
  let admin: RadosCluster | undefined;
  let volumes: IoCtx;
  let vms: IoCtx;
  const tag = `bt${process.pid}${Date.now().toString(36)}`;
  const parentName = `${tag}-parent`;
  const childName = `${tag}-child`;
  const created: { pool: string; name: string }[] = [];
  const trashed = new Set<string>(); // ids of images this run left in volumes' trash
  const model = Buffer.alloc(IMAGE_SIZE); // parent content at snapshot 'base'
  let childModel: Buffer; // the child's content
  let childAtC2: Buffer;
  let parent: RbdImage;
  let child: RbdImage;

  const connectAs = (user: string, keyringPath: string) =>
    RadosCluster.connect({ confPath: lab.confPath, user, keyringPath, connectTimeoutSeconds: 20 });

  before(async () => {
    if (envLab) {
      labDir = path.resolve(envLab);
      labModule = existsSync(labModulePath) ? await loadLabModule() : undefined;
      lab = labModule
        ? labModule.readLab(labDir)
        : { confPath: path.join(labDir, 'ceph.conf'), adminKeyringPath: path.join(labDir, 'ceph.client.admin.keyring'), keyringPath: (u) => path.join(labDir, `ceph.client.${u}.keyring`) };
    } else {
      labModule = await loadLabModule();
      labDir = mkdtempSync(path.join(tmpdir(), 'pumice-rbd-binding-'));
      ownLab = true;
      const t0 = Date.now();
      lab = await labModule.labUp(labDir);
      console.log(`# lab up in ${labDir} after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
    cinder = await connectAs('cinder', lab.keyringPath('cinder'));
    volumes = await cinder.openIoctx('volumes');
    vms = await cinder.openIoctx('vms');
  });

  after(async () => {
    // Best-effort removal of what a failed run left (children first), then shutdown.
    if ((created.length > 0 || trashed.size > 0) && lab) {
      const c = cinder && !cinder.isShutdown ? cinder : await connectAs('cinder', lab.keyringPath('cinder')).catch(() => undefined);
      for (const { pool, name } of [...created].reverse()) {
        try {
          const io = await c!.openIoctx(pool);
          await io.withImage(name, {}, async (img) => {
            for (const s of await img.snapList()) {
              if (await img.snapIsProtected(s.name).catch(() => false)) await img.snapUnprotect(s.name).catch(() => undefined);
              await img.snapRemove(s.name).catch(() => undefined);
            }
          });
          await removeImage(io, name);
        } catch {
          // already gone, or the lab is purged below anyway
        }
      }
      for (const id of trashed) {
        try {
          await (await c!.openIoctx('volumes')).trashRemove(id, true);
        } catch {
          // already gone, or the lab is purged below anyway
        }
      }
      if (c !== cinder) await c?.shutdown();
    }
    await Promise.allSettled([cinder?.shutdown(), cinder2?.shutdown(), admin?.shutdown()]);
    if (ownLab && labModule) await labModule.labPurge(labDir);
  });

  test('connects: fsid, cluster stats, pool stats, replica size via mon_command', async () => {
    assert.match(await cinder.fsid(), /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const cs = await cinder.clusterStats();
    assert.ok(cs.kb > 0 && cs.kbAvail > 0 && cs.totalBytes === cs.kb * 1024);
    const ps = await cinder.poolStats('volumes');
    assert.equal(typeof ps.numObjects, 'number');
    assert.equal(await cinder.poolReplicaSize('volumes'), 2);
    assert.match(await cinder.clientAddrs(), /^127\.0\.0\.1:\d+\/\d+$/);
    await assertRbdError(cinder.poolStats('no-such-pool'), ['ENOENT'], 'rados_ioctx_create', /no-such-pool/);
    await assertRbdError(cinder.monCommand({ prefix: 'no such command' }), ['EINVAL'], 'rados_mon_command');
  });

  test('creates an image in volumes with 4 MiB objects and explicit features', async () => {
    await volumes.createImage(parentName, IMAGE_SIZE, { orderBits: 22, features: FEATURES });
    created.push({ pool: 'volumes', name: parentName });
    assert.ok((await volumes.listImages()).includes(parentName));
    parent = await volumes.openImage(parentName);
    const st = await parent.stat();
    assert.equal(st.sizeBytes, IMAGE_SIZE);
    assert.equal(st.objectSizeBytes, OBJ);
    assert.equal(st.order, 22);
    assert.equal(st.numObjects, IMAGE_SIZE / OBJ);
    assert.match(st.blockNamePrefix, /^rbd_data\./);
    assert.equal(await parent.features(), FEATURES);
    // exclusive-lock is taken on the first write, not at open
    assert.deepEqual(await parent.lockOwners(), { mode: 'exclusive', owners: [] });
    assert.equal(await parent.isExclusiveLockOwner(), false);

    // The caller chooses the object size.
    const small = `${tag}-1m`;
    await volumes.createImage(small, 8 * MiB, { objectSizeBytes: MiB, features: RBD_FEATURE_LAYERING });
    await volumes.withImage(small, { readOnly: true }, async (img) => {
      const s = await img.stat();
      assert.equal(s.objectSizeBytes, MiB);
      assert.equal(s.order, 20);
      assert.equal(await img.features(), RBD_FEATURE_LAYERING);
    });
    await volumes.removeImage(small);
    await assertRbdError(volumes.createImage(parentName, MiB, { orderBits: 22, features: FEATURES }), ['EEXIST'], 'rbd_create4');
  });

  test('writes a pattern at several offsets with several writes in flight and reads it back', async () => {
    const ranges: [number, number][] = [
      [0, OBJ],
      [OBJ, OBJ],
      [2 * OBJ, OBJ],
      [3 * OBJ, OBJ],
      [20 * MiB + 12345, 100_000],
      [28 * MiB - 3000, 6000], // across an object boundary
      [40 * MiB, MiB],
      [IMAGE_SIZE - MiB, MiB], // the last MiB
    ];
    for (const [off, len] of ranges) randomBytes(len).copy(model, off);
    const inFlight = await writeConcurrently(parent, model, ranges);
    assert.ok(inFlight >= ranges.length, `expected ${ranges.length} writes in flight, saw ${inFlight}`);
    await parent.flush();
    sameBytes(await readAll(parent, IMAGE_SIZE), model, 'parent read-back');

    // readInto, and an unaligned small read
    const into = Buffer.alloc(100_000);
    assert.equal(await parent.readInto(20 * MiB + 12345, into), 100_000);
    sameBytes(into, model.subarray(20 * MiB + 12345, 20 * MiB + 12345 + 100_000), 'readInto');
    sameBytes(await parent.read(28 * MiB - 17, 34), model.subarray(28 * MiB - 17, 28 * MiB + 17), 'small read');
    // librbd clips I/O at the end of the image; starting at the end is invalid
    sameBytes(await parent.read(IMAGE_SIZE - 10, 20), model.subarray(IMAGE_SIZE - 10), 'read clipped at the end');
    await assertRbdError(parent.read(IMAGE_SIZE, 20), ['EINVAL'], 'rbd_aio_read', new RegExp(`^rbd_aio_read volumes/${parentName}: Invalid argument \\(EINVAL\\)$`));
  });

  test('snapshot + protect', async () => {
    await parent.snapCreate('base');
    await parent.snapProtect('base');
    assert.equal(await parent.snapIsProtected('base'), true);
    const snaps = await parent.snapList();
    assert.deepEqual(snaps.map((s) => [s.name, s.sizeBytes]), [['base', IMAGE_SIZE]]);
    await assertRbdError(parent.snapProtect('base'), ['EBUSY'], 'rbd_snap_protect');
    await assertRbdError(volumes.removeImage(parentName), ['ENOTEMPTY', 'EBUSY'], 'rbd_remove');
    await volumes.withImage(parentName, { snapshot: 'base' }, async (snap) => {
      sameBytes(await readAll(snap, IMAGE_SIZE), model, 'parent@base');
      await assertRbdError(snap.write(0, Buffer.alloc(512)), ['EROFS'], 'rbd_aio_write');
    });
  });

  test('clones into another pool; the clone reads the pattern; children and parent info', async () => {
    await vms.clone({ parentIoctx: volumes, parentImage: parentName, parentSnap: 'base', childName, features: FEATURES, orderBits: 22 });
    created.push({ pool: 'vms', name: childName });
    child = await vms.openImage(childName);
    sameBytes(await readAll(child, IMAGE_SIZE), model, 'clone read');
    const p = await child.parentInfo();
    assert.ok(p);
    assert.equal(p.pool, 'volumes');
    assert.equal(p.image, parentName);
    assert.equal(p.snapshot, 'base');
    assert.equal(await parent.parentInfo(), null);
    const children = await parent.listChildren('base');
    assert.deepEqual(children.map((c) => `${c.pool}/${c.image}`), [`vms/${childName}`]);
    assert.deepEqual((await parent.listChildren()).map((c) => `${c.pool}/${c.image}`), [`vms/${childName}`]);
  });

  test('writes to the clone leave the parent unchanged', async () => {
    childModel = Buffer.from(model);
    const ranges: [number, number][] = [
      [2 * MiB, 64 * KiB], // object 0 (copy-up from the parent)
      [21 * MiB, 4 * KiB], // object 5 (partly written in the parent)
      [50 * MiB, 8 * KiB], // object 12 (nothing in the parent)
    ];
    for (const [off, len] of ranges) randomBytes(len).copy(childModel, off);
    await writeConcurrently(child, childModel, ranges);
    sameBytes(await readAll(child, IMAGE_SIZE), childModel, 'clone after writes');
    sameBytes(await readAll(parent, IMAGE_SIZE), model, 'parent after clone writes');
  });

  test('diff_iterate between two snapshots returns exactly the changed extents', async () => {
    await child.snapCreate('c1');
    const changes: [number, number][] = [
      [2 * MiB + 4096, 512], // inside object 0, copied up before c1
      [21 * MiB + 1000, 1000], // inside object 5's data at c1 (it ends at 21 MiB + 4 KiB)
      [8 * MiB + 5, 10], // object 2, still backed by the parent at c1
      [12 * MiB + 100 * KiB, 3 * KiB], // object 3, parent-backed too
    ];
    // A write past the end of an object's data at c1 extends the object: the
    // diff reports from the old end (the gap read as zeros before and after).
    const extending: [number, number] = [45 * MiB, 2000]; // object 11: nothing before c1
    const extendingPastEnd: [number, number] = [21 * MiB + 8192, 1000]; // object 5 again, past its end
    for (const [off, len] of [...changes, extending, extendingPastEnd]) randomBytes(len).copy(childModel, off);
    await writeConcurrently(child, childModel, changes);
    await writeConcurrently(child, childModel, [extending, extendingPastEnd]);
    await child.snapCreate('c2');
    childAtC2 = Buffer.from(childModel);

    await vms.withImage(childName, { snapshot: 'c2' }, async (c2) => {
      const exact = sortExtents([
        ...changes.map(([offset, length]) => ({ offset, length, exists: true })),
        { offset: 44 * MiB, length: MiB + 2000, exists: true }, // object 11 from its start
        { offset: 21 * MiB + 4096, length: 4096 + 1000, exists: true }, // object 5 from its old end
      ]);
      // the [21 MiB + 1000, +1000) and [21 MiB + 4 KiB, ...) extents are distinct
      assert.deepEqual(sortExtents(await c2.diffIterate({ fromSnap: 'c1' })), exact);
      // in batches of one extent per native call: same answer
      const batches: Extent[][] = [];
      for await (const b of c2.diffIterateBatches({ fromSnap: 'c1', batchSize: 1 })) batches.push(b);
      assert.equal(batches.length, exact.length);
      assert.deepEqual(sortExtents(batches.flat()), exact);
      // whole objects
      const whole = sortExtents(await c2.diffIterate({ fromSnap: 'c1', wholeObject: true }));
      assert.deepEqual(whole.map((e) => [e.offset, e.length]), [0, 2, 3, 5, 11].map((o) => [o * OBJ, OBJ]));
      // a sub-range
      assert.deepEqual(await c2.diffIterate({ fromSnap: 'c1', offset: 8 * MiB, length: 4 * MiB }), [{ offset: 8 * MiB + 5, length: 10, exists: true }]);
      await assertRbdError(c2.diffIterate({ fromSnap: 'no-such-snap' }), ['ENOENT'], 'rbd_diff_iterate2');
      await assertRbdError(c2.diffIterate({ fromSnap: 'c1', maxExtents: 2, batchSize: 1 }), ['E2BIG'], 'rbd_diff_iterate2');
    });
  });

  test('flatten with progress keeps the content and removes the parent link', async () => {
    const progress: [number, number][] = [];
    await child.flatten((done, total) => progress.push([done, total]));
    assert.ok(progress.length >= 1, 'progress was reported');
    const [lastDone, lastTotal] = progress.at(-1)!;
    assert.ok(lastTotal > 0 && lastDone === lastTotal, `last progress ${lastDone}/${lastTotal}`);
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i]![0] >= progress[i - 1]![0], 'progress is monotonic');
    assert.equal(await child.parentInfo(), null);
    sameBytes(await readAll(child, IMAGE_SIZE), childModel, 'clone after flatten');
    assert.deepEqual(await parent.listChildren('base'), []);
    // no children left: the parent snapshot can go
    await parent.snapUnprotect('base');
    assert.equal(await parent.snapIsProtected('base'), false);
  });

  test('rollback to a snapshot restores its content', async () => {
    await child.write(2 * MiB, randomBytes(64 * KiB));
    await child.write(30 * MiB, randomBytes(4 * KiB));
    await child.snapRollback('c2');
    sameBytes(await readAll(child, IMAGE_SIZE), childAtC2, 'after rollback to c2');
    childModel = Buffer.from(childAtC2);
  });

  test('resize grows (zeros at the end) and shrinks', async () => {
    await child.resize(80 * MiB);
    assert.equal((await child.stat()).sizeBytes, 80 * MiB);
    sameBytes(await child.read(70 * MiB, MiB), Buffer.alloc(MiB), 'grown tail');
    await child.resize(48 * MiB);
    const st = await child.stat();
    assert.equal(st.sizeBytes, 48 * MiB);
    assert.equal(st.numObjects, 12);
    sameBytes(await child.read(40 * MiB, 8 * MiB), childModel.subarray(40 * MiB, 48 * MiB), 'kept part');
    assert.equal((await child.read(48 * MiB - 512, 1024)).length, 512); // clipped at the new end
    await assertRbdError(child.read(48 * MiB, 512), ['EINVAL'], 'rbd_aio_read');
    childModel = childModel.subarray(0, 48 * MiB);
  });

  test('discard and write_zeroes read back as zeros', async () => {
    await Promise.all([child.discard(0, OBJ), child.discard(10 * MiB, 128 * KiB), child.writeZeroes(21 * MiB + 100, 5000)]);
    childModel.fill(0, 0, OBJ);
    childModel.fill(0, 10 * MiB, 10 * MiB + 128 * KiB);
    childModel.fill(0, 21 * MiB + 100, 21 * MiB + 5100);
    sameBytes(await readAll(child, 48 * MiB), childModel, 'after discard');
  });

  test('exclusive lock: owners, ownership, break refused without blocklist caps', async () => {
    assert.equal(await child.isExclusiveLockOwner(), true);
    const me = await cinder.clientAddrs();
    assert.deepEqual(await child.lockOwners(), { mode: 'exclusive', owners: [me] });

    cinder2 = await connectAs('client.cinder', lab.keyringPath('cinder'));
    const other = await (await cinder2.openIoctx('vms')).openImage(childName);
    assert.equal(await other.isExclusiveLockOwner(), false);
    assert.deepEqual((await other.lockOwners()).owners, [me]);
    // mon 'allow r' cannot blocklist the owner, so librbd refuses to break its lock
    await assertRbdError(other.lockBreak('exclusive', me), ['EACCES', 'EPERM'], 'rbd_lock_break', new RegExp(`vms/${childName}`));
    await assertRbdError(cinder2.blocklistAdd(me, 60), ['EACCES', 'EPERM'], 'rados_mon_command');
    assert.equal(await child.isExclusiveLockOwner(), true);
    // shutdown closes the handles that are still open
    assert.equal(cinder2.openHandles, 2);
    await cinder2.shutdown();
    assert.equal(cinder2.openHandles, 0);
    assert.equal(other.closed, true);
    await assertRbdError(other.stat(), ['EBADF'], 'rbd_stat');
    await assertRbdError(cinder2.openIoctx('vms'), ['ESHUTDOWN'], 'rados_ioctx_create');
  });

  test('typed errors carry code, errno and operation', async () => {
    const missing = `${tag}-missing`;
    const e = await assertRbdError(volumes.openImage(missing), ['ENOENT'], 'rbd_open', new RegExp(`^rbd_open volumes/${missing}: No such file or directory \\(ENOENT\\)$`));
    assert.equal(e.errno, 2);
    assert.equal(e.name, 'RbdError');
    const images = await cinder.openIoctx('images');
    try {
      await assertRbdError(images.createImage(`${tag}-denied`, MiB, { orderBits: 22, features: FEATURES }), ['EPERM', 'EACCES'], 'rbd_create4', new RegExp(`^rbd_create4 images/${tag}-denied: .*\\((EPERM|EACCES)\\)$`));
    } finally {
      await images.close();
    }
    await assertRbdError(vms.clone({ parentIoctx: volumes, parentImage: parentName, parentSnap: 'base', childName: `${tag}-c1`, features: FEATURES, cloneFormat: 1 }), ['EINVAL'], 'rbd_clone3');
    await assertRbdError(child.snapRemove('no-such-snap'), ['ENOENT'], 'rbd_snap_remove');
    await assertRbdError(RadosCluster.connect({ confPath: lab.confPath, user: 'no-such-user', keyringPath: lab.keyringPath('cinder'), connectTimeoutSeconds: 5 }), ['EACCES', 'EPERM', 'ENOENT', 'ETIMEDOUT', 'EINVAL'], 'rados_connect');
    await assertRbdError(RadosCluster.connect({ confPath: '/nonexistent/ceph.conf', user: 'cinder' }), ['ENOENT'], 'rados_conf_read_file');
  });

  test('close waits for the I/O in flight; later calls are refused', async () => {
    const img = await vms.openImage(childName);
    const data = randomBytes(OBJ);
    const writes = Array.from({ length: 8 }, (_, i) => img.write(i * OBJ, data));
    assert.equal(img.inFlight, 8);
    const closing = img.close();
    await assertRbdError(img.write(0, data), ['EBADF'], 'rbd_aio_write');
    await Promise.all(writes); // every write completes
    await closing;
    assert.equal(img.inFlight, 0);
    await img.close(); // idempotent
    await assertRbdError(img.read(0, 512), ['EBADF'], 'rbd_aio_read');
    // the data is there
    sameBytes(await child.read(7 * OBJ, OBJ), data, 'written before close');
  });

  test('the native shutdown is refused while handles are open', async () => {
    const c = await connectAs('cinder', lab.keyringPath('cinder'));
    const io = await c.openIoctx('volumes');
    await assert.rejects((c.nativeHandle as unknown as { shutdown(): Promise<void> }).shutdown(), (e: Error & { code?: string }) => e.code === 'EBUSY');
    await io.close();
    assert.equal(c.openHandles, 0);
    await c.shutdown();
    await c.shutdown(); // idempotent
  });

  test('fencing: an admin breaks a dead client lock and blocklists it', async () => {
    const name = `${tag}-fence`;
    await volumes.createImage(name, 16 * MiB, { orderBits: 22, features: FEATURES });
    created.push({ pool: 'volumes', name });
    const victim = await connectAs('cinder', lab.keyringPath('cinder'));
    const victimImg = await (await victim.openIoctx('volumes')).openImage(name);
    await victimImg.write(0, randomBytes(4096));
    const victimAddr = await victim.clientAddrs();
    admin = await connectAs('admin', lab.adminKeyringPath);
    const adminImg = await (await admin.openIoctx('volumes')).openImage(name);
    assert.deepEqual((await adminImg.lockOwners()).owners, [victimAddr]);
    await adminImg.lockBreak('exclusive', victimAddr);
    const listed = await admin.monCommand({ prefix: 'osd blocklist ls', format: 'json' });
    assert.ok(listed.outbuf.toString().includes(victimAddr), `blocklist holds ${victimAddr}`);
    // the fenced client can no longer write
    const t0 = Date.now();
    const fenced = await assertRbdError(victimImg.write(0, randomBytes(4096)), ['ESHUTDOWN', 'ETIMEDOUT', 'EROFS'], 'rbd_aio_write');
    console.log(`# fenced client's write failed with ${fenced.code} after ${Date.now() - t0} ms`);
    await adminImg.write(0, Buffer.alloc(4096, 1));
    assert.equal(await adminImg.isExclusiveLockOwner(), true);
    await victim.shutdown(); // frees cleanly although blocklisted
    await admin.blocklistRemove(victimAddr);
    // blocklist add/rm by monCommand
    await admin.blocklistAdd('127.0.0.1:0/123456789', 60);
    assert.ok((await admin.monCommand({ prefix: 'osd blocklist ls', format: 'json' })).outbuf.toString().includes('127.0.0.1:0/123456789'));
    await admin.blocklistRemove('127.0.0.1:0/123456789');
    await adminImg.close();
    await removeImage(volumes, name);
    created.pop();
  });

  test('trash: move hides the image, restore brings it back, remove deletes it; typed errors', async () => {
    const name = `${tag}-trash`;
    await volumes.createImage(name, 16 * MiB, { orderBits: 22, features: FEATURES });
    created.push({ pool: 'volumes', name });
    const data = randomBytes(64 * KiB);
    await volumes.withImage(name, {}, (img) => img.write(OBJ - 1000, data));
    const id = (await volumes.listImageSpecs()).find((s) => s.name === name)!.id;
    assert.ok(id);
    const entryOf = async (): Promise<TrashEntry | undefined> => (await volumes.trashList()).find((e) => e.id === id);

    // move: gone from the directory, present in the trash under its name
    const t0 = Math.floor(Date.now() / 1000);
    await volumes.trashMove(name, 0);
    trashed.add(id);
    created.pop();
    assert.ok(!(await volumes.listImages()).includes(name));
    const entry = await entryOf();
    assert.ok(entry, `trash holds ${id}`);
    assert.equal(entry.name, name);
    assert.equal(entry.source, 'user');
    assert.ok(entry.deletionTime >= t0 - 5 && entry.deletionTime <= Date.now() / 1000 + 5, `deletionTime ${entry.deletionTime} ~ ${t0}`);
    assert.equal(entry.deferredUntil, entry.deletionTime);
    await assertRbdError(volumes.openImage(name), ['ENOENT'], 'rbd_open');
    await assertRbdError(volumes.trashMove(name, 0), ['ENOENT'], 'rbd_trash_move', new RegExp(`^rbd_trash_move volumes/${name}: No such file or directory \\(ENOENT\\)$`));

    // restore under a name that is taken: EEXIST; under its name: back, same id, same bytes
    await volumes.createImage(name, MiB, { orderBits: 22, features: FEATURES });
    await assertRbdError(volumes.trashRestore(id, name), ['EEXIST'], 'rbd_trash_restore', new RegExp(`^rbd_trash_restore volumes/trash:${id}: File exists \\(EEXIST\\): to ${name}$`));
    await volumes.removeImage(name);
    await volumes.trashRestore(id, name);
    trashed.delete(id);
    created.push({ pool: 'volumes', name });
    assert.ok((await volumes.listImages()).includes(name));
    assert.equal((await volumes.listImageSpecs()).find((s) => s.name === name)!.id, id);
    assert.equal(await entryOf(), undefined);
    await volumes.withImage(name, { readOnly: true }, async (img) => sameBytes(await img.read(OBJ - 1000, data.length), data, 'restored image'));

    // move with a delay: removal refused (EPERM) until forced
    await volumes.trashMove(name, 3600);
    trashed.add(id);
    created.pop();
    const deferred = await entryOf();
    assert.ok(deferred);
    assert.equal(deferred.deferredUntil - deferred.deletionTime, 3600);
    await assertRbdError(volumes.trashRemove(id, false), ['EPERM'], 'rbd_trash_remove', new RegExp(`^rbd_trash_remove volumes/trash:${id}: `));
    assert.ok(await entryOf(), 'still in the trash after the refused removal');
    await volumes.trashRemove(id, true);
    trashed.delete(id);
    assert.equal(await entryOf(), undefined);
    assert.ok(!(await volumes.listImages()).includes(name));

    // unknown ids and bad arguments
    const unknown = `${tag}nosuchid`;
    const e = await assertRbdError(volumes.trashRemove(unknown, false), ['ENOENT'], 'rbd_trash_remove', new RegExp(`^rbd_trash_remove volumes/trash:${unknown}: No such file or directory \\(ENOENT\\)$`));
    assert.equal(e.errno, 2);
    assert.equal(e.subject, `volumes/trash:${unknown}`);
    await assertRbdError(volumes.trashRemove(unknown, true), ['ENOENT'], 'rbd_trash_remove');
    await assertRbdError(volumes.trashRestore(unknown, name), ['ENOENT'], 'rbd_trash_restore');
    await assert.rejects(volumes.trashMove(name, -1), RangeError);
    await assert.rejects(volumes.trashMove(name, 1.5), RangeError);
  });

  test('trash: a clone parent whose protected snapshot has children', async () => {
    // Per clone format: the parent has a protected snapshot 's' with one child.
    const outcome: Record<string, string> = {};
    for (const format of [1, 2] as const) {
      const p = `${tag}-tp${format}`;
      const c = `${tag}-tc${format}`;
      await volumes.createImage(p, 16 * MiB, { orderBits: 22, features: FEATURES });
      created.push({ pool: 'volumes', name: p });
      const data = randomBytes(4 * KiB);
      await volumes.withImage(p, {}, async (img) => {
        await img.write(0, data);
        await img.snapCreate('s');
        await img.snapProtect('s');
      });
      await vms.clone({ parentIoctx: volumes, parentImage: p, parentSnap: 's', childName: c, features: FEATURES, cloneFormat: format });
      created.push({ pool: 'vms', name: c });
      const pid = (await volumes.listImageSpecs()).find((s) => s.name === p)!.id;

      // rbd_trash_move does not look at snapshots or children: the parent goes to the trash
      await volumes.trashMove(p, 0);
      trashed.add(pid);
      assert.ok(!(await volumes.listImages()).includes(p));
      assert.equal((await volumes.trashList()).find((e) => e.id === pid)?.name, p);
      // the child still reads through it, and sees its parent in the trash
      await vms.withImage(c, { readOnly: true }, async (img) => {
        sameBytes(await img.read(0, data.length), data, `format ${format} child with its parent in the trash`);
        const pi = await img.parentInfo();
        assert.equal(pi?.imageId, pid);
        assert.equal(pi?.trash, true);
      });
      // but the trashed parent cannot be purged while it has snapshots
      const refused = await assertRbdError(volumes.trashRemove(pid, true), ['ENOTEMPTY'], 'rbd_trash_remove');
      outcome[`format ${format}`] = `trashMove allowed, trashRemove ${refused.code}`;
      assert.ok((await volumes.trashList()).some((e) => e.id === pid));

      // restore, then take everything down in order
      await volumes.trashRestore(pid, p);
      trashed.delete(pid);
      await vms.removeImage(c);
      created.pop();
      await volumes.withImage(p, {}, async (img) => {
        await img.snapUnprotect('s');
        await img.snapRemove('s');
      });
      await volumes.removeImage(p);
      created.pop();
    }
    console.log(`# trash move of a clone parent with a protected snapshot and a child: ${Object.entries(outcome).map(([k, v]) => `${k}: ${v}`).join('; ')}`);
    // Ceph 16: allowed for both clone formats; the purge is refused until the snapshots are gone.
    assert.deepEqual(outcome, { 'format 1': 'trashMove allowed, trashRemove ENOTEMPTY', 'format 2': 'trashMove allowed, trashRemove ENOTEMPTY' });
  });

  test('latency: createImage+removeImage vs createImage+trashMove, trashRemove (1 GiB, 4 MiB objects, features 61; printed)', async () => {
    const GiB = 1024 * MiB;
    const n = 10;
    const t = { createR: [] as number[], remove: [] as number[], createT: [] as number[], move: [] as number[], trashRemove: [] as number[] };
    const pair = { remove: [] as number[], move: [] as number[] };
    for (let i = 0; i < n; i++) {
      const a = `${tag}-lat-r${i}`;
      let t0 = process.hrtime.bigint();
      await volumes.createImage(a, GiB, { orderBits: 22, features: FEATURES });
      const cr = msSince(t0);
      t0 = process.hrtime.bigint();
      await volumes.removeImage(a);
      const rm = msSince(t0);
      t.createR.push(cr);
      t.remove.push(rm);
      pair.remove.push(cr + rm);

      const b = `${tag}-lat-t${i}`;
      t0 = process.hrtime.bigint();
      await volumes.createImage(b, GiB, { orderBits: 22, features: FEATURES });
      const ct = msSince(t0);
      const id = (await volumes.listImageSpecs()).find((s) => s.name === b)!.id; // not timed
      t0 = process.hrtime.bigint();
      await volumes.trashMove(b, 0);
      const mv = msSince(t0);
      trashed.add(id);
      t0 = process.hrtime.bigint();
      await volumes.trashRemove(id, false);
      t.trashRemove.push(msSince(t0));
      trashed.delete(id);
      t.createT.push(ct);
      t.move.push(mv);
      pair.move.push(ct + mv);
    }
    assert.equal(FEATURES, 61);
    console.log(`# RBD delete latency, ${n} x 1 GiB images, 4 MiB objects, features 61, client.cinder, pool volumes:`);
    console.log(`#   createImage+removeImage: ${summary(pair.remove)}; createImage ${summary(t.createR)}, removeImage ${summary(t.remove)}`);
    console.log(`#   createImage+trashMove:   ${summary(pair.move)}; createImage ${summary(t.createT)}, trashMove ${summary(t.move)}`);
    console.log(`#   trashRemove (later, in the background): ${summary(t.trashRemove)}`);
  });

  test('throughput: 4 MiB sequential writes and reads of 256 MiB, 8 in flight (printed)', async () => {
    const name = `${tag}-tput`;
    const total = 256 * MiB;
    await volumes.createImage(name, total, { orderBits: 22, features: FEATURES });
    created.push({ pool: 'volumes', name });
    const img = await volumes.openImage(name);
    try {
      const w = await sequential(img, 'write', total, OBJ, 8);
      const r = await sequential(img, 'read', total, OBJ, 8);
      console.log(`# binding throughput (256 MiB, 4 MiB I/Os, 8 in flight, client.cinder): write ${w.toFixed(0)} MB/s, read ${r.toFixed(0)} MB/s`);
    } finally {
      await img.close();
    }
    await volumes.removeImage(name);
    created.pop();
  });

  test('removes images and shuts down cleanly', async () => {
    await child.snapRemove('c1');
    await child.snapRemove('c2');
    await child.close();
    await vms.removeImage(childName);
    await parent.snapRemove('base');
    await parent.close();
    await volumes.removeImage(parentName);
    assert.ok(!(await volumes.listImages()).includes(parentName));
    created.splice(created.findIndex((c) => c.name === parentName), 1);
    created.splice(created.findIndex((c) => c.name === childName), 1);
    assert.equal(cinder.openHandles, 2); // volumes and vms
    await cinder.shutdown();
    assert.equal(cinder.openHandles, 0);
    await assertRbdError(cinder.fsid(), ['ESHUTDOWN'], 'rados_cluster_fsid');
    await assertRbdError(volumes.listImages(), ['EBADF'], 'rbd_list2');
  });
});
