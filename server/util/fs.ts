// fs.ts — file-system helpers that more than one layer needs (the file store, job checkpoints).

/** fsync of a folder (makes a rename inside it durable); ignored where unsupported. */
export async function syncDir(dir: string): Promise<void> {
  try {
    const d = await Deno.open(dir, { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch { /* not supported here */ }
}
