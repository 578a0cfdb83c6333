/**
 * The WGSL template expander of the prefill kernels (`kernels/prefill_*.wgsl`).
 *
 * - `{{expr}}` is replaced by the value of `expr`: a define, a loop variable, or integer
 *   arithmetic over them (`+ - * / % ( )`, `/` truncates), e.g. `{{R * 2 + J}}`.
 * - `#if NAME` / `#if !NAME` / `#elif NAME` / `#else` / `#endif` select lines (NAME is true when its
 *   value is a non-zero number or `true`).
 * - `#for V in A..B` … `#endfor` repeats its lines for `V = A … B-1` (bounds are expressions).
 *   Kernels unroll their register-tile loops with it: Mesa's software Vulkan counts every loop
 *   iteration of an invocation against a silent cap, so constant inner loops are written out.
 * - `#include "file.wgsl"` splices another template file in (once).
 * @module
 */

/** Values substituted into a template. */
export type Defines = Record<string, number | boolean | string>;

const sources = new Map<string, string>();

/** The text of `kernels/<name>` (cached). */
export function templateSource(name: string): string {
  let text = sources.get(name);
  if (text === undefined) {
    text = Deno.readTextFileSync(new URL(`../../../../kernels/${name}`, import.meta.url));
    sources.set(name, text);
  }
  return text;
}

function truthy(v: number | boolean | string | undefined, name: string, file: string): boolean {
  if (v === undefined) throw new Error(`${file}: #if ${name} is not defined`);
  return v === true || (typeof v === "number" && v !== 0) || (typeof v === "string" && v !== "" && v !== "0");
}

/** Format a value as WGSL: integers bare, other numbers always with a decimal point or exponent. */
function literal(v: number | boolean | string): string {
  if (typeof v === "string") return v;
  if (typeof v === "boolean") return v ? "true" : "false";
  if (Number.isInteger(v)) return `${v}`;
  const s = `${v}`;
  return s.includes("e") || s.includes(".") ? s : `${s}.0`;
}

/** Evaluate an integer expression over `scope` (identifiers, literals, + - * / % and parentheses). */
export function evalExpr(expr: string, scope: Defines, file = "template"): number | boolean | string {
  const e = expr.trim();
  if (/^[A-Za-z_]\w*$/.test(e)) {
    const v = scope[e];
    if (v === undefined) throw new Error(`${file}: {{${e}}} is not defined`);
    return v;
  }
  const tokens = e.match(/\d+|[A-Za-z_]\w*|[-+*/%()]|\S/g) ?? [];
  let i = 0;
  const peek = () => tokens[i];
  const fail = (why: string): never => {
    throw new Error(`${file}: bad expression {{${e}}}: ${why}`);
  };
  const primary = (): number => {
    const t = tokens[i++];
    if (t === undefined) return fail("unexpected end");
    if (t === "(") {
      const v = sum();
      if (tokens[i++] !== ")") fail("missing )");
      return v;
    }
    if (t === "-") return -primary();
    if (/^\d+$/.test(t)) return Number(t);
    if (/^[A-Za-z_]\w*$/.test(t)) {
      const v = scope[t];
      if (typeof v === "number") return v;
      if (typeof v === "boolean") return v ? 1 : 0;
      return fail(`${t} is not a number`);
    }
    return fail(`unexpected ${t}`);
  };
  const product = (): number => {
    let v = primary();
    while (peek() === "*" || peek() === "/" || peek() === "%") {
      const op = tokens[i++];
      const r = primary();
      v = op === "*" ? v * r : op === "/" ? Math.trunc(v / r) : v % r;
    }
    return v;
  };
  const sum = (): number => {
    let v = product();
    while (peek() === "+" || peek() === "-") {
      const op = tokens[i++];
      const r = product();
      v = op === "+" ? v + r : v - r;
    }
    return v;
  };
  const v = sum();
  if (i !== tokens.length) fail(`trailing ${tokens[i]}`);
  return v;
}

function substitute(line: string, scope: Defines, file: string): string {
  return line.replace(/\{\{([^}]+)\}\}/g, (_, expr: string) => literal(evalExpr(expr, scope, file)));
}

function expandIncludes(text: string, seen: Set<string>): string {
  return text.replace(/^#include\s+"([\w.]+)"\s*$/gm, (_, f: string) => {
    if (seen.has(f)) return "";
    seen.add(f);
    return expandIncludes(templateSource(f), seen);
  });
}

/** Expand template text with `defines` (`file` names it in errors). */
export function expandTemplate(text: string, defines: Defines, file = "template"): string {
  const lines = expandIncludes(text, new Set([file])).split("\n");
  return expandLines(lines, 0, lines.length, { ...defines }, file).join("\n");
}

/** Expand the template file `kernels/<name>`. */
export function specialiseTemplate(name: string, defines: Defines): string {
  return expandTemplate(templateSource(name), defines, name);
}

function expandLines(lines: string[], from: number, to: number, scope: Defines, file: string): string[] {
  const out: string[] = [];
  const stack: { active: boolean; taken: boolean; parent: boolean }[] = [];
  const active = () => stack.length === 0 || stack[stack.length - 1].active;
  for (let n = from; n < to; n++) {
    const t = lines[n].trim();
    let m: RegExpMatchArray | null;
    if ((m = t.match(/^#for\s+(\w+)\s+in\s+(.+)\.\.(.+)$/))) {
      // Find the matching #endfor (nested #for allowed).
      let depth = 1, end = n + 1;
      for (; end < to; end++) {
        const u = lines[end].trim();
        if (/^#for\s/.test(u)) depth++;
        else if (u === "#endfor" && --depth === 0) break;
      }
      if (end >= to) throw new Error(`${file}: unterminated #for`);
      if (active()) {
        const lo = Number(evalExpr(m[2], scope, file)), hi = Number(evalExpr(m[3], scope, file));
        for (let v = lo; v < hi; v++) {
          out.push(...expandLines(lines, n + 1, end, { ...scope, [m[1]]: v }, file));
        }
      }
      n = end;
    } else if ((m = t.match(/^#if\s+(!?)(\w+)$/))) {
      const parent = active();
      const cond = parent ? truthy(scope[m[2]], m[2], file) !== (m[1] === "!") : false;
      stack.push({ active: parent && cond, taken: cond, parent });
    } else if ((m = t.match(/^#elif\s+(!?)(\w+)$/))) {
      const f = stack[stack.length - 1];
      if (!f) throw new Error(`${file}: #elif without #if`);
      const cond = f.parent && !f.taken && truthy(scope[m[2]], m[2], file) !== (m[1] === "!");
      f.active = cond;
      f.taken ||= cond;
    } else if (t === "#else") {
      const f = stack[stack.length - 1];
      if (!f) throw new Error(`${file}: #else without #if`);
      f.active = f.parent && !f.taken;
      f.taken = true;
    } else if (t === "#endif") {
      if (!stack.pop()) throw new Error(`${file}: #endif without #if`);
    } else if (t === "#endfor") {
      throw new Error(`${file}: #endfor without #for`);
    } else if (active()) {
      out.push(substitute(lines[n], scope, file));
    }
  }
  if (stack.length) throw new Error(`${file}: unterminated #if`);
  return out;
}
