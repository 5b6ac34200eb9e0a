// kv_blocks.ts — the paged KV-cache block manager: pure integer bookkeeping (nano-vllm style).
//
// The cache is numBlocks blocks of blockSize token slots; slot = blockId · blockSize + offset.
// Each sequence owns a block table (block ids, in order). Full blocks are content-addressed by a
// chained hash of (cache salt, previous block's hash, the block's token ids), so sequences that
// share a prefix share its full blocks (reference counted). A shared block is always full and
// never written again, so copy-on-write is never needed. Freed blocks keep their hash and stay
// reusable until the free list hands them out again (oldest-freed first).
//
// The cache salt separates prefixes whose KV differs for the same tokens: pass the adapter id
// (LoRA deltas on k/v change the cached values).
//
// With chunked prefill a prompt's blocks are allocated (and hashed) at once but computed over
// several steps: a block is matched only once it is filled, i.e. once a scheduled step computes
// all its tokens (allocate's computeEnd, then markFilled as later chunks are scheduled; a step's
// own cache writes precede its attention reads, so "scheduled" is soon enough).
//
// The block that holds a sequence's last token is never taken from the cache on allocate, so
// the last prompt token is always computed (its logits are needed) and written into a block the
// sequence owns alone.

/** The part of a sequence the block manager reads and writes. */
export interface BlockSequence {
  /** All token ids (prompt + generated so far). */
  readonly tokenIds: ArrayLike<number>;
  /** Block ids, owned by the manager's bookkeeping; empty when not allocated. */
  blockTable: number[];
  /** Prompt tokens whose KV was found in the prefix cache at allocate(). */
  numCachedTokens: number;
  /** Separates prefix-cache namespaces (e.g. the adapter id). */
  readonly cacheSalt?: string;
}

export class BlockManagerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BlockManagerError";
  }
}

const NO_HASH = -1;

/** 53-bit chained hash of a block (two 32-bit FNV-1a-style lanes, then combined). */
export function blockHash(prev: number, tokens: ArrayLike<number>, start: number, end: number, salt = ""): number {
  let h1 = 0x811c9dc5 ^ (prev >>> 0);
  let h2 = 0x01000193 ^ Math.floor(prev / 4294967296);
  const mix = (v: number) => {
    h1 = Math.imul(h1 ^ (v & 0xffff), 0x01000193);
    h1 = Math.imul(h1 ^ (v >>> 16), 0x01000193);
    h2 = Math.imul(h2 ^ v, 0x5bd1e995);
    h2 ^= h2 >>> 15;
  };
  for (let i = 0; i < salt.length; i++) mix(salt.charCodeAt(i));
  mix(0x7fffffff);
  for (let i = start; i < end; i++) mix(tokens[i]);
  h1 ^= h1 >>> 16;
  h1 = Math.imul(h1, 0x85ebca6b);
  h1 ^= h1 >>> 13;
  return ((h2 >>> 0) & 0x1fffff) * 4294967296 + (h1 >>> 0);
}

export class BlockManager {
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly #refCount: Int32Array;
  readonly #hash: Float64Array;
  readonly #tokens: (Int32Array | null)[];
  readonly #salt: string[];
  readonly #filled: Uint8Array;
  readonly #hashToBlock = new Map<number, number>();
  /** Free block ids in the order they should be handed out (insertion order). */
  readonly #free = new Set<number>();

  constructor(numBlocks: number, blockSize: number) {
    if (!Number.isInteger(numBlocks) || numBlocks <= 0) {
      throw new BlockManagerError(`numBlocks must be a positive integer, got ${numBlocks}`);
    }
    if (!Number.isInteger(blockSize) || blockSize <= 0) {
      throw new BlockManagerError(`blockSize must be a positive integer, got ${blockSize}`);
    }
    this.numBlocks = numBlocks;
    this.blockSize = blockSize;
    this.#refCount = new Int32Array(numBlocks);
    this.#hash = new Float64Array(numBlocks).fill(NO_HASH);
    this.#tokens = new Array(numBlocks).fill(null);
    this.#salt = new Array(numBlocks).fill("");
    this.#filled = new Uint8Array(numBlocks);
    for (let i = 0; i < numBlocks; i++) this.#free.add(i);
  }

  get numFreeBlocks(): number {
    return this.#free.size;
  }

  get numUsedBlocks(): number {
    return this.numBlocks - this.#free.size;
  }

  refCount(blockId: number): number {
    return this.#refCount[blockId];
  }

