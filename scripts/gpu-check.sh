#!/usr/bin/env bash
# The CUDA check of issue 16, in one call of at most 9 minutes on a fresh GPU machine with no network and no Deno
# (the device tool: run from the repository root, `carry: [".cache/gpu"]` made by scripts/gpu-pack.sh, results
# under $OUT). Stages, each under its own timeout and the whole under a deadline (GPU_CHECK_BUDGET seconds, 530):
#
#   install  deno from .cache/gpu/deno.xz into $WORK/bin; Fashion-MNIST from .cache/gpu/fashion-mnist into
#            $FMNIST_DIR (default /usr/share/datasets/fashion-mnist, where the code looks) unless it is there
#   build    the shim against python3's PyTorch (DINO_LIBTORCH_FROM=python), CUDA and NCCL where found
#   cudnn    a CUDA convolution as the library's defaults run it (cuDNN off: libstdc++ not preloaded), then one cuDNN
#            convolution under LD_PRELOAD=libstdc++.so.6, each in a process of its own: where the second passes, the
#            stages below run with libstdc++ preloaded (cuDNN on); where it fails, with DINO_CUDNN=0
#   cuda     the tests that exercise CUDA directly (tests/ops_test.ts); the device tests (those named "... on the
#            test device ...": a ViT forward and backward, two training steps, an fp16 step with the loss scaler,
#            a batch's views and the training loop, each against the CPU) with DINO_TEST_DEVICE=cuda; plus an NCCL
#            process group of one all-reducing CUDA tensors, and the training program under a launcher's variables
#            for one process (WORLD_SIZE=1, a few steps). Each part runs even when an earlier one fails; the stage fails if any does.
#   bench    bench/step_time.ts on CUDA (the fmnist-gpu step by phase, and the host's share of it),
#            bench/compare_gpu_step.ts (official-recipe step, fp32/bf16/fp16, and augmentation on the GPU) and
#            bench/compare_inference.ts on CUDA
#   train    deno task train --preset fmnist-gpu (k-NN curve in metrics.jsonl), at most TRAIN_TIMEOUT seconds
#   suite    the whole test suite (`deno test -A --doc`, --device auto: CLI tests train on CUDA, and the device
#            tests run on CUDA again, tests/helpers.ts's testDevice being CUDA where it is available) in the time left
#
# STAGES="build cuda" (a space- or comma-separated list) runs only those, after install (always run; quick when
# done), build first and the others in the order given; BENCH_ARGS, TRAIN_ARGS and SUITE_ARGS add flags to their
# stage's command. DRY_RUN=1 runs every stage on the CPU at toy sizes (for checking this script on a machine without a
# GPU): the same install from the carried files, into a scratch folder, and the same result files.
#
# Results (at most 8 files, as the device tool brings back): $OUT/results.json (each stage's status, seconds,
# exit code; the build's libtorch, CUDA and distributed backends; the bench and training numbers), $OUT/log.txt
# (everything printed), $OUT/bench.json, $OUT/train-metrics.jsonl, $OUT/train-summary.json, $OUT/tests.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-530}
DRY=${DRY_RUN:-0}
OUT=${OUT:-$REPO/out/gpu-check}
WORK=${GPU_CHECK_WORK:-/tmp/gpu-check}
CARRY=$REPO/.cache/gpu
STAGES=$(echo "${STAGES:-build cuda bench train suite}" | tr ',' ' ')
mkdir -p "$OUT" "$WORK/bin" "$WORK/stages"
LOG=$OUT/log.txt
: >"$LOG"
export PATH=$WORK/bin:$PATH DENO_NO_UPDATE_CHECK=1 PYTHONUNBUFFERED=1 NO_COLOR=1
# A copy of the carried npm cache, so that Deno's own caches never land in .cache/gpu (and grow the next carry).
if [ -z "${DENO_DIR:-}" ]; then
  export DENO_DIR=$WORK/deno-dir
  [ -d "$DENO_DIR/npm" ] || { mkdir -p "$DENO_DIR" && cp -r "$CARRY/deno-dir/." "$DENO_DIR/"; }
