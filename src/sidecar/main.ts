/**
 * `deno task sidecar`: the agent memory sidecar. Loads the model, opens the store (an embedded
 * Deno KV file by default), serves on a Unix socket or localhost, and prints one line
 * `listening on <url>` once it accepts requests. SIGTERM/SIGINT finish in-flight requests (their
 * commits included) and remove the socket. Configuration mistakes exit with status 2.
 * @module
 */
import { ConfigError, isConfigProblem } from "../server/config.ts";
import { openNode } from "../server/node.ts";
import { parseSidecarConfig, SIDECAR_USAGE } from "./config.ts";
import { startSidecar } from "./sidecar.ts";

async function main(): Promise<void> {
  const config = parseSidecarConfig(Deno.args, Deno.env.toObject());
  if (config === null) {
    console.log(SIDECAR_USAGE);
    return;
  }
  const { auth, engine, store, stopMaintenance } = await openNode(config, "capsule sidecar", async () => {
    if (config.dataDir !== null) await Deno.mkdir(config.dataDir, { recursive: true });
  });
  const sidecar = await startSidecar({ engine, store, auth, listen: config.listen });
  console.log(`listening on ${sidecar.url}`);
  console.error(
    `capsule sidecar: model ${engine.model.id} on ${engine.backend.name}, store ${config.storeUrl}` +
      (auth.enabled ? `, ${auth.size} token(s)` : ""),
  );

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) Deno.exit(1);
    stopping = true;
    console.error(`capsule sidecar: ${signal}: finishing in-flight requests`);
    await sidecar.shutdown();
    await stopMaintenance();
    await store.close();
    engine.dispose();
    Deno.exit(0);
  };
  for (const sig of ["SIGTERM", "SIGINT"] as const) Deno.addSignalListener(sig, () => void stop(sig));
  await sidecar.finished;
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    if (e instanceof ConfigError || isConfigProblem(e)) {
      console.error(`capsule sidecar: ${(e as Error).message}`);
      Deno.exit(2);
    }
    console.error(e);
    Deno.exit(1);
  }
}
