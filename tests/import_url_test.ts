import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname, extname, join, normalize } from "node:path";
import { NATIVE_SOURCES } from "../ffi/build.ts";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const TYPES: Record<string, string> = {
  ".ts": "application/typescript",
  ".cpp": "text/plain",
  ".json": "application/json",
};

/** What mod.ts documents it needs: no --allow-sys (the home folder and the memory size are found without it). */
const PERMISSIONS = ["--allow-ffi", "--allow-run", "--allow-env", "--allow-read", "--allow-write"];

Deno.test("mod.ts runs with the documented permissions alone", async () => {
  const script = `import * as t from "${join(ROOT, "mod.ts")}";
    console.log(JSON.stringify(t.tidy(() => t.toArray(t.mul(t.tensor([1, 2, 3]), 2)))));`;
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  await Deno.writeTextFile(file, script);
  const env = { ...Deno.env.toObject() };
  delete env.DINO_CPU_CACHE_MB; // the cache's default size is what needed --allow-sys
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, "--no-lock", "--no-config", file],
    env,
    clearEnv: true,
  }).output();
  await Deno.remove(file);
  assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
  assert.equal(new TextDecoder().decode(r.stdout).trim(), "[2,4,6]");
});

Deno.test("mod.ts imported over http from a local server builds the shim from fetched source and runs ops", async () => {
  const served: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const path = normalize(decodeURIComponent(new URL(req.url).pathname));
    served.push(path);
    try {
      const body = await Deno.readFile(join(ROOT, path));
      return new Response(body, { headers: { "content-type": TYPES[extname(path)] ?? "text/plain" } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  try {
    const url = `http://127.0.0.1:${server.addr.port}/mod.ts`;
    const script = `import * as t from "${url}";
      const out = t.tidy(() => t.toArray(t.add(t.tensor([1, 2]), t.tensor([3, 4]))));
      console.log(JSON.stringify(out));`;
    const cache = await Deno.makeTempDir({ prefix: "dino-url-test-" });
    const r = await new Deno.Command(Deno.execPath(), {
      // the permissions the README and mod.ts document for a URL import, and no more
      args: ["run", ...PERMISSIONS, "--allow-net", "--allow-import", "--reload", "--no-lock", "--no-config", "-"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { DENO_DIR: join(cache, "deno") },
    }).spawn();
    const writer = r.stdin.getWriter();
    await writer.write(new TextEncoder().encode(script));
    await writer.close();
    const { code, stdout, stderr } = await r.output();
    await Deno.remove(cache, { recursive: true });
    const err = new TextDecoder().decode(stderr);
    assert.equal(code, 0, err);
    assert.equal(new TextDecoder().decode(stdout).trim(), "[4,6]");
    for (const name of NATIVE_SOURCES) {
      assert.ok(served.includes(`/native/${name}`), `the shim source ${name} was fetched over http: ${served}`);
    }
  } finally {
    await server.shutdown();
  }
});
