/**
 * Capsules round-trip: bit-exact for f32 states and raw KV (every family, positions 0, 1 and
 * ragged, with and without a pending token and sampler, plain, deflated and sealed, as bytes and
 * as randomly re-chunked streams), lossy codecs within measured bounds, exact size estimates.
 */
import { assert, assertEquals, assertLess } from "@std/assert";
import {
  capsuleSizeEstimate,
  decodeCapsule,
  encodeCapsule,
  encodeCapsuleBytes,
  inspectCapsule,
  type KvCodec,
  type StateCodec,
} from "../../src/capsule/mod.ts";
import { validateState } from "../../src/engine/state.ts";
import {
  fakeFingerprint,
  fixtureConfig,
  FIXTURES,
  goldenSnapshot,
  randomSnapshot,
  relL2,
  rng,
  snapshotDiff,
} from "./helpers.ts";

const KEY = Uint8Array.from({ length: 32 }, (_, i) => i * 7 + 1);

/** Read a stream fully. */
async function collect(s: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(s).arrayBuffer());
}

/** Deliver `bytes` as a stream cut at random places (1 byte to 3× the average piece). */
function rechunked(bytes: Uint8Array, r: () => number, avg: number): ReadableStream<Uint8Array> {
  const pieces: Uint8Array[] = [];
  for (let i = 0; i < bytes.length;) {
    const n = Math.max(1, Math.floor(r() * 3 * avg));
    pieces.push(bytes.slice(i, i + n));
    i += n;
  }
  return ReadableStream.from(pieces);
}

Deno.test("f32 state and raw KV round-trip bit-exactly for every family, position and option", async () => {
  for (const name of FIXTURES) {
    const config = fixtureConfig(name);
    const fingerprint = fakeFingerprint(name);
    const r = rng(name.length * 1000 + 1);
    const positions = [0, 1, 2, 15, 63, 64, 65, 130];
    for (const position of positions) {
      const pending = position === 0 ? true : r() < 0.5;
      const snap = randomSnapshot(config, position, r, { pending, sampler: r() < 0.5 });
      for (const mode of ["plain", "deflate", "sealed", "sealed+deflate"] as const) {
        const seal = mode.startsWith("sealed") ? { key: KEY, tenant: "tenant-a" } : undefined;
        const compress = mode.endsWith("deflate") ? "deflate" : "none";
        const bytes = await encodeCapsuleBytes(snap, {
          fingerprint,
          config,
          compress,
          seal,
          chunkSize: 4096,
        });
        const back = await decodeCapsule(bytes, { fingerprint, config, seal });
        assertEquals(snapshotDiff(snap, back), null, `${name} position ${position} ${mode}`);
        validateState(config, back.state);
        if (compress === "none") {
          const est = capsuleSizeEstimate(config, position, {
            pending,
            sealed: seal !== undefined,
            chunkSize: 4096,
          });
          assertEquals(bytes.length, est, `${name} position ${position} ${mode}: size estimate`);
        }
      }
    }
  }
});

Deno.test("special f32 values survive bit-exactly: NaN payloads, -0, infinities, subnormals", async () => {
  const config = fixtureConfig("qwen3_5-tiny");
  const fingerprint = fakeFingerprint("special");
  const snap = randomSnapshot(config, 3, rng(2));
  const specials = new Uint32Array([
    0x7fc00001,
    0xffa5a5a5,
    0x80000000,
    0x7f800000,
    0xff800000,
    0x00000001,
    0x807fffff,
  ]);
  const l0 = snap.state.layers[0];
  const l3 = snap.state.layers[3];
  assert(l0.kind === "linear" && l3.kind === "attention");
  new Uint32Array(l0.recurrent.buffer).set(specials, 5);
  new Uint32Array(l3.keys.view().buffer, l3.keys.view().byteOffset).set(specials, 2);
  const back = await decodeCapsule(await encodeCapsuleBytes(snap, { fingerprint, config }), {
    fingerprint,
    config,
  });
  assertEquals(snapshotDiff(snap, back), null);
});

Deno.test("the encode stream, re-chunked at random, decodes to the same snapshot", async () => {
  const r = rng(77);
  for (const name of FIXTURES) {
    const config = fixtureConfig(name);
    const fingerprint = fakeFingerprint(name);
    const snap = randomSnapshot(config, 41, r, { pending: true, sampler: true });
    for (
      const opts of [{}, { compress: "deflate" as const }, { seal: { key: KEY, tenant: "t" } }, {
        kvCodec: "int4" as const,
      }]
    ) {
      const streamed = await collect(encodeCapsule(snap, { fingerprint, config, chunkSize: 4096, ...opts }));
      // Sealed capsules draw a fresh salt, so compare the decoded snapshots rather than the bytes.
      const reference = await decodeCapsule(streamed, {
        fingerprint,
        config,
        seal: "seal" in opts ? opts.seal : undefined,
      });
      for (const avg of [1, 37, 5000]) {
        const back = await decodeCapsule(rechunked(streamed, r, avg), {
          fingerprint,
          config,
          seal: "seal" in opts ? opts.seal : undefined,
        });
        assertEquals(
          snapshotDiff(reference, back),
          null,
          `${name} ${JSON.stringify(Object.keys(opts))} avg ${avg}`,
        );
      }
      if (!("seal" in opts)) {
        assertEquals(
          streamed,
          await encodeCapsuleBytes(snap, { fingerprint, config, chunkSize: 4096, ...opts }),
        );
      }
    }
  }
});

