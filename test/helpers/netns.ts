/**
 * A multi-host topology on one machine, for tests (needs root and iproute2): network
 * namespaces with names unique to the run, a bridge inside the first (controller)
 * namespace and a veth pair from it to each other host, addresses 10.213.N.0/24 of the
 * run's choosing. Nothing is added to the root namespace: the test reaches the hosts
 * through Unix sockets (path sockets cross namespaces), PostgreSQL through its socket
 * directory, and an HTTP listener through a socket bridge (`bridgeHttp`); the hosts reach a
 * service of the root namespace's loopback (the Ceph lab) the same way (`reachRootLoopback`).
 *
 * `cleanup()` kills every process the lab started (by pid), stops its PostgreSQL,
 * deletes its namespaces (their veths and bridge go with them) and its directories;
 * it also runs at process exit, so a failing or interrupted test leaves nothing.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync, appendFileSync, existsSync } from 'node:fs';
import { createServer, connect, type Server } from 'node:net';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const pgBin = process.env['PUMICE_PG_BIN'] ?? '/usr/lib/postgresql/15/bin';

/** Why the lab cannot run here, or null when it can. */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root (ip netns add)';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
  } catch {
    return 'needs iproute2 (ip netns)';
  }
  if (!existsSync(`${pgBin}/initdb`)) return `needs PostgreSQL 15 (${pgBin}/initdb; scripts/install-deps.sh)`;
  return null;
}

export interface LabHost {
  name: string;
  namespace: string;
  address: string;
  /** The veth end on the controller's bridge (down = partitioned). */
  bridgePort: string | null;
}

export interface LabProcess {
  /** null: a helper process of the lab in the root namespace. */
  host: LabHost | null;
  proc: ChildProcess;
  pid: number;
  output: () => string;
  exited: Promise<number | null>;
}

function run(argv: string[], input?: string): string {
  return execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'], timeout: 60_000 });
}

