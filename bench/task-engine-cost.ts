/**
 * The task engine's own cost per task, in one process and on SQLite, so that a busy machine
 * distorts it far less than the HTTP benches: each of `--clients` loops queues a task inside a
 * transaction (as a service does with its resource row), waits for it, and goes on; the handler
 * yields once and completes. Prints CPU and wall time per task, SQL statements per task, and
 * write transactions per task (the caller's and `complete`'s; claims that run as statements of
 * their own are the statements beyond those). Compare two checkouts with `--tree DIR`.
 *
 *   node --import tsx bench/task-engine-cost.ts [--tasks 3000] [--clients 8] [--tree /path/to/checkout]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { arg, argString } from './lib.ts';

const tasks = arg('tasks', 3000);
const clients = arg('clients', 8);
const tree = resolve(argString('tree', join(import.meta.dirname, '..')));

const { Db } = (await import(join(tree, 'src/db/db.ts'))) as typeof import('../src/db/db.ts');
const { TaskQueue } = (await import(join(tree, 'src/tasks/queue.ts'))) as typeof import('../src/tasks/queue.ts');

const dir = mkdtempSync(join(tmpdir(), 'pumice-task-cost-'));
const db = new Db(join(dir, 'pumice.db'));
// As the server does: WAL checkpoints in a worker thread, not inside this thread's commits.
db.startBackgroundCheckpoints();
let statements = 0;
let transactions = 0;
for (const method of ['get', 'run', 'all'] as const) {
  const original = db[method].bind(db) as (...args: unknown[]) => unknown;
  (db as unknown as Record<string, unknown>)[method] = (...args: unknown[]) => (statements++, original(...args));
}
const transaction = db.transaction.bind(db);
db.transaction = <T>(fn: () => T): T => (db.inTransaction || transactions++, transaction(fn));

const queue = new TaskQueue({ db, log: () => undefined, concurrencyPerQueue: 8, attemptsMax: 3, pollIntervalMs: 2000 });
const finished = new Map<string, () => void>();
queue.register('bench.op', async (task) => {
  await new Promise((r) => setImmediate(r));
  task.checkpoint('bench.op.before');
  task.complete(() => undefined);
  finished.get(task.resourceId)?.();
}, () => undefined);
queue.start(['bench']);

async function run(count: number): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: clients }, async (_, c) => {
    while (next < count) {
      const resourceId = `r-${c}-${next++}`;
      const done = new Promise<void>((r) => finished.set(resourceId, r));
      db.transaction(() => queue.enqueue('bench.op', resourceId, 'bench', {}));
      await done;
      finished.delete(resourceId);
    }
  }));
}

await run(300); // warm-up: JIT and statement cache
statements = 0;
transactions = 0;
const cpu0 = process.cpuUsage();
const t0 = performance.now();
await run(tasks);
const cpu = process.cpuUsage(cpu0);
const wallMs = performance.now() - t0;
console.log(`# task-engine-cost: ${tasks} tasks, ${clients} clients, tree ${tree}, load ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
console.log(`cpu_per_task: ${((cpu.user + cpu.system) / tasks).toFixed(1)} us`);
console.log(`wall_per_task: ${((wallMs * 1000) / tasks).toFixed(1)} us`);
console.log(`statements_per_task: ${(statements / tasks).toFixed(2)}`);
console.log(`write_transactions_per_task: ${(transactions / tasks).toFixed(2)} (db.transaction calls; a claim outside one is a statement of its own)`);
await queue.stop();
db.close();
rmSync(dir, { recursive: true, force: true });
