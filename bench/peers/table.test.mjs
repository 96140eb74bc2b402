// The peers table (no packages needed): `node --test bench/peers/`, run by scripts/test.
import { test } from "node:test";
import assert from "node:assert/strict";
import { table } from "./table.mjs";

const rows = (out) => out.split("\n").filter((l) => l.startsWith("| ") && !l.startsWith("| system") && !l.startsWith("| ---"));

test("medians of the rounds, ratios against nurture's median", () => {
  const out = table([
    { peer: "nurture", steps_per_sec: 40000 }, { peer: "nurture", steps_per_sec: 50000 }, { peer: "nurture", steps_per_sec: 30000 },
    { peer: "pg-boss", steps_per_sec: 9000 }, { peer: "pg-boss", steps_per_sec: 10000 }, { peer: "pg-boss", steps_per_sec: 30000 },
  ], "2 cores (X)", 3, 20000, "2026-12-05 17:00 UTC");
  const [nurture, boss] = rows(out);
  assert.equal(nurture, "| nurture, 1 worker (bench part e) | 40,000 | 1.00 | 40,000, 50,000, 30,000 |");
  assert.match(boss, /^\| pg-boss 10 .* \| 10,000 \| 0\.25 \| 9,000, 10,000, 30,000 \|$/);
  assert.match(out, /machine: 2 cores \(X\); date: 2026-12-05 17:00 UTC/);
});

test("a failed round shows its reason; a peer never run says so", () => {
  const out = table([
    { peer: "nurture", steps_per_sec: 40000 },
    { peer: "restate", steps_per_sec: 3000 }, { peer: "restate", failed: "npm install: E404" },
  ], "m", 2, 100, "d");
  const restate = rows(out).find((l) => l.includes("Restate"));
  assert.equal(restate, "| Restate 1.7 (a virtual object per contact, `ctx.run` per step) | failed: npm install: E404 | | |");
  assert.ok(rows(out).find((l) => l.includes("pg-boss")).includes("failed: not run"));
});
