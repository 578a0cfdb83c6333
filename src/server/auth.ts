/**
 * Bearer-token authentication: configured tokens map to tenants. With no tokens configured the
 * service runs open, as the single tenant {@link DEFAULT_TENANT}.
 *
 * Tokens are kept only as SHA-256 digests and looked up by digest, so neither a heap dump nor the
 * timing of a lookup reveals a token.
 * @module
 */
import { CapsuleError } from "../errors.ts";
import { NAME_PATTERN } from "../store/validate.ts";

/** The tenant of an open (token-less) service. */
export const DEFAULT_TENANT = "default";

async function digestHex(token: string): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token)));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Resolves `Authorization` headers to tenants. */
export class Auth {
  readonly #byDigest: Map<string, string>;

  private constructor(byDigest: Map<string, string>) {
    this.#byDigest = byDigest;
  }

  /**
   * An authenticator for `tokens` (token → tenant). An empty map means no authentication.
   * Tenants must be 1..128 characters of `[A-Za-z0-9._-]` and tokens non-empty without spaces;
   * otherwise `invalid_argument`.
   */
  static async create(tokens: ReadonlyMap<string, string> | Record<string, string> = {}): Promise<Auth> {
    const entries = tokens instanceof Map ? [...tokens] : Object.entries(tokens);
    const byDigest = new Map<string, string>();
    for (const [token, tenant] of entries) {
      if (typeof token !== "string" || token.length === 0 || /\s/.test(token)) {
        throw new CapsuleError(
          "invalid_argument",
          "auth tokens must be non-empty strings without whitespace",
        );
      }
      if (typeof tenant !== "string" || !NAME_PATTERN.test(tenant)) {
        throw new CapsuleError(
          "invalid_argument",
          `tenant ${JSON.stringify(tenant)} must be 1..128 characters of [A-Za-z0-9._-]`,
        );
      }
      byDigest.set(await digestHex(token), tenant);
    }
    return new Auth(byDigest);
  }

  /** True when tokens are configured (requests must authenticate). */
  get enabled(): boolean {
    return this.#byDigest.size > 0;
  }

  /** Number of configured tokens. */
  get size(): number {
    return this.#byDigest.size;
  }

  /** The tenant of a request's `Authorization` header; `unauthorized` when it names none. */
  async tenantOf(authorization: string | null | undefined): Promise<string> {
    if (!this.enabled) return DEFAULT_TENANT;
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization ?? "");
    if (!m) {
      throw new CapsuleError("unauthorized", "missing bearer token: send 'Authorization: Bearer <token>'");
    }
    const tenant = this.#byDigest.get(await digestHex(m[1]));
    if (tenant === undefined) throw new CapsuleError("unauthorized", "unknown bearer token");
    return tenant;
  }
}

/**
 * Parses a token configuration: either `token=tenant` pairs separated by commas (or newlines), or
 * a JSON object `{"token": "tenant", …}`. Throws `invalid_argument` on anything else.
 */
export function parseTokenSpec(spec: string): Map<string, string> {
  const out = new Map<string, string>();
  const text = spec.trim();
  if (text === "") return out;
  if (text.startsWith("{")) {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (e) {
      throw new CapsuleError(
        "invalid_argument",
        `token configuration is not valid JSON: ${(e as Error).message}`,
      );
    }
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      throw new CapsuleError(
        "invalid_argument",
        'token configuration JSON must be an object {"token": "tenant"}',
      );
    }
    for (const [token, tenant] of Object.entries(raw)) {
      if (typeof tenant !== "string") {
        throw new CapsuleError("invalid_argument", "token configuration JSON values must be tenant strings");
      }
      out.set(token, tenant);
    }
    return out;
  }
  for (const part of text.split(/[,\n]/)) {
    const item = part.trim();
    if (item === "") continue;
    const eq = item.indexOf("=");
    if (eq <= 0 || eq === item.length - 1) {
      throw new CapsuleError("invalid_argument", 'token configuration entries must look like "token=tenant"');
    }
    out.set(item.slice(0, eq).trim(), item.slice(eq + 1).trim());
  }
  return out;
}
