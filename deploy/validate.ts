/**
 * Validates the deployment manifests without a container engine or a cluster: the Compose file
 * against the Compose Specification schema, and every Kubernetes object against a strict subset of
 * the Kubernetes OpenAPI definitions (unknown fields rejected). Both schemas are vendored under
 * `deploy/schemas/` so validation needs no network.
 *
 *     deno run --allow-read --allow-env deploy/validate.ts        # validates deploy/compose.yaml and deploy/k8s/*.yaml
 * @module
 */
import { Ajv2019 } from "ajv/dist/2019.js";
import type { ErrorObject, ValidateFunction } from "ajv/dist/2019.js";
import { parseAllDocuments } from "yaml";

/** One problem found in a manifest. */
export interface ManifestIssue {
  /** The file (or a label for in-memory text). */
  file: string;
  /** Index of the YAML document within the file (0 for single-document files). */
  document: number;
  /** JSON pointer of the offending value ("" for the document itself). */
  path: string;
  message: string;
}

const SCHEMA_DIR = new URL("./schemas/", import.meta.url);

/** Go-style durations as Compose accepts them ("10s", "1m30s", "500ms"). */
const DURATION = /^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$/;
/** `[host_ip:][published[-range]:]target[-range][/protocol]`, e.g. "8080:80", "127.0.0.1:80:80/tcp". */
const PORTS = /^(([0-9.]+|\[[0-9a-fA-F:]+\]):)?(([0-9]+(-[0-9]+)?)?:)?[0-9]+(-[0-9]+)?(\/(tcp|udp|sctp))?$/;
const EXPOSE = /^[0-9]+(-[0-9]+)?(\/(tcp|udp|sctp))?$/;
const SUBNET = /^([0-9]{1,3}\.){3}[0-9]{1,3}\/[0-9]{1,2}$|^[0-9a-fA-F:]+\/[0-9]{1,3}$/;

function newAjv(): Ajv2019 {
  const ajv = new Ajv2019({ allErrors: true, strict: true, allowUnionTypes: true });
  // The Compose schema carries draft-04 style `id` annotations, which Ajv refuses by default; here
  // they are plain annotations (no `$ref` uses them).
  ajv.removeKeyword("id");
  ajv.addKeyword("id");
  ajv.addFormat("duration", DURATION);
  ajv.addFormat("ports", PORTS);
  ajv.addFormat("expose", EXPOSE);
  ajv.addFormat("subnet_ip_address", SUBNET);
  return ajv;
}

async function loadSchema(name: string): Promise<Record<string, unknown>> {
  const schema = JSON.parse(await Deno.readTextFile(new URL(name, SCHEMA_DIR)));
  // The vendored Compose schema names its meta-schema with a non-canonical URI Ajv does not
  // register; the content is 2019-09, which is what Ajv2019 compiles.
  delete schema.$schema;
  return schema;
}

let composeValidator: ValidateFunction | undefined;
let kubernetesValidator: ValidateFunction | undefined;

async function compose(): Promise<ValidateFunction> {
  return composeValidator ??= newAjv().compile(await loadSchema("compose-spec.json"));
}

async function kubernetes(): Promise<ValidateFunction> {
  return kubernetesValidator ??= newAjv().compile(await loadSchema("kubernetes-1.13-strict.json"));
}

function toIssues(file: string, document: number, errors: ErrorObject[] | null | undefined): ManifestIssue[] {
  return (errors ?? []).map((e) => {
    const extra = e.keyword === "additionalProperties"
      ? ` (${(e.params as { additionalProperty: string }).additionalProperty})`
      : e.keyword === "const" || e.keyword === "enum"
      ? ` (${JSON.stringify(e.params)})`
      : "";
    return { file, document, path: e.instancePath, message: `${e.message ?? e.keyword}${extra}` };
  });
}

