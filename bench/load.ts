/**
 * Load bench of the stateless service: N concurrent agents, each owning one session, send every
 * request to a random node (no stickiness): create, then rounds of append + generate, with a fork
 * (generated on, then deleted) every third round. Each agent keeps its own copy of the token ids it
 * expects and checks every reply and, at the end, the whole stored session: any difference counts
 * as lost (or duplicated) tokens.
 *
 *   deno task bench:load [--agents 64] [--rounds 4] [--max-tokens 8] [--nodes URL,URL,URL]
 *                        [--model DIR] [--token T] [--json]
 *
 * Without `--nodes` it starts redis-server and three nodes (CPU backend) itself, serving `--model`
 * or, by default, the tiny test model (the golden fixture plus the test tokenizer).
 * @module
 */
import { parseArgs } from "node:util";
import { startRedis } from "../tests/support/redis.ts";
import { makeTestModelDir, removeTestModelDir } from "../tests/support/model.ts";
import { type NodeProc, startNode } from "../tests/multinode/nodes.ts";

interface Options {
  agents: number;
  rounds: number;
  maxTokens: number;
  nodes?: string[];
  model?: string;
  token?: string;
  json: boolean;
  vocab: number;
}

function options(): Options {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      agents: { type: "string", default: "64" },
      rounds: { type: "string", default: "4" },
      "max-tokens": { type: "string", default: "8" },
      nodes: { type: "string" },
      model: { type: "string" },
      token: { type: "string" },
      vocab: { type: "string", default: "300" },
      json: { type: "boolean", default: false },
    },
  });
  const int = (v: string, name: string) => {
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new Error(`--${name} must be a positive integer`);
    return Number(v);
  };
  return {
    agents: int(values.agents!, "agents"),
    rounds: int(values.rounds!, "rounds"),
    maxTokens: int(values["max-tokens"]!, "max-tokens"),
    ...(values.nodes ? { nodes: values.nodes.split(",").map((u) => u.replace(/\/$/, "")) } : {}),
    ...(values.model ? { model: values.model } : {}),
    ...(values.token ? { token: values.token } : {}),
    json: values.json!,
    vocab: int(values.vocab!, "vocab"),
  };
}

type Op = "create" | "append" | "generate" | "fork" | "fork-generate" | "delete" | "verify";

interface Sample {
  op: Op;
  ms: number;
  ok: boolean;
}

