/**
 * The Block Storage API moved to `./api/` (one module per resource, declared
 * routes, policy table in `./api/policy.ts`); this file keeps the old import path.
 */
export { microversionMax, microversionMin, parseMicroversion, volumeApp, type VolumeApiExtension, type VolumeApiHelpers, type VolumeAppOptions } from './api/app.ts';
