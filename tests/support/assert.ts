/**
 * Project-owned stand-in for `@std/assert` (JSR is unreachable from our machines).
 * Same function names, signatures and semantics as the std module for the subset we use,
 * so the import map alone can switch to the real package.
 * @module
 */

/** Error thrown when an assertion fails. */
export class AssertionError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AssertionError";
  }
}

function format(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "bigint") return `${v}n`;
  try {
    return Deno.inspect(v, {
      depth: 8,
      sorted: true,
      trailingComma: false,
      compact: true,
      iterableLimit: 50,
    });
  } catch {
    return String(v);
  }
}

function isKeyedCollection(x: unknown): x is Set<unknown> | Map<unknown, unknown> {
  return x instanceof Set || x instanceof Map;
}

/** Deep structural equality, as `@std/assert`'s `equal`. */
export function equal(a: unknown, b: unknown): boolean {
  const seen = new Map<unknown, unknown>();
  const compare = (x: unknown, y: unknown): boolean => {
    if (Object.is(x, y)) return true;
    if (x instanceof Date && y instanceof Date) return Object.is(x.getTime(), y.getTime());
    if (x instanceof RegExp && y instanceof RegExp) return String(x) === String(y);
    if (typeof x !== "object" || typeof y !== "object" || x === null || y === null) return false;
    if (seen.get(x) === y) return true;
    if (Object.getPrototypeOf(x) !== Object.getPrototypeOf(y)) return false;
    seen.set(x, y);
    if (ArrayBuffer.isView(x) && ArrayBuffer.isView(y)) {
      const xa = x as unknown as ArrayLike<unknown>;
      const ya = y as unknown as ArrayLike<unknown>;
      if (xa.length !== ya.length) return false;
      for (let i = 0; i < xa.length; i++) if (!Object.is(xa[i], ya[i])) return false;
      return true;
    }
    if (x instanceof ArrayBuffer && y instanceof ArrayBuffer) {
      return compare(new Uint8Array(x), new Uint8Array(y));
    }
    if (isKeyedCollection(x) && isKeyedCollection(y)) {
      if (x.size !== y.size) return false;
      if (x instanceof Set && y instanceof Set) {
        outer: for (const v of x) {
          if (y.has(v)) continue;
          for (const w of y) if (compare(v, w)) continue outer;
          return false;
        }
        return true;
      }
      const xm = x as Map<unknown, unknown>;
      const ym = y as Map<unknown, unknown>;
      for (const [k, v] of xm) {
        if (!ym.has(k) || !compare(v, ym.get(k))) return false;
      }
      return true;
    }
    const xo = x as Record<string | symbol, unknown>;
    const yo = y as Record<string | symbol, unknown>;
    const keys = (o: object) => [...Object.keys(o), ...Object.getOwnPropertySymbols(o)];
    const xk = keys(xo).filter((k) => xo[k] !== undefined);
    const yk = keys(yo).filter((k) => yo[k] !== undefined);
    if (xk.length !== yk.length) return false;
    for (const k of xk) if (!compare(xo[k], yo[k])) return false;
    return true;
  };
  return compare(a, b);
}

function suffix(msg?: string): string {
  return msg ? `: ${msg}` : ".";
}

/** Asserts that `expr` is truthy. */
export function assert(expr: unknown, msg = ""): asserts expr {
  if (!expr) throw new AssertionError(msg || "Expected expression to be truthy");
}

/** Asserts that `actual` deeply equals `expected`. */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  if (equal(actual, expected)) return;
  throw new AssertionError(
    `Values are not equal${suffix(msg)}\n  actual:   ${format(actual)}\n  expected: ${format(expected)}`,
  );
}

/** Asserts that `actual` does not deeply equal `expected`. */
export function assertNotEquals<T>(actual: T, expected: T, msg?: string): void {
  if (!equal(actual, expected)) return;
  throw new AssertionError(`Expected actual: ${format(actual)} not to be: ${format(expected)}${suffix(msg)}`);
}

