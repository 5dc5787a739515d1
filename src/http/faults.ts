/**
 * The one place where errors become HTTP fault bodies. Block Storage, Image
 * and Compute use the `{"itemNotFound": {"code": 404, "message": ...}}`
 * shape; Identity uses Keystone's `{"error": {"code", "title", "message"}}`.
 * Anything that is not a PumiceError is a bug: it is logged with its stack and
 * the client sees a 500 fault without internals.
 */
import { PumiceError, errors } from '../errors.ts';

export type FaultStyle = 'openstack' | 'keystone';

const faultKeyByStatus: Record<number, string> = {
  400: 'badRequest',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'itemNotFound',
  405: 'badMethod',
  406: 'notAcceptable',
  409: 'conflictingRequest',
  413: 'overLimit',
  415: 'badMediaType',
  416: 'requestRangeNotSatisfiable',
  501: 'notImplemented',
  503: 'serviceUnavailable',
};

const titleByStatus: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  409: 'Conflict',
  413: 'Request Entity Too Large',
  415: 'Unsupported Media Type',
  416: 'Requested Range Not Satisfiable',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  503: 'Service Unavailable',
};

export interface FaultReply {
  status: number;
  body: unknown;
  headers: Record<string, string>;
}

export function toFault(error: unknown, style: FaultStyle, log: (message: string) => void): FaultReply {
  let known: PumiceError;
  if (error instanceof PumiceError) {
    known = error;
  } else {
    log(`ERROR: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    known = new PumiceError('Internal', 'The server hit an unexpected error; the request was not completed. The server log has the details.');
  }
  const { status, message } = known;
  const headers = { ...known.headers };
  if (status === 401 && style === 'keystone') headers['WWW-Authenticate'] = 'Keystone uri="/identity"';
  if (style === 'keystone') {
    return { status, headers, body: { error: { code: status, title: titleByStatus[status] ?? 'Error', message } } };
  }
  const key = faultKeyByStatus[status] ?? 'computeFault';
  const fault: Record<string, unknown> = { code: status, message };
  if (status === 413 && known.code === 'QuotaExceeded') fault['retryAfter'] = '0';
  return { status, headers, body: { [key]: fault } };
}

export { errors };
