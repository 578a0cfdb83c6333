import { assert, assertEquals, assertLessOrEqual } from "@std/assert";
import { loadModelConfig } from "../../src/model/config.ts";
import { Checkpoint } from "../../src/model/safetensors.ts";
import { loadWeights } from "../../src/model/weights.ts";
import { CpuBackend } from "../../src/engine/backend.ts";
import { goldenFiles, summarise, verifyCase } from "../../src/engine/verify.ts";
import { fixture, FIXTURE_MODELS, REPO_ROOT } from "../support/fixtures.ts";

for (const name of FIXTURE_MODELS) {
  Deno.test(`CPU reference reproduces transformers on ${name} (every golden case within 1e-4)`, async () => {
    const dir = fixture(name);
    const config = await loadModelConfig(dir);
    using ckpt = await Checkpoint.open(dir);
    const backend = new CpuBackend(config, await loadWeights(ckpt, config, dir));
    const files = await goldenFiles(dir);
    assert(files.length >= 2, "each fixture has golden and golden-long");
    const reports = [];
    for (const f of files) reports.push(await verifyCase(backend, f));
    const s = summarise(name, "cpu", "chunked", reports, 1e-4);
    for (const r of reports) {
      for (const c of r.checks) assertLessOrEqual(c.relL2, 1e-4, `${r.case} ${c.tensor}`);
      assertEquals(r.greedyMatched, r.greedyTotal, `${r.case} greedy ids`);
    }
    assert(s.pass);
  });
}

Deno.test("deno task verify prints the JSON summary last and exits 0 on a passing folder", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO_ROOT}/src/cli/verify.ts`, fixture("kimi_linear-tiny")],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  const summary = JSON.parse(lines.at(-1)!);
  assertEquals(out.code, 0);
  assertEquals(summary.fixture, "kimi_linear-tiny");
  assertEquals(summary.backend, "cpu");
  assertEquals(summary.greedy_match, "20/20");
  assertEquals(summary.pass, true);
  for (
    const k of [
      "prefill_logits_rel_l2",
      "hidden_states_rel_l2",
      "prefill_state_rel_l2",
      "decode_logits_rel_l2",
      "final_state_rel_l2",
    ]
  ) {
    assert(summary[k] <= 1e-4, k);
  }
});

Deno.test("deno task verify exits non-zero with a clear error on a folder without golden files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const f of ["config.json", "model.safetensors"]) {
      await Deno.copyFile(`${fixture("qwen3_5-tiny")}/${f}`, `${dir}/${f}`);
    }
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${REPO_ROOT}/src/cli/verify.ts`, dir],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(out.code, 1);
    const last = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
    assertEquals(last.pass, false);
    assertEquals(last.error, "invalid_argument");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
