/**
 * Loads the WGSL sources in `kernels/` and specialises them: `{{NAME}}` is replaced by a constant,
 * `#if NAME` / `#elif NAME` / `#else` / `#endif` lines select variants (NAME is true when its
 * value is a non-zero number or `true`), `#include "file.wgsl"` splices a shared file in, and
 * `#unroll V N` … `#endunroll` repeats its lines N times (N a number or a define) with `@V@`
 * replaced by 0, 1, … — used where per-batch-entry values must stay in registers.
 * Kernels are specialised per model so every loop bound and array size is a compile-time constant.
 * @module
 */

/** Values substituted into a kernel template. */
export type Defines = Record<string, number | boolean | string>;

const cache = new Map<string, string>();

/** Read a file of `kernels/` (cached). */
export function kernelSource(name: string): string {
  let text = cache.get(name);
  if (text === undefined) {
    text = Deno.readTextFileSync(new URL(`../../../kernels/${name}`, import.meta.url));
    cache.set(name, text);
  }
  return text;
}

function truthy(defines: Defines, name: string): boolean {
  const v = defines[name];
  if (v === undefined) throw new Error(`WGSL template: #if ${name} is not defined`);
  return v === true || (typeof v === "number" && v !== 0) || (typeof v === "string" && v !== "" && v !== "0");
}

/** Format a number as a WGSL literal: integers as `123u` unless `float`, floats with a decimal point. */
function literal(v: number | boolean | string): string {
  if (typeof v === "string") return v;
  if (typeof v === "boolean") return v ? "true" : "false";
  if (Number.isInteger(v)) return `${v}`;
  const s = `${v}`;
  return s.includes("e") || s.includes(".") ? s : `${s}.0`;
}

/** Specialise the template `name` with `defines`. */
export function specialise(name: string, defines: Defines): string {
  const lines = expandUnrolls(expandIncludes(kernelSource(name), new Set([name])), defines, name).split("\n");
  const out: string[] = [];
  // Each frame: whether this branch is active, whether any branch has been taken, parent active.
  const stack: { active: boolean; taken: boolean; parent: boolean }[] = [];
  const active = () => stack.length === 0 || stack[stack.length - 1].active;
  for (const line of lines) {
    const t = line.trim();
    let m: RegExpMatchArray | null;
    if ((m = t.match(/^#if\s+(!?)(\w+)$/))) {
      const parent = active();
      const cond = truthy(defines, m[2]) !== (m[1] === "!");
      stack.push({ active: parent && cond, taken: cond, parent });
    } else if ((m = t.match(/^#elif\s+(!?)(\w+)$/))) {
      const f = stack[stack.length - 1];
      if (!f) throw new Error(`WGSL template ${name}: #elif without #if`);
      const cond = !f.taken && truthy(defines, m[2]) !== (m[1] === "!");
      f.active = f.parent && cond;
      f.taken ||= cond;
    } else if (t === "#else") {
      const f = stack[stack.length - 1];
      if (!f) throw new Error(`WGSL template ${name}: #else without #if`);
      f.active = f.parent && !f.taken;
      f.taken = true;
    } else if (t === "#endif") {
      if (!stack.pop()) throw new Error(`WGSL template ${name}: #endif without #if`);
    } else if (active()) {
      out.push(line);
    }
  }
  if (stack.length) throw new Error(`WGSL template ${name}: unterminated #if`);
  return out.join("\n").replace(/\{\{(\w+)\}\}/g, (_, key: string) => {
    const v = defines[key];
    if (v === undefined) throw new Error(`WGSL template ${name}: {{${key}}} is not defined`);
    return literal(v);
  });
}

function expandUnrolls(text: string, defines: Defines, name: string): string {
  const lines = text.split("\n");
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = lines[i].trim().match(/^#unroll\s+(\w+)\s+(\w+)$/);
    if (!m) {
      out.push(lines[i]);
      continue;
    }
    let depth = 1, j = i + 1;
    for (; j < lines.length; j++) {
      const t = lines[j].trim();
      if (t.startsWith("#unroll ")) depth++;
      else if (t === "#endunroll" && --depth === 0) break;
    }
    if (j >= lines.length) throw new Error(`WGSL template ${name}: unterminated #unroll`);
    const count = /^\d+$/.test(m[2]) ? Number(m[2]) : Number(defines[m[2]]);
    if (!Number.isInteger(count) || count < 0) {
      throw new Error(`WGSL template ${name}: bad #unroll count ${m[2]}`);
    }
    const body = expandUnrolls(lines.slice(i + 1, j).join("\n"), defines, name);
    for (let k = 0; k < count; k++) out.push(body.replaceAll(`@${m[1]}@`, String(k)));
    i = j;
  }
  return out.join("\n");
}

function expandIncludes(text: string, seen: Set<string>): string {
  return text.replace(/^#include\s+"([\w.]+)"\s*$/gm, (_, file: string) => {
    if (seen.has(file)) return "";
    seen.add(file);
    return expandIncludes(kernelSource(file), seen);
  });
}
