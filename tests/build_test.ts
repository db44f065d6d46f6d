import assert from "node:assert/strict";

async function runDeno(code: string, env: Record<string, string>): Promise<{ code: number; stderr: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env,
    stdout: "piped",
    stderr: "piped",
    cwd: new URL("..", import.meta.url).pathname,
  }).output();
  return { code: r.code, stderr: new TextDecoder().decode(r.stderr) };
}

Deno.test("a LIBTORCH that is not a libtorch folder is an error naming it and the fixes", async () => {
  const dir = await Deno.makeTempDir();
  const r = await runDeno(
    `import { findLibtorch } from "./ffi/build.ts"; findLibtorch();`,
    { LIBTORCH: dir },
  );
  await Deno.remove(dir);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, new RegExp(`LIBTORCH=${dir} is not a usable libtorch`));
  assert.match(r.stderr, /apt-get install libtorch-dev/);
});

Deno.test("with no libtorch anywhere the error lists every place tried", async () => {
  const empty = await Deno.makeTempDir();
  const r = await runDeno(
    `import { findLibtorch } from "./ffi/build.ts"; findLibtorch();`,
    { DINO_PYTHON: "/nonexistent/python3", DINO_SYSTEM_PREFIXES: empty },
  );
  await Deno.remove(empty);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /libtorch not found\. Tried:/);
  assert.match(r.stderr, /LIBTORCH: not set/);
  assert.match(r.stderr, /python \/nonexistent\/python3: /);
  assert.match(r.stderr, new RegExp(`system: no ATen headers with libtorch_cpu.so under ${empty}`));
  assert.match(r.stderr, /sudo apt-get install libtorch-dev/);
});

Deno.test("DINO_SHIM pointing at a missing file is a clear error", async () => {
  const r = await runDeno(`import "./mod.ts";`, { DINO_SHIM: "/nonexistent/shim.so" });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /DINO_SHIM=\/nonexistent\/shim.so does not exist; unset it to build the shim/);
});

Deno.test("DINO_SHIM loads a prebuilt shim", async () => {
  const { buildShim } = await import("../ffi/build.ts");
  const path = await buildShim();
  const r = await runDeno(
    `import * as t from "./mod.ts"; if (t.item(t.sum(t.ones([3]))) !== 3) Deno.exit(3);`,
    { DINO_SHIM: path },
  );
  assert.equal(r.code, 0, r.stderr);
});
