// One round of one peer on nurture's bench part (e) scenario, printed as one JSON line:
//   node peer.mjs PEER POSTGRES_URL CONTACTS
// Scenario: CONTACTS contacts x a 6-step campaign without waits; every step is durable
// (a committed write to Postgres, or a journaled `ctx.run` in Restate); the queue is full
// at the start; the figure is the steady rate between 10% and 90% of the steps done.
// A step's write is the contact's row: UPDATE contacts SET step = k, score = score + 1.
// Each peer gets a database of its own (peers_PEER, dropped and created here).
import pg from "pg";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

// The Restate SDK wants Node 22's Promise.withResolvers; Node 20 lacks it.
Promise.withResolvers ??= function () {
  let resolve, reject;
  const promise = new this((a, b) => ((resolve = a), (reject = b)));
  return { promise, resolve, reject };
};

const [peer, url, contactsArg] = process.argv.slice(2);
const CONTACTS = Number(contactsArg || 20000);
const STEPS = 6;
const TOTAL = CONTACTS * STEPS;

// Steps counted as they commit; the steady rate from 10% to 90% of TOTAL.
let done = 0, t10 = 0, t90 = 0, finish;
const finished = new Promise((r) => (finish = r));
function stepped(n = 1) {
  done += n;
  if (!t10 && done >= 0.1 * TOTAL) t10 = performance.now();
  if (!t90 && done >= 0.9 * TOTAL) t90 = performance.now();
  if (done >= TOTAL) finish();
}

async function database() {
  const name = `peers_${peer.replace(/-/g, "_")}`;
  const admin = new pg.Client(url);
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const u = new URL(url);
  u.pathname = `/${name}`;
  const db = u.toString();
  const pool = new pg.Pool({ connectionString: db, max: 20 });
  await pool.query("CREATE TABLE contacts (id int PRIMARY KEY, step int NOT NULL DEFAULT 0, score int NOT NULL DEFAULT 0)");
  await pool.query(`INSERT INTO contacts (id) SELECT generate_series(0, ${CONTACTS - 1})`);
  return { db, pool };
}

const STEP_SQL = "UPDATE contacts SET step = $2, score = score + 1 WHERE id = $1";

// pg-boss 10: each step a job. A worker fetches 1,000 jobs and, in one transaction,
// writes their steps, inserts the next steps' jobs and completes the fetched ones.
async function pgBoss() {
  const { default: PgBoss } = await import("pg-boss");
  const { db, pool } = await database();
  const boss = new PgBoss({ connectionString: db, max: 4, supervise: false, schedule: false });
  boss.on("error", (e) => console.error(e));
  await boss.start();
  await boss.createQueue("step");
  for (let i = 0; i < CONTACTS; i += 1000) {
    const ids = Array.from({ length: Math.min(1000, CONTACTS - i) }, (_, j) => i + j);
    await boss.insert(ids.map((c) => ({ name: "step", data: { c, k: 1 } })));
  }
  const start = performance.now();
  const worker = async () => {
    while (done < TOTAL) {
      const jobs = await boss.fetch("step", { batchSize: 1000 });
      if (!jobs.length) { await new Promise((r) => setTimeout(r, 20)); continue; }
      const client = await pool.connect();
      const tx = { executeSql: (text, values) => client.query(text, values) };
      try {
        await client.query("BEGIN");
        await client.query("UPDATE contacts c SET step = j.k, score = score + 1 FROM unnest($1::int[], $2::int[]) j(c, k) WHERE c.id = j.c",
          [jobs.map((j) => j.data.c), jobs.map((j) => j.data.k)]);
        const next = jobs.filter((j) => j.data.k < STEPS).map((j) => ({ name: "step", data: { c: j.data.c, k: j.data.k + 1 } }));
        if (next.length) await boss.insert(next, { db: tx });
        await boss.complete("step", jobs.map((j) => j.id), { db: tx });
        await client.query("COMMIT");
      } finally { client.release(); }
      stepped(jobs.length);
    }
  };
  await Promise.all([worker(), worker()]);
  await finished;
  await boss.stop({ graceful: false, wait: false });
  await pool.end();
  return start;
}

