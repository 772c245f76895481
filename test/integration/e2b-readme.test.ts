// The examples of the E2B SDKs' own READMEs (`e2b` and `@e2b/code-interpreter`, as shipped in
// their npm packages), run as written against agentbox: only the environment (E2B_API_URL,
// E2B_SANDBOX_URL, E2B_API_KEY), or the `E2B` client's options, point them here. Their default
// templates are the heavy tier's ("base", "code-interpreter-v1").
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Sandbox as CodeInterpreter, E2B as CodeInterpreterClient } from "@e2b/code-interpreter";
import { E2B, Sandbox } from "e2b";
import { startE2bServer, type E2bServer } from "../e2b-helpers.js";
import { ensureDataImage, ensureImage, skipHeavy } from "../heavy.js";

describe("E2B SDKs' README examples, unchanged", { skip: skipHeavy }, () => {
  let srv: E2bServer;
  before(async () => {
    await ensureImage();
    await ensureDataImage();
    srv = await startE2bServer();
  });
  after(async () => {
    await srv?.close();
  });

  it("e2b: Sandbox.create() → commands.run('echo \"Hello from E2B!\"')", async () => {
    const sandbox = await Sandbox.create();
    try {
      const result = await sandbox.commands.run('echo "Hello from E2B!"');
      assert.equal(result.stdout, "Hello from E2B!\n");
      assert.equal((await sandbox.getInfo()).templateId, "base");
    } finally {
      await sandbox.kill();
    }
  });

  it("@e2b/code-interpreter: Sandbox.create() → runCode('x = 1') → runCode('x+=1; x') is 2", async () => {
    const sbx = await CodeInterpreter.create();
    try {
      await sbx.runCode("x = 1");
      const execution = await sbx.runCode("x+=1; x");
      assert.equal(execution.text, "2");
      const again = await sbx.runCode("x = 1; x += 1; x");
      assert.equal(again.text, "2");
      assert.equal((await sbx.getInfo()).templateId, "code-interpreter-v1");
    } finally {
      await sbx.kill();
    }
  });

  it("the E2B client with explicit options (apiUrl and sandboxUrl in place of domain); its unsupported resources refuse clearly", async () => {
    const client = new CodeInterpreterClient({ apiKey: srv.env.E2B_API_KEY, apiUrl: srv.env.E2B_API_URL, sandboxUrl: srv.env.E2B_SANDBOX_URL });
    const sbx = await client.Sandbox.create("agentbox-python");
    try {
      const execution = await sbx.runCode("x = 1; x += 1; x");
      assert.equal(execution.text, "2");
      const { Sandbox: Bound } = client;
      const listed = await Bound.list().nextItems();
      assert.deepEqual(listed.map((s) => s.sandboxId), [sbx.sandboxId]);
    } finally {
      await sbx.kill();
    }
    const plain = new E2B({ apiKey: srv.env.E2B_API_KEY, apiUrl: srv.env.E2B_API_URL, sandboxUrl: srv.env.E2B_SANDBOX_URL });
    await assert.rejects(plain.Volume.create("my-volume"), /404.*no route POST \/volumes/s);
    await assert.rejects(plain.Secret.create("openai-api-key", "sk-***"), /404.*no route POST \/secrets/s);
  });
});
