/**
 * The capsule CLI: `inspect` and `verify` print a report whose last line is a JSON object with
 * "ok", and exit 0 only when the capsule is fine.
 */
import { assert, assertEquals } from "@std/assert";
import { encodeCapsuleBytes } from "../../src/capsule/mod.ts";
import { folderFingerprint } from "../../src/model/folder.ts";
import { FIXTURE_ROOT, randomSnapshot, rng } from "./helpers.ts";

const CLI = new URL("../../src/cli/capsule.ts", import.meta.url).pathname;

async function run(
  ...args: string[]
): Promise<{ code: number; last: Record<string, unknown>; stdout: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const stdout = new TextDecoder().decode(out.stdout);
  const lines = stdout.trim().split("\n");
  return { code: out.code, last: JSON.parse(lines[lines.length - 1]), stdout };
}

Deno.test("capsule CLI: inspect and verify a capsule of a fixture model, and refuse the wrong model or damage", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = `${FIXTURE_ROOT}qwen3_5-tiny`;
    const { fingerprint, config } = await folderFingerprint(model, "f32");
    const snap = randomSnapshot(config, 7, rng(1), { pending: true, sampler: true });
    const file = `${dir}/s.capsule`;
    const bytes = await encodeCapsuleBytes(snap, { fingerprint, config, kvCodec: "int8" });
    await Deno.writeFile(file, bytes);

    const ins = await run("inspect", file);
    assertEquals([ins.code, ins.last.ok, ins.last.fingerprint, ins.last.position], [0, true, fingerprint, 7]);
    assert(ins.stdout.includes("keys") && ins.stdout.includes("int8"));
    assertEquals([ins.last.version, ins.last.numerics], ["1.0", null]);
    assert(ins.stdout.includes("numerics  not recorded"), ins.stdout);

    // A 1.1 capsule shows its numerics profile (and its section).
    const numerics = { backend: "cpu", kv: "f32" };
    await Deno.writeFile(file, await encodeCapsuleBytes(snap, { fingerprint, config, numerics }));
    const withProfile = await run("inspect", file);
    assertEquals([withProfile.code, withProfile.last.version, withProfile.last.numerics], [
      0,
      "1.1",
      numerics,
    ]);
    assert(withProfile.stdout.includes("numerics  backend=cpu, kv=f32"), withProfile.stdout);
    await Deno.writeFile(file, bytes);

    const ok = await run("verify", file, "--model", model);
    assertEquals([ok.code, ok.last.ok, ok.last.tokens], [0, true, 8]);

    const other = await run("verify", file, "--model", `${FIXTURE_ROOT}qwen3_next-tiny`);
    assertEquals([other.code, other.last.ok, other.last.code], [1, false, "capsule_model_mismatch"]);
    const quant = await run("verify", file, "--model", model, "--quant", "int8");
    assertEquals(quant.last.code, "capsule_model_mismatch");

    const damaged = bytes.slice();
    damaged[damaged.length - 100] ^= 1;
    await Deno.writeFile(file, damaged);
    const bad = await run("inspect", file);
    assertEquals([bad.code, bad.last.ok], [1, false]);
    const badVerify = await run("verify", file, "--model", model);
    assertEquals([badVerify.code, badVerify.last.code], [1, "capsule_checksum_mismatch"]);

    // Sealed: inspect without the key checks structure and SHA-256; with it, every section.
    const keyFile = `${dir}/key`;
    await Deno.writeTextFile(keyFile, "ab".repeat(32));
    const key = new Uint8Array(32).fill(0xab);
    await Deno.writeFile(
      file,
      await encodeCapsuleBytes(snap, { fingerprint, config, seal: { key, tenant: "acme" } }),
    );
    const sealedInspect = await run("inspect", file);
    assertEquals([sealedInspect.code, sealedInspect.last.sealed], [0, true]);
    assertEquals((sealedInspect.last.checks as Record<string, unknown>).sectionCrcs, null);
    const keyed = await run("inspect", file, "--key-file", keyFile, "--tenant", "acme");
    assertEquals((keyed.last.checks as Record<string, unknown>).sectionCrcs, true);
    const wrongTenant = await run(
      "verify",
      file,
      "--model",
      model,
      "--key-file",
      keyFile,
      "--tenant",
      "other",
    );
    assertEquals([wrongTenant.code, wrongTenant.last.code], [1, "capsule_wrong_tenant"]);

    const usage = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI, "verify", file],
      stdout: "null",
      stderr: "null",
    }).output();
    assertEquals(usage.code, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
