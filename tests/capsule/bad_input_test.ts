/**
 * Every class of bad input is refused with its own error code: truncation, bit flips, wrong
 * magic, unknown versions and flags, wrong model, wrong key or tenant, lying lengths, oversized
 * headers, appended garbage. "Forged" cases recompute the header CRC and the footer SHA-256, as a
 * hostile writer would, so that the structural checks themselves are exercised.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import {
  decodeCapsule,
  type DecodeOptions,
  encodeCapsuleBytes,
  inspectCapsule,
} from "../../src/capsule/mod.ts";
import { CapsuleError, type ErrorCode } from "../../src/errors.ts";
import { fakeFingerprint, fixtureConfig, randomSnapshot, resign, rng } from "./helpers.ts";

const config = fixtureConfig("qwen3_5-tiny");
const fingerprint = fakeFingerprint("bad-input");
const KEY = new Uint8Array(32).fill(9);
const snap = randomSnapshot(config, 12, rng(12), { pending: true, sampler: true });
const good = await encodeCapsuleBytes(snap, { fingerprint, config });
const opts: DecodeOptions = { fingerprint, config };

async function refused(
  input: Uint8Array | ReadableStream<Uint8Array>,
  code: ErrorCode,
  o: DecodeOptions = opts,
): Promise<CapsuleError> {
  const e = await assertRejects(() => decodeCapsule(input, o), CapsuleError);
  assertEquals(e.code, code, `expected ${code}, got ${e.code}: ${e.message}`);
  assert(e.message.length > 10, "the message says what is wrong");
  return e;
}

const headerSize = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset).getUint32(12, true);

/** Rewrite header fields, then make the header CRC and the footer SHA-256 consistent again. */
function forge(bytes: Uint8Array, edit: (v: DataView, b: Uint8Array) => void): Uint8Array {
  const b = bytes.slice();
  const v = new DataView(b.buffer);
  edit(v, b);
  resign(b);
  return b;
}

const sectionTable = (v: DataView) => v.getUint32(116, true);
const layerTable = (v: DataView) => v.getUint32(112, true);

Deno.test("the unmodified capsule decodes (the baseline every case below departs from)", async () => {
  const back = await decodeCapsule(good, opts);
  assertEquals(back.tokens, snap.tokens);
});

Deno.test("truncated capsules are refused with capsule_truncated wherever they are cut", async () => {
  const hs = headerSize(good);
  for (
    const cut of [
      0,
      1,
      8,
      15,
      16,
      100,
      hs - 1,
      hs,
      hs + 1,
      hs + 1000,
      good.length - 49,
      good.length - 48,
      good.length - 1,
    ]
  ) {
    await refused(good.subarray(0, cut), "capsule_truncated");
    await refused(ReadableStream.from([good.slice(0, cut)]), "capsule_truncated");
  }
});

Deno.test("flipped bits are refused with capsule_checksum_mismatch: header, section, checksum table, footer", async () => {
  const hs = headerSize(good);
  for (const at of [20, 40, 70, 150, hs + 3, hs + 900, good.length - 60, good.length - 1]) {
    const b = good.slice();
    b[at] ^= 0x10;
    await refused(b, "capsule_checksum_mismatch");
  }
});

Deno.test("a flipped bit in a section is caught by that section's CRC-32C even when the SHA-256 is recomputed", async () => {
  const b = good.slice();
  b[headerSize(good) + 700] ^= 1;
  resign(b);
  const e = await refused(b, "capsule_checksum_mismatch");
  assertEquals(typeof e.details?.section, "number");
});

Deno.test("foreign files are refused with capsule_bad_magic", async () => {
  for (const text of ['{"json": true}', "\x89PNG\r\n\x1a\n0000000000000000", "x"]) {
    await refused(new TextEncoder().encode(text), "capsule_bad_magic");
  }
  const b = good.slice();
  b[3] = 0x51;
  await refused(b, "capsule_bad_magic");
});

Deno.test("unknown format versions and required feature flags are refused with capsule_unsupported_version", async () => {
  for (const major of [0, 2, 65535]) {
    await refused(forge(good, (v) => v.setUint16(8, major, true)), "capsule_unsupported_version");
  }
  await refused(forge(good, (v) => v.setUint32(20, 1 << 5, true)), "capsule_unsupported_version");
  // A newer minor version with an unknown optional flag (bit 16+) is still read.
  const newer = forge(good, (v) => {
    v.setUint16(10, 7, true);
    v.setUint32(20, 1 << 20, true);
  });
  assertEquals((await decodeCapsule(newer, opts)).tokens, snap.tokens);
});

