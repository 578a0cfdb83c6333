/**
 * `deno task capsule inspect <file> [--key-file F --tenant T]`: header, layers, sections, sizes and
 * checksum verdicts (no model needed).
 * `deno task capsule verify <file> --model <folder> [--quant f32] [--key-file F --tenant T] [--max-bytes N]`:
 * decode the capsule fully against the model folder's fingerprint and geometry.
 *
 * Both print a human-readable report, then one JSON object as the last line (`"ok"` first); they
 * exit 0 when the capsule is fine, 1 when it is not, 2 on a usage error.
 * @module
 */
import { parseArgs } from "node:util";
import { folderFingerprint } from "../model/folder.ts";
import { type CapsuleInfo, decodeCapsule, inspectCapsule, type SealOptions } from "../capsule/mod.ts";
import { fromHex } from "../capsule/sha256.ts";
import { CapsuleError } from "../errors.ts";

const USAGE = `usage:
  deno task capsule inspect <file> [--key-file <path> --tenant <id>]
  deno task capsule verify <file> --model <folder> [--quant f32] [--key-file <path> --tenant <id>] [--max-bytes <n>]

--key-file holds the 32-byte seal key, raw or as 64 hex digits.`;

async function readSeal(
  keyFile: string | undefined,
  tenant: string | undefined,
): Promise<SealOptions | undefined> {
  if (keyFile === undefined && tenant === undefined) return undefined;
  if (keyFile === undefined || tenant === undefined) {
    throw new CapsuleError("invalid_argument", "--key-file and --tenant go together");
  }
  const raw = await Deno.readFile(keyFile);
  if (raw.length === 32) return { key: raw, tenant };
  const hex = fromHex(new TextDecoder().decode(raw).trim(), 32);
  if (!hex) throw new CapsuleError("invalid_argument", `${keyFile}: expected 32 raw bytes or 64 hex digits`);
  return { key: hex, tenant };
}

function verdict(v: boolean | null): string {
  return v === null ? "unchecked" : v ? "ok" : "MISMATCH";
}

function printInfo(file: string, info: CapsuleInfo): void {
  const out: string[] = [];
  out.push(
    `capsule ${file}: format v${info.version}, ${info.bytes} bytes (header ${info.headerBytes}, plain body ${info.plainBodyBytes})`,
  );
  out.push(`model     ${info.fingerprint} (${info.family})`);
  const sampler = info.sampler ? `seed ${info.sampler.seed}, ${info.sampler.draws} draws` : "none";
  out.push(`session   position ${info.position}, ${info.tokenCount} tokens, sampler ${sampler}`);
  // Exact resume holds between nodes whose numerics equal these (docs/api.md "Numerics").
  const numerics = info.numerics
    ? Object.entries(info.numerics).map(([k, v]) => `${k}=${v}`).join(", ")
    : "not recorded";
  out.push(`numerics  ${numerics}`);
  out.push(
    `body      ${info.sealed ? "sealed (AES-256-GCM)" : "unsealed"}, compression ${info.compression}` +
      (info.chunkSize ? `, frames of ${info.chunkSize} bytes` : ""),
  );
  out.push("layers");
  for (const l of info.layers) {
    const shapes = Object.entries(l.shapes).map(([k, s]) => `${k} [${s.join(", ")}]`).join("  ");
    const q = l.keyGroup
      ? `  groups ${l.keyGroup}/${l.valueGroup}${l.keyRotated || l.valueRotated ? ", Hadamard-rotated" : ""}`
      : "";
    out.push(`  ${String(l.index).padStart(3)} ${l.kind.padEnd(9)} ${l.codec.padEnd(5)} ${shapes}${q}`);
  }
  out.push("sections");
  out.push(
    `  ${"#".padStart(3)} ${"type".padEnd(10)} ${"layer".padStart(5)} ${"offset".padStart(12)} ${
      "bytes".padStart(12)
    }  crc32c    verdict`,
  );
  for (const s of info.sections) {
    const crc = s.crc32c === null ? "-".padEnd(8) : s.crc32c.toString(16).padStart(8, "0");
    out.push(
      `  ${String(s.index).padStart(3)} ${s.type.padEnd(10)} ${String(s.layer ?? "-").padStart(5)} ${
        String(s.offset).padStart(12)
      } ${String(s.length).padStart(12)}  ${crc}  ${verdict(s.crcOk)}`,
    );
  }
  const c = info.checks;
  out.push(
    `checks    header crc ${verdict(c.headerCrc)}, section crcs ${verdict(c.sectionCrcs)}, sha-256 ${
      verdict(c.sha256)
    }, ` +
      `trailing bytes ${c.trailingBytes}` + (c.error ? `; ${c.error.code}: ${c.error.message}` : ""),
  );
  console.log(out.join("\n"));
}

async function inspect(file: string, seal: SealOptions | undefined): Promise<number> {
  const bytes = await Deno.readFile(file);
  const info = await inspectCapsule(bytes, { seal });
  printInfo(file, info);
  const { ok, sections: _s, layers: _l, ...summary } = info;
  console.log(
    JSON.stringify({
      ok,
      file,
      ...summary,
      layerCount: info.layers.length,
      sectionCount: info.sections.length,
    }),
  );
  return info.ok ? 0 : 1;
}

async function verify(
  file: string,
  model: string,
  quant: string,
  seal: SealOptions | undefined,
  maxBytes?: number,
): Promise<number> {
  const { fingerprint, config } = await folderFingerprint(model, quant);
  const f = await Deno.open(file, { read: true });
  const snap = await decodeCapsule(f.readable, { fingerprint, config, seal, maxBytes });
  const kv = snap.state.layers.filter((l) => l.kind === "attention").length;
  console.log(
    `capsule ${file} resumes under ${model} (fingerprint ${fingerprint}, quantisation ${quant}): ` +
      `position ${snap.state.position}, ${snap.tokens.length} tokens, ${kv} attention layers, every checksum verified`,
  );
  console.log(
    JSON.stringify({
      ok: true,
      file,
      model,
      fingerprint,
      position: snap.state.position,
      tokens: snap.tokens.length,
    }),
  );
  return 0;
}

async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      model: { type: "string" },
      quant: { type: "string", default: "f32" },
      "key-file": { type: "string" },
      tenant: { type: "string" },
      "max-bytes": { type: "string" },
    },
    allowPositionals: true,
  });
  const [command, file] = positionals;
  if (positionals.length !== 2 || (command !== "inspect" && command !== "verify")) {
    console.error(USAGE);
    return 2;
  }
  const seal = await readSeal(values["key-file"], values.tenant);
  if (command === "inspect") return await inspect(file, seal);
  if (!values.model) {
    console.error(USAGE);
    return 2;
  }
  const maxBytes = values["max-bytes"] === undefined ? undefined : Number(values["max-bytes"]);
  return await verify(file, values.model, values.quant ?? "f32", seal, maxBytes);
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (e) {
    const err = e instanceof CapsuleError ? { code: e.code, message: e.message } : {
      // node:util parseArgs reports unknown options and missing values with ERR_PARSE_ARGS_* codes.
      code: String((e as { code?: unknown })?.code ?? "").startsWith("ERR_PARSE_ARGS")
        ? "invalid_argument"
        : "internal",
      message: String((e as Error)?.message ?? e),
    };
    console.error(`error: ${err.code}: ${err.message}`);
    console.log(JSON.stringify({ ok: false, ...err }));
    code = err.code === "invalid_argument" ? 2 : 1;
  }
  Deno.exit(code);
}