/** Everything measured. */
interface Tally {
  samples: Sample[];
  errors: string[];
  lostTokens: number;
  generated: number;
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function randomIds(n: number, vocab: number): number[] {
  return Array.from({ length: n }, () => 1 + Math.floor(Math.random() * (vocab - 1)));
}

async function agent(i: number, nodes: string[], o: Options, tally: Tally): Promise<void> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  const pick = () => nodes[Math.floor(Math.random() * nodes.length)];
  // deno-lint-ignore no-explicit-any
  const req = async (op: Op, method: string, path: string, body?: unknown): Promise<any> => {
    const started = performance.now();
    let ok = false;
    try {
      const res = await fetch(`${pick()}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      ok = res.ok;
      if (!ok) {
        tally.errors.push(`agent ${i} ${op}: ${res.status} ${text.slice(0, 200)}`);
        return null;
      }
      return text ? JSON.parse(text) : {};
    } catch (e) {
      tally.errors.push(`agent ${i} ${op}: ${(e as Error).message}`);
      return null;
    } finally {
      tally.samples.push({ op, ms: performance.now() - started, ok });
    }
  };
  const check = (what: string, expected: number, got: number | undefined) => {
    if (got !== expected) {
      tally.lostTokens += Math.abs(expected - (got ?? 0));
      tally.errors.push(`agent ${i} ${what}: expected ${expected} tokens, session has ${got}`);
    }
  };

  const tokens = randomIds(8 + Math.floor(Math.random() * 24), o.vocab);
  const created = await req("create", "POST", "/v1/sessions", { input_ids: tokens });
  if (!created) return;
  const id: string = created.id;
  let version: number = created.version;
  check("create", tokens.length, created.tokens);
  const gen = { max_tokens: o.maxTokens, temperature: 0.8, top_k: 40, seed: 1000 + i, ignore_eos: true };
  for (let r = 0; r < o.rounds; r++) {
    const more = randomIds(4 + Math.floor(Math.random() * 12), o.vocab);
    const a = await req("append", "POST", `/v1/sessions/${id}/append`, {
      input_ids: more,
      if_version: version,
    });
    if (!a) return;
    tokens.push(...more);
    version = a.version;
    check("append", tokens.length, a.tokens);
    const g = await req("generate", "POST", `/v1/sessions/${id}/generate`, { ...gen, if_version: version });
    if (!g) return;
    tokens.push(...g.output_ids);
    tally.generated += g.output_ids.length;
    version = g.version;
    check("generate", tokens.length, g.tokens);
    if (r % 3 === 2) {
      const f = await req("fork", "POST", `/v1/sessions/${id}/fork`, { if_version: version });
      if (!f) return;
      check("fork", tokens.length, f.tokens);
      const fg = await req("fork-generate", "POST", `/v1/sessions/${f.id}/generate`, gen);
      if (fg) {
        tally.generated += fg.output_ids.length;
        check("fork generate", tokens.length + fg.output_ids.length, fg.tokens);
      }
      await req("delete", "DELETE", `/v1/sessions/${f.id}`);
    }
  }
  const v = await req("verify", "GET", `/v1/sessions/${id}?include=token_ids`);
  if (!v) return;
  const stored: number[] = v.token_ids;
  if (v.version !== version) {
    tally.errors.push(`agent ${i}: stored version ${v.version}, expected ${version}`);
  }
  let same = 0;
  while (same < stored.length && same < tokens.length && stored[same] === tokens[same]) same++;
  if (same !== tokens.length || stored.length !== tokens.length) {
    tally.lostTokens += Math.max(tokens.length, stored.length) - same;
    tally.errors.push(`agent ${i}: stored tokens differ from expected after position ${same}`);
  }
  await req("delete", "DELETE", `/v1/sessions/${id}`);
}

async function main(): Promise<void> {
  const o = options();
  let nodes = o.nodes;
  const cleanup: (() => Promise<unknown>)[] = [];
  try {
    if (!nodes) {
      const redis = await startRedis();
      cleanup.push(() => redis.stop());
      const model = o.model ?? await makeTestModelDir();
      if (!o.model) cleanup.push(() => removeTestModelDir(model));
      const procs: NodeProc[] = await Promise.all(
        ["A", "B", "C"].map((name) => startNode({ name, model, store: redis.url })),
      );
      cleanup.unshift(() => Promise.all(procs.map((p) => p.stop())));
      nodes = procs.map((p) => p.url);
    }
    const tally: Tally = { samples: [], errors: [], lostTokens: 0, generated: 0 };
    const started = performance.now();
    await Promise.all(Array.from({ length: o.agents }, (_, i) => agent(i, nodes!, o, tally)));
    const seconds = (performance.now() - started) / 1000;

    const all = tally.samples.map((s) => s.ms).sort((a, b) => a - b);
    const byOp: Record<string, { n: number; p50: number; p99: number }> = {};
    for (const op of new Set(tally.samples.map((s) => s.op))) {
      const ms = tally.samples.filter((s) => s.op === op).map((s) => s.ms).sort((a, b) => a - b);
      byOp[op] = { n: ms.length, p50: round(quantile(ms, 0.5)), p99: round(quantile(ms, 0.99)) };
    }
    const summary = {
      agents: o.agents,
      rounds: o.rounds,
      max_tokens: o.maxTokens,
      nodes: nodes.length,
      seconds: round(seconds),
      requests: tally.samples.length,
      requests_per_s: round(tally.samples.length / seconds),
      generated_tokens: tally.generated,
      generated_tokens_per_s: round(tally.generated / seconds),
      latency_ms: { p50: round(quantile(all, 0.5)), p99: round(quantile(all, 0.99)) },
      by_op: byOp,
      errors: tally.errors.length,
      lost_tokens: tally.lostTokens,
    };
    if (o.json) {
      console.log(JSON.stringify(summary));
    } else {
      console.log(
        `${o.agents} agents × ${o.rounds} rounds on ${nodes.length} nodes: ${summary.requests} requests in ${summary.seconds} s`,
      );
      console.log(
        `throughput ${summary.requests_per_s} req/s, ${summary.generated_tokens_per_s} generated tok/s (${tally.generated} tokens)`,
      );
      console.log(`latency p50 ${summary.latency_ms.p50} ms, p99 ${summary.latency_ms.p99} ms`);
      for (const [op, s] of Object.entries(byOp)) {
        console.log(`  ${op.padEnd(14)} n=${s.n} p50 ${s.p50} ms  p99 ${s.p99} ms`);
      }
      console.log(`errors ${summary.errors}, lost tokens ${summary.lost_tokens}`);
      for (const e of tally.errors.slice(0, 10)) console.log(`  ${e}`);
    }
    if (tally.errors.length > 0 || tally.lostTokens > 0) Deno.exitCode = 1;
  } finally {
    for (const c of cleanup) await c();
  }
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}

if (import.meta.main) await main();
