/**
 * Tests of the project-owned stand-ins for @std/assert, @std/testing/bdd and @std/testing/mock.
 * The bdd semantics are checked twice: for real (suites below run under Deno.test and assert
 * inside their own tests) and through captured registrations run by a tiny step runner, which
 * is the only way to observe `.only` without making `deno test` fail the whole run.
 */
import {
  assert,
  assertAlmostEquals,
  assertEquals,
  AssertionError,
  assertRejects,
  assertStrictEquals,
  assertThrows,
} from "@std/assert";
import { _internals, afterAll, afterEach, beforeAll, beforeEach, describe, it } from "@std/testing/bdd";
import {
  assertSpyCall,
  assertSpyCallArg,
  assertSpyCallArgs,
  assertSpyCallAsync,
  assertSpyCalls,
  isSpy,
  MockError,
  mockSession,
  resolvesNext,
  restore,
  returnsArg,
  returnsArgs,
  returnsNext,
  returnsThis,
  spy,
  stub,
} from "@std/testing/mock";

// ---------------------------------------------------------------------------------------------
// @std/assert

Deno.test("assertEquals compares typed arrays by type and content", () => {
  assertEquals(new Float32Array([1, 2.5, NaN]), new Float32Array([1, 2.5, NaN]));
  assertEquals(new Uint8Array(0), new Uint8Array(0));
  assertThrows(() => assertEquals(new Float32Array([1, 2]), new Float32Array([1, 3])), AssertionError);
  assertThrows(() => assertEquals(new Float32Array([1, 2]), new Float32Array([1, 2, 0])), AssertionError);
  assertThrows(
    () => assertEquals<unknown>(new Float32Array([1, 2]), new Float64Array([1, 2])),
    AssertionError,
    "not equal",
  );
  assertThrows(() => assertEquals<unknown>(new Int32Array([1]), [1]), AssertionError);
});

Deno.test("assertEquals is deep over objects, arrays, maps, sets and dates", () => {
  assertEquals({ a: [1, { b: new Map([["k", new Set([1, 2])]]) }], d: new Date(5) }, {
    a: [1, { b: new Map([["k", new Set([2, 1])]]) }],
    d: new Date(5),
  });
  assertThrows(() => assertEquals({ a: [1, { b: 2 }] }, { a: [1, { b: 3 }] }), AssertionError, "actual");
  assertThrows(() => assertEquals(new Map([["k", 1]]), new Map([["k", 2]])), AssertionError);
  assertThrows(() => assertEquals([1, 2], [2, 1]), AssertionError);
  assertThrows(() => assertEquals(new Date(1), new Date(2)), AssertionError);
});

class CustomError extends Error {}

Deno.test("assertThrows checks the error class and message and returns the error", () => {
  const e = assertThrows(
    () => {
      throw new CustomError("bad thing happened");
    },
    CustomError,
    "thing",
  );
  assert(e instanceof CustomError);
  assertThrows(() => assertThrows(() => {}), AssertionError, "Expected function to throw");
  assertThrows(
    () =>
      assertThrows(() => {
        throw new Error("x");
      }, CustomError),
    AssertionError,
    "CustomError",
  );
  assertThrows(
    () =>
      assertThrows(
        () => {
          throw new CustomError("abc");
        },
        CustomError,
        "xyz",
      ),
    AssertionError,
    "xyz",
  );
});

Deno.test("assertRejects checks the rejection class and message", async () => {
  const e = await assertRejects(() => Promise.reject(new CustomError("nope")), CustomError, "no");
  assertEquals(e.message, "nope");
  await assertRejects(() => assertRejects(() => Promise.resolve(1)), AssertionError, "reject");
  await assertRejects(
    () => assertRejects(() => Promise.reject(new TypeError("t")), CustomError),
    AssertionError,
  );
  await assertRejects(
    () => assertRejects(() => Promise.reject(new CustomError("abc")), CustomError, "zzz"),
    AssertionError,
  );
});

