/**
 * User messages (Cinder's /messages, 3.3+): what went wrong with a request
 * that was accepted, kept until `expires_at`. Written by the volume manager.
 */
import { nowIso, type Db, type SqlValue } from '../db/db.ts';
import { errors } from '../errors.ts';
import type { AuthContext } from '../http/router.ts';

export interface MessageRow {
  id: string;
  project_id: string;
  request_id: string | null;
  resource_type: string | null;
  resource_uuid: string | null;
  event_id: string;
  message_level: string;
  user_message: string;
  created_at: string;
  expires_at: string;
}

export const messageFilters = ['resource_uuid', 'resource_type', 'event_id', 'request_id', 'message_level'] as const;
export type MessageFilter = (typeof messageFilters)[number];

export class UserMessages {
  constructor(private readonly db: Db) {}

  /** Unexpired messages the caller may see (administrators: every project's), newest first, at most `limit`. */
  list(auth: AuthContext, filters: Partial<Record<MessageFilter, string>>, limit: number): MessageRow[] {
    const conditions: string[] = ['expires_at > ?'];
    const params: SqlValue[] = [nowIso()];
    if (!auth.isAdmin) {
      conditions.push('project_id = ?');
      params.push(auth.projectId ?? '');
    }
    for (const key of messageFilters) {
      const value = filters[key];
      if (value !== undefined) {
        conditions.push(`${key} = ?`);
        params.push(value);
      }
    }
    return this.db.all<MessageRow>(`SELECT * FROM messages WHERE ${conditions.join(' AND ')} ORDER BY created_at DESC LIMIT ?`, ...params, limit);
  }

  /** One message; another project's is a 404. */
  get(auth: AuthContext, id: string): MessageRow {
    const row = this.db.get<MessageRow>('SELECT * FROM messages WHERE id = ?', id);
    if (!row || (!auth.isAdmin && row.project_id !== auth.projectId)) throw errors.notFound('Message', id);
    return row;
  }

  /** Deletes a message the caller may see. */
  delete(auth: AuthContext, id: string): void {
    this.db.run('DELETE FROM messages WHERE id = ?', this.get(auth, id).id);
  }
}
