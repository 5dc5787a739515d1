/**
 * The Identity API's policy table: Keystone's rule names (`identity:*` and its
 * base rules `admin_required`, `owner`, `token_subject`, ...) so a Keystone
 * `policy.yaml` override reads the same here. An operator overrides any rule
 * in `[oslo_policy] policy_file`, e.g. `"identity:list_users": "role:admin or role:auditor"`.
 *
 * Pumice has no system scope: the admin role on any project or domain is the
 * cloud administrator, and what Keystone grants to `role:reader and
 * system_scope:all` (reading domains, roles, services, endpoints) is granted
 * to a reader of any scope here. An unscoped token holds no role, so those
 * rules refuse it. Where Pumice lets a user see their own things (their user,
 * their projects, their grants, their own role assignments), the rule says so
 * with `user_id:%(target.user.id)s`.
 *
 * Targets, flattened as Keystone flattens them: `target.user.id` (the user the
 * path or the `user.id` filter names), `target.project.id` and
 * `target.project.domain_id` (the project the path names),
 * `target.project.assignee_id` (the caller's user id when the caller holds a
 * role on that project, else absent), `target.token.user_id` (the user of the
 * X-Subject-Token, absent when that token is not valid).
 */
import { PolicyTable, type PolicyTarget } from '../http/policy.ts';
import type { AuthContext } from '../http/router.ts';

const adminOrReader = 'rule:admin_required or role:reader';
const adminOrSelf = 'rule:admin_required or user_id:%(target.user.id)s';

