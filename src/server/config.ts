/**
 * Node configuration from command-line flags with environment fallbacks. Parsing is pure (flags,
 * env and a file reader in, config or a {@link ConfigError} out) so it can be tested without
 * starting anything.
 * @module
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import type { BackendName } from "../engine/backend.ts";
import type { GpuOptions } from "../engine/engine.ts";
import { parseStoreUrl } from "../store/mod.ts";
import { CapsuleError } from "../errors.ts";
import { parseTokenSpec } from "./auth.ts";
import { DEFAULT_LIMITS, type Limits } from "./limits.ts";

/** A configuration mistake: main prints the message and exits with status 2. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** Everything a node needs to start. */
export interface ServerConfig {
  modelDir: string;
  storeUrl: string;
  host: string;
  port: number;
  backend: BackendName | "auto";
  /** WebGPU load-time choices (weights and KV cache storage). */
  gpu: GpuOptions;
  /** token → tenant; empty = no authentication. */
  tokens: Map<string, string>;
  /** 32-byte capsule sealing key, or null. */
  capsuleKey: Uint8Array | null;
  limits: Partial<Limits>;
}

/** The default model folder: `models/capsule-qwen35-tiny` in the repository. */
export const DEFAULT_MODEL_DIR: string = fileURLToPath(
  new URL("../../models/capsule-qwen35-tiny", import.meta.url),
);
/** The default store: Deno KV in a local file. */
export const DEFAULT_STORE_URL = "kv:./capsule.kvdb";
export const DEFAULT_PORT = 8080;
export const DEFAULT_HOST = "127.0.0.1";

/** Usage text of `deno task start --help`. */
export const USAGE = `Usage: deno task start [options]

Options (environment fallback in brackets):
  --model DIR        model folder [CAPSULE_MODEL] (default models/capsule-qwen35-tiny)
  --store URL        memory: | kv:<path> | redis://host:port [CAPSULE_STORE] (default ${DEFAULT_STORE_URL})
  --port N           TCP port, 0 = any free port [PORT] (default ${DEFAULT_PORT})
  --host H           interface to bind [CAPSULE_HOST] (default ${DEFAULT_HOST}; 0.0.0.0 for all)
  --backend B        cpu | webgpu | auto [CAPSULE_BACKEND] (default auto: WebGPU when an adapter exists)
  --gpu-weights W    f16 | int8: WebGPU weight storage [CAPSULE_GPU_WEIGHTS] (default f16)
  --kv-cache K       f32 | f16: WebGPU KV cache storage [CAPSULE_KV_CACHE] (default f32)
  --tokens-file F    JSON {"token": "tenant"} or token=tenant lines [CAPSULE_TOKENS_FILE]
  --deadline-ms N    per-request deadline [CAPSULE_DEADLINE_MS] (default ${DEFAULT_LIMITS.deadlineMs})
  --max-new-tokens N largest max_tokens [CAPSULE_MAX_NEW_TOKENS] (default ${DEFAULT_LIMITS.maxNewTokens})
  -h, --help         show this help

Environment only:
  CAPSULE_TOKENS     inline tokens: "tokA=tenant1,tokB=tenant2" or a JSON object
  CAPSULE_KEY        32-byte capsule sealing key, hex (64 digits) or base64
`;

/** Decodes a 32-byte key given as 64 hex digits or base64 (standard or URL-safe). */
export function parseCapsuleKey(text: string): Uint8Array {
  const t = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(t)) {
    return Uint8Array.from({ length: 32 }, (_, i) => parseInt(t.slice(2 * i, 2 * i + 2), 16));
  }
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(t)) {
    const b64 = t.replace(/-/g, "+").replace(/_/g, "/").replace(/=?$/, "=");
    const bin = atob(b64);
    const out = Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
    if (out.length === 32) return out;
  }
  throw new ConfigError("CAPSULE_KEY must be 32 bytes written as 64 hex digits or base64");
}

/**
 * The WebGPU load-time choices from `--gpu-weights` / `--kv-cache` (or their environment
 * fallbacks), shared by the node and the sidecar. Throws {@link ConfigError} on other values.
 */
export function parseGpuOptions(weights: string | undefined, kvCache: string | undefined): GpuOptions {
  const out: GpuOptions = {};
  if (weights !== undefined) {
    if (weights !== "f16" && weights !== "int8") {
      throw new ConfigError(
        `--gpu-weights/CAPSULE_GPU_WEIGHTS must be f16 or int8, got ${JSON.stringify(weights)}`,
      );
    }
    out.weights = weights;
  }
  if (kvCache !== undefined) {
    if (kvCache !== "f32" && kvCache !== "f16") {
      throw new ConfigError(`--kv-cache/CAPSULE_KV_CACHE must be f32 or f16, got ${JSON.stringify(kvCache)}`);
    }
    out.kvCache = kvCache;
  }
  return out;
}

