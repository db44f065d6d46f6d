/**
 * PyTorch's checkpoint format, as `torch.save` writes it since 1.6: a zip
 * holding `<name>/data.pkl` (a pickle of the saved object) and one file per
 * tensor storage under `<name>/data/`, little-endian. The pickle is read by
 * {@linkcode unpickle} with only the globals a state dict needs
 * (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`, the typed storage
 * classes, `collections.OrderedDict`, `argparse.Namespace`); tensors stay
 * {@linkcode TensorRef}s until {@linkcode pthTensor} makes them, so a full
 * checkpoint's optimizer state costs nothing unless asked for.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readPth } from "./pth.ts";
 * // The legacy (pre-1.6) format is refused with the way to convert it.
 * const path = Deno.makeTempFileSync({ suffix: ".pth" });
 * Deno.writeFileSync(path, Uint8Array.from([0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8]));
 * assert.throws(() => readPth(path), /PyTorch before 1\.6.*torch\.save/);
 * Deno.removeSync(path);
 * ```
 * @module
 */
import { unzipSync } from "npm:fflate@0.8.3";
import { type DType, fromBytes, type Tensor } from "../../ffi/mod.ts";
import { PickleError, PickleGlobal, type PickleValue, unpickle } from "./pickle.ts";

/** A file that is not a readable `torch.save` zip, or that holds more than a state dict. */
export class PthError extends Error {
  /** An error about `path`. */
  constructor(path: string, message: string) {
    super(`${path}: ${message}`);
    this.name = "PthError";
  }
}

const STORAGES: Record<string, { dtype: DType; size: number }> = {
  FloatStorage: { dtype: "f32", size: 4 },
  HalfStorage: { dtype: "f16", size: 2 },
  BFloat16Storage: { dtype: "bf16", size: 2 },
  DoubleStorage: { dtype: "f64", size: 8 },
  LongStorage: { dtype: "i64", size: 8 },
  IntStorage: { dtype: "i32", size: 4 },
  ShortStorage: { dtype: "i16", size: 2 },
  CharStorage: { dtype: "i8", size: 1 },
  ByteStorage: { dtype: "u8", size: 1 },
  BoolStorage: { dtype: "bool", size: 1 },
};

/** A storage's element type and length; its bytes are unpacked from the zip when a tensor first needs them. */
class Storage {
  #bytes: Uint8Array | undefined;
  constructor(
    readonly key: string,
    readonly dtype: DType,
    readonly size: number,
    readonly byteLength: number,
    private readonly load: () => Uint8Array,
  ) {}
  /** The storage's bytes (unpacked once). */
  get bytes(): Uint8Array {
    return (this.#bytes ??= this.load());
  }
}

/** A tensor of a `.pth` file, not yet made: its storage, offset, shape and strides (in elements). */
export class TensorRef {
  /** A view of `storage`. */
  constructor(
    readonly storage: {
      readonly key: string;
      readonly dtype: DType;
      readonly size: number;
      readonly bytes: Uint8Array;
    },
    readonly offset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
  ) {}
  /** The element type. */
  get dtype(): DType {
    return this.storage.dtype;
  }
}

/** The object a `.pth` file holds, with {@linkcode TensorRef}s where its tensors are. */
export interface PthFile {
  /** The saved object: a state dict, or a record of them (`student`, `teacher`, `args`, ...). */
  root: PickleValue;
}

const LEGACY_MAGIC = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8];

function isInts(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((x) => Number.isSafeInteger(x) && x >= 0);
}

/** Whether `bytes` starts as a zip (local file header or an empty archive). */
export function isZip(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b && (bytes[2] === 3 || bytes[2] === 5);
}

/**
 * Reads a `.pth` file's object without making any tensor. Refuses the legacy
 * (pre-1.6) format, anything that is not a zip, truncated or corrupt zips,
 * storages that do not hold their views, and pickles naming other globals.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readPth } from "./pth.ts";
 * const path = Deno.makeTempFileSync({ suffix: ".pth" });
 * Deno.writeTextFileSync(path, "not a checkpoint");
 * assert.throws(() => readPth(path), /not a PyTorch checkpoint/);
 * Deno.removeSync(path);
 * ```
 */
