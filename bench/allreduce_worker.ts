/**
 * One rank of bench/compare_distributed.ts's all-reduce benchmark (this
 * project's side): joins the group from RANK, WORLD_SIZE and MASTER_PORT,
 * makes tensors of the shapes given as JSON, and times `allReduce(..., { op:
 * "mean" })` of all of them (bucketed as DDP, 25 MB). Rank 0 prints one line
 * of JSON: the seconds of each call, after warmups.
 *
 * usage: allreduce_worker.ts SHAPES_JSON CALLS
 * @module
 */
import { allReduce, dispose, ones, ProcessGroup } from "../mod.ts";

const [shapesJson, callsText] = Deno.args;
const shapes: number[][] = JSON.parse(shapesJson);
const calls = Number(callsText);
const rank = Number(Deno.env.get("RANK")), worldSize = Number(Deno.env.get("WORLD_SIZE"));
using group = ProcessGroup.join({ rank, worldSize, port: Number(Deno.env.get("MASTER_PORT")), timeoutSeconds: 60 });
const grads = shapes.map((s) => ones(s));
const times: number[] = [];
for (let i = 0; i < calls + 2; i++) {
  const t0 = performance.now();
  const out = allReduce(grads, group, { op: "mean" });
  const dt = (performance.now() - t0) / 1000;
  dispose(out);
  if (i >= 2) times.push(dt); // two warmups: connections, buffers
}
dispose(grads);
if (rank === 0) console.log(JSON.stringify(times));
