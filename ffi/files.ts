/**
 * File helpers shared by the build and the libraries above it.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";

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

/**
 * Writes bytes to `path` atomically: into a temporary file in the same folder,
 * synced, then renamed over `path`, so a reader or a crash sees the old file
 * or the new one, never a part. The folder must exist.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { writeFileAtomic } from "./files.ts";
 * const dir = Deno.makeTempDirSync();
 * const path = join(dir, "a.bin");
 * writeFileAtomic(path, new Uint8Array([1, 2, 3]));
 * writeFileAtomic(path, new Uint8Array([4, 5])); // replaces the whole file
 * assert.deepEqual(Deno.readFileSync(path), new Uint8Array([4, 5]));
 * assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["a.bin"]); // no temporary file left
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function writeFileAtomic(path: string, bytes: Uint8Array): void {
  const tmp = join(dirname(path), `.${basename(path)}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`);
  try {
    const file = Deno.openSync(tmp, { write: true, createNew: true });
    try {
      let written = 0;
      while (written < bytes.length) written += file.writeSync(bytes.subarray(written));
      file.syncSync();
    } finally {
      file.close();
    }
    Deno.renameSync(tmp, path);
  } catch (e) {
    try {
      Deno.removeSync(tmp);
    } catch { /* nothing to clean */ }
    throw e;
  }
}
