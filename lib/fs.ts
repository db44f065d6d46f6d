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
 * import { exists } from "./fs.ts";
 * console.log(exists("/tmp")); // true
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
