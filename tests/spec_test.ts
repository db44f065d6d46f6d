// Each op is written three times: a row of the C table (native/*.cpp), a symbol in ffi/spec.ts and a wrapper in
// ffi/. These tests check the three against each other from the sources alone (no libtorch is loaded).
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { NATIVE_SOURCES } from "../ffi/build.ts";
import { symbols } from "../ffi/spec.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const NATIVE = join(ROOT, "native");
const FFI = join(ROOT, "ffi");

/** An entry point as Deno FFI sees it. */
interface Signature {
  parameters: string[];
  result: string;
}

/** The text from the "(" at `open` to its matching ")", without the two. */
function balanced(text: string, open: number): string {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === "(") depth++;
    if (text[i] === ")" && --depth === 0) return text.slice(open + 1, i);
  }
  throw new Error(`unbalanced parentheses from: ${text.slice(open, open + 80)}`);
}

/** Splits on the commas that are not inside parentheses. */
function splitTop(text: string): string[] {
  const out: string[] = [];
  let depth = 0, start = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === "(") depth++;
    if (text[i] === ")") depth--;
    if (text[i] === "," && depth === 0) {
      out.push(text.slice(start, i));
      start = i + 1;
    }
  }
  out.push(text.slice(start));
  return out.map((s) => s.trim()).filter(Boolean);
}

const C_TYPES: Record<string, string> = {
  T: "pointer",
  G: "pointer",
  L: "pointer",
  "Ctx*": "buffer",
  double: "f64",
  int: "i32",
  int64_t: "i64",
  bool: "bool",
  "const char*": "buffer",
  "void*": "buffer",
  "const void*": "buffer",
  void: "void",
};

/** The Deno FFI type of a C type; any other pointer is a handle. */
function ffiType(cType: string, where: string): string {
  const type = cType.replace(/\s*\*/g, "*").trim();
  const mapped = C_TYPES[type] ?? (type.endsWith("*") ? "pointer" : undefined);
  if (mapped === undefined) throw new Error(`${where}: no Deno FFI type for the C type "${cType}"`);
  return mapped;
}

/** The FFI parameters of one C parameter: `INTS(x)` and `TENSORS(x)` are a buffer and its length. */
function ffiParameters(param: string, where: string): string[] {
  if (/^(INTS|TENSORS)\(\w+\)$/.test(param)) return ["buffer", "i32"];
  const m = param.match(/^(.*?)\s*\b\w+$/);
  if (!m || !m[1]) throw new Error(`${where}: cannot read the parameter "${param}"`);
  return [ffiType(m[1], where)];
}

const RESULTS: Record<string, string> = { TENSOR: "pointer", LIST: "pointer", SCALAR: "f64" };

