/**
 * Real processes for the restart tests: `deno task sidecar` (as `src/sidecar/main.ts`) and the
 * example agent, with their output captured.
 * @module
 */
import { REPO_ROOT } from "../support/fixtures.ts";

/** A running sidecar process. */
export interface SidecarProcess {
  child: Deno.ChildProcess;
  /** The `listening on …` URL it printed. */
  url: string;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  /** Sends `signal` and waits for the exit. */
  stop(signal: Deno.Signal): Promise<Deno.CommandStatus>;
}

/** Collects a stream's text in the background. */
function collect(
  stream: ReadableStream<Uint8Array>,
  sink: { text: string },
  onLine?: (line: string) => void,
) {
  return (async () => {
    let pending = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      sink.text += chunk;
      pending += chunk;
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        onLine?.(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
    }
  })();
}

/** Starts the sidecar with `args` and resolves once it listens. */
export async function spawnSidecar(args: string[]): Promise<SidecarProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-kv", `${REPO_ROOT}/src/sidecar/main.ts`, ...args],
    cwd: REPO_ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const out = { text: "" };
  const listening = Promise.withResolvers<string>();
  const drained = Promise.all([
    collect(child.stdout, out, (line) => {
      const m = /^listening on (\S+)/.exec(line);
      if (m) listening.resolve(m[1]);
    }),
    collect(child.stderr, out),
  ]);
  void child.status.then((s) =>
    listening.reject(new Error(`sidecar exited (${s.code}) before listening:\n${out.text}`))
  );
  const url = await listening.promise;
  return {
    child,
    url,
    output: () => out.text,
    async stop(signal) {
      child.kill(signal);
      const status = await child.status;
      await drained;
      return status;
    },
  };
}

/** Runs a Deno script to completion and returns its exit code and output. */
export async function runScript(
  script: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO_ROOT}/${script}`, ...args],
    cwd: REPO_ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
}

/** Starts a Deno script and resolves with it once a stdout line matches `ready`. */
export async function spawnUntil(
  script: string,
  args: string[],
  ready: RegExp,
): Promise<{ child: Deno.ChildProcess; output: () => string; done: Promise<unknown> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO_ROOT}/${script}`, ...args],
    cwd: REPO_ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const out = { text: "" };
  const seen = Promise.withResolvers<void>();
  const done = Promise.all([
    collect(child.stdout, out, (line) => {
      if (ready.test(line)) seen.resolve();
    }),
    collect(child.stderr, out),
  ]);
  void child.status.then(() => seen.reject(new Error(`${script} exited before ${ready}:\n${out.text}`)));
  await seen.promise;
  return { child, output: () => out.text, done };
}
