/**
 * A small agent whose only memory is a session in the Capsule sidecar.
 *
 * Each step the agent observes something, remembers it (prefill, no generation), thinks about it
 * (a short generation, committed to the memory) and saves a checkpoint `step-NNNN`. The agent keeps
 * nothing else: when it is killed and started again — the sidecar too — it opens its memory by
 * name, finds its last checkpoint, rewinds any step it did not finish, and carries on. Because the
 * thinking is greedy, an agent that was killed any number of times ends with exactly the memory of
 * one that never was.
 *
 * ```sh
 * deno task sidecar --socket /tmp/capsule.sock &          # terminal 1
 * deno run -A examples/agent-memory.ts --socket /tmp/capsule.sock --name ada --steps 5
 * ```
 *
 * Options: `--socket PATH` or `--url http://127.0.0.1:PORT` (default: the sidecar's default
 * socket), `--name NAME` (default "agent"), `--steps N` (run until N steps are in memory, default
 * 5), `--think N` (tokens per thought, default 6), `--pause-ms N` (between steps), `--token T`
 * (bearer token), `--crash-after-remember K` (exit abruptly in step K, after remembering and
 * before thinking: a deterministic stand-in for `kill -9`).
 * @module
 */
import { parseArgs } from "node:util";
import { CapsuleClient, type CheckpointSummary, ConnectionError } from "../mod.ts";
import { defaultSocketPath } from "../src/sidecar/config.ts";

/** What the agent sees at step `n` (deterministic, so runs can be compared). */
export function observe(n: number): string {
  const things = ["a red door", "a locked chest", "a brass key", "a sleeping cat", "a map of the hills"];
  return `step ${n}: I see ${things[(n * 7) % things.length]} in room ${(n * 13) % 17}`;
}

/** The checkpoint name of step `n`. */
export function stepName(n: number): string {
  return `step-${String(n).padStart(4, "0")}`;
}

/** The step number of a checkpoint name, or null for other checkpoints. */
function stepOf(c: CheckpointSummary): number | null {
  const m = /^step-(\d{4,})$/.exec(c.name);
  return m ? Number(m[1]) : null;
}

/** Waits until the sidecar answers (it may be restarting), up to `timeoutMs`. */
async function waitForSidecar(client: CapsuleClient, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await client.health();
      return;
    } catch (e) {
      if (!(e instanceof ConnectionError) || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      socket: { type: "string" },
      url: { type: "string" },
      token: { type: "string" },
      name: { type: "string", default: "agent" },
      steps: { type: "string", default: "5" },
      think: { type: "string", default: "6" },
      "pause-ms": { type: "string", default: "0" },
      "crash-after-remember": { type: "string" },
    },
  });
  const target = values.url ?? `unix:${values.socket ?? defaultSocketPath(Deno.env.toObject())}`;
  const client = new CapsuleClient({ baseUrl: target, ...(values.token ? { token: values.token } : {}) });
  const name = values.name;
  const steps = Number(values.steps);
  const think = Number(values.think);
  const pause = Number(values["pause-ms"]);
  const crashAt = values["crash-after-remember"] === undefined ? -1 : Number(values["crash-after-remember"]);

  await waitForSidecar(client, 10_000);
  const opened = await client.open(name);
  if (opened.created) console.log(`memory ${name}: new`);

  // Where did we get to? The last step checkpoint is the last step that finished.
  const done = (await client.checkpoints(name)).filter((c) => stepOf(c) !== null)
    .sort((a, b) => stepOf(a)! - stepOf(b)!);
  // A checkpoint of the memory before any step, so even an unfinished first step can be rewound.
  if (done.length === 0) done.push(await client.checkpoint(name, stepName(0), { ifVersion: opened.version }));
  const last = done.at(-1)!;
  const current = await client.info(name);
  if (current.tokens !== last.tokens) {
    // Killed in the middle of a step: forget its half-done work and redo it.
    await client.rewind(name, last.name);
    console.log(`memory ${name}: rewound an unfinished step to ${last.name}`);
  }
  const first = stepOf(last)! + 1;
  if (first > 1) console.log(`memory ${name}: resuming after step ${first - 1} (${last.tokens} tokens)`);

  for (let n = first; n <= steps; n++) {
    const seen = observe(n);
    await client.remember(name, `\nObservation ${seen}.\nThought:`);
    if (n === crashAt) {
      console.log(`step ${n}: crashing after remembering`);
      Deno.exit(70); // no cleanup, as if killed
    }
    let thought = "";
    const stream = client.recall(name, { maxTokens: think, ignoreEos: true });
    for await (const t of stream) thought += t.text;
    const r = await stream.result;
    await client.checkpoint(name, stepName(n), { ifVersion: r.version });
    console.log(
      `step ${n} done: ${JSON.stringify(seen)} -> ${
        JSON.stringify(thought)
      } (version ${r.version}, ${r.tokens} tokens)`,
    );
    if (pause > 0 && n < steps) await new Promise((res) => setTimeout(res, pause));
  }
  const end = await client.info(name);
  console.log(`memory ${name}: ${steps} steps, version ${end.version}, ${end.tokens} tokens`);
  client.close();
}

if (import.meta.main) await main();
