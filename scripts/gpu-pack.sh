#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh needs on a GPU machine with no network, in .cache/gpu/ (gitignored), to be
# carried there as one path (the device tool's `carry: [".cache/gpu"]`):
#   deno.xz                  the deno binary of npm's @deno/linux-x64-glibc@2.9.6 (`npm pack`), recompressed with
#                            xz's x86 filter: 28.8 MB instead of the tarball's 42.3 MB, so that it and the data fit
#                            the 64 MiB a call may carry together with the working tree
#   fashion-mnist/*.xz       Debian's dataset-fashion-mnist IDX files, decompressed and recompressed with xz (the
#                            images as *.cols.xz, each image transposed)
#   deno-dir/                a DENO_DIR holding the npm packages the code imports (no registry there)
#   SHA256SUMS               of the above
# It prints the total that would travel (tracked and untracked-not-ignored files plus .cache/gpu) and fails above
# what the device tool takes. Takes ~4 minutes of one core the first time (xz -9e); later runs reuse what is there.
#
#   scripts/gpu-pack.sh
#   scripts/gpu-pack.sh aside    # moves the test fixtures that only the suite stage and no other reads (4 MB) to
#                                # .cache/gpu-aside/, for a call with STAGES that leave the suite out
#   scripts/gpu-pack.sh back     # puts them back (git status is clean again)
set -euo pipefail
cd "$(dirname "$0")/.."
ASIDE=(tests/fixtures/resnet tests/fixtures/finetune.safetensors tests/fixtures/retrieval.safetensors tests/fixtures/pth)
case "${1:-}" in
  aside)
    for p in "${ASIDE[@]}"; do
      [ -e "$p" ] && mkdir -p ".cache/gpu-aside/$(dirname "$p")" && mv "$p" ".cache/gpu-aside/$p"
    done
    echo "set aside: ${ASIDE[*]} (scripts/gpu-pack.sh back puts them back)"
    ;;
  back)
    for p in "${ASIDE[@]}"; do [ -e ".cache/gpu-aside/$p" ] && mv ".cache/gpu-aside/$p" "$p"; done
    git status --short -- tests/fixtures
    exit 0
    ;;
  "") ;;
  *) echo "usage: scripts/gpu-pack.sh [aside|back]" >&2; exit 2 ;;
esac
DENO_VERSION=2.9.6
OUTDIR=.cache/gpu
SRC=.cache/gpu-src
FMNIST=${FMNIST_SRC:-/usr/share/datasets/fashion-mnist}
mkdir -p "$OUTDIR/fashion-mnist" "$SRC"

if [ ! -s "$OUTDIR/deno.xz" ]; then
  tarball="$SRC/deno-linux-x64-glibc-$DENO_VERSION.tgz"
  if [ ! -s "$tarball" ]; then
    (cd "$SRC" && npm pack "@deno/linux-x64-glibc@$DENO_VERSION" >/dev/null)
  fi
  tar xzf "$tarball" -O package/deno | nice xz --x86 --lzma2=preset=9e -T1 >"$OUTDIR/deno.xz.tmp"
  mv "$OUTDIR/deno.xz.tmp" "$OUTDIR/deno.xz"
  echo "$DENO_VERSION" >"$OUTDIR/deno.version"
fi

# Images are stored column by column (each 28 x 28 image transposed; gpu-check.sh transposes back): xz then packs
# them 4% smaller, the megabyte that keeps a call under 64 MiB.
transpose='import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d[:16] + b"".join(
    d[i + c:i + 784:28] for i in range(16, len(d), 784) for c in range(28)))'
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  name=$f.xz
  layout=cat
  case $f in *images*) name=$f.cols.xz layout="python3 -c $(printf %q "$transpose")" ;; esac
  if [ ! -s "$OUTDIR/fashion-mnist/$name" ]; then
    zcat "$FMNIST/$f.gz" | eval "$layout" | nice xz -9e -T1 >"$OUTDIR/fashion-mnist/$name.tmp"
    mv "$OUTDIR/fashion-mnist/$name.tmp" "$OUTDIR/fashion-mnist/$name"
  fi
  [ "$name" = "$f.xz" ] || rm -f "$OUTDIR/fashion-mnist/$f.xz"
done

# The npm packages (and nothing from JSR: it is unreachable here, and the code imports none).
DENO_DIR="$PWD/$OUTDIR/deno-dir" deno cache --quiet mod.ts cli/*.ts bench/*.ts tests/*.ts scripts/*.ts
rm -rf "$OUTDIR/deno-dir/gen" "$OUTDIR/deno-dir/"*_cache_v* 2>/dev/null || true

(cd "$OUTDIR" && find . -type f ! -name SHA256SUMS ! -path './deno-dir/*' -print0 | sort -z | xargs -0 sha256sum >SHA256SUMS)

# The device tool refused 63.8 MiB of files that took 65.5 MiB of disk blocks and took 58.9 MiB (60.6 MiB of
# blocks): it counts more than the files' bytes. Both counts are checked, the bytes against 64 MB.
list() {
  git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done
  find "$OUTDIR" -type f -print0
}
bytes=$(list | xargs -0 stat -c %s | awk '{s+=$1} END {print s+0}')
blocks=$(list | du -c -k --files0-from=- | tail -1 | cut -f1)
printf 'to carry: %.1f MB in files, %.1f MiB in disk blocks (the device tool takes 64 MiB a call)\n' \
  "$(echo "$bytes / 1000000" | bc -l)" "$(echo "$blocks / 1024" | bc -l)"
if [ "$bytes" -gt 64000000 ] || [ "$blocks" -gt $((64 * 1024)) ]; then
  echo "too large to carry: scripts/gpu-pack.sh aside sets 4 MB of test fixtures aside for a call without the suite" >&2
  exit 1
fi
