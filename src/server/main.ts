/**
 * `deno task start`: one Capsule node. Loads the model, opens the store, serves the API, and on
 * SIGTERM/SIGINT stops accepting connections, lets in-flight requests finish (and commit), then
 * exits. Configuration mistakes exit with status 2 and a message saying what to fix.
 * @module
 */
import { createApp } from "./app.ts";
import { ConfigError, isConfigProblem, parseConfig, USAGE } from "./config.ts";
import { Metrics } from "./metrics.ts";
import { openNode } from "./node.ts";
import { problemResponse } from "./problems.ts";

function fail(message: string, code: number): never {
  console.error(`capsule: ${message}`);
  Deno.exit(code);
}

async function main(): Promise<void> {
  const config = parseConfig(Deno.args, Deno.env.toObject());
  if (config === null) {
    console.log(USAGE);
    return;
  }
  const { auth, engine, store, stopMaintenance } = await openNode(config, "capsule");

  let draining = false;
  const app = createApp({
    engine,
    store,
    auth,
    limits: config.limits,
    metrics: new Metrics(),
    ...(config.capsuleKey ? { capsuleKey: config.capsuleKey } : {}),
    isDraining: () => draining,
  });

  const server = Deno.serve({
    hostname: config.host,
    port: config.port,
    onListen: (addr) => {
      const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
      console.log(`listening on http://${host}:${addr.port}`);
      console.error(
        `capsule: model ${engine.model.id} on ${engine.backend.name}, store ${
          config.storeUrl.replace(/\/\/[^@/]*@/, "//***@")
        }, ` +
          (auth.enabled ? `${auth.size} token(s)` : "no auth (single tenant 'default')") +
          (config.capsuleKey ? ", capsules sealed" : ""),
      );
    },
    onError: (e) => {
      console.error("capsule: request failed:", e);
      return problemResponse(e);
    },
  }, app.fetch);

  const stop = async (signal: string) => {
    if (draining) {
      console.error(`capsule: ${signal} again, exiting now`);
      Deno.exit(1);
    }
    draining = true;
    console.error(`capsule: ${signal}: finishing in-flight requests`);
    // Stops accepting connections and resolves once every in-flight response has completed.
    await server.shutdown();
    await stopMaintenance();
    await store.close();
    engine.dispose();
    console.error("capsule: stopped");
    Deno.exit(0);
  };
  for (const sig of ["SIGTERM", "SIGINT"] as const) Deno.addSignalListener(sig, () => void stop(sig));
  await server.finished;
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    if (isConfigProblem(e)) fail((e as Error).message, 2);
    if (e instanceof ConfigError) fail(e.message, 2);
    if (e instanceof Deno.errors.AddrInUse) fail(`${(e as Error).message}: choose another --port`, 2);
    console.error(e);
    Deno.exit(1);
  }
}
