/** The error table: every code maps to a status, and problem bodies carry the RFC 9457 members. */
import { assert, assertEquals } from "@std/assert";
import { CapsuleError, type ErrorCode } from "../../src/errors.ts";
import { PROBLEM_TABLE, problemResponse, toProblem } from "../../src/server/problems.ts";
import { REPO_ROOT } from "../support/fixtures.ts";

/** The codes of the ErrorCode union, read from the source so that new codes are caught. */
async function declaredCodes(): Promise<string[]> {
  const src = await Deno.readTextFile(`${REPO_ROOT}/src/errors.ts`);
  const union = /export type ErrorCode =([\s\S]*?);/.exec(src)![1];
  return [...union.matchAll(/\|\s*"([a-z0-9_]+)"/g)].map((m) => m[1]);
}

Deno.test("every error code in src/errors.ts has an HTTP status and title", async () => {
  const codes = await declaredCodes();
  assert(codes.length > 30);
  const missing = codes.filter((c) => PROBLEM_TABLE[c as ErrorCode] === undefined);
  assertEquals(missing, [], "add these codes to PROBLEM_TABLE in src/server/problems.ts");
  for (const c of codes) {
    const k = PROBLEM_TABLE[c as ErrorCode]!;
    assert(k.status >= 400 && k.status <= 599 && k.title.length > 0, c);
  }
});

Deno.test("a CapsuleError becomes problem+json with its code; version conflicts carry current_version", async () => {
  const r = problemResponse(new CapsuleError("version_conflict", "at 3, not 2", { current: 3 }));
  assertEquals(r.status, 409);
  assertEquals(r.headers.get("content-type"), "application/problem+json");
  assertEquals(await r.json(), {
    type: "urn:capsule:problem:version_conflict",
    title: "Version conflict",
    status: 409,
    detail: "at 3, not 2",
    code: "version_conflict",
    current_version: 3,
  });
});

Deno.test("other errors are an opaque 500 internal problem; file paths in details are not echoed", () => {
  const p = toProblem(new TypeError("secret stack detail"));
  assertEquals([p.status, p.code, p.detail], [500, "internal", "internal error"]);
  const q = toProblem(new CapsuleError("invalid_tokenizer", "bad", { file: "/srv/x", maxBytes: 3 }));
  assertEquals([q.file, q.max_bytes], [undefined, 3]);
});
