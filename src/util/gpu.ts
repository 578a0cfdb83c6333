/**
 * Asking the platform for a WebGPU adapter, shared by the WebGPU backend and `--backend auto`'s
 * check of what this process would get.
 * @module
 */

/** A WebGPU adapter, or null when this runtime has no WebGPU or no adapter (a failed request too). */
export async function requestAdapter(
  powerPreference: GPUPowerPreference = "high-performance",
): Promise<GPUAdapter | null> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) return null;
  try {
    return await withRuntimeDir(() => gpu.requestAdapter({ powerPreference }));
  } catch {
    return null;
  }
}

/**
 * Run `open` (an adapter request) with XDG_RUNTIME_DIR set, on Linux when the process has none:
 * Mesa's Vulkan drivers otherwise print "error: XDG_RUNTIME_DIR is invalid or not set in the
 * environment" twice, which is all a server started from a plain shell (`task start`) showed
 * before its first line. The directory is private and empty, and removed again with the variable
 * afterwards, so nothing else (the sidecar's default socket path) sees it. Without permission to
 * touch the environment, `open` just runs.
 */
export async function withRuntimeDir<T>(open: () => Promise<T>): Promise<T> {
  let dir: string | null = null;
  try {
    if (Deno.build.os === "linux" && !Deno.env.get("XDG_RUNTIME_DIR")) {
      dir = Deno.makeTempDirSync({ prefix: "capsule-gpu-" });
      Deno.env.set("XDG_RUNTIME_DIR", dir);
    }
  } catch {
    dir = null;
  }
  try {
    return await open();
  } finally {
    if (dir) {
      Deno.env.delete("XDG_RUNTIME_DIR");
      try {
        Deno.removeSync(dir);
      } catch {
        // Left behind if the driver put something in it: an empty temp directory at worst.
      }
    }
  }
}
