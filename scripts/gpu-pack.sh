#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh needs on a GPU machine with no network, in .cache/gpu/ (gitignored), to be
# carried there as one path (the device tool's `carry: [".cache/gpu"]`):
#   deno.xz                  the deno binary of npm's @deno/linux-x64-glibc@2.9.6 (`npm pack`), recompressed with
#                            xz's x86 filter: 28.8 MB instead of the tarball's 42.3 MB, so that it and the data fit
#                            the 64 MiB a call may carry together with the working tree
#   fashion-mnist/*.xz       Debian's dataset-fashion-mnist IDX files, decompressed and recompressed with xz
#   deno-dir/                a DENO_DIR holding the npm packages the code imports (no registry there)
#   SHA256SUMS               of the above
# It prints the total that would travel (tracked and untracked-not-ignored files plus .cache/gpu) and fails
# above 64 MiB (warns within 1 MiB of it). Takes ~4 minutes of one core the first time (xz -9e); later runs reuse what is there.
#
#   scripts/gpu-pack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
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

for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [ ! -s "$OUTDIR/fashion-mnist/$f.xz" ]; then
    zcat "$FMNIST/$f.gz" | nice xz -9e -T1 >"$OUTDIR/fashion-mnist/$f.xz.tmp"
    mv "$OUTDIR/fashion-mnist/$f.xz.tmp" "$OUTDIR/fashion-mnist/$f.xz"
  fi
done

# The npm packages (and nothing from JSR: it is unreachable here, and the code imports none).
DENO_DIR="$PWD/$OUTDIR/deno-dir" deno cache --quiet mod.ts cli/*.ts bench/*.ts tests/*.ts scripts/*.ts
rm -rf "$OUTDIR/deno-dir/gen" "$OUTDIR/deno-dir/"*_cache_v* 2>/dev/null || true

(cd "$OUTDIR" && find . -type f ! -name SHA256SUMS ! -path './deno-dir/*' -print0 | sort -z | xargs -0 sha256sum >SHA256SUMS)

tree=$(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
carry=$(du -sb "$OUTDIR" | cut -f1)
total=$((tree + carry))
limit=$((64 * 1024 * 1024))
printf 'working tree %.1f MiB + .cache/gpu %.1f MiB = %.1f MiB (the device tool takes 64 MiB a call)\n' \
  "$(echo "$tree / 1048576" | bc -l)" "$(echo "$carry / 1048576" | bc -l)" "$(echo "$total / 1048576" | bc -l)"
if [ "$total" -gt "$limit" ]; then
  echo "too large to carry: above 64 MiB" >&2
  exit 1
fi
if [ "$total" -gt $((limit - 1024 * 1024)) ]; then
  echo "warning: within 1 MiB of the limit: new untracked files in the tree can push a call over it" >&2
fi
