/**
 * A Server-Sent Events reader (the `text/event-stream` format of the WHATWG HTML standard):
 * bytes in, one object per dispatched event out. Lines end in CRLF, LF or CR; `data:` lines of one
 * event are joined with newlines; comments (`:`) and fields we do not use are skipped.
 * @module
 */

/** One dispatched event. */
export interface SseEvent {
  /** The `event:` field; "message" when the event named none. */
  event: string;
  /** The `data:` lines joined with "\n". */
  data: string;
  /** The last `id:` seen so far in the stream ("" when none). */
  id: string;
}

/**
 * Parses a byte stream into events. The stream is released (cancelled when unfinished) when the
 * consumer stops iterating, so breaking out of a `for await` also drops the HTTP connection.
 */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent, void> {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let event = "";
  let data: string[] = [];
  let id = "";
  let finished = false;
  // A CR at the very end of a chunk may be the first half of a CRLF split across chunks.
  let pendingCr = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        finished = true;
        // Per the standard an event not terminated by a blank line is discarded at end of stream.
        return;
      }
      let text = value;
      if (pendingCr && text.startsWith("\n")) text = text.slice(1);
      pendingCr = false;
      buf += text;
      for (;;) {
        const m = /\r\n|\r|\n/.exec(buf);
        if (!m) break;
        if (m[0] === "\r" && m.index === buf.length - 1) {
          pendingCr = true;
        }
        const line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (line === "") {
          if (data.length > 0) yield { event: event || "message", data: data.join("\n"), id };
          event = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
        else if (field === "id" && !val.includes("\0")) id = val;
      }
    }
  } finally {
    if (!finished) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}
