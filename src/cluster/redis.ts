/**
 * The cluster's shared session store: a redis-server of its own on a free loopback port, with its
 * data directory and log inside the cluster's folder and no persistence (the cluster is throwaway).
 * @module
 */
import { CapsuleError } from "../errors.ts";
import { freePort, logTail, type ManagedProcess, sleep, spawnLogged } from "./process.ts";

/** A running redis-server. */
export interface RedisProcess {
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  readonly process: ManagedProcess;
}

/** The redis-server binary: `$REDIS_SERVER` or `redis-server` on PATH. */
export function redisBinary(): string {
  return Deno.env.get("REDIS_SERVER") || "redis-server";
}

/** Sends PING on a fresh connection; true on +PONG. */
export async function redisPing(port: number): Promise<boolean> {
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

/**
 * Starts redis-server in `dir` and waits for PING. Retries on another port when the chosen one was
 * taken; throws `cluster_start_failed` with the log otherwise.
 */
export async function startRedis(
  dir: string,
  opts: { port?: number; timeoutMs?: number } = {},
): Promise<RedisProcess> {
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const log = `${dir}/redis.log`;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = opts.port ?? freePort();
    const proc = await spawnLogged({
      name: "redis",
      command: redisBinary(),
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
        "",
      ],
      log,
    });
    const deadline = Date.now() + timeoutMs;
    while (!proc.exited() && Date.now() < deadline) {
      if (await redisPing(port)) return { url: `redis://127.0.0.1:${port}`, port, process: proc };
      await sleep(25);
    }
    await proc.stop("SIGKILL");
    const tail = await logTail(log);
    const portTaken = /Address already in use/i.test(tail);
    if (!portTaken || opts.port !== undefined) {
      throw new CapsuleError("cluster_start_failed", `redis-server did not become ready on port ${port}`, {
        component: "redis",
        log: tail,
      });
    }
  }
  throw new CapsuleError("cluster_start_failed", "redis-server: no free port after 5 attempts", {
    component: "redis",
    log: await logTail(log),
  });
}