  blocksNeeded(numTokens: number): number {
    return Math.ceil(numTokens / this.blockSize);
  }

  /** Whether allocate() surely succeeds (counts every block as new, ignoring cache hits). */
  canAllocate(seq: BlockSequence): boolean {
    return this.#free.size >= this.blocksNeeded(seq.tokenIds.length);
  }

  #takeFree(blockId?: number): number {
    let id: number;
    if (blockId === undefined) {
      const it = this.#free.values().next();
      if (it.done) throw new BlockManagerError("out of KV cache blocks");
      id = it.value;
      // Handing out a cached block for new content: forget its old hash.
      const h = this.#hash[id];
      if (h !== NO_HASH && this.#hashToBlock.get(h) === id) this.#hashToBlock.delete(h);
      this.#hash[id] = NO_HASH;
      this.#tokens[id] = null;
      this.#filled[id] = 0;
    } else id = blockId;
    if (!this.#free.delete(id)) throw new BlockManagerError(`block ${id} is not free`);
    if (this.#refCount[id] !== 0) throw new BlockManagerError(`free block ${id} has refcount ${this.#refCount[id]}`);
    this.#refCount[id] = 1;
    return id;
  }

  #register(id: number, h: number, tokens: ArrayLike<number>, start: number, salt: string): void {
    this.#hash[id] = h;
    this.#tokens[id] = Int32Array.from(Array.prototype.slice.call(tokens, start, start + this.blockSize) as number[]);
    this.#salt[id] = salt;
    this.#hashToBlock.set(h, id);
  }

  #matches(id: number, tokens: ArrayLike<number>, start: number, salt: string): boolean {
    const t = this.#tokens[id];
    if (!t || this.#salt[id] !== salt || !this.#filled[id]) return false;
    for (let i = 0; i < this.blockSize; i++) if (t[i] !== tokens[start + i]) return false;
    return true;
  }

  /**
   * Gives `seq` a block table for all its tokens, reusing cached (filled) full prefix blocks.
   * Sets seq.blockTable and seq.numCachedTokens (a multiple of blockSize, < tokenIds.length).
   * computeEnd: the tokens [0, computeEnd) are computed by the step being scheduled (default all);
   * blocks past it become shareable when markFilled says so.
   */
  allocate(seq: BlockSequence, computeEnd = seq.tokenIds.length): void {
    if (seq.blockTable.length > 0) throw new BlockManagerError("sequence already has blocks");
    const n = seq.tokenIds.length;
    const bs = this.blockSize;
    const nb = this.blocksNeeded(n);
    if (nb > this.#free.size) {
      // Cache hits may still make it fit; count precisely before touching anything.
      if (this.#countNewBlocks(seq) > this.#free.size) throw new BlockManagerError("out of KV cache blocks");
    }
    const salt = seq.cacheSalt ?? "";
    const table: number[] = [];
    let prev = 0;
    let cacheMiss = false;
    let cached = 0;
    for (let b = 0; b < nb; b++) {
      const start = b * bs;
      const full = start + bs <= n;
      const h = full ? blockHash(prev, seq.tokenIds, start, start + bs, salt) : NO_HASH;
      // The block with the last token is computed, never matched.
      const matchable = full && start + bs < n;
      let id: number | undefined;
      if (!cacheMiss && matchable) {
        const c = this.#hashToBlock.get(h);
        if (c !== undefined && this.#matches(c, seq.tokenIds, start, salt)) id = c;
        else cacheMiss = true;
      } else cacheMiss = true;
      if (id !== undefined) {
        cached += bs;
        if (this.#refCount[id] > 0) this.#refCount[id]++;
        else this.#takeFree(id);
      } else {
        id = this.#takeFree();
        if (full) this.#register(id, h, seq.tokenIds, start, salt);
        if (full && start + bs <= computeEnd) this.#filled[id] = 1;
      }
      table.push(id);
      prev = h;
    }
    seq.blockTable = table;
    seq.numCachedTokens = cached;
  }

  #countNewBlocks(seq: BlockSequence): number {
    const n = seq.tokenIds.length;
    const bs = this.blockSize;
    const salt = seq.cacheSalt ?? "";
    let prev = 0;
    let need = 0;
    let miss = false;
    const nb = this.blocksNeeded(n);
    for (let b = 0; b < nb; b++) {
      const start = b * bs;
      const full = start + bs <= n;
      if (!miss && full && start + bs < n) {
        const h = blockHash(prev, seq.tokenIds, start, start + bs, salt);
        const c = this.#hashToBlock.get(h);
        if (c !== undefined && this.#matches(c, seq.tokenIds, start, salt)) {
          if (this.#refCount[c] === 0) need++; // a free cached block still leaves the free list
          prev = h;
          continue;
        }
        miss = true;
      }
      miss = true;
      need++;
    }
    return need;
  }

  /** The step being scheduled computes seq's tokens up to `end`: its full blocks below it are filled. */
  markFilled(seq: BlockSequence, end: number): void {
    const bs = this.blockSize;
    for (let b = 0; (b + 1) * bs <= end && b < seq.blockTable.length; b++) this.#filled[seq.blockTable[b]] = 1;
  }

  /** Releases the sequence's blocks (last first, so the prefix stays cached longest). */
  free(seq: BlockSequence): void {
    for (let i = seq.blockTable.length - 1; i >= 0; i--) {
      const id = seq.blockTable[i];
      if (this.#refCount[id] <= 0) throw new BlockManagerError(`double free of block ${id}`);
      if (--this.#refCount[id] === 0) this.#free.add(id);
    }
    seq.blockTable = [];
    seq.numCachedTokens = 0;
  }

  /**
   * Whether mayAppend(seq) can succeed now: call it after appending the new token to
   * seq.tokenIds (nano-vllm flow: the sampled token is appended, then the scheduler checks
   * canAppend and calls mayAppend before the step that computes that token's KV).
   */
  canAppend(seq: BlockSequence): boolean {
    return this.#free.size >= Math.max(0, this.blocksNeeded(seq.tokenIds.length) - seq.blockTable.length);
  }

  /**
   * Call after appending a token to seq.tokenIds: gives it a new block when the token starts one,
   * and registers the last block's hash when the token fills it.
   */
  mayAppend(seq: BlockSequence): void {
    const n = seq.tokenIds.length;
    const bs = this.blockSize;
    const table = seq.blockTable;
    const needed = this.blocksNeeded(n);
    if (table.length === needed - 1 && n % bs === 1 % bs) {
      table.push(this.#takeFree());
    } else if (table.length !== needed) {
      throw new BlockManagerError(`block table has ${table.length} blocks for ${n} tokens (block size ${bs})`);
    }
    if (n % bs === 0) {
      const last = table.length - 1;
      const id = table[last];
      if (this.#hash[id] === NO_HASH) {
        const prev = last > 0 ? this.#hash[table[last - 1]] : 0;
        const start = last * bs;
        const salt = seq.cacheSalt ?? "";
        const h = blockHash(prev === NO_HASH ? 0 : prev, seq.tokenIds, start, start + bs, salt);
        this.#register(id, h, seq.tokenIds, start, salt);
      }
      this.#filled[id] = 1; // computed by the step being scheduled
    }
  }

  /** Cache slots of the tokens at positions [start, end) of the sequence. */
  slotMapping(seq: BlockSequence, start: number, end: number): Int32Array {
    const out = new Int32Array(Math.max(0, end - start));
    const bs = this.blockSize;
    for (let p = start; p < end; p++) {
      const id = seq.blockTable[Math.floor(p / bs)];
      if (id === undefined) throw new BlockManagerError(`position ${p} has no block`);
      out[p - start] = id * bs + (p % bs);
    }
    return out;
  }

  /** Drops all cached (free) prefix blocks' hashes, e.g. after an adapter is replaced. */
  resetPrefixCache(): void {
    for (const id of this.#free) {
      const h = this.#hash[id];
      if (h !== NO_HASH && this.#hashToBlock.get(h) === id) this.#hashToBlock.delete(h);
      this.#hash[id] = NO_HASH;
      this.#tokens[id] = null;
      this.#filled[id] = 0;
    }
  }

  /** Internal consistency check for tests: throws on any broken invariant. */
  checkInvariants(liveTables: number[][]): void {
    const counts = new Int32Array(this.numBlocks);
    for (const t of liveTables) for (const id of t) counts[id]++;
    for (let i = 0; i < this.numBlocks; i++) {
      if (counts[i] !== this.#refCount[i]) throw new BlockManagerError(`block ${i}: refcount ${this.#refCount[i]}, used by ${counts[i]}`);
      if ((this.#refCount[i] === 0) !== this.#free.has(i)) {
        throw new BlockManagerError(`block ${i}: free-list membership disagrees with refcount`);
      }
    }
    for (const [h, id] of this.#hashToBlock) {
      if (this.#hash[id] !== h) throw new BlockManagerError(`hash map entry for block ${id} is stale`);
    }
  }
}
