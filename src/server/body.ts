/**
 * Request bodies read with a byte cap: the declared Content-Length is checked first, and a body
 * without one is counted as it streams in, so an oversized body is refused without buffering it.
 * @module
 */
import { CapsuleError } from "../errors.ts";

function tooLarge(limit: number, what: string): CapsuleError {
  return new CapsuleError("payload_too_large", `${what} exceeds the limit of ${limit} bytes`, { limit });
}

/** Reads a request body into memory, refusing more than `limit` bytes with `payload_too_large`. */
export async function readBodyBytes(req: Request, limit: number, what = "request body"): Promise<Uint8Array> {
  const declared = req.headers.get("content-length");
  if (declared !== null && /^\d+$/.test(declared) && Number(declared) > limit) throw tooLarge(limit, what);
  if (req.body === null) return new Uint8Array(0);
  const parts: Uint8Array[] = [];
  let total = 0;
  const reader = req.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > limit) throw tooLarge(limit, what);
      parts.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Reads a JSON body. An empty body is `undefined` when `optional`, else `invalid_json`; text that
 * is not UTF-8 JSON is `invalid_json`.
 */
export async function readJson(req: Request, limit: number, optional = false): Promise<unknown> {
  const bytes = await readBodyBytes(req, limit);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new CapsuleError("invalid_json", "request body is not valid UTF-8");
  }
  if (text.trim() === "") {
    if (optional) return undefined;
    throw new CapsuleError("invalid_json", "request body is empty; expected a JSON object");
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CapsuleError("invalid_json", `request body is not valid JSON: ${(e as Error).message}`);
  }
}
