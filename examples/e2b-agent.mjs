// Agent code written for E2B, unchanged: it runs against `agentbox serve` with only
//   E2B_API_URL=http://127.0.0.1:8787/e2b
//   E2B_SANDBOX_URL=http://127.0.0.1:8787/e2b/sandbox
//   E2B_API_KEY=<an agentbox API key>
// set (see the README, "Use agentbox from E2B code"). It analyses a CSV, draws a chart, runs shell
// commands and reads the files back, as an agent would.
import { Sandbox } from "@e2b/code-interpreter";

const sbx = await Sandbox.create();
try {
  await sbx.files.write("/home/user/sales.csv", "month,units\njan,120\nfeb,135\nmar,160\napr,150\n");

  const execution = await sbx.runCode(`
import pandas as pd
import matplotlib.pyplot as plt

df = pd.read_csv("/home/user/sales.csv")
df.plot(x="month", y="units", kind="bar", title="Units per month")
plt.savefig("/home/user/units.png")
plt.show()
print("rows:", len(df))
int(df.units.sum())
`);
  if (execution.error) throw new Error(`${execution.error.name}: ${execution.error.value}`);
  console.log("stdout:", execution.logs.stdout.join("").trim());
  console.log("total:", execution.text);
  const chart = execution.results.find((r) => r.png);
  console.log("chart png bytes:", chart ? Buffer.from(chart.png, "base64").length : 0);
  // The chart's data too, so a UI can redraw it (E2B's chart extraction).
  if (chart?.chart) console.log(`chart: ${chart.chart.type} '${chart.chart.title}' ${chart.chart.elements.length} bars`);

  const ls = await sbx.commands.run("ls /home/user && python3 -c 'import sys; print(sys.version_info[0])'");
  console.log("ls:", ls.stdout.trim().split("\n").join(" "));

  const entries = await sbx.files.list("/home/user");
  console.log("files:", entries.map((e) => e.name).sort().join(" "));
  const png = await sbx.files.read("/home/user/units.png", { format: "bytes" });
  console.log("saved png bytes:", png.length);
} finally {
  await sbx.kill();
}
