/**
 * `deno task test`: runs the whole suite with `deno test` and ends with the plain
 * "N passed, N failed" line CI reads (Deno's own summary is not a CI format).
 * Extra arguments are passed to `deno test` (e.g. a path or `--filter`).
 */
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
// A run that crashed before its summary (type error, panic), or exited non-zero after a clean one
// (a crash in teardown), counts as a failure, with its exit status on stderr to say which.
if (!sawSummary || (status.code !== 0 && failed === 0)) {
  failed += 1;
  console.error(
    `deno test exited with code ${status.code}${status.signal ? ` (signal ${status.signal})` : ""} ` +
      (sawSummary ? "after a summary with no failed test" : "before printing its summary"),
  );
}
console.log(`${passed} passed, ${failed} failed`);
Deno.exit(failed === 0 ? 0 : 1);
