/**
 * Project-owned stand-in for `@std/testing/bdd` (JSR is unreachable from our machines), mapped
 * as `@std/testing/bdd` in deno.json. Same names and the same registration model as std:
 *
 * - A top-level `describe` registers ONE `Deno.test` named after the suite; everything inside
 *   it (`it`s and nested `describe`s) runs as test steps (`t.step`), in declaration order, so
 *   `deno test` reports `suite ... test` as a test with steps.
 * - A top-level `it` (outside any `describe`) registers its own `Deno.test`.
 * - `beforeAll`/`afterAll` run once around a suite's children; `beforeEach`/`afterEach` run
 *   around every `it` of the suite and of its nested suites (outer `beforeEach` first, inner
 *   `afterEach` first). `afterEach`/`afterAll` run even when a test or hook before them failed.
 *   Hooks called outside any `describe` apply to the file's top-level tests and suites
 *   (a top-level `afterAll` runs after the last registered top-level test finishes, so with
 *   `--filter` it may not run — keep cleanup inside suites).
 * - `this` in hooks and tests: a suite context object (set up by `beforeAll`) that each test
 *   inherits from through a fresh per-test object (set up by `beforeEach`).
 * - `.only`: inside a suite, only the `only` children (or children containing one) run; the
 *   top-level Deno.test that contains an `only` is registered with `only: true`, so Deno runs
 *   just those and reports the run as failed because "only" was used, exactly as with std.
 * - `.ignore`: the test or suite is registered/stepped as ignored.
 * @module
 */

/** Context object bound to `this` in hooks and test functions. */
// deno-lint-ignore no-explicit-any
export type TestContext = Record<string, any>;

/** A test body: receives Deno's test (or step) context, `this` is the shared context object. */
export type ItFn = (this: TestContext, t: Deno.TestContext) => void | Promise<void>;
/** A hook body. */
export type HookFn = (this: TestContext) => void | Promise<void>;

type Sanitizers = Pick<Deno.TestDefinition, "sanitizeOps" | "sanitizeResources" | "sanitizeExit">;

/** Options accepted by `it` (std's `ItDefinition` minus name/fn). */
export interface ItOptions extends Sanitizers {
  ignore?: boolean;
  only?: boolean;
  permissions?: Deno.PermissionOptions;
}

/** A complete `it` definition object. */
export interface ItDefinition extends ItOptions {
  name: string;
  fn: ItFn;
  /** The suite to attach to instead of the lexically enclosing one. */
  suite?: TestSuite;
}

/** Options accepted by `describe` (std's `DescribeDefinition` minus name/fn). */
export interface DescribeOptions extends ItOptions {
  beforeAll?: HookFn | HookFn[];
  afterAll?: HookFn | HookFn[];
  beforeEach?: HookFn | HookFn[];
  afterEach?: HookFn | HookFn[];
}

/** A complete `describe` definition object. */
export interface DescribeDefinition extends DescribeOptions {
  name: string;
  fn?: () => void;
  /** The suite to nest into instead of the lexically enclosing one. */
  suite?: TestSuite;
}

interface TestNode {
  kind: "test";
  name: string;
  fn: ItFn;
  options: ItOptions;
}

/** Hook lists of one suite. */
export interface Hooks {
  beforeAll: HookFn[];
  afterAll: HookFn[];
  beforeEach: HookFn[];
  afterEach: HookFn[];
}

/** A suite as returned by `describe`; pass it as the first argument to attach children explicitly. */
export interface TestSuite {
  readonly name: string;
}

interface SuiteNode extends TestSuite {
  kind: "suite";
  name: string;
  parent: SuiteNode | null;
  options: ItOptions;
  hooks: Hooks;
  children: (TestNode | SuiteNode)[];
}

function emptyHooks(): Hooks {
  return { beforeAll: [], afterAll: [], beforeEach: [], afterEach: [] };
}

