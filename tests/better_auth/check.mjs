// Proves a database migrated to head works with the real Better Auth server, as it is.
//
//   DATABASE_URL=postgresql://user@host/db node tests/better_auth/check.mjs [--pause-before-delete]
//
// AUTH_DATABASE_URL, when set, is the URL Better Auth connects with instead. A Unix
// socket is given as `?host=/socket/dir`, which pg's connection-string parser reads.
//
// Better Auth's own migration planner must want nothing; then a user signs up, signs
// in, has the session looked up and deletes itself through Better Auth's API. The last
// stdout line is a JSON summary; any failure exits 1 with one line on stderr.
//
// With --pause-before-delete the script prints {"paused": {"userId": ...}} and waits for a
// line on stdin before deleting, so a caller can add rows the deletion must cascade to.

import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";

import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import pg from "pg";

const TIMEOUT_MS = 60_000;

function fail(reason) {
  process.stderr.write(`better-auth check failed: ${reason}\n`);
  process.exit(1);
}

function firstLine(error) {
  return String(error?.message ?? error).split("\n")[0];
}

async function step(name, action) {
  try {
    return await action();
  } catch (error) {
    fail(`${name}: ${firstLine(error)}`);
  }
}

// The session cookie(s) a response sets, as the Cookie header a browser would send back.
function cookieHeader(headers) {
  const cookies = headers.getSetCookie().map((cookie) => cookie.split(";")[0]);
  if (cookies.length === 0) fail("sign-in set no cookie");
  return new Headers({ cookie: cookies.join("; ") });
}

// better-auth's package.json is not among its exports, so read it off the disk.
async function installedVersion(name) {
  const file = new URL(`./node_modules/${name}/package.json`, import.meta.url);
  return JSON.parse(await readFile(file, "utf8")).version;
}

function waitForLine() {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: process.stdin });
    lines.once("line", () => {
      resolve(); // before close(), which emits "close" at once
      lines.close();
    });
    lines.once("close", () => reject(new Error("stdin closed before the go-ahead")));
  });
}

const url = process.env.AUTH_DATABASE_URL || process.env.DATABASE_URL;
if (!url) fail("DATABASE_URL is not set");
setTimeout(() => fail(`no result within ${TIMEOUT_MS / 1000} s`), TIMEOUT_MS).unref();

// Better Auth logs what it dislikes about the schema (type or nullability drift) as
// warnings rather than errors: collect them, so they fail the check too.
const complaints = [];
const pool = new pg.Pool({ connectionString: url, max: 4 });
const options = {
  database: pool,
  emailAndPassword: { enabled: true },
  secret: "todo-better-auth-check-secret-0123456789abcdef",
  baseURL: "http://localhost:3000",
  user: { deleteUser: { enabled: true } },
  // Already the default; `true` also turns "this adapter cannot check" into a warning.
  advanced: { database: { validateSchema: true } },
  logger: {
    level: "warn",
    log: (level, message) => complaints.push(`${level}: ${message}`),
  },
};

const plan = await step("migration planning", () => getMigrations(options, { throwOnUnsafe: false }));
const planned = {
  create: plan.toBeCreated.map(({ table, fields }) => ({ table, fields: Object.keys(fields) })),
  add: plan.toBeAdded.map(({ table, fields }) => ({ table, fields: Object.keys(fields) })),
  indexes: plan.toBeAddedIndexes.map(({ table, name }) => ({ table, name })),
  problems: [...plan.schemaProblems, ...plan.unsafeChanges],
};
if (Object.values(planned).some((list) => list.length > 0)) {
  fail(`Better Auth would change the schema: ${JSON.stringify(planned)}`);
}
if (complaints.length > 0) fail(`Better Auth complained about the schema: ${complaints.join(" | ")}`);

const auth = betterAuth(options);
const email = `check-${randomUUID()}@example.com`;
const password = `pw-${randomUUID()}`;

const signUp = await step("sign-up", () =>
  auth.api.signUpEmail({ body: { name: "Better Auth check", email, password } }),
);
const signIn = await step("sign-in", () =>
  auth.api.signInEmail({ body: { email, password }, returnHeaders: true }),
);
const headers = cookieHeader(signIn.headers);
const session = await step("session lookup", () => auth.api.getSession({ headers }));
if (!session) fail("no session for the sign-in cookie");

if (process.argv.includes("--pause-before-delete")) {
  process.stdout.write(`${JSON.stringify({ paused: { userId: session.user.id } })}\n`);
  await step("pause", waitForLine);
}

// With the password, Better Auth deletes at once instead of mailing a confirmation.
const deletion = await step("delete user", () =>
  auth.api.deleteUser({ body: { password }, headers }),
);
await pool.end();
if (complaints.length > 0) fail(`Better Auth logged: ${complaints.join(" | ")}`);

process.stdout.write(
  `${JSON.stringify({
    betterAuthVersion: await installedVersion("better-auth"),
    planned,
    email,
    signedUp: signUp.user.email === email,
    signedIn: Boolean(signIn.response?.token),
    userId: session.user.id,
    sessionUserEmail: session.user.email,
    deleted: deletion.success === true,
  })}\n`,
);