export function readPth(path: string): PthFile {
  const bytes = Deno.readFileSync(path);
  return decodePth(bytes, path);
}

/**
 * Reads `.pth` bytes (see {@linkcode readPth}); `source` names them in errors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodePth } from "./pth.ts";
 * assert.throws(() => decodePth(new Uint8Array([0x50, 0x4b, 3, 4, 0]), "x.pth"), /x\.pth: .*truncated or corrupt/);
 * ```
 */
export function decodePth(bytes: Uint8Array, source = "buffer"): PthFile {
  const fail = (message: string): never => {
    throw new PthError(source, message);
  };
  if (LEGACY_MAGIC.every((b, i) => bytes[i] === b) || (bytes[0] === 0x80 && bytes[1] === 2 && !isZip(bytes))) {
    fail(
      "saved in the format of PyTorch before 1.6, which is not read here: convert it with " +
        `python -c "import torch; torch.save(torch.load('F'), 'F2')" (PyTorch >= 1.6), ` +
        "then pass F2",
    );
  }
  if (!isZip(bytes)) {
    fail(
      "not a PyTorch checkpoint (torch.save's zip) nor safetensors: pass a .pth from torch.save (PyTorch >= 1.6) " +
        "or a .safetensors file",
    );
  }
  // The zip's directory first: names and sizes, nothing unpacked but the pickle. Storages are unpacked one by one
  // when a tensor is made, so a full checkpoint's optimizer state costs nothing unless it is asked for.
  const sizes = new Map<string, number>();
  const unpack = (name: string): Uint8Array => {
    try {
      const data = unzipSync(bytes, { filter: (f) => f.name === name })[name];
      if (data) return data;
    } catch (e) {
      return fail(
        `a truncated or corrupt zip (${e instanceof Error ? e.message : e}): download or save the file again`,
      );
    }
    return fail(`a truncated or corrupt zip (${name} cannot be read): download or save the file again`);
  };
  try {
    unzipSync(bytes, {
      filter: (f) => {
        sizes.set(f.name, f.originalSize);
        return false;
      },
    });
  } catch (e) {
    return fail(
      `a truncated or corrupt zip (${e instanceof Error ? e.message : e}): download or save the file again`,
    );
  }
  const names = [...sizes.keys()];
  const pkl = names.filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (names.some((n) => /^[^/]+\/(constants\.pkl|code\/)/.test(n))) {
    fail(
      "a TorchScript archive (torch.jit.save), not a checkpoint: save its weights with torch.save(model.state_dict(), 'F.pth')",
    );
  }
  if (pkl.length !== 1) fail(`a zip without a single <name>/data.pkl: not a torch.save checkpoint`);
  const dir = pkl[0].slice(0, -"data.pkl".length);
  if (sizes.has(`${dir}byteorder`) && new TextDecoder().decode(unpack(`${dir}byteorder`)).trim() !== "little") {
    fail("a big-endian checkpoint: save it again on a little-endian machine");
  }
  const storages = new Map<string, Storage>();
  const persistentLoad = (pid: PickleValue): PickleValue => {
    if (!Array.isArray(pid) || pid[0] !== "storage" || pid.length !== 5) {
      throw new PickleError(`a persistent id that is not a tensor storage`);
    }
    const [, type, key, , numel] = pid;
    const kind = type instanceof PickleGlobal ? type.name.replace(/^torch\./, "") : "";
    if (!Object.hasOwn(STORAGES, kind)) throw new PickleError("a storage of an unknown type");
    if (typeof key !== "string" || !Number.isSafeInteger(numel) || (numel as number) < 0) {
      throw new PickleError("a malformed storage reference");
    }
    const known = storages.get(key);
    if (known) return known;
    const name = `${dir}data/${key}`;
    const stored = sizes.get(name);
    if (stored === undefined) throw new PickleError(`storage ${key} is missing from the zip (${name})`);
    const { dtype, size } = STORAGES[kind];
    const byteLength = (numel as number) * size;
    if (stored < byteLength) {
      throw new PickleError(`storage ${key} holds ${stored} bytes, not the ${numel} ${dtype} elements it claims`);
    }
    const storage = new Storage(key, dtype, size, byteLength, () => {
      const data = unpack(name);
      if (data.length < byteLength) fail(`storage ${key} holds ${data.length} bytes, not the ${byteLength} it claims`);
      return data.subarray(0, byteLength);
    });
    storages.set(key, storage);
    return storage;
  };
  const rebuild = (storage: PickleValue, offset: PickleValue, shape: PickleValue, stride: PickleValue) => {
    if (!(storage instanceof Storage)) throw new PickleError("a tensor without a storage");
    if (!Number.isSafeInteger(offset) || (offset as number) < 0 || !isInts(shape) || !isInts(stride)) {
      throw new PickleError("a tensor with a malformed offset, shape or stride");
    }
    if (shape.length !== stride.length) throw new PickleError("a tensor whose shape and stride differ in length");
    const numel = shape.reduce((a, b) => a * b, 1);
    const last = numel === 0 ? 0 : shape.reduce((a, n, i) => a + (n - 1) * stride[i], offset as number) + 1;
    if (last * storage.size > storage.byteLength) {
      throw new PickleError(
        `a tensor [${shape}] at offset ${offset} with strides [${stride}] reaches past its storage ${storage.key}`,
      );
    }
    return new TensorRef(storage, offset as number, shape, stride);
  };
  const globals: Record<string, (...args: PickleValue[]) => PickleValue> = {
    "torch._utils._rebuild_tensor_v2": (storage, offset, shape, stride) => rebuild(storage, offset, shape, stride),
    "torch._utils._rebuild_tensor": (storage, offset, shape, stride) => rebuild(storage, offset, shape, stride),
    "torch._utils._rebuild_parameter": (data) => {
      if (!(data instanceof TensorRef)) throw new PickleError("a parameter without a tensor");
      return data;
    },
    "torch._utils._rebuild_parameter_with_state": (data) => {
      if (!(data instanceof TensorRef)) throw new PickleError("a parameter without a tensor");
      return data;
    },
  };
  for (const name of Object.keys(STORAGES)) {
    globals[`torch.${name}`] = () => {
      throw new PickleError(`the pickle calls torch.${name}, which a state dict only names`);
    };
  }
  try {
    const root = unpickle(unpack(pkl[0]), { globals, persistentLoad });
    return { root };
  } catch (e) {
    if (e instanceof PickleError) return fail(e.message);
    throw e;
  }
}

