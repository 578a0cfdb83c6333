/**
 * `deno task sidecar`: the agent memory sidecar. Loads the model, opens the store (an embedded
 * Deno KV file by default), serves on a Unix socket or localhost, and prints one line
 * `listening on <url>` once it accepts requests. SIGTERM/SIGINT finish in-flight requests (their
 * commits included) and remove the socket. Configuration mistakes exit with status 2.
 * @module
 */
import { Engine } from "../engine/engine.ts";
import { maintainStore, openStore } from "../store/mod.ts";
import type { SessionStore } from "../store/types.ts";
import { Auth } from "../server/auth.ts";
import { checkModelDir, ConfigError, isConfigProblem } from "../server/config.ts";
import { parseSidecarConfig, SIDECAR_USAGE } from "./config.ts";
import { startSidecar } from "./sidecar.ts";

async function main(): Promise<void> {
  const config = parseSidecarConfig(Deno.args, Deno.env.toObject());
  if (config === null) {
    console.log(SIDECAR_USAGE);
    return;
  }
  checkModelDir(config.modelDir);
  if (config.dataDir !== null) await Deno.mkdir(config.dataDir, { recursive: true });
  const auth = await Auth.create(config.tokens);
  const engine = await Engine.load(config.modelDir, { backend: config.backend, gpu: config.gpu });
  if (engine.backend.name !== "webgpu" && (config.gpu.weights || config.gpu.kvCache)) {
    console.error(
      "capsule: --gpu-weights/--kv-cache apply to the WebGPU backend; this node decodes on the CPU",
    );
  }
  let store: SessionStore;
  try {
    store = await openStore(config.storeUrl);
  } catch (e) {
    engine.dispose();
    throw e;
  }
  const stopMaintenance = maintainStore(store);
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
