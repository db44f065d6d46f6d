import assert from "node:assert/strict";
import { exists } from "../ffi/files.ts";

async function runDeno(code: string, env: Record<string, string>): Promise<{ code: number; stderr: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    // Each test chooses how libtorch is found; CI's own choice (DINO_LIBTORCH_FROM, LIBTORCH) must not leak in.
    env: { DINO_LIBTORCH_FROM: "", LIBTORCH: "", DINO_PYTHON: "", ...env },
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
  assert.match(r.stderr, /Install: a libtorch zip from pytorch\.org: unpack it and set LIBTORCH=/);
  assert.doesNotMatch(r.stderr, /apt-get/, "the fix for the way chosen, not the others");
});

Deno.test("a DINO_PYTHON without torch is an error naming it, not a quiet fall back to another libtorch", async () => {
  const r = await runDeno(
    `import { findLibtorch } from "./ffi/build.ts"; findLibtorch();`,
    { DINO_PYTHON: "/nonexistent/python3" }, // the system libtorch is here, and must not be taken instead
  );
  assert.notEqual(r.code, 0);
  assert.match(
    r.stderr,
    /DINO_PYTHON=\/nonexistent\/python3 gives no usable libtorch \(python \/nonexistent\/python3: /,
  );
  assert.match(r.stderr, /fix it, or unset it to search every way/);
});

Deno.test("DINO_SHIM pointing at a missing file, a folder or no library is a clear error naming the fix", async () => {
  const r = await runDeno(`import "./mod.ts";`, { DINO_SHIM: "/nonexistent/shim.so" });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /DINO_SHIM=\/nonexistent\/shim.so does not exist; unset it to build the shim/);
  const dir = await Deno.makeTempDir();
  const folder = await runDeno(`import "./mod.ts";`, { DINO_SHIM: dir });
  assert.match(folder.stderr, new RegExp(`DINO_SHIM=${dir} is not a file; unset it to build the shim`));
  const text = `${dir}/notlib.so`;
  await Deno.writeTextFile(text, "not a library");
  const notLib = await runDeno(`import "./mod.ts";`, { DINO_SHIM: text });
  await Deno.remove(dir, { recursive: true });
  assert.notEqual(notLib.code, 0);
  assert.match(
    notLib.stderr,
    /the native shim .*notlib\.so could not be loaded \(.*notlib\.so: file too short\): unset DINO_SHIM to build the shim/,
  );
});

Deno.test("a CXX that does not run is an error, not a quiet build with another compiler", async () => {
  const cache = await Deno.makeTempDir();
  const r = await runDeno(`import "./mod.ts";`, { CXX: "/nonexistent/c++", DINO_CACHE_DIR: cache });
  await Deno.remove(cache, { recursive: true });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /CXX=\/nonexistent\/c\+\+ does not run .*: CXX names one compiler, without arguments; fix it/);
});

Deno.test("a DINO_PYTHON that prints no torch paths is one more way tried, said as such", async () => {
  const find = `import { findLibtorch } from "./ffi/build.ts"; console.error(findLibtorch().source);`;
  for (
    const [python, says] of [["/bin/true", /ran, but did not print torch's paths/], ["/bin/false", /failed/]] as const
  ) {
    const forced = await runDeno(find, { DINO_LIBTORCH_FROM: "python", DINO_PYTHON: python });
    assert.notEqual(forced.code, 0);
    assert.match(forced.stderr, new RegExp(`- python ${python}: ${says.source}`));
    assert.match(forced.stderr, /Install: PyTorch with CUDA: pip install torch/);
  }
  // Not forced, but named: an error too, as LIBTORCH's.
  const named = await runDeno(find, { DINO_PYTHON: "/bin/true" });
  assert.notEqual(named.code, 0);
  assert.match(named.stderr, /DINO_PYTHON=\/bin\/true gives no usable libtorch \(python \/bin\/true: ran, but did not/);
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

Deno.test("DINO_LIBTORCH_FROM forces one way: an unsatisfiable way is an error, never a fallback", async () => {
  const find = `import { findLibtorch } from "./ffi/build.ts"; console.error(findLibtorch().source);`;
  const bad = await runDeno(find, { DINO_LIBTORCH_FROM: "conda" });
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /DINO_LIBTORCH_FROM=conda is not one of folder, python, system/);
  const folder = await runDeno(find, { DINO_LIBTORCH_FROM: "folder" });
  assert.notEqual(folder.code, 0);
  assert.match(folder.stderr, /DINO_LIBTORCH_FROM=folder needs LIBTORCH=/);
  // The system install exists here, but a forced Python without torch must not fall back to it.
  const python = await runDeno(find, { DINO_LIBTORCH_FROM: "python", DINO_PYTHON: "/nonexistent/python3" });
  assert.notEqual(python.code, 0);
  assert.match(
    python.stderr,
    /DINO_LIBTORCH_FROM=python: libtorch not found that way\. Tried:\n {2}- python \/nonexistent/,
  );
  const empty = await Deno.makeTempDir();
  const system = await runDeno(find, { DINO_LIBTORCH_FROM: "system", DINO_SYSTEM_PREFIXES: empty });
  await Deno.remove(empty);
  assert.notEqual(system.code, 0);
  assert.match(system.stderr, /DINO_LIBTORCH_FROM=system: libtorch not found that way/);
  assert.doesNotMatch(system.stderr, / {2}- python /, "the system way tries no Python");
});

Deno.test("the compiler's own header folders are not passed again (GCC's #include_next would break)", async () => {
  const { includeFlags } = await import("../ffi/build.ts");
  const defaults = new Set(["/usr/include", "/usr/local/include"]);
  assert.deepEqual(
    includeFlags(["/usr/include", "/usr/include/torch/csrc/api/include", "/opt/libtorch/include"], defaults),
    ["-isystem", "/usr/include/torch/csrc/api/include", "-isystem", "/opt/libtorch/include"],
  );
  // A folder that is a link to a default one (a LIBTORCH folder laid over the system install) is left out too.
  const dir = await Deno.makeTempDir();
  await Deno.symlink("/usr/include", `${dir}/include`);
  assert.deepEqual(includeFlags([`${dir}/include`], defaults), []);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("native/images.cpp compiles without libjpeg (JPEGs through stb) and without stb (no decoding)", async () => {
  const { findLibtorch, includeFlags } = await import("../ffi/build.ts");
  const libtorch = findLibtorch();
  // The first needs stb's headers, as the shim does (setup installs them; CI has them).
  const stb = exists("/usr/include/stb/stb_image.h");
  for (const defines of stb ? [["-DDINO_STB"], []] : [[]]) {
    const r = await new Deno.Command("c++", {
      args: [
        "-std=gnu++17",
        "-fsyntax-only",
        `-D_GLIBCXX_USE_CXX11_ABI=${libtorch.abi}`,
        ...defines,
        ...includeFlags(libtorch.include, new Set(["/usr/include", "/usr/local/include"])),
        new URL("../native/images.cpp", import.meta.url).pathname,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(r.success, `${defines}: ${new TextDecoder().decode(r.stderr)}`);
  }
});
