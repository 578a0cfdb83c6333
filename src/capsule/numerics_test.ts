import { assert, assertEquals, assertMatch, assertThrows } from "@std/assert";
import fc from "fast-check";
import { CapsuleError } from "../errors.ts";
import {
  decodeNumerics,
  diffNumerics,
  encodeNumerics,
  MAX_NUMERICS_BYTES,
  numericsJson,
  validateNumerics,
} from "./numerics.ts";

const H200 = { backend: "webgpu", adapter: "NVIDIA H200", weights: "f16", kv: "f32", kernels: "3" };
const utf8 = (s: string) => new TextEncoder().encode(s);

function refusedWith(code: string, f: () => unknown, pattern: RegExp): void {
  const e = assertThrows(f, CapsuleError);
  assertEquals(e.code, code, e.message);
  assertMatch(e.message, pattern);
}

Deno.test("numerics: canonical JSON sorts keys (as strings), has no whitespace and keeps UTF-8 raw", () => {
  assertEquals(
    numericsJson(H200),
    '{"adapter":"NVIDIA H200","backend":"webgpu","kernels":"3","kv":"f32","weights":"f16"}',
  );
  // Insertion order does not matter; integer-like keys sort as strings, not first as in JS objects.
  assertEquals(numericsJson({ b: "1", "9": "x", "10": "y", a: "2" }), '{"10":"y","9":"x","a":"2","b":"1"}');
  // Only `"` and `\` need escapes once control characters are refused; non-ASCII stays UTF-8.
  assertEquals(numericsJson({ adapter: 'Ünï "☃" \\ 𝔾' }), '{"adapter":"Ünï \\"☃\\" \\\\ 𝔾"}');
  const p = validateNumerics({ kv: "f32", backend: "cpu" });
  assertEquals(Object.keys(p), ["backend", "kv"]);
  assert(Object.isFrozen(p));
  assertEquals(decodeNumerics(encodeNumerics(H200)), validateNumerics(H200));
});

Deno.test("numerics: profiles breaking a rule are refused with invalid_argument naming the rule", () => {
  const cases: [unknown, RegExp][] = [
    [null, /object of strings/],
    [["a"], /object of strings/],
    ["backend=cpu", /object of strings/],
    [new Map([["a", "b"]]), /plain object/],
    [{}, /no entries/],
    [Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, "v"])), /33 entries, at most 32/],
    [{ "": "x" }, /empty key/],
    [{ "a b": "x" }, /outside A-Z/],
    [{ "ключ": "x" }, /outside A-Z/],
    [{ ["k".repeat(65)]: "x" }, /longer than 64/],
    [JSON.parse('{"__proto__":"x"}'), /reserved/],
    [{ constructor: "x" }, /reserved/],
    [{ prototype: "x" }, /reserved/],
    [{ kv: 32 }, /is a number, not a string/],
    [{ kv: null }, /is null, not a string/],
    [{ kv: "" }, /empty/],
    [{ kv: "f32\n" }, /control character/],
    [{ kv: "\u0085" }, /control character/],
    [{ kv: "\u007f" }, /control character/],
    [{ kv: "\ud800x" }, /lone surrogate/],
    [
      { a: "x".repeat(1000), b: "y".repeat(1000), c: "z".repeat(100) },
      /bytes as canonical JSON, at most 2048/,
    ],
    [{ a: "é".repeat(1021) }, /2050 bytes as canonical JSON/], // 1029 characters, but 2 bytes per é
    [{ [Symbol("s")]: "x", a: "b" }, /symbol keys/],
  ];
  for (const [p, pattern] of cases) refusedWith("invalid_argument", () => validateNumerics(p), pattern);
  // The largest profile allowed is exactly at the limit.
  const edge = { a: "x".repeat(MAX_NUMERICS_BYTES - '{"a":""}'.length) };
  assertEquals(encodeNumerics(validateNumerics(edge)).length, MAX_NUMERICS_BYTES);
});

Deno.test("numerics: malformed payloads are refused with capsule_corrupt naming the numerics section", () => {
  const cases: [Uint8Array, RegExp][] = [
    [Uint8Array.of(0x7b, 0xff, 0x7d), /not valid UTF-8/],
    [Uint8Array.of(0xef, 0xbb, 0xbf, ...utf8('{"a":"b"}')), /not JSON/], // a BOM is not JSON whitespace
    [utf8(""), /not JSON/],
    [utf8('{"a":"b"'), /not JSON/],
    [utf8('["a","b"]'), /not a JSON object/],
    [utf8('"a"'), /not a JSON object/],
    [utf8("null"), /not a JSON object/],
    [utf8("{}"), /no entries/],
    [utf8('{"a":{"b":"c"}}'), /is an object, not a string/],
    [utf8('{"a":1}'), /is a number/],
    [utf8('{"a":""}'), /empty/],
    [utf8('{"a":"\\u0000"}'), /control character/],
    [utf8('{"a":"\\ud800"}'), /lone surrogate/],
    [utf8('{"__proto__":"x"}'), /reserved/],
    [utf8('{"a b":"x"}'), /outside A-Z/],
    [utf8('{"b":"1","a":"2"}'), /not canonical/],
    [utf8('{"a": "2"}'), /not canonical/],
    [utf8('{"a":"2"}\n'), /not canonical/],
    [utf8('{"a":"\\u0041"}'), /not canonical/],
    [utf8('{"a":"\\/"}'), /not canonical/],
    [utf8('{"a":"1","a":"2"}'), /repeats a key/],
    [utf8('{"a":"1","b":"x","a":"1"}'), /repeats a key/],
    [
      utf8(JSON.stringify(Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, "v"])))),
      /33 entries/,
    ],
    [utf8(`{"a":"${"x".repeat(2100)}"}`), /at most 2048/],
  ];
  for (const [bytes, pattern] of cases) {
    refusedWith("capsule_corrupt", () => decodeNumerics(bytes), pattern);
    refusedWith("capsule_corrupt", () => decodeNumerics(bytes), /^numerics section: /);
  }
});

