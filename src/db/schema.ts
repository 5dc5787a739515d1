/**
 * Schema migrations, applied in order at start. Never edit a released
 * migration; add a new one. Timestamps are ISO-8601 UTC strings.
 */
export const migrations: { version: number; sql: string }[] = [
  {
    version: 1,
    sql: `
CREATE TABLE domains (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL DEFAULT '',
  enabled INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE projects (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, domain_id TEXT NOT NULL REFERENCES domains(id),
  description TEXT NOT NULL DEFAULT '', enabled INTEGER NOT NULL DEFAULT 1,
  parent_id TEXT, tags TEXT NOT NULL DEFAULT '[]', options TEXT NOT NULL DEFAULT '{}',
  UNIQUE (domain_id, name)
);
CREATE TABLE users (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, domain_id TEXT NOT NULL REFERENCES domains(id),
  password_hash TEXT, enabled INTEGER NOT NULL DEFAULT 1, default_project_id TEXT,
  description TEXT, email TEXT, extra TEXT NOT NULL DEFAULT '{}',
  password_changed_at TEXT,
  UNIQUE (domain_id, name)
);
CREATE TABLE roles (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT, domain_id TEXT
);
CREATE TABLE role_assignments (
  actor_id TEXT NOT NULL, target_id TEXT NOT NULL, target_type TEXT NOT NULL CHECK (target_type IN ('project','domain')),
  role_id TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
  PRIMARY KEY (actor_id, target_id, role_id)
);
CREATE INDEX role_assignments_target ON role_assignments(target_id);
CREATE INDEX role_assignments_role ON role_assignments(role_id);
CREATE TABLE tokens (
  id TEXT PRIMARY KEY, user_id TEXT NOT NULL, project_id TEXT, domain_id TEXT,
  methods TEXT NOT NULL, audit_id TEXT NOT NULL, audit_chain_id TEXT,
  issued_at TEXT NOT NULL, expires_at TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tokens_expires ON tokens(expires_at);
CREATE INDEX tokens_user ON tokens(user_id);
CREATE TABLE regions (
  id TEXT PRIMARY KEY, description TEXT NOT NULL DEFAULT '', parent_region_id TEXT
);
CREATE TABLE catalog_services (
  id TEXT PRIMARY KEY, type TEXT NOT NULL, name TEXT NOT NULL DEFAULT '', description TEXT NOT NULL DEFAULT '',
  enabled INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE catalog_endpoints (
  id TEXT PRIMARY KEY, service_id TEXT NOT NULL REFERENCES catalog_services(id) ON DELETE CASCADE,
  interface TEXT NOT NULL CHECK (interface IN ('public','internal','admin')),
  region_id TEXT, url TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE volume_types (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT, is_public INTEGER NOT NULL DEFAULT 1,
  created_at TEXT NOT NULL, updated_at TEXT
);
CREATE TABLE volume_type_extra_specs (
  volume_type_id TEXT NOT NULL REFERENCES volume_types(id) ON DELETE CASCADE,
  key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (volume_type_id, key)
);
CREATE TABLE volume_type_projects (
  volume_type_id TEXT NOT NULL REFERENCES volume_types(id) ON DELETE CASCADE,
  project_id TEXT NOT NULL, PRIMARY KEY (volume_type_id, project_id)
);
CREATE TABLE volumes (
  id TEXT PRIMARY KEY, project_id TEXT NOT NULL, user_id TEXT NOT NULL,
  name TEXT, description TEXT, size_gib INTEGER NOT NULL,
  status TEXT NOT NULL, attach_status TEXT NOT NULL DEFAULT 'detached',
  migration_status TEXT, availability_zone TEXT NOT NULL,
  volume_type_id TEXT REFERENCES volume_types(id),
  host TEXT, backend TEXT, bootable INTEGER NOT NULL DEFAULT 0, read_only INTEGER NOT NULL DEFAULT 0,
  multiattach INTEGER NOT NULL DEFAULT 0,
  source_volid TEXT, snapshot_id TEXT, metadata TEXT NOT NULL DEFAULT '{}',
  status_reason TEXT, previous_status TEXT,
  created_at TEXT NOT NULL, updated_at TEXT, launched_at TEXT
);
CREATE INDEX volumes_project ON volumes(project_id, created_at);
CREATE INDEX volumes_created ON volumes(created_at, id);
CREATE INDEX volumes_status ON volumes(status);
CREATE TABLE volume_attachments (
  id TEXT PRIMARY KEY, volume_id TEXT NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,
  instance_uuid TEXT, attached_host TEXT, mountpoint TEXT, attach_mode TEXT NOT NULL DEFAULT 'rw',
  attach_status TEXT NOT NULL, connector TEXT, attach_time TEXT, detach_time TEXT
);
CREATE INDEX volume_attachments_volume ON volume_attachments(volume_id);
CREATE TABLE snapshots (
  id TEXT PRIMARY KEY, project_id TEXT NOT NULL, user_id TEXT NOT NULL,
  volume_id TEXT NOT NULL, name TEXT, description TEXT, size_gib INTEGER NOT NULL,
  status TEXT NOT NULL, progress TEXT NOT NULL DEFAULT '0%', metadata TEXT NOT NULL DEFAULT '{}',
  status_reason TEXT, created_at TEXT NOT NULL, updated_at TEXT
);
CREATE INDEX snapshots_volume ON snapshots(volume_id);
CREATE INDEX snapshots_project ON snapshots(project_id, created_at);
CREATE TABLE quotas (
  project_id TEXT NOT NULL, resource TEXT NOT NULL, hard_limit INTEGER NOT NULL,
  PRIMARY KEY (project_id, resource)
);
CREATE TABLE tasks (
  id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, resource_id TEXT NOT NULL,
  queue TEXT NOT NULL, payload TEXT NOT NULL DEFAULT '{}',
  state TEXT NOT NULL CHECK (state IN ('queued','running','done','failed')),
  attempts INTEGER NOT NULL DEFAULT 0, claimed_by TEXT, last_error TEXT,
  created_at TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE INDEX tasks_claim ON tasks(state, queue, id);
CREATE INDEX tasks_resource ON tasks(resource_id);
CREATE TABLE services (
  id INTEGER PRIMARY KEY AUTOINCREMENT, binary TEXT NOT NULL, host TEXT NOT NULL, zone TEXT NOT NULL,
  disabled INTEGER NOT NULL DEFAULT 0, disabled_reason TEXT, frozen INTEGER NOT NULL DEFAULT 0,
  heartbeat_at TEXT, state_reason TEXT, created_at TEXT NOT NULL, updated_at TEXT,
  UNIQUE (binary, host)
);
CREATE TABLE messages (
  id TEXT PRIMARY KEY, project_id TEXT NOT NULL, request_id TEXT, resource_type TEXT, resource_uuid TEXT,
  event_id TEXT NOT NULL, message_level TEXT NOT NULL, user_message TEXT NOT NULL,
  created_at TEXT NOT NULL, expires_at TEXT NOT NULL
);
CREATE INDEX messages_project ON messages(project_id, created_at);
`,
  },
  {
    version: 2,
    sql: `
CREATE INDEX volumes_backend_size ON volumes(backend, size_gib);
CREATE INDEX volumes_project_size ON volumes(project_id, size_gib);
CREATE INDEX snapshots_project_size ON snapshots(project_id, size_gib);
CREATE INDEX volumes_project_created ON volumes(project_id, created_at, id);
`,
  },
  {
    version: 3,
    sql: `
CREATE TABLE backups (
  id TEXT PRIMARY KEY, project_id TEXT NOT NULL, user_id TEXT NOT NULL,
  volume_id TEXT NOT NULL, snapshot_id TEXT, name TEXT, description TEXT,
  status TEXT NOT NULL, size_gib INTEGER NOT NULL, object_count INTEGER NOT NULL DEFAULT 0,
  availability_zone TEXT, container TEXT, parent_id TEXT REFERENCES backups(id),
  is_incremental INTEGER NOT NULL DEFAULT 0, fail_reason TEXT, metadata TEXT NOT NULL DEFAULT '{}',
  volume_previous_status TEXT, restore_volume_id TEXT, host TEXT, service TEXT,
  stored_bytes INTEGER NOT NULL DEFAULT 0, progress TEXT,
  data_timestamp TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT
);
CREATE INDEX backups_project_created ON backups(project_id, created_at, id);
CREATE INDEX backups_created ON backups(created_at, id);
CREATE INDEX backups_parent ON backups(parent_id);
CREATE INDEX backups_volume ON backups(volume_id, created_at);
`,
  },
  {
    // Images (Glance v2): tags and properties are JSON columns of the image row;
    // members are rows so a project's shared images are found by index.
    version: 4,
    sql: `
CREATE TABLE images (
  id TEXT PRIMARY KEY, name TEXT, owner TEXT NOT NULL, status TEXT NOT NULL,
  visibility TEXT NOT NULL, protected INTEGER NOT NULL DEFAULT 0, os_hidden INTEGER NOT NULL DEFAULT 0,
  disk_format TEXT, container_format TEXT, min_disk INTEGER NOT NULL DEFAULT 0, min_ram INTEGER NOT NULL DEFAULT 0,
  size INTEGER, virtual_size INTEGER, checksum TEXT, os_hash_algo TEXT, os_hash_value TEXT, store TEXT,
  tags TEXT NOT NULL DEFAULT '[]', properties TEXT NOT NULL DEFAULT '{}',
  created_at TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE INDEX images_owner_created ON images(owner, created_at, id);
CREATE INDEX images_visibility_created ON images(visibility, created_at, id);
CREATE TABLE image_members (
  image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE, member_id TEXT NOT NULL,
  status TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
  PRIMARY KEY (image_id, member_id)
);
CREATE INDEX image_members_member ON image_members(member_id, status);
`,
  },
  {
    // volume_image_metadata (Cinder's volume_glance_metadata): the image a volume was made from, as a JSON object.
    version: 5,
    sql: `ALTER TABLE volumes ADD COLUMN image_metadata TEXT;`,
  },
  {
    // Attachments API (Cinder 3.27+): an attachment row exists from its reservation on, so it
    // records when it was made and the connection info the caller got, without the secrets
    // (secret export names and keys are given once, never stored in clear). attach_mode 'null'
    // means "not chosen yet" (Cinder's marker for 3.54's mode argument).
    version: 6,
    sql: `
ALTER TABLE volume_attachments ADD COLUMN connection_info TEXT;
ALTER TABLE volume_attachments ADD COLUMN created_at TEXT;
ALTER TABLE volume_attachments ADD COLUMN updated_at TEXT;
UPDATE volume_attachments SET created_at = COALESCE(attach_time, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
CREATE INDEX volume_attachments_instance ON volume_attachments(instance_uuid);
`,
  },
  {
    // Task engine v2 (src/tasks/): leases (owner, lease_until), retry backoff (not_before),
    // fencing by os-reset_status, a 'cancelled' state, progress, chains (parent_task_id),
    // retention (finished_at), and operation locks on the resources a task reads and writes.
    version: 7,
    sql: `
CREATE TABLE tasks_v2 (
  id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, resource_id TEXT NOT NULL,
  queue TEXT NOT NULL, payload TEXT NOT NULL DEFAULT '{}',
  state TEXT NOT NULL CHECK (state IN ('queued','running','done','failed','cancelled')),
  attempts INTEGER NOT NULL DEFAULT 0, owner TEXT, lease_until INTEGER, not_before INTEGER NOT NULL DEFAULT 0,
  fenced INTEGER NOT NULL DEFAULT 0, last_error TEXT, progress TEXT, parent_task_id INTEGER,
  created_at TEXT NOT NULL, updated_at TEXT NOT NULL, finished_at TEXT
);
INSERT INTO tasks_v2 (id, kind, resource_id, queue, payload, state, attempts, owner, last_error, created_at, updated_at, finished_at)
  SELECT id, kind, resource_id, queue, payload, state, attempts, claimed_by, last_error, created_at, updated_at,
         CASE WHEN state IN ('done','failed') THEN updated_at END FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_v2 RENAME TO tasks;
CREATE INDEX tasks_claim ON tasks(queue, state, id);
CREATE INDEX tasks_resource ON tasks(resource_id, state);
CREATE INDEX tasks_finished ON tasks(state, finished_at);
CREATE TABLE task_locks (
  task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE, resource_id TEXT NOT NULL,
  mode TEXT NOT NULL CHECK (mode IN ('read','write')), PRIMARY KEY (task_id, resource_id)
);
CREATE INDEX task_locks_resource ON task_locks(resource_id, task_id);
INSERT INTO task_locks (task_id, resource_id, mode) SELECT id, resource_id, 'write' FROM tasks WHERE state IN ('queued','running');
CREATE INDEX messages_expires ON messages(expires_at);
`,
  },
  {
    // Security hardening (issue 12). Tokens are stored by the SHA-256 of their id (the id itself
    // stays only with the client): clear ids of the old layout are dropped, so users log in again.
    // Users carry Keystone's lockout counters. nbd_exports holds the per-connection NBD export
    // secrets (by hash; the TLS-PSK key in clear because the server needs it) so a restart keeps
    // attached volumes reachable; nbd_listener remembers the port chosen when nbd_listen_port = 0.
    version: 8,
    sql: `
DELETE FROM tokens;
ALTER TABLE users ADD COLUMN failed_auth_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN failed_auth_at TEXT;
CREATE TABLE nbd_exports (
  name_hash TEXT PRIMARY KEY, volume_id TEXT NOT NULL, backend TEXT NOT NULL, connection_key TEXT NOT NULL,
  path TEXT NOT NULL, read_only INTEGER NOT NULL, psk_identity TEXT UNIQUE, psk_key TEXT,
  created_at TEXT NOT NULL, UNIQUE (volume_id, connection_key)
);
CREATE TABLE nbd_listener (id INTEGER PRIMARY KEY CHECK (id = 1), port INTEGER NOT NULL);
`,
  },
  {
    // Glance's metadata definitions catalog (issue 11): a namespace is one row with its document
    // (properties, objects, tags, resource type associations) as JSON; resource types by name.
    version: 9,
    sql: `
CREATE TABLE IF NOT EXISTS metadef_namespaces (
  namespace TEXT PRIMARY KEY, owner TEXT, visibility TEXT NOT NULL, protected INTEGER NOT NULL DEFAULT 0,
  document TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metadef_resource_types (name TEXT PRIMARY KEY, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
`,
  },
  {
    // Compute (Nova v2.1 subset): flavors, keypairs, servers with their block device
    // mappings, instance actions, and the resources each compute host reports.
    version: 10,
    sql: `
CREATE TABLE flavors (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, vcpus INTEGER NOT NULL, ram_mib INTEGER NOT NULL,
  root_gib INTEGER NOT NULL, ephemeral_gib INTEGER NOT NULL DEFAULT 0, swap_mib INTEGER NOT NULL DEFAULT 0,
  rxtx_factor REAL NOT NULL DEFAULT 1, is_public INTEGER NOT NULL DEFAULT 1, disabled INTEGER NOT NULL DEFAULT 0,
  description TEXT, created_at TEXT NOT NULL, deleted_at TEXT
);
CREATE TABLE flavor_extra_specs (
  flavor_id TEXT NOT NULL REFERENCES flavors(id) ON DELETE CASCADE, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (flavor_id, key)
);
CREATE TABLE flavor_projects (
  flavor_id TEXT NOT NULL REFERENCES flavors(id) ON DELETE CASCADE, project_id TEXT NOT NULL,
  PRIMARY KEY (flavor_id, project_id)
);
CREATE TABLE keypairs (
  user_id TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL, public_key TEXT NOT NULL,
  fingerprint TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (user_id, name)
);
CREATE TABLE servers (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, project_id TEXT NOT NULL, user_id TEXT NOT NULL,
  flavor_id TEXT NOT NULL, flavor TEXT NOT NULL, image_id TEXT, image_meta TEXT NOT NULL DEFAULT '{}',
  host TEXT, availability_zone TEXT, requested_zone TEXT,
  vm_state TEXT NOT NULL, task_state TEXT, power_state INTEGER NOT NULL DEFAULT 0,
  key_name TEXT, key_data TEXT, metadata TEXT NOT NULL DEFAULT '{}', description TEXT, user_data TEXT,
  config_drive TEXT NOT NULL DEFAULT '', access_ipv4 TEXT NOT NULL DEFAULT '', access_ipv6 TEXT NOT NULL DEFAULT '',
  locked INTEGER NOT NULL DEFAULT 0, locked_reason TEXT, fault TEXT, progress INTEGER NOT NULL DEFAULT 0,
  root_source TEXT NOT NULL, generation INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL, updated_at TEXT, launched_at TEXT, terminated_at TEXT, deleted_at TEXT
);
CREATE INDEX servers_project ON servers(project_id, created_at, id);
CREATE INDEX servers_host ON servers(host, vm_state);
CREATE TABLE block_device_mappings (
  id TEXT PRIMARY KEY, server_id TEXT NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
  source_type TEXT NOT NULL, destination_type TEXT NOT NULL, boot_index INTEGER,
  volume_id TEXT, image_id TEXT, volume_size_gib INTEGER, volume_type TEXT,
  device_name TEXT, tag TEXT, delete_on_termination INTEGER NOT NULL DEFAULT 0,
  attachment_id TEXT, connection_info TEXT, status TEXT NOT NULL DEFAULT 'pending',
  created_at TEXT NOT NULL
);
CREATE INDEX bdm_server ON block_device_mappings(server_id);
CREATE INDEX bdm_volume ON block_device_mappings(volume_id);
CREATE TABLE instance_actions (
  id INTEGER PRIMARY KEY AUTOINCREMENT, server_id TEXT NOT NULL, request_id TEXT NOT NULL, action TEXT NOT NULL,
  project_id TEXT NOT NULL, user_id TEXT NOT NULL, message TEXT, start_time TEXT NOT NULL, updated_at TEXT
);
CREATE INDEX instance_actions_server ON instance_actions(server_id, id);
CREATE TABLE instance_action_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, action_id INTEGER NOT NULL REFERENCES instance_actions(id) ON DELETE CASCADE,
  event TEXT NOT NULL, host TEXT, start_time TEXT NOT NULL, finish_time TEXT, result TEXT, details TEXT
);
CREATE TABLE compute_nodes (
  host TEXT PRIMARY KEY, hypervisor_hostname TEXT NOT NULL, hypervisor_type TEXT NOT NULL,
  hypervisor_version INTEGER NOT NULL, host_ip TEXT NOT NULL, virt_type TEXT NOT NULL, virt_type_reason TEXT NOT NULL,
  vcpus INTEGER NOT NULL, memory_mib INTEGER NOT NULL, local_gib INTEGER NOT NULL,
  disk_source TEXT NOT NULL, disk_total_gib INTEGER NOT NULL, disk_free_gib INTEGER NOT NULL, disk_detail TEXT,
  cpu_info TEXT NOT NULL DEFAULT '{}', report TEXT NOT NULL DEFAULT '{}', updated_at TEXT NOT NULL
);
CREATE TABLE api_listeners (host TEXT PRIMARY KEY, url TEXT NOT NULL, updated_at TEXT NOT NULL);
ALTER TABLE services ADD COLUMN forced_down INTEGER NOT NULL DEFAULT 0;
ALTER TABLE services ADD COLUMN uuid TEXT;
`,
  },
  {
    // Evacuation (issue 13): migration records (os-migrations, type evacuation) that are also the
    // evacuation's journal (fence done, volumes moved, source cleaned), and the Ceph client
    // addresses each guest's RBD disks were opened with, so a fence knows whom to blocklist.
    version: 11,
    sql: `
CREATE TABLE migrations (
  id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT NOT NULL UNIQUE, server_id TEXT NOT NULL,
  project_id TEXT NOT NULL, user_id TEXT NOT NULL, migration_type TEXT NOT NULL,
  source_compute TEXT, dest_compute TEXT, status TEXT NOT NULL,
  fence TEXT, reason TEXT, automatic INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL, updated_at TEXT NOT NULL, source_cleaned_at TEXT
);
CREATE INDEX migrations_server ON migrations(server_id, id);
CREATE INDEX migrations_source ON migrations(source_compute, status);
ALTER TABLE block_device_mappings ADD COLUMN rbd_clients TEXT;
`,
  },
  {
    // Identity (issues 11 and 18): groups with members and role assignments (on projects, domains
    // and the system), users' system role assignments, credentials (blob encrypted at rest with a
    // key file beside the database), application credentials (secret stored hashed), and tokens
    // that carry a system scope or the application credential they were issued from.
    version: 12,
    sql: `
CREATE TABLE identity_groups (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, domain_id TEXT NOT NULL REFERENCES domains(id),
  description TEXT NOT NULL DEFAULT '', UNIQUE (domain_id, name)
);
CREATE TABLE group_members (
  group_id TEXT NOT NULL REFERENCES identity_groups(id) ON DELETE CASCADE,
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members(user_id);
CREATE TABLE group_role_assignments (
  group_id TEXT NOT NULL REFERENCES identity_groups(id) ON DELETE CASCADE, target_id TEXT NOT NULL,
  target_type TEXT NOT NULL CHECK (target_type IN ('project','domain','system')),
  role_id TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
  PRIMARY KEY (group_id, target_id, role_id)
);
CREATE INDEX group_role_assignments_target ON group_role_assignments(target_id);
CREATE TABLE system_role_assignments (
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  role_id TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
  PRIMARY KEY (user_id, role_id)
);
CREATE TABLE credentials (
  id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE, project_id TEXT,
  type TEXT NOT NULL, encrypted_blob TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE INDEX credentials_user ON credentials(user_id);
CREATE TABLE application_credentials (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  project_id TEXT NOT NULL, secret_hash TEXT NOT NULL, description TEXT, expires_at TEXT,
  unrestricted INTEGER NOT NULL DEFAULT 0, roles TEXT NOT NULL, access_rules TEXT NOT NULL DEFAULT '[]',
  created_at TEXT NOT NULL, UNIQUE (user_id, name)
);
ALTER TABLE tokens ADD COLUMN system_scope INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN application_credential_id TEXT;
`,
  },
  {
    // Block Storage (issue 18): volume transfers (the auth key stored as a salted hash, shown once),
    // QoS specs with their type associations, and per-project default volume types (3.62).
    version: 13,
    sql: `
CREATE TABLE volume_transfers (
  id TEXT PRIMARY KEY, volume_id TEXT NOT NULL, name TEXT, source_project_id TEXT NOT NULL,
  destination_project_id TEXT, salt TEXT NOT NULL, crypt_hash TEXT NOT NULL,
  no_snapshots INTEGER NOT NULL DEFAULT 0, accepted INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL, updated_at TEXT, deleted_at TEXT
);
CREATE UNIQUE INDEX volume_transfers_open ON volume_transfers(volume_id) WHERE accepted = 0 AND deleted_at IS NULL;
CREATE TABLE qos_specs (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, consumer TEXT NOT NULL DEFAULT 'back-end',
  specs TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL, updated_at TEXT
);
ALTER TABLE volume_types ADD COLUMN qos_specs_id TEXT REFERENCES qos_specs(id);
CREATE TABLE default_volume_types (
  project_id TEXT PRIMARY KEY, volume_type_id TEXT NOT NULL REFERENCES volume_types(id) ON DELETE CASCADE,
  created_at TEXT NOT NULL, updated_at TEXT
);
`,
  },
  {
    // Block Storage manage/unmanage (issue 18): what a managed volume was called in its backend
    // before it was adopted (an RBD image name, a file), so unmanage gives it back under that name.
    version: 14,
    sql: `
ALTER TABLE volumes ADD COLUMN managed_from TEXT;
`,
  },
  {
    // Image multi-store (issue 18): an image's data may live in several stores (Glance's
    // locations, shown as its `stores` property); images.store stays the one downloads read from.
    // image_tasks are Glance's /v2/tasks records (import tasks: glance-direct, web-download,
    // copy-image), kept apart from the task engine's rows, which are the work itself.
    version: 15,
    sql: `
CREATE TABLE image_locations (
  image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE, store TEXT NOT NULL,
  created_at TEXT NOT NULL, PRIMARY KEY (image_id, store)
);
INSERT INTO image_locations (image_id, store, created_at)
  SELECT id, store, updated_at FROM images WHERE store IS NOT NULL AND status IN ('active', 'deactivated');
CREATE TABLE image_tasks (
  id TEXT PRIMARY KEY, type TEXT NOT NULL, status TEXT NOT NULL, owner TEXT NOT NULL, user_id TEXT,
  image_id TEXT, input TEXT NOT NULL DEFAULT '{}', result TEXT, message TEXT NOT NULL DEFAULT '',
  request_id TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, expires_at TEXT
);
CREATE INDEX image_tasks_image ON image_tasks(image_id, created_at);
CREATE INDEX image_tasks_owner ON image_tasks(owner, created_at);
`,
  },
  {
    // Many hosts (issue 16): a volume service's cluster (Cinder's [DEFAULT] cluster, `cluster@backend`),
    // and its last capacity report (JSON), so a scheduler on another host sees the pool without its driver.
    version: 16,
    sql: `
ALTER TABLE services ADD COLUMN cluster TEXT;
ALTER TABLE services ADD COLUMN capacity_report TEXT;
`,
  },
  {
    // The dashboard's plots (issue 17): samples the API process takes every few seconds, kept a day
    // (src/dashboard/timeseries.ts). One row per series, host and time.
    version: 17,
    sql: `
CREATE TABLE timeseries_samples (
  series TEXT NOT NULL, host TEXT NOT NULL, taken_at_ms INTEGER NOT NULL, value REAL NOT NULL,
  PRIMARY KEY (series, host, taken_at_ms)
);
CREATE INDEX timeseries_samples_time ON timeseries_samples(taken_at_ms);
`,
  },
  {
    // Live migration (issue 15): a migration record of type live-migration carries QEMU's memory
    // progress, the target's listening address, and the Block Storage attachments made for the
    // target host (moved onto the mappings at the switch, deleted on abort). A server's home host
    // (where it was built) is what fail-back brings it back to; evacuation does not change it.
    version: 18,
    sql: `
ALTER TABLE migrations ADD COLUMN memory_total_bytes INTEGER;
ALTER TABLE migrations ADD COLUMN memory_processed_bytes INTEGER;
ALTER TABLE migrations ADD COLUMN memory_remaining_bytes INTEGER;
ALTER TABLE migrations ADD COLUMN dest_address TEXT;
ALTER TABLE migrations ADD COLUMN dest_attachments TEXT;
ALTER TABLE servers ADD COLUMN home_host TEXT;
UPDATE servers SET home_host = host;
`,
  },
  {
    // Fail-back (issue 15): since when a service has been up without a gap (its heartbeat resumed),
    // so a returning compute host gets its servers back only after [compute] failback_healthy_seconds.
    version: 19,
    sql: `
ALTER TABLE services ADD COLUMN up_since TEXT;
`,
  },
  {
    // Identity (issue 18): access rules as Keystone keeps them, one row per user and (service, method,
    // path), shared by that user's application credentials and outliving them until deleted; and
    // OS-TRUST trusts (a trustor delegates roles on a project to a trustee), with the trust a token
    // was issued from.
    version: 20,
    sql: `
CREATE TABLE access_rules (
  id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  service TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL, created_at TEXT NOT NULL,
  UNIQUE (user_id, service, method, path)
);
CREATE TABLE trusts (
  id TEXT PRIMARY KEY, trustor_user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  trustee_user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE, project_id TEXT,
  impersonation INTEGER NOT NULL, roles TEXT NOT NULL, expires_at TEXT, remaining_uses INTEGER,
  created_at TEXT NOT NULL
);
CREATE INDEX trusts_trustor ON trusts(trustor_user_id);
CREATE INDEX trusts_trustee ON trusts(trustee_user_id);
ALTER TABLE tokens ADD COLUMN trust_id TEXT;
`,
  },
  {
    // Generic volume groups (Block Storage 3.11-3.20, issue 18): group types with their specs, groups
    // (the volume types they hold as a JSON list of ids), group snapshots, and the member links
    // volumes.group_id and snapshots.group_snapshot_id. ("groups" is a keyword in SQL window frames.)
    version: 21,
    sql: `
CREATE TABLE group_types (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT, is_public INTEGER NOT NULL DEFAULT 1,
  created_at TEXT NOT NULL, updated_at TEXT
);
CREATE TABLE group_type_specs (
  group_type_id TEXT NOT NULL REFERENCES group_types(id) ON DELETE CASCADE, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (group_type_id, key)
);
CREATE TABLE volume_groups (
  id TEXT PRIMARY KEY, project_id TEXT NOT NULL, user_id TEXT, name TEXT, description TEXT, status TEXT NOT NULL,
  group_type_id TEXT NOT NULL REFERENCES group_types(id), volume_type_ids TEXT NOT NULL, availability_zone TEXT NOT NULL,
  group_snapshot_id TEXT, source_group_id TEXT, status_reason TEXT, created_at TEXT NOT NULL, updated_at TEXT
);
CREATE INDEX volume_groups_project ON volume_groups(project_id, created_at);
CREATE TABLE group_snapshots (
  id TEXT PRIMARY KEY, project_id TEXT NOT NULL, user_id TEXT, group_id TEXT NOT NULL REFERENCES volume_groups(id),
  group_type_id TEXT NOT NULL, name TEXT, description TEXT, status TEXT NOT NULL, status_reason TEXT,
  created_at TEXT NOT NULL, updated_at TEXT
);
CREATE INDEX group_snapshots_group ON group_snapshots(group_id);
ALTER TABLE volumes ADD COLUMN group_id TEXT;
ALTER TABLE snapshots ADD COLUMN group_snapshot_id TEXT;
CREATE INDEX volumes_group ON volumes(group_id);
CREATE INDEX snapshots_group_snapshot ON snapshots(group_snapshot_id);
`,
  },
  {
    // Fewer index pages written per volume cycle (issue 10): every index of a table is written by each
    // insert, delete and change of its columns, and SQLite's WAL writes each page a commit touched.
    // volumes_project (project_id, created_at) is a prefix of volumes_project_created (project_id,
    // created_at, id), which every query by project uses as well (EXPLAIN QUERY PLAN: the lists,
    // created_at ranges; quotas use volumes_project_size). tasks_finished serves only the retention
    // purge (finished_at IS NOT NULL): as a partial index it no longer takes an entry for every
    // queued and running task, each claim and completion rewriting it.
    version: 22,
    sql: `
DROP INDEX volumes_project;
DROP INDEX tasks_finished;
CREATE INDEX tasks_finished ON tasks(state, finished_at) WHERE finished_at IS NOT NULL;
`,
  },
  {
    // A counter of identity changes that affect token validation (revocations, disabled users and
    // projects, removed roles, deleted trusts and application credentials). Each process caches
    // validated tokens; it looks at this counter at most once a second and drops its cache when
    // another process (an API host on the same PostgreSQL, the CLI on the SQLite file) changed it.
    // No row until the first change (a new database stays empty for pumice db import).
    version: 23,
    sql: `
CREATE TABLE identity_changes (id INTEGER PRIMARY KEY CHECK (id = 1), generation INTEGER NOT NULL);
`,
  },
  {
    // Volumes and snapshots outside a group (nearly all) no longer take an entry in the group
    // indexes: each insert and delete wrote an index page for a NULL key that no query looks up
    // (they all ask group_id = ?, which a partial index on IS NOT NULL answers; EXPLAIN QUERY PLAN
    // unchanged). Issue 10: two of the WAL pages of every volume create/delete cycle.
    version: 24,
    sql: `
DROP INDEX volumes_group;
CREATE INDEX volumes_group ON volumes(group_id) WHERE group_id IS NOT NULL;
DROP INDEX snapshots_group_snapshot;
CREATE INDEX snapshots_group_snapshot ON snapshots(group_snapshot_id) WHERE group_snapshot_id IS NOT NULL;
`,
  },
];