/** Parses YAML text into documents; syntax errors become issues (and no document). */
function parseYaml(text: string, file: string): { docs: unknown[]; issues: ManifestIssue[] } {
  const docs: unknown[] = [];
  const issues: ManifestIssue[] = [];
  parseAllDocuments(text).forEach((doc, i) => {
    if (doc.errors.length) {
      for (const e of doc.errors) issues.push({ file, document: i, path: "", message: `YAML: ${e.message}` });
      return;
    }
    // Compose files use anchors and merge keys (`<<: *node`) to share one node definition.
    const value = doc.toJS({ maxAliasCount: 1000 });
    if (value !== null && value !== undefined) docs.push(value);
  });
  return { docs, issues };
}

/**
 * Issues in a Compose file: schema violations, plus references the schema cannot check
 * (`depends_on` naming a service that does not exist).
 */
export async function validateCompose(text: string, file = "compose.yaml"): Promise<ManifestIssue[]> {
  const { docs, issues } = parseYaml(text, file);
  if (issues.length) return issues;
  if (docs.length !== 1) {
    return [{ file, document: 0, path: "", message: `expected one YAML document, got ${docs.length}` }];
  }
  const doc = docs[0];
  const validate = await compose();
  if (!validate(doc)) return toIssues(file, 0, validate.errors);
  const services = (doc as { services?: Record<string, { depends_on?: unknown }> }).services ?? {};
  const out: ManifestIssue[] = [];
  if (Object.keys(services).length === 0) {
    out.push({ file, document: 0, path: "/services", message: "no services" });
  }
  for (const [name, svc] of Object.entries(services)) {
    const deps = svc.depends_on;
    const names = Array.isArray(deps) ? deps : deps && typeof deps === "object" ? Object.keys(deps) : [];
    for (const dep of names) {
      if (!(dep in services)) {
        out.push({
          file,
          document: 0,
          path: `/services/${name}/depends_on`,
          message: `unknown service "${dep}"`,
        });
      }
    }
  }
  return out;
}

/** Issues in a (multi-document) Kubernetes YAML file; every document must be a known kind. */
export async function validateKubernetes(text: string, file = "manifest.yaml"): Promise<ManifestIssue[]> {
  const { docs, issues } = parseYaml(text, file);
  if (issues.length) return issues;
  if (docs.length === 0) return [{ file, document: 0, path: "", message: "no Kubernetes objects" }];
  const validate = await kubernetes();
  const out: ManifestIssue[] = [];
  docs.forEach((doc, i) => {
    if (!validate(doc)) out.push(...toIssues(file, i, validate.errors));
  });
  return out;
}

/** A Kubernetes object as far as cross-checks need it. */
interface K8sObject {
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
}

/** ConfigMaps and Secrets a Deployment's pods read (env, envFrom, volumes). */
function referencedConfig(deployment: K8sObject): ["ConfigMap" | "Secret", string][] {
  type Named = { name?: string };
  type Container = {
    env?: { valueFrom?: { configMapKeyRef?: Named; secretKeyRef?: Named } }[];
    envFrom?: { configMapRef?: Named; secretRef?: Named }[];
  };
  const pod = (deployment.spec?.template as { spec?: Record<string, unknown> } | undefined)?.spec ?? {};
  const containers = [...(pod.containers as Container[] ?? []), ...(pod.initContainers as Container[] ?? [])];
  const refs: ["ConfigMap" | "Secret", string | undefined][] = [];
  for (const c of containers) {
    for (const e of c.env ?? []) {
      refs.push(["ConfigMap", e.valueFrom?.configMapKeyRef?.name], [
        "Secret",
        e.valueFrom?.secretKeyRef?.name,
      ]);
    }
    for (const e of c.envFrom ?? []) {
      refs.push(["ConfigMap", e.configMapRef?.name], ["Secret", e.secretRef?.name]);
    }
  }
  for (const v of (pod.volumes as { configMap?: Named; secret?: { secretName?: string } }[] ?? [])) {
    refs.push(["ConfigMap", v.configMap?.name], ["Secret", v.secret?.secretName]);
  }
  return refs.filter((r): r is ["ConfigMap" | "Secret", string] => r[1] !== undefined);
}