/** Asserts `Object.is(actual, expected)`. */
export function assertStrictEquals<T>(actual: unknown, expected: T, msg?: string): asserts actual is T {
  if (Object.is(actual, expected)) return;
  throw new AssertionError(
    `Values are not strictly equal${suffix(msg)}\n  actual:   ${format(actual)}\n  expected: ${
      format(expected)
    }`,
  );
}

/** Asserts that `actual` is within `tolerance` of `expected` (default 1e-7, relative to magnitude as std does). */
export function assertAlmostEquals(actual: number, expected: number, tolerance?: number, msg?: string): void {
  if (Object.is(actual, expected)) return;
  const delta = Math.abs(expected - actual);
  const tol = tolerance ?? Math.abs(expected) * 1e-7;
  if (delta <= tol) return;
  const f = (n: number) => (Number.isInteger(n) ? n : n.toExponential());
  throw new AssertionError(
    `Expected actual: "${f(actual)}" to be close to "${f(expected)}": delta "${f(delta)}" is greater than "${
      f(tol)
    }"${suffix(msg)}`,
  );
}

/** Asserts that `actual` is neither null nor undefined. */
export function assertExists<T>(actual: T, msg?: string): asserts actual is NonNullable<T> {
  if (actual === undefined || actual === null) {
    throw new AssertionError(msg ?? `Expected actual: "${actual}" to not be null or undefined.`);
  }
}

/** Asserts that `actual` is an instance of `expectedType`. */
// deno-lint-ignore no-explicit-any
export function assertInstanceOf<T extends abstract new (...args: any[]) => any>(
  actual: unknown,
  expectedType: T,
  msg?: string,
): asserts actual is InstanceType<T> {
  if (actual instanceof expectedType) return;
  throw new AssertionError(
    msg ?? `Expected object to be an instance of "${expectedType.name}" but was ${format(actual)}.`,
  );
}

/** Asserts that `actual` matches the RegExp. */
export function assertMatch(actual: string, expected: RegExp, msg?: string): void {
  if (expected.test(actual)) return;
  throw new AssertionError(`Expected actual: "${actual}" to match: "${expected}"${suffix(msg)}`);
}

/** Asserts that `actual` does not match the RegExp. */
export function assertNotMatch(actual: string, expected: RegExp, msg?: string): void {
  if (!expected.test(actual)) return;
  throw new AssertionError(`Expected actual: "${actual}" to not match: "${expected}"${suffix(msg)}`);
}

/** Asserts that `actual` includes `expected`. */
export function assertStringIncludes(actual: string, expected: string, msg?: string): void {
  if (actual.includes(expected)) return;
  throw new AssertionError(`Expected actual: "${actual}" to contain: "${expected}"${suffix(msg)}`);
}

/** Asserts that every element of `expected` is in `actual` (deep equality). */
export function assertArrayIncludes<T>(actual: ArrayLike<T>, expected: ArrayLike<T>, msg?: string): void {
  const missing: T[] = [];
  for (let i = 0; i < expected.length; i++) {
    let found = false;
    for (let j = 0; j < actual.length; j++) {
      if (equal(expected[i], actual[j])) {
        found = true;
        break;
      }
    }
    if (!found) missing.push(expected[i]);
  }
  if (missing.length === 0) return;
  throw new AssertionError(
    `Expected actual: "${format(actual)}" to include: "${format(expected)}"${suffix(msg)}\nmissing: ${
      format(missing)
    }`,
  );
}

/** Asserts `actual > expected`. */
export function assertGreater<T>(actual: T, expected: T, msg?: string): void {
  if (actual > expected) return;
  throw new AssertionError(msg ?? `Expect ${format(actual)} > ${format(expected)}`);
}

/** Asserts `actual >= expected`. */
export function assertGreaterOrEqual<T>(actual: T, expected: T, msg?: string): void {
  if (actual >= expected) return;
  throw new AssertionError(msg ?? `Expect ${format(actual)} >= ${format(expected)}`);
}

