// Temporary files and staging folders: removed once no live process holds their lock, kept while one does, whatever
// process id their names carry (a container's runs are all process 1; a killed process's id may be reused).
import assert from "node:assert/strict";
import { join } from "node:path";
import { removeStaleTemporaries, stagingFolder, writeFileAtomic } from "../mod.ts";

const names = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

Deno.test("a temporary file nobody holds is removed even when its name has a live process's id", () => {
  const dir = Deno.makeTempDirSync();
  for (const pid of [1, Deno.pid]) {
    Deno.writeTextFileSync(join(dir, `.checkpoint.safetensors.${pid}.0123abcd.tmp`), "half a checkpoint");
  }
  Deno.mkdirSync(join(dir, `.attention.1.89abcdef.tmp`)); // a staging folder whose lock file is gone
  Deno.writeTextFileSync(join(dir, `.attention.1.89abcdef.tmp`, ".lock"), "");
  Deno.mkdirSync(join(dir, ".retrieve-1412c1d358b2c743.tmp")); // one of the code before staging folders were locked
  Deno.writeTextFileSync(join(dir, "checkpoint.safetensors"), "kept");
  Deno.mkdirSync(join(dir, ".hidden-folder.tmp")); // not a temporary of ours
  assert.deepEqual(removeStaleTemporaries(dir).sort(), [
    `.attention.1.89abcdef.tmp`,
    `.checkpoint.safetensors.1.0123abcd.tmp`,
    `.checkpoint.safetensors.${Deno.pid}.0123abcd.tmp`,
    ".retrieve-1412c1d358b2c743.tmp",
  ]);
  Deno.removeSync(join(dir, ".hidden-folder.tmp"));
  assert.deepEqual(names(dir), ["checkpoint.safetensors"]);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("a temporary file or staging folder another live process holds is kept, and removed once it has died", async () => {
  const dir = Deno.makeTempDirSync();
  // Another process makes a staging folder and starts an atomic write it never finishes (it holds the lock, as a
  // writer does until its rename), then waits to be killed.
  const files = new URL("../ffi/files.ts", import.meta.url).href;
  const script = `import { stagingFolder } from "${files}";
    const stage = stagingFolder(${JSON.stringify(dir)}, "attention");
    const tmp = ${JSON.stringify(dir)} + "/.checkpoint.safetensors." + Deno.pid + ".0123abcd.tmp";
    const f = Deno.openSync(tmp, { write: true, createNew: true });
    f.lockSync(true);
    console.log("ready");
    setInterval(() => {}, 1000); // alive until killed`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  assert.match(new TextDecoder().decode((await reader.read()).value), /ready/);
  assert.equal(names(dir).length, 2);
  assert.deepEqual(removeStaleTemporaries(dir), [], "in use: kept");
  child.kill("SIGKILL");
  await child.status;
  reader.releaseLock();
  await child.stdout.cancel();
  assert.equal(removeStaleTemporaries(dir).length, 2, "its process died: both removed");
  assert.deepEqual(names(dir), []);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("an atomic write and a staging folder survive a cleanup run while they are in use", () => {
  const dir = Deno.makeTempDirSync();
  {
    using stage = stagingFolder(dir, "retrieve");
    writeFileAtomic(join(stage.path, "a.json"), new TextEncoder().encode("{}"));
    assert.deepEqual(removeStaleTemporaries(dir), []);
    assert.deepEqual(names(stage.path), [".lock", "a.json"]);
    writeFileAtomic(join(dir, "b.json"), new TextEncoder().encode("[]"));
  }
  assert.deepEqual(names(dir), ["b.json"], "the staging folder removed, no temporary left");
  // disposing twice, or after someone removed the folder, is harmless
  const stage = stagingFolder(dir, "propagate");
  Deno.removeSync(stage.path, { recursive: true });
  stage[Symbol.dispose]();
  stage[Symbol.dispose]();
  assert.deepEqual(names(dir), ["b.json"]);
  Deno.removeSync(dir, { recursive: true });
});
