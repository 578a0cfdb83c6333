/**
 * A server restores each request's session from its cached snapshot and snapshots it again at the
 * end; with residency handoff those copies reuse the GPU slot instead of uploading the whole state
 * per request, and the tokens and states are exactly those of a fresh upload.
 */
import { assert, assertEquals } from "@std/assert";
import { Session } from "../../src/engine/session.ts";
import { createState } from "../../src/engine/state.ts";
import { assertSameState, collectTokens as collect, hasGpu, openFixture } from "./helpers.ts";

const sampling = { temperature: 0.7, topK: 20, topP: 0.95, seed: 5, ignoreEos: true };

Deno.test({
  name: "a snapshot handed its GPU copy resumes without an upload and equals a fresh upload bit for bit",
  ignore: !hasGpu,
  async fn() {
    const { backend } = await openFixture("qwen3_5-tiny");
    try {
      const first = new Session(backend);
      await first.append(Array.from({ length: 37 }, (_, i) => (i * 31 + 7) % 200));
      await collect(first.generate({ maxTokens: 4, ...sampling }));
      const snap = first.snapshot({ moveResidency: true });
      const uploads = backend.uploads, handoffs = backend.handoffs;
      assertEquals(handoffs > 0, true, "the final snapshot took the session's GPU copy");

      const hot = new Session(backend, snap, { adoptResidency: true });
      assertEquals(backend.handoffs, handoffs + 1);
      const hotTokens = await collect(hot.generate({ maxTokens: 6, ...sampling }));
      assertEquals(backend.uploads, uploads, "no upload for the adopted copy");

      // The snapshot gave its copy away: restoring it again uploads it, and must give the same run.
      const cold = new Session(backend, snap);
      const coldTokens = await collect(cold.generate({ maxTokens: 6, ...sampling }));
      assertEquals(backend.uploads, uploads + 1);
      assertEquals(hotTokens, coldTokens);
      assertSameState(hot.snapshot().state, cold.snapshot().state, "adopted vs uploaded");
    } finally {
      backend.dispose();
    }
  },
});

Deno.test({
  name: "residency moves only from a resident, idle, current state to a same-position copy",
  ignore: !hasGpu,
  async fn() {
    const { backend } = await openFixture("qwen3_5-tiny");
    try {
      const loose = createState(backend.config);
      assert(!backend.moveResidency(loose, createState(backend.config)), "not resident");
      const s = new Session(backend);
      await s.append([1, 2, 3, 4, 5]);
      const snap = s.snapshot();
      const other = createState(backend.config);
      assert(!backend.moveResidency(snap.state, other), "the copy is not resident; nothing to move");
      const before = backend.handoffs;
      const moved = s.snapshot({ moveResidency: true });
      assertEquals(backend.handoffs, before + 1);
      assert(!backend.moveResidency(moved.state, moved.state), "not onto itself");
      const shorter = createState(backend.config);
      assert(!backend.moveResidency(moved.state, shorter), "not onto a state at another position");
    } finally {
      backend.dispose();
    }
  },
});