/** Hooks declared outside any describe; they wrap every top-level test of the module graph. */
const root: SuiteNode = {
  kind: "suite",
  name: "",
  parent: null,
  options: {},
  hooks: emptyHooks(),
  children: [],
};
/**
 * Test seam, not part of std's API: `registerTest` is the real `Deno.test` unless a test of this
 * module swaps it to capture definitions (the only way to test `.only` without failing the run);
 * `rootHooks` are the top-level hooks, so such a test can undo the ones it added.
 */
export const _internals: { registerTest: (def: Deno.TestDefinition) => void; rootHooks: Hooks } = {
  registerTest: (def) => Deno.test(def),
  rootHooks: root.hooks,
};

const rootState = { registered: 0, finished: 0, beforeAllDone: false, context: {} as TestContext };

/** Suites whose `describe` callback is running right now (innermost last). */
const stack: SuiteNode[] = [];

function asList(h: HookFn | HookFn[] | undefined): HookFn[] {
  return h === undefined ? [] : Array.isArray(h) ? h : [h];
}

function hasOnly(node: TestNode | SuiteNode): boolean {
  if (node.options.only) return true;
  return node.kind === "suite" && node.children.some(hasOnly);
}

/** Suites from the outermost (root) to `suite`. */
function chain(suite: SuiteNode): SuiteNode[] {
  const out: SuiteNode[] = [];
  for (let s: SuiteNode | null = suite; s !== null; s = s.parent) out.unshift(s);
  if (out[0] !== root) out.unshift(root);
  return out;
}

/** Only the sanitizer options actually given, so Deno's defaults apply otherwise. */
function sanitizers(o: ItOptions): Sanitizers {
  const out: Sanitizers = {};
  if (o.sanitizeOps !== undefined) out.sanitizeOps = o.sanitizeOps;
  if (o.sanitizeResources !== undefined) out.sanitizeResources = o.sanitizeResources;
  if (o.sanitizeExit !== undefined) out.sanitizeExit = o.sanitizeExit;
  return out;
}

async function runHooks(hooks: HookFn[], self: TestContext): Promise<void> {
  for (const h of hooks) await h.call(self);
}

/** Runs one `it` with every enclosing suite's beforeEach/afterEach. */
async function runTest(
  test: TestNode,
  parent: SuiteNode,
  suiteCtx: TestContext,
  t: Deno.TestContext,
): Promise<void> {
  const self: TestContext = Object.create(suiteCtx);
  const suites = chain(parent);
  let entered = 0;
  // The first failure wins (the test's own error over a later afterEach error).
  let failure: { error: unknown } | null = null;
  try {
    for (const s of suites) {
      entered++;
      await runHooks(s.hooks.beforeEach, self);
    }
    await test.fn.call(self, t);
  } catch (error) {
    failure = { error };
  }
  // Only suites whose beforeEach started get their afterEach, innermost first.
  for (let i = entered - 1; i >= 0; i--) {
    try {
      await runHooks(suites[i].hooks.afterEach, self);
    } catch (error) {
      failure ??= { error };
    }
  }
  if (failure) throw failure.error;
}

/** Runs a suite's children as steps of `t`, inside its beforeAll/afterAll. */
async function runSuite(suite: SuiteNode, parentCtx: TestContext, t: Deno.TestContext): Promise<void> {
  const ctx: TestContext = Object.create(parentCtx);
  const onlyMode = suite.children.some(hasOnly);
  try {
    await runHooks(suite.hooks.beforeAll, ctx);
    for (const child of suite.children) {
      const skipped = child.options.ignore === true || (onlyMode && !hasOnly(child));
      const fn = child.kind === "test"
        ? (st: Deno.TestContext) => runTest(child, suite, ctx, st)
        : (st: Deno.TestContext) => runSuite(child, ctx, st);
      await t.step({ ...sanitizers(child.options), name: child.name, ignore: skipped, fn });
    }
  } finally {
    await runHooks(suite.hooks.afterAll, ctx);
  }
}

