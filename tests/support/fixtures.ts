/** Paths of the shared golden fixtures (`../shared/fixtures` beside the repository). */
import { fileURLToPath as fromFileUrl } from "node:url";

/** Absolute path of the shared fixtures folder. */
export const FIXTURES_DIR: string = fromFileUrl(new URL("../../../shared/fixtures", import.meta.url));

/** The four fixture model folders. */
export const FIXTURE_MODELS = [
  "qwen3_5-tiny",
  "qwen3_5-tiny-hub",
  "qwen3_next-tiny",
  "kimi_linear-tiny",
] as const;

/** Absolute path of a fixture model folder. */
export function fixture(name: (typeof FIXTURE_MODELS)[number]): string {
  return `${FIXTURES_DIR}/${name}`;
}

/** Absolute path of the repository root. */
export const REPO_ROOT: string = fromFileUrl(new URL("../..", import.meta.url)).replace(/\/$/, "");
