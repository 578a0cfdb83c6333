/**
 * Command line of `deno task cluster`: the cluster's own flags, and everything else passed to every
 * node as it is.
 * @module
 */
import { CapsuleError } from "../errors.ts";

/** Parsed `deno task cluster` arguments. */
export interface ClusterArgs {
  nodes: number;
  model?: string;
  store?: string;
  port?: number;
  keepLogs: boolean;
  dir?: string;
  readyTimeoutMs?: number;
  /** Flags for every node (in the order given). */
  nodeArgs: string[];
  help: boolean;
}

/** Usage text. */
export const USAGE = `deno task cluster --nodes N [--model DIR] [service flags…]

Starts redis-server, N Capsule nodes and nginx (round robin, no stickiness) on 127.0.0.1,
prints "READY <load balancer URL>" once every node is ready, and stops them all on
SIGINT/SIGTERM.

  --nodes N            service nodes (default 3)
  --model DIR          model folder for every node (default: the service's default model)
  --store URL          use this shared store instead of starting redis-server
  --port N             load balancer port (default: a free one)
  --dir DIR            folder for configs and logs (default: a new temp folder)
  --keep-logs          keep that folder after a clean stop (it is always kept after a failure)
  --ready-timeout S    seconds each node may take to become ready (default 180)
  other flags          passed to every node as they are, e.g. --backend cpu

Needs redis-server and nginx on PATH (Debian: apt-get install redis-server nginx).`;

/** Flags the cluster sets on every node itself. */
const RESERVED = new Set(["--host"]);

/** Parses the arguments; throws `invalid_argument` on a bad value. */
export function parseClusterArgs(argv: string[]): ClusterArgs {
  const out: ClusterArgs = { nodes: 3, keepLogs: false, nodeArgs: [], help: false };
  const positiveInt = (flag: string, v: string | undefined): number => {
    const n = Number(v);
    if (v === undefined || !/^[0-9]+$/.test(v) || !Number.isSafeInteger(n) || n < 1) {
      throw new CapsuleError("invalid_argument", `${flag} needs a positive integer, got ${v ?? "nothing"}`);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf("=");
    const flag = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    const inline = arg.startsWith("--") && eq > 0 ? arg.slice(eq + 1) : undefined;
    const value = (): string => {
      if (inline !== undefined) return inline;
      const v = argv[++i];
      if (v === undefined) throw new CapsuleError("invalid_argument", `${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case "--nodes":
        out.nodes = positiveInt(flag, value());
        break;
      case "--model":
        out.model = value();
        break;
      case "--store":
        out.store = value();
        break;
      case "--port": {
        const p = positiveInt(flag, value());
        if (p > 65535) throw new CapsuleError("invalid_argument", `--port ${p} is not a TCP port`);
        out.port = p;
        break;
      }
      case "--dir":
        out.dir = value();
        break;
      case "--keep-logs":
        out.keepLogs = true;
        break;
      case "--ready-timeout":
        out.readyTimeoutMs = positiveInt(flag, value()) * 1000;
        break;
      case "-h":
      case "--help":
        out.help = true;
        break;
      default:
        if (RESERVED.has(flag)) {
          throw new CapsuleError(
            "invalid_argument",
            `${flag} is set by the cluster (nodes listen on 127.0.0.1)`,
          );
        }
        out.nodeArgs.push(arg);
    }
  }
  return out;
}
