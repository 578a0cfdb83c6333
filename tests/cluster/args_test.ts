/** `deno task cluster` argument parsing: the cluster's own flags, and pass-through to the nodes. */
import { assertEquals, assertRejects, assertThrows } from "@std/assert";
import { parseClusterArgs } from "../../src/cluster/args.ts";
import { startCluster } from "../../src/cluster/cluster.ts";
import { CapsuleError } from "../../src/errors.ts";

Deno.test("cluster flags are taken and every other flag goes to the nodes in order", () => {
  const a = parseClusterArgs([
    "--nodes",
    "4",
    "--backend",
    "cpu",
    "--model=/m",
    "--keep-logs",
    "--deadline-ms=500",
  ]);
  assertEquals(a.nodes, 4);
  assertEquals(a.model, "/m");
  assertEquals(a.keepLogs, true);
  assertEquals(a.nodeArgs, ["--backend", "cpu", "--deadline-ms=500"]);
  assertEquals(a.store, undefined);
  assertEquals(parseClusterArgs([]).nodes, 3);
  assertEquals(parseClusterArgs(["--port", "8081", "--ready-timeout", "5"]).port, 8081);
  assertEquals(parseClusterArgs(["--ready-timeout", "5"]).readyTimeoutMs, 5000);
});

Deno.test("bad cluster flags are refused with invalid_argument", () => {
  for (
    const argv of [["--nodes", "0"], ["--nodes", "two"], ["--nodes"], ["--port", "70000"], [
      "--host",
      "0.0.0.0",
    ]]
  ) {
    const e = assertThrows(() => parseClusterArgs(argv), CapsuleError);
    assertEquals(e.code, "invalid_argument", argv.join(" "));
  }
});

Deno.test("a cluster of several nodes refuses a node-private memory: store before starting anything", async () => {
  const e = await assertRejects(() => startCluster({ nodes: 2, store: "memory:" }), CapsuleError);
  assertEquals(e.code, "invalid_argument");
});