Deno.test("assertAlmostEquals uses a relative default tolerance and honours an explicit one", () => {
  assertAlmostEquals(1e9, 1e9 + 50); // within 1e-7 relative
  assertThrows(() => assertAlmostEquals(1e9, 1e9 + 500), AssertionError, "close to");
  assertAlmostEquals(1.0, 1.05, 0.1);
  assertThrows(() => assertAlmostEquals(1.0, 1.2, 0.1), AssertionError);
  assertAlmostEquals(NaN, NaN);
  assertThrows(() => assertAlmostEquals(0, 1e-12), AssertionError, "delta");
});

// ---------------------------------------------------------------------------------------------
// @std/testing/bdd, for real

describe("bdd under Deno.test", () => {
  const seen: string[] = [];
  beforeAll(function () {
    this.shared = "from beforeAll";
    seen.push("beforeAll");
  });
  beforeEach(function () {
    this.perTest = (this.perTest ?? 0) + 1;
    seen.push("beforeEach");
  });
  afterEach(() => {
    seen.push("afterEach");
  });
  afterAll(() => {
    // Runs after both tests (and the nested suite) of this suite.
    assertEquals(seen.filter((s) => s === "beforeAll").length, 1);
  });

  it("sees the suite context and a fresh per-test context", function () {
    assertEquals(this.shared, "from beforeAll");
    assertEquals(this.perTest, 1);
    this.leak = true;
  });

  it("does not see what the previous test wrote", function () {
    assertEquals(this.perTest, 1);
    assertEquals(this.leak, undefined);
    assertEquals(seen, ["beforeAll", "beforeEach", "afterEach", "beforeEach"]);
  });

  it.ignore("an ignored test is not run", () => {
    throw new Error("must not run");
  });

  describe("nested", () => {
    beforeEach(function () {
      this.inner = this.perTest * 10;
    });
    it("gets outer beforeEach before inner beforeEach", function (t) {
      assertEquals(this.inner, 10);
      assertEquals(t.name, "gets outer beforeEach before inner beforeEach");
    });
  });
});

it("a top-level it registers its own test and gets the Deno test context", (t) => {
  assertEquals(t.name, "a top-level it registers its own test and gets the Deno test context");
});

// ---------------------------------------------------------------------------------------------
// @std/testing/bdd, captured

interface Captured {
  defs: Deno.TestDefinition[];
  /** What the fake runner saw: "pass a/b", "fail a/b: msg", "ignore a/b". */
  log: string[];
}

/** Collects what `define` registers, without touching the real test list. */
function capture(define: () => void): Deno.TestDefinition[] {
  const real = _internals.registerTest;
  const defs: Deno.TestDefinition[] = [];
  _internals.registerTest = (def) => defs.push(def);
  try {
    define();
  } finally {
    _internals.registerTest = real;
  }
  return defs;
}

/** A minimal stand-in for Deno's runner: runs steps in order, records outcomes. */
function fakeContext(path: string, log: string[]): Deno.TestContext {
  const step = async (def: Deno.TestStepDefinition) => {
    const name = `${path}/${def.name}`;
    if (def.ignore) {
      log.push(`ignore ${name}`);
      return false;
    }
    try {
      await def.fn(fakeContext(name, log));
      log.push(`pass ${name}`);
      return true;
    } catch (e) {
      log.push(`fail ${name}: ${(e as Error).message}`);
      return false;
    }
  };
  return { name: path, origin: "fake", parent: undefined, step } as unknown as Deno.TestContext;
}

async function runCaptured(define: () => void, events?: string[]): Promise<Captured> {
  const defs = capture(define);
  const log = events ?? [];
  for (const def of defs) {
    if (def.ignore) {
      log.push(`ignore ${def.name}`);
      continue;
    }
    try {
      await def.fn!(fakeContext(def.name, log));
      log.push(`pass ${def.name}`);
    } catch (e) {
      log.push(`fail ${def.name}: ${(e as Error).message}`);
    }
  }
  return { defs, log };
}

