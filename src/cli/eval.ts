/**
 * `deno task eval [--quick] [--model DIR] [--set FILE] [--backend cpu|webgpu|auto] [--per-bucket N]`
 *
 * Memory recall of a model, measured through the engine three ways: (a) uninterrupted; (b)
 * suspended into a capsule after the prompt and resumed by a second, separately loaded engine
 * ("another node"); (c) the same through each lossy capsule codec. An item counts as correct when the
 * greedy continuation starts with the expected answer. Prints a table; the last line is one JSON object.
 */
import { parseArgs } from "node:util";
import { fromFileUrl } from "../util/paths.ts";
import { Engine } from "../engine/engine.ts";
import type { Session } from "../engine/session.ts";
import { encodeCapsuleBytes } from "../capsule/encode.ts";
import { decodeCapsule } from "../capsule/decode.ts";
import type { KvCodec, StateCodec } from "../capsule/codecs.ts";
import type { SessionSnapshot } from "../capsule/snapshot.ts";
import { CapsuleError } from "../errors.ts";

/** One evaluation item (written by tools/train/data.py). */
export interface EvalItem {
  kind: "recall" | "two_hop";
  distance: number;
  prompt: string;
  answer: string;
}

/** The lossy capsule codecs evaluated in (c). */
const CODECS: { name: string; stateCodec: StateCodec; kvCodec: KvCodec }[] = [
  { name: "kv-int8", stateCodec: "f32", kvCodec: "int8" },
  { name: "kv-int4", stateCodec: "f32", kvCodec: "int4" },
  { name: "state-f16", stateCodec: "f16", kvCodec: "raw" },
  { name: "state-bf16", stateCodec: "bf16", kvCodec: "raw" },
];

const bucket = (d: number) => `${Math.round(d / 1000)}k`;

/** Read a `.jsonl` or `.jsonl.gz` evaluation set. */
export async function readEvalSet(path: string): Promise<EvalItem[]> {
  let bytes = await Deno.readFile(path);
  if (path.endsWith(".gz")) {
    bytes = new Uint8Array(
      await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip")))
        .arrayBuffer(),
    );
  }
  return new TextDecoder().decode(bytes).split("\n").filter((l) => l.trim()).map((l, i) => {
    const o = JSON.parse(l);
    if (
      typeof o.prompt !== "string" || typeof o.answer !== "string" || !["recall", "two_hop"].includes(o.kind)
    ) {
      throw new CapsuleError("invalid_argument", `${path}:${i + 1}: not an eval item`);
    }
    return o as EvalItem;
  });
}

/** Greedy continuation long enough to contain the answer; returns the ids and the text. */
async function continueGreedy(
  session: Session,
  engine: Engine,
  answer: string,
): Promise<{ ids: number[]; text: string }> {
  const tok = engine.model.tokenizer!;
  const budget = tok.encode(answer, { addSpecialTokens: false }).length + 2;
  const ids: number[] = [];
  for await (const id of session.generate({ maxTokens: budget, temperature: 0 })) ids.push(id);
  return { ids, text: tok.decode(ids, { skipSpecialTokens: true }) };
}

type Tally = Record<string, Record<string, { ok: number; n: number }>>;

function count(t: Tally, kind: string, b: string, ok: boolean) {
  t[kind] ??= {};
  t[kind][b] ??= { ok: 0, n: 0 };
  t[kind][b].n++;
  if (ok) t[kind][b].ok++;
}

