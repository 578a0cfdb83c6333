/**
 * Builds `kubernetes-1.13-strict.json` from the Kubernetes OpenAPI (swagger 2.0) document: only
 * the definitions reachable from the kinds Capsule's manifests use, made strict the way manifest
 * linters do it (unknown fields rejected), with descriptions dropped to keep the vendored file
 * small. Run it once when the kinds list or the source spec changes, then commit the output:
 *
 *     deno run --allow-read --allow-write deploy/schemas/make_kubernetes_schema.ts \
 *       path/to/swagger-1.13.json.gz deploy/schemas/kubernetes-1.13-strict.json
 *
 * The source spec is the one the `kubernetes-client@9.0.0` npm package ships as
 * `lib/specs/swagger-1.13.json.gz` (see deploy/schemas/README.md).
 * @module
 */

/** Kinds the manifests may contain: `apiVersion/kind` → definition name in the spec. */
export const KINDS: Record<string, string> = {
  "apps/v1/Deployment": "io.k8s.api.apps.v1.Deployment",
  "v1/Service": "io.k8s.api.core.v1.Service",
  "v1/ConfigMap": "io.k8s.api.core.v1.ConfigMap",
  "v1/Secret": "io.k8s.api.core.v1.Secret",
  "v1/PersistentVolumeClaim": "io.k8s.api.core.v1.PersistentVolumeClaim",
};

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

const INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/** One schema node made strict: descriptions, formats and vendor extensions dropped. */
function strictNode(node: Json, refs: Set<string>): Json {
  if (Array.isArray(node)) return node.map((n) => strictNode(n, refs));
  if (node === null || typeof node !== "object") return node;
  const out: Obj = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === "description" || k === "format" || k.startsWith("x-")) continue;
    if (k === "$ref" && typeof v === "string") {
      refs.add(v.replace("#/definitions/", ""));
      out[k] = v;
    } else if (k === "properties" && v && typeof v === "object" && !Array.isArray(v)) {
      const props: Obj = {};
      for (const [name, sub] of Object.entries(v)) props[name] = strictNode(sub, refs);
      out[k] = props;
    } else {
      out[k] = strictNode(v, refs);
    }
  }
  // Objects with declared fields reject undeclared ones: a misspelt key is an error, not a no-op.
  if (out.properties !== undefined) {
    out.type = "object";
    if (out.additionalProperties === undefined) out.additionalProperties = false;
  }
  return out;
}

/** The strict, self-contained schema for the kinds in {@linkcode KINDS}. */
export function buildSchema(spec: { definitions: Record<string, Json>; info?: Json }): Obj {
  const defs = spec.definitions;
  const out: Obj = {};
  const todo = Object.values(KINDS);
  const seen = new Set<string>();
  while (todo.length) {
    const name = todo.pop()!;
    if (seen.has(name)) continue;
    seen.add(name);
    if (name === INT_OR_STRING) {
      out[name] = { type: ["integer", "string"] };
      continue;
    }
    if (name === QUANTITY) {
      // Quantities are written as strings ("512Mi") or bare numbers (`nvidia.com/gpu: 1`).
      out[name] = { type: ["string", "number"] };
      continue;
    }
    const def = defs[name];
    if (def === undefined) throw new Error(`definition ${name} missing from the spec`);
    const refs = new Set<string>();
    const strict = strictNode(def, refs) as Obj;
    if (Object.values(KINDS).includes(name)) {
      // Manifests describe desired state only: `status` belongs to the API server.
      delete (strict.properties as Obj).status;
    }
    out[name] = strict;
    for (const r of refs) if (!seen.has(r)) todo.push(r);
  }
  const sorted: Obj = {};
  for (const k of Object.keys(out).sort()) sorted[k] = out[k];

  const entries = Object.entries(KINDS).map(([key, def]) => {
    const kind = key.slice(key.lastIndexOf("/") + 1);
    const apiVersion = key.slice(0, key.lastIndexOf("/"));
    return { apiVersion, kind, def };
  });
  const match = (e: { apiVersion: string; kind: string }): Obj => ({
    type: "object",
    properties: { apiVersion: { const: e.apiVersion }, kind: { const: e.kind } },
    required: ["apiVersion", "kind"],
  });
  const version = (spec.info as Obj | undefined)?.version ?? "unknown";
  return {
    $schema: "https://json-schema.org/draft/2019-09/schema",
    $id: "https://capsule.invalid/schemas/kubernetes-1.13-strict.json",
    title: `Kubernetes ${version} objects used by Capsule (strict)`,
    type: "object",
    required: ["apiVersion", "kind", "metadata"],
    properties: {
      metadata: {
        type: "object",
        properties: { name: { type: "string", minLength: 1 } },
        required: ["name"],
      },
    },
    // The (apiVersion, kind) pair must be a known one; then the object must match its definition.
    anyOf: entries.map(match),
    allOf: entries.map((e) => ({ if: match(e), then: { $ref: `#/definitions/${e.def}` } })),
    definitions: sorted,
  };
}

if (import.meta.main) {
  const [input, output] = Deno.args;
  if (!input || !output) {
    console.error("usage: make_kubernetes_schema.ts <swagger.json[.gz]> <out.json>");
    Deno.exit(2);
  }
  let bytes = await Deno.readFile(input);
  if (input.endsWith(".gz")) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    bytes = new Uint8Array(await new Response(stream).arrayBuffer());
  }
  const spec = JSON.parse(new TextDecoder().decode(bytes));
  const schema = buildSchema(spec);
  await Deno.writeTextFile(output, JSON.stringify(schema, null, 1) + "\n");
  console.log(`${Object.keys(schema.definitions as Obj).length} definitions written to ${output}`);
}
