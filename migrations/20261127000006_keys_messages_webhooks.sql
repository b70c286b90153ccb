-- App API keys, triggered messages and result webhooks. Only new tables and nullable
-- columns: applies to a database in use as well as to a fresh one.

-- The team's webhook receiver and the HMAC key its events are signed with (a new key
-- whenever the URL changes; never returned after the PUT that set it).
alter table apps add column webhook_url text;
alter table apps add column webhook_secret text;

-- Per-app keys for a team's own backends. Only a hash of the key is kept.
create table api_keys (
    id           uuid primary key,
    appid        text not null references apps (appid) on delete cascade,
    name         text not null,
    scopes       text[] not null
                 check (cardinality(scopes) > 0 and scopes <@ array['send', 'import', 'read']),
    -- SHA-256 of the whole key: a request's key is found through this index
    key_hash     bytea not null unique,
    -- the key's first 8 characters, to tell keys apart in lists
    prefix       text not null,
    created_at   timestamptz not null default now(),
    last_used_at timestamptz
);
create index api_keys_by_app on api_keys (appid, created_at);

-- Triggered messages: one user, now or at a time.
--
-- No foreign key to apps: every send-now request inserts here, and the key-share lock a
-- foreign key takes on the app's row would make concurrent requests of one app contend
-- on that row. The API checks the app, and apps are never deleted.
create table messages (
    id                uuid primary key,
    -- creation order: the paging cursor, and the sender's handle on a message
    seq               bigint generated always as identity,
    appid             text not null,
    openid            text not null,
    -- set when a credit is claimed (a scheduled message may name a user not known yet)
    user_id           bigint,
    kind              text not null check (kind in ('template', 'subscribe')),
    template_id       text not null,
    page              text,
    data              jsonb not null,
    emphasis_keyword  text,
    miniprogram_state text,
    lang              text,
    formid_pick       text not null default 'freshest'
                      check (formid_pick in ('freshest', 'expiring_first')),
    idempotency_key   text,
    send_at           timestamptz,
    -- scheduled: waits for due_at, holds no credit; queued: holds its credit, waits for the
    -- app's sender; sending: in a sender's hands until lease_until; the rest are final
    status            text not null check (status in ('scheduled', 'queued', 'sending', 'sent',
                                                      'failed', 'no_formid', 'no_quota', 'cancelled')),
    due_at            timestamptz not null default now(),
    formid_id         bigint,
    form_id           text,
    formids_tried     smallint not null default 0,
    attempts          smallint not null default 0,
    outcome_unknown   boolean not null default false,
    errcode           text,
    errmsg            text,
    msg_id            text,
    push_status       text,
    lease_until       timestamptz,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now()
);
-- What the app's sender claims, and which apps have something due.
create index messages_due on messages (appid, due_at) where status in ('scheduled', 'queued');
-- Stale-lease recovery.
create index messages_in_flight on messages (appid) where status = 'sending';
-- Listing (newest first), per app and per user; the sender records outcomes by (appid, seq).
create index messages_by_app on messages (appid, seq);
create index messages_by_openid on messages (appid, openid, seq);
-- subscribe_msg_sent_event results find their message by WeChat's msgid.
create index messages_by_msg_id on messages (msg_id) where msg_id is not null;

-- Idempotency keys, unique per app for 24 hours: a key older than that may be taken by a
-- new message. Concurrent repeats meet on the primary key, so only one creates a message.
-- (No foreign key: the row is written before its message, in the same transaction.)
create table message_keys (
    appid      text not null,
    key        text not null,
    message_id uuid not null,
    -- SHA-256 of the request body (keys sorted): a repeat must carry the same body
    body_hash  bytea not null,
    created_at timestamptz not null default now(),
    primary key (appid, key)
);

-- The webhook outbox: an event is written in the same transaction as the status change
-- that causes it (only for apps with a webhook), and sent from here until a 2xx answer.
create table webhook_events (
    id              uuid primary key,
    appid           text not null references apps (appid) on delete cascade,
    type            text not null check (type in ('message.sent', 'message.failed', 'message.no_formid',
                                                  'message.no_quota', 'campaign.completed', 'campaign.failed')),
    -- the message or campaign the event is about
    subject_id      uuid not null,
    -- the body as first sent; retries send the same body
    payload         jsonb,
    -- pending: to be sent at next_attempt_at; delivered: a 2xx came back; expired: no 2xx
    -- within 24 hours; dropped: the app's webhook was removed first
    status          text not null default 'pending'
                    check (status in ('pending', 'delivered', 'expired', 'dropped')),
    attempts        integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    last_error      text,
    created_at      timestamptz not null default now(),
    finished_at     timestamptz
);
create index webhook_events_due on webhook_events (next_attempt_at) where status = 'pending';
