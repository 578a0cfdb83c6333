/**
 * Multi-node tests with real processes on loopback: one redis-server and Capsule nodes sharing it.
 * A session moves between nodes on every request and must behave exactly like one uninterrupted
 * run; a node killed mid-stream loses nothing that was committed and duplicates nothing.
 */
import { assert, assertEquals } from "@std/assert";
import { type RedisServer, skipWithoutRedis, startRedis } from "../support/redis.ts";
import { makeTestModelDir, removeTestModelDir } from "../support/model.ts";
import { api, type NodeProc, sseEvents, startNode } from "./nodes.ts";

const PROMPT = [21, 7, 99, 130, 4, 250, 61, 18];
const GREEDY = { temperature: 0, ignore_eos: true };
const SAMPLED = { temperature: 0.8, top_k: 50, top_p: 0.9, seed: 4242, ignore_eos: true };

Deno.test({
  name: "three nodes on one redis: sessions move between nodes on every request",
  ignore: await skipWithoutRedis(),
  async fn(t) {
    let redis: RedisServer | undefined;
    const nodes: NodeProc[] = [];
    const model = await makeTestModelDir();
    try {
      redis = await startRedis();
      const start = (name: string) => startNode({ name, model, store: redis!.url });
      nodes.push(...await Promise.all(["A", "B", "C"].map(start)));
      const [A, B, C] = nodes.map((n) => n.url);

      /** One uninterrupted run on one node: the reference. */
      const reference = async (params: object, n: number) => {
        const s = await api(A, "POST", "/v1/sessions", { input_ids: PROMPT });
        const g = await api(A, "POST", `/v1/sessions/${s.json.id}/generate`, { ...params, max_tokens: n });
        assertEquals(g.status, 200);
        return g.json.output_ids as number[];
      };

      for (const [label, params] of [["greedy", GREEDY], ["seeded sampling", SAMPLED]] as const) {
        await t.step(`create on A, generate on B, generate on C equals one run (${label})`, async () => {
          const want = await reference(params, 16);
          const s = await api(A, "POST", "/v1/sessions", { input_ids: PROMPT });
          assertEquals(s.status, 201);
          const g1 = await api(B, "POST", `/v1/sessions/${s.json.id}/generate`, { ...params, max_tokens: 7 });
          const g2 = await api(C, "POST", `/v1/sessions/${s.json.id}/generate`, { ...params, max_tokens: 9 });
          assertEquals([g1.status, g2.status], [200, 200]);
          assertEquals([...g1.json.output_ids, ...g2.json.output_ids], want);
          assertEquals(g2.json.version, 3);
          const all = await api(A, "GET", `/v1/sessions/${s.json.id}?include=token_ids`);
          assertEquals(all.json.token_ids, [...PROMPT, ...want]);
        });
      }

      await t.step("append on B, stream on C, fork on A: each node sees the latest version", async () => {
        const s = await api(A, "POST", "/v1/sessions", { prompt: "The capsule" });
        const ap = await api(B, "POST", `/v1/sessions/${s.json.id}/append`, { prompt: " moves" });
        assertEquals(ap.json.version, 2);
        const res = await fetch(`${C}/v1/sessions/${s.json.id}/generate`, {
          method: "POST",
          body: JSON.stringify({ ...GREEDY, max_tokens: 6, stream: true }),
        });
        const events = [];
        for await (const e of sseEvents(res)) events.push(e);
        const done = JSON.parse(events.at(-1)!.data);
        assertEquals(events.at(-1)!.event, "done");
        assertEquals(done.version, 3);
        assertEquals(
          events.filter((e) => e.event === "token").map((e) => JSON.parse(e.data).id),
          done.output_ids,
        );
        const f = await api(A, "POST", `/v1/sessions/${s.json.id}/fork`);
        assertEquals([f.status, f.json.tokens], [201, done.tokens]);
      });

      await t.step("requests racing on one version across nodes: exactly one commits", async () => {
        const s = await api(A, "POST", "/v1/sessions", { input_ids: PROMPT });
        const racers = await Promise.all(
          [A, B, C].map((url) =>
            api(url, "POST", `/v1/sessions/${s.json.id}/generate`, {
              ...GREEDY,
              max_tokens: 5,
              if_version: 1,
            })
          ),
        );
        assertEquals(
          racers.filter((r) => r.status === 200).length,
          1,
          JSON.stringify(racers.map((r) => r.status)),
        );
        for (const r of racers.filter((r) => r.status !== 200)) {
          assertEquals([r.status, r.json.code], [409, "version_conflict"]);
        }
        assertEquals((await api(B, "GET", `/v1/sessions/${s.json.id}`)).json.version, 2);
      });

      await t.step(
        "kill -9 of a node mid-stream: the session continues elsewhere, nothing lost or duplicated",
        async () => {
          const N = 300;
          const want = await reference(SAMPLED, N);
          const D = await start("D");
          nodes.push(D);
          const s = await api(A, "POST", "/v1/sessions", { input_ids: PROMPT });
          const res = await fetch(`${D.url}/v1/sessions/${s.json.id}/generate`, {
            method: "POST",
            body: JSON.stringify({ ...SAMPLED, max_tokens: N, stream: true }),
          });
          const received: number[] = [];
          try {
            for await (const e of sseEvents(res)) {
              if (e.event !== "token") continue;
              received.push(JSON.parse(e.data).id);
              if (received.length === 5) D.child.kill("SIGKILL");
            }
          } catch {
            // the connection dies with the node
          }
          const st = await D.stop();
          assertEquals(st.signal, "SIGKILL");
          assert(received.length >= 5);
          // What the client saw is the start of the uninterrupted run.
          assertEquals(received, want.slice(0, received.length));
          const now = await api(B, "GET", `/v1/sessions/${s.json.id}?include=token_ids`);
          assertEquals(now.status, 200);
          if (now.json.version === 1) {
            // Not committed (the usual case): the last committed version is the prompt; continue on B.
            assertEquals(now.json.token_ids, PROMPT);
            const again = await api(B, "POST", `/v1/sessions/${s.json.id}/generate`, {
              ...SAMPLED,
              max_tokens: N,
            });
            assertEquals(again.json.version, 2);
            assertEquals(again.json.output_ids, want);
          } else {
            // The node finished and committed just before it died: the commit is whole.
            assertEquals(now.json.version, 2);
          }
          const final = await api(C, "GET", `/v1/sessions/${s.json.id}?include=token_ids`);
          assertEquals(final.json.token_ids, [...PROMPT, ...want], "no lost or duplicated tokens");
        },
      );

      await t.step("SIGTERM mid-stream: the node finishes the stream, commits, and exits 0", async () => {
        const E = await start("E");
        nodes.push(E);
        const s = await api(A, "POST", "/v1/sessions", { input_ids: PROMPT });
        const res = await fetch(`${E.url}/v1/sessions/${s.json.id}/generate`, {
          method: "POST",
          body: JSON.stringify({ ...GREEDY, max_tokens: 200, stream: true }),
        });
        let tokens = 0;
        let done: { version: number; output_ids: number[] } | null = null;
        for await (const e of sseEvents(res)) {
          if (e.event === "token" && ++tokens === 1) E.child.kill("SIGTERM");
          if (e.event === "done") done = JSON.parse(e.data);
        }
        assert(done, "the stream completed");
        assertEquals(done.output_ids.length, 200);
        assertEquals(done.version, 2);
        assertEquals((await E.status).code, 0, E.log());
        assertEquals((await api(A, "GET", `/v1/sessions/${s.json.id}`)).json.version, 2);
      });
    } finally {
      await Promise.all(nodes.map((n) => n.stop("SIGKILL")));
      await redis?.stop();
      await removeTestModelDir(model);
    }
  },
});
