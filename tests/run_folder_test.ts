import assert from "node:assert/strict";
import { join } from "node:path";
import { EpochRecords, keepRecords } from "../cli/run_folder.ts";

const lines = (path: string) => Deno.readTextFileSync(path).split("\n").filter((l) => l !== "");

Deno.test("keepRecords keeps the records its test accepts and drops blank, cut-short and non-object lines", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const path = join(dir, "metrics.jsonl");
    keepRecords(path, () => true); // no file: nothing to do, nothing made
    assert.throws(() => Deno.statSync(path), Deno.errors.NotFound);
    Deno.writeTextFileSync(path, '{"step":1}\n\n{"step":2}\nnull\n[3]\n"x"\n{"step":3}\n{"step":4,"lo');
    keepRecords(path, (r) => r.step <= 2);
    assert.deepEqual(lines(path), ['{"step":1}', '{"step":2}']);
    Deno.writeTextFileSync(path, 'null\n"x"\n7\n{"a":1}\n');
    keepRecords(path, () => true);
    assert.deepEqual(lines(path), ['{"a":1}']);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("EpochRecords writes config.json with the first record, and a resumed run keeps the earlier epochs' records", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const records = new EpochRecords(dir, { lr: 0.1 });
    assert.equal(records.written, false);
    assert.throws(() => Deno.statSync(join(dir, "config.json")), Deno.errors.NotFound);
    records.record({ epoch: 0, loss: 2 });
    records.record({ epoch: 1, loss: 1 });
    records.close();
    assert.equal(records.written, true);
    assert.deepEqual(JSON.parse(Deno.readTextFileSync(join(dir, "config.json"))), { lr: 0.1 });
    assert.deepEqual(lines(join(dir, "metrics.jsonl")).map((l) => JSON.parse(l).epoch), [0, 1]);

    // resumed after 1 epoch: the second epoch's record (a run killed after writing it) goes, the next ones append
    const resumed = new EpochRecords(dir, { lr: 0.1 });
    resumed.resume(1);
    assert.equal(resumed.written, true);
    resumed.record({ epoch: 1, loss: 0.5 });
    resumed.close();
    assert.deepEqual(lines(join(dir, "metrics.jsonl")).map((l) => JSON.parse(l)), [
      { epoch: 0, loss: 2 },
      { epoch: 1, loss: 0.5 },
    ]);
    records.json("summary.json", { top1: 50 });
    assert.equal(Deno.readTextFileSync(records.path("summary.json")), '{\n  "top1": 50\n}\n');
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
