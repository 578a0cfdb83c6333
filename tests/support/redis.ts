/**
 * Throwaway redis-server for tests: started on a free loopback port in a temp dir, with no
 * persistence, and stopped (process awaited, dir removed) by `stop()`.
 *
 * When redis-server is not installed, tests may skip, except under CI (env `CI` set and not
 * "false"/"0"), where `.ci/run` installs it and a missing binary must fail the run.
 * @module
 */

import { redisBinary as binary, startRedis as startRedisProcess } from "../../src/cluster/redis.ts";

/** A running redis-server. */
export interface RedisServer {
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** Stops the server (SIGTERM, then waits for exit) and removes its temp dir. Idempotent. */
  stop(): Promise<void>;
}

/** True when running under CI, where redis-server is required. */
export function inCI(): boolean {
  const v = Deno.env.get("CI");
  return v !== undefined && v !== "" && v !== "false" && v !== "0";
}

/** Whether `redis-server` can be run here. */
export async function redisServerInstalled(): Promise<boolean> {
  try {
    const out = await new Deno.Command(binary(), { args: ["--version"], stdout: "null", stderr: "null" })
      .output();
    return out.success;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied) return false;
    throw e;
  }
}

/**
 * Value for `Deno.test({ ignore })`: true only when redis-server is missing outside CI. In CI a
 * missing server is not ignored, so {@linkcode startRedis} fails the test.
 */
export async function skipWithoutRedis(): Promise<boolean> {
  if (await redisServerInstalled()) return false;
  if (inCI()) return false;
  console.warn("redis-server not installed: skipping redis tests (they are required under CI)");
  return true;
}

/**
 * Starts a redis-server (on `port` when given, e.g. to restart one; else on a free port); throws
 * (with the log) if it cannot, including when it is not installed.
 */
export async function startRedis(port?: number): Promise<RedisServer> {
  if (!(await redisServerInstalled())) {
    throw new Error(
      `redis-server not found (${binary()}); install it (apt-get install -y redis-server)` +
        (inCI() ? ": it is required under CI" : ""),
    );
  }
  const dir = await Deno.makeTempDir({ prefix: "capsule-redis-" });
  try {
    const redis = await startRedisProcess(dir, { port });
    let stopped = false;
    return {
      url: redis.url,
      port: redis.port,
      async stop() {
        if (stopped) return;
        stopped = true;
        await redis.process.stop("SIGTERM");
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      },
    };
  } catch (e) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
}
