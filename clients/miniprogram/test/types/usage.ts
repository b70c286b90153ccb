// Compiled by `tsc --noEmit` (never run): the hand-written declarations must describe the
// API as a mini-program uses it, and the real `wx` (miniprogram-api-typings) must fit.
import {
  createClient,
  FormpushClient,
  FormpushError,
  FlushResult,
  isMockFormId,
  MAX_BATCH,
  Session,
  SubscribeResults,
} from '../../miniprogram_dist';

declare const realWx: WechatMiniprogram.Wx;

const client: FormpushClient = createClient({
  baseUrl: 'https://push.example.com',
  appid: 'wx0123456789abcdef',
  wx: realWx,
  storageKey: 'formpush',
  batchSize: MAX_BATCH,
  autoFlush: true,
  flushDelayMs: 1000,
  maxQueue: 1000,
  maxAttempts: 5,
  retryBaseMs: 500,
  retryMaxMs: 30_000,
  timeoutMs: 10_000,
  onError: (err: Error) => console.warn(err.message),
});

// Without `wx`: the global one.
createClient({ baseUrl: 'https://push.example.com', appid: 'wx0123456789abcdef' });

// A page's submit handler hands over the event as it came.
function onSubmit(e: WechatMiniprogram.FormSubmit): Promise<boolean> {
  return client.collect(e);
}

async function flow(): Promise<void> {
  const session: Session = await client.login();
  const openid: string = session.openid;
  const expires: number = session.expiresAt;
  const queued: boolean = await client.collect('1732500000000');
  const left: number = client.pending();
  const result: FlushResult = await client.flush();
  const reasons: string[] = result.rejected.map((r) => r.reason);
  const choices: SubscribeResults = await client.subscribe(['TPL_ORDER_SHIPPED']);
  const status: string = choices['TPL_ORDER_SHIPPED'];
  await client.logout();
  client.close();
  void [openid, expires, queued, left, reasons, status, isMockFormId('x'), onSubmit];
}

function describe(err: unknown): string {
  if (err instanceof FormpushError) {
    const status: number = err.status;
    const code: string = err.code;
    const retryable: boolean = err.retryable;
    const after: number | undefined = err.retryAfterMs;
    return `${status} ${code} ${retryable} ${after ?? ''} ${err.message}`;
  }
  return String(err);
}

// Misuse is a compile error.
// @ts-expect-error baseUrl is required
createClient({ appid: 'wx0123456789abcdef' });
// @ts-expect-error subscribe takes an array of template ids
client.subscribe('TPL_ORDER_SHIPPED');
// @ts-expect-error collect takes an event or a string
client.collect(42);
// @ts-expect-error batchSize is a number
createClient({ baseUrl: 'https://x', appid: 'wx', batchSize: '100' });

void [flow, describe];
