/** Capsule sealing at the API: exports are sealed to the caller's tenant, imports must be. */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { decodeCapsule } from "../../src/capsule/decode.ts";
import { Auth } from "../../src/server/auth.ts";
import { CapsuleError } from "../../src/errors.ts";
import { call, testApp } from "./helpers.ts";

const KEY = Uint8Array.from({ length: 32 }, (_, i) => i * 7 + 1);
const A = { authorization: "Bearer tok-a" };
const B = { authorization: "Bearer tok-b" };

Deno.test("with a capsule key, GET capsule is sealed to the tenant and PUT requires such a capsule", async () => {
  const auth = await Auth.create({ "tok-a": "alpha", "tok-b": "beta" });
  const { app, engine } = await testApp({ auth, capsuleKey: KEY });
  const s = await call(app, "POST", "/v1/sessions", { input_ids: [5, 6, 7, 8] }, A);
  const res = await app.request(`/v1/sessions/${s.json.id}/capsule`, { headers: A });
  assertEquals(res.status, 200);
  const sealed = new Uint8Array(await res.arrayBuffer());
  const m = engine.model;
  await assertRejects(
    () => decodeCapsule(sealed, { fingerprint: m.fingerprint, config: m.config }),
    CapsuleError,
    "sealed",
  );
  const opened = await decodeCapsule(sealed, {
    fingerprint: m.fingerprint,
    config: m.config,
    seal: { key: KEY, tenant: "alpha" },
  });
  assertEquals(opened.tokens, [5, 6, 7, 8]);

  // Back in under the same tenant: accepted.
  const put = await call(app, "PUT", `/v1/sessions/copy/capsule`, sealed, A);
  assertEquals(put.status, 201, put.text);
  const gen = await call(app, "POST", `/v1/sessions/copy/generate`, { max_tokens: 2, ignore_eos: true }, A);
  assertEquals(gen.status, 200);
  // Another tenant cannot import it.
  const other = await call(app, "PUT", `/v1/sessions/copy/capsule`, sealed, B);
  assertEquals([other.status, other.json.code], [403, "capsule_wrong_tenant"]);
  // An unsealed capsule is refused.
  const plain = await testApp({ engine });
  const p = await call(plain.app, "POST", "/v1/sessions", { input_ids: [5, 6, 7, 8] });
  const unsealed = new Uint8Array(
    await (await plain.app.request(`/v1/sessions/${p.json.id}/capsule`)).arrayBuffer(),
  );
  const refused = await call(app, "PUT", `/v1/sessions/other/capsule`, unsealed, A);
  assertEquals([refused.status, refused.json.code], [422, "capsule_not_sealed"]);
  assertEquals((await call(app, "GET", `/v1/sessions/other`, undefined, A)).status, 404);
  // A node without the key cannot import a sealed capsule.
  const noKey = await call(plain.app, "PUT", `/v1/sessions/x/capsule`, sealed);
  assertEquals([noKey.status, noKey.json.code], [422, "capsule_sealed"]);
  // A node with another key refuses it as well.
  const otherKey = await testApp({ engine, auth, capsuleKey: KEY.map((b) => b ^ 1) });
  const wrong = await call(otherKey.app, "PUT", `/v1/sessions/x/capsule`, sealed, A);
  assertEquals([wrong.status, wrong.json.code], [403, "capsule_wrong_key"]);
  assert(sealed.length > unsealed.length);
});

Deno.test("createApp refuses a capsule key that is not 32 bytes", async () => {
  await assertRejects(() => testApp({ capsuleKey: new Uint8Array(16) }), CapsuleError, "32 bytes");
});
