import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PolicyTable, PolicySyntaxError, loadPolicyOverrides, parseCheckString, parsePolicyText } from '../../src/http/policy.ts';
import { PumiceError } from '../../src/errors.ts';
import type { AuthContext } from '../../src/http/router.ts';

function auth(projectId: string, roles: string[], userId = 'u1'): AuthContext {
  return {
    tokenId: 't', userId, userName: 'n', userDomainId: 'default', projectId, projectName: 'p', projectDomainId: 'default', domainId: null,
    roles, isAdmin: roles.includes('admin'), expiresAt: '', issuedAt: '', methods: ['password'], auditId: 'a',
  };
}

const defaults = {
  admin_api: 'role:admin',
  owner: 'project_id:%(project_id)s',
  admin_or_owner: 'rule:admin_api or rule:owner',
  member_owner: 'role:member and project_id:%(project_id)s',
  reader_or_member: '(role:reader or role:member) and project_id:%(project_id)s',
  not_reader: 'not role:reader',
  anyone: '@',
  nobody: '!',
  empty: '',
  is_admin_flag: 'is_admin:True',
  same_user: 'user_id:%(user_id)s',
  constant: "'public':%(visibility)s",
  dangling: 'rule:does_not_exist',
  precedence: 'role:a or role:b and role:c',
};

test('checks: roles, owner targets, rule references, @ ! and empty', () => {
  const table = new PolicyTable(defaults);
  const member = auth('p1', ['member', 'reader']);
  const admin = auth('p2', ['admin', 'member', 'reader']);
  const reader = auth('p1', ['reader']);
  assert.ok(table.check('admin_api', admin, {}));
  assert.ok(!table.check('admin_api', member, {}));
  assert.ok(table.check('owner', member, { project_id: 'p1' }));
  assert.ok(!table.check('owner', member, { project_id: 'p2' }));
  assert.ok(!table.check('owner', member, { project_id: null }), 'a null target attribute never matches');
  assert.ok(!table.check('owner', member, {}), 'a missing target attribute never matches');
  assert.ok(table.check('admin_or_owner', admin, { project_id: 'p1' }));
  assert.ok(table.check('member_owner', member, { project_id: 'p1' }));
  assert.ok(!table.check('member_owner', reader, { project_id: 'p1' }));
  assert.ok(table.check('reader_or_member', reader, { project_id: 'p1' }));
  assert.ok(!table.check('reader_or_member', reader, { project_id: 'p9' }));
  assert.ok(!table.check('not_reader', reader, {}));
  assert.ok(table.check('not_reader', auth('p1', ['member']), {}));
  assert.ok(table.check('anyone', null, {}));
  assert.ok(!table.check('nobody', admin, {}));
  assert.ok(table.check('empty', null, {}));
  assert.ok(table.check('is_admin_flag', admin, {}));
  assert.ok(!table.check('is_admin_flag', member, {}));
  assert.ok(table.check('same_user', member, { user_id: 'u1' }));
  assert.ok(!table.check('same_user', member, { user_id: 'u2' }));
  assert.ok(table.check('constant', member, { visibility: 'public' }));
  assert.ok(!table.check('constant', member, { visibility: 'private' }));
  assert.ok(!table.check('dangling', admin, {}), 'a reference to an undefined rule is false, as oslo.policy');
  // and binds tighter than or: a or (b and c)
  assert.ok(table.check('precedence', auth('p', ['a']), {}));
  assert.ok(!table.check('precedence', auth('p', ['b']), {}));
  assert.ok(table.check('precedence', auth('p', ['b', 'c']), {}));
  assert.ok(table.check('@', null, {}));
  assert.ok(!table.check('!', admin, {}));
  assert.throws(() => table.check('no_such_rule', admin, {}), /not in the policy table/);
});

test('enforce throws 403 with Nova\'s text', () => {
  const table = new PolicyTable(defaults);
  assert.throws(() => table.enforce('admin_api', auth('p1', ['member']), {}), (error: unknown) => {
    assert.ok(error instanceof PumiceError);
    assert.equal(error.status, 403);
    assert.match(error.message, /Policy doesn't allow admin_api to be performed/);
    return true;
  });
  table.enforce('admin_api', auth('p1', ['admin']), {});
});

test('overrides replace and add rules; bad check strings are refused naming the rule', () => {
  const table = new PolicyTable(defaults, { admin_api: 'role:operator', extra: 'rule:admin_api' });
  assert.ok(table.check('admin_or_owner', auth('p', ['operator']), { project_id: 'x' }));
  assert.ok(!table.check('admin_api', auth('p', ['admin']), {}));
  assert.ok(table.check('extra', auth('p', ['operator']), {}));
  assert.deepEqual(Object.fromEntries(table.entries())['admin_api'], 'role:operator');
  for (const bad of ['role:admin or', '(role:admin', 'role:admin)', 'admin', 'and role:x']) {
    assert.throws(() => new PolicyTable({}, { broken: bad }), (error: unknown) => error instanceof PolicySyntaxError && /policy file rule 'broken'/.test(error.message), bad);
  }
  assert.throws(() => parseCheckString('role:a role:b'), /unexpected/);
});

test('policy files: YAML as oslopolicy-sample-generator writes it, and JSON', () => {
  const dir = mkdtempSync(join(tmpdir(), 'policy-'));
  const yamlPath = join(dir, 'policy.yaml');
  writeFileSync(yamlPath, [
    '# Default rule for most non-Admin APIs.',
    '#"default": "role:admin or project_id:%(project_id)s"',
    '---',
    '"deactivate": "role:admin"',
    "'publicize_image': 'role:admin or role:image_publisher'",
    'get_images: role:reader  # comment',
    '"empty_rule": ""',
    '',
  ].join('\n'));
  assert.deepEqual(loadPolicyOverrides(yamlPath), {
    deactivate: 'role:admin', publicize_image: 'role:admin or role:image_publisher', get_images: 'role:reader', empty_rule: '',
  });
  const jsonPath = join(dir, 'policy.json');
  writeFileSync(jsonPath, JSON.stringify({ deactivate: 'role:admin', legacy: [] }));
  assert.deepEqual(loadPolicyOverrides(jsonPath), { deactivate: 'role:admin', legacy: '' });
  assert.deepEqual(loadPolicyOverrides(null), {});
  assert.throws(() => loadPolicyOverrides(join(dir, 'missing.yaml')), /cannot read/);
  assert.throws(() => parsePolicyText('a:\n  nested: "x"\n', 'p.yaml'), /p.yaml:2/);
  assert.throws(() => parsePolicyText('{"a": 1}', 'p.json'), /rule 'a' must be a string/);
});