Deno.test("lossy codecs stay within their measured error bounds on real fixture states", async () => {
  // Bounds: the measured rel_l2 on the fixtures' recorded states (golden-long final_state) with ~30% margin.
  const bounds: Record<string, number> = { f16: 3e-4, bf16: 2.5e-3, int8: 7.5e-3, int4: 0.115 };
  for (const name of FIXTURES) {
    const config = fixtureConfig(name);
    const fingerprint = fakeFingerprint(name);
    const snap = await goldenSnapshot(name, config);
    const line: string[] = [];
    for (const [stateCodec, kvCodec] of [["f16", "int8"], ["bf16", "int4"]] as [StateCodec, KvCodec][]) {
      const bytes = await encodeCapsuleBytes(snap, { fingerprint, config, stateCodec, kvCodec });
      const back = await decodeCapsule(bytes, { fingerprint, config });
      const eState = relL2(snap.state, back.state, "linear");
      const eKv = relL2(snap.state, back.state, "kv");
      line.push(
        `state ${stateCodec} rel_l2 ${eState.toExponential(2)}`,
        `kv ${kvCodec} rel_l2 ${eKv.toExponential(2)}`,
      );
      assertLess(eState, bounds[stateCodec], `${name} ${stateCodec}`);
      assertLess(eKv, bounds[kvCodec], `${name} ${kvCodec}`);
      assert(eState > 0 && eKv > 0, "a lossy codec that loses nothing is not being applied");
      // Tokens, position and sampler are never lossy.
      assertEquals(back.tokens, snap.tokens);
      assertEquals(back.state.position, snap.state.position);
    }
    console.log(`${name} (${snap.state.position} tokens): ${line.join(", ")}`);
  }
});

Deno.test("capsuleSizeEstimate is exact for every codec combination, sealed or not", async () => {
  const r = rng(8);
  for (const name of FIXTURES) {
    const config = fixtureConfig(name);
    const fingerprint = fakeFingerprint(name);
    for (const stateCodec of ["f32", "f16", "bf16"] as StateCodec[]) {
      for (const kvCodec of ["raw", "int8", "int4"] as KvCodec[]) {
        const position = Math.floor(r() * 90);
        const snap = randomSnapshot(config, position, r);
        const sealed = r() < 0.5;
        const bytes = await encodeCapsuleBytes(snap, {
          fingerprint,
          config,
          stateCodec,
          kvCodec,
          seal: sealed ? { key: KEY, tenant: "x" } : undefined,
        });
        assertEquals(bytes.length, capsuleSizeEstimate(config, position, { stateCodec, kvCodec, sealed }));
      }
    }
  }
});

Deno.test("unframed sections start at 64-byte aligned file offsets and inspect verifies every checksum", async () => {
  const config = fixtureConfig("qwen3_next-tiny");
  const fingerprint = fakeFingerprint("layout");
  const snap = randomSnapshot(config, 9, rng(3), { pending: true, sampler: true });
  const bytes = await encodeCapsuleBytes(snap, { fingerprint, config, kvCodec: "int8" });
  const info = await inspectCapsule(bytes);
  assert(info.ok);
  assertEquals(info.fingerprint, fingerprint);
  assertEquals([info.position, info.tokenCount, info.sampler], [9, 10, snap.sampler]);
  assertEquals(info.sections.map((s) => s.type), [
    "tokens",
    ...config.layerKinds.flatMap((k) => k === "linear" ? ["conv", "recurrent"] : ["keys", "values"]),
  ]);
  for (const s of info.sections) {
    assertEquals((info.headerBytes + s.offset) % 64, 0);
    assertEquals(s.crcOk, true);
  }
  assertEquals(info.layers[3].codec, "int8");
  assertEquals(info.layers[0].shapes.recurrent, [4, 32, 32]);
  assertEquals(info.checks, {
    headerCrc: true,
    sectionCrcs: true,
    sha256: true,
    trailingBytes: 0,
    error: null,
  });
});

Deno.test("optional sections from newer writers are skipped (and checksummed) by this reader", async () => {
  const config = fixtureConfig("qwen3_5-tiny");
  const fingerprint = fakeFingerprint("extra");
  const snap = randomSnapshot(config, 5, rng(6), { sampler: true });
  const extra = { type: 0x80ff, bytes: new TextEncoder().encode("a note from the future") };
  const bytes = await encodeCapsuleBytes(snap, { fingerprint, config, extraSections: [extra] });
  assertEquals(snapshotDiff(snap, await decodeCapsule(bytes, { fingerprint, config })), null);
  const info = await inspectCapsule(bytes);
  assert(info.ok);
  assertEquals(info.sections.at(-1)?.type, "optional-0x80ff");
  assertEquals(info.sections.at(-1)?.length, extra.bytes.length);
});

Deno.test("a decoded state keeps growing: KV rows have room and appends do not disturb decoded rows", async () => {
  const config = fixtureConfig("qwen3_5-tiny");
  const fingerprint = fakeFingerprint("grow");
  const snap = randomSnapshot(config, 4, rng(1));
  const back = await decodeCapsule(await encodeCapsuleBytes(snap, { fingerprint, config }), {
    fingerprint,
    config,
  });
  const l = back.state.layers[3];
  assert(l.kind === "attention");
  const before = l.keys.view().slice();
  l.keys.append(new Float32Array(l.keys.rowSize).fill(1));
  assertEquals(l.keys.view().subarray(0, before.length), before);
  assertEquals(l.keys.length, 5);
});