export class NetnsLab {
  readonly id = `${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
  /** Third octet of the lab's 10.213.N.0/24. */
  readonly subnet = 10 + (randomBytes(1)[0]! % 240);
  readonly dir = mkdtempSync(join(tmpdir(), 'pumice-netns-'));
  readonly hosts: LabHost[] = [];
  private readonly processes = new Set<LabProcess>();
  private readonly servers = new Set<Server>();
  private pgData: string | null = null;
  private cleaned = false;
  private readonly onExit = () => this.cleanupSync();

  constructor(hostNames: string[]) {
    process.on('exit', this.onExit);
    chmodSync(this.dir, 0o755);
    try {
      hostNames.forEach((name, index) => this.addHost(name, index));
    } catch (error) {
      this.cleanupSync();
      throw error;
    }
  }

  get controller(): LabHost {
    return this.hosts[0]!;
  }

  private addHost(name: string, index: number): void {
    const namespace = `p16-${this.id}-${name}`.slice(0, 40);
    run(['ip', 'netns', 'add', namespace]);
    const host: LabHost = { name, namespace, address: `10.213.${this.subnet}.${index === 0 ? 1 : 10 + index}`, bridgePort: null };
    this.hosts.push(host);
    run(['ip', '-n', namespace, 'link', 'set', 'lo', 'up']);
    if (index === 0) {
      run(['ip', '-n', namespace, 'link', 'add', 'br0', 'type', 'bridge']);
      run(['ip', '-n', namespace, 'addr', 'add', `${host.address}/24`, 'dev', 'br0']);
      run(['ip', '-n', namespace, 'link', 'set', 'br0', 'up']);
      return;
    }
    const port = `vh${index}`;
    run(['ip', '-n', this.controller.namespace, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', namespace]);
    run(['ip', '-n', this.controller.namespace, 'link', 'set', port, 'master', 'br0', 'up']);
    run(['ip', '-n', namespace, 'addr', 'add', `${host.address}/24`, 'dev', 'eth0']);
    run(['ip', '-n', namespace, 'link', 'set', 'eth0', 'up']);
    host.bridgePort = port;
  }

  host(name: string): LabHost {
    const host = this.hosts.find((h) => h.name === name);
    if (!host) throw new Error(`no lab host ${name}`);
    return host;
  }

  /** Cuts (`up = false`) or restores a host's link to the bridge, as a pulled cable would. */
  setLink(name: string, up: boolean): void {
    const host = this.host(name);
    if (!host.bridgePort) throw new Error(`${name} is the bridge's own host`);
    run(['ip', '-n', this.controller.namespace, 'link', 'set', host.bridgePort, up ? 'up' : 'down']);
  }

  /** Runs a command in a host's namespace and answers its stdout. */
  exec(name: string, argv: string[], env?: NodeJS.ProcessEnv): string {
    return execFileSync('ip', ['netns', 'exec', this.host(name).namespace, ...argv], { encoding: 'utf8', env: env ?? process.env, timeout: 120_000 });
  }

  /**
   * PostgreSQL 15 in the controller's namespace, listening on its bridge address (and a socket
   * directory the test reaches from the root namespace). Answers the URL hosts use and the one
   * the test uses.
   */
  startPostgres(): { url: string; localUrl: string } {
    const dir = join(this.dir, 'pg');
    const password = randomBytes(12).toString('hex');
    run(['mkdir', '-m', '755', dir]);
    const postgresUid = Number(run(['id', '-u', 'postgres']).trim());
    const postgresGid = Number(run(['id', '-g', 'postgres']).trim());
    chownSync(dir, postgresUid, postgresGid);
    writeFileSync(join(dir, 'pwfile'), `${password}\n`);
    chownSync(join(dir, 'pwfile'), postgresUid, postgresGid);
    const data = join(dir, 'data');
    run(['runuser', '-u', 'postgres', '--', `${pgBin}/initdb`, '-D', data, '-U', 'pumice', `--pwfile=${join(dir, 'pwfile')}`, '-E', 'UTF8', '--locale=C', '--auth-local=scram-sha-256', '--auth-host=scram-sha-256']);
    rmSync(join(dir, 'pwfile'));
    appendFileSync(join(data, 'pg_hba.conf'), `host all all 10.213.${this.subnet}.0/24 scram-sha-256\n`);
    this.pgData = data;
    run([
      'ip', 'netns', 'exec', this.controller.namespace, 'runuser', '-u', 'postgres', '--', `${pgBin}/pg_ctl`, '-D', data, '-l', join(dir, 'server.log'), '-w', '-t', '30', 'start',
      '-o', `-c listen_addresses=${this.controller.address} -p 5432 -k ${dir} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100`,
    ]);
    return {
      url: `postgresql://pumice:${password}@${this.controller.address}:5432/postgres`,
      localUrl: `postgresql://pumice:${password}@localhost/postgres?host=${dir}&port=5432`,
    };
  }

  /**
   * Starts `argv` in a host's namespace with its own UTS namespace whose hostname is the host's
   * name (so processes of different hosts cannot tell each other's pids apart by hostname).
   */
  spawn(name: string, argv: string[], env: NodeJS.ProcessEnv): LabProcess {
    const host = this.host(name);
    return this.track(host, spawn('ip', ['netns', 'exec', host.namespace, 'unshare', '--uts', 'sh', '-c', 'hostname "$0" && exec "$@"', host.name, ...argv], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    }));
  }

  /** Starts `argv` in the root namespace, killed by cleanup() like the hosts' processes. */
  private spawnRoot(argv: string[]): LabProcess {
    return this.track(null, spawn(argv[0]!, argv.slice(1), { env: { PATH: process.env['PATH'] }, stdio: ['ignore', 'pipe', 'pipe'] }));
  }

  private track(host: LabHost | null, proc: ChildProcess): LabProcess {
    let output = '';
    proc.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))));
    const handle: LabProcess = { host, proc, pid: proc.pid!, output: () => output, exited };
    this.processes.add(handle);
    void exited.then(() => this.processes.delete(handle));
    return handle;
  }

  /** True when the process stopped itself or was stopped (SIGSTOP). */
  static isStopped(pid: number): boolean {
    try {
      return /^\d+ \(.*\) T /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      return false;
    }
  }

  /**
   * An HTTP listener inside a host's namespace, reachable from the test at the returned
   * http://127.0.0.1:PORT: a forwarder in the namespace accepts on a Unix socket of the lab's
   * directory, and one in this process accepts on loopback.
   */
  async bridgeHttp(name: string, address: string, port: number): Promise<string> {
    const socketPath = join(this.dir, `${name}-${port}.sock`);
    await this.startForwarder(name, [[socketPath, `${address}:${port}`]]);
    const server = createServer((client) => {
      const upstream = connect(socketPath);
      client.pipe(upstream);
      upstream.pipe(client);
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
    });
    this.servers.add(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const address2 = server.address();
    return `http://127.0.0.1:${typeof address2 === 'object' && address2 ? address2.port : 0}`;
  }

  /**
   * Makes the root namespace's 127.0.0.1:`ports` answer on the same ports of each named host's
   * own loopback, so a service that binds 127.0.0.1 only (the Ceph lab: clients connect to the
   * addresses of the monmap and osdmap, which are 127.0.0.1) serves the hosts unchanged. A
   * forwarder in each host's namespace accepts on 127.0.0.1:port and connects to a Unix socket
   * of the lab's directory (path sockets cross namespaces); one forwarder process in the root
   * namespace accepts there and connects to 127.0.0.1:port. Nothing listens on any address of
   * the root namespace. The same port numbers on both sides keep the peers' addresses as the
   * maps name them.
   */
  async reachRootLoopback(names: string[], ports: number[]): Promise<void> {
    const socketFor = (port: number) => join(this.dir, `root-lo-${port}.sock`);
    await this.startForwarder(null, ports.map((port) => [socketFor(port), `127.0.0.1:${port}`]));
    await Promise.all(names.map((name) => this.startForwarder(name, ports.map((port) => [`127.0.0.1:${port}`, socketFor(port)]))));
  }

  /**
   * A byte forwarder process in a host's namespace (null: the root namespace): for each
   * [listen, connect] pair, where each is `address:port` or a Unix socket path, accepts on the
   * first and pipes each connection to the second. Resolves once every listener is bound.
   */
  private async startForwarder(name: string | null, pairs: [string, string][]): Promise<LabProcess> {
    const script = `const net=require('net');
const at=(s)=>s.startsWith('/')?[s]:[Number(s.slice(s.lastIndexOf(':')+1)),s.slice(0,s.lastIndexOf(':'))];
const pairs=JSON.parse(process.argv[1]);let bound=0;
for(const [from,to] of pairs){net.createServer({noDelay:true},(c)=>{const u=net.connect(...at(to));u.setNoDelay?.(true);c.pipe(u);u.pipe(c);c.on('error',()=>u.destroy());u.on('error',()=>c.destroy());})
.listen(...at(from),()=>{if(++bound===pairs.length)console.log('forwarding');});}`;
    const argv = [process.execPath, '-e', script, JSON.stringify(pairs)];
    const proc = name === null ? this.spawnRoot(argv) : this.spawn(name, argv, { PATH: process.env['PATH'] });
    const deadline = Date.now() + 20_000;
    while (!proc.output().includes('forwarding')) {
      if (proc.proc.exitCode !== null || Date.now() > deadline) throw new Error(`forwarder in ${name ?? 'the root namespace'} did not start: ${proc.output()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return proc;
  }

  async cleanup(): Promise<void> {
    for (const server of this.servers) server.close();
    this.servers.clear();
    const waits = [...this.processes].map((p) => p.exited);
    this.cleanupSync();
    await Promise.race([Promise.all(waits), new Promise((r) => setTimeout(r, 5000))]);
  }

  /** Kills the lab's processes by pid, stops its PostgreSQL, deletes its namespaces and directory. */
  cleanupSync(): void {
    if (this.cleaned) return;
    this.cleaned = true;
    process.off('exit', this.onExit);
    for (const p of this.processes) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    if (this.pgData) {
      try {
        execFileSync('runuser', ['-u', 'postgres', '--', `${pgBin}/pg_ctl`, '-D', this.pgData, '-m', 'immediate', '-w', 'stop'], { stdio: 'ignore', timeout: 30_000 });
      } catch {
        // not running
      }
    }
    for (const host of [...this.hosts].reverse()) {
      try {
        execFileSync('ip', ['netns', 'del', host.namespace], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
