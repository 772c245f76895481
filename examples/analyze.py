# A small analysis an agent might write: make data, compute statistics, write a report file.
import csv, io, json, random, statistics, datetime

random.seed()  # draws from the sandbox's seeded entropy: reproducible with --seed
rows = [{"day": i, "visits": random.randint(50, 150), "signups": random.randint(0, 20)} for i in range(30)]

buf = io.StringIO()
writer = csv.DictWriter(buf, fieldnames=["day", "visits", "signups"])
writer.writeheader()
writer.writerows(rows)
with open("/tmp/data.csv", "w") as f:
    f.write(buf.getvalue())

with open("/tmp/data.csv") as f:
    data = list(csv.DictReader(f))
visits = [int(r["visits"]) for r in data]
signups = [int(r["signups"]) for r in data]
report = {
    "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    "days": len(data),
    "visits_mean": round(statistics.mean(visits), 2),
    "visits_stdev": round(statistics.stdev(visits), 2),
    "conversion": round(sum(signups) / sum(visits), 4),
    "best_day": max(data, key=lambda r: int(r["signups"]))["day"],
}
with open("/tmp/report.json", "w") as f:
    json.dump(report, f, indent=2)
print(json.dumps(report, indent=2))