Deno.test("bdd registers one Deno.test per top-level describe and one per top-level it", async () => {
  const { defs, log } = await runCaptured(() => {
    describe("suite A", () => {
      it("a1", () => {});
      describe("inner", () => {
        it("a2", () => {});
      });
    });
    it("lonely", () => {});
    describe("suite B", () => {
      it("b1", () => {});
    });
  });
  assertEquals(defs.map((d) => d.name), ["suite A", "lonely", "suite B"]);
  assertEquals(defs.map((d) => d.only), [false, false, false]);
  assertEquals(log, [
    "pass suite A/a1",
    "pass suite A/inner/a2",
    "pass suite A/inner",
    "pass suite A",
    "pass lonely",
    "pass suite B/b1",
    "pass suite B",
  ]);
});

Deno.test("bdd runs hooks in std order: outer before inner, inner after outer", async () => {
  const ev: string[] = [];
  const hook = (s: string) => () => {
    ev.push(s);
  };
  await runCaptured(() => {
    describe("S", { beforeEach: hook("S.beforeEach(option)") }, () => {
      beforeAll(hook("S.beforeAll"));
      afterAll(hook("S.afterAll"));
      beforeEach(hook("S.beforeEach"));
      afterEach(hook("S.afterEach"));
      it("t1", hook("t1"));
      describe("N", () => {
        beforeAll(hook("N.beforeAll"));
        afterAll(hook("N.afterAll"));
        beforeEach(hook("N.beforeEach"));
        afterEach(hook("N.afterEach"));
        it("t2", hook("t2"));
      });
    });
  }, ev);
  assertEquals(ev, [
    "S.beforeAll",
    "S.beforeEach(option)",
    "S.beforeEach",
    "t1",
    "S.afterEach",
    "pass S/t1",
    "N.beforeAll",
    "S.beforeEach(option)",
    "S.beforeEach",
    "N.beforeEach",
    "t2",
    "N.afterEach",
    "S.afterEach",
    "pass S/N/t2",
    "N.afterAll",
    "pass S/N",
    "S.afterAll",
    "pass S",
  ]);
});

Deno.test("bdd runs afterEach and afterAll even when a test fails, and reports the failure", async () => {
  const ev: string[] = [];
  await runCaptured(() => {
    describe("S", () => {
      afterEach(() => {
        ev.push("afterEach");
      });
      afterAll(() => {
        ev.push("afterAll");
      });
      it("boom", () => {
        throw new Error("kaput");
      });
      it("after", () => {
        ev.push("after ran");
      });
    });
  }, ev);
  assertEquals(ev, [
    "afterEach",
    "fail S/boom: kaput",
    "after ran",
    "afterEach",
    "pass S/after",
    "afterAll",
    "pass S",
  ]);
});

Deno.test("bdd: a failing afterEach fails a passing test, and a test's own error wins over it", async () => {
  const { log } = await runCaptured(() => {
    describe("S", () => {
      afterEach(() => {
        throw new Error("cleanup broke");
      });
      it("passes", () => {});
      it("fails", () => {
        throw new Error("test broke");
      });
    });
  });
  assertEquals(log, ["fail S/passes: cleanup broke", "fail S/fails: test broke", "pass S"]);
});

Deno.test("bdd beforeAll failure skips the suite's tests but still runs afterAll", async () => {
  const ev: string[] = [];
  await runCaptured(() => {
    describe("S", () => {
      beforeAll(() => {
        throw new Error("setup failed");
      });
      afterAll(() => {
        ev.push("afterAll");
      });
      it("t", () => {
        ev.push("t ran");
      });
    });
  }, ev);
  assertEquals(ev, ["afterAll", "fail S: setup failed"]);
});