Deno.test("a capsule of another model is refused with capsule_model_mismatch", async () => {
  await refused(good, "capsule_model_mismatch", { fingerprint: fakeFingerprint("other"), config });
  // Same fingerprint (a caller bug) but another family or geometry: still refused.
  await refused(good, "capsule_model_mismatch", { fingerprint, config: fixtureConfig("kimi_linear-tiny") });
  await refused(good, "capsule_model_mismatch", { fingerprint, config: fixtureConfig("qwen3_next-tiny") });
  const wider = { ...config, linear: { ...config.linear, convKernel: 5 } };
  await refused(good, "capsule_model_mismatch", { fingerprint, config: wider });
});

Deno.test("sealed capsules: wrong tenant, wrong key, no key, unsealed import and tampering are each refused", async () => {
  const seal = { key: KEY, tenant: "tenant-a" };
  const sealed = await encodeCapsuleBytes(snap, { fingerprint, config, seal, chunkSize: 4096 });
  assertEquals((await decodeCapsule(sealed, { ...opts, seal })).tokens, snap.tokens);
  await refused(sealed, "capsule_wrong_tenant", { ...opts, seal: { key: KEY, tenant: "tenant-b" } });
  await refused(sealed, "capsule_wrong_key", {
    ...opts,
    seal: { key: new Uint8Array(32).fill(1), tenant: "tenant-a" },
  });
  await refused(sealed, "capsule_sealed");
  await refused(good, "capsule_not_sealed", { ...opts, seal });
  // The body is ciphertext: the tokens' bytes cannot be found in it.
  const tokenBytes = new Uint8Array(Uint32Array.from(snap.tokens.slice(0, 4)).buffer);
  assert(!Buffer.from(sealed).includes(Buffer.from(tokenBytes)), "sealed body leaks plaintext");
  // Altered ciphertext with a recomputed SHA-256: AES-GCM authentication fails.
  const b = sealed.slice();
  b[headerSize(sealed) + 50] ^= 4;
  resign(b);
  await refused(b, "capsule_checksum_mismatch", { ...opts, seal });
  // Altered cleartext header (sampler draws) with recomputed CRC and SHA: the header is associated data.
  await refused(forge(sealed, (v) => v.setBigUint64(104, 1n, true)), "capsule_checksum_mismatch", {
    ...opts,
    seal,
  });
  // Dropping the seal flag to smuggle the body in as plaintext is refused too.
  await refused(forge(sealed, (v) => v.setUint32(20, 0, true)), "capsule_corrupt", opts);
});

Deno.test("lying section lengths, offsets and sizes are refused with capsule_corrupt", async () => {
  const edits: [string, (v: DataView) => void][] = [
    ["section length", (v) => v.setBigUint64(sectionTable(v) + 32 * 2 + 16, 12n, true)],
    ["section length, huge", (v) => v.setBigUint64(sectionTable(v) + 32 * 1 + 16, 2n ** 50n, true)],
    ["section offset", (v) => v.setBigUint64(sectionTable(v) + 32 * 3 + 8, 64n, true)],
    ["section type", (v) => v.setUint16(sectionTable(v) + 32 * 3, 5, true)],
    ["section layer", (v) => v.setUint32(sectionTable(v) + 32 * 3, 0, true)],
    ["plain body size", (v) => v.setBigUint64(24, BigInt(v.getBigUint64(24, true) + 64n), true)],
    ["token count", (v) => v.setBigUint64(88, 20n, true)],
    ["layer rows", (v) => v.setUint32(layerTable(v) + 32 * 3 + 28, 11, true)],
    ["layer codec", (v) => v.setUint8(layerTable(v) + 1, 9)],
    ["layer kind", (v) => v.setUint8(layerTable(v), 7)],
    ["layer count", (v) => v.setUint32(68, 0, true)],
    ["section count", (v) => v.setUint32(72, 1000, true)],
    ["section table offset", (v) => v.setUint32(116, 8, true)],
    ["family", (v) => v.setUint8(64, 77)],
    ["reserved byte", (v) => v.setUint8(125, 1)],
    ["chunk size on an unframed body", (v) => v.setUint32(76, 4096, true)],
    ["sampler flag", (v) => v.setUint8(65, 2)],
    ["footer length", (v) => v.setBigUint64(v.byteLength - 40, 5n, true)],
  ];
  for (const [what, edit] of edits) {
    const b = forge(good, edit);
    if (what === "footer length") new DataView(b.buffer).setBigUint64(b.length - 40, 5n, true);
    const e = await assertRejects(() => decodeCapsule(b, opts), CapsuleError);
    assertEquals(e.code, "capsule_corrupt", `${what}: ${e.code} ${e.message}`);
  }
});

