/**
 * Project-owned stand-in for `@std/testing/mock` (JSR is unreachable from our machines), mapped
 * as `@std/testing/mock` in deno.json. Same names and semantics as std for: `spy`, `stub`,
 * `assertSpyCalls`, `assertSpyCall`, `assertSpyCallAsync`, `assertSpyCallArg`,
 * `assertSpyCallArgs`, `returnsNext`, `resolvesNext`, `returnsThis`, `returnsArg`,
 * `returnsArgs`, `mockSession`, `mockSessionAsync`, `restore`, `isSpy`, `MockError`.
 * Not provided: FakeTime, getter/setter stubs.
 * @module
 */
import { assertEquals, AssertionError } from "../assert.ts";

/** Raised when a spy or stub is misused (std name). */
export class MockError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MockError";
  }
}

// deno-lint-ignore no-explicit-any
type Any = any;

/** One recorded call: arguments, `this`, and either the returned value or the thrown error. */
export interface SpyCall<Self = Any, Args extends unknown[] = Any[], Return = Any> {
  args: Args;
  returned?: Return;
  error?: Error;
  self?: Self;
}

/** A function that records its calls. */
export interface Spy<Self = Any, Args extends unknown[] = Any[], Return = Any> {
  (this: Self, ...args: Args): Return;
  /** The wrapped function (or method). */
  original: (this: Self, ...args: Args) => Return;
  /** Every call, in order. */
  calls: SpyCall<Self, Args, Return>[];
  /** True once `restore` ran (method spies only). */
  restored: boolean;
  /** Puts the original method back (method spies only; a plain spy throws MockError). */
  restore(): void;
  [Symbol.dispose](): void;
}

/** A spy installed on an object's method. */
export type MethodSpy<Self = Any, Args extends unknown[] = Any[], Return = Any> = Spy<Self, Args, Return>;

/** A method spy whose calls go to `fake` instead of the original. */
export interface Stub<Self = Any, Args extends unknown[] = Any[], Return = Any>
  extends MethodSpy<Self, Args, Return> {
  fake: (this: Self, ...args: Args) => Return;
}

type MethodArgs<Self, Prop extends keyof Self> = Self[Prop] extends (...args: infer A) => unknown ? A
  : unknown[];
type MethodReturn<Self, Prop extends keyof Self> = Self[Prop] extends (...args: Any[]) => infer R ? R
  : unknown;

const SPY = Symbol("capsule.spy");

/** True when `fn` was made by {@link spy} or {@link stub}. */
export function isSpy<Self, Args extends unknown[], Return>(fn: unknown): fn is Spy<Self, Args, Return> {
  return typeof fn === "function" && (fn as unknown as Record<symbol, unknown>)[SPY] === true;
}

// Sessions: every method spy is tracked by the sessions open when it was made, so
// `restore()` can put back everything a test (or a `mockSession` block) installed.
const sessions: Set<Spy>[] = [new Set()];

/** Opens a session; spies made until `restore(id)` belong to it. Returns the session id. */
export function mockSession(): number;
/** Wraps `fn` so every spy made while it runs is restored when it returns or throws. */
export function mockSession<Self, Args extends unknown[], Return>(
  fn: (this: Self, ...args: Args) => Return,
): (this: Self, ...args: Args) => Return;
export function mockSession<Self, Args extends unknown[], Return>(
  fn?: (this: Self, ...args: Args) => Return,
): number | ((this: Self, ...args: Args) => Return) {
  if (fn === undefined) {
    sessions.push(new Set());
    return sessions.length - 1;
  }
  return function (this: Self, ...args: Args): Return {
    const id = mockSession();
    try {
      return fn.apply(this, args);
    } finally {
      restore(id);
    }
  };
}

/** Async variant of {@link mockSession}: restores after the returned promise settles. */
export function mockSessionAsync<Self, Args extends unknown[], Return>(
  fn: (this: Self, ...args: Args) => Promise<Return>,
): (this: Self, ...args: Args) => Promise<Return> {
  return async function (this: Self, ...args: Args): Promise<Return> {
    const id = mockSession();
    try {
      return await fn.apply(this, args);
    } finally {
      restore(id);
    }
  };
}

/**
 * Restores every unrestored spy of session `id` and of the sessions opened after it, and closes
 * them; without `id`, the innermost open session (the outermost one stays open, emptied).
 */
export function restore(id?: number): void {
  const from = id ?? Math.max(sessions.length - 1, 0);
  if (from < 0 || from >= sessions.length) throw new MockError(`no mock session ${id}`);
  for (let i = sessions.length - 1; i >= from; i--) {
    for (const s of sessions[i]) if (!s.restored) s.restore();
    sessions[i].clear();
  }
  sessions.length = Math.max(from, 1);
}