Deno.test("bdd .only marks the top-level test only and runs just the only children", async () => {
  const { defs, log } = await runCaptured(() => {
    describe("S", () => {
      it("skipped", () => {});
      it.only("chosen", () => {});
      describe("N", () => {
        it("skipped too", () => {});
      });
      describe("M", () => {
        it("not only", () => {});
        it.only("deep only", () => {});
      });
    });
    describe("T", () => {
      it("t", () => {});
    });
    describe.only("U", () => {
      it("u1", () => {});
      it("u2", () => {});
    });
  });
  assertEquals(defs.map((d) => [d.name, d.only]), [["S", true], ["T", false], ["U", true]]);
  assertEquals(log, [
    "ignore S/skipped",
    "pass S/chosen",
    "ignore S/N",
    "ignore S/M/not only",
    "pass S/M/deep only",
    "pass S/M",
    "pass S",
    "pass T/t",
    "pass T",
    "pass U/u1",
    "pass U/u2",
    "pass U",
  ]);
});

Deno.test("bdd .ignore ignores a whole suite or a single test", async () => {
  let ran = false;
  const { defs, log } = await runCaptured(() => {
    describe.ignore("gone", () => {
      it("x", () => {
        ran = true;
      });
    });
    describe("S", () => {
      it.ignore("skip me", () => {
        ran = true;
      });
      it("keep", () => {});
    });
    it.ignore("top", () => {
      ran = true;
    });
  });
  assertEquals(ran, false);
  assertEquals(defs.map((d) => [d.name, d.ignore]), [["gone", true], ["S", undefined], ["top", true]]);
  assertEquals(log, ["ignore gone", "ignore S/skip me", "pass S/keep", "pass S", "ignore top"]);
});

Deno.test("bdd accepts definition objects, options and an explicit suite argument", async () => {
  const steps: Deno.TestStepDefinition[] = [];
  const ev: string[] = [];
  const defs = capture(() => {
    const s = describe({ name: "S", beforeEach: () => void ev.push("be") });
    it(s, "via suite", () => void ev.push("via suite"));
    it(s, "via suite with options", { sanitizeOps: false }, () => void ev.push("opts"));
    describe(s, "child", () => {
      it({ name: "definition object", fn: () => void ev.push("def") });
    });
  });
  assertEquals(defs.map((d) => d.name), ["S"]);
  const t = {
    step: async (def: Deno.TestStepDefinition) => {
      steps.push(def);
      await def.fn(t as unknown as Deno.TestContext);
      return true;
    },
  };
  await defs[0].fn!(t as unknown as Deno.TestContext);
  assertEquals(ev, ["be", "via suite", "be", "opts", "be", "def"]);
  assertEquals(steps.map((s) => s.name), [
    "via suite",
    "via suite with options",
    "child",
    "definition object",
  ]);
  assertEquals(steps[1].sanitizeOps, false);
  assert(!("sanitizeOps" in steps[0]), "unset sanitizers are left to Deno's defaults");
});

Deno.test("bdd refuses an async describe callback", () => {
  assertThrows(
    () => capture(() => void describe("S", (async () => {}) as unknown as () => void)),
    Error,
    "synchronous",
  );
});

Deno.test("bdd top-level beforeEach/afterEach wrap top-level tests and suite tests", async () => {
  const ev: string[] = [];
  const hooks = _internals.rootHooks;
  const before = hooks.beforeEach.length;
  const after = hooks.afterEach.length;
  try {
    await runCaptured(() => {
      beforeEach(() => void ev.push("root before"));
      afterEach(() => void ev.push("root after"));
      it("top", () => void ev.push("top"));
      describe("S", () => {
        it("inner", () => void ev.push("inner"));
      });
    }, ev);
  } finally {
    hooks.beforeEach.length = before;
    hooks.afterEach.length = after;
  }
  assertEquals(ev, [
    "root before",
    "top",
    "root after",
    "pass top",
    "root before",
    "inner",
    "root after",
    "pass S/inner",
    "pass S",
  ]);
});

// ---------------------------------------------------------------------------------------------
// @std/testing/mock

