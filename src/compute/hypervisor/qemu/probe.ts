/**
 * What `doctor` and the agent ask about QEMU on this host: is the binary
 * there, does it have the rbd block driver (Debian's qemu-block-extra), and
 * does KVM really run guests. KVM is decided by a short real boot that must
 * print a marker, never by the presence of /dev/kvm: on this machine kind
 * /dev/kvm is a nested PVM backend on which stock guests fail
 * (COMPUTE-NOTES), while `-accel help` still lists kvm.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const toolTimeoutMs = 15_000;
const probeMarker = 'PUMICE-PROBE-OK';
/** Where Debian's QEMU looks for block-*.so modules. */
const debianModuleDir = '/usr/lib/x86_64-linux-gnu/qemu';

export interface QemuCheck {
  /** Resolved binary, or null when not found. */
  binary: string | null;
  /** e.g. `7.2.22`. */
  version: string | null;
  /** The rbd block driver is listed and its module file is present. */
  rbd: boolean;
  /** Accelerators the binary was built with (`-accel help`); says nothing about whether they work. */
  accelerators: string[];
  /** Each problem with its fix; empty when everything needed is there. */
  problems: string[];
}

/** Runs `qemu-system-x86_64 --version`, `-drive format=help` and `-accel help`. Never throws. */
export async function checkQemu(options: { qemuBinary?: string } = {}): Promise<QemuCheck> {
  const binary = options.qemuBinary ?? 'qemu-system-x86_64';
  const result: QemuCheck = { binary: null, version: null, rbd: false, accelerators: [], problems: [] };
  try {
    const { stdout } = await execFileAsync(binary, ['--version'], { timeout: toolTimeoutMs });
    result.binary = binary;
    result.version = /version (\S+)/.exec(stdout)?.[1] ?? stdout.split('\n')[0] ?? null;
  } catch (err) {
    result.problems.push(`${binary} cannot run (${(err as Error).message.split('\n')[0]}): install qemu-system-x86 (apt-get install qemu-system-x86).`);
    return result;
  }
  try {
    const { stdout } = await execFileAsync(binary, ['-drive', 'format=help'], { timeout: toolTimeoutMs });
    const listed = /\brbd\b/.test(stdout);
    // QEMU lists module drivers it was built with even when the module file is missing or broken (measured).
    const resolved = (await which(binary)) ?? binary;
    const moduleDirs = [debianModuleDir, path.join(path.dirname(resolved), '..', 'lib', 'x86_64-linux-gnu', 'qemu')];
    const modulePath = moduleDirs.map((dir) => path.join(dir, 'block-rbd.so')).find((file) => existsSync(file)) ?? null;
    let modulePresent = modulePath !== null && statSync(modulePath).size > 0;
    if (modulePresent && modulePath) {
      const ldd = await execFileAsync('ldd', [modulePath], { timeout: toolTimeoutMs }).then((r) => r.stdout, () => '');
      if (/not found/.test(ldd)) modulePresent = false;
    }
    result.rbd = listed && modulePresent;
    if (!result.rbd) result.problems.push(`QEMU has no rbd block driver (RBD volumes cannot be attached): install qemu-block-extra (apt-get install qemu-block-extra).`);
  } catch (err) {
    result.problems.push(`${binary} -drive format=help failed: ${(err as Error).message.split('\n')[0]}`);
  }
  try {
    const { stdout } = await execFileAsync(binary, ['-accel', 'help'], { timeout: toolTimeoutMs });
    result.accelerators = stdout.split('\n').slice(1).map((l) => l.trim()).filter(Boolean);
  } catch {
    /* an old QEMU without -accel help: not a problem by itself */
  }
  return result;
}

async function which(command: string): Promise<string | null> {
  if (command.includes('/')) return command;
  for (const dir of (process.env['PATH'] ?? '').split(':')) {
    if (dir && existsSync(path.join(dir, command))) return path.join(dir, command);
  }
  return null;
}

/**
 * A 512-byte boot sector that prints PUMICE-PROBE-OK on COM1 and halts:
 *   cli; xor ax,ax; mov ds,ax; mov si,msg; mov dx,0x3f8
 *   l: lodsb; test al,al; jz d; out dx,al; jmp l
 *   d: hlt; jmp d
 * SeaBIOS loads it from a raw disk, so the probe exercises firmware + the
 * accelerator without any kernel (a broken KVM fails in SeaBIOS already).
 * Under TCG it reaches the marker in about 0.25 s.
 */
