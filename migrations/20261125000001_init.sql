-- formpush schema. Invariants live here (unique formId per app, one delivery per
-- run and user, status checks) so that a bug in the code cannot break them.

create table apps (
    appid             text primary key,
    secret            text not null,
    push_token        text,
    encoding_aes_key  text,
    send_rate_per_sec integer not null default 200 check (send_rate_per_sec between 1 and 100000),
    -- 'stable' = cgi-bin/stable_token (default, safe to share an appid with other services),
    -- 'classic' = cgi-bin/token
    token_api         text not null default 'stable' check (token_api in ('stable', 'classic')),
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now()
);

-- Keys shared by every instance (the session-token signing key).
create table server_keys (
    name       text primary key,
    key        bytea not null,
    created_at timestamptz not null default now()
);

create table users (
    id         bigint generated always as identity primary key,
    appid      text not null references apps (appid) on delete cascade,
    openid     text not null,
    created_at timestamptz not null default now(),
    unique (appid, openid)
);

-- The credit pool for template messages: formIds (1 use) and prepay_ids (3 uses).
create table formids (
    id          bigint generated always as identity primary key,
    appid       text not null,
    user_id     bigint not null references users (id) on delete cascade,
    form_id     text not null,
    kind        text not null check (kind in ('formid', 'prepay')),
    uses_left   smallint not null check (uses_left >= 0),
    invalid     boolean not null default false,
    created_at  timestamptz not null,
    received_at timestamptz not null default now(),
    expires_at  timestamptz not null,
    last_used_at timestamptz,
    unique (appid, form_id)
);
-- Exactly the claim: a user's usable credits, freshest first (or closest to expiry).
create index formids_claim_freshest on formids (user_id, created_at desc) include (expires_at)
    where uses_left > 0 and not invalid;
create index formids_claim_expiring on formids (user_id, expires_at) where uses_left > 0 and not invalid;
-- Clean-up and stats.
create index formids_by_app_expiry on formids (appid, expires_at);

-- The credit pool for subscribe messages: one row per (user, template), a counter of accepts.
create table subscription_grants (
    user_id     bigint not null references users (id) on delete cascade,
    template_id text not null,
    remaining   integer not null check (remaining >= 0),
    updated_at  timestamptz not null default now(),
    primary key (user_id, template_id)
);

-- WeChat retries a push it did not see answered; this makes handling idempotent.
create table push_events_seen (
    appid       text not null,
    openid      text not null,
    create_time bigint not null,
    event       text not null,
    seen_at     timestamptz not null default now(),
    primary key (appid, openid, create_time, event)
);

-- Shared WeChat access_token cache: one row per app, refreshed under an advisory lock.
create table access_tokens (
    appid        text primary key references apps (appid) on delete cascade,
    access_token text not null,
    expires_at   timestamptz not null,
    refreshed_at timestamptz not null default now()
);

create table campaigns (
    id                uuid primary key,
    appid             text not null references apps (appid) on delete cascade,
    name              text not null,
    kind              text not null check (kind in ('template', 'subscribe')),
    template_id       text not null,
    page              text,
    data              jsonb not null,
    emphasis_keyword  text,
    miniprogram_state text,
    lang              text,
    formid_pick       text not null default 'freshest' check (formid_pick in ('freshest', 'expiring_first')),
    audience_type     text not null check (audience_type in ('all', 'openids', 'users')),
    schedule          jsonb not null,
    timezone          text not null,
    status            text not null check (status in ('scheduled', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    -- why a paused campaign is paused: 'admin' or 'quota' (45009; resume_at says when)
    pause_reason      text check (pause_reason in ('admin', 'quota')),
    resume_at         timestamptz,
    next_run_at       timestamptz,
    last_error        jsonb,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now()
);
create index campaigns_due on campaigns (next_run_at) where status in ('scheduled', 'running');
create index campaigns_resume on campaigns (resume_at) where status = 'paused';

-- Audience members of 'openids' / 'users' campaigns, with their placeholder values.
create table campaign_audience (
    campaign_id uuid not null references campaigns (id) on delete cascade,
    user_id     bigint not null references users (id) on delete cascade,
    vars        jsonb not null default '{}',
    primary key (campaign_id, user_id)
);

create table campaign_runs (
    id            uuid primary key,
    campaign_id   uuid not null references campaigns (id) on delete cascade,
    appid         text not null,
    scheduled_for timestamptz not null,
    status        text not null check (status in ('running', 'completed', 'failed', 'cancelled')),
    started_at    timestamptz not null default now(),
    finished_at   timestamptz,
    -- each firing of a schedule is one run, whoever notices it first
    unique (campaign_id, scheduled_for)
);
create index campaign_runs_active on campaign_runs (appid) where status = 'running';

create table deliveries (
    id             bigint generated always as identity primary key,
    run_id         uuid not null references campaign_runs (id) on delete cascade,
    campaign_id    uuid not null references campaigns (id) on delete cascade,
    user_id        bigint not null references users (id) on delete cascade,
    openid         text not null,
    status         text not null default 'pending'
                   check (status in ('pending', 'sending', 'sent', 'failed', 'no_formid', 'no_quota')),
    formid_id      bigint,
    form_id        text,
    formids_tried  smallint not null default 0,
    attempts       smallint not null default 0,
    -- a send was attempted whose result we never saw (timeout, 5xx, crash while in flight)
    outcome_unknown boolean not null default false,
    errcode        text,
    errmsg         text,
    msg_id         text,
    push_status    text,
    lease_until    timestamptz,
    next_attempt_at timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    -- a user receives at most one message per run, whatever crashes
    unique (run_id, user_id)
);
create index deliveries_pending on deliveries (run_id, next_attempt_at) where status = 'pending';
create index deliveries_in_flight on deliveries (lease_until) where status = 'sending';
create index deliveries_by_campaign on deliveries (campaign_id, status, id);
create index deliveries_by_msg_id on deliveries (msg_id) where msg_id is not null;

-- Which instance sends for an app. One sender per app keeps the per-app rate limit exact
-- and means a run is worked by one instance at a time; a dead owner's lease runs out.
create table app_leases (
    appid      text primary key references apps (appid) on delete cascade,
    owner      uuid not null,
    expires_at timestamptz not null
);