Deno.test("numerics: diffNumerics names every differing key, with null for a missing side", () => {
  assertEquals(diffNumerics(H200, { ...H200 }), null);
  assertEquals(diffNumerics({ kv: "f32", a: "1" }, { a: "1", kv: "f32" }), null);
  assertEquals(diffNumerics({ ...H200, kv: "f16" }, H200), { kv: ["f16", "f32"] });
  assertEquals(
    diffNumerics({ backend: "cpu", kv: "f32", extra: "1" }, {
      backend: "webgpu",
      kv: "f32",
      adapter: "H200",
    }),
    { adapter: [null, "H200"], backend: ["cpu", "webgpu"], extra: ["1", null] },
  );
  // Inherited properties are not keys: "toString" is only on one side here.
  assertEquals<unknown>(diffNumerics({ toString: "x" }, { a: "b" }), {
    a: [null, "b"],
    toString: ["x", null],
  });
  assertEquals(Object.keys(diffNumerics({ z: "1", b: "1" }, { a: "1" }) ?? {}), ["a", "b", "z"]);
});

/** Keys and values drawn near the rules' edges: valid, invalid characters, unsafe names, long ones. */
const keyArb = fc.oneof(
  { weight: 6, arbitrary: fc.stringMatching(/^[A-Za-z0-9_.-]{1,12}$/) },
  { weight: 1, arbitrary: fc.string({ maxLength: 8 }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom("__proto__", "constructor", "prototype", "k".repeat(65), "9", "10"),
  },
);
const valueArb = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: "binary", minLength: 1, maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary-ascii", maxLength: 4 }) },
  { weight: 1, arbitrary: fc.string({ minLength: 300, maxLength: 700 }) },
  { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom("a", "\ud800", "\udc00"), minLength: 1 }) },
);
const profileArb = fc.oneof(
  { weight: 4, arbitrary: fc.dictionary(keyArb, valueArb, { minKeys: 0, maxKeys: 8 }) },
  {
    weight: 1,
    arbitrary: fc.dictionary(
      fc.stringMatching(/^[a-z0-9]{1,6}$/),
      fc.string({ unit: "binary", minLength: 1, maxLength: 60 }),
      {
        minKeys: 28,
        maxKeys: 36,
      },
    ),
  },
);

Deno.test("numerics (property): a profile the writer accepts reads back exactly; any other is refused by rule", () => {
  fc.assert(
    fc.property(profileArb, (p) => {
      let valid;
      try {
        valid = validateNumerics(p);
      } catch (e) {
        if (!(e instanceof CapsuleError) || e.code !== "invalid_argument") throw e;
        // The reader refuses the same content under its own code.
        const text = `{${
          Object.entries(p).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) =>
            `${JSON.stringify(k)}:${JSON.stringify(v)}`
          ).join(",")
        }}`;
        assertThrows(() => decodeNumerics(utf8(text)), CapsuleError);
        return;
      }
      const bytes = encodeNumerics(p);
      assert(bytes.length <= MAX_NUMERICS_BYTES);
      assertEquals(decodeNumerics(bytes), valid);
      assertEquals(diffNumerics(valid, p), null);
    }),
    { numRuns: 1500 },
  );
});

/** Edits of a valid payload that a sloppy or hostile writer might make. */
function mutate(text: string, kind: number, at: number): Uint8Array {
  const i = at % (text.length + 1);
  switch (kind) {
    case 0:
      return utf8(text.slice(0, i) + " " + text.slice(i)); // whitespace
    case 1:
      return utf8(text.slice(0, i)); // cut
    case 2: {
      const b = utf8(text); // a flipped byte
      b[at % b.length] ^= 1 << (at % 8);
      return b;
    }
    case 3:
      return utf8(
        text.replace(/"([^"\\])/, (_m, c: string) => `"\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`),
      );
    default: {
      const inner = text.slice(1, -1); // a repeated entry
      const first = inner.split('","')[0];
      return utf8(`{${first}${first.endsWith('"') ? "" : '"'},${inner}}`);
    }
  }
}

Deno.test("numerics (property): any payload is either exactly a canonical profile or capsule_corrupt", () => {
  const valid = profileArb.filter((p) => {
    try {
      validateNumerics(p);
      return true;
    } catch {
      return false;
    }
  });
  const payloadArb = fc.oneof(
    fc.uint8Array({ maxLength: 64 }),
    fc.json({ maxDepth: 2 }).map(utf8),
    fc.dictionary(fc.string({ maxLength: 6 }), fc.oneof(fc.string(), fc.integer())).map((d) =>
      utf8(JSON.stringify(d))
    ),
    fc.tuple(valid, fc.nat(4), fc.nat()).map(([p, kind, at]) => mutate(numericsJson(p), kind, at)),
  );
  fc.assert(
    fc.property(payloadArb, (payload) => {
      let p;
      try {
        p = decodeNumerics(payload);
      } catch (e) {
        if (!(e instanceof CapsuleError) || e.code !== "capsule_corrupt") throw e;
        assertMatch(e.message, /^numerics section: /);
        return;
      }
      assertEquals(encodeNumerics(p), payload, "only the canonical bytes of a profile are accepted");
    }),
    { numRuns: 3000 },
  );
});
