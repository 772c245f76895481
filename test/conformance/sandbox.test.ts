// One conformance suite, every engine: for each engine of ./engines.ts, one long-lived sandbox
// runs the shared cases (./shared.ts), then the tier's own ([heavy], [microVM]: ./heavy.ts), and
// ends cleanly. The heavy tier's security cases run beside it, in test/security/.
import { after, before, describe, it } from "node:test";
import { Sandbox } from "../../src/index.js";
import "../helpers.js";
import { engines } from "./engines.js";
import { heavyConformance } from "./heavy.js";
import { sharedConformance, sharedOptions } from "./shared.js";

for (const e of engines) {
  describe(`conformance: ${e.name}`, { skip: e.skip }, () => {
    let sb: Sandbox | undefined;
    const get = () => sb!;
    before(async () => {
      await e.prepare();
      sb = await Sandbox.create(sharedOptions(e));
    });
    after(async () => {
      await sb?.kill();
    });

    sharedConformance(e, get);
    if (e.heavy) heavyConformance(e.heavy, get);

    it("the long-lived sandbox ends cleanly", async () => {
      const gone = e.trace(get());
      await get().kill();
      await gone();
    });
  });
}
