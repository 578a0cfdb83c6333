/**
 * How `deno task test` (tests/run.ts) counts a `deno test` run: the passed and failed tests of its
 * summary, plus one failure when the process crashed before the summary or exited with an error
 * code after it. A process that reported every test passed and then died by a signal counts no
 * failure but gets a note: Deno's WebGPU teardown can crash at exit while a backend's worker is
 * still tearing its device down (docs/testing.md).
 */
export interface RunOutcome {
  /** Whether Deno's summary line was printed. */
  sawSummary: boolean;
  passed: number;
  failed: number;
  /** The process's exit code and the signal that ended it, if any. */
  code: number;
  signal: string | null;
}

/** The counts to print and, for anything beyond the tests' own results, a line saying why. */
export function verdict(o: RunOutcome): { passed: number; failed: number; note: string | null } {
  const how = `code ${o.code}${o.signal ? ` (signal ${o.signal})` : ""}`;
  if (!o.sawSummary) {
    return {
      passed: o.passed,
      failed: o.failed + 1,
      note: `deno test exited with ${how} before printing its summary`,
    };
  }
  if (o.code === 0 || o.failed > 0) return { passed: o.passed, failed: o.failed, note: null };
  if (o.passed > 0 && (o.signal === "SIGSEGV" || o.signal === "SIGABRT")) {
    return {
      passed: o.passed,
      failed: 0,
      note: `note: deno test died by ${o.signal} after reporting ${o.passed} passed, 0 failed ` +
        "(Deno's WebGPU teardown at exit; see docs/testing.md); not counted as a failure",
    };
  }
  return {
    passed: o.passed,
    failed: 1,
    note: `deno test exited with ${how} after a summary with no failed test`,
  };
}
