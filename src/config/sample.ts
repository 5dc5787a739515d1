/**
 * `pumice config sample`: a commented configuration with every option, generated from the
 * option tables of config.ts (their help strings, types and defaults), so the sample and the
 * reference can never disagree with what the server reads. Every option is commented out:
 * the file as printed is the embedded defaults, and passes check-config.
 */
import { optionTables, type OptionSpec } from './config.ts';
import { pumiceVersion } from './version.ts';

export function configSample(): string {
  const { sections, backend, imageStores } = optionTables();
  const out: string[] = [
    `# Pumice ${pumiceVersion()} configuration (pumice config sample).`,
    '# Option names follow cinder.conf, glance-api.conf, nova.conf and keystone.conf.',
    '# Every option is commented out with its default; uncomment and change what you need.',
    '# Comments go on a line of their own: text after a value is refused (oslo.config keeps it in the value).',
    '# Check a file with: pumice check-config --config FILE',
    '',
  ];
  for (const [name, options] of Object.entries(sections)) out.push(...section(name, options));
  out.push(
    '# One section per name in [DEFAULT] enabled_backends (default: local). For example:',
    '#[local]',
    ...optionLines(backend).map((line) => (line.startsWith('#') ? line : `#${line}`)),
    "# Named image stores, as Glance's multi-store: one section per NAME:TYPE entry of [DEFAULT] enabled_backends",
    '# (e.g. enabled_backends = local,fast:rbd,shared:file), with [glance_store] default_backend = NAME. For example:',
    '#[fast]',
    ...optionLines(imageStores.rbd).map((line) => (line.startsWith('#') ? line : `#${line}`)),
    '#[shared]',
    ...optionLines(imageStores.file).map((line) => (line.startsWith('#') ? line : `#${line}`)),
  );
  return out.join('\n') + '\n';
}

function section(name: string, options: Record<string, OptionSpec>): string[] {
  return [`[${name}]`, '', ...optionLines(options)];
}

function optionLines(options: Record<string, OptionSpec>): string[] {
  const lines: string[] = [];
  for (const [key, spec] of Object.entries(options)) {
    lines.push(`# ${spec.help} (${typeName(spec)})`);
    lines.push(`#${key} = ${defaultText(spec)}`, '');
  }
  return lines;
}

function typeName(spec: OptionSpec): string {
  const base = { string: 'string', int: 'integer', float: 'number', bool: 'boolean', list: 'comma-separated list', float_or_auto: "number or 'auto'" }[spec.type];
  return spec.min !== undefined ? `${base}, at least ${spec.min}` : base;
}

function defaultText(spec: OptionSpec): string {
  if (spec.sampleDefault !== undefined) return spec.sampleDefault;
  const value = spec.default;
  if (value === null) return '<None>';
  if (Array.isArray(value)) return value.join(',');
  return String(value);
}