Deno.test("oversized headers and declared sizes are refused with capsule_too_large before allocating", async () => {
  await refused(forge(good, (v) => v.setUint32(12, 1 << 30, true)), "capsule_too_large");
  // A consistent header for a 40-million-token session (≈ 80 GB of KV): refused from the header alone.
  const huge = forge(good, (v) => {
    const rows = 40_000_000;
    v.setBigUint64(80, BigInt(rows), true);
    v.setBigUint64(88, BigInt(rows), true);
    v.setUint32(layerTable(v) + 32 * 3 + 28, rows, true);
    const lengths = [
      rows * 4,
      256 * 4 * 4,
      4 * 32 * 32 * 4,
      256 * 4 * 4,
      4 * 32 * 32 * 4,
      256 * 4 * 4,
      4 * 32 * 32 * 4,
      rows * 256,
      rows * 256,
    ];
    let at = 0;
    lengths.forEach((len, i) => {
      v.setBigUint64(sectionTable(v) + 32 * i + 8, BigInt(at), true);
      v.setBigUint64(sectionTable(v) + 32 * i + 16, BigInt(len), true);
      at = Math.ceil((at + len) / 64) * 64;
    });
    v.setBigUint64(24, BigInt(Math.ceil((at + 4 * lengths.length) / 64) * 64), true);
  });
  await refused(huge, "capsule_too_large");
  await refused(ReadableStream.from([huge]), "capsule_too_large");
  await refused(good, "capsule_too_large", { ...opts, maxBytes: good.length - 1 });
  await refused(ReadableStream.from([good]), "capsule_too_large", { ...opts, maxBytes: 2000 });
});

Deno.test("appended garbage is refused with capsule_trailing_data", async () => {
  const b = new Uint8Array(good.length + 3);
  b.set(good);
  await refused(b, "capsule_trailing_data");
  await refused(ReadableStream.from([good.slice(), Uint8Array.of(0)]), "capsule_trailing_data");
  // A second capsule glued to the first is garbage too.
  await refused(ReadableStream.from([good.slice(), good.slice()]), "capsule_trailing_data");
  const deflated = await encodeCapsuleBytes(snap, {
    fingerprint,
    config,
    compress: "deflate",
    chunkSize: 4096,
  });
  await refused(ReadableStream.from([deflated, new Uint8Array(100)]), "capsule_trailing_data");
});

Deno.test("framed bodies: lying frame lengths and damaged deflate data are refused with capsule_corrupt", async () => {
  const deflated = await encodeCapsuleBytes(snap, {
    fingerprint,
    config,
    compress: "deflate",
    chunkSize: 4096,
  });
  const hs = headerSize(deflated);
  const lie = deflated.slice();
  new DataView(lie.buffer).setUint32(hs, 0x7fffffff, true);
  resign(lie);
  await refused(lie, "capsule_corrupt");
  const damaged = deflated.slice();
  for (let i = hs + 10; i < hs + 40; i++) damaged[i] ^= 0xff;
  resign(damaged);
  await refused(damaged, "capsule_corrupt");
});

Deno.test("token ids outside the vocabulary are refused with capsule_invalid", async () => {
  const bigVocab = { ...config, vocabSize: 100000 };
  const s = randomSnapshot(bigVocab, 3, rng(1));
  s.tokens[1] = 99999;
  const b = await encodeCapsuleBytes(s, { fingerprint, config: bigVocab });
  await refused(b, "capsule_invalid");
});

Deno.test("a stream that yields something other than bytes is refused with invalid_argument", async () => {
  const s = ReadableStream.from(["not bytes"]) as unknown as ReadableStream<Uint8Array>;
  await refused(s, "invalid_argument");
});

Deno.test("inspect reports damage instead of throwing once the header is readable", async () => {
  const b = good.slice();
  b[headerSize(good) + 900] ^= 1;
  const info = await inspectCapsule(b);
  assertEquals([info.ok, info.checks.sectionCrcs, info.checks.sha256], [false, false, false]);
  assertEquals(info.sections.filter((s) => s.crcOk === false).length, 1);
  const trailing = new Uint8Array(good.length + 5);
  trailing.set(good);
  const t = await inspectCapsule(trailing);
  assertEquals([t.ok, t.checks.trailingBytes], [false, 5]);
  const h = good.slice();
  h[40] ^= 1;
  const hi = await inspectCapsule(h);
  assertEquals([hi.ok, hi.checks.headerCrc], [false, false]);
  await assertRejects(() => inspectCapsule(new Uint8Array(3)), CapsuleError);
});
