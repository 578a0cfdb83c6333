/**
 * The numerics section (format 1.1): a capsule records the numerics profile of the engine that
 * produced its state. Round trips with and without it in every body mode; the version stays 1.0
 * without it; malformed sections (handwritten and generated) are refused with capsule_corrupt
 * naming the section, damaged ones with capsule_checksum_mismatch; reserved bytes follow §8.
 */
import { assert, assertEquals, assertMatch, assertRejects, assertThrows } from "@std/assert";
import fc from "fast-check";
import {
  capsuleSizeEstimate,
  decodeCapsule,
  type DecodeOptions,
  encodeCapsule,
  encodeCapsuleBytes,
  inspectCapsule,
  numericsJson,
  type NumericsProfile,
  SECTION_NUMERICS,
  validateNumerics,
} from "../../src/capsule/mod.ts";
import { CapsuleError } from "../../src/errors.ts";
import { fakeFingerprint, fixtureConfig, randomSnapshot, resign, rng, snapshotDiff } from "./helpers.ts";

const config = fixtureConfig("qwen3_5-tiny");
const fingerprint = fakeFingerprint("numerics");
const opts: DecodeOptions = { fingerprint, config };
const KEY = new Uint8Array(32).fill(5);
const snap = randomSnapshot(config, 6, rng(6), { pending: true, sampler: true });
const H200: NumericsProfile = {
  backend: "webgpu",
  adapter: "NVIDIA H200",
  weights: "f16",
  kv: "f32",
  kernels: "3",
};
/** A section type no reader knows: the forgeries below write their payload there, then retype it. */
const SPARE = 0x80ff;
const utf8 = (s: string) => new TextEncoder().encode(s);
const minor = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset).getUint16(10, true);

/** Section table entries (offset in the file) of the sections of `type`. */
function entriesOf(b: Uint8Array, type: number): number[] {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const at = v.getUint32(116, true);
  return Array.from({ length: v.getUint32(72, true) }, (_, i) => at + 32 * i)
    .filter((e) => v.getUint16(e, true) === type);
}

/**
 * A consistent capsule (valid CRCs and SHA-256) whose numerics sections hold `payloads` as they
 * are, as a hostile or buggy writer would produce it; `edit` may change the header further.
 */
async function withNumericsPayloads(
  payloads: Uint8Array[],
  more: { compress?: "deflate"; edit?: (v: DataView) => void } = {},
): Promise<Uint8Array> {
  const b = await encodeCapsuleBytes(snap, {
    fingerprint,
    config,
    numerics: H200, // so the header says 1.1, as a real writer's would
    extraSections: payloads.map((bytes) => ({ type: SPARE, bytes })),
    chunkSize: 4096,
    ...(more.compress ? { compress: more.compress } : {}),
  });
  const v = new DataView(b.buffer);
  const [real] = entriesOf(b, SECTION_NUMERICS);
  v.setUint16(real, SPARE, true); // the real profile becomes an unknown section
  for (const e of entriesOf(b, SPARE).slice(1)) v.setUint16(e, SECTION_NUMERICS, true);
  more.edit?.(v);
  resign(b);
  return b;
}

async function refused(input: Uint8Array | ReadableStream<Uint8Array>, code: string, pattern: RegExp) {
  const e = await assertRejects(() => decodeCapsule(input, opts), CapsuleError);
  assertEquals(e.code, code, e.message);
  assertMatch(e.message, pattern);
  return e;
}

Deno.test("a profile round-trips in every body mode; without one the capsule is 1.0 and reads back null", async () => {
  const modes = [
    {},
    { compress: "deflate" as const },
    { seal: { key: KEY, tenant: "t" } },
    { seal: { key: KEY, tenant: "t" }, compress: "deflate" as const },
  ];
  for (const mode of modes) {
    for (const numerics of [undefined, H200]) {
      const o = { fingerprint, config, chunkSize: 4096, ...mode, ...(numerics ? { numerics } : {}) };
      const bytes = await encodeCapsuleBytes(snap, o);
      assertEquals(minor(bytes), numerics ? 1 : 0);
      const streamed = new Uint8Array(await new Response(encodeCapsule(snap, o)).arrayBuffer());
      assertEquals(streamed.length, bytes.length);
      for (const input of [bytes, ReadableStream.from([bytes.slice(0, 777), bytes.slice(777)])]) {
        const back = await decodeCapsule(input, { ...opts, seal: mode.seal });
        assertEquals(snapshotDiff(snap, back), null);
        assertEquals(back.numerics, numerics ? validateNumerics(numerics) : null);
      }
      const info = await inspectCapsule(bytes, { seal: mode.seal });
      assert(info.ok);
      assertEquals(info.version, numerics ? "1.1" : "1.0");
      assertEquals(info.numerics, numerics ?? null);
      assertEquals(info.sections.filter((s) => s.type === "numerics").length, numerics ? 1 : 0);
      if (mode.seal) {
        assertEquals((await inspectCapsule(bytes)).numerics, null, "sealed: unreadable without the key");
      }
    }
  }
  // The section holds the canonical JSON, 64-byte aligned after the layer sections, unframed.
  const plain = await encodeCapsuleBytes(snap, { fingerprint, config, numerics: H200 });
  const info = await inspectCapsule(plain);
  const s = info.sections.at(-1)!;
  assertEquals([s.type, s.layer], ["numerics", null]);
  const at = info.headerBytes + s.offset;
  assertEquals(new TextDecoder().decode(plain.subarray(at, at + s.length)), numericsJson(H200));
  // Without a profile the bytes do not depend on the option being spelled out.
  assertEquals(
    await encodeCapsuleBytes(snap, { fingerprint, config, numerics: undefined }),
    await encodeCapsuleBytes(snap, { fingerprint, config }),
  );
  assertEquals(capsuleSizeEstimate(config, 6, { pending: true, numerics: H200 }), plain.length);
});