/** Wraps a top-level body with the root hooks (top-level beforeAll once, afterAll after the last). */
async function runTopLevel(body: (ctx: TestContext) => Promise<void>): Promise<void> {
  try {
    if (!rootState.beforeAllDone) {
      rootState.beforeAllDone = true;
      await runHooks(root.hooks.beforeAll, rootState.context);
    }
    await body(rootState.context);
  } finally {
    rootState.finished++;
    if (rootState.finished === rootState.registered) await runHooks(root.hooks.afterAll, rootState.context);
  }
}

function register(node: TestNode | SuiteNode): void {
  const { options } = node;
  // Ignored tests never run, so they must not hold back the top-level afterAll.
  if (!options.ignore) rootState.registered++;
  const fn = node.kind === "test"
    ? (t: Deno.TestContext) => runTopLevel((ctx) => runTest(node, root, ctx, t))
    : (t: Deno.TestContext) => runTopLevel((ctx) => runSuite(node, ctx, t));
  _internals.registerTest({
    name: node.name,
    fn,
    ignore: options.ignore,
    only: hasOnly(node),
    ...(options.permissions !== undefined ? { permissions: options.permissions } : {}),
    ...sanitizers(options),
  });
}

function parentFor(explicit: TestSuite | undefined): SuiteNode | null {
  if (explicit !== undefined) {
    const s = explicit as SuiteNode;
    if (s.kind !== "suite" || s === root) {
      throw new TypeError(`not a suite returned by describe: ${String(explicit.name)}`);
    }
    return s;
  }
  return stack.length > 0 ? stack[stack.length - 1] : null;
}

// ---------------------------------------------------------------------------------------------
// it

type ItArgs =
  | [ItDefinition]
  | [string, ItFn]
  | [string, ItOptions, ItFn]
  | [TestSuite, string, ItFn]
  | [TestSuite, string, ItOptions, ItFn];

function normalizeIt(args: ItArgs): ItDefinition {
  const [a, b, c, d] = args as unknown[];
  if (typeof a === "object" && a !== null && "fn" in a) return a as ItDefinition;
  if (typeof a === "string") {
    return typeof b === "function"
      ? { name: a, fn: b as ItFn }
      : { ...(b as ItOptions), name: a, fn: c as ItFn };
  }
  const suite = a as TestSuite;
  return typeof c === "function"
    ? { suite, name: b as string, fn: c as ItFn }
    : { ...(c as ItOptions), suite, name: b as string, fn: d as ItFn };
}

function defineIt(def: ItDefinition): void {
  const { name, fn, suite, ...options } = def;
  if (typeof fn !== "function") throw new TypeError(`it("${name}"): missing test function`);
  const node: TestNode = { kind: "test", name, fn, options };
  const parent = parentFor(suite);
  if (parent) parent.children.push(node);
  else register(node);
}

/** Signature shared by `it`, `it.only` and `it.ignore`. */
export interface ItFunction {
  (def: ItDefinition): void;
  (name: string, fn: ItFn): void;
  (name: string, options: ItOptions, fn: ItFn): void;
  (suite: TestSuite, name: string, fn: ItFn): void;
  (suite: TestSuite, name: string, options: ItOptions, fn: ItFn): void;
}

/** `it` plus its `.only` / `.ignore` variants. */
export interface It extends ItFunction {
  only: ItFunction;
  ignore: ItFunction;
}

function makeIt(extra: ItOptions): ItFunction {
  return ((...args: ItArgs) => defineIt({ ...normalizeIt(args), ...extra })) as ItFunction;
}

/** Registers a test (a step of the enclosing `describe`, or its own Deno.test at top level). */
export const it: It = Object.assign(makeIt({}), {
  only: makeIt({ only: true }),
  ignore: makeIt({ ignore: true }),
});
/** Alias of {@link it}. */
export const test: It = it;

// ---------------------------------------------------------------------------------------------
// describe

