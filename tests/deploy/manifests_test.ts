/**
 * The deployment manifests are checked here since no container engine or cluster runs in CI:
 * Compose and Kubernetes YAML against their vendored JSON schemas (and cross-references the
 * schemas cannot express), the Dockerfile's pins and hardening, and nginx configs.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { parse, parseAllDocuments } from "yaml";
import { REPO_ROOT } from "../support/fixtures.ts";
import {
  crossCheckKubernetes,
  formatIssue,
  type ManifestIssue,
  validateCompose,
  validateDeployDir,
  validateKubernetes,
} from "../../deploy/validate.ts";
import { isReady } from "../../deploy/healthcheck.ts";
import { nginxBinary, PROXY_DIRECTIVES, renderNginxConfig } from "../../src/cluster/nginx.ts";
import { binaryAvailable } from "../../src/cluster/process.ts";
import { inCI } from "../support/redis.ts";

const DEPLOY = `${REPO_ROOT}/deploy`;
const read = (rel: string) => Deno.readTextFileSync(`${DEPLOY}/${rel}`);

/** Replaces `from` (which must occur) in `text`. */
function mutate(text: string, from: string | RegExp, to: string): string {
  const out = text.replace(from, to);
  assert(out !== text, `mutation target ${from} not found`);
  return out;
}

function messages(issues: ManifestIssue[]): string {
  return issues.map(formatIssue).join("\n");
}

// deno-lint-ignore no-explicit-any
type Doc = Record<string, any>;

function k8sDocs(rel: string): Doc[] {
  return parseAllDocuments(read(rel)).map((d) => d.toJS() as Doc);
}

Deno.test("every shipped manifest validates against its schema and cross-references", async () => {
  const issues = await validateDeployDir(DEPLOY);
  assertEquals(issues, [], messages(issues));
});

Deno.test("the vendored Compose schema rejects a misspelt service key", async () => {
  const broken = mutate(read("compose.yaml"), "stop_grace_period:", "stop_grace_periode:");
  const issues = await validateCompose(broken, "broken-compose.yaml");
  assertMatch(messages(issues), /services\/capsule.*additional properties \(stop_grace_periode\)/);
});

Deno.test("the Compose check rejects a malformed duration and a replica count that is not a number", async () => {
  const badDuration = mutate(read("compose.yaml"), "interval: 5s", "interval: 5 seconds");
  assertMatch(messages(await validateCompose(badDuration)), /healthcheck\/interval.*format "duration"/);
  const badReplicas = mutate(read("compose.yaml"), "replicas: 3", 'replicas: "three"');
  assertMatch(messages(await validateCompose(badReplicas)), /deploy\/replicas: must be integer/);
});

Deno.test("the Compose check rejects depends_on naming a service that does not exist", async () => {
  const broken = mutate(read("compose.yaml"), /depends_on:\n {6}redis:/, "depends_on:\n      redis-cache:");
  assertMatch(messages(await validateCompose(broken)), /unknown service "redis-cache"/);
});

Deno.test("the Kubernetes schema rejects a misspelt probe field in the node Deployment", async () => {
  const broken = mutate(read("k8s/capsule.yaml"), "readinessProbe:", "readinesProbe:");
  const issues = await validateKubernetes(broken, "broken-capsule.yaml");
  assertMatch(
    messages(issues),
    /broken-capsule\.yaml#0 \/spec\/template\/spec\/containers\/0: .*\(readinesProbe\)/,
  );
});

Deno.test("the Kubernetes schema rejects wrong types, unknown kinds and nameless objects", async () => {
  const text = read("k8s/capsule.yaml");
  assertMatch(
    messages(await validateKubernetes(mutate(text, "replicas: 3", 'replicas: "3"'))),
    /\/spec\/replicas: must be integer/,
  );
  assertMatch(
    messages(await validateKubernetes(mutate(text, "kind: Deployment", "kind: Deploymnet"))),
    /must match a schema in anyOf/,
  );
  assertMatch(
    messages(await validateKubernetes(mutate(text, /metadata:\n {2}name: capsule\n/, "metadata:\n"))),
    /\/metadata: must have required property 'name'/,
  );
  const yamlError = await validateKubernetes("apiVersion: v1\nkind: [Secret\n");
  assertMatch(messages(yamlError), /YAML:/);
});

Deno.test("cross-checks catch a Service that selects nothing and a Deployment reading a missing Secret", () => {
  const objects = ["k8s/capsule.yaml", "k8s/configmap.yaml", "k8s/secret.yaml", "k8s/redis.yaml"].flatMap((
    f,
  ) => k8sDocs(f).map((object) => ({ file: f, object: object as never })));
  assertEquals(crossCheckKubernetes(objects), []);
  const service = objects.find((o) =>
    (o.object as Doc).kind === "Service" && (o.object as Doc).metadata.name === "capsule"
  )!;
  (service.object as Doc).spec.selector = { "app.kubernetes.io/name": "capsul" };
  const withoutSecret = objects.filter((o) => (o.object as Doc).kind !== "Secret");
  const text = messages(crossCheckKubernetes(withoutSecret));
  assertStringIncludes(text, "Service capsule selects no Deployment's pods");
  assertStringIncludes(text, "Deployment capsule uses missing Secret capsule-secrets");
});

