/**
 * Capsule nodes as real child processes on loopback, for the multi-node tests and the load bench:
 * each runs `src/server/main.ts` on a port of its own choosing (`--port 0`) and is ready when it
 * prints `listening on http://…`.
 * @module
 */
import { REPO_ROOT } from "../support/fixtures.ts";

/** A running node. */
export interface NodeProc {
  readonly name: string;
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly child: Deno.ChildProcess;
  readonly status: Promise<Deno.CommandStatus>;
  /** Everything the node wrote to stderr so far (for failure messages). */
  log(): string;
  /** Sends a signal (no-op once exited) and waits for the exit. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

/** Options of {@link startNode}. */
export interface StartNodeOptions {
  name: string;
  model: string;
  store: string;
  extraArgs?: string[];
  env?: Record<string, string>;
  /** Give up when not listening after this long (default 120 s). */
  timeoutMs?: number;
}

/** Starts a node and resolves once it listens; rejects (with its log) if it exits first. */
export async function startNode(o: StartNodeOptions): Promise<NodeProc> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-kv",
      `${REPO_ROOT}/src/server/main.ts`,
      "--model",
      o.model,
      "--store",
      o.store,
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--backend",
      "cpu",
      ...(o.extraArgs ?? []),
    ],
    cwd: REPO_ROOT,
    env: { NO_COLOR: "1", ...o.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  // Drain stderr for the whole life of the process (a full pipe would block the node).
  const errDone = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of child.stderr) stderr += dec.decode(chunk, { stream: true });
  })();
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      if (!exited) child.kill("SIGKILL");
      reject(new Error(`${o.name} did not listen within ${o.timeoutMs ?? 120_000} ms:\n${stderr}`));
    }, o.timeoutMs ?? 120_000);
    (async () => {
      const dec = new TextDecoder();
      let buf = "";
      let found = false;
      for await (const chunk of child.stdout) {
        buf += dec.decode(chunk, { stream: true });
        const m = /listening on (http:\/\/\S+)/.exec(buf);
        if (m && !found) {
          found = true;
          clearTimeout(timer);
          resolve(m[1]);
        }
      }
      if (!found) {
        clearTimeout(timer);
        await status;
        await errDone;
        reject(new Error(`${o.name} exited before listening:\n${stderr}`));
      }
    })();
  });
  return {
    name: o.name,
    url,
    child,
    status,
    log: () => stderr,
    async stop(signal: Deno.Signal = "SIGTERM") {
      if (!exited) {
        try {
          child.kill(signal);
        } catch { /* exited meanwhile */ }
      }
      const s = await status;
      await errDone;
      return s;
    },
  };
}

/** JSON request helper: returns status and parsed body. */
export async function api(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  // deno-lint-ignore no-explicit-any
): Promise<{ status: number; json: any }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch { /* not JSON */ }
  return { status: res.status, json };
}

/** Reads an SSE response event by event. */
export async function* sseEvents(res: Response): AsyncGenerator<{ event: string | null; data: string }> {
  const dec = new TextDecoder();
  let buf = "";
  for await (const chunk of res.body!) {
    buf += dec.decode(chunk, { stream: true });
    let cut: number;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event: string | null = null;
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      yield { event, data: data.join("\n") };
    }
  }
}