fi
export DINO_CACHE_DIR=$WORK/dino-cache DINO_BENCH_PYTHON=${DINO_BENCH_PYTHON:-python3}
export DINO_LIBTORCH_FROM=${DINO_LIBTORCH_FROM:-python} DINO_PYTHON=${DINO_PYTHON:-python3}
if [ "$DRY" = 1 ]; then
  FMNIST_DIR=${FMNIST_DIR:-$WORK/fashion-mnist}
  export DINO_PYTHON=${DINO_PYTHON_DRY:-/usr/bin/python3} DINO_BENCH_PYTHON=/usr/bin/python3
else
  FMNIST_DIR=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
fi

elapsed() { echo $(($(date +%s) - START)); }
say() { echo "[gpu-check +$(elapsed)s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET - $(elapsed))); }
wanted() { [[ " $STAGES " == *" $1 "* ]]; }

# run_stage NAME TIMEOUT CMD...: runs CMD under min(TIMEOUT, time left - 5 s), its output into the log (and
# $WORK/stages/NAME.txt), and records status/seconds/code in $WORK/stages/NAME.json.
run_stage() {
  local name=$1 limit=$2
  shift 2
  local room=$(($(left) - 5))
  [ "$limit" -gt "$room" ] && limit=$room
  if [ "$limit" -lt 10 ]; then
    say "$name: skipped (no time left: ${room}s)"
    printf '{"status":"no time","seconds":0}\n' >"$WORK/stages/$name.json"
    return 1
  fi
  say "$name: start (timeout ${limit}s)"
  local t0=$(date +%s)
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$WORK/stages/$name.txt" | sed -u "s/^/[$name] /" >>"$LOG"
  local code=${PIPESTATUS[0]}
  local dt=$(($(date +%s) - t0))
  local status=ok
  [ "$code" = 124 ] || [ "$code" = 137 ] && status=timeout
  [ "$status" = ok ] && [ "$code" != 0 ] && status=failed
  printf '{"status":"%s","seconds":%d,"code":%d,"timeout":%d}\n' "$status" "$dt" "$code" "$limit" \
    >"$WORK/stages/$name.json"
  say "$name: $status (exit $code, ${dt}s); last lines:"
  tail -n 4 "$WORK/stages/$name.txt" | sed "s/^/    /" | tee -a "$LOG"
  [ "$status" = ok ]
}

stage_install() {
  python3 - "$CARRY" "$WORK/bin" "$FMNIST_DIR" <<'EOF'
import gzip, hashlib, lzma, os, shutil, sys, tarfile
carry, bindir, fmnist = sys.argv[1:4]
deno = os.path.join(bindir, "deno")
if not os.path.exists(deno):
    xz, tgz = os.path.join(carry, "deno.xz"), [f for f in os.listdir(carry) if f.endswith(".tgz")]
    if os.path.exists(xz):
        with lzma.open(xz) as src, open(deno + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst)
    elif tgz:  # the npm tarball as `npm pack` writes it
        with tarfile.open(os.path.join(carry, tgz[0])) as t, open(deno + ".tmp", "wb") as dst:
            shutil.copyfileobj(t.extractfile("package/deno"), dst)
    else:
        sys.exit(f"no deno.xz or npm tarball in {carry}: run scripts/gpu-pack.sh and carry .cache/gpu")
    os.chmod(deno + ".tmp", 0o755)
    os.replace(deno + ".tmp", deno)
    print(f"deno installed at {deno}")
names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
sizes = [47040016, 60008, 7840016, 10008]
def ok(path, size):
    try:
        with gzip.open(path) as f:
            f.seek(size - 1)
            return len(f.read(2)) == 1
    except Exception:
        return False
if all(ok(os.path.join(fmnist, n + ".gz"), s) for n, s in zip(names, sizes)):
    print(f"Fashion-MNIST already at {fmnist}")
else:
    os.makedirs(fmnist, exist_ok=True)
    for n, s in zip(names, sizes):
        cols = os.path.join(carry, "fashion-mnist", n + ".cols.xz")
        with lzma.open(cols if os.path.exists(cols) else os.path.join(carry, "fashion-mnist", n + ".xz")) as src:
            data = src.read()
        if os.path.exists(cols):  # each 28 x 28 image stored transposed (gpu-pack.sh): back to rows
            data = data[:16] + b"".join(data[i + r:i + 784:28] for i in range(16, len(data), 784) for r in range(28))
        if len(data) != s:
            sys.exit(f"{n}: {len(data)} bytes, expected {s}")
        with gzip.open(os.path.join(fmnist, n + ".gz.tmp"), "wb", compresslevel=1) as dst:
            dst.write(data)
        os.replace(os.path.join(fmnist, n + ".gz.tmp"), os.path.join(fmnist, n + ".gz"))
    print(f"Fashion-MNIST unpacked to {fmnist}")
EOF
  deno --version
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available() and torch.cuda.get_device_name())"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
}

