/**
 * The Image API's policy table: Glance's rule names with Glance 25 (Zed)
 * defaults (the "new defaults" with the reader/member/admin personas). An
 * operator overrides any rule in `[oslo_policy] policy_file` with the same
 * names as in glance's policy.yaml, e.g. `"publicize_image": "role:admin or role:image_publisher"`.
 *
 * Targets, as Glance builds them for an image: `project_id` and `owner` are
 * the image's owner, `visibility` its visibility, and `member_id` the
 * caller's project when it is a member of the image (else absent). For
 * member routes `member_id` is the member the request names.
 */
import { PolicyTable, type PolicyTarget } from '../http/policy.ts';

const projectMember = 'role:member and project_id:%(project_id)s';
const projectReader = 'role:reader and project_id:%(project_id)s';
const imageMember = 'project_id:%(member_id)s';
const visibleToAll = `"community":%(visibility)s or "public":%(visibility)s or "shared":%(visibility)s`;

const adminOrProjectMember = `role:admin or (${projectMember})`;
const adminOrProjectReader = `role:admin or (${projectReader})`;
const readNamespace = `role:admin or (role:reader and (project_id:%(project_id)s or "public":%(visibility)s))`;

/** Rule name -> check string, in oslo.policy syntax. */
export const imagePolicyDefaults: Record<string, string> = {
  default: '',
  context_is_admin: 'role:admin',

  add_image: `role:admin or (${projectMember} and project_id:%(owner)s)`,
  delete_image: adminOrProjectMember,
  get_image: `role:admin or (role:reader and (project_id:%(project_id)s or ${imageMember} or ${visibleToAll}))`,
  get_images: adminOrProjectReader,
  modify_image: adminOrProjectMember,
  publicize_image: 'role:admin',
  communitize_image: adminOrProjectMember,
  download_image: `role:admin or (role:member and (project_id:%(project_id)s or ${imageMember} or ${visibleToAll}))`,
  upload_image: adminOrProjectMember,
  delete_image_location: 'role:admin',
  get_image_location: adminOrProjectReader,
  set_image_location: adminOrProjectMember,

  add_member: adminOrProjectMember,
  delete_member: adminOrProjectMember,
  get_member: `role:admin or (role:reader and (project_id:%(project_id)s or ${imageMember}))`,
  get_members: `role:admin or (role:reader and (project_id:%(project_id)s or ${imageMember}))`,
  modify_member: `role:admin or (role:member and ${imageMember})`,

  deactivate: adminOrProjectMember,
  reactivate: adminOrProjectMember,
  copy_image: 'role:admin',
  // Glance's tasks API is for operators (tasks_api_access); an image's own tasks go by get_image.
  tasks_api_access: 'role:admin',
  get_task: 'rule:tasks_api_access',
  get_tasks: 'rule:tasks_api_access',
  add_task: 'rule:tasks_api_access',
  manage_image_cache: 'role:admin',
  // GET /v2/info/stores/detail (Image API 2.15): store types and pools are for operators.
  stores_info_detail: 'role:admin',

  // Metadata definitions catalog: readers see public namespaces and their project's; admins change it.
  metadef_admin: 'role:admin',
  get_metadef_namespace: readNamespace,
  get_metadef_namespaces: readNamespace,
  get_metadef_object: readNamespace,
  get_metadef_objects: readNamespace,
  get_metadef_property: readNamespace,
  get_metadef_properties: readNamespace,
  get_metadef_tag: readNamespace,
  get_metadef_tags: readNamespace,
  get_metadef_resource_type: readNamespace,
  list_metadef_resource_types: readNamespace,
  add_metadef_namespace: 'rule:metadef_admin',
  modify_metadef_namespace: 'rule:metadef_admin',
  delete_metadef_namespace: 'rule:metadef_admin',
  add_metadef_object: 'rule:metadef_admin',
  modify_metadef_object: 'rule:metadef_admin',
  delete_metadef_object: 'rule:metadef_admin',
  add_metadef_property: 'rule:metadef_admin',
  modify_metadef_property: 'rule:metadef_admin',
  remove_metadef_property: 'rule:metadef_admin',
  add_metadef_tag: 'rule:metadef_admin',
  add_metadef_tags: 'rule:metadef_admin',
  modify_metadef_tag: 'rule:metadef_admin',
  delete_metadef_tag: 'rule:metadef_admin',
  delete_metadef_tags: 'rule:metadef_admin',
  add_metadef_resource_type_association: 'rule:metadef_admin',
  remove_metadef_resource_type_association: 'rule:metadef_admin',

};

export function imagePolicy(overrides: Record<string, string> = {}): PolicyTable {
  return new PolicyTable(imagePolicyDefaults, overrides);
}

/**
 * The target a route-level check sees before the image is known: the caller's
 * own project in every role, so only the role part of a rule can refuse
 * (a reader uploading, a member publicizing). The handler checks again with
 * the image's real target.
 */
export function ownProjectTarget(projectId: string | null): PolicyTarget {
  return { project_id: projectId, owner: projectId, member_id: projectId };
}