function track(s: Spy): void {
  for (const session of sessions) session.add(s);
}

function untrack(s: Spy): void {
  for (const session of sessions) session.delete(s);
}

/** Wraps `impl` into a recording function; `target` is called (supports `new`). */
function makeSpy<Self, Args extends unknown[], Return>(
  original: (this: Self, ...args: Args) => Return,
  impl: (this: Self, ...args: Args) => Return,
): Spy<Self, Args, Return> {
  const calls: SpyCall<Self, Args, Return>[] = [];
  const spyFn = function (this: Self, ...args: Args): Return {
    const call: SpyCall<Self, Args, Return> = { args };
    if (this !== undefined) call.self = this;
    try {
      const returned: Return = new.target
        // `new spy(...)` builds an instance of the wrapped class, not of the spy function.
        ? Reflect.construct(
          impl as unknown as new (...a: Args) => Return,
          args,
          new.target === spyFn ? impl : new.target,
        )
        : impl.apply(this, args);
      call.returned = returned;
      calls.push(call);
      return returned;
    } catch (e) {
      call.error = e as Error;
      calls.push(call);
      throw e;
    }
  } as Spy<Self, Args, Return>;
  Object.defineProperties(spyFn, {
    [SPY]: { value: true },
    original: { value: original, enumerable: true },
    calls: { value: calls, enumerable: true },
    restored: { value: false, writable: true, enumerable: true },
  });
  return spyFn;
}

/** Replaces `self[property]` with `spyFn`; `restore` puts the original descriptor back. */
function install<Self, Args extends unknown[], Return>(
  self: Self,
  property: PropertyKey,
  spyFn: Spy<Self, Args, Return>,
): Spy<Self, Args, Return> {
  const obj = self as unknown as Record<PropertyKey, unknown>;
  const own = Object.getOwnPropertyDescriptor(obj, property);
  if (own && !own.configurable) throw new MockError("Cannot spy on non-configurable instance method");
  Object.defineProperty(obj, property, {
    configurable: true,
    enumerable: own?.enumerable ?? false,
    writable: true,
    value: spyFn,
  });
  const restoreFn = () => {
    if (spyFn.restored) throw new MockError("Instance method already restored");
    if (own) Object.defineProperty(obj, property, own);
    else delete obj[property];
    spyFn.restored = true;
    untrack(spyFn as Spy);
  };
  Object.defineProperties(spyFn, {
    restore: { value: restoreFn },
    [Symbol.dispose]: { value: restoreFn },
  });
  track(spyFn as Spy);
  return spyFn;
}

function plainRestore(s: Spy): void {
  const fail = () => {
    throw new MockError("Cannot restore: function spy is not an instance method");
  };
  Object.defineProperties(s, { restore: { value: fail }, [Symbol.dispose]: { value: fail } });
}

/** A spy that records calls and returns undefined. */
export function spy<Self = Any, Args extends unknown[] = Any[], Return = undefined>(): Spy<
  Self,
  Args,
  Return
>;
/** A spy wrapping `func`. */
export function spy<Self, Args extends unknown[], Return>(
  func: (this: Self, ...args: Args) => Return,
): Spy<Self, Args, Return>;
/** Replaces `self[property]` with a spy that calls the original method. */
export function spy<Self, Prop extends keyof Self>(
  self: Self,
  property: Prop,
): MethodSpy<Self, MethodArgs<Self, Prop>, MethodReturn<Self, Prop>>;
export function spy(funcOrSelf?: unknown, property?: PropertyKey): Spy {
  if (property === undefined) {
    if (funcOrSelf !== undefined && typeof funcOrSelf !== "function") {
      throw new MockError("spy target is not a function");
    }
    if (isSpy(funcOrSelf)) throw new MockError("Already spying on function");
    const original = (funcOrSelf ?? (() => undefined)) as (...args: unknown[]) => unknown;
    const s = makeSpy(original, original);
    plainRestore(s);
    return s;
  }
  const self = funcOrSelf as Record<PropertyKey, unknown>;
  const method = self[property];
  if (typeof method !== "function") throw new MockError("Property is not an instance method");
  if (isSpy(method)) throw new MockError("Already spying on instance method");
  const original = method as (...args: unknown[]) => unknown;
  return install(self, property, makeSpy(original, original));
}

