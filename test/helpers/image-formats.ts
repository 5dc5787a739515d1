/** Test images in vmdk, vdi, vhd (vpc) and vhdx made with qemu-img from a raw disk with known bytes. */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** disk_format → qemu-img's format name. */
export const formats: [string, string][] = [['vmdk', 'vmdk'], ['vdi', 'vdi'], ['vhd', 'vpc'], ['vhdx', 'vhdx']];

/** A 64 MiB raw disk with known bytes at three offsets, and the same disk in each format. */
export async function makeFormatImages(dir: string): Promise<{ rawPath: string; paths: Record<string, string>; virtualSizes: Record<string, number> }> {
  const rawPath = path.join(dir, 'source.raw');
  await execFileAsync('qemu-img', ['create', '-q', '-f', 'raw', rawPath, '64M']);
  await execFileAsync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 64k', '-c', 'write -P 0xa5 1M 1M', '-c', 'write -P 0x3c 40M 64k', rawPath]);
  const paths: Record<string, string> = {};
  const virtualSizes: Record<string, number> = {};
  for (const [diskFormat, qemuFormat] of formats) {
    const file = path.join(dir, `disk.${diskFormat}`);
    await execFileAsync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', qemuFormat, rawPath, file]);
    const { stdout } = await execFileAsync('qemu-img', ['info', '--output=json', '-f', qemuFormat, file]);
    paths[diskFormat] = file;
    virtualSizes[diskFormat] = (JSON.parse(stdout) as { 'virtual-size': number })['virtual-size'];
  }
  return { rawPath, paths, virtualSizes };
}