stage_build() {
  deno run -A ffi/build.ts && deno eval '
    import { cudaAvailable, libtorchVersion } from "./mod.ts";
    import { buildShim, distributedBuild, findLibtorch } from "./ffi/build.ts";
    const lt = findLibtorch();
    const shim = await buildShim(lt);
    const d = distributedBuild(lt);
    const info = { libtorch: libtorchVersion(), source: lt.source, abi: lt.abi, libtorchCuda: lt.cuda,
      cudaHome: lt.cudaHome ?? null, cudaAvailable: cudaAvailable(), gloo: d.gloo, ncclFound: d.nccl, shim };
    console.log(JSON.stringify(info));
    Deno.writeTextFileSync(Deno.env.get("WORK") + "/build-info.json", JSON.stringify(info));'
}

stage_cudnn() {
  # One CUDA convolution, run as the library's defaults (cuDNN off: libstdc++ not preloaded) and then preloaded,
  # where cuDNN must be on.
  local conv='import * as t from "./mod.ts"; using g = new t.Generator(0);
    if (Deno.env.get("NEED_CUDNN") && !t.cudnnEnabled()) throw new Error("cuDNN is off though libstdc++ was preloaded");
    const x = t.toDevice(t.randn(g, [2, 3, 8, 8]), "cuda"), w = t.toDevice(t.randn(g, [4, 3, 3, 3]), "cuda");
    const y = t.conv2d(x, w); t.cudaSynchronize();
    console.log(`a CUDA convolution of shape ${y.shape} ran, cuDNN ${t.cudnnEnabled() ? "on" : "off"}`);'
  local rc=0
  deno eval "$conv" || rc=1
  rm -f "$WORK/cudnn-preloaded-ok"
  LD_PRELOAD=libstdc++.so.6 NEED_CUDNN=1 deno eval "$conv" && touch "$WORK/cudnn-preloaded-ok" || rc=1
  return $rc
}

