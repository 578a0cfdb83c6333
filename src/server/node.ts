/**
 * What a node runs on, opened the same way by `task start` (server/main.ts) and `task sidecar`
 * (sidecar/main.ts): the model directory checked, the tenants' tokens, the engine, the store and
 * its maintenance.
 * @module
 */
import { Engine } from "../engine/engine.ts";
import { maintainStore, openStore } from "../store/mod.ts";
import type { SessionStore } from "../store/types.ts";
import { Auth } from "./auth.ts";
import { checkModelDir, type ServerConfig } from "./config.ts";

/** The parts of a running node. */
export interface NodeParts {
  auth: Auth;
  engine: Engine;
  store: SessionStore;
  /** Stops the store's periodic maintenance (before the store closes). */
  stopMaintenance: () => Promise<void>;
}

/**
 * Open a node's parts in order. `label` prefixes its notices ("capsule", "capsule sidecar");
 * `beforeStore` runs just before the store opens (the sidecar creates its data directory there,
 * so a bad model directory creates nothing). If the store cannot be opened, the engine is released
 * before the error propagates.
 */
export async function openNode(
  config: Pick<ServerConfig, "modelDir" | "tokens" | "backend" | "gpu" | "storeUrl">,
  label: string,
  beforeStore: () => Promise<void> = () => Promise.resolve(),
): Promise<NodeParts> {
  checkModelDir(config.modelDir);
  const auth = await Auth.create(config.tokens);
  const engine = await Engine.load(config.modelDir, { backend: config.backend, gpu: config.gpu });
  if (engine.backend.name !== "webgpu" && (config.gpu.weights || config.gpu.kvCache)) {
    console.error(
      `${label}: --gpu-weights/--kv-cache apply to the WebGPU backend; this node decodes on the CPU`,
    );
  }
  let store: SessionStore;
  try {
    await beforeStore();
    store = await openStore(config.storeUrl);
  } catch (e) {
    engine.dispose();
    throw e;
  }
  return { auth, engine, store, stopMaintenance: maintainStore(store) };
}