/**
 * Makes the tensor a {@linkcode TensorRef} describes (a contiguous copy of its view).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { toArray } from "../../mod.ts";
 * import { pthTensor, TensorRef } from "./pth.ts";
 * const storage = { key: "0", dtype: "f32" as const, size: 4, bytes: new Uint8Array(new Float32Array([0, 1, 2, 3, 4, 5]).buffer) };
 * using t = pthTensor(new TensorRef(storage, 1, [2, 2], [1, 3])); // a transposed view starting at element 1
 * assert.deepEqual([t.shape, toArray(t)], [[2, 2], [1, 4, 2, 5]]); // row-major values
 * ```
 */
export function pthTensor(ref: TensorRef): Tensor {
  const { shape, stride, offset } = ref;
  const size = ref.storage.size;
  const numel = shape.reduce((a, b) => a * b, 1);
  let contiguous = true;
  for (let i = shape.length - 1, expect = 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== expect) contiguous = false;
    expect *= shape[i];
  }
  if (contiguous) {
    return fromBytes(ref.storage.bytes.subarray(offset * size, (offset + numel) * size), ref.dtype, shape);
  }
  const out = new Uint8Array(numel * size);
  const index = new Array(shape.length).fill(0);
  for (let n = 0; n < numel; n++) {
    let at = offset;
    for (let d = 0; d < shape.length; d++) at += index[d] * stride[d];
    out.set(ref.storage.bytes.subarray(at * size, (at + 1) * size), n * size);
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++index[d] < shape[d]) break;
      index[d] = 0;
    }
  }
  return fromBytes(out, ref.dtype, shape);
}
