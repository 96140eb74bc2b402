// Prints the peers table from run.sh's results (one JSON line per system and round):
//   node table.mjs RESULTS.jsonl MACHINE_LINE ROUNDS CONTACTS
// The figure of each system is the median of its rounds; a system with a failed round
// shows the first failure instead.
import { readFileSync } from "node:fs";

const LABELS = {
  nurture: "nurture, 1 worker (bench part e)",
  "pg-boss": "pg-boss 10 (each step a job, batches of 1,000 in one transaction)",
  "graphile-contact": "graphile-worker 0.17 (one job per contact, a commit per step)",
  restate: "Restate 1.7 (a virtual object per contact, `ctx.run` per step)",
  "graphile-steps": "graphile-worker 0.17 (each step a job)",
};

export function table(results, machine, rounds, contacts, date) {
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const figure = (name) => {
    const mine = results.filter((r) => r.peer === name);
    const failed = mine.find((r) => r.failed);
    if (failed) return { failed: failed.failed };
    if (!mine.length) return { failed: "not run" };
    return { rate: median(mine.map((r) => r.steps_per_sec)), rounds: mine.map((r) => Math.round(r.steps_per_sec)) };
  };
  const base = figure("nurture").rate ?? 0;
  const fmt = (x) => Math.round(x).toLocaleString("en-US");
  const lines = [
    `peers on one Postgres: ${contacts.toLocaleString("en-US")} contacts x a 6-step campaign without waits, every step durable, the queue full at the start; steady rate from 10% to 90% of completions; median of ${rounds} alternated round(s)`,
    `machine: ${machine}; date: ${date}`,
    "",
    "| system | steps/s | against nurture | rounds |",
    "| --- | ---: | ---: | --- |",
  ];
  for (const [name, label] of Object.entries(LABELS)) {
    const f = figure(name);
    lines.push(f.failed
      ? `| ${label} | failed: ${f.failed} | | |`
      : `| ${label} | ${fmt(f.rate)} | ${base ? (f.rate / base).toFixed(2) : "-"} | ${f.rounds.map(fmt).join(", ")} |`);
  }
  return lines.join("\n") + "\n";
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [file, machine, rounds, contacts] = process.argv.slice(2);
  const results = readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
  const date = new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC";
  process.stdout.write(table(results, machine, Number(rounds), Number(contacts), date));
}
