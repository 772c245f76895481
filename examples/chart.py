# A chart and a table from a CSV (heavy tier, data image):
#   npx agentbox image build --preset data
#   npx agentbox run --tier heavy --image data --mount "$PWD/examples:/home/user/data" --json examples/chart.py
import pandas as pd
import matplotlib.pyplot as plt

df = pd.read_csv("/home/user/data/sales.csv")
totals = df.groupby("region")["amount"].sum().sort_values(ascending=False)
print(f"{len(df)} rows, {len(totals)} regions; best: {totals.index[0]}")
ax = totals.plot.bar(title="Sales by region", ylabel="amount", rot=0)
df.pivot_table(index="region", columns="month", values="amount", aggfunc="sum")
