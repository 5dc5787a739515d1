/**
 * `pumice image ...`: operator commands against a running Pumice (see
 * src/cli/session.ts). `import FILE` creates an image and streams the file
 * with PUT /v2/images/{id}/file, showing the progress bar of
 * src/cli/progress.ts on stderr; it prints the image on stdout. A refused
 * upload prints the API's message, removes the empty image and exits 1.
 */
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { parseArgs, promisify } from 'node:util';
import { createProgressBar, formatBytes } from '../cli/progress.ts';
import { diskFormatOfQemu } from '../disk-formats.ts';
import { CloudError, CloudSession, loadCredentials } from '../cli/session.ts';
import { parseArgsMessage } from '../cli/args.ts';

const execFileAsync = promisify(execFile);

const usage = `usage: pumice image <command> [options]

commands:
  import FILE    create an image and upload FILE into it, with a progress bar

options of import:
  --name NAME               image name (default: the file name without its extension)
  --disk-format FORMAT      raw, qcow2, vmdk, vdi, vhd, vhdx, iso, ... (default: detected with qemu-img info)
  --container-format FMT    default bare
  --visibility VISIBILITY   public, private, shared or community (default: the server's, shared)
  --property KEY=VALUE      an image property; repeat for more
  --min-disk GIB            minimum disk size to boot the image
  --min-ram MIB             minimum RAM to boot the image
  --protected               protect the image from deletion
  --data-dir DIR            where to find admin-openrc when OS_AUTH_URL is not set (default: ./data, or $PUMICE_DATA_DIR)

example:
  pumice image import debian-12-generic-amd64.qcow2 --name debian-12 --property os_distro=debian
`;

const visibilities = ['public', 'private', 'shared', 'community'];
const qemuImgTimeoutMs = 30_000;

class UsageError extends Error {}

