// Browser tests: Debian's chromium, driven by playwright-core, against a real `ironflow serve`
// on SQLite and on Postgres with a real ironflow-py worker. Screenshots of the main pages go to
// e2e/artifacts/<backend>/. Prints the time the run page takes to show a 500-step run.
//
//   node e2e/run.mjs            (IRONFLOW_BIN, IRONFLOW_TEST_DATABASE_URL, CHROMIUM, PYTHON)

import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const ROOT = resolve(import.meta.dirname, "../..");
const BIN = process.env.IRONFLOW_BIN ?? join(ROOT, "target/debug/ironflow");
const PYTHON = process.env.PYTHON ?? join(ROOT, "tests/conformance/.venv/bin/python");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const PG_ADMIN = process.env.IRONFLOW_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const ARTIFACTS = join(import.meta.dirname, "artifacts");
const WAIT = 30_000;

const cleanups = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** Polls `check` until it returns a truthy value or the deadline passes (waiting on a condition, not a sleep). */
async function until(what, check, deadline = WAIT) {
  const end = Date.now() + deadline;
  let last;
  while (Date.now() < end) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
}

function stop(proc) {
  return new Promise((ok) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return ok();
    proc.once("exit", () => ok());
    proc.kill("SIGTERM");
  });
}

async function startServer(backend, { dev = false } = {}) {
  const dir = mkdtempSync(join(tmpdir(), `ironflow-e2e-${backend}-`));
  const port = await freePort();
  const args = ["serve", "--port", String(port), "--data-dir", dir, "--bootstrap-key-file", join(dir, "key"), "--lease-ttl-secs", "5"];
  if (dev) args.push("--dev");
  let db = null;
  if (backend === "postgres") {
    db = `ironflow_e2e_${process.pid}_${port}`;
    execFileSync("psql", [PG_ADMIN, "-qc", `CREATE DATABASE ${db}`]);
    args.push("--db", PG_ADMIN.replace(/\/[^/]*$/, `/${db}`));
  }
  const log = join(dir, "server.log");
  const proc = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
  const chunks = [];
  proc.stdout.on("data", (c) => chunks.push(c));
  proc.stderr.on("data", (c) => chunks.push(c));
  const url = `http://127.0.0.1:${port}`;
  const server = {
    url,
    dir,
    key: null,
    async close() {
      await stop(proc);
      writeFileSync(log, Buffer.concat(chunks));
      if (db) execFileSync("psql", [PG_ADMIN, "-qc", `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  cleanups.push(() => server.close());
  await until(`${backend} server ready`, async () => (await fetch(`${url}/ready`)).ok);
  if (!dev) server.key = readFileSync(join(dir, "key"), "utf8").trim();
  return server;
}

function startWorker(server) {
  const gates = join(server.dir, "gates");
  mkdirSync(gates, { recursive: true });
  const proc = spawn(PYTHON, [join(import.meta.dirname, "worker.py"), "--server", server.url, "--key", server.key, "--gates", gates], { stdio: ["ignore", "inherit", "inherit"] });
  cleanups.push(() => stop(proc));
  return { open: (name) => writeFileSync(join(gates, name), "") };
}

function api(server) {
  const headers = { "content-type": "application/json", authorization: `Bearer ${server.key}` };
  const call = async (method, path, body) => {
    const r = await fetch(server.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  return {
    call,
    emit: (name, data) => call("POST", "/api/v1/events", { name, data }),
    run: (id) => call("GET", `/api/v1/runs/${id}`),
    runs: (fn) => call("GET", `/api/v1/runs?function_id=${fn}`),
    connect: (service, method, body) => call("POST", `/ironflow.v1.${service}/${method}`, body),
  };
}

async function shot(page, backend, name) {
  const dir = join(ARTIFACTS, backend);
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${name}.png`), fullPage: true });
}

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-gpu"] });
cleanups.push(() => browser.close());

const nav = (page, name) => page.getByRole("navigation", { name: "Pages" }).getByRole("link", { name, exact: true }).click();
const status = (page) => page.getByTestId("run-status").locator("[data-status]");

for (const backend of ["sqlite", "postgres"]) {
  test(`dashboard on ${backend}`, { timeout: 240_000 }, async () => {
    const server = await startServer(backend);
    const worker = startWorker(server);
    const client = api(server);
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.setDefaultTimeout(WAIT);
    const failures = [];
    page.on("pageerror", (e) => failures.push(e.message));

    // Sign in with the bootstrap admin key; a wrong key is refused with the server's reason.
    await page.goto(server.url);
    await page.getByPlaceholder("ifkey_…").fill("ifkey_wrong");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").waitFor();
    await page.getByPlaceholder("ifkey_…").fill(server.key);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Overview" }).waitFor();
    await page.locator("[data-live=live]").waitFor();

    // A run appears live: the page is not reloaded (the marker survives).
    await nav(page, "Runs");
    await page.getByText("No runs yet").waitFor();
    await page.evaluate(() => { globalThis.__sameDocument = true; });
    await client.emit("e2e.checkout", { gate: "charge-open", gate_ship: "ship-open" });
    const runRow = page.locator("table[aria-label=Runs] tr", { hasText: "e2e-checkout" });
    await runRow.waitFor();
    assert.equal(await page.evaluate(() => globalThis.__sameDocument), true, "the run appeared without a reload");
    await shot(page, backend, "runs");

    // Open it; it moves through its steps live; pause it at the gate, time-travel, resume.
    await runRow.getByRole("link").first().click();
    await page.locator("[data-step]", { hasText: "reserve" }).waitFor();
    await page.getByRole("button", { name: "Pause" }).click();
    await page.getByTestId("pause-requested").waitFor();
    worker.open("charge-open");
    await status(page).and(page.locator("[data-status=paused]")).waitFor();
    const slider = page.getByLabel("Time slider");
    await slider.fill("0");
    await page.getByTestId("slider-moment").filter({ hasText: /^1\// }).waitFor();
    await page.getByTestId("state-at").waitFor();
    await shot(page, backend, "run-paused-time-travel");
    worker.open("ship-open");
    await page.getByRole("button", { name: "Resume" }).click();
    await status(page).and(page.locator("[data-status=completed]")).waitFor();
    assert.equal(await page.locator("[data-step]").count(), 3);

    // A failed step: the JSON editor refuses bad JSON, the patch lands, the resumed run completes.
    await client.emit("e2e.broken", {});
    await nav(page, "Runs");
    await page.locator("table[aria-label=Runs] tr", { hasText: "e2e-broken" }).getByRole("link").first().click();
    await status(page).and(page.locator("[data-status=failed]")).waitFor();
    await page.locator("[data-step]", { hasText: "fetch" }).click();
    await page.getByText("Patch this step's output").click();
    const editor = page.getByLabel("JSON value");
    await editor.fill("{price: 21");
    await page.getByText("Not valid JSON").waitFor();
    assert.equal(await page.getByRole("button", { name: "Patch output" }).isDisabled(), true);
    await editor.fill('{"price": 21}');
    await page.getByRole("button", { name: "Patch output" }).click();
    await page.getByText("Patched", { exact: true }).waitFor();
    await page.getByRole("button", { name: "Resume" }).click();
    await status(page).and(page.locator("[data-status=completed]")).waitFor();
    const brokenRun = (await client.runs("e2e-broken")).runs[0];
    assert.deepEqual(brokenRun.output, { total: 42 });
    await shot(page, backend, "run-patched-completed");

    // A failing push endpoint opens its breaker; the functions page shows the badge live.
    const closed = await freePort();
    await client.connect("IronflowService", "RegisterFunction", {
      id: "e2e-push", triggers: [{ event: "e2e.push" }], preferredMode: "EXECUTION_MODE_PUSH",
      endpointUrl: `http://127.0.0.1:${closed}/`, retry: { maxAttempts: 1 },
      circuitBreaker: { failureThreshold: 1, openDurationMs: 600000 },
    });
    await nav(page, "Functions");
    const pushRow = page.locator("table[aria-label=Functions] tr", { hasText: "e2e-push" });
    await pushRow.waitFor();
    await client.emit("e2e.push", {});
    await pushRow.locator("[data-status=open]").waitFor();
    await shot(page, backend, "functions-breaker-open");

    // A projection nobody consumes lags by the events it has not seen.
    await client.connect("ProjectionService", "RegisterProjection", { name: "e2e-orders", events: ["e2e.order"], mode: "external" });
    await nav(page, "Projections");
    await page.locator("[data-lag=e2e-orders]", { hasText: "0" }).waitFor();
    // The lag moves live with the events the projection consumes (no reload, no polling).
    for (let i = 0; i < 3; i++) await client.emit("e2e.order", { n: i });
    await page.locator("[data-lag=e2e-orders]", { hasText: "3" }).waitFor();
    await page.getByRole("link", { name: "e2e-orders" }).click();
    await page.getByTestId("projection-lag").filter({ hasText: "3" }).waitFor();
    await client.emit("e2e.order", { n: 3 });
    await page.getByTestId("projection-lag").filter({ hasText: "4" }).waitFor();
    await shot(page, backend, "projection-lag");

    await nav(page, "Events");
    await page.locator("table[aria-label=Events] tr", { hasText: "e2e.order" }).first().waitFor();
    await shot(page, backend, "events");
    await nav(page, "Flow");
    await page.locator('[data-node="function:e2e-checkout"]').waitFor();
    await page.locator('[data-node="event:e2e.checkout"]').waitFor();
    assert.ok((await page.locator("[data-edge=triggers]").count()) >= 3, "each function's trigger is an edge");
    await shot(page, backend, "flow");
    await nav(page, "Overview");
    await page.getByTestId("workers").filter({ hasText: "1" }).waitFor();
    await page.getByTestId("open-breakers").filter({ hasText: "1" }).waitFor();
    await shot(page, backend, "overview");

    // The run page of a 500-step run: the time from navigation to all 500 rows drawn.
    await client.emit("e2e.many", { steps: 500 });
    const many = await until("the 500-step run to complete", async () => {
      const r = (await client.runs("e2e-many")).runs[0];
      return r?.status === "completed" ? r : null;
    }, 180_000);
    const started = Date.now();
    await page.goto(`${server.url}/runs/${many.id}`);
    await until("500 waterfall rows", async () => (await page.locator("[data-step]").count()) === 500);
    const took = Date.now() - started;
    console.log(`dashboard(${backend}): run page with 500 steps drawn in ${took} ms (navigation to last row)`);
    await shot(page, backend, "run-500-steps");

    assert.deepEqual(failures, [], "no uncaught errors in the page");
    await page.close();

    // A person signs in with email and password (a login token, not a key).
    await client.call("POST", "/api/v1/users", { email: "ops@example.com", password: "correct horse battery", name: "Ops", roles: ["viewer"] });
    const person = await browser.newPage();
    person.setDefaultTimeout(WAIT);
    await person.goto(server.url);
    await person.getByRole("tab", { name: "User login" }).click();
    await person.getByLabel("Email").fill("ops@example.com");
    await person.getByLabel("Password").fill("wrong password");
    await person.getByRole("button", { name: "Sign in" }).click();
    await person.getByRole("alert").waitFor();
    await person.getByLabel("Password").fill("correct horse battery");
    await person.getByRole("button", { name: "Sign in" }).click();
    await person.getByRole("heading", { name: "Overview" }).waitFor();
    await nav(person, "Runs");
    await person.locator("table[aria-label=Runs] tr", { hasText: "e2e-checkout" }).waitFor();
    await person.close();
  });
}

test("under --dev the dashboard needs no sign-in", { timeout: 60_000 }, async () => {
  const server = await startServer("sqlite", { dev: true });
  const page = await browser.newPage();
  await page.goto(`${server.url}/runs`);
  await page.getByRole("heading", { name: "Runs" }).waitFor({ timeout: WAIT });
  assert.equal(await page.getByPlaceholder("ifkey_…").count(), 0);
  await page.close();
});

if (!existsSync(CHROMIUM)) throw new Error(`no chromium at ${CHROMIUM} (Debian: apt-get install chromium)`);
