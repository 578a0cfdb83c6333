import { assert, assertEquals } from "@std/assert";
import { withRuntimeDir } from "./gpu.ts";

Deno.test({
  name: "an adapter request without XDG_RUNTIME_DIR gets a private one, gone again afterwards",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const had = Deno.env.get("XDG_RUNTIME_DIR");
    Deno.env.delete("XDG_RUNTIME_DIR");
    try {
      let seen = "";
      const result = await withRuntimeDir(() => {
        seen = Deno.env.get("XDG_RUNTIME_DIR") ?? "";
        assert(seen !== "", "XDG_RUNTIME_DIR is set while the adapter is requested");
        const st = Deno.statSync(seen);
        assert(st.isDirectory, "it names a directory");
        assertEquals((st.mode ?? 0) & 0o777, 0o700, "private to the user");
        return Promise.resolve(42);
      });
      assertEquals(result, 42);
      assertEquals(Deno.env.get("XDG_RUNTIME_DIR"), undefined, "the variable is removed afterwards");
      let exists = true;
      try {
        Deno.statSync(seen);
      } catch {
        exists = false;
      }
      assert(!exists, "the directory is removed afterwards");
      // A failing request still restores the environment.
      let threw = false;
      try {
        await withRuntimeDir(() => Promise.reject(new Error("no adapter")));
      } catch {
        threw = true;
      }
      assert(threw);
      assertEquals(Deno.env.get("XDG_RUNTIME_DIR"), undefined);
    } finally {
      if (had !== undefined) Deno.env.set("XDG_RUNTIME_DIR", had);
    }
  },
});

Deno.test("an XDG_RUNTIME_DIR the process has is left as it is", async () => {
  const had = Deno.env.get("XDG_RUNTIME_DIR");
  Deno.env.set("XDG_RUNTIME_DIR", "/run/user/4242");
  try {
    const seen = await withRuntimeDir(() => Promise.resolve(Deno.env.get("XDG_RUNTIME_DIR")));
    assertEquals(seen, "/run/user/4242");
    assertEquals(Deno.env.get("XDG_RUNTIME_DIR"), "/run/user/4242");
  } finally {
    if (had === undefined) Deno.env.delete("XDG_RUNTIME_DIR");
    else Deno.env.set("XDG_RUNTIME_DIR", had);
  }
});