/**
 * Cross-object checks over all Kubernetes files: names unique per kind, every Service selector
 * matches some Deployment's pod labels, and every ConfigMap/Secret a Deployment reads exists.
 */
export function crossCheckKubernetes(objects: { file: string; object: K8sObject }[]): ManifestIssue[] {
  const out: ManifestIssue[] = [];
  const byKind = new Map<string, Set<string>>();
  for (const { file, object } of objects) {
    const names = byKind.get(object.kind) ?? new Set<string>();
    if (names.has(object.metadata.name)) {
      out.push({
        file,
        document: 0,
        path: "/metadata/name",
        message: `duplicate ${object.kind} ${object.metadata.name}`,
      });
    }
    names.add(object.metadata.name);
    byKind.set(object.kind, names);
  }
  const podLabels = objects
    .filter((o) => o.object.kind === "Deployment")
    .map((o) =>
      ((o.object.spec?.template as { metadata?: { labels?: Record<string, string> } })?.metadata?.labels) ??
        {}
    );
  for (const { file, object } of objects) {
    if (object.kind === "Service") {
      const selector = (object.spec?.selector ?? {}) as Record<string, string>;
      const hit = podLabels.some((labels) => Object.entries(selector).every(([k, v]) => labels[k] === v));
      if (!hit) {
        out.push({
          file,
          document: 0,
          path: "/spec/selector",
          message: `Service ${object.metadata.name} selects no Deployment's pods`,
        });
      }
    }
    if (object.kind === "Deployment") {
      for (const [kind, name] of referencedConfig(object)) {
        if (!byKind.get(kind)?.has(name)) {
          out.push({
            file,
            document: 0,
            path: "/spec/template/spec",
            message: `Deployment ${object.metadata.name} uses missing ${kind} ${name}`,
          });
        }
      }
    }
  }
  return out;
}

/** Validates `compose.yaml` and every `k8s/*.yaml` under a deploy folder (schemas and cross-checks). */
export async function validateDeployDir(dir: string | URL): Promise<ManifestIssue[]> {
  const base = typeof dir === "string" ? dir.replace(/\/$/, "") : dir.pathname.replace(/\/$/, "");
  const out: ManifestIssue[] = [];
  const composePath = `${base}/compose.yaml`;
  out.push(...await validateCompose(await Deno.readTextFile(composePath), composePath));
  const objects: { file: string; object: K8sObject }[] = [];
  const files = [...Deno.readDirSync(`${base}/k8s`)].filter((e) => e.isFile && /\.ya?ml$/.test(e.name)).map((
    e,
  ) => e.name).sort();
  if (files.length === 0) out.push({ file: `${base}/k8s`, document: 0, path: "", message: "no manifests" });
  for (const name of files) {
    const path = `${base}/k8s/${name}`;
    const text = await Deno.readTextFile(path);
    const issues = await validateKubernetes(text, path);
    out.push(...issues);
    if (issues.length === 0) {
      for (const object of parseYaml(text, path).docs) {
        objects.push({ file: path, object: object as K8sObject });
      }
    }
  }
  out.push(...crossCheckKubernetes(objects));
  return out;
}

/** `file#doc path: message` */
export function formatIssue(i: ManifestIssue): string {
  return `${i.file}#${i.document} ${i.path || "/"}: ${i.message}`;
}

if (import.meta.main) {
  const dir = Deno.args[0] ?? new URL(".", import.meta.url).pathname;
  const issues = await validateDeployDir(dir);
  for (const i of issues) console.error(formatIssue(i));
  console.log(issues.length === 0 ? "manifests valid" : `${issues.length} manifest issue(s)`);
  Deno.exit(issues.length === 0 ? 0 : 1);
}
