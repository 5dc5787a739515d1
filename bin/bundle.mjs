// Loads Pumice's entry point from one bundled JavaScript file instead of
// transforming some 250 TypeScript files through tsx at every start: a start
// then takes about half the time (each test starts a server, and the crash
// harness restarts one per operation). The bundle is built with esbuild (the
// transformer tsx itself uses, so the emitted code is the same) into
// build/bundle-<stamp>/, where the stamp hashes the path, size and mtime of
// every file under src/: an edited source makes a new bundle at the next
// start, never a stale one. When the bundle cannot be built (read-only
// checkout, esbuild missing) or PUMICE_BUNDLE=0, tsx runs the sources as before.
//
// `node bin/bundle.mjs` builds it ahead of time (the installer does, since the
// service may not write its own directory) and prints where.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repoRoot = dirname(dirname(fileURLToPath(import.meta.url)));
const srcDir = join(repoRoot, 'src');
const buildDir = join(repoRoot, 'build');

/** A hash of every source file's path, size and mtime: the bundle's name. */
function sourceStamp() {
  const hash = createHash('sha256');
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.isFile()) {
        const st = statSync(path);
        hash.update(`${relative(srcDir, path)}\0${st.size}\0${st.mtimeMs}\n`);
      }
    }
  };
  walk(srcDir);
  return hash.digest('hex').slice(0, 16);
}

/**
 * Each module keeps its own import.meta.url: code finds files next to itself
 * (package.json, the native binding, the dashboard's static files, the
 * PostgreSQL worker), so the bundle resolves them from the original source
 * location, relative to wherever the bundle sits.
 */
function importMetaPerModule(outDir) {
  return {
    name: 'import-meta-per-module',
    setup(build) {
      build.onLoad({ filter: /\.ts$/ }, (args) => {
        let text = readFileSync(args.path, 'utf8');
        if (text.includes('import.meta.')) {
          const fileFromBundle = JSON.stringify(relative(outDir, args.path));
          const dirFromBundle = JSON.stringify(relative(outDir, dirname(args.path)) || '.');
          text = text
            .replaceAll('import.meta.url', `new URL(${fileFromBundle}, import.meta.url).href`)
            .replaceAll('import.meta.dirname', `__pumiceModuleDir(${dirFromBundle}, import.meta.url)`);
        }
        return { contents: text, loader: 'ts' };
      });
    },
  };
}

/** Builds the bundle for `stamp` unless it exists; returns its main.js. Concurrent starts may both build: the first rename wins. */
async function buildBundle(stamp) {
  const target = join(buildDir, `bundle-${stamp}`);
  const main = join(target, 'main.js');
  if (existsSync(main)) return main;
  const { build } = await import('esbuild');
  mkdirSync(buildDir, { recursive: true });
  const tmp = join(buildDir, `.tmp-${process.pid}-${Date.now()}`);
  try {
    await build({
      entryPoints: [join(srcDir, 'main.ts')],
      outfile: join(tmp, 'main.js'),
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      sourcemap: 'linked',
      logLevel: 'silent',
      plugins: [importMetaPerModule(target)],
      banner: {
        js: "import { fileURLToPath as __pumiceToPath } from 'node:url';\nconst __pumiceModuleDir = (dir, base) => __pumiceToPath(new URL(dir + '/', base)).replace(/\\/$/, '');",
      },
    });
    try {
      renameSync(tmp, target);
    } catch (error) {
      if (!existsSync(main)) throw error; // another start built the same stamp first: use theirs
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  pruneOldBundles(target);
  return main;
}

/** Bundles of older sources, once nothing can still be starting from them (single files: a running process has read its own). */
function pruneOldBundles(keep) {
  const cutoffMs = Date.now() - 10 * 60_000;
  for (const name of readdirSync(buildDir)) {
    const path = join(buildDir, name);
    if (path === keep || !/^(bundle-|\.tmp-)/.test(name)) continue;
    try {
      if (statSync(path).mtimeMs < cutoffMs) rmSync(path, { recursive: true, force: true });
    } catch {
      // Removed by a concurrent start.
    }
  }
}

/** Pumice's `main`, from the bundle when it can be had, else through tsx. */
export async function loadMain() {
  if (process.env.PUMICE_BUNDLE !== '0') {
    let bundle = null;
    try {
      bundle = await buildBundle(sourceStamp());
    } catch (error) {
      if (process.env.PUMICE_BUNDLE === '1') throw error;
      // Read-only checkout or no esbuild: tsx below does the same work at every start.
    }
    if (bundle) {
      process.setSourceMapsEnabled(true);
      return (await import(pathToFileURL(bundle).href)).main;
    }
  }
  const { register } = await import('tsx/esm/api');
  register();
  return (await import('../src/main.ts')).main;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  console.log(await buildBundle(sourceStamp()));
}
