/**
 * A restricted reader of Python pickles: it builds only what a PyTorch state
 * dict holds (dicts, lists, tuples, numbers, strings, bytes, None, booleans)
 * and hands every global to a table of allowed constructors. A pickle that
 * names anything else (`os.system`, `builtins.eval`, ...) is refused with an
 * error naming it, before anything is built: reading never runs code.
 *
 * Dicts become plain records (non-string keys as their text, so an
 * optimizer's `state[0]` is `state["0"]`); tuples and lists become arrays.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { unpickle } from "./pickle.ts";
 * // pickle.dumps({"a": [1, 2.5, None]}, protocol=2)
 * const bytes = Uint8Array.from([
 *   0x80, 2, 0x7d, 0x71, 0, 0x58, 1, 0, 0, 0, 0x61, 0x71, 1, 0x5d, 0x71, 2, 0x28, 0x4b, 1,
 *   0x47, 0x40, 4, 0, 0, 0, 0, 0, 0, 0x4e, 0x65, 0x73, 0x2e,
 * ]);
 * assert.deepEqual(unpickle(bytes), { a: [1, 2.5, null] });
 * assert.throws(() => unpickle(new TextEncoder().encode("cos\nsystem\n.")), /os\.system/);
 * ```
 * @module
 */

/** A value a restricted pickle can hold; `Persistent` and the constructors' results come from the caller. */
export type PickleValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PickleValue[]
  | { [key: string]: PickleValue }
  | object;

/** A pickle this reader refuses or cannot read. */
export class PickleError extends Error {
  /** An error with `message`. */
  constructor(message: string) {
    super(message);
    this.name = "PickleError";
  }
}

/** What `unpickle` may build: allowed globals by `module.name`, and the persistent-id loader. */
export interface PickleOptions {
  /**
   * Allowed globals: each is called with the arguments of `REDUCE`/`NEWOBJ`.
   * A global not listed here is refused.
   */
  globals?: Record<string, (...args: PickleValue[]) => PickleValue>;
  /** Turns a persistent id (`BINPERSID`) into a value; without it, persistent ids are refused. */
  persistentLoad?: (pid: PickleValue) => PickleValue;
}

/** Marks a record built by `NEWOBJ` (an `argparse.Namespace`), so `BUILD` may fill it. */
const BUILDABLE = Symbol("buildable");
/** Marks a dict whose `BUILD` state is attributes, not items (a state dict's `_metadata`): dropped. */
const ATTRIBUTES = Symbol("attributes");

/** The mark on the stack that `MARK` pushes. */
const MARK = Symbol("mark");

/** A global the stack holds until it is called (or, like a storage class, passed as a value). */
export class PickleGlobal {
  /** The global `module.name` and what calling it builds. */
  constructor(readonly name: string, readonly fn: (...args: PickleValue[]) => PickleValue) {}
}

/** Text from the file, quoted on one line and cut to a readable length, for messages. */
function quoted(text: string): string {
  const q = JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}...` : text);
  return q.replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** A dict key as record text: Python's str() of ints, floats, booleans and None. */
function keyText(k: unknown): string {
  if (typeof k === "string") return k;
  if (typeof k === "number" || typeof k === "bigint") return String(k);
  if (k === null) return "None";
  if (typeof k === "boolean") return k ? "True" : "False";
  if (Array.isArray(k)) return `(${k.map(keyText).join(", ")})`;
  throw new PickleError(`a dict key of an unsupported kind (${typeof k})`);
}

/** Sets `key` as an own property even when it is `__proto__`. */
function setKey(record: Record<string, unknown>, key: unknown, value: unknown): void {
  Object.defineProperty(record, keyText(key), { value, enumerable: true, writable: true, configurable: true });
}

/** The globals every state dict may name: containers and `argparse.Namespace`. */
export const BASE_GLOBALS: Record<string, (...args: PickleValue[]) => PickleValue> = {
  "collections.OrderedDict": () => Object.defineProperty({}, ATTRIBUTES, { value: true }),
  "builtins.dict": () => ({}),
  "builtins.list": () => [],
  "builtins.set": (items = []) => [...(items as PickleValue[])],
  "builtins.frozenset": (items = []) => [...(items as PickleValue[])],
  "__builtin__.set": (items = []) => [...(items as PickleValue[])],
  "argparse.Namespace": () => Object.defineProperty({}, BUILDABLE, { value: true }),
  // Protocol 2 writes bytes as _codecs.encode(text, "latin1").
  "_codecs.encode": (text, encoding = "utf-8") => {
    if (typeof text !== "string") throw new PickleError("_codecs.encode of a non-string");
    if (encoding === "latin1" || encoding === "latin-1") return Uint8Array.from(text, (c) => c.charCodeAt(0) & 0xff);
    return new TextEncoder().encode(text);
  },
};

/**
 * Reads a pickle (protocols 0 to 4, and 5 without out-of-band buffers) with
 * only the allowed globals.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { unpickle } from "./pickle.ts";
 * // pickle.dumps(collections.OrderedDict(x=1), protocol=2): an allowed global
 * const od = Uint8Array.from([
 *   0x80, 2, 0x63, ...new TextEncoder().encode("collections\nOrderedDict\n"), 0x71, 0, 0x29, 0x52, 0x71, 1,
 *   0x58, 1, 0, 0, 0, 0x78, 0x71, 2, 0x4b, 1, 0x73, 0x2e,
 * ]);
 * assert.deepEqual(unpickle(od), { x: 1 });
 * ```
 */
