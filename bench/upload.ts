/**
 * `deno run -A bench/upload.ts [--mb 826] [--repeat 2] [--mapped]`
 *
 * How fast Deno's WebGPU moves host memory into a GPU buffer, by path. Resuming a session from
 * its state is an upload (at 32k tokens the Qwen3.5-0.8B state is 826 MB of f32), so the path
 * decides how close a resume gets to "100× faster than re-prefilling" (docs/benchmarks.md).
 *
 * Paths, each timed from the first call to the GPU having the bytes (`onSubmittedWorkDone`,
 * which adds up to Deno's 10 ms polling), after one warm-up:
 *   write-whole    one `queue.writeBuffer` of everything
 *   write-64mb     `writeBuffer` in 64 MiB pieces
 *   pieces         copy into four reused 32 MiB buffers, `writeBuffer` from each (the backend's
 *                  upload, without its overlap of the two across threads)
 *   staging-ring   four reused 64 MiB MAP_WRITE buffers, mapped together, filled, copied in turn
 *   mapped-staging a `mappedAtCreation` MAP_WRITE buffer filled with `set`, unmapped, then
 *                  `copyBufferToBuffer` (a fresh staging buffer per upload)
 * The two mapped paths run only with `--mapped`: neither finished within 40 s on the H200.
 * A read-back of a few words checks that every path moved the bytes.
 * Prints one line per path and a JSON line.
 */
import { parseArgs } from "node:util";
import { openGpu } from "../src/backends/webgpu/device.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mb: { type: "string", default: "826" },
    repeat: { type: "string", default: "2" },
    mapped: { type: "boolean", default: false },
  },
});
const MB = 1 << 20;
const PIECE = 64 * MB;
const ctx = await openGpu();
const dev = ctx.device;
const bytes = Math.min(Math.round(Number(values.mb) * 1e6 / 16) * 16, ctx.maxBuffer - (ctx.maxBuffer % 16));
const host = new Uint32Array(bytes / 4);
for (let i = 0; i < host.length; i += 1024) host[i] = i * 2654435761;
const dst = dev.createBuffer({ size: bytes, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });

async function check(label: string): Promise<void> {
  // A few words from the start, the middle and the end must have arrived.
  const probe = dev.createBuffer({ size: 16 * 3, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
  const enc = dev.createCommandEncoder();
  const at = [0, Math.floor(bytes / 2 / 4096) * 4096, bytes - 16];
  at.forEach((o, i) => enc.copyBufferToBuffer(dst, o, probe, 16 * i, 16));
  dev.queue.submit([enc.finish()]);
  await probe.mapAsync(GPUMapMode.READ);
  const got = new Uint32Array(probe.getMappedRange().slice(0));
  probe.unmap();
  probe.destroy();
  at.forEach((o, i) => {
    for (let k = 0; k < 4; k++) {
      if (got[4 * i + k] !== host[o / 4 + k]) throw new Error(`${label}: bytes at ${o} did not arrive`);
    }
  });
}

const PIECE32 = 32 * MB;
const pieces = [0, 1, 2, 3].map(() => new Uint32Array(PIECE32 / 4));
const ring = [0, 1, 2, 3].map(() =>
  dev.createBuffer({ size: PIECE, usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC })
);

const paths: Record<string, () => Promise<void>> = {
  "write-whole": async () => {
    dev.queue.writeBuffer(dst, 0, host.buffer, 0, bytes);
    await dev.queue.onSubmittedWorkDone();
  },
  "write-64mb": async () => {
    for (let o = 0; o < bytes; o += PIECE) {
      dev.queue.writeBuffer(dst, o, host.buffer, o, Math.min(PIECE, bytes - o));
    }
    await dev.queue.onSubmittedWorkDone();
  },
  // What the backend does (WebGpuBackend's upload): copy each piece into one of four reused
  // buffers, then writeBuffer from it (here on one thread; the backend overlaps the two).
  "pieces": async () => {
    for (let o = 0, i = 0; o < bytes; o += PIECE32, i++) {
      const n = Math.min(PIECE32, bytes - o);
      const piece = pieces[i % pieces.length].subarray(0, n / 4);
      piece.set(host.subarray(o / 4, (o + n) / 4));
      dev.queue.writeBuffer(dst, o, piece);
    }
    await dev.queue.onSubmittedWorkDone();
  },
  // Four 64 MiB MAP_WRITE buffers kept across uploads, mapped together, filled, copied in turn.
  "staging-ring": async () => {
    for (let o = 0; o < bytes; o += ring.length * PIECE) {
      await Promise.all(ring.map((st) => st.mapAsync(GPUMapMode.WRITE, 0, PIECE)));
      const enc = dev.createCommandEncoder();
      ring.forEach((st, i) => {
        const at = o + i * PIECE, n = Math.max(0, Math.min(PIECE, bytes - at));
        if (n) new Uint32Array(st.getMappedRange(0, PIECE)).set(host.subarray(at / 4, (at + n) / 4));
        st.unmap();
        if (n) enc.copyBufferToBuffer(st, 0, dst, at, n);
      });
      dev.queue.submit([enc.finish()]);
    }
    await dev.queue.onSubmittedWorkDone();
  },
  "mapped-staging": async () => {
    const st = dev.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC,
      mappedAtCreation: true,
    });
    new Uint32Array(st.getMappedRange()).set(host);
    st.unmap();
    const enc = dev.createCommandEncoder();
    enc.copyBufferToBuffer(st, 0, dst, 0, bytes);
    dev.queue.submit([enc.finish()]);
    await dev.queue.onSubmittedWorkDone();
    st.destroy();
  },
};

const rows: { path: string; ms: number; gbs: number }[] = [];
console.log(`${ctx.adapterName}: uploading ${(bytes / 1e6).toFixed(0)} MB`);
for (const [name, run] of Object.entries(paths)) {
  // The mapped paths did not finish within 40 s on the H200 (runs D and I): only with --mapped.
  if (!values.mapped && (name === "staging-ring" || name === "mapped-staging")) continue;
  await run(); // warm-up
  await check(name);
  let best = Infinity;
  for (let r = 0; r < Number(values.repeat); r++) {
    const t0 = performance.now();
    await run();
    best = Math.min(best, performance.now() - t0);
  }
  await check(name);
  rows.push({ path: name, ms: best, gbs: bytes / best / 1e6 });
  console.log(
    `${name.padEnd(15)} ${best.toFixed(1).padStart(8)} ms  ${(bytes / best / 1e6).toFixed(2)} GB/s`,
  );
}
console.log(JSON.stringify({ adapter: ctx.adapterName, bytes, rows }));
dst.destroy();
for (const b of ring) b.destroy();
dev.destroy();