Deno.test("(property) any valid profile, with non-ASCII values, round-trips through a capsule exactly", async () => {
  const profile = fc.dictionary(
    fc.stringMatching(/^[A-Za-z0-9_.-]{1,16}$/),
    fc.string({ unit: "binary", minLength: 1, maxLength: 30 }).filter((v) => isValid({ v })),
    { minKeys: 1, maxKeys: 32 },
  ).filter(isValid);
  await fc.assert(
    fc.asyncProperty(profile, fc.constantFrom("plain", "deflate", "sealed"), async (numerics, mode) => {
      const seal = mode === "sealed" ? { key: KEY, tenant: "t" } : undefined;
      const compress = mode === "deflate" ? "deflate" as const : "none" as const;
      const bytes = await encodeCapsuleBytes(snap, {
        fingerprint,
        config,
        numerics,
        seal,
        compress,
        chunkSize: 4096,
      });
      const back = await decodeCapsule(bytes, { ...opts, seal });
      assertEquals(back.numerics, validateNumerics(numerics));
      assertEquals(back.tokens, snap.tokens);
    }),
    { numRuns: 60 },
  );
});

function isValid(p: Record<string, string>): boolean {
  try {
    validateNumerics(p);
    return true;
  } catch {
    return false;
  }
}

Deno.test("malformed numerics sections are refused with capsule_corrupt naming the section", async () => {
  const cases: [string | Uint8Array, RegExp][] = [
    [Uint8Array.of(0x7b, 0x22, 0xc3, 0x28, 0x7d), /numerics section: payload is not valid UTF-8/],
    ["", /numerics section: payload is not JSON/],
    ['{"kv":"f32"', /numerics section: payload is not JSON/],
    ['["kv","f32"]', /numerics section: payload is not a JSON object/],
    ['{"kv":{"a":"b"}}', /numerics section: .*not a string/],
    ['{"kv":16}', /numerics section: .*not a string/],
    ["{}", /numerics section: .*no entries/],
    ['{"__proto__":"x"}', /numerics section: .*reserved/],
    ['{"kv":"f\\u0000"}', /numerics section: .*control character/],
    ['{"kv":"f32","backend":"cpu"}', /numerics section: payload is not canonical/],
    ['{"kv": "f32"}', /numerics section: payload is not canonical/],
    ['{"kv":"f32","kv":"f16"}', /numerics section: payload repeats a key/],
    [JSON.stringify(Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, "v"]))), /40 entries/],
  ];
  for (const [payload, pattern] of cases) {
    const b = await withNumericsPayloads([typeof payload === "string" ? utf8(payload) : payload]);
    const e = await refused(b, "capsule_corrupt", pattern);
    assertEquals(e.code, "capsule_corrupt");
    await refused(ReadableStream.from([b.slice(0, 500), b.slice(500)]), "capsule_corrupt", pattern);
    // inspect reports it instead of throwing, and shows no profile.
    const info = await inspectCapsule(b);
    assertEquals([info.ok, info.numerics, info.checks.error?.code], [false, null, "capsule_corrupt"]);
    assert(info.checks.sha256 && info.checks.sectionCrcs, "every checksum still holds");
  }
  const deflated = await withNumericsPayloads([utf8('{"kv": "f32"}')], { compress: "deflate" });
  await refused(deflated, "capsule_corrupt", /numerics section: payload is not canonical/);
});

