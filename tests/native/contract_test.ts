// contract_test.ts — the native contract written in several places agrees with itself:
//  - every function qlora.h exports is declared in server/ffi/symbols.ts with matching Deno FFI
//    types (and nothing else is declared there);
//  - the backend op list (native/src/backend_ops.h) is what struct ql_backend, the CPU and CUDA
//    tables and both backends' declarations are generated from, and an op named like a public
//    function takes that function's parameters.
// The parsers only handle the consistent style of these files (one declaration per statement,
// no function pointers, no macros in signatures); the first tests show they catch drift.
import assert from "node:assert/strict";
import { ABI_VERSION, symbols } from "../../server/ffi/symbols.ts";

const root = new URL("../../", import.meta.url).pathname;
const read = (path: string) => Deno.readTextFileSync(root + path);

export interface CParam {
  type: string; // normalized: "const float*", "int64_t", "ql_ctx**"
  name: string;
}
export interface CFunction {
  name: string;
  result: string;
  params: CParam[];
}
type FfiSymbol = { parameters: readonly string[]; result: string };

export function stripComments(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, " ").replace(/\/\/[^\n]*/g, " ");
}

/** "const  float *x" -> "const float*" (one space between words, stars glued to the type). */
function normalizeType(t: string): string {
  return t.replace(/\s*\*\s*/g, "*").replace(/\s+/g, " ").trim();
}

function parseParams(list: string): CParam[] {
  const trimmed = list.trim();
  if (trimmed === "" || trimmed === "void") return [];
  return trimmed.split(",").map((p) => {
    const m = p.trim().match(/^(.*?)\s*\b(\w+)$/s);
    if (!m || m[1].trim() === "") throw new Error(`cannot parse parameter "${p.trim()}"`);
    return { type: normalizeType(m[1]), name: m[2] };
  });
}

/** The functions a header exports: `QL_API <result> <name>(<params>);`. */
export function parseHeader(text: string): CFunction[] {
  const out: CFunction[] = [];
  const re = /\bQL_API\s+([^;(]*?)\b(\w+)\s*\(([^)]*)\)\s*;/g;
  for (const m of stripComments(text).matchAll(re)) {
    out.push({ name: m[2], result: normalizeType(m[1]), params: parseParams(m[3]) });
  }
  return out;
}

/** The backend op list: `QL_OP(<result>, <op>, (<params>))`. */
export function parseOpList(text: string): CFunction[] {
  const out: CFunction[] = [];
  const body = stripComments(text).replace(/#\s*define[^\n]*|#\s*error[^\n]*|#\s*undef[^\n]*/g, " ");
  for (const m of body.matchAll(/\bQL_OP\(\s*([^,]+?)\s*,\s*(\w+)\s*,\s*\(([^)]*)\)\s*\)/g)) {
    out.push({ name: m[2], result: normalizeType(m[1]), params: parseParams(m[3]) });
  }
  return out;
}

/** The Deno FFI types a C type may be declared as, or undefined for a type we do not map. */
export function ffiTypesFor(cType: string): string[] | undefined {
  if (cType.endsWith("*")) return ["pointer", "buffer"];
  const t = cType.replace(/^const /, "");
  const map: Record<string, string[]> = {
    void: ["void"],
    bool: ["bool"],
    int8_t: ["i8"],
    uint8_t: ["u8"],
    int16_t: ["i16"],
    uint16_t: ["u16"],
    int: ["i32"],
    int32_t: ["i32"],
    uint32_t: ["u32"],
    int64_t: ["i64"],
    uint64_t: ["u64"],
    size_t: ["u64", "usize"],
    float: ["f32"],
    double: ["f64"],
    ql_status: ["i32"], // typedef int32_t
    // the enums are passed as int32_t in qlora.h, but an enum-typed parameter would be an int
    ql_dtype: ["i32"],
    ql_quant_type: ["i32"],
    ql_optimizer_kind: ["i32"],
  };
  return map[t];
}

