#!/usr/bin/env node
// Entry point: runs the TypeScript sources, bundled once per change of src/
// (bin/bundle.mjs) or through tsx, so no build step is needed.
// Password hashing (scrypt) and file I/O share libuv's thread pool; 4 threads
// let a burst of logins stall volume work, so give the pool room first.
process.env.UV_THREADPOOL_SIZE ??= '16';
const { loadMain } = await import('./bundle.mjs');
const main = await loadMain();
await main(process.argv.slice(2));
