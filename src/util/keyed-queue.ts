/**
 * Runs async jobs one at a time per key, in the order they were queued; jobs of different keys run
 * at once. A failed job does not stop the ones queued after it. Keys are forgotten when their queue
 * empties, so the map holds only keys with work queued.
 */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, job: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const result = previous.then(job, job);
    const tail = result.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return result;
  }

  /** Keys with a job running or queued. */
  get size(): number {
    return this.tails.size;
  }
}
