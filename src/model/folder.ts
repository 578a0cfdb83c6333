/**
 * A model folder as users hand it to Capsule: `config.json`, safetensors weights (single file or
 * sharded), and optionally a tokenizer. Loading resolves the config, the tokenizer and the model
 * fingerprint that capsules are bound to; the f32 weights are read only for the CPU backend
 * (a GPU backend reads the checkpoint itself, so a large model is never held twice).
 * @module
 */
import { loadModelConfig, type ModelConfig } from "./config.ts";
import { Checkpoint } from "./safetensors.ts";
import { loadWeights, type ModelWeights } from "./weights.ts";
import { Tokenizer } from "./tokenizer.ts";
import { fingerprintModel } from "../capsule/fingerprint.ts";

/** Everything loaded from a model folder. */
export interface ModelFolder {
  dir: string;
  /** Folder name, used as the model id in the API. */
  id: string;
  config: ModelConfig;
  tokenizer: Tokenizer | null;
  /** Hex SHA-256 of the config, weight index and quantisation: capsules only resume under it. */
  fingerprint: string;
}

/** The fingerprint of an open checkpoint: config, weight index (name, dtype, shape) and quantisation. */
export async function checkpointFingerprint(
  config: ModelConfig,
  checkpoint: Checkpoint,
  quantization: string,
): Promise<string> {
  const index = checkpoint.names().sort().map((name) => {
    const info = checkpoint.info(name);
    return { name, dtype: info.dtype, shape: [...info.shape] };
  });
  return await fingerprintModel(config, index, quantization);
}

/** A folder's config and fingerprint, without loading weights. */
export async function folderFingerprint(
  dir: string,
  quantization = "f32",
): Promise<{ fingerprint: string; config: ModelConfig }> {
  const config = await loadModelConfig(dir);
  const checkpoint = await Checkpoint.open(dir);
  try {
    return { fingerprint: await checkpointFingerprint(config, checkpoint, quantization), config };
  } finally {
    checkpoint.close();
  }
}

/** Load a model folder's config, tokenizer and fingerprint (no weights). */
export async function loadModelFolder(
  dir: string,
  opts: { quantization?: string } = {},
): Promise<ModelFolder> {
  const config = await loadModelConfig(dir);
  const checkpoint = await Checkpoint.open(dir);
  try {
    const fingerprint = await checkpointFingerprint(config, checkpoint, opts.quantization ?? "f32");
    const tokenizer = await Tokenizer.load(dir);
    const id = dir.replace(/\/+$/, "").split("/").pop() || dir;
    return { dir, id, config, tokenizer, fingerprint };
  } finally {
    checkpoint.close();
  }
}

/** Every weight of a model folder in f32 (for the CPU reference backend). */
export async function loadFolderWeights(model: ModelFolder): Promise<ModelWeights> {
  const checkpoint = await Checkpoint.open(model.dir);
  try {
    return await loadWeights(checkpoint, model.config, model.dir);
  } finally {
    checkpoint.close();
  }
}
