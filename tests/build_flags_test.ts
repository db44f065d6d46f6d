// How ffi/build.ts reads a libtorch it cannot run here: a 2.14-style header tree (C++20, headeronly/version.h) and
// a pip CUDA torch's layout (torch/lib beside nvidia/<wheel>/ and nvidia/cu13/), made as files in a temp folder.
import assert from "node:assert/strict";
import { join } from "node:path";
import { cudaIncludeDirs, cxxStandard, distributedBuild, type Libtorch, versionFromHeaders } from "../ffi/build.ts";

function touch(path: string, text = ""): void {
  Deno.mkdirSync(join(path, ".."), { recursive: true });
  Deno.writeTextFileSync(path, text);
}

Deno.test("libtorch 2.14's headers ask for C++20 and keep their version in headeronly/version.h", () => {
  const dir = Deno.makeTempDirSync();
  try {
    touch(join(dir, "ATen/ATen.h"), "#if !defined(_MSC_VER) && __cplusplus < 202002L\n#error C++20\n#endif\n");
    touch(join(dir, "torch/csrc/api/include/torch/version.h"), "#include <torch/headeronly/version.h>\n");
    touch(
      join(dir, "torch/headeronly/version.h"),
      "#define TORCH_VERSION_MAJOR 2\n\n#define TORCH_VERSION_MINOR 14\n\n#define TORCH_VERSION_PATCH 1\n",
    );
    assert.equal(cxxStandard([join(dir, "missing"), dir]), "gnu++20");
    assert.equal(versionFromHeaders(dir), "2.14.1");
    touch(join(dir, "ATen/ATen.h"), "#pragma once\n#include <ATen/Context.h>\n"); // 1.13 to 2.13
    assert.equal(cxxStandard([dir]), "gnu++17");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a pip CUDA torch: NCCL and CUDA headers are found in the nvidia wheels beside it", () => {
  const site = Deno.makeTempDirSync();
  try {
    const lib = join(site, "torch/lib"), include = join(site, "torch/include");
    touch(join(lib, "libtorch_cpu.so"));
    touch(join(lib, "libtorch_cuda.so"));
    touch(join(include, "ATen/ATen.h"));
    touch(join(include, "torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp"));
    touch(join(site, "nvidia/nccl/include/nccl.h"));
    touch(join(site, "nvidia/nccl/lib/libnccl.so.2"));
    touch(join(site, "nvidia/cu13/include/cuda_runtime_api.h"));
    touch(join(site, "nvidia/cu13/include/cublas_v2.h"));
    const torch: Libtorch = { source: "python:x", version: "2.11.0", include: [include], lib, abi: 1, cuda: true };
    // (This machine's own /usr/local/cuda may come first: only the wheel's folder is asserted.)
    assert.ok(cudaIncludeDirs(torch).includes(join(site, "nvidia/cu13/include")));
    const d = distributedBuild(torch);
    assert.equal(d.nccl, true);
    assert.ok(d.ncclCompile.includes("-DUSE_C10D_NCCL"));
    assert.ok(d.ncclCompile.includes(join(site, "nvidia/nccl/include")));
    assert.ok(d.ncclCompile.includes(join(site, "nvidia/cu13/include")));
    assert.equal(d.ncclLink[0], join(site, "nvidia/nccl/lib/libnccl.so.2"));
    assert.ok(d.compile.join(" ").includes(d.ncclCompile.join(" ")), "NCCL's flags are a run within compile");
    // Without nccl.h there is no NCCL: it is left out rather than failing the build.
    Deno.removeSync(join(site, "nvidia/nccl/include"), { recursive: true });
    assert.equal(distributedBuild(torch).nccl, false);
    // A CPU libtorch has no CUDA include folders at all.
    assert.deepEqual(cudaIncludeDirs({ ...torch, cuda: false }), []);
  } finally {
    Deno.removeSync(site, { recursive: true });
  }
});
