/**
 * Throwaway redis-server for tests: started on a free loopback port in a temp dir, with no
 * persistence, and stopped (process awaited, dir removed) by `stop()`.
 *
 * When redis-server is not installed, tests may skip, except under CI (env `CI` set and not
 * "false"/"0"), where `.ci/run` installs it and a missing binary must fail the run.
 * @module
 */

/** A running redis-server. */
export interface RedisServer {
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** Stops the server (SIGTERM, then waits for exit) and removes its temp dir. Idempotent. */
  stop(): Promise<void>;
}

/** The redis-server binary: `$REDIS_SERVER` or `redis-server` on PATH. */
function binary(): string {
  return Deno.env.get("REDIS_SERVER") || "redis-server";
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

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Sends PING on a fresh connection; true on +PONG. */
async function ping(port: number): Promise<boolean> {
  let conn: Deno.TcpConn | undefined;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(new TextEncoder().encode("PING\r\n"));
    const buf = new Uint8Array(64);
    const n = await conn.read(buf);
    return n !== null && new TextDecoder().decode(buf.subarray(0, n)).startsWith("+PONG");
  } catch {
    return false;
  } finally {
    conn?.close();
  }
}

/** Starts one attempt; null when the port was taken (the server exited) before it became ready. */
async function tryStart(dir: string, fixedPort?: number): Promise<RedisServer | null> {
  const port = fixedPort ?? freePort();
  const child = new Deno.Command(binary(), {
    args: [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--save",
      "",
      "--appendonly",
      "no",
      "--daemonize",
      "no",
      "--logfile",
      `${dir}/redis.log`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  // Wait for readiness by asking the server itself; bounded so a broken binary cannot hang tests.
  for (let i = 0; i < 400 && !exited; i++) {
    if (await ping(port)) {
      let stopped = false;
      return {
        url: `redis://127.0.0.1:${port}`,
        port,
        async stop() {
          if (stopped) return;
          stopped = true;
          if (!exited) child.kill("SIGTERM");
          await status;
          await Deno.remove(dir, { recursive: true }).catch(() => {});
        },
      };
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  if (!exited) child.kill("SIGKILL");
  await status;
  return null;
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
  for (let attempt = 0; attempt < 5; attempt++) {
    const server = await tryStart(dir, port);
    if (server) return server;
  }
  const log = await Deno.readTextFile(`${dir}/redis.log`).catch(() => "(no log)");
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  throw new Error(`redis-server did not start after 5 attempts; last log:\n${log}`);
}
