// Fuzzing the .pth reader (lib/weights/pth.ts, lib/weights/pickle.ts): mutated pickles inside well-formed zips,
// and mutated zips, are each read as a state dict or refused with a one-line PthError naming the file; nothing
// else escapes (no TypeError, RangeError or native error), no tensor leaks, and no pickle runs code or names a
// global outside the allowed table. Decoding is plain TypeScript until the tensors are made from checked
// storages, so the cases run in this process.
//
// DINO_FUZZ_CASES=5000 deno test -A tests/fuzz_pth_test.ts runs more of them.
import assert from "node:assert/strict";
import { join } from "node:path";
import { unzipSync, zipSync } from "npm:fflate@0.8.3";
import { dispose, liveTensors } from "../mod.ts";
import { PthError } from "../lib/weights/pth.ts";
import { readWeights } from "../lib/weights/read.ts";
import { FUZZ_SEED, fuzzCases, messageProblem, Rng, summarize } from "./fuzz_helpers.ts";

const DIR = new URL("./fixtures/pth/", import.meta.url).pathname;

/** Opcodes a mutation may splice in: every one the reader knows, and some it refuses. */
const OPCODES = [..."(.012FIJKLMNPQRSTUVXabcdeghijlpqrstu}])", "\x80", "\x81", "\x85", "\x86", "\x87", "\x88", "\x89"]
  .map((c) => c.charCodeAt(0)).concat([0x8a, 0x8b, 0x8c, 0x8d, 0x8e, 0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96]);

function mutate(bytes: Uint8Array, r: Rng): Uint8Array<ArrayBuffer> {
  const out = Array.from(bytes);
  const edits = 1 + r.int(4);
  for (let e = 0; e < edits; e++) {
    const at = r.int(out.length + 1);
    switch (r.int(6)) {
      case 0: // flip a byte
        if (out.length) out[Math.min(at, out.length - 1)] = r.int(256);
        break;
      case 1: // splice in an opcode
        out.splice(at, 0, r.pick(OPCODES));
        break;
      case 2: // delete a run
        out.splice(at, 1 + r.int(8));
        break;
      case 3: { // duplicate a run
        const from = r.int(out.length);
        out.splice(at, 0, ...out.slice(from, from + 1 + r.int(16)));
        break;
      }
      case 4: // truncate
        out.length = at;
        break;
      default: // a boundary integer in place
        out.splice(
          at,
          4,
          ...r.pick([[0xff, 0xff, 0xff, 0xff], [0, 0, 0, 0x80], [0xff, 0xff, 0xff, 0x7f], [1, 0, 0, 0]]),
        );
    }
  }
  return Uint8Array.from(out);
}

Deno.test("fuzzed .pth files are read or refused with one line, and nothing else escapes", () => {
  const n = fuzzCases(400);
  const sources = ["kinds.pth", "full.pth", "backbone.pth"].map((f) => Deno.readFileSync(join(DIR, f)));
  const dir = Deno.makeTempDirSync();
  const path = join(dir, "fuzz.pth");
  const before = liveTensors();
  const failures: string[] = [];
  const outcomes: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const r = new Rng(FUZZ_SEED, i);
    const source = r.pick(sources);
    let bytes: Uint8Array;
    let kind: string;
    if (r.chance(0.75)) {
      // A well-formed zip around a mutated pickle (or a mutated storage): the pickle reader's own checks.
      kind = "pickle";
      const files = unzipSync(source);
      const names = Object.keys(files);
      const target = r.chance(0.85) ? names.find((k) => k.endsWith("data.pkl"))! : r.pick(names);
      files[target] = mutate(files[target], r);
      bytes = zipSync(files, { level: 0 });
    } else {
      kind = "zip";
      bytes = mutate(source, r);
    }
    Deno.writeFileSync(path, bytes);
    try {
      const { tensors } = readWeights(path);
      outcomes.read = (outcomes.read ?? 0) + 1;
      dispose(tensors);
    } catch (e) {
      const err = e as Error;
      outcomes.refused = (outcomes.refused ?? 0) + 1;
      const problem = messageProblem(err.message);
      if (!(e instanceof PthError)) failures.push(`case ${i} (${kind}): ${err.name}: ${err.message}`);
      else if (problem) failures.push(`case ${i} (${kind}): ${problem}: ${JSON.stringify(err.message.slice(0, 300))}`);
      else if (!err.message.startsWith(`${path}: `)) {
        failures.push(`case ${i} (${kind}): the message does not name the file`);
      }
    }
    if (liveTensors() !== before) {
      failures.push(`case ${i} (${kind}): ${liveTensors() - before} tensors leaked`);
      break;
    }
  }
  Deno.removeSync(dir, { recursive: true });
  console.log(`${n} cases (seed ${FUZZ_SEED}): ${JSON.stringify(outcomes)}`);
  assert.deepEqual(failures, [], summarize(failures));
  assert.ok((outcomes.read ?? 0) > 0 && (outcomes.refused ?? 0) > 0, "both outcomes occur");
});
