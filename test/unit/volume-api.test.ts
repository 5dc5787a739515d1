/**
 * The Block Storage route declarations: the JSON Schema a route declares for
 * its body (`declaredBody`) accepts exactly the bodies the handler's coercing
 * check (`validate`) accepts; every route names a rule of the policy table;
 * response schemas change where the microversions say.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileSchema, responseProblem } from '../../src/http/declare.ts';
import { metadataSchema, validate, type Schema } from '../../src/http/validate.ts';
import { declaredVolumeRoutes } from '../../src/volume/api/app.ts';
import { declaredBody, type VolumeRouteDeps } from '../../src/volume/api/common.ts';
import { volumePolicyDefaults } from '../../src/volume/api/policy.ts';

const schemas: Record<string, Schema> = {
  volume: {
    type: 'object', required: ['volume'],
    properties: {
      volume: {
        type: 'object',
        properties: {
          size: { type: 'integer', min: 1, max: 1024, allowString: true, nullable: true },
          name: { type: 'string', maxLength: 5, nullable: true },
          source_volid: { type: 'uuid', nullable: true },
          multiattach: { type: 'boolean', allowString: true, nullable: true },
          metadata: { ...metadataSchema, nullable: true } as Schema,
          mode: { type: 'string', enum: ['rw', 'ro'] },
          user_id: { type: 'any' },
          blank: { type: 'string', pattern: /\S/ },
          tags: { type: 'array', items: { type: 'string' }, maxItems: 2 },
        },
      },
      hints: { type: 'object', additional: true, nullable: true },
    },
  },
};

const samples: unknown[] = [
  undefined, null, 1, 'x', [], {},
  { volume: {} },
  { volume: null },
  { volume: { size: 1 } },
  { volume: { size: 0 } },
  { volume: { size: 1025 } },
  { volume: { size: '12' } },
  { volume: { size: 'twelve' } },
  { volume: { size: 1.5 } },
  { volume: { size: null } },
  { volume: { size: true } },
  { volume: { name: 'abcde' } },
  { volume: { name: 'abcdef' } },
  { volume: { name: 5 } },
  { volume: { source_volid: '9f860761-6359-4f18-a6aa-feb93eac5af2' } },
  { volume: { source_volid: '9f8607616359' } },
  { volume: { source_volid: null } },
  { volume: { multiattach: 'True' } },
  { volume: { multiattach: 'yes' } },
  { volume: { multiattach: 'maybe' } },
  { volume: { multiattach: false } },
  { volume: { metadata: { k: 'v' } } },
  { volume: { metadata: { k: 5 } } },
  { volume: { metadata: { k: 'x'.repeat(256) } } },
  { volume: { mode: 'ro' } },
  { volume: { mode: 'rx' } },
  { volume: { user_id: { anything: [1] } } },
  { volume: { blank: '   ' } },
  { volume: { blank: ' a ' } },
  { volume: { tags: ['a', 'b'] } },
  { volume: { tags: ['a', 'b', 'c'] } },
  { volume: { tags: [1] } },
  { volume: { bogus: 1 } },
  { volume: { size: 1 }, extra: {} },
  { volume: { size: 1 }, hints: { same_host: ['x'] } },
  { volume: { size: 1 }, hints: null },
  JSON.parse('{"volume": {"size": 1, "__proto__": {"size": 2}}}'),
  JSON.parse('{"volume": {"constructor": 1}}'),
];

test('declaredBody accepts exactly what validate() accepts', () => {
  for (const [name, schema] of Object.entries(schemas)) {
    const declared = compileSchema(declaredBody(schema));
    for (const sample of samples) {
      let accepted = true;
      try {
        validate(schema, sample ?? null);
      } catch {
        accepted = false;
      }
      assert.equal(declared(sample ?? null), accepted, `${name}: ${JSON.stringify(sample)}: validate() ${accepted ? 'accepts' : 'refuses'} it, the declaration does not agree`);
    }
  }
});

test('every Block Storage route names a rule of the Cinder policy table, or checks per action', () => {
  const specs = declaredVolumeRoutes({} as VolumeRouteDeps);
  assert.ok(specs.length >= 50, `${specs.length} routes`);
  for (const spec of specs) {
    if (spec.policy === '@') {
      // Action routes check the rule of each action; the extension list is open to any token, as in Cinder.
      assert.match(spec.path, /\/action$|\/extensions$/, `${spec.method} ${spec.path} has no rule`);
      continue;
    }
    assert.ok(Object.hasOwn(volumePolicyDefaults, spec.policy), `${spec.method} ${spec.path}: ${spec.policy}`);
  }
});

test('create and update answer without the show-only attributes; show has them; fields follow the microversion', () => {
  const specs = declaredVolumeRoutes({} as VolumeRouteDeps);
  const find = (method: string, path: string) => specs.find((s) => s.method === method && s.path === path)!;
  const base = {
    id: 'i', name: null, status: 'available', size: 1, availability_zone: 'nova', created_at: '2024-01-01T00:00:00.000000', updated_at: null,
    attachments: [], description: null, volume_type: '__DEFAULT__', snapshot_id: null, source_volid: null, metadata: {}, links: [],
    user_id: 'u', bootable: 'false', encrypted: false, replication_status: null, consistencygroup_id: null, multiattach: false, migration_status: null,
  };
  const withTenant = { ...base, 'os-vol-tenant-attr:tenant_id': 'p' };
  assert.equal(responseProblem(find('POST', '/v3/volumes'), 202, 0, { volume: base }), null);
  assert.match(responseProblem(find('POST', '/v3/volumes'), 202, 0, { volume: withTenant }) ?? '', /tenant_id' was unexpected/);
  assert.match(responseProblem(find('PUT', '/v3/volumes/:id'), 200, 0, { volume: withTenant }) ?? '', /tenant_id' was unexpected/);
  assert.equal(responseProblem(find('GET', '/v3/volumes/:id'), 200, 0, { volume: withTenant }), null);
  assert.match(responseProblem(find('GET', '/v3/volumes/:id'), 200, 0, { volume: base }) ?? '', /tenant_id' is a required property/);
  // group_id from 3.13: required there, refused before.
  assert.match(responseProblem(find('GET', '/v3/volumes/:id'), 200, 0, { volume: { ...withTenant, group_id: null } }) ?? '', /group_id' was unexpected/);
  assert.match(responseProblem(find('GET', '/v3/volumes/:id'), 200, 13, { volume: withTenant }) ?? '', /group_id' is a required property/);
});