stage_cuda() {
  local device=cuda
  [ "$DRY" = 1 ] && device=cpu
  local rc=0
  deno test -A tests/ops_test.ts || rc=1
  # The device tests only (the rest of these files runs in the suite stage), on CUDA: DINO_TEST_DEVICE=cuda fails
  # them where CUDA is missing rather than letting them pass on the CPU.
  DINO_TEST_DEVICE=$device deno test -A --filter "test device" tests/lib_test.ts tests/train_test.ts \
    tests/loop_test.ts tests/augment_test.ts tests/precision_test.ts || rc=1
  # NCCL (Gloo in a dry run) at world size 1: a process group of one, through the library (the training program
  # forms no group for one process, so it cannot exercise NCCL there), all-reducing CUDA tensors.
  local backend=nccl
  [ "$DRY" = 1 ] && backend=gloo
  BACKEND=$backend DEVICE=$device deno eval 'import * as t from "./mod.ts";
    const backend = Deno.env.get("BACKEND") as "nccl" | "gloo", device = Deno.env.get("DEVICE") as t.Device;
    using group = t.ProcessGroup.join({ backend, rank: 0, worldSize: 1, port: 0 });
    const out = t.allReduceMean({ a: t.toDevice(t.tensor([1, 2]), device), b: t.toDevice(t.tensor([[3]]), device) }, group);
    const got = [...t.toArray(out.a), ...t.toArray(out.b)];
    if (got.join() !== "1,2,3") throw new Error(`all-reduce at world size 1 gave ${got}`);
    console.log(`${backend} at world size 1: all-reduce of tensors on ${out.a.device} ok`);
    t.dispose(out);
    const g = t.tidy(() => { // the collective of SyncBatchNorm: its backward pass all-reduces the gradient
      const x = t.requiresGrad(t.toDevice(t.tensor([1, 2]), device));
      const w = t.toDevice(t.tensor([3, 4]), device);
      return t.toArray(t.grad(t.sum(t.mul(t.sumOverRanks(x, group), w)), [x])[0]);
    });
    if (g.join() !== "3,4") throw new Error(`sumOverRanks backward at world size 1 gave ${g}`);
    console.log(`${backend} at world size 1: sumOverRanks forward and backward on ${device} ok`);' || rc=1
  # The training program with a launcher's variables for one process (no group: it pays nothing).
  WORLD_SIZE=1 RANK=0 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29517 \
    deno run -A cli/train.ts --preset fmnist --device "$device" --max-steps 4 \
    --train-limit 512 --test-limit 256 --knn-every 0 --report false --output-dir "$WORK/dist1" || rc=1
  return $rc
}

stage_bench() {
  local dry=()
  [ "$DRY" = 1 ] && dry=(--dry-run --workers 1)
  # Where the small preset's GPU step goes, and whether the host's calls or the GPU set its pace.
  if [ "$DRY" = 1 ]; then
    deno run -A bench/step_time.ts --preset fmnist-gpu --device cpu --steps 3 || return 1
  else
    deno run -A bench/step_time.ts --preset fmnist-gpu --device cuda --steps 50 || return 1
  fi
  deno run -A bench/compare_gpu_step.ts --steps "${BENCH_STEPS:-8}" --json "$OUT/bench.json" "${dry[@]}" ${BENCH_ARGS:-} ||
    return 1
  if [ "$DRY" != 1 ]; then
    deno run -A bench/compare_inference.ts --device cuda --iters 5 --python python3
  fi
}

stage_train() {
  local extra=()
  if [ "$DRY" = 1 ]; then
    extra=(--device cpu --epochs 1 --max-steps 3 --batch-size 32 --train-limit 2048 --test-limit 512 --knn-every 1)
  else
    extra=(--device cuda)
    # The mixed-precision flag, where this checkout has it.
    if deno run -A cli/train.ts --help 2>/dev/null | grep -q -- "--precision"; then extra+=(--precision "${TRAIN_PRECISION:-bf16}"); fi
  fi
  rm -rf "$WORK/fmnist-gpu"
  deno run -A cli/train.ts --preset fmnist-gpu --output-dir "$WORK/fmnist-gpu" --report false "${extra[@]}" ${TRAIN_ARGS:-}
}

stage_suite() {
  local device_note="auto (CUDA where the tests leave the device to the program)"
  echo "suite: deno test -A --doc, device $device_note"
  deno test -A --doc ${SUITE_ARGS:-}
}

