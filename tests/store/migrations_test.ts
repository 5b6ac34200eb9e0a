// migrations_test.ts — the database schema, versioned in server/store/db.ts's MIGRATIONS: an empty
// database migrates to the newest version, and so does one made by the first release (version 1)
// holding a succeeded job and an uploaded file, which read back as the records of today.
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { MIGRATIONS, Store } from "../../server/store/db.ts";
import { FileStore } from "../../server/store/files.ts";
import { JobRepository } from "../../server/jobs/repository.ts";

Deno.test("migrations: an empty database and a version-1 database both reach the newest schema; old rows read back", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qlora-migrate-" });
  try {
    const fresh = new Store(`${dir}/fresh.db`);
    assert.equal(fresh.version, MIGRATIONS.length);
    fresh.close();

    // the first release's database, written as it wrote it
    const old = new DatabaseSync(`${dir}/old.db`);
    old.exec(MIGRATIONS[0]);
    old.exec("PRAGMA user_version = 1");
    old.prepare(
      "INSERT INTO files (id, tenant, filename, purpose, bytes, created_at, path, examples) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    ).run("file-old", "acme", "train.jsonl", "fine-tune", 10, 1700000000, `${dir}/files/file-old.jsonl`, 3);
    old.prepare(
      `INSERT INTO jobs (id, tenant, model, training_file, suffix, seed, method, hyper, status, created_at, fine_tuned_model, step)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'succeeded', ?, ?, ?)`,
    ).run(
      "ftjob-old",
      "acme",
      "tiny",
      "file-old",
      "s",
      1,
      JSON.stringify({ type: "supervised" }),
      JSON.stringify({ n_epochs: 3 }),
      1700000000,
      "ft:tiny:s:ftjob-old",
      12,
    );
    old.close();

    const store = new Store(`${dir}/old.db`);
    assert.equal(store.version, MIGRATIONS.length, "migrated to the newest version");
    const acme = { tenant: "acme", admin: false };
    const job = new JobRepository(store).jobFor(acme, "ftjob-old")!;
    assert.equal(job.status, "succeeded");
    assert.equal(job.method, "supervised");
    assert.equal(job.initFrom, null);
    assert.deepEqual(job.resultFiles, [], "a job from before result files has none");
    assert.equal(new JobRepository(store).isModelDeleted("ft:tiny:s:ftjob-old"), false);
    const file = new FileStore(store, `${dir}/files`).get(acme, "file-old")!;
    assert.equal(file.examples, 3);
    assert.equal(file.kinds, null, "formats unknown for old uploads (checked when their job runs)");
    store.close();
    // opening again changes nothing
    const again = new Store(`${dir}/old.db`);
    assert.equal(again.version, MIGRATIONS.length);
    again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
