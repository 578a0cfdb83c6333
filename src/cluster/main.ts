/**
 * `deno task cluster --nodes N [--model DIR] [service flags…]`: a local multi-node Capsule behind
 * nginx. Prints `READY <load balancer URL>` on stdout once every node is ready (progress goes to
 * stderr), then runs until SIGINT/SIGTERM, when it stops everything it started. If any of its
 * processes dies on its own, it stops the rest and exits with status 1.
 * @module
 */
import { isCapsuleError } from "../errors.ts";
import { parseClusterArgs, USAGE } from "./args.ts";
import { type Cluster, startCluster } from "./cluster.ts";
import { binaryAvailable } from "./process.ts";
import { redisBinary } from "./redis.ts";
import { nginxBinary } from "./nginx.ts";

/** Runs the CLI; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseClusterArgs(argv);
  } catch (e) {
    console.error(`${e instanceof Error ? e.message : e}\n\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  const missing: string[] = [];
  if (args.store === undefined && !(await binaryAvailable(redisBinary(), "--version"))) {
    missing.push("redis-server");
  }
  if (!(await binaryAvailable(nginxBinary(), "-v"))) missing.push("nginx");
  if (missing.length) {
    console.error(
      `cluster: ${missing.join(" and ")} not found; install with: apt-get install -y ${missing.join(" ")}`,
    );
    return 1;
  }

  // Signals that arrive while starting must still stop what was started.
  let signalled: Deno.Signal | undefined;
  let onSignal: (s: Deno.Signal) => void = (s) => signalled = s;
  const handlers = (["SIGINT", "SIGTERM"] as const).map((sig) => {
    const h = () => onSignal(sig);
    Deno.addSignalListener(sig, h);
    return [sig, h] as const;
  });

  let cluster: Cluster;
  try {
    cluster = await startCluster({
      nodes: args.nodes,
      model: args.model,
      store: args.store,
      port: args.port,
      dir: args.dir,
      keepLogs: args.keepLogs,
      readyTimeoutMs: args.readyTimeoutMs,
      nodeArgs: args.nodeArgs,
      log: (line) => console.error(`cluster: ${line}`),
    });
  } catch (e) {
    console.error(`cluster: ${isCapsuleError(e) ? e.message : e}`);
    const log = isCapsuleError(e) ? e.details?.log : undefined;
    if (typeof log === "string" && log) console.error(log);
    for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
    return 1;
  }

  const stopRequested = new Promise<Deno.Signal>((resolve) => {
    onSignal = resolve;
    if (signalled) resolve(signalled);
  });
  console.error(`cluster: logs in ${cluster.dir}`);
  console.log(`READY ${cluster.url}`);

  const outcome = await Promise.race([
    stopRequested.then((sig) => ({ kind: "signal" as const, sig })),
    cluster.done.then((exit) => ({ kind: "exit" as const, exit })),
  ]);
  if (outcome.kind === "signal") {
    console.error(`cluster: ${outcome.sig}, stopping`);
    await cluster.stop();
    console.error("cluster: stopped");
  } else {
    console.error(
      `cluster: ${outcome.exit.component} failed; everything stopped (logs kept in ${cluster.dir})`,
    );
  }
  for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
  return outcome.kind === "signal" ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
