/**
 * Server-Sent Events responses driven by a producer function. The producer learns through its
 * signal when the client goes away, so a generation can stop and commit nothing.
 * @module
 */

/** Sends one event: `event` null sends a bare `data:` line (OpenAI's style). */
export type SendEvent = (event: string | null, data: string) => void;

/** Formats one SSE event (multi-line data split over several `data:` lines). */
export function formatEvent(event: string | null, data: string): string {
  const lines = data.split(/\r\n|\r|\n/).map((l) => `data: ${l}\n`).join("");
  return (event ? `event: ${event}\n` : "") + lines + "\n";
}

/**
 * A `text/event-stream` response whose events `produce` sends. The stream closes when `produce`
 * settles (it must report its own errors as events); a client disconnect aborts `signal`.
 */
export function sseResponse(
  produce: (send: SendEvent, signal: AbortSignal) => Promise<void>,
  headers: Record<string, string> = {},
): Response {
  const ac = new AbortController();
  const enc = new TextEncoder();
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let open = true;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
    cancel() {
      open = false;
      ac.abort(new Error("client disconnected"));
    },
  });
  const send: SendEvent = (event, data) => {
    if (!open) return;
    try {
      controller.enqueue(enc.encode(formatEvent(event, data)));
    } catch {
      open = false;
    }
  };
  // Start producing after the response is handed back (the stream buffers until read).
  queueMicrotask(() => {
    produce(send, ac.signal).catch((e) => {
      // Producers report their own errors as events; this only guards against a crash.
      console.error("SSE producer failed:", e);
    }).finally(() => {
      if (!open) return;
      open = false;
      try {
        controller.close();
      } catch { /* already closed by a cancel */ }
    });
  });
  return new Response(body, {
    status: 200,
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      "x-accel-buffering": "no",
      ...headers,
    },
  });
}
