// pagination.ts — list results. A list call returns a PagePromise: await it for the first page, or
// `for await` over it to get every item, the next pages fetched as needed.
//
//   for await (const job of client.fineTuning.jobs.list({ limit: 10 })) console.log(job.id);
//   let page = await client.fineTuning.jobs.list();
//   while (page.hasNextPage()) page = await page.getNextPage();
//
// CursorPage follows OpenAI's cursor pagination ({data, has_more}; the next page is
// `after=<last id>`); Page is a single-page list ({object: "list", data}).
import { APIPromise, type APIResponseProps, parseBody, type RequestOptions } from "./core.ts";

export interface CursorPageParams {
  /** The id of the last item of the previous page. */
  after?: string;
  /** Items per page. */
  limit?: number;
}

/** Fetches a page for the given query (the resource binds method, path and options). */
export type PageFetcher<P> = (query: Record<string, unknown>) => APIPromise<P>;

export abstract class AbstractPage<Item> implements AsyncIterable<Item> {
  constructor(
    protected readonly fetcher: PageFetcher<AbstractPage<Item>>,
    protected readonly query: Record<string, unknown>,
  ) {}

  abstract getPaginatedItems(): Item[];
  /** The query for the next page, or null on the last page. */
  abstract nextPageQuery(): Record<string, unknown> | null;

  hasNextPage(): boolean {
    return this.getPaginatedItems().length > 0 && this.nextPageQuery() !== null;
  }

  async getNextPage(): Promise<this> {
    const q = this.nextPageQuery();
    if (!q || !this.hasNextPage()) {
      throw new Error("no next page: check hasNextPage() first");
    }
    return await this.fetcher({ ...this.query, ...q }) as this;
  }

  /** This page and each following one. */
  async *iterPages(): AsyncGenerator<this> {
    // deno-lint-ignore no-this-alias
    let page = this;
    yield page;
    while (page.hasNextPage()) {
      page = await page.getNextPage();
      yield page;
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Item> {
    for await (const page of this.iterPages()) yield* page.getPaginatedItems();
  }
}

export interface CursorPageResponse<Item> {
  object?: string;
  data: Item[];
  has_more?: boolean;
  first_id?: string | null;
  last_id?: string | null;
}

export class CursorPage<Item extends { id: string }> extends AbstractPage<Item> {
  readonly data: Item[];
  readonly has_more: boolean;
  readonly first_id: string | null;
  readonly last_id: string | null;
  /** The x-request-id of the response this page came from. */
  readonly requestId: string | null;

  constructor(
    fetcher: PageFetcher<CursorPage<Item>>,
    query: Record<string, unknown>,
    body: CursorPageResponse<Item>,
    response: Response,
  ) {
    super(fetcher as PageFetcher<AbstractPage<Item>>, query);
    this.data = body.data ?? [];
    this.has_more = body.has_more ?? false;
    this.first_id = body.first_id ?? this.data[0]?.id ?? null;
    this.last_id = body.last_id ?? this.data.at(-1)?.id ?? null;
    this.requestId = response.headers.get("x-request-id");
  }

  getPaginatedItems(): Item[] {
    return this.data;
  }

  override hasNextPage(): boolean {
    return this.has_more && super.hasNextPage();
  }

  nextPageQuery(): Record<string, unknown> | null {
    return this.has_more && this.last_id ? { after: this.last_id } : null;
  }
}

export class Page<Item> extends AbstractPage<Item> {
  readonly object: string;
  readonly data: Item[];
  readonly requestId: string | null;

  constructor(
    fetcher: PageFetcher<Page<Item>>,
    query: Record<string, unknown>,
    body: { object?: string; data: Item[] },
    response: Response,
  ) {
    super(fetcher as PageFetcher<AbstractPage<Item>>, query);
    this.object = body.object ?? "list";
    this.data = body.data ?? [];
    this.requestId = response.headers.get("x-request-id");
  }

  getPaginatedItems(): Item[] {
    return this.data;
  }

  nextPageQuery(): null {
    return null;
  }
}

/** A promise of the first page that is also an async iterable over every item of every page. */
export class PagePromise<P extends AbstractPage<Item>, Item> extends APIPromise<P> implements AsyncIterable<Item> {
  async *[Symbol.asyncIterator](): AsyncGenerator<Item> {
    const page = await this;
    for await (const item of page) yield item;
  }
}

type PageCtor<P, Item> = new (
  fetcher: PageFetcher<P>,
  query: Record<string, unknown>,
  body: { data: Item[] },
  response: Response,
) => P;

/** Builds the fetcher for one list endpoint and returns its first page's PagePromise. */
export function requestPage<P extends AbstractPage<Item>, Item>(
  Ctor: PageCtor<P, Item>,
  send: (
    query: Record<string, unknown>,
    options?: RequestOptions,
  ) => Promise<APIResponseProps>,
  query: Record<string, unknown>,
  options?: RequestOptions,
): PagePromise<P, Item> {
  const fetcher: PageFetcher<P> = (q) => make(q);
  const make = (q: Record<string, unknown>): PagePromise<P, Item> =>
    new PagePromise<P, Item>(
      send(q, options),
      async (props) =>
        new Ctor(
          fetcher,
          q,
          await parseBody<{ data: Item[] }>(props),
          props.response,
        ),
    );
  return make(query);
}
