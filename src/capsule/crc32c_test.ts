import { assertEquals } from "@std/assert";
import { crc32c, crc32cUpdate } from "./crc32c.ts";

/** Bit-at-a-time reference: the definition, independent of the tables. */
function slowCrc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

Deno.test("crc32c matches the published check values", () => {
  assertEquals(crc32c(new TextEncoder().encode("123456789")), 0xe3069283);
  assertEquals(crc32c(new Uint8Array(0)), 0);
  // RFC 3720 (iSCSI) B.4 test vectors.
  assertEquals(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assertEquals(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  assertEquals(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
});

Deno.test("crc32c equals the bitwise definition at every length and alignment", () => {
  const buf = Uint8Array.from({ length: 300 }, (_, i) => (i * 2654435761) >>> 24);
  for (let off = 0; off < 5; off++) {
    for (let len = 0; len < 70; len++) {
      const v = buf.subarray(off, off + len);
      assertEquals(crc32c(v), slowCrc32c(v), `offset ${off} length ${len}`);
    }
  }
});

Deno.test("crc32cUpdate over pieces equals crc32c over the whole", () => {
  const buf = Uint8Array.from({ length: 5000 }, (_, i) => (i * 40503) & 0xff);
  for (const cut of [0, 1, 7, 16, 17, 4095, 5000]) {
    assertEquals(crc32cUpdate(crc32cUpdate(0, buf.subarray(0, cut)), buf.subarray(cut)), crc32c(buf));
  }
});
