#!/usr/bin/env bash
# Compiles (syntax and types, no code generation) every native/*.cpp against the headers of Debian's libtorch-dev
# 2.6 (trixie) and 2.14 (sid), with CUDA, stb and Gloo switched on, at the C++ standard ffi/build.ts would choose.
# The packages are fetched with apt-get into a scratch folder (no install, no root needed beyond apt's cache), so a
# machine with only Debian's 1.13 can check the shim against libtorch 2.x. NCCL's unit needs CUDA's headers, which
# Debian has only in the 900 MB nvidia-cuda-dev: it is not checked here.
#
#   scripts/check-libtorch2.sh            # both suites
#   SUITES=sid scripts/check-libtorch2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SCRATCH=${SCRATCH:-/tmp/dino-libtorch2}
status=0
for suite in ${SUITES:-trixie sid}; do
  dir=$SCRATCH/$suite
  mkdir -p "$dir/lists/partial" "$dir/debs"
  echo "deb http://deb.debian.org/debian $suite main" >"$dir/sources.list"
  o=(-oDir::Etc::SourceList="$dir/sources.list" -oDir::Etc::SourceParts=/dev/null -oDir::State::Lists="$dir/lists"
    -oAPT::Architecture=amd64 -oDebug::NoLocking=1)
  if [ ! -d "$dir/root/usr/include/ATen" ]; then
    apt-get "${o[@]}" -qq update
    (cd "$dir/debs" && apt-get "${o[@]}" -qq download libtorch-dev 2>/dev/null)
    dpkg -x "$dir"/debs/libtorch-dev_*.deb "$dir/root"
  fi
  inc=$dir/root/usr/include
  std=gnu++17
  grep -q "__cplusplus < 202002L" "$inc/ATen/ATen.h" && std=gnu++20
  version=$(grep -h "define TORCH_VERSION_M\|define TORCH_VERSION_PATCH" -r "$inc/torch/headeronly/version.h" \
    "$inc/torch/csrc/api/include/torch/version.h" 2>/dev/null | awk '{print $3}' | paste -sd. || true)
  for f in native/*.cpp; do
    if g++ -std=$std -fsyntax-only -Wall -fopenmp -D_GLIBCXX_USE_CXX11_ABI=1 -DDINO_CUDA -DDINO_STB -DUSE_C10D_GLOO \
      -DDINO_GLOO -isystem "$inc" -isystem "$inc/torch/csrc/api/include" "$f" 2>"$dir/err.txt"; then
      echo "ok      libtorch $version ($suite, $std): $f"
    else
      echo "FAILED  libtorch $version ($suite, $std): $f"
      grep -m5 error "$dir/err.txt" || true
      status=1
    fi
  done
done
exit $status
