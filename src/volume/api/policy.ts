/**
 * The Block Storage policy table: Cinder's rule names with its 2023.x
 * project-scoped defaults (reader reads, member writes in its own project,
 * admin for the operator side). An operator overrides any rule in
 * `[oslo_policy] policy_file` with the same names. The route's rule is checked
 * with the caller's own project before the handler; the volume service then
 * finds the resource within the caller's project (another project's is a 404).
 */
export const volumePolicyDefaults: Record<string, string> = {
  admin_api: 'role:admin',
  context_is_admin: 'role:admin',
  project_member_api: 'role:member and project_id:%(project_id)s',
  project_reader_api: 'role:reader and project_id:%(project_id)s',
  project_member_or_admin: 'rule:project_member_api or rule:admin_api',
  project_reader_or_admin: 'rule:project_reader_api or rule:admin_api',

  // volumes
  'volume:create': 'rule:project_member_or_admin',
  'volume:create_from_image': 'rule:project_member_or_admin',
  'volume:get': 'rule:project_reader_or_admin',
  'volume:get_all': 'rule:project_reader_or_admin',
  'volume:get_volume_summary': 'rule:project_reader_or_admin',
  'volume:update': 'rule:project_member_or_admin',
  'volume:delete': 'rule:project_member_or_admin',
  'volume:force_delete': 'rule:admin_api',
  'volume:multiattach': 'rule:project_member_or_admin',
  'volume_extension:volume_host_attribute': 'rule:admin_api',
  'volume_extension:volume_tenant_attribute': 'rule:project_reader_or_admin',
  'volume_extension:volume_mig_status_attribute': 'rule:admin_api',
  'volume_extension:volume_image_metadata:show': 'rule:project_reader_or_admin',
  'volume_extension:volume_image_metadata:set': 'rule:project_member_or_admin',
  'volume_extension:volume_image_metadata:remove': 'rule:project_member_or_admin',

  // volume actions
  'volume:extend': 'rule:project_member_or_admin',
  'volume:extend_attached_volume': 'rule:project_member_or_admin',
  'volume:revert_to_snapshot': 'rule:project_member_or_admin',
  'volume:update_readonly_flag': 'rule:project_member_or_admin',
  'volume_extension:volume_actions:upload_image': 'rule:project_member_or_admin',
  'volume_extension:volume_actions:upload_public': 'rule:admin_api',
  'volume_extension:volume_actions:attach': 'rule:project_member_or_admin',
  'volume_extension:volume_actions:detach': 'rule:project_member_or_admin',
  'volume_extension:volume_actions:reserve': 'rule:project_member_or_admin',
  'volume_extension:volume_actions:unreserve': 'rule:project_member_or_admin',
  'volume_extension:volume_actions:begin_detaching': 'rule:project_member_or_admin',
  'volume_extension:volume_actions:roll_detaching': 'rule:project_member_or_admin',
  'volume_extension:volume_actions:initialize_connection': 'rule:project_member_or_admin',
  'volume_extension:volume_actions:terminate_connection': 'rule:project_member_or_admin',
  'volume_extension:volume_admin_actions:reset_status': 'rule:admin_api',
  'volume_extension:volume_admin_actions:force_delete': 'rule:admin_api',
  'volume_extension:volume_admin_actions:force_detach': 'rule:admin_api',
  'volume:set_bootable': 'rule:project_member_or_admin',
  'volume:retype': 'rule:project_member_or_admin',
  'volume_extension:volume_admin_actions:migrate_volume': 'rule:admin_api',
  'volume:reimage': 'rule:project_member_or_admin',
  'volume:reimage_reserved': 'rule:project_member_or_admin',

  // volume metadata
  'volume:get_volume_metadata': 'rule:project_reader_or_admin',
  'volume:create_volume_metadata': 'rule:project_member_or_admin',
  'volume:update_volume_metadata': 'rule:project_member_or_admin',
  'volume:delete_volume_metadata': 'rule:project_member_or_admin',

  // snapshots
  'volume:get_snapshot': 'rule:project_reader_or_admin',
  'volume:get_all_snapshots': 'rule:project_reader_or_admin',
  'volume:create_snapshot': 'rule:project_member_or_admin',
  'volume:update_snapshot': 'rule:project_member_or_admin',
  'volume:delete_snapshot': 'rule:project_member_or_admin',
  'volume_extension:extended_snapshot_attributes': 'rule:project_reader_or_admin',
  'volume_extension:snapshot_admin_actions:reset_status': 'rule:admin_api',
  'volume_extension:snapshot_admin_actions:force_delete': 'rule:admin_api',
  'volume:get_snapshot_metadata': 'rule:project_reader_or_admin',
  'volume:update_snapshot_metadata': 'rule:project_member_or_admin',
  'volume:delete_snapshot_metadata': 'rule:project_member_or_admin',

  // volume types, extra specs, access
  'volume_extension:type_get': 'rule:project_reader_or_admin',
  'volume_extension:type_get_all': 'rule:project_reader_or_admin',
  'volume_extension:type_create': 'rule:admin_api',
  'volume_extension:type_update': 'rule:admin_api',
  'volume_extension:type_delete': 'rule:admin_api',
  'volume_extension:access_types_extra_specs': 'rule:project_reader_or_admin',
  'volume_extension:access_types_qos_specs_id': 'rule:admin_api',
  'volume_extension:types_extra_specs:index': 'rule:admin_api',
  'volume_extension:types_extra_specs:show': 'rule:admin_api',
  'volume_extension:types_extra_specs:create': 'rule:admin_api',
  'volume_extension:types_extra_specs:update': 'rule:admin_api',
  'volume_extension:types_extra_specs:delete': 'rule:admin_api',
  'volume_extension:volume_type_access': 'rule:project_reader_or_admin',
  'volume_extension:volume_type_access:get_all_for_type': 'rule:admin_api',
  'volume_extension:volume_type_access:addProjectAccess': 'rule:admin_api',
  'volume_extension:volume_type_access:removeProjectAccess': 'rule:admin_api',

  // quotas and limits
  'volume_extension:quotas:show': 'rule:project_reader_or_admin',
  'volume_extension:quotas:update': 'rule:admin_api',
  'volume_extension:quotas:delete': 'rule:admin_api',
  'limits_extension:used_limits': 'rule:project_reader_or_admin',

  // operator side
  'volume_extension:services:index': 'rule:admin_api',
  'volume_extension:services:update': 'rule:admin_api',
  'volume_extension:hosts': 'rule:admin_api',
  'workers:cleanup': 'rule:admin_api',
  'scheduler_extension:scheduler_stats:get_pools': 'rule:admin_api',
  'volume_extension:availability_zone_list': '@',

  // attachments (3.27+); Cinder has no rule for list and show, Pumice names them
  'volume:attachment_create': 'rule:project_member_or_admin',
  'volume:attachment_update': 'rule:project_member_or_admin',
  'volume:attachment_complete': 'rule:project_member_or_admin',
  'volume:attachment_delete': 'rule:project_member_or_admin',
  'volume:attachment_get_all': 'rule:project_reader_or_admin',
  'volume:attachment_get': 'rule:project_reader_or_admin',

  // default types (3.62), capabilities
  'volume_extension:default_set_or_update': 'rule:admin_api',
  'volume_extension:default_get': 'rule:project_reader_or_admin',
  'volume_extension:default_get_all': 'rule:admin_api',
  'volume_extension:default_unset': 'rule:admin_api',
  'volume_extension:capabilities': 'rule:admin_api',
  // Cinder guards resource_filters with no rule: any token may read it.
  'volume_extension:resource_filters': '@',

  // manage / unmanage
  'volume_extension:volume_manage': 'rule:admin_api',
  'volume_extension:volume_unmanage': 'rule:admin_api',
  'volume_extension:list_manageable': 'rule:admin_api',
  'snapshot_extension:snapshot_manage': 'rule:admin_api',
  'snapshot_extension:snapshot_unmanage': 'rule:admin_api',
  'snapshot_extension:list_manageable': 'rule:admin_api',

  // QoS specs
  'volume_extension:qos_specs_manage:get_all': 'rule:admin_api',
  'volume_extension:qos_specs_manage:get': 'rule:admin_api',
  'volume_extension:qos_specs_manage:create': 'rule:admin_api',
  'volume_extension:qos_specs_manage:update': 'rule:admin_api',
  'volume_extension:qos_specs_manage:delete': 'rule:admin_api',

  // volume transfers
  'volume:get_all_transfers': 'rule:project_reader_or_admin',
  'volume:get_transfer': 'rule:project_reader_or_admin',
  'volume:create_transfer': 'rule:project_member_or_admin',
  'volume:accept_transfer': 'rule:project_member_or_admin',
  'volume:delete_transfer': 'rule:project_member_or_admin',

  // user messages
  'message:get_all': 'rule:project_reader_or_admin',
  'message:get': 'rule:project_reader_or_admin',
  'message:delete': 'rule:project_member_or_admin',
};
