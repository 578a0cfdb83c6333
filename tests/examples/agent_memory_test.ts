/**
 * examples/agent-memory.ts end to end: the agent and the sidecar are real processes; the agent is
 * crashed mid-step and SIGKILLed, the sidecar is SIGKILLed and restarted, and the agent still ends
 * with exactly the memory of an agent that ran without interruption.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { CapsuleClient } from "../../mod.ts";
import { tempDir, testModelDir } from "../sidecar/helpers.ts";
import { runScript, spawnSidecar, spawnUntil } from "../sidecar/process.ts";

const EXAMPLE = "examples/agent-memory.ts";
const STEPS = "4";

Deno.test("the agent survives its own crash, kill -9, and a sidecar restart with the same memory", async () => {
  await using dir = await tempDir("capsule-agent-");
  const socket = `${dir.path}/capsule.sock`;
  const sidecarArgs = [
    "--socket",
    socket,
    "--store",
    `kv:${dir.path}/memory.kvdb`,
    "--model",
    await testModelDir(),
    "--backend",
    "cpu",
  ];
  const agent = (name: string, ...extra: string[]) =>
    runScript(EXAMPLE, ["--socket", socket, "--name", name, "--steps", STEPS, ...extra]);
  const tokenIds = async (name: string) => {
    const c = new CapsuleClient({ socket });
    try {
      return (await c.getSession(name, { includeTokenIds: true })).tokenIds!;
    } finally {
      c.close();
    }
  };

  let sidecar = await spawnSidecar(sidecarArgs);
  try {
    // The reference: one uninterrupted run.
    const ref = await agent("ref");
    assertEquals(ref.code, 0, ref.stderr);
    assertMatch(ref.stdout, /step 4 done/);
    const want = await tokenIds("ref");

    // Crash in step 2 after remembering, before thinking.
    const crashed = await agent("bot", "--crash-after-remember", "2");
    assertEquals(crashed.code, 70, crashed.stderr);
    assertMatch(crashed.stdout, /step 1 done/);
    assert(!crashed.stdout.includes("step 2 done"));

    // The sidecar dies too, and comes back on the same socket with the same store.
    await sidecar.stop("SIGKILL");
    sidecar = await spawnSidecar(sidecarArgs);

    const resumed = await agent("bot");
    assertEquals(resumed.code, 0, resumed.stderr);
    assertMatch(resumed.stdout, /rewound an unfinished step to step-0001/);
    assertMatch(resumed.stdout, /resuming after step 1/);
    assert(!resumed.stdout.includes("step 1 done"), resumed.stdout);
    assertMatch(resumed.stdout, /step 4 done/);
    assertEquals(await tokenIds("bot"), want);

    // kill -9 of the agent wherever it happens to be after its first step.
    const running = await spawnUntil(
      EXAMPLE,
      ["--socket", socket, "--name", "bot2", "--steps", STEPS, "--pause-ms", "50"],
      /step 1 done/,
    );
    running.child.kill("SIGKILL");
    await running.child.status;
    await running.done;
    const again = await agent("bot2");
    assertEquals(again.code, 0, again.stderr);
    assertMatch(again.stdout, /memory bot2: 4 steps/);
    assertEquals(await tokenIds("bot2"), want);
  } finally {
    await sidecar.stop("SIGTERM");
  }
});
