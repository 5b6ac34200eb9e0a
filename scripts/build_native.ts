// build_native.ts — `deno task build`: builds the native libraries with make (CPU always;
// the CUDA-emulated library; the CUDA library when nvcc is on PATH). Extra args go to make.
const nativeDir = new URL("../native", import.meta.url).pathname;
const jobs = String(navigator.hardwareConcurrency || 2);
const args = ["-C", nativeDir, `-j${jobs}`, ...Deno.args];
console.log(`make ${args.join(" ")}`);
const { code } = await new Deno.Command("make", { args, stdout: "inherit", stderr: "inherit" }).output();
if (code !== 0) {
  console.error(`native build failed (make exited ${code})`);
  Deno.exit(code);
}
