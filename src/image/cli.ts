/** `pumice image ...`: operator commands against a running Pumice (see src/cli/session.ts). */
export async function runCli(args: string[]): Promise<number> {
  process.stderr.write(`pumice image: no subcommands yet (${args.join(' ')})\n`);
  return 2;
}