Deno.test("spy() records args, self and return values", () => {
  const s = spy();
  const obj = { s };
  s(1, "a");
  obj.s({ x: 1 });
  assertSpyCalls(s, 2);
  assertEquals(s.calls[0], { args: [1, "a"], returned: undefined });
  assertStrictEquals(s.calls[1].self, obj);
  assertSpyCall(s, 1, { args: [{ x: 1 }], self: obj, returned: undefined });
  assert(isSpy(s));
  assert(!isSpy(() => {}));
});

Deno.test("spy(fn) passes results through and records thrown errors", () => {
  const s = spy((a: number, b: number) => {
    if (b === 0) throw new RangeError("division by zero");
    return a / b;
  });
  assertEquals(s(6, 3), 2);
  assertThrows(() => s(1, 0), RangeError);
  assertSpyCall(s, 0, { args: [6, 3], returned: 2 });
  assertSpyCall(s, 1, { args: [1, 0], error: { Class: RangeError, msgIncludes: "zero" } });
  assertThrows(() => assertSpyCall(s, 1, { returned: 1 }), AssertionError, "error was thrown");
  assertThrows(() => assertSpyCall(s, 0, { error: { Class: RangeError } }), AssertionError, "did not throw");
  assertThrows(() => assertSpyCall(s, 1, { error: { Class: TypeError } }), AssertionError, "TypeError");
  assertThrows(() => assertSpyCall(s, 0, { returned: 3 }), AssertionError);
  assertThrows(() => assertSpyCall(s, 0, { args: [6, 4] }), AssertionError);
  assertThrows(() => assertSpyCall(s, 2), AssertionError, "not called as much");
});

Deno.test("assertSpyCalls fails on too few and too many calls", () => {
  const s = spy();
  assertSpyCalls(s, 0);
  s();
  assertThrows(() => assertSpyCalls(s, 2), AssertionError, "not called as much as expected");
  assertThrows(() => assertSpyCalls(s, 0), AssertionError, "called more than expected");
});

Deno.test("spy on a method replaces it and restore puts the original (own or inherited) back", () => {
  class Counter {
    n = 0;
    inc(by: number): number {
      return (this.n += by);
    }
  }
  const c = new Counter();
  const s = spy(c, "inc");
  assertEquals(c.inc(2), 2);
  assertEquals(c.n, 2);
  assertSpyCall(s, 0, { self: c, args: [2], returned: 2 });
  assertThrows(() => spy(c, "inc"), MockError, "Already spying");
  s.restore();
  assert(s.restored);
  assert(!Object.hasOwn(c, "inc"), "the inherited method is visible again");
  assertStrictEquals(c.inc, Counter.prototype.inc);
  assertThrows(() => s.restore(), MockError, "already restored");

  const own = { f: (x: number) => x + 1 };
  const originalF = own.f;
  const t = spy(own, "f");
  own.f(1);
  t.restore();
  assertStrictEquals(own.f, originalF);
  assertSpyCalls(t, 1);
});

Deno.test("misusing spies raises MockError", () => {
  assertThrows(() => spy().restore(), MockError);
  assertThrows(() => spy({ x: 1 } as Record<string, unknown>, "x"), MockError, "not an instance method");
  const frozen = Object.freeze({ f() {} });
  assertThrows(() => spy(frozen, "f"), MockError, "non-configurable");
});

Deno.test("spy supports construction with new", () => {
  class Point {
    constructor(public x: number) {}
  }
  const P = spy(Point as unknown as (x: number) => Point);
  const p = new (P as unknown as new (x: number) => Point)(3);
  assert(p instanceof Point);
  assertEquals(p.x, 3);
  assertSpyCall(P, 0, { args: [3] });
});

Deno.test("stub replaces a method with a fake, records calls and restores (also via using)", () => {
  const api = {
    fetchValue(key: string): number {
      throw new Error(`real call for ${key}`);
    },
  };
  const real = api.fetchValue;
  {
    using s = stub(api, "fetchValue", (key: string) => key.length);
    assertEquals(api.fetchValue("abcd"), 4);
    assertSpyCall(s, 0, { args: ["abcd"], returned: 4 });
    assertStrictEquals(s.original, real);
  }
  assertStrictEquals(api.fetchValue, real);
  const quiet = stub(api, "fetchValue");
  assertEquals(api.fetchValue("x"), undefined);
  quiet.restore();
  assertThrows(() => api.fetchValue("x"), Error, "real call");
});

