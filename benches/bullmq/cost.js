// The Redis work of BullMQ doing what zenrelay's cost phases do, counted the same way:
// `redis-server` under callgrind, counters zeroed right before the load and dumped right
// after it (see scripts/bullmq-cost.sh, which starts that server and installs BullMQ).
//
//   node benches/bullmq/cost.js PORT REDIS_PID DUMP_DIR
//
// Prints one `cost` line per figure, as scripts/redis-cost.sh does.
"use strict";
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const { Queue, Worker } = require("bullmq");

const [port, pid, dir] = process.argv.slice(2);
const connection = { host: "127.0.0.1", port: Number(port), maxRetriesPerRequest: null };
const body = JSON.stringify({
  app_id: 123,
  event: "ticket.updated",
  body: { ticket: { id: 42, status: "open", subject: "Printer on fire", tags: ["a", "b", "c"] }, actor: "agent-7" },
});

let dumps = 0;
function control(...args) {
  execFileSync("callgrind_control", [...args, pid], { stdio: "ignore" });
}
// Instructions since the last zero: the newest dump's total.
function dump() {
  control("-d");
  dumps += 1;
  const file = fs
    .readdirSync(dir)
    .filter((f) => f.startsWith("callgrind.out.") && f.endsWith(`.${dumps}`))
    .map((f) => path.join(dir, f))[0];
  const lines = fs.readFileSync(file, "utf8").split("\n");
  const totals = lines.filter((l) => l.startsWith("summary:") || l.startsWith("totals:"));
  return Number(totals[totals.length - 1].split(/\s+/)[1]);
}
function zero() {
  control("-i", "on");
  control("-z");
}
function report(what, instructions, units) {
  const each = Math.round(instructions / units).toLocaleString("en-US");
  console.log(`cost ${what}: ${each} instructions`);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function ingress() {
  const queue = new Queue("ingress", { connection });
  await queue.waitUntilReady();
  const clients = 16, perClient = 125;
  zero();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let i = 0; i < perClient; i++) {
        await queue.add("notify", { account: `a${(c * perClient + i) % 200}`, body });
      }
    }),
  );
  report(`BullMQ add, 16 clients (${clients * perClient} jobs)`, dump(), clients * perClient);
  await queue.close();
}

async function delivery() {
  const queue = new Queue("delivery", { connection });
  const jobs = [];
  for (let a = 0; a < 200; a++) {
    for (let i = 0; i < 10; i++) jobs.push({ name: "notify", data: { account: `a${a}`, body } });
  }
  for (let i = 0; i < jobs.length; i += 100) await queue.addBulk(jobs.slice(i, i + 100));
  let done = 0;
  let finished;
  const all = new Promise((r) => (finished = r));
  zero();
  const worker = new Worker(
    "delivery",
    async () => {
      await sleep(5 + Math.random() * 15);
    },
    { connection, concurrency: 64, limiter: { max: 100000, duration: 1000 } },
  );
  worker.on("completed", () => {
    done += 1;
    if (done === jobs.length) finished();
  });
  await all;
  report(
    `BullMQ processed job, 200 accounts x 10, rate-limited worker, processor answering in 5-20 ms (${jobs.length} jobs)`,
    dump(),
    jobs.length,
  );
  await worker.close();
  await queue.close();
}

async function idle() {
  const seconds = 10;
  zero();
  await sleep(seconds * 1000);
  const alone = dump();
  const worker = new Worker("idle", async () => {}, {
    connection,
    limiter: { max: 100000, duration: 1000 },
  });
  await worker.waitUntilReady();
  await sleep(1000);
  zero();
  await sleep(seconds * 1000);
  const withWorker = dump();
  report("Redis alone, per second", alone, seconds);
  report("Redis with one idle BullMQ worker, per second", withWorker, seconds);
  await worker.close();
}

(async () => {
  await ingress();
  await delivery();
  await idle();
  process.exit(0);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
