/**
 * A local Capsule cluster on loopback, the same topology as `deploy/compose.yaml`: one redis-server
 * as the shared session store, N service nodes, and nginx round-robin in front without
 * stickiness. Everything runs as child processes of the caller with configs and logs in one temp
 * folder; {@linkcode Cluster.stop} (or any child dying) takes the whole cluster down.
 * @module
 */
import { CapsuleError } from "../errors.ts";
import { type ManagedProcess, sleep } from "./process.ts";
import { startRedis } from "./redis.ts";
import { startNginx } from "./nginx.ts";
import { type NodeProcess, startNode } from "./node.ts";

/** Inputs of {@linkcode startCluster}. */
export interface ClusterOptions {
  /** Number of service nodes (≥ 1). */
  nodes: number;
  /** Model folder for every node (`--model`); omitted: the service's default model. */
  model?: string;
  /** Further service flags given to every node as they are (e.g. `["--backend", "cpu"]`). */
  nodeArgs?: string[];
  /** Shared store URL; omitted: the cluster starts its own redis-server. */
  store?: string;
  /** Load balancer port; omitted: a free one. */
  port?: number;
  /** Folder for configs and logs; omitted: a new temp folder. */
  dir?: string;
  /** Keep the folder after a clean stop (it is always kept after a failure). */
  keepLogs?: boolean;
  /** Per-node limit for becoming ready (default 180 s: model loading on a busy machine). */
  readyTimeoutMs?: number;
  /** How long a node may take to finish in-flight requests after SIGTERM (default 30 s). */
  stopGraceMs?: number;
  /** Extra environment for the nodes. */
  env?: Record<string, string>;
  /** Progress messages (default: none). */
  log?: (line: string) => void;
}

/** Why a cluster ended. */
export interface ClusterExit {
  /** `stopped`: {@linkcode Cluster.stop} was called; `failed`: a child exited on its own. */
  reason: "stopped" | "failed";
  /** For `failed`: which child, and its exit status. */
  component?: string;
  code?: number;
  signal?: string | null;
}

/** A running cluster. */
export interface Cluster {
  /** The load balancer: `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** The nodes, in upstream order. */
  readonly nodes: readonly NodeProcess[];
  /** The shared store URL the nodes use. */
  readonly store: string;
  /** Folder with nginx.conf, nginx-access.log, nginx-error.log, redis.log, node-<i>.log. */
  readonly dir: string;
  /** nginx access log: one line per request, with `upstream=<node address>`. */
  readonly accessLog: string;
  /**
   * Resolves when the cluster has ended: after {@linkcode Cluster.stop}, or after a child exited on
   * its own (the rest is then stopped too, and the folder kept).
   */
  readonly done: Promise<ClusterExit>;
  /** Stops everything: nginx (graceful), then the nodes (SIGTERM: they commit in-flight work), then redis. */
  stop(): Promise<void>;
}

/**
 * Starts redis-server (unless `store` is given), the nodes (in parallel) and nginx; resolves once
 * every node's `/readyz` is 200 and nginx forwards to them. On any failure everything already
 * started is stopped and a `cluster_start_failed` error is thrown (the log folder is kept).
 */
