import { assertEquals } from "@std/assert";
import { readSse, type SseEvent } from "./sse.ts";

/** A byte stream delivering `parts` as separate chunks; `cancelled` records a cancel. */
function chunks(parts: string[]): { stream: ReadableStream<Uint8Array>; cancelled: () => boolean } {
  let cancelled = false;
  let i = 0;
  const enc = new TextEncoder();
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (i < parts.length) c.enqueue(enc.encode(parts[i++]));
      else c.close();
    },
    cancel() {
      cancelled = true;
    },
  });
  return { stream, cancelled: () => cancelled };
}

async function all(parts: string[]): Promise<SseEvent[]> {
  const out: SseEvent[] = [];
  for await (const e of readSse(chunks(parts).stream)) out.push(e);
  return out;
}

Deno.test("events are split on blank lines with their event name and joined data lines", async () => {
  assertEquals(await all(['event: token\ndata: {"id":1}\n\n', "data: a\ndata: b\n\n"]), [
    { event: "token", data: '{"id":1}', id: "" },
    { event: "message", data: "a\nb", id: "" },
  ]);
});

Deno.test("CRLF, CR and LF line ends all work, also when a CRLF is split across chunks", async () => {
  const want = [{ event: "x", data: "1", id: "" }, { event: "y", data: "2", id: "" }, {
    event: "z",
    data: "3",
    id: "",
  }];
  assertEquals(await all(["event: x\r\ndata: 1\r\n\r\nevent: y\rdata: 2\r\revent: z\ndata: 3\n\n"]), want);
  assertEquals(
    await all(["event: x\r", "\ndata: 1\r", "\n\r", "\nevent: y\r", "data: 2\r\r", "event: z\ndata: 3\n\n"]),
    want,
  );
});

Deno.test("comments are skipped; id is remembered; a field without colon and no space after colon work", async () => {
  assertEquals(await all([": keep-alive\n\nid: 7\ndata:x\n\ndata\n\n"]), [
    { event: "message", data: "x", id: "7" },
    { event: "message", data: "", id: "7" },
  ]);
});

Deno.test("multi-byte UTF-8 split across chunks decodes intact", async () => {
  const bytes = new TextEncoder().encode("data: héllo €\n\n");
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < bytes.length; i++) c.enqueue(bytes.subarray(i, i + 1));
      c.close();
    },
  });
  const out: SseEvent[] = [];
  for await (const e of readSse(stream)) out.push(e);
  assertEquals(out, [{ event: "message", data: "héllo €", id: "" }]);
});

Deno.test("an event not ended by a blank line before the stream ends is dropped", async () => {
  assertEquals(await all(["data: done\n\n", "data: partial\n"]), [{
    event: "message",
    data: "done",
    id: "",
  }]);
});

Deno.test("leaving the loop early cancels the underlying stream", async () => {
  const src = chunks(["data: 1\n\n", "data: 2\n\n", "data: 3\n\n"]);
  for await (const e of readSse(src.stream)) if (e.data === "1") break;
  assertEquals(src.cancelled(), true);
});
