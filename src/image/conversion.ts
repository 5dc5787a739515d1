/**
 * Conversion of uploaded images to raw for stores whose consumers need raw
 * (RBD: booting from a clone of the image reads its bytes as the disk), as
 * Glance's `image_conversion` import plugin does with `output_format = raw`:
 * disk_format becomes raw, container_format bare, and size, virtual_size and
 * checksums describe the stored raw bytes. Pumice also keeps the uploaded
 * format in the property `originalDiskFormatProperty` (Glance records it nowhere).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { errors } from '../errors.ts';

const execFileAsync = promisify(execFile);

/** disk_formats that a raw-only store converts (or refuses); iso and ami/ari/aki are kept as they are. */
export const convertedFormats: ReadonlySet<string> = new Set(['qcow2', 'vmdk', 'vdi', 'vhd', 'vhdx', 'ploop']);

/** Image property recording the format the data was uploaded in, before conversion. */
export const originalDiskFormatProperty = 'original_disk_format';

/**
 * The fields an image stored converted to raw ends with (what `publish` records after a
 * conversion, as Glance's image_conversion with output_format = raw: disk_format raw,
 * container_format bare), for data that is raw already and would only be converted from
 * `diskFormat` to be converted back: a volume uploaded as qcow2 into the rbd store.
 */
export function convertedToRawFields(diskFormat: string): { disk_format: 'raw'; container_format: 'bare'; properties: Record<string, string> } {
  return { disk_format: 'raw', container_format: 'bare', properties: { [originalDiskFormatProperty]: diskFormat } };
}

/** A conversion runs at disk speed; a limit still bounds a stuck qemu-img. */
export const convertTimeoutMs = 2 * 60 * 60 * 1000;

/**
 * `qemu-img convert -f FORMAT -O raw` of `sourcePath` into a new sparse file
 * `targetPath` (runs of zeros of 4 KiB or more stay holes; `-t unsafe`: the
 * target is a temp file read back once and deleted, so flushes buy nothing). A failure is a
 * 400 naming qemu-img's message: the data passed the format probe, so what
 * is left is a damaged or unsupported image.
 */
export async function convertToRaw(sourcePath: string, qemuFormat: string, targetPath: string, diskFormat: string): Promise<void> {
  const args = ['convert', '-q', '-f', qemuFormat, '-O', 'raw', '-S', '4k', '-t', 'unsafe', sourcePath, targetPath];
  try {
    await execFileAsync('qemu-img', args, { timeout: convertTimeoutMs, maxBuffer: 1 << 20 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw errors.toolMissing('qemu-img is not installed on the image service host, so images cannot be converted to raw: install it (apt-get install qemu-utils) and upload again.');
    }
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw errors.badRequest(
      `Image data refused: converting the ${diskFormat} image to raw failed: ${(stderr || (error as Error).message).slice(0, 300)}. Check the image with qemu-img check, or convert it yourself (qemu-img convert -f ${qemuFormat} -O raw IN OUT) and upload it with --disk-format raw. The image stays queued without data.`,
    );
  }
}
