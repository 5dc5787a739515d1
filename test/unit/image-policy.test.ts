import { test } from 'node:test';
import assert from 'node:assert/strict';
import { imagePolicy, imagePolicyDefaults, ownProjectTarget } from '../../src/image/policy.ts';
import type { AuthContext } from '../../src/http/router.ts';

/** Roles as Keystone puts them in a token: admin implies member implies reader. */
function auth(projectId: string, role: 'admin' | 'member' | 'reader'): AuthContext {
  const roles = role === 'admin' ? ['admin', 'member', 'reader'] : role === 'member' ? ['member', 'reader'] : ['reader'];
  return {
    tokenId: 't', userId: 'u', userName: 'n', userDomainId: 'default', projectId, projectName: 'p', projectDomainId: 'default', domainId: null,
    roles, isAdmin: role === 'admin', expiresAt: '', issuedAt: '', methods: ['password'], auditId: 'a',
  };
}

const image = (owner: string, visibility: string, memberOf: string | null = null) => ({ project_id: owner, owner, visibility, member_id: memberOf });

test("Glance's Zed defaults: owner's members write, readers read, other projects only what is shared with them", () => {
  const policy = imagePolicy();
  const own = image('A', 'private');
  assert.ok(policy.check('deactivate', auth('A', 'member'), own), "a member of the owner's project deactivates");
  assert.ok(policy.check('reactivate', auth('A', 'member'), own));
  assert.ok(!policy.check('deactivate', auth('A', 'reader'), own), 'a reader does not');
  assert.ok(!policy.check('deactivate', auth('B', 'member'), own), 'another project does not');
  assert.ok(policy.check('deactivate', auth('B', 'admin'), own), 'an admin of any project does');
  assert.ok(policy.check('get_image', auth('A', 'reader'), own));
  assert.ok(!policy.check('get_image', auth('B', 'reader'), own));
  assert.ok(policy.check('get_image', auth('B', 'reader'), image('A', 'public')));
  assert.ok(policy.check('get_image', auth('B', 'reader'), image('A', 'community')));
  assert.ok(!policy.check('download_image', auth('A', 'reader'), own), 'downloading needs the member role');
  assert.ok(policy.check('download_image', auth('B', 'member'), image('A', 'shared', 'B')));
  assert.ok(!policy.check('publicize_image', auth('A', 'member'), own));
  assert.ok(policy.check('communitize_image', auth('A', 'member'), own));
  assert.ok(policy.check('add_image', auth('A', 'member'), { project_id: 'A', owner: 'A' }));
  assert.ok(!policy.check('add_image', auth('A', 'member'), { project_id: 'A', owner: 'B' }), 'only admins create images for another project');
  assert.ok(policy.check('add_image', auth('A', 'admin'), { project_id: 'A', owner: 'B' }));
  assert.ok(policy.check('modify_member', auth('B', 'member'), { ...image('A', 'shared'), member_id: 'B' }), 'the member accepts for itself');
  assert.ok(!policy.check('modify_member', auth('A', 'member'), { ...image('A', 'shared'), member_id: 'B' }), 'the owner does not accept for it');
  assert.ok(!policy.check('modify_member', auth('B', 'reader'), { ...image('A', 'shared'), member_id: 'B' }), "a reader of the member project cannot accept for it (issue 12)");
  assert.ok(policy.check('get_members', auth('B', 'reader'), image('A', 'shared', 'B')));
  assert.ok(!policy.check('get_members', auth('C', 'reader'), image('A', 'shared')));
  assert.ok(policy.check('context_is_admin', auth('A', 'admin'), {}));
  assert.ok(!policy.check('context_is_admin', auth('A', 'member'), {}));
});

test('route-level checks with the own-project target refuse by role only', () => {
  const policy = imagePolicy();
  const target = ownProjectTarget('A');
  for (const rule of ['add_image', 'modify_image', 'upload_image', 'deactivate', 'download_image', 'add_member', 'modify_member']) {
    assert.ok(policy.check(rule, auth('A', 'member'), target), `${rule} for a member`);
    assert.ok(!policy.check(rule, auth('A', 'reader'), target), `${rule} refused to a reader`);
  }
  for (const rule of ['get_image', 'get_images', 'get_members', 'get_member', 'get_metadef_namespaces']) {
    assert.ok(policy.check(rule, auth('A', 'reader'), { ...target, visibility: 'public' }), `${rule} for a reader`);
  }
  assert.ok(!policy.check('publicize_image', auth('A', 'member'), target));
  assert.ok(!policy.check('add_metadef_namespace', auth('A', 'member'), target));
});

test('every default parses, and an override replaces one rule', () => {
  assert.ok(Object.keys(imagePolicyDefaults).length > 40);
  const policy = imagePolicy({ deactivate: 'role:admin' });
  assert.ok(!policy.check('deactivate', auth('A', 'member'), image('A', 'private')));
  assert.ok(policy.check('reactivate', auth('A', 'member'), image('A', 'private')));
});
