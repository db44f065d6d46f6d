/**
 * The benchmark scripts' flags: `node:util`'s `parseArgs` with `--help` (the
 * script's usage and every option with its default), and for an unknown flag
 * or a bad number a one-line error naming the fix, exit code 2, instead of a
 * stack trace.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { benchFlags, positiveInt } from "./flags.ts";
 * const values = benchFlags({ steps: { type: "string", default: "3" } }, ["--steps", "5"]);
 * assert.equal(positiveInt(values.steps, "--steps"), 5);
 * ```
 * @module
 */
import { relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";

/** Parses `args` against `options` (plus `--help`); prints the usage and exits on `--help` or a bad flag. */
export function benchFlags<const O extends ParseArgsOptionsConfig>(options: O, args = Deno.args) {
  let values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  try {
    ({ values } = parseArgs({ args, options: { ...options, help: { type: "boolean", short: "h" } } }));
  } catch (e) {
    fail(`${e instanceof Error ? e.message : e}; --help lists the options`);
  }
  if (values.help) {
    const lines = Object.entries(options).map(([name, o]) =>
      `  --${name}${o.type === "string" ? " VALUE" : ""}${o.default === undefined ? "" : ` (default ${o.default})`}`
    );
    const script = relative(Deno.cwd(), fileURLToPath(Deno.mainModule));
    console.log(`usage: deno run -A ${script} [options]\n\noptions:\n${lines.join("\n")}\n  -h, --help`);
    Deno.exit(0);
  }
  return values as {
    [K in keyof O]:
      | (O[K]["type"] extends "boolean" ? boolean : string)
      | (O[K] extends { default: unknown } ? never
        : undefined);
  };
}

/** A flag's value as a positive integer, else the error naming the flag and exit code 2. */
export function positiveInt(value: string | undefined, flag: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) fail(`${flag} takes a positive integer, got ${value}`);
  return n;
}

/** Prints `error: message` and exits with code 2 (a bad flag). */
export function fail(message: string): never {
  console.error(`error: ${message}`);
  Deno.exit(2);
}
