import { assertEquals } from "@std/assert";
import { verdict } from "./verdict.ts";

const run = (o: Partial<Parameters<typeof verdict>[0]>) =>
  verdict({ sawSummary: true, passed: 10, failed: 0, code: 0, signal: null, ...o });

Deno.test("a clean run counts its tests; failed tests count as they are", () => {
  assertEquals(run({}), { passed: 10, failed: 0, note: null });
  assertEquals(run({ failed: 2, code: 1 }), { passed: 10, failed: 2, note: null });
});

Deno.test("a crash before the summary, or an error exit after a clean one, is one more failure", () => {
  const early = run({ sawSummary: false, passed: 3, code: 1 });
  assertEquals([early.passed, early.failed], [3, 1]);
  const late = run({ code: 1 });
  assertEquals(late.failed, 1);
  assertEquals(late.note?.includes("after a summary with no failed test"), true);
  assertEquals(run({ sawSummary: false, code: 139, signal: "SIGSEGV" }).failed, 1);
});

Deno.test("a signal after a summary of passed tests is noted, not counted; after failures it changes nothing", () => {
  const crash = run({ code: 139, signal: "SIGSEGV" });
  assertEquals([crash.passed, crash.failed], [10, 0]);
  assertEquals(crash.note?.startsWith("note: deno test died by SIGSEGV after reporting 10 passed"), true);
  assertEquals(run({ code: 134, signal: "SIGABRT" }).failed, 0);
  // Another signal (a kill, a timeout) is a failure; so is a crash in a run that passed nothing.
  assertEquals(run({ code: 137, signal: "SIGKILL" }).failed, 1);
  assertEquals(run({ passed: 0, code: 139, signal: "SIGSEGV" }).failed, 1);
  assertEquals(run({ failed: 1, code: 139, signal: "SIGSEGV" }), { passed: 10, failed: 1, note: null });
});