export function probeBootSector(): Buffer {
  const code = [0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0xbe, 0x16, 0x7c, 0xba, 0xf8, 0x03, 0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8, 0xf4, 0xeb, 0xfd];
  const sector = Buffer.alloc(512);
  Buffer.from(code).copy(sector, 0);
  Buffer.from(`${probeMarker}\r\n\0`, 'latin1').copy(sector, code.length);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

export interface ProbeOptions {
  qemuBinary?: string;
  /** Per accelerator. Default 15 s (TCG reaches the marker in about 1 s). */
  timeoutMs?: number;
  /**
   * A raw image to boot instead of the built-in boot sector, with the marker
   * it prints on ttyS0: a full kernel also exercises long mode (a nested KVM
   * may pass real mode and still spin in the kernel decompressor).
   */
  image?: { path: string; marker: string };
  log?: (msg: string) => void;
  /** Tests only: pretend KVM's device is elsewhere. Default /dev/kvm. */
  kvmDevice?: string;
  /** Tests only: the CPU flags' source. Default /proc/cpuinfo. */
  cpuinfoPath?: string;
}

/**
 * Whether the CPU has hardware virtualization (vmx or svm in /proc/cpuinfo's flags). Without it a
 * /dev/kvm is kvm_pvm (this machine kind's nested, VMX-less backend): the probe's boot sector can
 * reach its marker under it on some kernels, while a real guest stops at once with 'KVM internal
 * error' (measured 2026-12-06, kernel 6.18.44), so KVM is not even tried. null: cannot tell.
 */
function hardwareVirtualization(cpuinfoPath: string): boolean | null {
  try {
    return /^flags\s*:.*\b(vmx|svm)\b/m.test(readFileSync(cpuinfoPath, 'utf8'));
  } catch {
    return null;
  }
}

/** Boots the probe under one accelerator; exported for doctor's detail and tests. */
export async function probeBootOnce(accel: 'kvm' | 'tcg', options: ProbeOptions = {}): Promise<{ ok: boolean; elapsedMs: number; detail: string }> {
  return probeBoot(accel, options);
}

export interface ProbeResult {
  virtType: 'kvm' | 'qemu';
  reason: string;
}

/** Boots a probe guest under KVM (only when /dev/kvm exists); kvm if it reaches the marker, else qemu (TCG) with why. */
export async function probeAccelerator(options: ProbeOptions = {}): Promise<ProbeResult> {
  if (!existsSync(options.kvmDevice ?? '/dev/kvm')) return { virtType: 'qemu', reason: '/dev/kvm does not exist: TCG (software emulation)' };
  if (hardwareVirtualization(options.cpuinfoPath ?? '/proc/cpuinfo') === false) {
    return { virtType: 'qemu', reason: '/dev/kvm exists but the CPU has no vmx or svm flag (a nested KVM without hardware virtualization, such as kvm_pvm, fails real guests at once with an emulation failure): TCG (software emulation)' };
  }
  const kvm = await probeBoot('kvm', options);
  if (kvm.ok) return { virtType: 'kvm', reason: `a probe guest booted under KVM to its marker in ${kvm.elapsedMs} ms` };
  const tcg = await probeBoot('tcg', options);
  const tcgNote = tcg.ok ? `TCG reached the marker in ${tcg.elapsedMs} ms` : `and TCG failed too (${tcg.detail}): check the QEMU installation`;
  return { virtType: 'qemu', reason: `/dev/kvm exists but a probe guest under KVM did not reach its marker (${kvm.detail}); using TCG: ${tcgNote}` };
}

async function probeBoot(accel: 'kvm' | 'tcg', options: ProbeOptions): Promise<{ ok: boolean; elapsedMs: number; detail: string }> {
  const timeoutMs = options.timeoutMs ?? 15_000;
  const dir = await mkdtemp(path.join(tmpdir(), 'pumice-probe-'));
  const started = Date.now();
  try {
    let imagePath = options.image?.path;
    const marker = options.image?.marker ?? probeMarker;
    if (!imagePath) {
      imagePath = path.join(dir, 'probe.raw');
      await writeFile(imagePath, probeBootSector());
      // SeaBIOS does not boot a one-sector disk (measured): pad to 1 MiB.
      await truncate(imagePath, 1024 * 1024);
    }
    const consolePath = path.join(dir, 'console.log');
    const args = [
      '-machine', 'pc', '-accel', accel === 'kvm' ? 'kvm' : 'tcg,tb-size=32', '-m', '64', '-smp', '1',
      '-nodefaults', '-no-user-config', '-display', 'none', '-vga', 'none',
      '-chardev', `file,id=ser0,path=${consolePath.replace(/,/g, ',,')}`, '-serial', 'chardev:ser0',
      '-blockdev', JSON.stringify({ driver: 'file', filename: imagePath, 'node-name': 'probe-file', 'read-only': true }),
      '-blockdev', JSON.stringify({ driver: 'raw', file: 'probe-file', 'node-name': 'probe-disk', 'read-only': true }),
      '-device', JSON.stringify({ driver: 'virtio-blk-pci', drive: 'probe-disk', bus: 'pci.0', addr: '0x4', bootindex: 1 }),
      '-snapshot',
    ];
    const child = spawn(options.qemuBinary ?? 'qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      if (stderr.length < 8192) stderr += chunk;
    });
    let exited = false;
    child.on('exit', () => (exited = true));
    child.on('error', (err) => {
      exited = true;
      stderr += err.message;
    });
    try {
      while (Date.now() - started < timeoutMs) {
        const text = await readFile(consolePath, 'utf8').catch(() => '');
        if (text.includes(marker)) return { ok: true, elapsedMs: Date.now() - started, detail: '' };
        if (exited) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    } finally {
      if (!exited) child.kill('SIGKILL');
      await new Promise((resolve) => (exited ? resolve(undefined) : child.once('exit', resolve)));
    }
    const said = stderr.trim().split('\n').slice(0, 3).join(' / ');
    const detail = exited && said ? `QEMU said: ${said}` : `no marker within ${timeoutMs} ms${said ? `; QEMU said: ${said}` : ''}`;
    options.log?.(`probe ${accel}: ${detail}`);
    return { ok: false, elapsedMs: Date.now() - started, detail };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
