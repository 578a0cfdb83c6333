/**
 * `deno task test`: runs the whole suite with `deno test` and ends with the plain
 * "N passed, N failed" line CI reads (Deno's own summary is not a CI format).
 * Extra arguments are passed to `deno test` (e.g. a path or `--filter`). How a run counts:
 * tests/support/verdict.ts.
 */
import { verdict } from "./support/verdict.ts";

const args = ["test", "-A", "--unstable-kv", ...(Deno.args.length ? Deno.args : [])];
const child = new Deno.Command(Deno.execPath(), {
  args,
  stdout: "piped",
  stderr: "inherit",
  env: { NO_COLOR: "1" },
}).spawn();

let passed = 0, failed = 0, sawSummary = false;
const decoder = new TextDecoder();
let buffer = "";
const onLine = (line: string) => {
  // Deno's summary: "ok | 12 passed (3 steps) | 0 failed (1s)" or "FAILED | 3 passed | 1 failed (2s)".
  const m = line.match(/^(?:ok|FAILED) \| (\d+) passed(?: \(\d+ steps?\))? \| (\d+) failed/);
  if (m) {
    passed += Number(m[1]);
    failed += Number(m[2]);
    sawSummary = true;
  }
};
for await (const chunk of child.stdout) {
  await Deno.stdout.write(chunk);
  buffer += decoder.decode(chunk, { stream: true });
  let nl: number;
  while ((nl = buffer.indexOf("\n")) >= 0) {
    onLine(buffer.slice(0, nl));
    buffer = buffer.slice(nl + 1);
  }
}
if (buffer) onLine(buffer);
const status = await child.status;
const v = verdict({ sawSummary, passed, failed, code: status.code, signal: status.signal });
if (v.note) console.error(v.note);
console.log(`${v.passed} passed, ${v.failed} failed`);
Deno.exit(v.failed === 0 ? 0 : 1);