export async function startCluster(o: ClusterOptions): Promise<Cluster> {
  if (!Number.isInteger(o.nodes) || o.nodes < 1) {
    throw new CapsuleError("invalid_argument", `--nodes must be a positive integer, got ${o.nodes}`);
  }
  if (o.nodes > 1 && o.store?.startsWith("memory:")) {
    // Each node would hold its own private store: sessions could not move between nodes.
    throw new CapsuleError(
      "invalid_argument",
      "a memory: store is private to one node; use redis:// (the default)",
    );
  }
  const say = o.log ?? (() => {});
  const dir = o.dir ?? await Deno.makeTempDir({ prefix: "capsule-cluster-" });
  await Deno.mkdir(dir, { recursive: true });
  const stopGraceMs = o.stopGraceMs ?? 30_000;
  const started: { proc: ManagedProcess; signal: Deno.Signal; graceMs: number }[] = [];
  let stopping = false;
  const abort = new AbortController();
  let resolveDone!: (e: ClusterExit) => void;
  const done = new Promise<ClusterExit>((r) => resolveDone = r);

  // Reverse start order: the load balancer stops taking requests before the nodes drain.
  const stopAll = async () => {
    for (const s of [...started].reverse()) await s.proc.stop(s.signal, s.graceMs);
  };

  let stopPromise: Promise<void> | undefined;
  const stop = (exit: ClusterExit, keep: boolean): Promise<void> => {
    stopping = true;
    abort.abort();
    stopPromise ??= (async () => {
      await stopAll();
      if (!keep) await Deno.remove(dir, { recursive: true }).catch(() => {});
      resolveDone(exit);
    })();
    return stopPromise;
  };

  // Takes charge of a started child; one that came up after a stop began is stopped at once.
  const watch = async (proc: ManagedProcess, signal: Deno.Signal, graceMs: number) => {
    if (stopping) {
      await proc.stop(signal, graceMs);
      throw new CapsuleError("cluster_start_failed", `cluster stopped while ${proc.name} was starting`);
    }
    started.push({ proc, signal, graceMs });
    proc.status.then((s) => {
      if (stopping) return;
      say(
        `${proc.name} exited on its own (code ${s.code}${
          s.signal ? `, ${s.signal}` : ""
        }); stopping the cluster`,
      );
      stop({ reason: "failed", component: proc.name, code: s.code, signal: s.signal }, true);
    });
  };

  try {
    let store = o.store;
    if (store === undefined) {
      const redis = await startRedis(dir);
      // redis holds no state worth keeping here (no persistence), so SIGTERM is enough.
      await watch(redis.process, "SIGTERM", 10_000);
      store = redis.url;
      say(`redis   ${redis.url} (log ${redis.process.log})`);
    }
    const args = [...(o.model !== undefined ? ["--model", o.model] : []), ...(o.nodeArgs ?? [])];
    const readyTimeoutMs = o.readyTimeoutMs ?? 180_000;
    const results = await Promise.allSettled(
      Array.from(
        { length: o.nodes },
        (_, i) =>
          startNode({
            index: i + 1,
            dir,
            store: store!,
            args,
            readyTimeoutMs,
            env: o.env,
            signal: abort.signal,
          })
            .then(async (n) => {
              await watch(n.process, "SIGTERM", stopGraceMs);
              say(`${n.name}  ${n.url} (log ${n.process.log})`);
              return n;
            }, (e) => {
              // One node failing dooms the cluster: stop waiting for the others.
              abort.abort();
              throw e;
            }),
      ),
    );
    // The first real failure (not the "abandoned" follow-ups it caused) is the one to report.
    const failures = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) =>
      r.reason
    );
    if (failures.length) {
      throw failures.find((e) => !(e instanceof CapsuleError && e.details?.abandoned)) ?? failures[0];
    }
    const nodes = results.map((r) => (r as PromiseFulfilledResult<NodeProcess>).value);
    const nginx = await startNginx(dir, nodes.map((n) => n.port), { port: o.port });
    // SIGQUIT: nginx's graceful shutdown (finish in-flight requests, accept no new ones).
    await watch(nginx.process, "SIGQUIT", stopGraceMs);
    await waitThroughBalancer(nginx.url, nodes.length);
    say(`nginx   ${nginx.url} (logs ${nginx.accessLog})`);
    const cluster: Cluster = {
      url: nginx.url,
      nodes,
      store,
      dir,
      accessLog: nginx.accessLog,
      done,
      stop: () => stop({ reason: "stopped" }, o.keepLogs ?? false),
    };
    if (stopping) {
      // A child died while the others were still starting: report it as a start failure.
      await stopPromise;
      throw new CapsuleError(
        "cluster_start_failed",
        `a cluster process exited during start (logs in ${dir})`,
        { dir },
      );
    }
    return cluster;
  } catch (e) {
    await stop({ reason: "failed" }, true);
    if (e instanceof CapsuleError) {
      if (e.code === "cluster_start_failed") {
        throw new CapsuleError(e.code, `${e.message} (logs in ${dir})`, { ...e.details, dir }, { cause: e });
      }
      throw e;
    }
    throw new CapsuleError("cluster_start_failed", `cluster start failed: ${e} (logs in ${dir})`, { dir }, {
      cause: e,
    });
  }
}

/** Waits until `/readyz` through the load balancer answered 200 once per node (bounded). */
async function waitThroughBalancer(url: string, nodes: number): Promise<void> {
  let ok = 0;
  for (let i = 0; i < 200 && ok < nodes; i++) {
    try {
      const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(5000) });
      await res.body?.cancel();
      if (res.status === 200) {
        ok++;
        continue;
      }
    } catch {
      // not forwarding yet
    }
    await sleep(50);
  }
  if (ok < nodes) {
    throw new CapsuleError("cluster_start_failed", `load balancer at ${url} does not reach the nodes`);
  }
}