/** Replaces `self[property]` with a recording stub returning undefined. */
export function stub<Self, Prop extends keyof Self>(
  self: Self,
  property: Prop,
): Stub<Self, MethodArgs<Self, Prop>, MethodReturn<Self, Prop>>;
/** Replaces `self[property]` with a recording stub that calls `func`. */
export function stub<Self, Prop extends keyof Self>(
  self: Self,
  property: Prop,
  func: (this: Self, ...args: MethodArgs<Self, Prop>) => MethodReturn<Self, Prop>,
): Stub<Self, MethodArgs<Self, Prop>, MethodReturn<Self, Prop>>;
export function stub(
  self: Record<PropertyKey, unknown>,
  property: PropertyKey,
  func?: (...args: unknown[]) => unknown,
): Stub {
  const current = self[property];
  if (current !== undefined && typeof current !== "function") {
    throw new MockError("Property is not an instance method");
  }
  if (isSpy(current)) throw new MockError("Already spying on instance method");
  const fake = func ?? (() => undefined);
  const original = (current ?? (() => undefined)) as (...args: unknown[]) => unknown;
  const s = install(self, property, makeSpy(original, fake)) as Stub;
  Object.defineProperty(s, "fake", { value: fake, enumerable: true });
  return s;
}

// ---------------------------------------------------------------------------------------------
// assertions

/** What a call is expected to have been; omitted fields are not checked. */
export interface ExpectedSpyCall<Self = Any, Args extends unknown[] = Any[], Return = Any> {
  args?: [...Args, ...unknown[]];
  self?: Self;
  returned?: Return;
  error?: {
    // deno-lint-ignore no-explicit-any
    Class?: abstract new (...args: any[]) => Error;
    msgIncludes?: string;
  };
}

type SpyLike<Self = Any, Args extends unknown[] = Any[], Return = Any> =
  | Spy<Self, Args, Return>
  | Stub<Self, Args, Return>;

/** Asserts the spy was called exactly `expectedCalls` times. */
export function assertSpyCalls<Self, Args extends unknown[], Return>(
  spy: SpyLike<Self, Args, Return>,
  expectedCalls: number,
): void {
  const actual = spy.calls.length;
  if (actual === expectedCalls) return;
  const how = actual < expectedCalls ? "not called as much as expected" : "called more than expected";
  throw new AssertionError(`Spy ${how}: ${actual} call(s), expected ${expectedCalls}`);
}

function getCall<Self, Args extends unknown[], Return>(
  spy: SpyLike<Self, Args, Return>,
  callIndex: number,
): SpyCall<Self, Args, Return> {
  if (callIndex >= spy.calls.length || callIndex < 0) {
    throw new AssertionError(
      `Spy not called as much as expected: no call at index ${callIndex} (${spy.calls.length} calls)`,
    );
  }
  return spy.calls[callIndex];
}

function checkArgsAndSelf<Self, Args extends unknown[], Return>(
  call: SpyCall<Self, Args, Return>,
  expected: ExpectedSpyCall<Self, Args, Return>,
): void {
  if (expected.args) assertEquals<unknown[]>(call.args, expected.args, "Spy not called with expected args");
  if ("self" in expected) assertEquals(call.self, expected.self, "Spy not called as method on expected self");
}

function checkError(error: unknown, expected: NonNullable<ExpectedSpyCall["error"]>, what: string): void {
  if (!(error instanceof Error)) {
    throw new AssertionError(`Spy call did not ${what} an Error: ${String(error)}`);
  }
  if (expected.Class && !(error instanceof expected.Class)) {
    throw new AssertionError(
      `Spy call did not ${what} expected error: expected instance of "${expected.Class.name}", got "${
        (error as Error).constructor.name
      }"`,
    );
  }
  if (expected.msgIncludes !== undefined && !error.message.includes(expected.msgIncludes)) {
    throw new AssertionError(
      `Spy call did not ${what} expected error: message ${JSON.stringify(error.message)} does not include ${
        JSON.stringify(expected.msgIncludes)
      }`,
    );
  }
}

/** Asserts call `callIndex` had the expected args/self and returned or threw as expected. */
export function assertSpyCall<Self, Args extends unknown[], Return>(
  spy: SpyLike<Self, Args, Return>,
  callIndex: number,
  expected?: ExpectedSpyCall<Self, Args, Return>,
): void {
  const call = getCall(spy, callIndex);
  if (!expected) return;
  checkArgsAndSelf(call, expected);
  if (expected.error) {
    if (!("error" in call)) {
      throw new AssertionError("Spy call did not throw an error, a value was returned.");
    }
    checkError(call.error, expected.error, "throw");
  }
  if ("returned" in expected) {
    if ("error" in call) {
      throw new AssertionError(`Spy call did not return expected value, an error was thrown: ${call.error}`);
    }
    assertEquals(call.returned, expected.returned, "Spy call did not return expected value");
  }
}

