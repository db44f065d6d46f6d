/**
 * Op times from a Chrome trace of libtorch's profiler (ours, `recordProfile`, or PyTorch's
 * `export_chrome_trace`): each op's calls, total time, and self time (its time less that of the ops it called,
 * found by nesting the events of each thread by time).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { opTimes } from "./trace.ts";
 * const ops = opTimes([
 *   { name: "aten::linear", ph: "X", ts: 0, dur: 10, tid: 1 },
 *   { name: "aten::addmm", ph: "X", ts: 2, dur: 7, tid: 1 },
 *   { name: "aten::addmm", ph: "X", ts: 20, dur: 5, tid: 1 },
 * ]);
 * assert.deepEqual(ops.get("aten::linear"), { calls: 1, totalUs: 10, selfUs: 3 });
 * assert.deepEqual(ops.get("aten::addmm"), { calls: 2, totalUs: 12, selfUs: 12 });
 * ```
 * @module
 */

/** One complete event of a Chrome trace ("ph": "X"), in microseconds. */
export interface TraceEvent {
  name: string;
  ph: string;
  ts: number;
  dur: number;
  tid: number | string;
}

/** An op's share of a trace, in microseconds. */
export interface OpTime {
  calls: number;
  totalUs: number;
  selfUs: number;
}

/** Each op's calls, total and self time in `events` (complete events only). */
export function opTimes(events: readonly TraceEvent[]): Map<string, OpTime> {
  const ops = new Map<string, OpTime>();
  const threads = new Map<string, TraceEvent[]>();
  for (const e of events) {
    if (e.ph !== "X") continue;
    const list = threads.get(String(e.tid)) ?? [];
    list.push(e);
    threads.set(String(e.tid), list);
  }
  for (const list of threads.values()) {
    list.sort((a, b) => a.ts - b.ts || b.dur - a.dur); // a parent before the child that starts with it
    const open: { end: number; op: OpTime }[] = [];
    for (const e of list) {
      while (open.length && open[open.length - 1].end <= e.ts) open.pop();
      const op = ops.get(e.name) ?? { calls: 0, totalUs: 0, selfUs: 0 };
      op.calls++;
      op.totalUs += e.dur;
      op.selfUs += e.dur;
      ops.set(e.name, op);
      if (open.length) open[open.length - 1].op.selfUs -= e.dur;
      open.push({ end: e.ts + e.dur, op });
    }
  }
  return ops;
}