say "gpu-check: repo $REPO, out $OUT, work $WORK, stages: $STAGES, dry run $DRY, budget ${BUDGET}s"
export REPO OUT WORK CARRY DRY FMNIST_DIR
export -f stage_install stage_build stage_cudnn stage_cuda stage_bench stage_train stage_suite
run_stage install 120 bash -c stage_install || say "install failed: nothing else can run"
if [ -x "$WORK/bin/deno" ]; then
  wanted build && run_stage build 240 bash -c stage_build
  # cuDNN's first call crashes a Deno process unless libstdc++ was preloaded (see ffi/library.ts): the default must
  # not crash, and where the preloaded one does too, every later stage runs with cuDNN off rather than not at all.
  if [ "$DRY" != 1 ] && [ -z "${DINO_CUDNN:-}" ]; then
    run_stage cudnn 60 bash -c stage_cudnn
    if [ -f "$WORK/cudnn-preloaded-ok" ]; then
      export LD_PRELOAD=libstdc++.so.6
      say "cudnn: the stages below run with LD_PRELOAD=libstdc++.so.6 (cuDNN on)"
    else
      export DINO_CUDNN=0
      say "cudnn: the preloaded cuDNN convolution failed: the stages below run with DINO_CUDNN=0"
    fi
  fi
  # The other stages in the order STAGES names them, so that a short call spends its time on what it needs first.
  for stage in $STAGES; do
    case $stage in
      build) ;;
      cuda) run_stage cuda 120 bash -c stage_cuda ;;
      bench) run_stage bench "${BENCH_TIMEOUT:-150}" bash -c stage_bench ;;
      train) run_stage train "${TRAIN_TIMEOUT:-300}" bash -c stage_train ;;
      suite) run_stage suite "${SUITE_TIMEOUT:-600}" bash -c stage_suite ;;
      *) say "unknown stage: $stage (build, cuda, bench, train, suite)" ;;
    esac
  done
fi

# The results: training curve and summary, test lines, and one JSON of everything.
[ -f "$WORK/fmnist-gpu/metrics.jsonl" ] && cp "$WORK/fmnist-gpu/metrics.jsonl" "$OUT/train-metrics.jsonl"
[ -f "$WORK/fmnist-gpu/summary.json" ] && cp "$WORK/fmnist-gpu/summary.json" "$OUT/train-summary.json"
cat "$WORK"/stages/cuda.txt "$WORK"/stages/suite.txt 2>/dev/null | grep -E "^(ok|FAILED|ERRORS|FAILURES)|\.\.\. (ok|FAILED|ignored)|=>" \
  >"$OUT/tests.txt" || true
python3 - "$WORK" "$OUT" "$DRY" "$(elapsed)" <<'EOF'
import glob, json, os, sys
work, out, dry, total = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
res = {"dryRun": dry, "seconds": total, "stages": {}}
for f in sorted(glob.glob(os.path.join(work, "stages", "*.json"))):
    res["stages"][os.path.basename(f)[:-5]] = json.load(open(f))
def load(path):
    try:
        return json.load(open(path))
    except Exception:
        return None
res["build"] = load(os.path.join(work, "build-info.json"))
res["cudnnDisabled"] = os.environ.get("DINO_CUDNN") == "0"
res["libstdcxxPreloaded"] = "libstdc++" in os.environ.get("LD_PRELOAD", "")
res["bench"] = load(os.path.join(out, "bench.json"))
curve = []
try:
    for line in open(os.path.join(out, "train-metrics.jsonl")):
        r = json.loads(line)
        if any("knn" in k.lower() for k in r):
            curve.append(r)
except Exception:
    pass
res["trainKnnCurve"] = curve
res["trainSummary"] = load(os.path.join(out, "train-summary.json"))
tests = {"passed": 0, "failed": 0}
for name in ("cuda", "suite"):
    try:
        for line in open(os.path.join(work, "stages", name + ".txt")):
            if line.rstrip().endswith("... ok") or " ... ok (" in line:
                tests["passed"] += 1
            if " ... FAILED" in line:
                tests["failed"] += 1
    except Exception:
        pass
res["tests"] = tests
json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=2)
print(json.dumps({k: v.get("status") for k, v in res["stages"].items()}))
EOF
say "done in $(elapsed)s; results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