Deno.test("the node Deployment requests a GPU, probes /readyz and /healthz and drains before it is killed", () => {
  const deployment = k8sDocs("k8s/capsule.yaml").find((d) => d.kind === "Deployment")!;
  const pod = deployment.spec.template.spec;
  const c = pod.containers[0];
  assertEquals(c.resources.limits["nvidia.com/gpu"], 1);
  assertEquals(c.readinessProbe.httpGet.path, "/readyz");
  assertEquals(c.livenessProbe.httpGet.path, "/healthz");
  const preStopSeconds = Number(c.lifecycle.preStop.exec.command.at(-1));
  assert(preStopSeconds > 0);
  // The grace period must cover the preStop pause plus the service's default request deadline
  // (120 s), or Kubernetes kills a node before it has committed what it is generating.
  assert(
    pod.terminationGracePeriodSeconds >= preStopSeconds + 120,
    `grace ${pod.terminationGracePeriodSeconds}`,
  );
  assertEquals(pod.securityContext.runAsNonRoot, true);
  assertEquals(deployment.spec.strategy.rollingUpdate.maxUnavailable, 0);

  const service = k8sDocs("k8s/capsule.yaml").find((d) => d.kind === "Service")!;
  assertEquals(service.spec.sessionAffinity, "None");

  const config = k8sDocs("k8s/configmap.yaml")[0].data;
  const redisService = k8sDocs("k8s/redis.yaml").find((d) => d.kind === "Service")!;
  assertEquals(
    config.CAPSULE_STORE,
    `redis://${redisService.metadata.name}:${redisService.spec.ports[0].port}`,
  );
  const secret = k8sDocs("k8s/secret.yaml")[0];
  assertEquals(Object.keys(secret.stringData).sort(), ["CAPSULE_KEY", "CAPSULE_TOKENS"]);
});

Deno.test("compose: nodes share the Redis service, reserve a GPU, and nginx fronts them", () => {
  const compose = parse(read("compose.yaml")) as Doc;
  const node = compose.services.capsule;
  assertEquals(node.environment.CAPSULE_STORE, "redis://redis:6379");
  assertEquals(node.deploy.resources.reservations.devices[0].capabilities, ["gpu"]);
  assert(node.deploy.replicas >= 2);
  assertEquals(node.build.dockerfile, "deploy/Dockerfile");
  const nginx = compose.services.nginx;
  assert(nginx.volumes.includes("./nginx.conf:/etc/nginx/nginx.conf:ro"));
  assertEquals(Object.keys(nginx.depends_on), ["capsule"]);

  // nginx's upstream is the node service on the port the nodes listen on.
  const conf = read("nginx.conf");
  const upstream = conf.match(/upstream capsule_nodes \{([^}]*)\}/)![1];
  assertMatch(upstream, new RegExp(`server capsule:${node.environment.PORT} resolve`));
});

/** The directives inside the `location / { … }` block of an nginx config. */
function locationDirectives(conf: string): string[] {
  const body = conf.match(/location \/ \{([^}]*)\}/)![1];
  return body.replace(/#[^\n]*/g, "").split(";").map((d) => d.trim().replace(/\s+/g, " ")).filter((d) => d);
}