/** Every `dn_` entry point of the C sources, by name: macro rows and explicit `extern "C"` functions. */
function nativeEntryPoints(): Map<string, Signature> {
  const text = NATIVE_SOURCES.map((name) => Deno.readTextFileSync(join(NATIVE, name))).join("\n");
  // Shorthand rows, e.g. `#define UNARY(name) TENSOR(name, (T a), at::name(*a))`: the macro, its kind and params.
  const shorthands = new Map<string, { kind: string; params: string }>();
  for (const m of text.matchAll(/^#define (\w+)\((\w+)[^)]*\) (TENSOR|LIST|SCALAR)\(\2, \(/gm)) {
    shorthands.set(m[1], { kind: m[3], params: balanced(text, m.index + m[0].length - 1) });
  }
  const out = new Map<string, Signature>();
  const add = (name: string, params: string[], result: string) => {
    assert.ok(!out.has(name), `the C entry point ${name} is defined twice`);
    out.set(name, { parameters: params.flatMap((p) => ffiParameters(p, name)), result });
  };
  const kinds = ["TENSOR", "LIST", "SCALAR", ...shorthands.keys()].join("|");
  for (const m of text.matchAll(new RegExp(`^(${kinds})\\(`, "gm"))) {
    const args = splitTop(balanced(text, m.index + m[0].length - 1));
    const name = `dn_${args[0]}`;
    const short = shorthands.get(m[1]);
    const kind = short?.kind ?? m[1];
    const params = short ? short.params : args[1].replace(/^\(|\)$/g, "");
    add(name, ["Ctx* ctx_", ...splitTop(params)], RESULTS[kind]);
  }
  for (const m of text.matchAll(/^extern "C" ([\w\s*]+?)\s*\b(dn_\w+)\s*(ARGS)?\(/gm)) {
    const params = splitTop(balanced(text, m.index + m[0].length - 1));
    add(m[2], m[3] ? ["Ctx* ctx_", ...params] : params, ffiType(m[1], m[2]));
  }
  return out;
}

/** Every symbol of ffi/spec.ts, by its C name. */
function specSymbols(): Map<string, Signature> {
  return new Map(
    Object.entries(symbols).map(([key, def]) => {
      const name = "name" in def && def.name ? def.name : `dn_${key}`;
      return [name, { parameters: [...def.parameters] as string[], result: def.result }];
    }),
  );
}

function ffiSources(dir = FFI): { path: string; text: string }[] {
  return [...Deno.readDirSync(dir)].flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory) return ffiSources(path);
    return e.name.endsWith(".ts") ? [{ path, text: Deno.readTextFileSync(path) }] : [];
  });
}

Deno.test("NATIVE_SOURCES in ffi/build.ts lists every file in native/ (each compiled or hashed into the shim)", () => {
  const files = [...Deno.readDirSync(NATIVE)].filter((e) => e.isFile).map((e) => e.name).sort();
  assert.deepEqual([...NATIVE_SOURCES].sort(), files);
});

Deno.test("every C entry point in native/*.cpp has a symbol in ffi/spec.ts and back, with the same parameter and result types", () => {
  const c = nativeEntryPoints();
  const spec = specSymbols();
  const onlyC = [...c.keys()].filter((name) => !spec.has(name));
  const onlySpec = [...spec.keys()].filter((name) => !c.has(name));
  assert.deepEqual(onlyC, [], `C entry points without a symbol in ffi/spec.ts: ${onlyC.join(", ")}`);
  assert.deepEqual(onlySpec, [], `ffi/spec.ts symbols without a C entry point: ${onlySpec.join(", ")}`);
  const differ = [...c].filter(([name, sig]) => JSON.stringify(sig) !== JSON.stringify(spec.get(name)))
    .map(([name, sig]) => `${name}: C ${JSON.stringify(sig)}, spec ${JSON.stringify(spec.get(name))}`);
  assert.deepEqual(differ, [], `signatures that differ:\n${differ.join("\n")}`);
});

Deno.test("every symbol in ffi/spec.ts is called by ffi/ TypeScript (native.<name>, or a name passed to native[...])", () => {
  const used = new Set<string>();
  for (const { path, text } of ffiSources()) {
    if (path.endsWith("spec.ts")) continue;
    for (const m of text.matchAll(/\bnative\.(\w+)/g)) used.add(m[1]);
    // Computed calls, `native[op](...)`: the string literals of the file are the names, also through templates
    // such as `${op}_scalar`.
    if (!/\bnative\[/.test(text)) continue;
    const literals = [...text.matchAll(/"(\w+)"/g)].map((m) => m[1]);
    const suffixes = [...text.matchAll(/`\$\{\w+\}(\w+)`/g)].map((m) => m[1]);
    for (const s of literals) {
      used.add(s);
      for (const suffix of suffixes) used.add(s + suffix);
    }
  }
  const unused = Object.keys(symbols).filter((name) => !used.has(name));
  assert.deepEqual(unused, [], `symbols no ffi/ code calls: ${unused.join(", ")}`);
});
