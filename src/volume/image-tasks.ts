/**
 * The volume role's image work: filling a new volume from an image (a
 * copy-on-write clone when the image sits in the backend's Ceph cluster,
 * else a streamed, sparse-aware copy, converted to raw when needed) and
 * uploading a volume's bytes into an image.
 */
import { createReadStream } from 'node:fs';
import { DriverError, gib, hasDataAccess, hasFileImport, hasImageCloning, type VolumeBackend, type VolumeRef } from './drivers/driver.ts';
import {
  copyIntoVolume,
  ImageServiceError,
  needsConversion,
  parseRbdLocation,
  readVolume,
  withConvertedFile,
  type ImageServiceDeps,
} from './images.ts';

/** Image service failures as the driver errors the task runner reports. */
function asDriverError(error: unknown): unknown {
  if (!(error instanceof ImageServiceError)) return error;
  const reason = error.kind === 'Unreachable' ? 'Unreachable' : error.kind === 'NotFound' ? 'NotFound' : error.kind === 'Denied' ? 'Permission' : 'Invalid';
  return new DriverError(reason, error.message);
}

export interface FillResult {
  /** clone: copy-on-write; file-copy: from the image file of this process's store; copy: streamed. */
  method: 'clone' | 'copy' | 'file-copy';
  bytes: number;
  writtenBytes: number;
}

export async function fillVolumeFromImage(
  deps: ImageServiceDeps,
  driver: VolumeBackend,
  volume: VolumeRef,
  imageId: string,
  startCopy: () => void,
): Promise<FillResult> {
  await deps.ready;
  try {
    const token = deps.serviceToken();
    const image = await deps.client.show(token, imageId);
    if (image.status !== 'active') throw new DriverError('Invalid', `image ${imageId} is ${image.status}, not active: upload its data first, or pick another image`);
    const location = parseRbdLocation(image.directUrl);
    if (location && image.diskFormat === 'raw' && hasImageCloning(driver) && (await driver.cloneImageLocation(volume, location))) {
      return { method: 'clone', bytes: 0, writtenBytes: 0 };
    }
    const what = `image ${imageId}`;
    // The checksums were made when the image was stored, by this same process: nothing is hashed again.
    const localFile = deps.localImageFile ? await deps.localImageFile(imageId) : null;
    if (localFile && !needsConversion(image.diskFormat) && hasFileImport(driver)) {
      if (localFile.sizeBytes > volume.sizeGiB * gib) {
        throw new DriverError('Invalid', `${what} is larger than the volume (${volume.sizeGiB * gib} bytes): create the volume with a larger size`);
      }
      startCopy();
      const { allocatedBytes } = await driver.createVolumeFromFile(volume, localFile.path);
      return { method: 'file-copy', bytes: localFile.sizeBytes, writtenBytes: allocatedBytes };
    }
    if (!hasDataAccess(driver)) throw new DriverError('Invalid', `backend [${driver.section}] (${driver.driverName}) cannot write image data into volumes`);
    startCopy();
    await driver.createVolume(volume);
    const target = await driver.openVolumeData(volume, true);
    try {
      // The image file of this process's store is read in place; else the image API streams it.
      const download = localFile ? createReadStream(localFile.path, { highWaterMark: 4 << 20 }) : await deps.client.openData(token, imageId);
      if (needsConversion(image.diskFormat)) {
        const result = await deps.conversion.withRawCopy(volume.id, download, image.diskFormat!, async (raw) => {
          if (raw.virtualSize > target.sizeBytes) {
            throw new DriverError('Invalid', `image ${imageId}'s virtual size (${raw.virtualSize} bytes) is larger than the volume (${target.sizeBytes} bytes): create the volume with a larger size`);
          }
          return copyIntoVolume(raw.stream, target, { targetIsZeroed: true, what });
        });
        return { method: 'copy', ...result };
      }
      return { method: 'copy', ...(await copyIntoVolume(download, target, { targetIsZeroed: true, what })) };
    } finally {
      await target.close();
    }
  } catch (error) {
    throw asDriverError(error);
  }
}

export interface UploadPayload {
  imageId: string;
  diskFormat: string;
  /** The image store to upload into (the volume type's image_service:store_id, as Cinder); absent: the default store. */
  storeId?: string;
}

/** Streams a volume into an image that the API already created (queued). */
export async function uploadVolumeToImage(deps: ImageServiceDeps, driver: VolumeBackend, volume: VolumeRef, payload: UploadPayload): Promise<number> {
  await deps.ready;
  if (!hasDataAccess(driver)) throw new DriverError('Invalid', `backend [${driver.section}] (${driver.driverName}) cannot read volumes for uploads`);
  try {
    const token = deps.serviceToken();
    const image = await deps.client.show(token, payload.imageId);
    if (image.status === 'active') return image.size ?? 0; // a re-run after the upload finished
    const source = await driver.openVolumeData(volume, false);
    try {
      const sizeBytes = source.sizeBytes;
      if (!needsConversion(payload.diskFormat)) {
        await deps.client.upload(token, payload.imageId, readVolume(source, sizeBytes), sizeBytes, payload.storeId ?? null);
        return sizeBytes;
      }
      return await withConvertedFile(deps.conversion, volume.id, readVolume(source, sizeBytes), payload.diskFormat, async (file) => {
        await deps.client.upload(token, payload.imageId, createReadStream(file.path, { highWaterMark: 4 * 1024 * 1024 }), file.sizeBytes, payload.storeId ?? null);
        return file.sizeBytes;
      });
    } finally {
      await source.close();
    }
  } catch (error) {
    throw asDriverError(error);
  }
}