type DescribeArgs =
  | [DescribeDefinition]
  | [string, () => void]
  | [string, DescribeOptions, () => void]
  | [string]
  | [TestSuite, string, () => void]
  | [TestSuite, string, DescribeOptions, () => void];

function normalizeDescribe(args: DescribeArgs): DescribeDefinition {
  const [a, b, c, d] = args as unknown[];
  if (typeof a === "object" && a !== null && !("kind" in a)) return a as DescribeDefinition;
  if (typeof a === "string") {
    if (b === undefined || typeof b === "function") return { name: a, fn: b as (() => void) | undefined };
    return { ...(b as DescribeOptions), name: a, fn: c as () => void };
  }
  const suite = a as TestSuite;
  return typeof c === "function"
    ? { suite, name: b as string, fn: c as () => void }
    : { ...(c as DescribeOptions), suite, name: b as string, fn: d as () => void };
}

function defineDescribe(def: DescribeDefinition): TestSuite {
  const { name, fn, suite, beforeAll, afterAll, beforeEach, afterEach, ...options } = def;
  const parent = parentFor(suite);
  const node: SuiteNode = {
    kind: "suite",
    name,
    parent,
    options,
    hooks: {
      beforeAll: asList(beforeAll),
      afterAll: asList(afterAll),
      beforeEach: asList(beforeEach),
      afterEach: asList(afterEach),
    },
    children: [],
  };
  if (parent) parent.children.push(node);
  if (fn) {
    stack.push(node);
    try {
      const r: unknown = fn();
      if (r instanceof Promise) throw new Error(`describe("${name}"): the callback must be synchronous`);
    } finally {
      stack.pop();
    }
  }
  if (!parent) {
    // Registered after the callback so an `.only` anywhere inside marks the Deno.test. Children
    // added later through the returned suite object still run (the list is read at run time),
    // but an `.only` among them no longer reaches the top-level registration.
    register(node);
  }
  return node;
}

/** Signature shared by `describe`, `describe.only` and `describe.ignore`. */
export interface DescribeFunction {
  (def: DescribeDefinition): TestSuite;
  (name: string, fn?: () => void): TestSuite;
  (name: string, options: DescribeOptions, fn: () => void): TestSuite;
  (suite: TestSuite, name: string, fn: () => void): TestSuite;
  (suite: TestSuite, name: string, options: DescribeOptions, fn: () => void): TestSuite;
}

/** `describe` plus its `.only` / `.ignore` variants. */
export interface Describe extends DescribeFunction {
  only: DescribeFunction;
  ignore: DescribeFunction;
}

function makeDescribe(extra: ItOptions): DescribeFunction {
  return ((...args: DescribeArgs) =>
    defineDescribe({ ...normalizeDescribe(args), ...extra })) as DescribeFunction;
}

/** Groups tests: one Deno.test per top-level suite, nested suites and tests as steps. */
export const describe: Describe = Object.assign(makeDescribe({}), {
  only: makeDescribe({ only: true }),
  ignore: makeDescribe({ ignore: true }),
});

// ---------------------------------------------------------------------------------------------
// hooks

function addHook(kind: keyof Hooks, fn: HookFn): void {
  const suite = stack.length > 0 ? stack[stack.length - 1] : root;
  suite.hooks[kind].push(fn);
}

/** Runs once before the enclosing suite's tests. */
export function beforeAll(fn: HookFn): void {
  addHook("beforeAll", fn);
}
/** Runs once after the enclosing suite's tests, even when one failed. */
export function afterAll(fn: HookFn): void {
  addHook("afterAll", fn);
}
/** Runs before every test of the enclosing suite and its nested suites. */
export function beforeEach(fn: HookFn): void {
  addHook("beforeEach", fn);
}
/** Runs after every test of the enclosing suite and its nested suites, even when it failed. */
export function afterEach(fn: HookFn): void {
  addHook("afterEach", fn);
}
/** Alias of {@link beforeAll}. */
export const before: typeof beforeAll = beforeAll;
/** Alias of {@link afterAll}. */
export const after: typeof afterAll = afterAll;
