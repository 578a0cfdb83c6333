/**
 * Child processes the local cluster owns: started with their output in a log file, watched for an
 * unexpected exit, and stopped by signal with a deadline after which they are killed.
 * @module
 */

/** A started child process. */
export interface ManagedProcess {
  /** Short name used in messages ("redis", "node-1", "nginx"). */
  readonly name: string;
  readonly pid: number;
  /** File receiving the child's stdout and stderr. */
  readonly log: string;
  /** Resolves when the child exits (for any reason). */
  readonly status: Promise<Deno.CommandStatus>;
  /** True once the child has exited. */
  exited(): boolean;
  /**
   * Sends `signal`, waits up to `graceMs` for the exit, then SIGKILLs. Resolves once the child is
   * gone and its log is flushed. Idempotent.
   */
  stop(signal?: Deno.Signal, graceMs?: number): Promise<Deno.CommandStatus>;
}

/** Options for {@linkcode spawnLogged}. */
export interface SpawnOptions {
  name: string;
  command: string;
  args: string[];
  log: string;
  cwd?: string;
  env?: Record<string, string>;
}

/** `setsid` where it exists (Linux): runs a child in a session of its own. */
function setsidPath(): string | undefined {
  for (const p of ["/usr/bin/setsid", "/bin/setsid"]) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch {
      // not there
    }
  }
  return undefined;
}

/** Copies a byte stream into an open file until the stream ends. */
async function drain(stream: ReadableStream<Uint8Array>, file: Deno.FsFile): Promise<void> {
  for await (const chunk of stream) {
    let off = 0;
    while (off < chunk.length) off += await file.write(chunk.subarray(off));
  }
}

/**
 * Spawns a child with stdin closed and stdout+stderr appended to `log`. Throws `Deno.errors.NotFound`
 * when the binary is missing.
 */
export async function spawnLogged(opts: SpawnOptions): Promise<ManagedProcess> {
  const file = await Deno.open(opts.log, { append: true, create: true });
  // A session of its own keeps the child out of the terminal's process group: Ctrl-C then reaches
  // only the cluster, which stops the children in order (and gracefully) itself. `setsid` execs
  // in place here (the child is no group leader), so the pid stays the child's.
  const setsid = setsidPath();
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(setsid ?? opts.command, {
      args: setsid ? [opts.command, ...opts.args] : opts.args,
      cwd: opts.cwd,
      env: opts.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    file.close();
    throw e;
  }
  const copied = Promise.all([drain(child.stdout, file), drain(child.stderr, file)])
    .catch(() => {}) // a failed log write must not turn into an unhandled rejection
    .finally(() => file.close());
  let done = false;
  // The status resolves only once the output is flushed, so a caller reading the log after
  // `status` sees everything the child wrote.
  const status = child.status.then(async (s) => {
    await copied;
    done = true;
    return s;
  });
  let stopping: Promise<Deno.CommandStatus> | undefined;
  return {
    name: opts.name,
    pid: child.pid,
    log: opts.log,
    status,
    exited: () => done,
    stop(signal: Deno.Signal = "SIGTERM", graceMs = 10_000) {
      if (stopping) return stopping;
      stopping = (async () => {
        if (done) return await status;
        try {
          child.kill(signal);
        } catch {
          // already gone
        }
        let timer: ReturnType<typeof setTimeout> | undefined;
        const timedOut = new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), graceMs));
        const first = await Promise.race([status, timedOut]);
        clearTimeout(timer);
        if (first === "timeout") {
          try {
            child.kill("SIGKILL");
          } catch {
            // exited in between
          }
        }
        return await status;
      })();
      return stopping;
    },
  };
}

/** The last `maxChars` characters of a log file ("" when unreadable). */
export async function logTail(path: string, maxChars = 4000): Promise<string> {
  try {
    const text = await Deno.readTextFile(path);
    return text.length > maxChars ? "…" + text.slice(-maxChars) : text;
  } catch {
    return "";
  }
}

/** A TCP port on 127.0.0.1 that was free a moment ago (callers retry if it is taken meanwhile). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Sleeps `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Whether a binary can be started (`<bin> <versionArg>` exits successfully). */
export async function binaryAvailable(bin: string, versionArg: string): Promise<boolean> {
  try {
    const out = await new Deno.Command(bin, {
      args: [versionArg],
      stdout: "null",
      stderr: "null",
      stdin: "null",
    })
      .output();
    return out.success;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied) return false;
    throw e;
  }
}
