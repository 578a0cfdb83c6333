/**
 * Format freeze: the committed vectors (v1.0, and v1.1 with a numerics profile) must keep decoding,
 * to the same bits, in every later version. The writer writes the lowest minor version a capsule's
 * features need, so encoding their snapshots must reproduce the deterministic ones byte for byte.
 */
import { assert, assertEquals, assertLess } from "@std/assert";
import { createHash } from "node:crypto";
import { decodeCapsule, encodeCapsuleBytes, inspectCapsule, VERSION_MAJOR } from "../../src/capsule/mod.ts";
import type { SessionState } from "../../src/engine/state.ts";
import { GOLDEN_DIR, GOLDEN_FINGERPRINT, goldenConfig, goldenSnapshot, VECTORS } from "./golden/vectors.ts";
import { relL2, snapshotDiff } from "./helpers.ts";

/** SHA-256 of the file, and of the decoded state's f32 bits, as first written. */
const FROZEN: Record<string, { file: string; state: string }> = {
  "v1.0-qwen3_5-f32-raw.capsule": {
    file: "4e48e42f9dbdf60569ad9a8942109fd0c48d40e43e1e47f653d374ac1c64f862",
    state: "a22023a3fb78cbe6a41e788c28925c089801476fbffedc0296156396ee2b25bb",
  },
  "v1.0-kimi-bf16-int4.capsule": {
    file: "2100b9aae4e52311f3866b2d2043fd1b50acf9a4e5c0203ad1ef3bcdfe01ede8",
    state: "81947d660ead6effa4a06dc10870fdffc23e20e5ac0106756f530517f5628ddc",
  },
  "v1.0-qwen3_next-f16-int8-deflate-sealed.capsule": {
    file: "c791780eae8fc60ee953c804f3ed394349a3ad027a1d4cfdbe9dba0e46ba5522",
    state: "f382f2a685fe84bf596a6746506061b0837dcd88833086d8b3aeff40ec76c534",
  },
  "v1.1-qwen3_5-f16-int8-numerics.capsule": {
    file: "739318650df2700b78999a277cca9a09a2eaf96f32af6d00dcb399403eaff1e0",
    state: "10fa2a53e4414fb220a3a62686899fae6cb8f998a71b85db975bdd053e4bcc56",
  },
};

function stateHash(s: SessionState): string {
  const h = createHash("sha256");
  for (const l of s.layers) {
    for (const a of l.kind === "linear" ? [l.conv, l.recurrent] : [l.keys.view(), l.values.view()]) {
      h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    }
  }
  return h.digest("hex");
}

for (const v of VECTORS) {
  Deno.test(`golden ${v.file} decodes to its frozen state`, async () => {
    const bytes = await Deno.readFile(`${GOLDEN_DIR}${v.file}`);
    assertEquals(
      createHash("sha256").update(bytes).digest("hex"),
      FROZEN[v.file].file,
      "the vector file itself changed",
    );
    const config = goldenConfig(v.family);
    const snap = await decodeCapsule(bytes, { fingerprint: GOLDEN_FINGERPRINT, config, seal: v.opts.seal });
    assertEquals(stateHash(snap.state), FROZEN[v.file].state);
    const want = goldenSnapshot(config, v.position);
    assertEquals(snap.tokens, want.tokens);
    assertEquals(snap.sampler, want.sampler);
    assertEquals(snap.numerics, v.opts.numerics ?? null);
    if (!v.opts.stateCodec && !v.opts.kvCodec) assertEquals(snapshotDiff(snap, want), null);
    else assertLess(relL2(want.state, snap.state, "kv"), 0.15);
    const info = await inspectCapsule(bytes);
    assertEquals(info.version, v.file.slice(1, 4), "the file name says the version");
    assertEquals(info.numerics, v.opts.numerics ?? null);
    assert(info.checks.sha256);
  });
}

Deno.test("encoding the golden snapshots reproduces the vectors byte for byte", async () => {
  if (VERSION_MAJOR !== 1) return; // writers of another major version only have to read them
  for (const v of VECTORS.filter((x) => x.deterministic)) {
    const config = goldenConfig(v.family);
    const bytes = await encodeCapsuleBytes(goldenSnapshot(config, v.position), {
      fingerprint: GOLDEN_FINGERPRINT,
      config,
      ...v.opts,
    });
    assertEquals(bytes, await Deno.readFile(`${GOLDEN_DIR}${v.file}`), v.file);
  }
});
