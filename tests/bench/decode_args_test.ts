import { assertEquals, assertThrows } from "@std/assert";
import { samplingFromArgs } from "../../bench/main.ts";
import { type DecodeResult, markdownTable, samplingLabel, steadyRate } from "../../bench/decode.ts";
import { CapsuleError } from "../../src/errors.ts";

Deno.test("bench sampling flags: temperature 0 is greedy, others are labelled with what they set", () => {
  assertEquals(samplingLabel(samplingFromArgs("0", "0", "1")), "greedy");
  assertEquals(samplingLabel(samplingFromArgs("0.7", "0", "0.9")), "T 0.7, top-p 0.9");
  assertEquals(samplingLabel(samplingFromArgs("1", "40", "1")), "T 1, top-k 40");
  assertEquals(samplingLabel(undefined), "greedy");
});

Deno.test("bench sampling flags: invalid values are refused with the field named", () => {
  const e = assertThrows(() => samplingFromArgs("-1", "0", "1"), CapsuleError);
  assertEquals(e.code, "invalid_argument");
  assertThrows(() => samplingFromArgs("0.7", "0", "1.5"), CapsuleError, "top");
  assertThrows(() => samplingFromArgs("abc", "0", "1"), CapsuleError, "temperature");
});

Deno.test("bench markdown names the sampling of non-greedy rows only", () => {
  const row = (sampling: string): DecodeResult => ({
    model: "M",
    weights: "f16",
    batch: 1,
    context: 1024,
    tokensPerSecond: 10,
    tokensPerSecondPerSession: 10,
    stepMs: 100,
    bytesPerStep: 1e6,
    bytesPerToken: 1e6,
    achievedGBs: 0.01,
    bandwidthRatio: null,
    dispatchesPerStep: 5,
    measuredSteps: 3,
    sampling,
  });
  const md = markdownTable([row("greedy"), row("T 0.7, top-p 0.9")]).split("\n");
  assertEquals(md[2].startsWith("| M | f16 |"), true);
  assertEquals(md[3].startsWith("| M (T 0.7, top-p 0.9) | f16 |"), true);
});

Deno.test("bench rate: tokens after the first readback over the time to the last, start-up left out", () => {
  // Four sessions, readbacks of 8 steps every 10 ms after a 500 ms start: 3 more readbacks of 32
  // tokens in 30 ms is 3,200 tokens/s whatever the start-up took.
  const arrivals: number[] = [];
  for (let k = 0; k < 4; k++) {
    for (let i = 0; i < 32; i++) arrivals.push(500 + 10 * k);
  }
  assertEquals(Math.round(steadyRate(arrivals)), 3200);
  assertEquals(Math.round(steadyRate(arrivals.map((t) => t + 1000))), 3200);
  assertThrows(() => steadyRate(arrivals.slice(0, 32)), Error, "one readback");
  assertThrows(() => steadyRate([5]), Error, "two tokens");
});