function intOption(value: string, name: string, min: number, max: number): number {
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new ConfigError(`${name} must be an integer in ${min}..${max}, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

/**
 * Parses flags and environment. `readFile` reads the tokens file. Returns null when help was
 * asked for. Throws {@link ConfigError} on any mistake.
 */
export function parseConfig(
  args: string[],
  env: Record<string, string | undefined>,
  readFile: (path: string) => string = Deno.readTextFileSync,
): ServerConfig | null {
  let flags;
  try {
    flags = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        model: { type: "string" },
        store: { type: "string" },
        port: { type: "string" },
        host: { type: "string" },
        backend: { type: "string" },
        "gpu-weights": { type: "string" },
        "kv-cache": { type: "string" },
        "tokens-file": { type: "string" },
        "deadline-ms": { type: "string" },
        "max-new-tokens": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    throw new ConfigError(`${(e as Error).message}\n\n${USAGE}`);
  }
  if (flags.help) return null;
  const pick = (flag: string | undefined, envName: string): string | undefined => {
    const v = flag ?? env[envName];
    return v === undefined || v === "" ? undefined : v;
  };

  const modelDir = pick(flags.model, "CAPSULE_MODEL") ?? DEFAULT_MODEL_DIR;
  const storeUrl = pick(flags.store, "CAPSULE_STORE") ?? DEFAULT_STORE_URL;
  try {
    parseStoreUrl(storeUrl);
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  const portText = pick(flags.port, "PORT");
  const port = portText === undefined ? DEFAULT_PORT : intOption(portText, "--port/PORT", 0, 65535);
  const host = pick(flags.host, "CAPSULE_HOST") ?? DEFAULT_HOST;
  const backend = pick(flags.backend, "CAPSULE_BACKEND") ?? "auto";
  if (backend !== "cpu" && backend !== "webgpu" && backend !== "auto") {
    throw new ConfigError(
      `--backend/CAPSULE_BACKEND must be cpu, webgpu or auto, got ${JSON.stringify(backend)}`,
    );
  }
  const gpu = parseGpuOptions(
    pick(flags["gpu-weights"], "CAPSULE_GPU_WEIGHTS"),
    pick(flags["kv-cache"], "CAPSULE_KV_CACHE"),
  );

  const tokens = new Map<string, string>();
  const addTokens = (spec: string, source: string) => {
    try {
      for (const [k, v] of parseTokenSpec(spec)) tokens.set(k, v);
    } catch (e) {
      throw new ConfigError(`${source}: ${(e as Error).message}`);
    }
  };
  const tokensFile = pick(flags["tokens-file"], "CAPSULE_TOKENS_FILE");
  if (tokensFile !== undefined) {
    let text: string;
    try {
      text = readFile(tokensFile);
    } catch (e) {
      throw new ConfigError(`cannot read tokens file ${tokensFile}: ${(e as Error).message}`);
    }
    addTokens(text, `tokens file ${tokensFile}`);
  }
  if (env.CAPSULE_TOKENS) addTokens(env.CAPSULE_TOKENS, "CAPSULE_TOKENS");
  for (const tenant of tokens.values()) {
    if (!/^[A-Za-z0-9._-]{1,128}$/.test(tenant)) {
      throw new ConfigError(`tenant ${JSON.stringify(tenant)} must be 1..128 characters of [A-Za-z0-9._-]`);
    }
  }

  const capsuleKey = env.CAPSULE_KEY ? parseCapsuleKey(env.CAPSULE_KEY) : null;

  const limits: Partial<Limits> = {};
  const deadline = pick(flags["deadline-ms"], "CAPSULE_DEADLINE_MS");
  if (deadline !== undefined) limits.deadlineMs = intOption(deadline, "--deadline-ms", 1, 86_400_000);
  const maxNew = pick(flags["max-new-tokens"], "CAPSULE_MAX_NEW_TOKENS");
  if (maxNew !== undefined) limits.maxNewTokens = intOption(maxNew, "--max-new-tokens", 1, 1_000_000);

  return { modelDir, storeUrl, host, port, backend, gpu, tokens, capsuleKey, limits };
}

/** Checks that the model folder exists, naming the flag that chooses it when it does not. */
export function checkModelDir(dir: string, stat: (p: string) => Deno.FileInfo = Deno.statSync): void {
  let info: Deno.FileInfo;
  try {
    info = stat(`${dir}/config.json`);
  } catch {
    throw new ConfigError(
      `model folder ${dir} not found (no config.json there); pass --model DIR or set CAPSULE_MODEL` +
        (dir === DEFAULT_MODEL_DIR ? " (the default model is not built yet?)" : ""),
    );
  }
  if (!info.isFile) throw new ConfigError(`${dir}/config.json is not a file`);
}

/** Whether an error is a configuration problem (exit status 2) rather than a crash. */
export function isConfigProblem(e: unknown): boolean {
  if (e instanceof ConfigError) return true;
  return e instanceof CapsuleError && [
    "model_not_found",
    "invalid_config",
    "unsupported_model",
    "invalid_checkpoint",
    "missing_tensor",
    "tensor_shape_mismatch",
    "invalid_tokenizer",
    "no_gpu_adapter",
    "invalid_store_url",
    "store_unavailable",
    "invalid_argument",
  ].includes(e.code);
}
