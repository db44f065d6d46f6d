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

/**
 * Removes the temporary files that {@linkcode writeFileAtomic} left in `dir`
 * when its process was killed mid-write (those of live processes are kept);
 * returns their names.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { removeStaleTemporaries } from "./files.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(join(dir, ".checkpoint.safetensors.999999999.0123abcd.tmp"), "half a checkpoint");
 * Deno.writeTextFileSync(join(dir, "checkpoint.safetensors"), "kept");
 * assert.deepEqual(removeStaleTemporaries(dir), [".checkpoint.safetensors.999999999.0123abcd.tmp"]);
 * assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["checkpoint.safetensors"]);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function removeStaleTemporaries(dir: string): string[] {
  const removed: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return removed;
  }
  for (const e of entries) {
    const m = /^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$/.exec(e.name);
    if (!e.isFile || !m) continue;
    const pid = Number(m[1]);
    if (pid === Deno.pid || (Deno.build.os === "linux" && exists(`/proc/${pid}`))) continue;
    try {
      Deno.removeSync(join(dir, e.name));
      removed.push(e.name);
    } catch { /* another process removed it first */ }
  }
  return removed;
}
