// Type declarations of the formpush mini-program client (hand-written; see README.md).

/** What the client needs of `wx`; the mini-program's own `wx` satisfies it. */
export interface WxLike {
  request(options: WxRequestOptions): unknown;
  login(options: {
    timeout?: number;
    success?: (res: { code: string }) => void;
    fail?: (err: { errMsg: string }) => void;
  }): unknown;
  getStorageSync(key: string): any;
  setStorageSync(key: string, data: any): void;
  removeStorageSync(key: string): void;
  requestSubscribeMessage?(options: {
    tmplIds: string[];
    success?: (res: SubscribeResults) => void;
    fail?: (err: { errMsg: string; errCode: number }) => void;
  }): unknown;
  onNetworkStatusChange?(listener: (res: { isConnected: boolean; networkType: string }) => void): void;
  offNetworkStatusChange?(listener?: (...args: any[]) => void): void;
}

export interface WxRequestOptions {
  url: string;
  method?: 'POST' | 'GET';
  data?: string | Record<string, any> | ArrayBuffer;
  header?: Record<string, any>;
  dataType?: string;
  timeout?: number;
  success?: (res: { data: any; statusCode: number; header: Record<string, any> }) => void;
  fail?: (err: { errMsg: string }) => void;
}

export interface ClientOptions {
  /** formpush's origin, e.g. `https://push.example.com` (a request domain of the mini-program). */
  baseUrl: string;
  /** The mini-program's appid, as registered in formpush. */
  appid: string;
  /** The wx API; defaults to the global `wx`. Tests pass a stand-in. */
  wx?: WxLike;
  /** Prefix of the two storage keys (`<storageKey>:<appid>:session` and `:queue`). Default `formpush`. */
  storageKey?: string;
  /** formIds per request, 1 to 100. Default 100. */
  batchSize?: number;
  /** Send automatically after `collect`, at start and when the network returns. Default true. */
  autoFlush?: boolean;
  /** How long `collect` waits before sending, so quick submits share a request. Default 1000 ms. */
  flushDelayMs?: number;
  /** Most formIds kept queued; beyond it the oldest are dropped. Default 1000. */
  maxQueue?: number;
  /** Tries per request, the first included. Default 5. */
  maxAttempts?: number;
  /** First retry delay; it doubles per try (with jitter). Default 500 ms. */
  retryBaseMs?: number;
  /** Longest retry delay, and the longest Retry-After waited for in one call. Default 30000 ms. */
  retryMaxMs?: number;
  /** `wx.request` / `wx.login` timeout. Default 10000 ms. */
  timeoutMs?: number;
  /** Called with the error of a flush started automatically. Default: `console.warn`. */
  onError?: (err: Error) => void;
}

export interface Session {
  token: string;
  openid: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
}

export interface RejectedFormId {
  form_id: string;
  reason: 'malformed' | 'mock' | 'expired' | string;
}

export interface FlushResult {
  /** formIds sent and acknowledged by the server in this flush. */
  sent: number;
  /** Of those, stored as new credits. */
  accepted: number;
  /** Of those, already stored for this user. */
  duplicates: number;
  /** Of those, refused by the server, with its reason. */
  rejected: RejectedFormId[];
}

/** `wx.requestSubscribeMessage`'s result: `errMsg` and template id → `accept`, `reject`, `ban`, `filter`, `acceptWithAudio`. */
export type SubscribeResults = { errMsg: string } & Record<string, string>;

export type ClientErrorCode =
  | 'network'
  | 'login_failed'
  | 'subscribe_failed'
  | 'bad_response'
  | 'retry_later';

export class FormpushError extends Error {
  name: 'FormpushError';
  /** HTTP status; 0 when no answer came. */
  status: number;
  /** The server's `error` code (`invalid_session`, `payload_too_large`…), `http_<status>` for an answer without one, or a client code. */
  code: ClientErrorCode | string;
  /** Whether trying again later can succeed. */
  retryable: boolean;
  /** From Retry-After, or the time left of an earlier one. */
  retryAfterMs?: number;
  /** `wx.requestSubscribeMessage`'s errCode when `code` is `subscribe_failed`. */
  errCode?: number;
  /** On a failed subscription report: what the user chose. */
  results?: SubscribeResults;
}

export class FormpushClient {
  constructor(options: ClientOptions);
  /** A new login: `wx.login` → session token, kept in storage. */
  login(): Promise<Session>;
  /** Forgets the stored session; the queue stays. */
  logout(): Promise<void>;
  /** Queues a formId (submit event or string); false when dropped (mock, empty, queued or sent already). */
  collect(eventOrFormId: string | { detail: { formId?: unknown } }): Promise<boolean>;
  /** formIds waiting to be sent. */
  pending(): number;
  /** Sends everything queued; rejects with the error that stopped it (the rest stays queued). */
  flush(): Promise<FlushResult>;
  /** `wx.requestSubscribeMessage`, then reports the accepts; resolves with the user's choices. */
  subscribe(tmplIds: string[]): Promise<SubscribeResults>;
  /** Stops automatic flushes (timer, network listener). */
  close(): void;
}

export function createClient(options: ClientOptions): FormpushClient;
/** True for the developer tools' placeholder and `requestFormId:fail…` values. */
export function isMockFormId(formId: string): boolean;
export const MAX_BATCH: 100;
export const DEVTOOLS_MOCK: 'the formId is a mock one';
