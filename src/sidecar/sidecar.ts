/**
 * The agent memory sidecar: the service's v1 API plus the memory routes, served on a Unix socket
 * (default) or on localhost, in the agent's own machine. Sessions live in the store (by default an
 * embedded Deno KV file), so they outlive both the sidecar and the agent.
 * @module
 */
import type { Hono } from "hono";
import { type AppEnv, createApp } from "../server/app.ts";
import type { Auth } from "../server/auth.ts";
import { type Limits, resolveLimits } from "../server/limits.ts";
import type { Metrics } from "../server/metrics.ts";
import type { Engine } from "../engine/engine.ts";
import type { SessionStore } from "../store/types.ts";
import { CapsuleError } from "../errors.ts";
import { registerMemoryRoutes } from "./routes.ts";

/** What the sidecar app is built from. */
export interface SidecarAppOptions {
  /** The loaded model. */
  engine: Engine;
  /** Where sessions and checkpoints are kept. */
  store: SessionStore;
  /** Bearer tokens → tenants; omitted = open (the socket's file mode is the access control). */
  auth?: Auth;
  /** Request limits (the service's defaults otherwise). */
  limits?: Partial<Limits>;
  /** Prometheus metrics registry (a new one otherwise). */
  metrics?: Metrics;
}

/** The service's app with the memory routes added. */
export function createSidecarApp(opts: SidecarAppOptions): Hono<AppEnv> {
  const app = createApp({
    engine: opts.engine,
    store: opts.store,
    ...(opts.auth ? { auth: opts.auth } : {}),
    ...(opts.limits ? { limits: opts.limits } : {}),
    ...(opts.metrics ? { metrics: opts.metrics } : {}),
  });
  const limits = resolveLimits(opts.limits, opts.engine.model.config.maxPositionEmbeddings);
  registerMemoryRoutes(app, { engine: opts.engine, store: opts.store, maxBodyBytes: limits.maxBodyBytes });
  return app;
}

/** Where to listen: a Unix socket path, or a localhost port (0 = any free port). */
export type Listen = { socket: string } | { port: number; host?: string };

/** Options of {@link startSidecar}. */
export type SidecarOptions = SidecarAppOptions & { listen: Listen };

/** A running sidecar. */
export interface Sidecar {
  /** How clients reach it: `unix:/path/to.sock` or `http://127.0.0.1:PORT` (a `CapsuleClient` target). */
  readonly url: string;
  /** Answers a request in-process, without the network (the same handler the server runs). */
  fetch(request: Request): Promise<Response>;
  /** Stops accepting connections, waits for in-flight requests, removes the socket file. */
  shutdown(): Promise<void>;
  /** Settles when the server has stopped. */
  readonly finished: Promise<void>;
}

/**
 * Makes `path` free for a new socket. A socket file nobody listens on is what a killed sidecar
 * leaves behind, and is removed; a live one means another sidecar runs there (`invalid_argument`),
 * and anything that is not a socket is never deleted.
 */
export async function claimSocketPath(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  if (!info.isSocket) {
    throw new CapsuleError("invalid_argument", `${path} exists and is not a socket; choose another --socket`);
  }
  let conn: Deno.UnixConn | null = null;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch {
    // Nobody listens: a leftover of a sidecar that did not shut down cleanly.
    await Deno.remove(path).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
    return;
  }
  conn.close();
  throw new CapsuleError(
    "invalid_argument",
    `another process is serving ${path}; stop it or choose another --socket`,
  );
}

/** Starts serving; resolves once it listens. */
export async function startSidecar(opts: SidecarOptions): Promise<Sidecar> {
  const app = createSidecarApp(opts);
  const onError = (e: unknown) => {
    console.error("capsule sidecar: request failed:", e);
    return new Response("internal error", { status: 500 });
  };
  if ("socket" in opts.listen) {
    const path = opts.listen.socket;
    const dir = path.replace(/\/[^/]*$/, "");
    if (dir !== path && dir !== "") await Deno.mkdir(dir, { recursive: true });
    await claimSocketPath(path);
    const listening = Promise.withResolvers<void>();
    const server = Deno.serve({ path, onListen: () => listening.resolve(), onError }, app.fetch);
    await listening.promise;
    // Only the agent's user may talk to its memory.
    await Deno.chmod(path, 0o600);
    let stopped: Promise<void> | null = null;
    return {
      url: `unix:${path}`,
      fetch: async (req) => await app.fetch(req),
      finished: server.finished,
      shutdown: () =>
        stopped ??= (async () => {
          await server.shutdown();
          await Deno.remove(path).catch(() => {});
        })(),
    };
  }
  const host = opts.listen.host ?? "127.0.0.1";
  const listening = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve(
    { hostname: host, port: opts.listen.port, onListen: (a) => listening.resolve(a), onError },
    app.fetch,
  );
  const addr = await listening.promise;
  const shown = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  let stopped: Promise<void> | null = null;
  return {
    url: `http://${shown}:${addr.port}`,
    fetch: async (req) => await app.fetch(req),
    finished: server.finished,
    shutdown: () => stopped ??= server.shutdown(),
  };
}
