/**
 * Container health check: exits 0 when the local node's `/readyz` answers 200 (model loaded, not
 * draining), 1 otherwise. Used by the image's HEALTHCHECK, where no curl is installed.
 *
 *     deno run --allow-net=127.0.0.1 --allow-env=PORT deploy/healthcheck.ts [port]
 * @module
 */

/** True when `GET <url>/readyz` answers 200 within `timeoutMs`. */
export async function isReady(url: string, timeoutMs = 2000): Promise<boolean> {
  try {
    const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(timeoutMs) });
    await res.body?.cancel();
    return res.status === 200;
  } catch {
    return false;
  }
}

if (import.meta.main) {
  const port = Deno.args[0] ?? Deno.env.get("PORT") ?? "8080";
  Deno.exit((await isReady(`http://127.0.0.1:${port}`)) ? 0 : 1);
}
