/**
 * Sealing: AES-256-GCM over the capsule body in independently authenticated frames.
 *
 * Keys: the configured 32-byte master key never encrypts directly. Each capsule draws a random
 * 16-byte salt, and HKDF-SHA256(master, salt) derives (a) the AES-256-GCM frame key, (b) a 16-byte
 * key check and (c) a 16-byte tenant tag bound to the tenant id; the header stores the salt, key
 * check and tenant tag. So a wrong key and a wrong tenant are told apart (and refused) before any
 * decryption, the tag reveals nothing about the tenant to whoever lacks the key, and GCM nonces
 * (frame counter ‖ final flag) never repeat under one frame key.
 *
 * Frames: the (optionally deflated) body is cut into `chunkSize` plaintext chunks; chunk i is
 * encrypted with nonce `u64le(i) ‖ u32le(final ? 1 : 0)` and associated data
 * `u32le(len(tenant)) ‖ tenant(utf-8) ‖ header bytes`, so reordering, dropping, truncating after a
 * frame, altering the cleartext header, or importing under another tenant all fail authentication.
 * @module
 */
import { CapsuleError } from "../errors.ts";

/** Key and tenant of a sealed capsule. */
export interface SealOptions {
  /** A 32-byte master key, or a CryptoKey from {@link importSealKey} (HKDF) or an extractable raw AES key. */
  key: CryptoKey | Uint8Array;
  /** Tenant id: authenticated as associated data; a capsule only unseals for the same tenant. */
  tenant: string;
}

/** Per-capsule key material. */
export interface SealKeys {
  aes: CryptoKey;
  keyCheck: Uint8Array;
  tenantTag: Uint8Array;
}

const MAX_TENANT_BYTES = 1024;
const enc = new TextEncoder();

/** Import a 32-byte master key for sealing (non-extractable HKDF key). */
export async function importSealKey(raw: Uint8Array): Promise<CryptoKey> {
  if (!(raw instanceof Uint8Array) || raw.length !== 32) {
    throw new CapsuleError("invalid_argument", "a seal key must be exactly 32 bytes");
  }
  return await crypto.subtle.importKey("raw", raw as Uint8Array<ArrayBuffer>, "HKDF", false, [
    "deriveBits",
    "deriveKey",
  ]);
}

async function hkdfKey(key: CryptoKey | Uint8Array): Promise<CryptoKey> {
  if (key instanceof Uint8Array) return await importSealKey(key);
  if (key.algorithm.name === "HKDF") return key;
  if (key.extractable && key.algorithm.name === "AES-GCM") {
    return await importSealKey(new Uint8Array(await crypto.subtle.exportKey("raw", key)));
  }
  throw new CapsuleError(
    "invalid_argument",
    "seal key must be 32 raw bytes, an HKDF CryptoKey (importSealKey) or an extractable AES-GCM key",
  );
}

/** The tenant id's UTF-8 bytes, checked. */
export function tenantBytes(tenant: string): Uint8Array {
  if (typeof tenant !== "string" || tenant.length === 0) {
    throw new CapsuleError("invalid_argument", "seal tenant must be a non-empty string");
  }
  const b = enc.encode(tenant);
  if (b.length > MAX_TENANT_BYTES) {
    throw new CapsuleError("invalid_argument", `tenant id exceeds ${MAX_TENANT_BYTES} bytes`);
  }
  return b;
}

function info(label: string, extra?: Uint8Array): Uint8Array<ArrayBuffer> {
  const l = enc.encode(`capsule/v1/${label}`);
  const out = new Uint8Array(l.length + (extra ? 1 + extra.length : 0));
  out.set(l);
  if (extra) out.set(extra, l.length + 1); // a 0 byte separates label and tenant
  return out;
}

/** Derive the frame key, key check and tenant tag for one capsule's salt. */
export async function deriveSealKeys(
  key: CryptoKey | Uint8Array,
  salt: Uint8Array,
  tenant: string,
): Promise<SealKeys> {
  const base = await hkdfKey(key);
  const t = tenantBytes(tenant);
  const params = (i: Uint8Array<ArrayBuffer>): HkdfParams => ({
    name: "HKDF",
    hash: "SHA-256",
    salt: salt as Uint8Array<ArrayBuffer>,
    info: i,
  });
  const [aes, keyCheck, tenantTag] = await Promise.all([
    crypto.subtle.deriveKey(params(info("aes-256-gcm")), base, { name: "AES-GCM", length: 256 }, false, [
      "encrypt",
      "decrypt",
    ]),
    crypto.subtle.deriveBits(params(info("key-check")), base, 128),
    crypto.subtle.deriveBits(params(info("tenant", t)), base, 128),
  ]);
  return { aes, keyCheck: new Uint8Array(keyCheck), tenantTag: new Uint8Array(tenantTag) };
}

/** Associated data of every frame: the tenant id and the full header. */
export function sealAssociatedData(header: Uint8Array, tenant: string): Uint8Array<ArrayBuffer> {
  const t = tenantBytes(tenant);
  const out = new Uint8Array(4 + t.length + header.length);
  new DataView(out.buffer).setUint32(0, t.length, true);
  out.set(t, 4);
  out.set(header, 4 + t.length);
  return out;
}

function nonce(counter: number, final: boolean): Uint8Array<ArrayBuffer> {
  const n = new Uint8Array(12);
  const v = new DataView(n.buffer);
  v.setBigUint64(0, BigInt(counter), true);
  v.setUint32(8, final ? 1 : 0, true);
  return n;
}

/** Encrypt one frame's plaintext; returns ciphertext ‖ 16-byte tag. */
export async function sealFrame(
  aes: CryptoKey,
  counter: number,
  final: boolean,
  ad: Uint8Array<ArrayBuffer>,
  plain: Uint8Array,
): Promise<Uint8Array> {
  const out = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce(counter, final), additionalData: ad, tagLength: 128 },
    aes,
    plain as Uint8Array<ArrayBuffer>,
  );
  return new Uint8Array(out);
}

/** Decrypt and authenticate one frame; `capsule_checksum_mismatch` when anything was altered. */
export async function openFrame(
  aes: CryptoKey,
  counter: number,
  final: boolean,
  ad: Uint8Array<ArrayBuffer>,
  sealed: Uint8Array,
): Promise<Uint8Array> {
  try {
    const out = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: nonce(counter, final), additionalData: ad, tagLength: 128 },
      aes,
      sealed as Uint8Array<ArrayBuffer>,
    );
    return new Uint8Array(out);
  } catch (e) {
    throw new CapsuleError(
      "capsule_checksum_mismatch",
      `sealed frame ${counter} failed authentication: the capsule was altered`,
      { frame: counter },
      { cause: e },
    );
  }
}

/** Byte-wise equality of two short tags. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}