Deno.test("deploy/nginx.conf proxies like the local cluster: same directives, round robin, no stickiness", () => {
  const conf = read("nginx.conf");
  const deployed = locationDirectives(conf).filter((d) => !d.startsWith("proxy_pass "));
  assertEquals(deployed, [...PROXY_DIRECTIVES]);
  const local = renderNginxConfig({ dir: "/tmp/x", port: 1, upstreamPorts: [2, 3] });
  assertEquals(
    locationDirectives(local).filter((d) => !d.startsWith("proxy_pass ") && !d.startsWith("add_header ")),
    [...PROXY_DIRECTIVES],
  );
  for (const text of [conf, local]) {
    // Any of these would pin a client or a session to one node.
    assert(!/\b(ip_hash|hash|sticky|least_conn|random)\b/.test(text.replace(/#[^\n]*/g, "")));
    assertStringIncludes(text, "proxy_buffering off");
  }
});

Deno.test({
  name: "the local cluster's generated nginx config passes nginx -t",
  // Under CI nginx is required (.ci/run installs it): a missing one fails instead of skipping.
  ignore: !inCI() && !(await binaryAvailable(nginxBinary(), "-v")),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "capsule-nginx-t-" });
    try {
      await Deno.mkdir(`${dir}/nginx-tmp`);
      await Deno.writeTextFile(
        `${dir}/nginx.conf`,
        renderNginxConfig({ dir, port: 1, upstreamPorts: [2, 3, 4] }),
      );
      const out = await new Deno.Command(nginxBinary(), {
        args: ["-t", "-p", dir, "-c", `${dir}/nginx.conf`, "-e", `${dir}/err.log`],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stderr);
      assert(out.success, text);
      assertStringIncludes(text, "syntax is ok");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** `X.Y.Z` from `deno@X.Y.Z` mentions in a file (none when the file is missing). */
function denoPins(path: string): string[] {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch {
    return [];
  }
  return [...text.matchAll(/deno@(\d+\.\d+\.\d+)/g)].map((m) => m[1]);
}

Deno.test("the Dockerfile pins the official Deno image to the Deno version CI and the docs use", () => {
  const dockerfile = read("Dockerfile");
  const from = dockerfile.match(/^FROM denoland\/deno:(?:[a-z]+-)?(\d+\.\d+\.\d+)\s*$/m);
  assert(from, "FROM must name denoland/deno with an exact version");
  const pins = [`${REPO_ROOT}/.ci/run`, `${REPO_ROOT}/README.md`, `${DEPLOY}/README.md`].flatMap(denoPins);
  assert(pins.length > 0, "no deno@X.Y.Z pin found in .ci/run, README.md or deploy/README.md");
  for (const pin of pins) assertEquals(pin, from[1], `Dockerfile uses Deno ${from[1]}, elsewhere ${pin}`);
});

Deno.test("the Dockerfile runs as a non-root user, checks /readyz and caches dependencies at build time", () => {
  const lines = read("Dockerfile").split("\n").filter((l) => !l.trimStart().startsWith("#"));
  const text = lines.join("\n");
  const users = [...text.matchAll(/^USER\s+(\S+)/gm)].map((m) => m[1]);
  assert(users.length > 0, "no USER");
  assert(!["root", "0", "0:0"].includes(users.at(-1)!), `runs as ${users.at(-1)}`);
  const userAt = text.search(/^USER\s/m);
  assert(userAt < text.search(/^CMD\s/m), "USER must come before CMD");
  assertMatch(text, /^HEALTHCHECK .*\\\n\s+CMD \[.*"deploy\/healthcheck\.ts"\]/m);
  assertMatch(text, /^RUN deno install --frozen/m);
  assertMatch(text, /^CMD \[.*"src\/server\/main\.ts".*\]/m);
});

/**
 * Repository files a module reaches through `new URL("<relative>", import.meta.url)`: data it reads
 * at run time (WGSL kernels, the default model) and Worker scripts. Template literals count up to
 * their first `${`, so `../../../kernels/${name}` names the `kernels` folder.
 */
function runtimeTargets(file: string): string[] {
  const text = Deno.readTextFileSync(`${REPO_ROOT}/${file}`);
  const out: string[] = [];
  for (
    const m of text.matchAll(/new URL\(\s*(?:"([^"]*)"|'([^']*)'|`([^`$]*))[^)]*import\.meta\.url\s*\)/g)
  ) {
    const rel = m[1] ?? m[2] ?? m[3];
    const target = decodeURIComponent(new URL(rel, `file://${REPO_ROOT}/${file}`).pathname);
    // A URL of a folder above the module (e.g. the repository root itself) names no file.
    if (`${REPO_ROOT}/`.startsWith(target.replace(/\/?$/, "/"))) continue;
    out.push(
      target.startsWith(`${REPO_ROOT}/`) ? target.slice(REPO_ROOT.length + 1).replace(/\/$/, "") : target,
    );
  }
  return out;
}

Deno.test("every module and data file the service loads is copied into the image", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", `${REPO_ROOT}/src/server/main.ts`],
    cwd: REPO_ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(out.success, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as { modules: { specifier: string }[] };
  const modules = info.modules.map((m) => m.specifier).filter((s) => s.startsWith("file://"))
    .map((s) => decodeURIComponent(new URL(s).pathname).slice(REPO_ROOT.length + 1));
  assert(modules.length > 10, `only ${modules.length} local modules`);
  const dataFiles = modules.flatMap(runtimeTargets);
  // The WGSL kernels are read at run time, not imported; the scan must see them.
  assert(dataFiles.includes("kernels"), `kernels/ not found among ${dataFiles.join(", ")}`);
  const copied = [...read("Dockerfile").matchAll(/^COPY\s+(\S+)\s+\S+/gm)].map((m) =>
    m[1].replace(/\/$/, "")
  );
  const allowed = read("Dockerfile.dockerignore").split("\n").filter((l) => l.startsWith("!"))
    .map((l) => l.slice(1).replace(/\/$/, ""));
  for (const f of [...modules, ...dataFiles]) {
    const under = (p: string) => f === p || f.startsWith(`${p}/`);
    assert(copied.some(under), `${f} is used by the service but not copied into the image`);
    assert(allowed.some(under), `${f} is excluded from the build context by Dockerfile.dockerignore`);
    assert(!f.endsWith("_test.ts"), `the service imports a test file: ${f}`);
  }
});

Deno.test("the health check script passes on 200 from /readyz and fails on 503 or no server", async () => {
  let status = 200;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    return new URL(req.url).pathname === "/readyz"
      ? new Response("", { status })
      : new Response("", { status: 404 });
  });
  const url = `http://127.0.0.1:${server.addr.port}`;
  try {
    assertEquals(await isReady(url), true);
    status = 503;
    assertEquals(await isReady(url), false);
  } finally {
    await server.shutdown();
  }
  assertEquals(await isReady(url), false);
});
