/**
 * Request body validation: a small declarative schema language, strict about
 * unknown fields and types, with messages that name the field and what is
 * expected. Validation happens before anything is written.
 */
import { errors } from '../errors.ts';

export type Schema =
  | { type: 'string'; minLength?: number; maxLength?: number; enum?: readonly string[]; pattern?: RegExp; patternHelp?: string; nullable?: boolean }
  | { type: 'integer'; min?: number; max?: number; nullable?: boolean; allowString?: boolean }
  | { type: 'boolean'; nullable?: boolean; allowString?: boolean }
  | { type: 'uuid'; nullable?: boolean }
  | { type: 'object'; properties?: Record<string, Schema>; required?: readonly string[]; additional?: Schema | true; nullable?: boolean; maxProperties?: number }
  | { type: 'array'; items: Schema; maxItems?: number; nullable?: boolean }
  | { type: 'any' };

const uuidPattern = /^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$/;

export function isUuid(value: string): boolean {
  return uuidPattern.test(value);
}

/** Checks `value` against `schema` and returns it with coercions applied (numeric strings, boolean strings). */
export function validate<T>(schema: Schema, value: unknown, path = 'body'): T {
  return check(schema, value, path) as T;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `'${value.length > 40 ? value.slice(0, 40) + '…' : value}'`;
  if (typeof value === 'object') return 'an object';
  return String(value);
}

function check(schema: Schema, value: unknown, path: string): unknown {
  if (schema.type === 'any') return value;
  if (value === null && 'nullable' in schema && schema.nullable) return null;
  const fail = (expected: string): never => {
    throw errors.invalidInput(`Invalid input for field/attribute ${path}. Value: ${describe(value)}. Expected ${expected}.`);
  };
  switch (schema.type) {
    case 'string': {
      if (typeof value !== 'string') return fail('a string');
      if (schema.minLength !== undefined && value.length < schema.minLength) fail(`a string of at least ${schema.minLength} characters`);
      if (schema.maxLength !== undefined && value.length > schema.maxLength) fail(`a string of at most ${schema.maxLength} characters`);
      if (schema.enum && !schema.enum.includes(value)) fail(`one of ${schema.enum.map((e) => `'${e}'`).join(', ')}`);
      if (schema.pattern && !schema.pattern.test(value)) fail(schema.patternHelp ?? `a string matching ${schema.pattern}`);
      return value;
    }
    case 'uuid': {
      if (typeof value !== 'string' || !isUuid(value)) return fail('a UUID');
      return value;
    }
    case 'integer': {
      let n: unknown = value;
      if (schema.allowString && typeof value === 'string' && /^\s*-?\d+\s*$/.test(value)) n = Number(value);
      if (typeof n !== 'number' || !Number.isSafeInteger(n)) return fail('an integer');
      if (schema.min !== undefined && n < schema.min) fail(`an integer >= ${schema.min}`);
      if (schema.max !== undefined && n > schema.max) fail(`an integer <= ${schema.max}`);
      return n;
    }
    case 'boolean': {
      if (typeof value === 'boolean') return value;
      if (schema.allowString && typeof value === 'string') {
        const lower = value.toLowerCase();
        if (['true', 't', 'yes', 'y', 'on', '1'].includes(lower)) return true;
        if (['false', 'f', 'no', 'n', 'off', '0'].includes(lower)) return false;
      }
      return fail('a boolean');
    }
    case 'array': {
      if (!Array.isArray(value)) return fail('an array');
      if (schema.maxItems !== undefined && value.length > schema.maxItems) fail(`at most ${schema.maxItems} items`);
      return value.map((item, i) => check(schema.items, item, `${path}[${i}]`));
    }
    case 'object': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) return fail('an object');
      const input = value as Record<string, unknown>;
      const output: Record<string, unknown> = {};
      const properties = schema.properties ?? {};
      const keys = Object.keys(input);
      if (schema.maxProperties !== undefined && keys.length > schema.maxProperties) fail(`at most ${schema.maxProperties} entries`);
      for (const key of keys) {
        // Own properties only: a body key such as 'constructor', 'toString' or '__proto__' must not
        // find Object.prototype's member and pass as a known field.
        const propertySchema = Object.hasOwn(properties, key) ? properties[key] : undefined;
        const childPath = path === 'body' ? key : `${path}/${key}`;
        let checked: unknown;
        if (propertySchema) {
          checked = check(propertySchema, input[key], childPath);
        } else if (schema.additional === true) {
          checked = input[key];
        } else if (schema.additional) {
          checked = check(schema.additional, input[key], childPath);
        } else {
          throw errors.unknownField(childPath, Object.keys(properties));
        }
        // defineProperty, not assignment: a '__proto__' metadata key stays a plain entry instead of setting the prototype.
        Object.defineProperty(output, key, { value: checked, enumerable: true, writable: true, configurable: true });
      }
      for (const key of schema.required ?? []) {
        if (!Object.hasOwn(input, key)) {
          throw errors.invalidInput(`Invalid input: '${path === 'body' ? key : `${path}/${key}`}' is a required property.`);
        }
      }
      return output;
    }
  }
}

/** Metadata as Cinder accepts it: string keys of 1–255 characters, string values of up to 255. */
export const metadataSchema: Schema = {
  type: 'object',
  maxProperties: 128,
  additional: { type: 'string', maxLength: 255 },
};

export function checkMetadataKeys(metadata: Record<string, unknown>): void {
  for (const key of Object.keys(metadata)) {
    if (key.length === 0 || key.length > 255) {
      throw errors.invalidInput(`Invalid metadata key '${key.slice(0, 40)}': keys must be 1 to 255 characters.`);
    }
  }
}

/** Parses a boolean query parameter the way OpenStack services do. */
export function queryBool(value: string | null, name: string): boolean | undefined {
  if (value === null) return undefined;
  const lower = value.toLowerCase();
  if (['true', 't', 'yes', 'y', 'on', '1'].includes(lower)) return true;
  if (['false', 'f', 'no', 'n', 'off', '0'].includes(lower)) return false;
  throw errors.invalidInput(`Invalid value '${value}' for query parameter ${name}: expected true or false.`);
}
