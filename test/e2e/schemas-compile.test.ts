/**
 * Route schemas compile on first use (src/http/declare.ts), so a schema that
 * ajv refuses would only fail in the request that first needs it. This start
 * compiles every declared request and response schema at registration
 * (PUMICE_COMPILE_SCHEMAS=eager): the server must come up.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startPumice } from '../helpers/pumice.ts';

test('every declared route schema compiles (eager start)', async () => {
  const server = await startPumice({ env: { PUMICE_COMPILE_SCHEMAS: 'eager' } });
  try {
    const response = await fetch(`${server.url}/`);
    assert.ok(response.status === 200 || response.status === 300, `/ answered ${response.status}`);
  } finally {
    await server.stop();
    server.cleanup();
  }
});