Deno.test("assertSpyCallArg and assertSpyCallArgs check single args and slices", () => {
  const s = spy((..._args: unknown[]) => undefined);
  s("a", 2, { c: 3 }, "d");
  assertEquals(assertSpyCallArg(s, 0, 2, { c: 3 }), { c: 3 });
  assertThrows(() => assertSpyCallArg(s, 0, 1, 3), AssertionError);
  assertSpyCallArgs(s, 0, ["a", 2, { c: 3 }, "d"]);
  assertSpyCallArgs(s, 0, 2, [{ c: 3 }, "d"]);
  assertSpyCallArgs(s, 0, 1, 3, [2, { c: 3 }]);
  assertThrows(() => assertSpyCallArgs(s, 0, 1, 3, [2]), AssertionError);
});

Deno.test("assertSpyCallAsync checks resolved values and rejections", async () => {
  const s = spy(async (x: number) => {
    await Promise.resolve();
    if (x < 0) throw new RangeError("negative");
    return x * 2;
  });
  await s(4);
  await assertRejects(() => s(-1), RangeError);
  await assertSpyCallAsync(s, 0, { args: [4], returned: 8 });
  await assertSpyCallAsync(s, 1, { error: { Class: RangeError, msgIncludes: "neg" } });
  await assertRejects(() => assertSpyCallAsync(s, 0, { returned: 9 }), AssertionError);
  await assertRejects(() => assertSpyCallAsync(s, 1, { returned: 8 }), AssertionError, "rejected");
  await assertRejects(
    () => assertSpyCallAsync(s, 0, { error: { Class: Error } }),
    AssertionError,
    "resolved",
  );
});

Deno.test("returnsNext returns values in order, throws Error values, then refuses", () => {
  const f = returnsNext<number>([1, new TypeError("second"), 3]);
  assertEquals(f(), 1);
  assertThrows(() => f(), TypeError, "second");
  assertEquals(f(), 3);
  assertThrows(() => f(), MockError, "more than 3");
});

Deno.test("resolvesNext resolves values and promises, rejects Error values, then refuses", async () => {
  const f = resolvesNext<string>(["a", Promise.resolve("b"), new Error("c")]);
  assertEquals(await f(), "a");
  assertEquals(await f(), "b");
  await assertRejects(() => f(), Error, "c");
  await assertRejects(() => f(), MockError);
  async function* gen() {
    yield 1;
    yield 2;
  }
  const g = resolvesNext<number>(gen());
  assertEquals([await g(), await g()], [1, 2]);
  await assertRejects(() => g(), MockError);
});

Deno.test("returnsThis, returnsArg and returnsArgs", () => {
  const obj = { me: returnsThis() };
  assertStrictEquals(obj.me(), obj);
  assertEquals(returnsArg<string>(1)("a", "b", "c"), "b");
  assertEquals(returnsArgs<number[]>(1, 3)(1, 2, 3, 4), [2, 3]);
  assertEquals(returnsArgs<number[]>()(5, 6), [5, 6]);
});

Deno.test("mockSession and restore put back every spy made in the session", () => {
  const o = { a() {}, b() {}, c() {} };
  const [a, b, c] = [o.a, o.b, o.c];
  const outer = mockSession();
  spy(o, "a");
  mockSession();
  stub(o, "b");
  restore(); // the inner session only
  assertStrictEquals(o.b, b);
  assert(isSpy(o.a));
  spy(o, "c");
  restore(outer);
  assertStrictEquals(o.a, a);
  assertStrictEquals(o.c, c);

  const wrapped = mockSession(() => {
    stub(o, "a", () => undefined);
    assert(isSpy(o.a));
    return 7;
  });
  assertEquals(wrapped(), 7);
  assertStrictEquals(o.a, a);
});