/** Like {@link assertSpyCall}, but awaits the returned promise and checks its outcome. */
export async function assertSpyCallAsync<Self, Args extends unknown[], Return>(
  spy: SpyLike<Self, Args, Promise<Return>>,
  callIndex: number,
  expected?: ExpectedSpyCall<Self, Args, Promise<Return> | Return>,
): Promise<void> {
  const call = getCall(spy, callIndex);
  if (!expected) return;
  checkArgsAndSelf(call, expected as ExpectedSpyCall<Self, Args, Promise<Return>>);
  if ("error" in call) {
    throw new AssertionError(`Spy call did not return a promise, an error was thrown: ${call.error}`);
  }
  if (!(call.returned instanceof Promise)) throw new AssertionError("Spy call did not return a promise.");
  let settled: { ok: true; value: Return } | { ok: false; error: unknown };
  try {
    settled = { ok: true, value: await call.returned };
  } catch (error) {
    settled = { ok: false, error };
  }
  if (expected.error) {
    if (settled.ok) throw new AssertionError("Spy call did not reject, a value was resolved.");
    checkError(settled.error, expected.error, "reject with");
  }
  if ("returned" in expected) {
    if (!settled.ok) {
      throw new AssertionError(`Spy call did not resolve to expected value, it rejected: ${settled.error}`);
    }
    const want = expected.returned instanceof Promise ? await expected.returned : expected.returned;
    assertEquals(settled.value, want, "Spy call did not resolve to expected value");
  }
}

/** Asserts argument `argIndex` of call `callIndex` equals `expected`. */
export function assertSpyCallArg<Self, Args extends unknown[], Return, ExpectedArg>(
  spy: SpyLike<Self, Args, Return>,
  callIndex: number,
  argIndex: number,
  expected: ExpectedArg,
): ExpectedArg {
  const call = getCall(spy, callIndex);
  assertEquals(call.args[argIndex], expected, `Spy call ${callIndex} argument ${argIndex} not as expected`);
  return expected;
}

/** Asserts the arguments of call `callIndex` (optionally the slice `[argsStart, argsEnd)`) equal `expected`. */
export function assertSpyCallArgs<Self, Args extends unknown[], Return>(
  spy: SpyLike<Self, Args, Return>,
  callIndex: number,
  ...rest: [unknown[]] | [number, unknown[]] | [number, number, unknown[]]
): unknown[] {
  const call = getCall(spy, callIndex);
  const expected = rest[rest.length - 1] as unknown[];
  const start = rest.length >= 2 ? (rest[0] as number) : undefined;
  const end = rest.length === 3 ? (rest[1] as number) : undefined;
  const actual = start === undefined ? call.args : call.args.slice(start, end);
  assertEquals(actual, expected, `Spy call ${callIndex} arguments not as expected`);
  return expected;
}

// ---------------------------------------------------------------------------------------------
// fakes

/** A function returning the next value on each call; an Error value is thrown instead. */
export function returnsNext<Return, Args extends unknown[] = Any[]>(
  values: Iterable<Return | Error>,
): (...args: Args) => Return {
  const it = values[Symbol.iterator]();
  let calls = 0;
  return (..._args: Args): Return => {
    const next = it.next();
    if (next.done) throw new MockError(`Not expected to be called more than ${calls} time(s)`);
    calls++;
    if (next.value instanceof Error) throw next.value;
    return next.value;
  };
}

/** Async counterpart of {@link returnsNext}: resolves the next value (awaiting promises), rejects Errors. */
export function resolvesNext<Return, Args extends unknown[] = Any[]>(
  iterable:
    | Iterable<Return | Error | Promise<Return | Error>>
    | AsyncIterable<Return | Error | Promise<Return | Error>>,
): (...args: Args) => Promise<Return> {
  const it = Symbol.asyncIterator in iterable
    ? (iterable as AsyncIterable<Return | Error>)[Symbol.asyncIterator]()
    : (iterable as Iterable<Return | Error>)[Symbol.iterator]();
  let calls = 0;
  return async (..._args: Args): Promise<Return> => {
    const next = await it.next();
    if (next.done) throw new MockError(`Not expected to be called more than ${calls} time(s)`);
    calls++;
    const value = await next.value;
    if (value instanceof Error) throw value;
    return value as Return;
  };
}

/** A function that returns its `this`. */
export function returnsThis<Self, Args extends unknown[] = Any[]>(): (this: Self, ...args: Args) => Self {
  return function (this: Self): Self {
    return this;
  };
}

/** A function that returns its argument at `idx`. */
export function returnsArg<Arg, Self = Any>(idx: number): (this: Self, ...args: Arg[]) => Arg | undefined {
  return (...args: Arg[]) => args[idx];
}

/** A function that returns its arguments `[start, end)`. */
export function returnsArgs<Args extends unknown[], Self = Any>(
  start = 0,
  end?: number,
): (this: Self, ...args: Args) => Args {
  return (...args: Args) => args.slice(start, end) as Args;
}
