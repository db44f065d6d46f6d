/**
 * Installs what the project needs from Debian's packages when it is missing:
 * libtorch, OpenBLAS, stb and a C++ compiler (and Fashion-MNIST with
 * `--data` or `--default-data`, Chromium with `--browser`, scikit-image's photos and the Python
 * that `scripts/gen_objects.py` needs with `--objects`), Gloo's headers for distributed training (`libgloo-dev`, with
 * Debian's libtorch) and libjpeg's, to decode JPEGs as PIL does (`libjpeg-dev`). As root it runs apt-get; otherwise
 * it prints the exact command and exits 1 (for Gloo and libjpeg alone it only says what they give, and goes on: the
 * shim builds without them; so for Fashion-MNIST with `--default-data`, the default `--data` of the commands that take
 * another). Then it builds the native shim (cached).
 *
 * @example
 * ```sh
 * deno run -A scripts/setup.ts --data
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { buildShim, findLibtorch } from "../ffi/build.ts";
import { exists } from "../ffi/files.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    data: { type: "boolean", default: false },
    "default-data": { type: "boolean", default: false },
    browser: { type: "boolean", default: false },
    objects: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log(
    "usage: deno run -A scripts/setup.ts [--data | --default-data] [--browser] [--objects]\n" +
      "  --data          also install Fashion-MNIST\n" +
      "  --default-data  the same, but without root only say so (it is the commands' default --data, not the only one)\n" +
      "  --browser       also install Chromium (the report page's headless test)\n" +
      "  --objects       also install scikit-image's photos, numpy, PIL and scipy (deno task masks makes its data with them)",
  );
  Deno.exit(0);
}

function ok(cmd: string, args: string[]): boolean {
  try {
    return new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).outputSync().success;
  } catch {
    return false;
  }
}
function installed(pkg: string): boolean {
  try {
    const r = new Deno.Command("dpkg-query", { args: ["-W", "-f=${Status}", pkg], stdout: "piped", stderr: "null" })
      .outputSync();
    return new TextDecoder().decode(r.stdout).includes("install ok installed");
  } catch {
    return false;
  }
}

let libtorchOk = true;
try {
  findLibtorch();
} catch (e) {
  // Only the system way is something apt-get can fix; a forced folder or Python is the user's to fix.
  const forced = Deno.env.get("DINO_LIBTORCH_FROM");
  if (forced && forced !== "system") {
    console.error(`setup: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
  libtorchOk = false;
}
const hasDpkg = ok("dpkg-query", ["--version"]);
const missing: string[] = [];
if (!libtorchOk) missing.push("libtorch-dev");
if (hasDpkg && (!libtorchOk || installed("libtorch-dev")) && !installed("libopenblas0-pthread")) {
  missing.push("libopenblas0-pthread");
}
if (!exists("/usr/include/stb/stb_image.h")) missing.push("libstb-dev");
// Distributed training (c10d's ProcessGroupGloo) compiles against Gloo's headers, which Debian's libtorch-dev does
// not depend on. Optional: without them the shim builds with no distributed engine.
const optional: string[] = [];
if (hasDpkg && (!libtorchOk || installed("libtorch-dev")) && !exists("/usr/include/gloo/config.h")) {
  optional.push("libgloo-dev");
}
if (![Deno.env.get("CXX"), "c++", "g++", "clang++"].some((c) => c && ok(c, ["--version"]))) missing.push("g++");
const fashionMissing = !exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
if (values.data && fashionMissing) missing.push("dataset-fashion-mnist");
// The default data, not the only one: without root it is named, and a command given other --data runs (one given
// fmnist says the same when it opens it).
const data = values["default-data"] && !values.data && fashionMissing ? ["dataset-fashion-mnist"] : [];
if (values.browser && !ok("chromium", ["--version"])) missing.push("chromium");
// scripts/gen_objects.py pastes the items on the photos scikit-image ships, with numpy, PIL and scipy (its dependencies).
if (
  values.objects &&
  !(exists("/usr/lib/python3/dist-packages/skimage/data") && ok("/usr/bin/python3", ["-c", "import numpy, PIL, scipy"]))
) {
  missing.push("python3-skimage");
}

const isRoot = Deno.uid?.() === 0;
if (optional.length > 0 && (!isRoot || !ok("apt-get", ["--version"]))) {
  console.error(
    `setup: ${optional.join(", ")} missing: the shim builds without distributed training ` +
      `(--nproc-per-node > 1); to have it: sudo apt-get install ${optional.join(" ")}`,
  );
} else missing.push(...optional);
// JPEGs are decoded with libjpeg, as PIL decodes them. Optional: without it, with stb's decoder.
if (!exists("/usr/include/jpeglib.h") && !exists("/usr/local/include/jpeglib.h")) {
  if (hasDpkg && isRoot && ok("apt-get", ["--version"])) missing.push("libjpeg-dev");
  else {
    console.error(
      "setup: libjpeg's headers are missing: JPEGs decode with stb's decoder, 1-3 levels of 255 from PIL's pixels; " +
        "to decode them as PIL does: sudo apt-get install libjpeg-dev",
    );
  }
}
if (data.length > 0 && (!isRoot || !ok("apt-get", ["--version"]))) {
  console.error(
    `setup: Fashion-MNIST (the default --data fmnist) is missing; to have it: sudo apt-get install ${data.join(" ")} ` +
      "(or pass another --data: an image folder, IDX files or CIFAR)",
  );
} else missing.push(...data);
if (missing.length > 0) {
  const cmd = `apt-get install -y --no-install-recommends ${missing.join(" ")}`;
  if (!hasDpkg || !ok("apt-get", ["--version"])) {
    console.error(`Missing: ${missing.join(", ")}. Install them with your package manager, or see README.md.`);
    Deno.exit(1);
  }
  if (!isRoot) {
    console.error(`Missing packages: ${missing.join(", ")}.\nRun:\n  sudo apt-get update && sudo ${cmd}`);
    Deno.exit(1);
  }
  console.error(`setup: installing ${missing.join(", ")} with apt-get`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  const run = (args: string[]) =>
    new Deno.Command("apt-get", { args, env, stdout: "inherit", stderr: "inherit" }).outputSync().success;
  if (!run(["update", "-qq"]) || !run(["install", "-y", "-qq", "--no-install-recommends", ...missing])) {
    console.error(`setup: apt-get failed; run it yourself:\n  apt-get update && ${cmd}`);
    Deno.exit(1);
  }
}

try {
  const shim = await buildShim();
  if (Deno.env.get("DINO_VERBOSE")) console.error(`setup: shim ${shim}`);
} catch (e) {
  console.error(`setup: ${e instanceof Error ? e.message : e}`);
  Deno.exit(1);
}
