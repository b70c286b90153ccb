-- Subscribe templates synced from WeChat (gettemplate), to check campaign data against
-- the rule of each keyword before a grant is spent on it.
create table subscribe_templates (
    appid       text not null references apps (appid) on delete cascade,
    template_id text not null,
    title       text not null,
    -- WeChat's type: 2 one-time, 3 long-term
    kind        integer not null,
    example     text not null,
    -- [{"key": "thing1", "label": "会议地点", "values": [...]}], in the content's order
    keywords    jsonb not null,
    synced_at   timestamptz not null,
    primary key (appid, template_id)
);

-- Apps whose templates were synced at least once: the daily sync keeps these fresh, and
-- claimed_at lets one instance of many take each day's sync of an app.
create table template_syncs (
    appid      text primary key references apps (appid) on delete cascade,
    synced_at  timestamptz not null,
    claimed_at timestamptz not null default now()
);

-- What a subscribe campaign does with a value longer than its keyword allows.
alter table campaigns add column data_policy text not null default 'reject'
    check (data_policy in ('reject', 'truncate'));
