/**
 * A file-backed mirror store for Node: records as JSON Lines (`records.jsonl`, appended and
 * flushed with fdatasync before the append resolves), metadata as `meta.json` (written to a
 * temporary file, synced and renamed). A torn last line (a crash mid-append) is dropped on
 * load: that record is fetched again from the provider on resync.
 */
import { mkdir, open, readFile, rename, truncate } from "node:fs/promises";
import { join } from "node:path";

import type { MirrorStore, WireRecord } from "./mirror.js";

export class FileStore implements MirrorStore {
  constructor(private readonly dir: string) {}

  async load(): Promise<{ records: WireRecord[]; meta: Record<string, string> }> {
    await mkdir(this.dir, { recursive: true });
    const records: WireRecord[] = [];
    const path = join(this.dir, "records.jsonl");
    let text = await readFile(path, "utf8").catch(() => "");
    if (!text.endsWith("\n") && text !== "") {
      // A torn final append: cut it off so later appends start on a fresh line.
      text = text.slice(0, text.lastIndexOf("\n") + 1);
      await truncate(path, Buffer.byteLength(text));
    }
    for (const line of text.split("\n")) if (line !== "") records.push(JSON.parse(line));
    return { records, meta: await this.readMeta() };
  }

  private async readMeta(): Promise<Record<string, string>> {
    return JSON.parse(await readFile(join(this.dir, "meta.json"), "utf8").catch(() => "{}"));
  }

  async append(records: WireRecord[]): Promise<void> {
    const f = await open(join(this.dir, "records.jsonl"), "a");
    try {
      await f.write(records.map((r) => JSON.stringify(r) + "\n").join(""));
      await f.datasync();
    } finally {
      await f.close();
    }
  }

  async putMeta(key: string, value: string): Promise<void> {
    const meta = await this.readMeta();
    meta[key] = value;
    const tmp = join(this.dir, "meta.json.tmp");
    const f = await open(tmp, "w");
    try {
      await f.write(JSON.stringify(meta));
      await f.sync();
    } finally {
      await f.close();
    }
    await rename(tmp, join(this.dir, "meta.json"));
  }
}

export * from "./index.js";