Deno.test("numerics sections that are too long, repeated or tied to a layer are refused from the header", async () => {
  const huge = await withNumericsPayloads([utf8(`{"kv":"${"x".repeat(3000)}"}`)]);
  await refused(
    huge,
    "capsule_corrupt",
    /numerics section \(section \d+\) declares 3009 bytes, at most 2048/,
  );
  await assertRejects(() => inspectCapsule(huge), CapsuleError, "numerics section");
  const ok = utf8(numericsJson(H200));
  await refused(await withNumericsPayloads([ok, ok]), "capsule_corrupt", /numerics section appears twice/);
  const layered = await withNumericsPayloads([ok], {
    edit: (v) => v.setUint32(entriesOf(new Uint8Array(v.buffer), SECTION_NUMERICS)[0] + 4, 0, true),
  });
  await refused(layered, "capsule_corrupt", /numerics section \(section \d+\) names layer 0/);
  // A forged payload that is exactly canonical is read like the writer's own.
  assertEquals((await decodeCapsule(await withNumericsPayloads([ok]), opts)).numerics, H200);
});

Deno.test("a damaged numerics section is a checksum mismatch, not a malformed profile", async () => {
  const b = await encodeCapsuleBytes(snap, { fingerprint, config, numerics: H200 });
  const info = await inspectCapsule(b);
  const s = info.sections.find((x) => x.type === "numerics")!;
  b[info.headerBytes + s.offset + 3] ^= 0x80; // bad UTF-8 now, but the CRC speaks first
  resign(b);
  const e = await refused(b, "capsule_checksum_mismatch", /section \d+ checksum/);
  assertEquals(e.details?.section, s.index);
  const damaged = await inspectCapsule(b);
  assertEquals([damaged.ok, damaged.numerics, damaged.checks.sectionCrcs, damaged.checks.error], [
    false,
    null,
    false,
    null,
  ]);
});

Deno.test("(property) generated numerics payloads decode to exactly their canonical profile or capsule_corrupt", async () => {
  const near = fc.tuple(fc.nat(60), fc.constantFrom(" ", "\n", ",", '"', "\\", "}", "\u00e9", "\u0000")).map(
    ([at, c]) => {
      const t = numericsJson(H200);
      return utf8(t.slice(0, at) + c + t.slice(at));
    },
  );
  const payload = fc.oneof(
    near,
    fc.uint8Array({ maxLength: 48 }),
    fc.json({ maxDepth: 2 }).map(utf8),
    fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 4 }).map((d) =>
      utf8(JSON.stringify(d))
    ),
  );
  let accepted = 0;
  await fc.assert(
    fc.asyncProperty(payload, async (p) => {
      const b = await withNumericsPayloads([p]);
      let back;
      try {
        back = await decodeCapsule(b, opts);
      } catch (e) {
        if (!(e instanceof CapsuleError) || e.code !== "capsule_corrupt") throw e;
        assertMatch(e.message, /numerics section/);
        return;
      }
      accepted++;
      assert(back.numerics !== null);
      assertEquals(utf8(numericsJson(back.numerics)), p);
      assertEquals((await inspectCapsule(b)).numerics, back.numerics);
    }),
    { numRuns: 150 },
  );
  assert(accepted < 150, "most generated payloads are not canonical profiles");
});

Deno.test("reserved bytes: strict for 1.1 (this reader knows it), ignored for newer minors (§8)", async () => {
  const b = await encodeCapsuleBytes(snap, { fingerprint, config, numerics: H200 });
  const reserved = (m: number) => {
    const c = b.slice();
    const v = new DataView(c.buffer);
    v.setUint16(10, m, true);
    v.setUint8(125, 1);
    resign(c);
    return c;
  };
  await refused(reserved(1), "capsule_corrupt", /reserved byte 125/);
  assertEquals((await decodeCapsule(reserved(2), opts)).numerics, H200);
  // A numerics section is read whatever minor version the header states.
  const zero = b.slice();
  new DataView(zero.buffer).setUint16(10, 0, true);
  resign(zero);
  assertEquals((await decodeCapsule(zero, opts)).numerics, H200);
});

Deno.test("the writer refuses bad profiles and hand-made numerics sections with invalid_argument", () => {
  for (
    const numerics of [{}, { "bad key": "x" }, { kv: "" }, { kv: 3 }, {
      constructor: "x",
    }] as unknown as NumericsProfile[]
  ) {
    const e = assertThrows(() => encodeCapsule(snap, { fingerprint, config, numerics }), CapsuleError);
    assertEquals(e.code, "invalid_argument", e.message);
    assertMatch(e.message, /numerics profile/);
  }
  const e = assertThrows(
    () =>
      encodeCapsule(snap, {
        fingerprint,
        config,
        extraSections: [{ type: SECTION_NUMERICS, bytes: utf8(numericsJson(H200)) }],
      }),
    CapsuleError,
  );
  assertEquals(e.code, "invalid_argument");
  assertThrows(() => capsuleSizeEstimate(config, 3, { numerics: {} }), CapsuleError);
});
