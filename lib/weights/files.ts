/**
 * File-system helpers.
 *
 * @module
 */

/**
 * Whether a path exists (file or folder).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { exists } from "./files.ts";
 * const dir = Deno.makeTempDirSync();
 * assert.equal(exists(dir), true);
 * Deno.removeSync(dir);
 * assert.equal(exists(dir), false);
 * ```
 */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
