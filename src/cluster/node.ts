/**
 * One Capsule service node of the local cluster: `deno run -A --unstable-kv src/server/main.ts`
 * on a loopback port, ready once `/readyz` answers 200 (the model is loaded).
 * @module
 */
import { CapsuleError } from "../errors.ts";
import { freePort, logTail, type ManagedProcess, sleep, spawnLogged } from "./process.ts";

/** The service entry point the nodes run. */
export const SERVER_MAIN: string = new URL("../server/main.ts", import.meta.url).pathname;

/** A node that answered `/readyz`. */
export interface NodeProcess {
  /** `node-1`, `node-2`, … */
  readonly name: string;
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  readonly process: ManagedProcess;
}

/** Inputs of {@linkcode startNode}. */
export interface NodeOptions {
  /** 1-based index, used in the name and the log file name. */
  index: number;
  /** Folder of the node's log. */
  dir: string;
  /** Store URL every node shares. */
  store: string;
  /** Flags passed to the service as they are (`--model DIR`, `--backend cpu`, …). */
  args: string[];
  /** Give up waiting for `/readyz` after this long. */
  readyTimeoutMs: number;
  /** Extra environment (merged over the cluster's own). */
  env?: Record<string, string>;
  /** Aborting stops the node and makes the start fail (another part of the cluster failed). */
  signal?: AbortSignal;
}

/** GET `/readyz`; true on 200. */
async function ready(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) });
    await res.body?.cancel();
    return res.status === 200;
  } catch {
    return false;
  }
}

/** The command line of a node (without the executable). */
export function nodeArgs(o: { port: number; store: string; args: string[] }): string[] {
  return [
    "run",
    "-A",
    "--unstable-kv",
    SERVER_MAIN,
    ...o.args,
    "--host",
    "127.0.0.1",
    "--port",
    String(o.port),
    "--store",
    o.store,
  ];
}

/**
 * Starts a node and waits until `/readyz` is 200. Throws `cluster_start_failed` (with the log tail)
 * when the node exits or is not ready in time; a port taken meanwhile is retried with another.
 */
export async function startNode(o: NodeOptions): Promise<NodeProcess> {
  const name = `node-${o.index}`;
  const log = `${o.dir}/${name}.log`;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = freePort();
    const url = `http://127.0.0.1:${port}`;
    const proc = await spawnLogged({
      name,
      command: Deno.execPath(),
      args: nodeArgs({ port, store: o.store, args: o.args }),
      log,
      env: { NO_COLOR: "1", CAPSULE_NODE_ID: name, ...o.env },
    });
    const deadline = Date.now() + o.readyTimeoutMs;
    while (!proc.exited() && Date.now() < deadline) {
      if (o.signal?.aborted) {
        await proc.stop("SIGKILL");
        throw new CapsuleError(
          "cluster_start_failed",
          `${name}: start abandoned (another part of the cluster failed)`,
          {
            component: name,
            abandoned: true,
          },
        );
      }
      if (await ready(url)) return { name, url, port, process: proc };
      await sleep(100);
    }
    const timedOut = !proc.exited();
    await proc.stop("SIGKILL");
    const tail = await logTail(log);
    if (timedOut || !/AddrInUse|address already in use/i.test(tail)) {
      throw new CapsuleError(
        "cluster_start_failed",
        timedOut
          ? `${name} was not ready after ${Math.round(o.readyTimeoutMs / 1000)} s (see ${log})`
          : `${name} exited before it was ready (see ${log})`,
        { component: name, log: tail },
      );
    }
  }
  throw new CapsuleError("cluster_start_failed", `${name}: no free port after 5 attempts`, {
    component: name,
    log: await logTail(log),
  });
}
