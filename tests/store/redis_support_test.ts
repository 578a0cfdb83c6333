import { assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { redisServerInstalled, skipWithoutRedis, startRedis } from "../support/redis.ts";

/** Runs `fn` with environment overrides (undefined = unset), restoring them afterwards. */
async function withEnv(vars: Record<string, string | undefined>, fn: () => Promise<void>): Promise<void> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, Deno.env.get(k)]));
  const apply = (v: Record<string, string | undefined>) => {
    for (const [k, x] of Object.entries(v)) x === undefined ? Deno.env.delete(k) : Deno.env.set(k, x);
  };
  apply(vars);
  try {
    await fn();
  } finally {
    apply(saved);
  }
}

const missing = "/nonexistent/redis-server-for-test";

Deno.test("redis tests skip without redis-server outside CI", async () => {
  await withEnv({ REDIS_SERVER: missing, CI: undefined }, async () => {
    assertEquals(await redisServerInstalled(), false);
    assertEquals(await skipWithoutRedis(), true);
  });
});

Deno.test("under CI a missing redis-server fails the redis tests instead of skipping them", async () => {
  await withEnv({ REDIS_SERVER: missing, CI: "true" }, async () => {
    assertEquals(await skipWithoutRedis(), false);
    const e = await assertRejects(() => startRedis());
    assertStringIncludes(e.message, "required under CI");
  });
});
