/**
 * The binding's batched object I/O (IoCtx.readObjects / IoCtx.writeObjects,
 * native/src/objects.cc), which the Ceph backup driver's incrementals use,
 * against the lab cluster (PUMICE_CEPH_LAB) as client.cinder-backup on pool
 * `backups`, on an image shaped like a backup image (4 MiB objects,
 * layering only).
 *
 * Proves: several extents of each object (data and zero runs) land where
 * librbd reads them; the write snapshot context keeps a snapshot's bytes (the
 * OSDs clone the object before the write); reads at a snapshot id see the
 * snapshot; short objects read as zeros and absent objects come back null;
 * bad arguments are refused before any I/O. IoCtx.copyObjects (the
 * incremental's pipelined copy): reads at a snapshot of one image land in
 * another image's objects at other offsets, under its snapshot context; zero
 * blocks are written as zeroes and not counted as data; short source objects
 * read as zeros; an absent source object is null and nothing of it is written.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { readLab } from '../../src/ceph/lab.ts';
import { RadosCluster, RBD_FEATURE_LAYERING, type IoCtx, type RbdImage } from '../../src/ceph/rbd.ts';

const MiB = 1024 * 1024;
const OBJ = 4 * MiB;
const lab = process.env['PUMICE_CEPH_LAB'];

describe('binding: batched object reads and writes (librados ops with several extents)', { skip: lab ? false : 'set PUMICE_CEPH_LAB to a running lab', timeout: 120_000 }, () => {
  const name = `objects-binding-test-${process.pid}`;
  let cluster: RadosCluster;
  let pool: IoCtx;
  let image: RbdImage;
  let prefix = '';
  const before1 = randomBytes(8 * MiB); // objects 0 and 1 at snapshot s1
  const oid = (n: number) => `${prefix}.${n.toString(16).padStart(16, '0')}`;

  before(async () => {
    const l = readLab(lab!);
    cluster = await RadosCluster.connect({ confPath: l.confPath, user: 'cinder-backup', keyringPath: l.keyringPath('cinder-backup'), connectTimeoutSeconds: 10 });
    pool = await cluster.openIoctx('backups');
    await pool.createImage(name, 16 * MiB, { orderBits: 22, features: RBD_FEATURE_LAYERING });
    image = await pool.openImage(name);
    await image.write(0, before1);
    await image.flush();
    await image.snapCreate('s1');
    const stat = await image.stat();
    prefix = stat.blockNamePrefix;
    assert.deepEqual([stat.stripeUnit, stat.stripeCount, stat.dataPoolId], [OBJ, 1, pool.poolId], 'a plain layout: object n is <prefix>.<n>');
  });

  after(async () => {
    await image?.close().catch(() => undefined);
    await pool?.withImage(name, {}, async (img) => {
      for (const s of await img.snapList()) await img.snapRemove(s.name);
    }).catch(() => undefined);
    await pool?.removeImage(name).catch(() => undefined);
    await pool?.close().catch(() => undefined);
    await cluster?.shutdown().catch(() => undefined);
  });

  test('one write op per object with data and zero extents, under the snapshot context; reads at head and at the snapshot', async () => {
    const s1 = (await image.snapList()).find((s) => s.name === 's1')!;
    const a = randomBytes(4096);
    const b = randomBytes(100);
    const c = randomBytes(4096);
    const d = randomBytes(777);
    await pool.writeObjects(
      [
        { oid: oid(0), extents: [{ offset: 4096, data: a }, { offset: 65536, data: 8192 }, { offset: MiB + 7, data: b }] },
        { oid: oid(1), extents: [{ offset: 0, data: c }] },
        { oid: oid(3), extents: [{ offset: 12345, data: d }] }, // a new object
      ],
      { seq: s1.id, ids: [s1.id] },
    );
    const expected = Buffer.concat([before1, Buffer.alloc(8 * MiB)]);
    a.copy(expected, 4096);
    expected.fill(0, 65536, 65536 + 8192);
    b.copy(expected, MiB + 7);
    c.copy(expected, OBJ);
    d.copy(expected, 3 * OBJ + 12345);
    await image.close();
    image = await pool.openImage(name);
    assert.ok((await image.read(0, 16 * MiB)).equals(expected), 'librbd reads the head as written');
    const atSnap = await pool.withImage(name, { snapshot: 's1' }, (img) => img.read(0, 16 * MiB));
    assert.ok(atSnap.equals(Buffer.concat([before1, Buffer.alloc(8 * MiB)])), 'the snapshot kept its bytes (the write carried its snapshot context)');

    const head = await pool.readObjects([
      { oid: oid(0), extents: [[4096, 4096], [65536, 8192], [MiB + 7, 100]] },
      { oid: oid(2), extents: [[0, 4096]] }, // never written
      { oid: oid(3), extents: [[12345, 777], [OBJ - 10, 10]] }, // the second range is past the object's end
    ]);
    assert.ok(head[0]!.equals(Buffer.concat([a, Buffer.alloc(8192), b])));
    assert.equal(head[1], null, 'an absent object is null');
    assert.ok(head[2]!.equals(Buffer.concat([d, Buffer.alloc(10)])), 'bytes past the end of an object read as zeros');
    const old = await pool.readObjects([{ oid: oid(0), extents: [[4096, 4096], [MiB, 64]] }, { oid: oid(3), extents: [[12345, 777]] }], s1.id);
    assert.ok(old[0]!.equals(Buffer.concat([before1.subarray(4096, 8192), before1.subarray(MiB, MiB + 64)])), 'a read at the snapshot id sees the snapshot');
    assert.equal(old[1], null, 'an object created after the snapshot is absent at it');
  });

  test('copyObjects: read at a snapshot of one image, written per object under the other image\'s snapshot context, zero blocks as zeroes', async () => {
    const src = `${name}.src`;
    const dst = `${name}.dst`;
    const srcBefore = randomBytes(2 * OBJ); // objects 0 and 1 of the source at snapshot a; object 2 never exists
    srcBefore.fill(0, OBJ + 8192, OBJ + 4 * 4096); // a run of two zero blocks inside object 1
    const dstBefore = randomBytes(3 * OBJ); // the target's objects 0..2 at its snapshot t1
    try {
      await pool.createImage(src, 4 * OBJ, { orderBits: 22, features: RBD_FEATURE_LAYERING });
      await pool.createImage(dst, 4 * OBJ, { orderBits: 22, features: RBD_FEATURE_LAYERING });
      const [srcSnapId, srcPrefix] = await pool.withImage(src, {}, async (img) => {
        await img.write(0, srcBefore.subarray(0, OBJ + 100_000)); // object 1 is short: it ends 100,000 bytes in
        await img.flush();
        await img.snapCreate('a');
        await img.write(0, randomBytes(2 * OBJ)); // the head moves on: a copy must read the snapshot
        await img.flush();
        return [(await img.snapList())[0]!.id, (await img.stat()).blockNamePrefix];
      });
      const [t1, dstPrefix] = await pool.withImage(dst, {}, async (img) => {
        await img.write(0, dstBefore);
        await img.flush();
        await img.snapCreate('t1');
        return [(await img.snapList())[0]!, (await img.stat()).blockNamePrefix];
      });
      const srcOid = (n: number) => `${srcPrefix}.${n.toString(16).padStart(16, '0')}`;
      const dstOid = (n: number) => `${dstPrefix}.${n.toString(16).padStart(16, '0')}`;
      const written = await pool.copyObjects(
        pool,
        srcSnapId,
        [
          // object 0 -> target object 0: two data extents and a range zeroed without reading
          { sourceOid: srcOid(0), targetOid: dstOid(0), extents: [{ sourceOffset: 4096, targetOffset: 4096, length: 4096 }, { sourceOffset: MiB, targetOffset: MiB, length: 12_288 }, { sourceOffset: 0, targetOffset: 2 * MiB, length: 8192, zero: true }] },
          // object 1 -> target object 2 (another place): 16 KiB holding two zero blocks in the middle; and 8 KiB past the source object's end
          { sourceOid: srcOid(1), targetOid: dstOid(2), extents: [{ sourceOffset: 4096, targetOffset: 0, length: 4 * 4096 }, { sourceOffset: 200_000, targetOffset: 65_536, length: 8192 }] },
          // an absent source object: null, nothing written
          { sourceOid: srcOid(2), targetOid: dstOid(1), extents: [{ sourceOffset: 0, targetOffset: 0, length: 4096 }, { sourceOffset: 0, targetOffset: 8192, length: 4096, zero: true }] },
        ],
        { seq: t1.id, ids: [t1.id] },
        { inFlightMax: 2, bytesInFlightMax: 4096 },
      );
      assert.deepEqual(written, [4096 + 12_288, 2 * 4096, null], 'data bytes per object: zero blocks and zeroed ranges are not data; the absent object is null');
      const expected = Buffer.concat([dstBefore, Buffer.alloc(OBJ)]);
      srcBefore.copy(expected, 4096, 4096, 8192);
      srcBefore.copy(expected, MiB, MiB, MiB + 12_288);
      expected.fill(0, 2 * MiB, 2 * MiB + 8192);
      srcBefore.copy(expected, 2 * OBJ, OBJ + 4096, OBJ + 5 * 4096);
      expected.fill(0, 2 * OBJ + 65_536, 2 * OBJ + 65_536 + 8192); // past the short source object's end: zeros
      const [head, atT1] = await Promise.all([
        pool.withImage(dst, { readOnly: true }, (img) => img.read(0, 4 * OBJ)),
        pool.withImage(dst, { snapshot: 't1' }, (img) => img.read(0, 4 * OBJ)),
      ]);
      assert.ok(head.equals(expected), 'librbd reads the target head as copied');
      assert.ok(atT1.equals(Buffer.concat([dstBefore, Buffer.alloc(OBJ)])), 'the target snapshot kept its bytes');
    } finally {
      for (const img of [src, dst]) {
        await pool.withImage(img, {}, async (i) => {
          for (const s of await i.snapList()) await i.snapRemove(s.name);
        }).catch(() => undefined);
        await pool.removeImage(img).catch(() => undefined);
      }
    }
  });

  test('bad arguments are refused before any I/O', async () => {
    const copy = (extents: { sourceOffset: number; targetOffset: number; length: number }[], oids = 1) =>
      pool.copyObjects(pool, 1, Array.from({ length: oids }, () => ({ sourceOid: oid(0), targetOid: oid(9), extents })), { seq: 0, ids: [] });
    await assert.rejects(copy([{ sourceOffset: 0, targetOffset: 0, length: 0 }]), /lengths must be positive/);
    await assert.rejects(copy([]), /at least one extent/);
    await assert.rejects(copy([{ sourceOffset: 0, targetOffset: 0, length: 1 }], 0), /between 1 and 1024 objects/);
    await assert.rejects(pool.copyObjects(pool, 1, [{ sourceOid: oid(0), targetOid: oid(9), extents: [{ sourceOffset: 0, targetOffset: 0, length: 1 }] }], { seq: 0, ids: [] }, { inFlightMax: 0 }), /inFlightMax/);
    await assert.rejects(pool.writeObjects([{ oid: oid(0), extents: [{ offset: 0, data: Buffer.alloc(4) }] }], { seq: 5, ids: [1, 2] }), /descending/);
    await assert.rejects(pool.writeObjects([{ oid: oid(0), extents: [{ offset: 0, data: Buffer.alloc(4) }] }], { seq: 1, ids: [2] }), /snapSeq/);
    await assert.rejects(pool.readObjects([]), /between 1 and 1024 objects/);
    await assert.rejects(pool.readObjects([{ oid: oid(0), extents: [] }]), /at least one extent/);
  });
});