/** Rule name -> check string, in oslo.policy syntax. */
export const identityPolicyDefaults: Record<string, string> = {
  admin_required: 'role:admin or is_admin:1',
  service_role: 'role:service',
  service_or_admin: 'rule:admin_required or rule:service_role',
  owner: 'user_id:%(user_id)s',
  admin_or_owner: 'rule:admin_required or rule:owner',
  token_subject: 'user_id:%(target.token.user_id)s',
  admin_or_token_subject: 'rule:admin_required or rule:token_subject',
  service_admin_or_token_subject: 'rule:service_or_admin or rule:token_subject',

  // tokens and the caller's own scopes
  'identity:validate_token': 'rule:service_admin_or_token_subject',
  'identity:check_token': 'rule:admin_or_token_subject',
  'identity:revoke_token': 'rule:admin_or_token_subject',
  'identity:get_auth_catalog': '',
  'identity:get_auth_projects': '',
  'identity:get_auth_domains': '',
  'identity:get_auth_system': '',

  // domains
  'identity:get_domain': adminOrReader,
  'identity:list_domains': adminOrReader,
  'identity:create_domain': 'rule:admin_required',
  'identity:update_domain': 'rule:admin_required',
  'identity:delete_domain': 'rule:admin_required',

  // projects: anyone may list, and sees only the projects they hold a role on unless `admin_required` allows all
  'identity:get_project': 'rule:admin_required or project_id:%(target.project.id)s or user_id:%(target.project.assignee_id)s',
  'identity:list_projects': '',
  'identity:list_user_projects': adminOrSelf,
  'identity:create_project': 'rule:admin_required',
  'identity:update_project': 'rule:admin_required',
  'identity:delete_project': 'rule:admin_required',

  // users and groups
  'identity:get_user': adminOrSelf,
  'identity:list_users': 'rule:admin_required',
  'identity:create_user': 'rule:admin_required',
  'identity:update_user': 'rule:admin_required',
  'identity:delete_user': 'rule:admin_required',
  // Keystone leaves this call unprotected (the original password is the proof); Pumice asks for the user's own token too.
  'identity:change_password': 'user_id:%(target.user.id)s',
  'identity:list_groups': 'rule:admin_required',
  'identity:list_groups_for_user': adminOrSelf,
  'identity:get_group': 'rule:admin_required',
  'identity:create_group': 'rule:admin_required',
  'identity:update_group': 'rule:admin_required',
  'identity:delete_group': 'rule:admin_required',
  'identity:list_users_in_group': 'rule:admin_required',
  'identity:add_user_to_group': 'rule:admin_required',
  'identity:remove_user_from_group': 'rule:admin_required',
  'identity:check_user_in_group': 'rule:admin_required',

  // credentials: an owner's own, or any for administrators (a list is filtered to the caller's own)
  'identity:get_credential': 'rule:admin_required or user_id:%(target.credential.user_id)s',
  'identity:list_credentials': '',
  'identity:create_credential': 'rule:admin_required or user_id:%(target.credential.user_id)s',
  'identity:update_credential': 'rule:admin_required or user_id:%(target.credential.user_id)s',
  'identity:delete_credential': 'rule:admin_required or user_id:%(target.credential.user_id)s',

  // application credentials: made by their user only (the roles come from the user's token); administrators read and delete
  'identity:get_application_credential': adminOrSelf,
  'identity:list_application_credentials': adminOrSelf,
  'identity:create_application_credential': 'user_id:%(target.user.id)s',
  'identity:delete_application_credential': adminOrSelf,
  'identity:get_access_rule': adminOrSelf,
  'identity:list_access_rules': adminOrSelf,
  'identity:delete_access_rule': adminOrSelf,

  // OS-TRUST: anyone creates a trust as its trustor (the store checks the trustor is the caller); the
  // trustor and trustee read it, the trustor deletes it. list_all_trusts (Pumice's): an unfiltered list of everyone's.
  'identity:create_trust': '',
  'identity:list_trusts': '',
  'identity:list_all_trusts': 'rule:admin_required',
  'identity:get_trust': 'rule:admin_required or user_id:%(target.trust.trustor_user_id)s or user_id:%(target.trust.trustee_user_id)s',
  'identity:delete_trust': 'rule:admin_required or user_id:%(target.trust.trustor_user_id)s',
  'identity:list_roles_for_trust': 'rule:admin_required or user_id:%(target.trust.trustor_user_id)s or user_id:%(target.trust.trustee_user_id)s',
  'identity:get_role_for_trust': 'rule:admin_required or user_id:%(target.trust.trustor_user_id)s or user_id:%(target.trust.trustee_user_id)s',

  // roles, grants and assignments
  'identity:get_role': adminOrReader,
  'identity:list_roles': adminOrReader,
  'identity:create_role': 'rule:admin_required',
  'identity:update_role': 'rule:admin_required',
  'identity:delete_role': 'rule:admin_required',
  'identity:list_grants': adminOrSelf,
  'identity:check_grant': 'rule:admin_required',
  'identity:create_grant': 'rule:admin_required',
  'identity:revoke_grant': 'rule:admin_required',
  // A user may list their own assignments (the `user.id` filter set to themself).
  'identity:list_role_assignments': adminOrSelf,
  'identity:list_system_grants_for_user': adminOrSelf,
  'identity:check_system_grant_for_user': 'rule:admin_required',
  'identity:create_system_grant_for_user': 'rule:admin_required',
  'identity:revoke_system_grant_for_user': 'rule:admin_required',

  // catalog
  'identity:get_region': '',
  'identity:list_regions': '',
  'identity:create_region': 'rule:admin_required',
  'identity:update_region': 'rule:admin_required',
  'identity:delete_region': 'rule:admin_required',
  'identity:get_service': adminOrReader,
  'identity:list_services': adminOrReader,
  'identity:create_service': 'rule:admin_required',
  'identity:update_service': 'rule:admin_required',
  'identity:delete_service': 'rule:admin_required',
  'identity:get_endpoint': adminOrReader,
  'identity:list_endpoints': adminOrReader,
  'identity:create_endpoint': 'rule:admin_required',
  'identity:update_endpoint': 'rule:admin_required',
  'identity:delete_endpoint': 'rule:admin_required',
};

export function identityPolicy(overrides: Record<string, string> = {}): PolicyTable {
  return new PolicyTable(identityPolicyDefaults, overrides);
}

/** The target of a rule that names no resource: the caller's own user, project and domain. */
export function callerTarget(auth: AuthContext | null): PolicyTarget {
  return { user_id: auth?.userId ?? null, project_id: auth?.projectId ?? null, domain_id: auth?.domainId ?? null };
}
