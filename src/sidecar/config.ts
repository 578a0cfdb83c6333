/**
 * Sidecar configuration from flags with environment fallbacks. Pure (flags and env in, config or a
 * {@link ConfigError} out), so it is tested without starting anything.
 * @module
 */
import { parseArgs } from "node:util";
import type { BackendName } from "../engine/backend.ts";
import type { GpuOptions } from "../engine/engine.ts";
import { parseStoreUrl } from "../store/mod.ts";
import { parseTokenSpec } from "../server/auth.ts";
import { ConfigError, DEFAULT_MODEL_DIR, parseGpuOptions } from "../server/config.ts";
import type { Listen } from "./sidecar.ts";

/** Everything the sidecar needs to start. */
export interface SidecarConfig {
  modelDir: string;
  storeUrl: string;
  listen: Listen;
  backend: BackendName | "auto";
  /** WebGPU load-time choices (weights and KV cache storage). */
  gpu: GpuOptions;
  /** Folder of the default store (created on start); null when `--store` was given. */
  dataDir: string | null;
  /** token → tenant; empty = open. */
  tokens: Map<string, string>;
}

/** Usage text of `deno task sidecar --help`. */
export const SIDECAR_USAGE = `Usage: deno task sidecar [--socket PATH | --port N] [options]

Serves the Capsule v1 API plus agent memory routes (open, checkpoints, rewind) on a Unix socket
(default) or on localhost, with sessions kept in an embedded Deno KV file so they survive restarts.

Options (environment fallback in brackets):
  --socket PATH     Unix socket [CAPSULE_SOCKET] (default $XDG_RUNTIME_DIR/capsule.sock, else ./capsule.sock)
  --port N          serve on TCP instead (0 = any free port) [CAPSULE_SIDECAR_PORT]
  --host H          interface for --port (default 127.0.0.1)
  --model DIR       model folder [CAPSULE_MODEL] (default models/capsule-qwen35-tiny)
  --store URL       memory: | kv:<path> | redis://host:port [CAPSULE_STORE]
                    (default kv:<data dir>/memory.kvdb)
  --data-dir DIR    where the default store lives [CAPSULE_DATA_DIR]
                    (default $XDG_DATA_HOME/capsule, else ~/.local/share/capsule)
  --backend B       cpu | webgpu | auto [CAPSULE_BACKEND] (default auto)
  --gpu-weights W   f16 | int8: WebGPU weight storage [CAPSULE_GPU_WEIGHTS] (default f16)
  --kv-cache K      f32 | f16: WebGPU KV cache storage [CAPSULE_KV_CACHE] (default f32)
  -h, --help        show this help

Environment only:
  CAPSULE_TOKENS    require bearer tokens: "tokA=tenant1,tokB=tenant2" or a JSON object
`;

/** The default socket path. */
export function defaultSocketPath(env: Record<string, string | undefined>): string {
  const runtime = env.XDG_RUNTIME_DIR;
  return runtime ? `${runtime.replace(/\/+$/, "")}/capsule.sock` : "./capsule.sock";
}

/** The default data folder. */
export function defaultDataDir(env: Record<string, string | undefined>): string {
  if (env.XDG_DATA_HOME) return `${env.XDG_DATA_HOME.replace(/\/+$/, "")}/capsule`;
  if (env.HOME) return `${env.HOME.replace(/\/+$/, "")}/.local/share/capsule`;
  return "./.capsule";
}

/** Parses flags and environment; null when help was asked for. */
export function parseSidecarConfig(
  args: string[],
  env: Record<string, string | undefined>,
): SidecarConfig | null {
  let flags;
  try {
    flags = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        socket: { type: "string" },
        port: { type: "string" },
        host: { type: "string" },
        model: { type: "string" },
        store: { type: "string" },
        "data-dir": { type: "string" },
        backend: { type: "string" },
        "gpu-weights": { type: "string" },
        "kv-cache": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    throw new ConfigError(`${(e as Error).message}\n\n${SIDECAR_USAGE}`);
  }
  if (flags.help) return null;
  const pick = (flag: string | undefined, envName: string): string | undefined => {
    const v = flag ?? env[envName];
    return v === undefined || v === "" ? undefined : v;
  };

  if (flags.socket !== undefined && flags.port !== undefined) {
    throw new ConfigError("give either --socket or --port, not both");
  }
  let listen: Listen;
  const portText = flags.socket === undefined ? pick(flags.port, "CAPSULE_SIDECAR_PORT") : undefined;
  if (portText !== undefined) {
    if (!/^\d+$/.test(portText) || Number(portText) > 65535) {
      throw new ConfigError(`--port must be an integer in 0..65535, got ${JSON.stringify(portText)}`);
    }
    listen = { port: Number(portText), host: flags.host ?? "127.0.0.1" };
  } else {
    if (flags.host !== undefined) throw new ConfigError("--host only applies with --port");
    listen = { socket: pick(flags.socket, "CAPSULE_SOCKET") ?? defaultSocketPath(env) };
  }

  const backend = pick(flags.backend, "CAPSULE_BACKEND") ?? "auto";
  if (backend !== "cpu" && backend !== "webgpu" && backend !== "auto") {
    throw new ConfigError(`--backend must be cpu, webgpu or auto, got ${JSON.stringify(backend)}`);
  }
  const gpu = parseGpuOptions(
    pick(flags["gpu-weights"], "CAPSULE_GPU_WEIGHTS"),
    pick(flags["kv-cache"], "CAPSULE_KV_CACHE"),
  );

  const explicitStore = pick(flags.store, "CAPSULE_STORE");
  const dataDir = explicitStore === undefined
    ? (pick(flags["data-dir"], "CAPSULE_DATA_DIR") ?? defaultDataDir(env)).replace(/\/+$/, "")
    : null;
  const storeUrl = explicitStore ?? `kv:${dataDir}/memory.kvdb`;
  try {
    parseStoreUrl(storeUrl);
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }

  let tokens = new Map<string, string>();
  if (env.CAPSULE_TOKENS) {
    try {
      tokens = parseTokenSpec(env.CAPSULE_TOKENS);
    } catch (e) {
      throw new ConfigError(`CAPSULE_TOKENS: ${(e as Error).message}`);
    }
  }

  return {
    modelDir: pick(flags.model, "CAPSULE_MODEL") ?? DEFAULT_MODEL_DIR,
    storeUrl,
    listen,
    backend,
    gpu,
    dataDir,
    tokens,
  };
}