/** Problems between a header's exported functions and an FFI symbol table ([] = they agree). */
export function checkSymbols(fns: CFunction[], syms: Record<string, FfiSymbol>): string[] {
  const problems: string[] = [];
  const names = new Set(fns.map((f) => f.name));
  for (const name of Object.keys(syms)) {
    if (!names.has(name)) problems.push(`${name}: declared in symbols.ts but not exported by qlora.h`);
  }
  for (const f of fns) {
    const s = syms[f.name];
    if (!s) {
      problems.push(`${f.name}: exported by qlora.h but missing from symbols.ts`);
      continue;
    }
    const resultOk = ffiTypesFor(f.result);
    if (!resultOk) problems.push(`${f.name}: result type ${f.result} has no FFI mapping`);
    else if (!resultOk.includes(s.result)) {
      problems.push(`${f.name}: returns ${f.result} but symbols.ts says "${s.result}" (want ${resultOk.join(" or ")})`);
    }
    if (s.parameters.length !== f.params.length) {
      problems.push(`${f.name}: ${f.params.length} parameters in qlora.h, ${s.parameters.length} in symbols.ts`);
      continue;
    }
    f.params.forEach((p, i) => {
      const ok = ffiTypesFor(p.type);
      if (!ok) problems.push(`${f.name}: parameter ${i + 1} (${p.type} ${p.name}) has no FFI mapping`);
      else if (!ok.includes(s.parameters[i])) {
        problems.push(
          `${f.name}: parameter ${i + 1} (${p.type} ${p.name}) is "${s.parameters[i]}" in symbols.ts (want ${ok.join(" or ")})`,
        );
      }
    });
  }
  return problems;
}

/** Ops whose backend signature differs from ql_<op> by design (the api layer adapts them). */
export const OPS_DIFFERENT_BY_DESIGN = new Set([
  "qweight_quantize", // api builds the ql_qweight; the backend widens a 16-bit host_w as it goes
  "qweight_import", // api dequantizes double-quant absmax and checks the codebook
  "qweight_free", // ql_qweight_destroy
  "optimizer_free", // ql_optimizer_destroy
]);

/** Problems between the op list and the public functions of the same name ([] = they agree). */
export function checkOpsAgainstHeader(ops: CFunction[], fns: CFunction[]): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  const byName = new Map(fns.map((f) => [f.name, f]));
  for (const op of ops) {
    if (seen.has(op.name)) problems.push(`${op.name}: listed twice in backend_ops.h`);
    seen.add(op.name);
    const pub = byName.get(`ql_${op.name}`);
    if (!pub || OPS_DIFFERENT_BY_DESIGN.has(op.name)) continue;
    const a = op.params.map((p) => p.type).join(", ");
    const b = pub.params.map((p) => p.type).join(", ");
    if (a !== b || op.result !== pub.result) {
      problems.push(`${op.name}: backend op (${a}) -> ${op.result} differs from ql_${op.name}(${b}) -> ${pub.result}`);
    }
  }
  return problems;
}

/** A file that generates something from the op list: it defines QL_OP as `expansion`, includes
 * backend_ops.h right after, and writes no entry of that kind by hand. */
export function checkGenerated(file: string, text: string, expansion: RegExp, handWritten: RegExp): string[] {
  const problems: string[] = [];
  const code = stripComments(text);
  const re = new RegExp(`#define QL_OP\\(ret, op, params\\) ${expansion.source}\\s*\\n\\s*#include "backend_ops\\.h"`);
  if (!re.test(code)) problems.push(`${file}: does not generate its entries from backend_ops.h (${expansion.source})`);
  for (const m of code.matchAll(handWritten)) problems.push(`${file}: hand-written entry "${m[0].trim()}"`);
  return problems;
}