export function unpickle(bytes: Uint8Array, o: PickleOptions = {}): PickleValue {
  const globals = { ...BASE_GLOBALS, ...o.globals };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const text = new TextDecoder("utf-8", { fatal: true });
  const latin1 = new TextDecoder("latin1");
  let pos = 0;
  let stack: unknown[] = [];
  const marks: unknown[][] = [];
  const memo = new Map<number, unknown>();

  const need = (n: number) => {
    if (n < 0 || pos + n > bytes.length) {
      throw new PickleError(`the pickle ends early (needs ${n} bytes at offset ${pos} of ${bytes.length})`);
    }
    const at = pos;
    pos += n;
    return at;
  };
  const u8 = () => bytes[need(1)];
  const u16 = () => view.getUint16(need(2), true);
  const u32 = () => view.getUint32(need(4), true);
  const u64 = () => {
    const v = view.getBigUint64(need(8), true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new PickleError(`a length of ${v} bytes`);
    return Number(v);
  };
  const line = () => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) throw new PickleError(`the pickle ends early (a line at offset ${pos} has no end)`);
    const s = latin1.decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const raw = (n: number) => bytes.subarray(need(n), pos);
  const utf8 = (n: number) => {
    try {
      return text.decode(raw(n));
    } catch {
      throw new PickleError(`a string at offset ${pos - n} is not valid UTF-8`);
    }
  };
  const pop = (): unknown => {
    if (stack.length === 0) throw new PickleError(`the pickle pops an empty stack at offset ${pos - 1}`);
    const v = stack.pop();
    if (v === MARK) throw new PickleError(`the pickle pops a mark at offset ${pos - 1}`);
    return v;
  };
  const top = (): unknown => {
    if (stack.length === 0) throw new PickleError(`the pickle reads an empty stack at offset ${pos - 1}`);
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const items = stack;
    const outer = marks.pop();
    if (!outer) throw new PickleError(`the pickle closes a mark it never opened at offset ${pos - 1}`);
    stack = outer;
    return items;
  };
  const global = (module: string, name: string): PickleGlobal => {
    const full = `${module}.${name}`;
    const fn = Object.hasOwn(globals, full) ? globals[full] : undefined;
    if (!fn) {
      throw new PickleError(
        `the pickle names the global ${
          /^[\w.]{1,200}$/.test(full) ? full : quoted(full)
        }, which a weights file has no need for: refused (loading never runs code)`,
      );
    }
    return new PickleGlobal(full, fn);
  };
  const call = (f: unknown, args: unknown): unknown => {
    if (!(f instanceof PickleGlobal)) throw new PickleError(`the pickle calls something that is not an allowed global`);
    if (!Array.isArray(args)) throw new PickleError(`the pickle calls ${f.name} without an argument tuple`);
    return f.fn(...(args as PickleValue[]));
  };
  const setItems = (target: unknown, items: unknown[]) => {
    if (items.length % 2 !== 0) throw new PickleError("a dict update with an odd number of items");
    if (typeof target !== "object" || target === null || Array.isArray(target) || target instanceof Uint8Array) {
      throw new PickleError("the pickle sets items on something that is not a dict");
    }
    for (let i = 0; i < items.length; i += 2) setKey(target as Record<string, unknown>, items[i], items[i + 1]);
  };
  const append = (target: unknown, items: unknown[]) => {
    if (!Array.isArray(target)) throw new PickleError("the pickle appends to something that is not a list");
    for (const item of items) target.push(item);
  };
  const put = (i: number) => memo.set(i, top());
  const get = (i: number) => {
    if (!memo.has(i)) throw new PickleError(`the pickle reads memo entry ${i}, which was never written`);
    stack.push(memo.get(i));
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) throw new PickleError(`pickle protocol ${bytes[pos - 1]} is newer than 5`);
        break;
      case 0x95: // FRAME
        u64();
        break;
      case 0x2e: { // STOP
        const v = pop();
        if (v instanceof PickleGlobal) throw new PickleError(`the pickle's value is the global ${v.name} itself`);
        return v as PickleValue;
      }
      case 0x28: // MARK
        marks.push(stack);
        stack = [];
        break;
      case 0x7d: // EMPTY_DICT
        stack.push({});
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x8f: // EMPTY_SET
        stack.push([]);
        break;
      case 0x74: // TUPLE
      case 0x6c: // LIST
      case 0x91: { // FROZENSET
        const items = popMark(); // before naming `stack`: closing the mark swaps it
        stack.push(items);
        break;
      }
      case 0x64: { // DICT
        const d = {};
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: { // TUPLE2
        const b = pop(), a = pop();
        stack.push([a, b]);
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop(), b = pop(), a = pop();
        stack.push([a, b, c]);
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        append(top(), [v]);
        break;
      }
      case 0x65: // APPENDS
      case 0x90: { // ADDITEMS
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop(), k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x71: // BINPUT
        put(u8());
        break;
      case 0x72: // LONG_BINPUT
        put(u32());
        break;
      case 0x94: // MEMOIZE
        put(memo.size);
        break;
      case 0x70: // PUT
        put(Number(line()));
        break;
      case 0x68: // BINGET
        get(u8());
        break;
      case 0x6a: // LONG_BINGET
        get(u32());
        break;
      case 0x67: // GET
        get(Number(line()));
        break;
      case 0x30: // POP
        if (stack.length === 0) popMark();
        else pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x4a: // BININT
        stack.push(view.getInt32(need(4), true));
        break;
      case 0x8a: // LONG1
      case 0x8b: { // LONG4
        const n = op === 0x8a ? u8() : u32();
        const b = raw(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
        if (n > 0 && b[n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x49: { // INT (protocol 0; I00/I01 are booleans)
        const s = line();
        if (s === "00" || s === "01") stack.push(s === "01");
        else if (/^[+-]?\d+$/.test(s)) stack.push(Number(s));
        else throw new PickleError(`a malformed INT ${quoted(s)}`);
        break;
      }
      case 0x4c: { // LONG (protocol 0)
        const s = line().replace(/L$/, "");
        if (!/^[+-]?\d+$/.test(s)) throw new PickleError(`a malformed LONG ${quoted(s)}`);
        const v = BigInt(s);
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        stack.push(view.getFloat64(need(8), false));
        break;
      case 0x46: { // FLOAT (protocol 0)
        const v = Number(line());
        if (Number.isNaN(v)) throw new PickleError("a malformed FLOAT");
        stack.push(v);
        break;
      }
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x58: // BINUNICODE
        stack.push(utf8(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(utf8(u8()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(utf8(u64()));
        break;
      case 0x54: // BINSTRING
        stack.push(latin1.decode(raw(view.getInt32(need(4), true))));
        break;
      case 0x55: // SHORT_BINSTRING
        stack.push(latin1.decode(raw(u8())));
        break;
      case 0x42: // BINBYTES
        stack.push(raw(u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(raw(u8()).slice());
        break;
      case 0x8e: // BINBYTES8
        stack.push(raw(u64()).slice());
        break;
      case 0x63: { // GLOBAL
        const module = line();
        stack.push(global(module, line()));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof module !== "string" || typeof name !== "string") throw new PickleError("a malformed STACK_GLOBAL");
        stack.push(global(module, name));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop(), f = pop();
        stack.push(call(f, args));
        break;
      }
      case 0x81: { // NEWOBJ
        const args = pop(), cls = pop();
        stack.push(call(cls, args));
        break;
      }
      case 0x92: { // NEWOBJ_EX
        const kwargs = pop(), args = pop(), cls = pop();
        if (kwargs && typeof kwargs === "object" && Object.keys(kwargs).length > 0) {
          throw new PickleError("NEWOBJ_EX with keyword arguments");
        }
        stack.push(call(cls, args));
        break;
      }
      case 0x62: { // BUILD
        const state = pop();
        const target = top();
        if (typeof target === "object" && target !== null && ATTRIBUTES in target) break;
        if (typeof target !== "object" || target === null || !(BUILDABLE in target)) {
          throw new PickleError("the pickle sets the state of an object that takes none");
        }
        if (typeof state !== "object" || state === null || Array.isArray(state)) {
          throw new PickleError("an object state that is not a dict");
        }
        for (const [k, v] of Object.entries(state)) setKey(target as Record<string, unknown>, k, v);
        break;
      }
      case 0x51: { // BINPERSID
        const pid = pop();
        if (!o.persistentLoad) throw new PickleError("the pickle refers to outside data (a persistent id)");
        stack.push(o.persistentLoad(pid as PickleValue));
        break;
      }
      case 0x50: { // PERSID
        const pid = line();
        if (!o.persistentLoad) throw new PickleError("the pickle refers to outside data (a persistent id)");
        stack.push(o.persistentLoad(pid));
        break;
      }
      default:
        throw new PickleError(
          `the pickle uses opcode 0x${op.toString(16).padStart(2, "0")} at offset ${pos - 1}, ` +
            "which a weights file has no need for",
        );
    }
  }
}
