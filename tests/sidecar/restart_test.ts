/**
 * `deno task sidecar` as a real process: memory kept in its Deno KV file survives a SIGKILL and a
 * restart (which reclaims the stale socket); SIGTERM shuts down cleanly and removes the socket.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { CapsuleClient } from "../../mod.ts";
import { PROMPT, tempDir, testModelDir } from "./helpers.ts";
import { spawnSidecar } from "./process.ts";
import { REPO_ROOT } from "../support/fixtures.ts";

Deno.test("memory in the default KV store survives kill -9 and restart of the sidecar", async () => {
  await using dir = await tempDir("capsule-sidecar-");
  const socket = `${dir.path}/capsule.sock`;
  const args = [
    "--socket",
    socket,
    "--data-dir",
    `${dir.path}/data`,
    "--model",
    await testModelDir(),
    "--backend",
    "cpu",
  ];
  let sidecar = await spawnSidecar(args);
  try {
    assertEquals(sidecar.url, `unix:${socket}`);
    let c = new CapsuleClient(sidecar.url);
    await c.open("agent");
    await c.remember("agent", PROMPT);
    const cp = await c.checkpoint("agent", "start");
    const before = await c.recall("agent", { maxTokens: 5, ignoreEos: true }).result;
    const ids = (await c.getSession("agent", { includeTokenIds: true })).tokenIds;
    c.close();

    const killed = await sidecar.stop("SIGKILL");
    assertEquals(killed.signal, "SIGKILL");
    assert((await Deno.lstat(socket)).isSocket, "a killed sidecar leaves its socket behind");
    // The default store is a KV file in the data dir.
    assert((await Deno.stat(`${dir.path}/data/memory.kvdb`)).isFile);

    sidecar = await spawnSidecar(args);
    c = new CapsuleClient(sidecar.url);
    const after = await c.getSession("agent", { includeTokenIds: true });
    assertEquals([after.version, after.tokenIds], [before.version, ids]);
    assertEquals((await c.checkpoints("agent")).map((x) => [x.name, x.tokens]), [["start", cp.tokens]]);
    // It continues from where it was: rewinding and recalling repeats the first recall exactly.
    await c.rewind("agent", "start");
    assertEquals(
      (await c.recall("agent", { maxTokens: 5, ignoreEos: true }).result).outputIds,
      before.outputIds,
    );
    c.close();

    const status = await sidecar.stop("SIGTERM");
    assertEquals(status.code, 0, sidecar.output());
    await assertRejects(() => Deno.lstat(socket), Deno.errors.NotFound);
  } finally {
    try {
      sidecar.child.kill("SIGKILL");
    } catch { /* already gone */ }
    await sidecar.child.status;
  }
});

Deno.test("configuration mistakes exit with status 2 and a message", async () => {
  const r = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-kv",
      `${REPO_ROOT}/src/sidecar/main.ts`,
      "--socket",
      "/tmp/x.sock",
      "--port",
      "1",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(r.code, 2);
  assert(new TextDecoder().decode(r.stderr).includes("not both"));
  const m = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-kv",
      `${REPO_ROOT}/src/sidecar/main.ts`,
      "--model",
      "/nonexistent-model",
      "--store",
      "memory:",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(m.code, 2);
  assert(new TextDecoder().decode(m.stderr).includes("--model"));
});
