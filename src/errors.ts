/**
 * The closed set of errors Pumice reports to API users. Every expected failure
 * is one of these codes; `http/faults.ts` turns them into OpenStack fault
 * bodies in one place. Code never matches on message text, only on `code`.
 * Messages name the cause and, where there is one, the fix.
 */

export type ErrorCode =
  | 'BadRequest'
  | 'MalformedBody'
  | 'UnknownField'
  | 'InvalidInput'
  | 'Unauthorized'
  | 'Forbidden'
  | 'NotFound'
  | 'MethodNotAllowed'
  | 'Conflict'
  | 'InvalidState'
  | 'VolumeHasSnapshots'
  | 'QuotaExceeded'
  | 'BodyTooLarge'
  | 'RangeNotSatisfiable'
  | 'UnsupportedMediaType'
  | 'VersionNotSupported'
  | 'NotImplemented'
  | 'BackendUnavailable'
  | 'Internal';

const statusByCode: Record<ErrorCode, number> = {
  BadRequest: 400,
  MalformedBody: 400,
  UnknownField: 400,
  InvalidInput: 400,
  Unauthorized: 401,
  Forbidden: 403,
  NotFound: 404,
  MethodNotAllowed: 405,
  Conflict: 409,
  InvalidState: 409,
  VolumeHasSnapshots: 409,
  QuotaExceeded: 413,
  BodyTooLarge: 413,
  RangeNotSatisfiable: 416,
  UnsupportedMediaType: 415,
  VersionNotSupported: 406,
  NotImplemented: 501,
  BackendUnavailable: 503,
  Internal: 500,
};

export class PumiceError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.status = statusByCode[code];
  }
}

export const errors = {
  badRequest: (message: string) => new PumiceError('BadRequest', message),
  invalidInput: (message: string) => new PumiceError('InvalidInput', message),
  malformedBody: (detail: string) =>
    new PumiceError('MalformedBody', `Malformed request body: ${detail}. Send a JSON object with Content-Type: application/json.`),
  unknownField: (path: string, allowed: readonly string[]) =>
    new PumiceError(
      'UnknownField',
      `Invalid input: unknown field '${path}'. Allowed fields here: ${allowed.join(', ')}.`,
    ),
  unauthorized: (message = 'The request you have made requires authentication.') =>
    new PumiceError('Unauthorized', message),
  forbidden: (action: string) =>
    new PumiceError('Forbidden', `Policy doesn't allow ${action} to be performed. Ask an administrator for a role that allows it.`),
  notFound: (kind: string, id: string) =>
    new PumiceError('NotFound', `${kind} ${id} could not be found.`),
  routeNotFound: (method: string, path: string) =>
    new PumiceError('NotFound', `No API route for ${method} ${path}. Check the URL and the API version.`),
  methodNotAllowed: (method: string, path: string) =>
    new PumiceError('MethodNotAllowed', `Method ${method} is not allowed on ${path}.`),
  conflict: (message: string) => new PumiceError('Conflict', message),
  invalidState: (kind: string, id: string, status: string, action: string, allowed: readonly string[]) =>
    new PumiceError(
      'InvalidState',
      `Invalid ${kind}: ${kind} ${id} is '${status}'; ${action} needs it to be ${allowed.map((s) => `'${s}'`).join(' or ')}.`,
    ),
  quotaExceeded: (message: string) => new PumiceError('QuotaExceeded', message, { 'Retry-After': '0' }),
  bodyTooLarge: (limitBytes: number) =>
    new PumiceError('BodyTooLarge', `Request body is larger than the limit of ${limitBytes} bytes (max_request_body_size).`),
  rangeNotSatisfiable: (range: string, sizeBytes: number) =>
    new PumiceError('RangeNotSatisfiable', `Requested range '${range}' is not satisfiable: the data is ${sizeBytes} bytes.`, { 'Content-Range': `bytes */${sizeBytes}` }),
  unsupportedMediaType: (type: string) =>
    new PumiceError('UnsupportedMediaType', `Unsupported Content-Type '${type}': send application/json.`),
  versionNotSupported: (requested: string, min: string, max: string) =>
    new PumiceError(
      'VersionNotSupported',
      `Version ${requested} is not supported by the API. Minimum is ${min} and maximum is ${max}.`,
    ),
  notImplemented: (what: string) => new PumiceError('NotImplemented', `${what} is not implemented by Pumice yet.`),
  backendUnavailable: (message: string) => new PumiceError('BackendUnavailable', message),
  /**
   * A program this host needs is not installed (qemu-img): 501, not 503, because clients retry a
   * 503 (keystoneauth: for ~16 s) and installing the tool is the operator's job, not a moment's wait.
   */
  toolMissing: (message: string) => new PumiceError('NotImplemented', message),
};

export function isPumiceError(value: unknown): value is PumiceError {
  return value instanceof PumiceError;
}