function rates(t: Tally): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const [kind, bs] of Object.entries(t)) {
    out[kind] = {};
    for (const [b, { ok, n }] of Object.entries(bs)) out[kind][b] = Math.round((ok / n) * 1000) / 1000;
  }
  return out;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      model: {
        type: "string",
        default: fromFileUrl(new URL("../../models/capsule-qwen35-tiny", import.meta.url)),
      },
      set: { type: "string" },
      backend: { type: "string", default: "cpu" },
      "per-bucket": { type: "string" },
    },
  });
  const dir = values.model!;
  const setPath = values.set ?? await defaultSet(dir);
  let items = await readEvalSet(setPath);
  const perBucket = Number(values["per-bucket"] ?? (values.quick ? 4 : Infinity));
  const distances = values.quick ? [1000, 2000] : [1000, 2000, 4000, 8000];
  const seen = new Map<string, number>();
  items = items.filter((it) => {
    if (!distances.includes(it.distance)) return false;
    const k = `${it.kind}/${it.distance}`;
    seen.set(k, (seen.get(k) ?? 0) + 1);
    return seen.get(k)! <= perBucket;
  });

  const backend = values.backend as "cpu" | "webgpu" | "auto";
  const nodeA = await Engine.load(dir, { backend });
  const nodeB = await Engine.load(dir, { backend }); // "another node": shares nothing but capsule bytes
  if (!nodeA.model.tokenizer) {
    throw new CapsuleError("no_tokenizer", `${dir} has no tokenizer.json; eval needs text`);
  }
  const capsuleOpts = { fingerprint: nodeA.model.fingerprint, config: nodeA.model.config };

  const plain: Tally = {}, resumed: Tally = {};
  const codecs: Record<string, Tally> = Object.fromEntries(CODECS.map((c) => [c.name, {}]));
  const agree: Record<string, { same: number; n: number }> = Object.fromEntries(
    ["raw", ...CODECS.map((c) => c.name)].map((n) => [n, { same: 0, n: 0 }]),
  );
  const started = performance.now();
  for (const [i, it] of items.entries()) {
    const ids = nodeA.model.tokenizer.encode(it.prompt, { addSpecialTokens: false });
    const session = nodeA.newSession();
    await session.append(ids);
    const snap: SessionSnapshot = session.snapshot();
    const a = await continueGreedy(session, nodeA, it.answer);
    const b = it.distance;
    count(plain, it.kind, bucket(b), a.text.startsWith(it.answer));

    const raw = await encodeCapsuleBytes(snap, capsuleOpts);
    const r = await continueGreedy(nodeB.restore(await decodeCapsule(raw, capsuleOpts)), nodeB, it.answer);
    count(resumed, it.kind, bucket(b), r.text.startsWith(it.answer));
    agree.raw.n++;
    if (r.ids.join() === a.ids.join()) agree.raw.same++;

    for (const c of CODECS) {
      const bytes = await encodeCapsuleBytes(snap, {
        ...capsuleOpts,
        stateCodec: c.stateCodec,
        kvCodec: c.kvCodec,
      });
      const o = await continueGreedy(
        nodeB.restore(await decodeCapsule(bytes, capsuleOpts)),
        nodeB,
        it.answer,
      );
      count(codecs[c.name], it.kind, bucket(b), o.text.startsWith(it.answer));
      agree[c.name].n++;
      if (o.ids.join() === a.ids.join()) agree[c.name].same++;
    }
    const secs = ((performance.now() - started) / 1000).toFixed(0);
    console.error(
      `[${i + 1}/${items.length}] ${it.kind} ${bucket(b)} ${ids.length} tokens: ${
        JSON.stringify(a.text)
      } vs ${JSON.stringify(it.answer)} (${secs}s)`,
    );
  }
  nodeA.dispose();
  nodeB.dispose();

  const result = {
    model: dir.split("/").pop(),
    set: setPath.split("/").pop(),
    items: items.length,
    backend: nodeA.backend.name,
    recall: rates(plain).recall ?? {},
    two_hop: rates(plain).two_hop ?? {},
    resumed: { ...rates(resumed), identical_tokens: `${agree.raw.same}/${agree.raw.n}` },
    codecs: Object.fromEntries(
      CODECS.map((
        c,
      ) => [c.name, {
        ...rates(codecs[c.name]),
        same_tokens_as_uninterrupted: `${agree[c.name].same}/${agree[c.name].n}`,
      }]),
    ),
  };
  console.log(`\n${"".padEnd(14)} ${distances.map((d) => bucket(d).padStart(6)).join(" ")}`);
  const row = (label: string, t: Record<string, number> | undefined) =>
    console.log(
      `${label.padEnd(14)} ${
        distances.map((d) => (t?.[bucket(d)]?.toFixed(2) ?? "-").padStart(6)).join(" ")
      }`,
    );
  row("recall", result.recall);
  row("two-hop", result.two_hop);
  row("resumed recall", rates(resumed).recall);
  for (const c of CODECS) {
    row(c.name, rates(codecs[c.name]).recall);
  }
  console.log(JSON.stringify(result));
  return 0;
}

async function defaultSet(modelDir: string): Promise<string> {
  const candidates = [
    `${modelDir}/eval.jsonl`,
    `${modelDir}/eval.jsonl.gz`,
    fromFileUrl(new URL("../../tools/train/eval.jsonl", import.meta.url)),
    fromFileUrl(new URL("../../tools/train/eval.jsonl.gz", import.meta.url)),
  ];
  for (const c of candidates) {
    try {
      await Deno.stat(c);
      return c;
    } catch { /* next */ }
  }
  throw new CapsuleError(
    "invalid_argument",
    `no eval set found (looked for ${candidates.join(", ")}); pass --set`,
  );
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    if (e instanceof CapsuleError) {
      console.error(`error [${e.code}]: ${e.message}`);
      Deno.exit(1);
    }
    throw e;
  }
}