/** Asserts `actual < expected`. */
export function assertLess<T>(actual: T, expected: T, msg?: string): void {
  if (actual < expected) return;
  throw new AssertionError(msg ?? `Expect ${format(actual)} < ${format(expected)}`);
}

/** Asserts `actual <= expected`. */
export function assertLessOrEqual<T>(actual: T, expected: T, msg?: string): void {
  if (actual <= expected) return;
  throw new AssertionError(msg ?? `Expect ${format(actual)} <= ${format(expected)}`);
}

/** Asserts that `actual` contains the properties of `expected` with equal values (recursively). */
export function assertObjectMatch(
  actual: Record<PropertyKey, unknown>,
  expected: Record<PropertyKey, unknown>,
  msg?: string,
): void {
  const pick = (a: unknown, e: unknown): unknown => {
    if (Array.isArray(e) && Array.isArray(a)) return e.map((v, i) => pick(a[i], v));
    if (e && typeof e === "object" && a && typeof a === "object" && !ArrayBuffer.isView(e)) {
      const out: Record<PropertyKey, unknown> = {};
      for (const k of Reflect.ownKeys(e)) {
        out[k] = pick((a as Record<PropertyKey, unknown>)[k], (e as Record<PropertyKey, unknown>)[k]);
      }
      return out;
    }
    return a;
  };
  assertEquals(pick(actual, expected), expected, msg);
}

/** Always throws. */
export function fail(msg?: string): never {
  throw new AssertionError(`Failed assertion${msg ? `: ${msg}` : "."}`);
}

/** Marks code that must never run. */
export function unreachable(msg?: string): never {
  throw new AssertionError(msg ?? "Unreachable");
}

/** Asserts that `actual` is false-y. */
export function assertFalse(expr: unknown, msg = ""): asserts expr is false | 0 | "" | null | undefined {
  if (expr) throw new AssertionError(msg || "Expected actual to be falsy");
}

type ErrorClass<E extends Error> = abstract new (...args: never[]) => E;

function checkError<E extends Error>(
  e: unknown,
  ErrorClass?: ErrorClass<E>,
  msgIncludes?: string,
  msg?: string,
): E {
  if (ErrorClass) {
    if (!(e instanceof ErrorClass)) {
      throw new AssertionError(
        `Expected error to be instance of "${ErrorClass.name}", but was "${
          (e as Error)?.constructor?.name ?? typeof e
        }"${suffix(msg)}\n${(e as Error)?.message ?? ""}`,
      );
    }
    if (msgIncludes !== undefined && !String((e as Error).message).includes(msgIncludes)) {
      throw new AssertionError(
        `Expected error message to include ${JSON.stringify(msgIncludes)}, but got ${
          JSON.stringify((e as Error).message)
        }${suffix(msg)}`,
      );
    }
  }
  return e as E;
}

/** Asserts that `fn` throws; returns the error. */
export function assertThrows<E extends Error = Error>(
  fn: () => unknown,
  ErrorClass?: ErrorClass<E> | string,
  msgIncludes?: string,
  msg?: string,
): E {
  if (typeof ErrorClass === "string") {
    msg = ErrorClass;
    ErrorClass = undefined;
  }
  try {
    fn();
  } catch (e) {
    return checkError(e, ErrorClass, msgIncludes, msg);
  }
  throw new AssertionError(`Expected function to throw${suffix(msg)}`);
}

/** Asserts that `fn` returns a promise that rejects; returns the error. */
export async function assertRejects<E extends Error = Error>(
  fn: () => PromiseLike<unknown>,
  ErrorClass?: ErrorClass<E> | string,
  msgIncludes?: string,
  msg?: string,
): Promise<E> {
  if (typeof ErrorClass === "string") {
    msg = ErrorClass;
    ErrorClass = undefined;
  }
  try {
    await fn();
  } catch (e) {
    return checkError(e, ErrorClass, msgIncludes, msg);
  }
  throw new AssertionError(`Expected function to reject${suffix(msg)}`);
}