// graphile-worker 0.17: `contact` is one job per contact doing 6 steps, a commit each;
// `steps` makes each step a job that writes its step and adds the next step's job.
async function graphile(perStep) {
  const { run, Logger } = await import("graphile-worker");
  const { db, pool } = await database();
  const taskList = {
    contact: async ({ c }) => {
      for (let k = 1; k <= STEPS; k++) { await pool.query(STEP_SQL, [c, k]); stepped(); }
    },
    step: async ({ c, k }, helpers) => {
      await helpers.withPgClient(async (client) => {
        await client.query("BEGIN");
        await client.query(STEP_SQL, [c, k]);
        if (k < STEPS) await client.query("SELECT graphile_worker.add_job('step', $1::json)", [JSON.stringify({ c, k: k + 1 })]);
        await client.query("COMMIT");
      });
      stepped();
    },
  };
  // Install the schema, then fill the queue before any worker starts.
  const migrate = await run({ connectionString: db, taskList, concurrency: 1, noHandleSignals: true, pollInterval: 3600000, logger: new Logger(() => () => {}) });
  await migrate.stop();
  const task = perStep ? "step" : "contact";
  for (let i = 0; i < CONTACTS; i += 1000) {
    await pool.query(`SELECT graphile_worker.add_jobs(array_agg(ROW($1, json_build_object('c', c, 'k', 1), null, null, null, null, null, null)::graphile_worker.job_spec)) FROM generate_series($2::int, $3::int) c`,
      [task, i, Math.min(i + 1000, CONTACTS) - 1]);
  }
  const start = performance.now();
  const runner = await run({ connectionString: db, taskList, concurrency: 16, noHandleSignals: true, pollInterval: 100, logger: new Logger(() => () => {}) });
  await finished;
  await runner.stop();
  await pool.end();
  return start;
}

// Restate 1.7: a virtual object per contact; its handler runs the 6 steps, each a
// `ctx.run` journaled by the server (its own storage in a temporary folder, fsync on).
async function restate() {
  process.env.RESTATE_LOGGING ??= "ERROR";
  const rs = await import("@restatedev/restate-sdk");
  const dir = mkdtempSync(path.join(os.tmpdir(), "peers-restate-"));
  const [ingress, admin, node, svc] = await Promise.all([port(), port(), port(), port()]);
  // The binary itself (the package's bin is a Node wrapper that would outlive a kill).
  const bin = path.join(import.meta.dirname, `node_modules/@restatedev/restate-server-${process.platform}-${process.arch}/bin/restate-server`);
  const server = spawn(bin, ["--base-dir", dir], {
    env: { ...process.env, RESTATE_INGRESS__BIND_ADDRESS: `127.0.0.1:${ingress}`, RESTATE_ADMIN__BIND_ADDRESS: `127.0.0.1:${admin}`,
      RESTATE_BIND_ADDRESS: `127.0.0.1:${node}`, RESTATE_ADVERTISED_ADDRESS: `http://127.0.0.1:${node}`, RESTATE_LOG_FILTER: "error" },
    stdio: "ignore",
  });
  process.on("exit", () => server.kill("SIGKILL"));
  try {
    const contact = rs.object({
      name: "Contact",
      handlers: {
        run: async (ctx) => {
          let score = (await ctx.get("score")) ?? 0;
          for (let k = 1; k <= STEPS; k++) { score = await ctx.run(`s${k}`, () => score + 1); ctx.set("score", score); stepped(); }
        },
      },
    });
    await rs.serve({ services: [contact], port: svc });
    await until(async () => (await fetch(`http://127.0.0.1:${admin}/health`)).ok);
    const reg = await fetch(`http://127.0.0.1:${admin}/deployments`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ uri: `http://127.0.0.1:${svc}` }) });
    if (!reg.ok) throw new Error(`registering the service: ${reg.status} ${await reg.text()}`);
    await until(async () => (await fetch(`http://127.0.0.1:${ingress}/restate/health`)).ok);
    // The queue full at the start: every invocation is sent delayed to one instant.
    const at = Date.now() + 2000 + CONTACTS * 4;
    for (let i = 0; i < CONTACTS; i += 500) {
      await Promise.all(Array.from({ length: Math.min(500, CONTACTS - i) }, async (_, j) => {
        const r = await fetch(`http://127.0.0.1:${ingress}/Contact/c${i + j}/run/send?delay=${Math.max(0, at - Date.now())}ms`, { method: "POST" });
        if (!r.ok) throw new Error(`sending: ${r.status} ${await r.text()}`);
      }));
    }
    const start = performance.now() + Math.max(0, at - Date.now());
    await finished;
    return start;
  } finally {
    server.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}

function port() {
  return new Promise((r) => { const s = net.createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => r(p)); }); });
}

async function until(ok, ms = 60000) {
  const end = Date.now() + ms;
  for (;;) {
    try { if (await ok()) return; } catch {}
    if (Date.now() > end) throw new Error("restate-server did not start");
    await new Promise((r) => setTimeout(r, 200));
  }
}

const peers = { "pg-boss": pgBoss, "graphile-contact": () => graphile(false), "graphile-steps": () => graphile(true), restate };
const timeout = setTimeout(() => { console.error(`${peer}: ${done} of ${TOTAL} steps in 900 s`); process.exit(2); }, 900000);
const start = await peers[peer]();
clearTimeout(timeout);
const seconds = (performance.now() - start) / 1000;
console.log(JSON.stringify({ peer, steps: TOTAL, seconds, steps_per_sec: (0.8 * TOTAL) / ((t90 - t10) / 1000) }));
process.exit(0);
