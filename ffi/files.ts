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
  const { path: tmp, lock: file } = lockedTemporary(dirname(path), basename(path), false);
  let done = false;
  try {
    let written = 0;
    while (written < bytes.length) written += file.writeSync(bytes.subarray(written));
    file.syncSync();
    Deno.renameSync(tmp, path); // before the lock is let go, so that no cleanup takes the file meanwhile
    done = true;
  } finally {
    release(tmp, file, !done);
  }
}

/** A temporary's name, `.<name>.<pid>.<8 hex>.tmp` in `dir`: what {@linkcode removeStaleTemporaries} looks for. */
function temporaryName(dir: string, name: string): string {
  return join(dir, `.${name}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`);
}
const TEMPORARY = /^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$/;
/** The staging folders of the code before they were locked (`Deno.makeTempDirSync`'s names): left by killed runs. */
const UNLOCKED_STAGING = /^\.(attention|retrieve|propagate)-\w+\.tmp$/;

/** The lock file inside a staging folder. */
const LOCK = ".lock";

/**
 * The temporaries this process holds. Its own cleanups skip them without opening them: where locks are emulated
 * with fcntl's (NFS), closing any handle to a file drops the process's lock on it.
 */
const held = new Set<string>();

/**
 * A new temporary (a file, or a folder with its lock file) in `dir`, locked until released: made and locked under
 * a name no cleanup looks at, then renamed into place, so that one a cleanup can see is locked while its process
 * lives, and its lock is let go however the process ends.
 */
function lockedTemporary(dir: string, name: string, folder: boolean): { path: string; lock: Deno.FsFile } {
  const path = temporaryName(dir, name), making = `${path}.new`;
  let lock: Deno.FsFile | undefined;
  try {
    if (folder) Deno.mkdirSync(making);
    lock = Deno.openSync(folder ? join(making, LOCK) : making, { read: true, write: true, createNew: true });
    try {
      lock.lockSync(true);
    } catch {
      // A file system without locks: cleanups fall back to the process id in the name.
    }
    Deno.renameSync(making, path);
  } catch (e) {
    lock?.close();
    try {
      Deno.removeSync(making, { recursive: true });
    } catch { /* never made */ }
    throw e;
  }
  held.add(path);
  return { path, lock };
}

/** Lets a temporary go: removed first when `remove` (while still locked, so no cleanup races it), then unlocked. */
function release(path: string, lock: Deno.FsFile, remove: boolean): void {
  try {
    if (remove) Deno.removeSync(path, { recursive: true });
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  } finally {
    lock.close();
    held.delete(path);
  }
}

/**
 * A staging folder in `dir` for files a command writes before moving them into place (`.<name>.<pid>.<hex>.tmp`),
 * locked until it is disposed, which removes it (disposing twice is harmless). One left by a killed process is
 * removed by the next {@linkcode removeStaleTemporaries} of `dir`.
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
  const { path, lock } = lockedTemporary(dir, name, true);
  let released = false;
  return {
    path,
    [Symbol.dispose]() {
      if (released) return;
      released = true;
      release(path, lock, true);
    },
  };
}

/**
 * The lock of a temporary no live process holds, taken (to be closed once the temporary is removed); undefined
 * when a live process holds it, or may: where it cannot be opened for another reason than its absence, or where
 * locks are not to be had and the process id in its name is running (or is this process's, and it is held).
 */
function claim(dir: string, name: string, isFolder: boolean): Deno.FsFile | "unlocked" | undefined {
  const path = join(dir, name);
  if (held.has(path)) return undefined;
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(isFolder ? join(path, LOCK) : path, { read: true, write: true });
  } catch (e) {
    // A folder renamed into place has its lock file: without one, it was emptied by hand or is not ours to judge.
    return e instanceof Deno.errors.NotFound && isFolder ? "unlocked" : undefined;
  }
  let free: boolean;
  try {
    free = file.tryLockSync(true);
  } catch {
    const pid = Number(TEMPORARY.exec(name)![1]);
    free = pid === Deno.pid || !(Deno.build.os === "linux" && exists(`/proc/${pid}`)); // not held: a former life's
  }
  if (free) return file;
  file.close();
  return undefined;
}

/**
 * Removes the temporary files that {@linkcode writeFileAtomic} left in `dir`
 * when its process was killed mid-write, and the staging folders of
 * {@linkcode stagingFolder} (those still in use are kept: their process
 * holds their lock); returns their names.
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
    const unlocked = e.isDirectory && UNLOCKED_STAGING.test(e.name);
    if (!(e.isFile || e.isDirectory) || !(TEMPORARY.test(e.name) || unlocked)) continue;
    const lock = unlocked ? "unlocked" : claim(dir, e.name, e.isDirectory);
    if (lock === undefined) continue;
    try {
      Deno.removeSync(join(dir, e.name), { recursive: true }); // while locked: no writer can take it meanwhile
      removed.push(e.name);
    } catch {
      /* another process removed it first */
    } finally {
      if (lock !== "unlocked") lock.close();
    }
  }
  return removed;
}