const DECLARE = /ret op params;/;
const FIELD = /ret\(\*op\) params;/;
const FILL = /t\.op = op;/;
// hand-written table entries: a function pointer field, or `t.<op> = ` other than the name
const HAND_FIELD = /\(\s*\*\s*\w+\s*\)\s*\(/g;
const HAND_FILL = /\bt\.(?!name\b|op\b)\w+\s*=/g;
// a backend-namespace declaration of an op by hand (e.g. `ql_status topk(ql_ctx* ctx, ...)`; a
// helper overload taking no handle first, like cpu's quantize_4bit kernel, is not one)
function handDeclared(ops: CFunction[]): RegExp {
  const names = ops.map((o) => o.name).join("|");
  return new RegExp(`^\\s*(?:ql_status|void)\\s+(?:${names})\\s*\\(\\s*(?:const\\s+)?ql_(?:ctx|qweight|optimizer)\\s*\\*`, "gm");
}

// ---------------------------------------------------------------- the checkers catch drift

Deno.test("contract parser: reads qlora.h-style declarations", () => {
  const fns = parseHeader(`
    /* comment with QL_API ql_status ql_fake(int x); inside */
    QL_API ql_status ql_foo(ql_ctx* ctx, const float* host_x,
                            int64_t n, uint64_t seed, float alpha, int32_t dtype);
    QL_API const char* ql_name(void);
    QL_API void ql_thing_destroy(ql_thing* t);`);
  assert.deepEqual(fns.map((f) => f.name), ["ql_foo", "ql_name", "ql_thing_destroy"]);
  assert.deepEqual(fns[0].params.map((p) => p.type), ["ql_ctx*", "const float*", "int64_t", "uint64_t", "float", "int32_t"]);
  assert.equal(fns[1].result, "const char*");
  assert.deepEqual(fns[1].params, []);
});

Deno.test("contract checker: a drifted, missing or extra symbol is reported", () => {
  const fns = parseHeader(`QL_API ql_status ql_foo(ql_ctx* ctx, int64_t n, const float* host_x);
                           QL_API void ql_bar(void);`);
  const good = { ql_foo: { parameters: ["pointer", "i64", "buffer"], result: "i32" }, ql_bar: { parameters: [], result: "void" } };
  assert.deepEqual(checkSymbols(fns, good), []);
  // int64_t declared as i32: the kind of drift that silently truncates sizes
  const wrongType = { ...good, ql_foo: { parameters: ["pointer", "i32", "buffer"], result: "i32" } };
  assert.deepEqual(checkSymbols(fns, wrongType), [
    `ql_foo: parameter 2 (int64_t n) is "i32" in symbols.ts (want i64)`,
  ]);
  const wrongCount = { ...good, ql_foo: { parameters: ["pointer", "i64"], result: "i32" } };
  assert.match(checkSymbols(fns, wrongCount).join("\n"), /3 parameters in qlora.h, 2 in symbols.ts/);
  const wrongResult = { ...good, ql_bar: { parameters: [], result: "i32" } };
  assert.match(checkSymbols(fns, wrongResult).join("\n"), /ql_bar: returns void/);
  const { ql_bar: _, ...missing } = good;
  assert.match(checkSymbols(fns, missing).join("\n"), /ql_bar: exported by qlora.h but missing/);
  const extra = { ...good, ql_baz: { parameters: [], result: "void" } };
  assert.match(checkSymbols(fns, extra).join("\n"), /ql_baz: declared in symbols.ts but not exported/);
});

Deno.test("contract checker: an op drifting from its public function or a hand-written entry is reported", () => {
  const fns = parseHeader(`QL_API ql_status ql_scale(ql_ctx* ctx, float* x, float alpha, int64_t n);`);
  const same = parseOpList(`QL_OP(ql_status, scale, (ql_ctx* ctx, float* x, float alpha, int64_t n))`);
  assert.deepEqual(checkOpsAgainstHeader(same, fns), []);
  const drifted = parseOpList(`QL_OP(ql_status, scale, (ql_ctx* ctx, float* x, float alpha, int32_t n))`);
  assert.match(checkOpsAgainstHeader(drifted, fns).join("\n"), /scale: backend op .* differs from ql_scale/);
  const twice = parseOpList(`QL_OP(void, a, (int x))\nQL_OP(void, a, (int x))`);
  assert.match(checkOpsAgainstHeader(twice, fns).join("\n"), /a: listed twice/);

  const table = `ql_backend t{};\n  t.name = "x";\n#define QL_OP(ret, op, params) t.op = op;\n#include "backend_ops.h"\n`;
  assert.deepEqual(checkGenerated("t.cpp", table, FILL, HAND_FILL), []);
  assert.match(checkGenerated("t.cpp", table + "  t.topk = my_topk;\n", FILL, HAND_FILL).join("\n"), /hand-written entry "t.topk ="/);
  assert.match(checkGenerated("t.cpp", `t.name = "x"; t.topk = topk;`, FILL, HAND_FILL).join("\n"), /does not generate/);
  const struct = `struct ql_backend {\n#define QL_OP(ret, op, params) ret(*op) params;\n#include "backend_ops.h"\n};`;
  assert.deepEqual(checkGenerated("b.h", struct, FIELD, HAND_FIELD), []);
  assert.match(checkGenerated("b.h", struct + "\n  ql_status (*extra)(ql_ctx* ctx);", FIELD, HAND_FIELD).join("\n"), /hand-written/);
});

// ---------------------------------------------------------------- the real files

const header = read("native/include/qlora.h");
const publicFns = parseHeader(header);
const ops = parseOpList(read("native/src/backend_ops.h"));

Deno.test("contract: qlora.h's exported functions and symbols.ts agree (names, C types -> FFI types)", () => {
  assert.ok(publicFns.length >= 50, `parsed only ${publicFns.length} functions from qlora.h`);
  assert.deepEqual(checkSymbols(publicFns, symbols as unknown as Record<string, FfiSymbol>), []);
  const abi = header.match(/#define QL_ABI_VERSION (\d+)u/);
  assert.equal(Number(abi?.[1]), ABI_VERSION, "QL_ABI_VERSION and symbols.ts's ABI_VERSION differ");
  // Only ql_read_file may run off the JavaScript thread: every other function reports errors
  // through the calling thread's ql_last_error, and contexts are not safe across threads.
  const nonblocking = Object.entries(symbols).filter(([, s]) => "nonblocking" in s).map(([n]) => n);
  assert.deepEqual(nonblocking, ["ql_read_file"], "symbols.ts's header comment says only ql_read_file is nonblocking");
});

Deno.test("contract: backend ops taking a public function's parameters match qlora.h", () => {
  assert.ok(ops.length >= 50, `parsed only ${ops.length} ops from backend_ops.h`);
  assert.deepEqual(checkOpsAgainstHeader(ops, publicFns), []);
  // the by-design list names real ops (a renamed op must not keep its exemption)
  for (const name of OPS_DIFFERENT_BY_DESIGN) assert.ok(ops.some((o) => o.name === name), `${name} is not an op`);
});

Deno.test("contract: struct ql_backend, both backends' declarations and both tables come from the op list", () => {
  const backendH = read("native/src/backend.h");
  const struct = backendH.slice(backendH.indexOf("struct ql_backend {"));
  const problems = [
    ...checkGenerated("backend.h", struct.slice(0, struct.indexOf("};")), FIELD, HAND_FIELD),
    ...checkGenerated("cpu/cpu.h", read("native/src/cpu/cpu.h"), DECLARE, handDeclared(ops)),
    ...checkGenerated("cuda/cuda.cuh", read("native/src/cuda/cuda.cuh"), DECLARE, handDeclared(ops)),
    ...checkGenerated("cpu/table.cpp", read("native/src/cpu/table.cpp"), FILL, HAND_FILL),
    ...checkGenerated("cuda/context.cu", read("native/src/cuda/context.cu"), FILL, HAND_FILL),
  ];
  // other CPU headers must not redeclare ops by hand either (a stale overload would compile)
  for (const f of ["cpu/ops.h", "cpu/linalg.h"]) {
    for (const m of stripComments(read(`native/src/${f}`)).matchAll(handDeclared(ops))) {
      problems.push(`${f}: hand-written declaration "${m[0].trim()}"`);
    }
  }
  assert.deepEqual(problems, []);
});