export async function runCli(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  if (!command || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(usage);
    return command ? 0 : 2;
  }
  try {
    if (command === 'import') return await importCommand(rest);
    throw new UsageError(`unknown command '${command}'`);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`pumice image: ${error.message}\n\n${usage}`);
      return 2;
    }
    if (error instanceof CloudError) {
      process.stderr.write(`pumice image: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

interface ImportOptions {
  file: string;
  name: string;
  diskFormat: string | null;
  containerFormat: string;
  visibility: string | null;
  properties: Record<string, string>;
  minDiskGiB: number | null;
  minRamMiB: number | null;
  protected: boolean;
  dataDir: string;
}

function parseImportArgs(args: string[]): ImportOptions {
  let values: Record<string, string | string[] | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args,
      options: {
        name: { type: 'string' },
        'disk-format': { type: 'string' },
        'container-format': { type: 'string' },
        visibility: { type: 'string' },
        property: { type: 'string', multiple: true },
        'min-disk': { type: 'string' },
        'min-ram': { type: 'string' },
        protected: { type: 'boolean' },
        'data-dir': { type: 'string' },
      },
      strict: true,
      allowPositionals: true,
    }));
  } catch (error) {
    throw new UsageError(parseArgsMessage(error, usage));
  }
  if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'import needs the FILE to upload' : `import takes one FILE, got ${positionals.length}`);
  const file = resolve(positionals[0]!);
  const integer = (name: string): number | null => {
    const text = values[name] as string | undefined;
    if (text === undefined) return null;
    if (!/^\d{1,9}$/.test(text)) throw new UsageError(`--${name} '${text}' is not a non-negative integer`);
    return Number(text);
  };
  const visibility = (values['visibility'] as string | undefined) ?? null;
  if (visibility !== null && !visibilities.includes(visibility)) throw new UsageError(`--visibility '${visibility}' is not one of ${visibilities.join(', ')}`);
  const properties: Record<string, string> = {};
  for (const pair of (values['property'] as string[] | undefined) ?? []) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new UsageError(`--property '${pair}' is not KEY=VALUE`);
    properties[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return {
    file,
    name: (values['name'] as string | undefined) ?? basename(file).replace(/\.[^.]*$/, ''),
    diskFormat: (values['disk-format'] as string | undefined) ?? null,
    containerFormat: (values['container-format'] as string | undefined) ?? 'bare',
    visibility,
    properties,
    minDiskGiB: integer('min-disk'),
    minRamMiB: integer('min-ram'),
    protected: values['protected'] === true,
    dataDir: resolve((values['data-dir'] as string | undefined) ?? process.env['PUMICE_DATA_DIR'] ?? 'data'),
  };
}

/** The file's disk_format as qemu-img sees it (vpc → vhd); raw when qemu-img sees no container format. */
async function detectDiskFormat(file: string): Promise<string> {
  try {
    const { stdout } = await execFileAsync('qemu-img', ['info', '--output=json', file], { timeout: qemuImgTimeoutMs, maxBuffer: 1 << 20 });
    const format = String((JSON.parse(stdout) as { format?: string }).format ?? 'raw');
    return diskFormatOfQemu(format);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new CloudError(`cannot detect the disk format of ${file}: qemu-img is not installed; pass --disk-format (raw, qcow2, ...) or install qemu-utils`, 0);
    }
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new CloudError(`cannot detect the disk format of ${file}: ${(stderr || (error as Error).message).slice(0, 300)}; pass --disk-format`, 0);
  }
}

async function importCommand(args: string[]): Promise<number> {
  const options = parseImportArgs(args);
  let sizeBytes: number;
  try {
    const info = await stat(options.file);
    if (!info.isFile()) throw new CloudError(`${options.file} is not a regular file`, 0);
    sizeBytes = info.size;
  } catch (error) {
    if (error instanceof CloudError) throw error;
    throw new CloudError(`cannot read ${options.file}: ${(error as Error).message}`, 0);
  }
  const diskFormat = options.diskFormat ?? (await detectDiskFormat(options.file));
  const session = await CloudSession.login(loadCredentials(process.env, options.dataDir));
  const imageUrl = `${session.endpoint('image').replace(/\/v2$/, '')}/v2/images`;

  const body: Record<string, unknown> = { ...options.properties, name: options.name, disk_format: diskFormat, container_format: options.containerFormat };
  if (options.visibility !== null) body['visibility'] = options.visibility;
  if (options.minDiskGiB !== null) body['min_disk'] = options.minDiskGiB;
  if (options.minRamMiB !== null) body['min_ram'] = options.minRamMiB;
  if (options.protected) body['protected'] = true;
  const created = (await (await session.request('POST', imageUrl, { json: body })).json()) as { id: string };
  process.stderr.write(`image ${created.id} created (${diskFormat}/${options.containerFormat}); uploading ${formatBytes(sizeBytes)} from ${options.file}\n`);

  const bar = createProgressBar({ label: `uploading ${options.name}`, totalBytes: sizeBytes });
  let sentBytes = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      sentBytes += chunk.length;
      bar.update(sentBytes);
      callback(null, chunk);
    },
  });
  const source = createReadStream(options.file, { highWaterMark: 4 << 20 }).pipe(counter);
  try {
    await session.request('PUT', `${imageUrl}/${created.id}/file`, {
      body: Readable.toWeb(source) as ReadableStream<Uint8Array>,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(sizeBytes) },
    });
  } catch (error) {
    bar.finish('failed');
    // The image holds no data: remove it rather than leave a queued image behind (unless it is protected).
    const removed = await session.request('DELETE', `${imageUrl}/${created.id}`).then(() => true, () => false);
    if (error instanceof CloudError) {
      process.stderr.write(`pumice image: upload refused: ${error.message}\n${removed ? `image ${created.id} deleted\n` : `image ${created.id} left queued\n`}`);
      return 1;
    }
    throw error;
  }
  bar.finish('done');
  const image = (await (await session.request('GET', `${imageUrl}/${created.id}`)).json()) as Record<string, unknown>;
  const shown = ['id', 'name', 'status', 'disk_format', 'container_format', 'size', 'virtual_size', 'checksum', 'visibility', 'original_disk_format'];
  for (const key of shown) if (image[key] !== undefined && image[key] !== null) process.stdout.write(`${key}: ${String(image[key])}\n`);
  if (image['status'] !== 'active') {
    process.stderr.write(`pumice image: image ${created.id} is '${String(image['status'])}' after the upload, not active\n`);
    return 1;
  }
  return 0;
}
