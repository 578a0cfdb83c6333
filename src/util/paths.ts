/** Path helpers shared by the command-line entry points. */
import { fileURLToPath } from "node:url";

/** A `file:` URL as a filesystem path. */
export function fromFileUrl(url: URL | string): string {
  return fileURLToPath(url);
}

/** Absolute path of the repository root. */
export const REPO_ROOT: string = fileURLToPath(new URL("../..", import.meta.url)).replace(/\/$/, "");

/** The model `deno task start` serves when none is given. */
export const DEFAULT_MODEL_DIR: string = `${REPO_ROOT}/models/capsule-qwen35-tiny`;
