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
  let tmp = "";
  try {
    let file: Deno.FsFile;
    ({ file, path: tmp } = lockedTemporary(dirname(path), basename(path)));
    try {
      let written = 0;
      while (written < bytes.length) written += file.writeSync(bytes.subarray(written));
      file.syncSync();
      Deno.renameSync(tmp, path); // before the lock is let go, so that no cleanup takes the file meanwhile
    } finally {
      file.close();
    }
  } catch (e) {
    try {
      Deno.removeSync(tmp);
    } catch { /* nothing to clean */ }
    throw e;
  }
}

/** `.<name>.<pid>.<8 hex>.tmp` in `dir`: the names {@linkcode removeStaleTemporaries} looks for. */
function temporaryName(dir: string, name: string): string {
  return join(dir, `.${name}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`);
}

/**
 * A new file `lockFile(path)` names, opened and locked: the lock, held until the file is closed, marks it in use for
 * {@linkcode removeStaleTemporaries}. Between the file's making and its locking another process's cleanup may take it
 * for a dead one's and remove it: then the path no longer leads to this file, and a new one is made.
 */
function lockedTemporary(
  dir: string,
  name: string,
  make: (path: string) => void = () => {},
  lockFile: (path: string) => string = (path) => path,
): { path: string; file: Deno.FsFile } {
  for (let attempt = 1;; attempt++) {
    const path = temporaryName(dir, name);
    let file: Deno.FsFile | undefined;
    try {
      make(path);
      file = Deno.openSync(lockFile(path), { write: true, createNew: true });
      try {
        file.lockSync(true);
      } catch {
        // A file system without locks: written unlocked, and every cleanup keeps it (`inUse`), as it cannot tell.
      }
      if (Deno.statSync(lockFile(path)).ino === file.statSync().ino) return { path, file };
    } catch (e) {
      file?.close();
      // Gone before it was locked, unless the folder itself is missing (an error to report, not to retry).
      if (!(e instanceof Deno.errors.NotFound) || !exists(dir) || attempt === 10) throw e;
      continue;
    }
    file.close();
    if (attempt === 10) throw new Error(`${dir}: a temporary file kept being removed before it was locked`);
  }
}

/**
 * A staging folder in `dir` for files a command writes before moving them into place (`.<name>.<pid>.<hex>.tmp`),
 * marked as in use by a lock held until it is disposed, which removes it. One left by a killed process is removed
 * by the next {@linkcode removeStaleTemporaries} of `dir`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { removeStaleTemporaries, stagingFolder } from "./files.ts";
 * const dir = Deno.makeTempDirSync();
 * {
 *   using stage = stagingFolder(dir, "attention");
 *   Deno.writeTextFileSync(join(stage.path, "a.png"), "a picture");
 *   assert.deepEqual(removeStaleTemporaries(dir), []); // in use: kept
 *   Deno.renameSync(join(stage.path, "a.png"), join(dir, "a.png"));
 * }
 * assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["a.png"]); // the folder is gone
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function stagingFolder(dir: string, name: string): { path: string } & Disposable {
  const { path, file: lock } = lockedTemporary(dir, name, (path) => Deno.mkdirSync(path), (path) => join(path, LOCK));
  return {
    path,
    [Symbol.dispose]() {
      lock.close();
      Deno.removeSync(path, { recursive: true });
    },
  };
}

/** The lock file inside a staging folder. */
const LOCK = ".lock";

/**
 * Whether a live process holds the lock of the temporary `path` (a file, or a staging folder's lock file), the
 * mark of a write in progress. A lock is released when its process ends, however it ends, where the process id in
 * the name may belong to another process by now (as after a restart in a container, where every run is process 1).
 */
function inUse(path: string, isFolder: boolean): boolean {
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(isFolder ? join(path, LOCK) : path, { read: true });
  } catch {
    return false; // a folder without its lock file: its process died making it
  }
  try {
    return !file.tryLockSync(true);
  } catch {
    return true; // a file system without locks: keep it rather than guess
  } finally {
    file.close();
  }
}

/**
 * Removes the temporary files that {@linkcode writeFileAtomic} left in `dir`
 * when its process was killed mid-write, and the staging folders of
 * {@linkcode stagingFolder} (those still in use are kept); returns their names.
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
    if (!(e.isFile || e.isDirectory) || !/^\..+\.\d+\.[0-9a-f]{8}\.tmp$/.test(e.name)) continue;
    const path = join(dir, e.name);
    if (inUse(path, e.isDirectory)) continue;
    try {
      Deno.removeSync(path, { recursive: true });
      removed.push(e.name);
    } catch { /* another process removed it first */ }
  }
  return removed;
}
