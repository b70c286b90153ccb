-- Send hygiene: a per-app frequency cap and quiet hours, campaigns that ignore quiet hours,
-- the `capped` delivery status, and one function that claims every credit formpush spends.

-- At most cap_max messages per user within any cap_per_secs seconds (both null: no cap).
alter table apps add column cap_max integer check (cap_max between 1 and 100);
alter table apps add column cap_per_secs integer check (cap_per_secs between 1 and 2592000);
alter table apps add constraint apps_cap_whole check ((cap_max is null) = (cap_per_secs is null));
-- No campaign message between quiet_start and quiet_end, local time in quiet_timezone
-- (an IANA name); the window crosses midnight when quiet_end < quiet_start.
alter table apps add column quiet_start time;
alter table apps add column quiet_end time;
alter table apps add column quiet_timezone text;
alter table apps add constraint apps_quiet_whole check (
    (quiet_start is null and quiet_end is null and quiet_timezone is null)
    or (quiet_start is not null and quiet_end is not null and quiet_timezone is not null
        and quiet_start <> quiet_end));

alter table campaigns add column ignore_quiet_hours boolean not null default false;
-- A cron firing that fell inside the app's quiet hours waits until then to start its run.
alter table campaigns add column held_until timestamptz;
-- A run holding its remaining deliveries for the app's quiet hours: when they end.
alter table campaign_runs add column held_until timestamptz;

-- 'capped': the user had already received the app's frequency cap of messages.
alter table deliveries drop constraint deliveries_status_check;
alter table deliveries add constraint deliveries_status_check
    check (status in ('pending', 'sending', 'sent', 'failed', 'no_formid', 'no_quota', 'capped'))
    not valid;
alter table deliveries validate constraint deliveries_status_check;

-- The frequency cap's memory: per user, when each message that counts toward the window
-- was claimed (only while the user's app has a cap). The cap is checked and a slot taken in
-- one upsert of this row, so concurrent claims for one user (any campaign, any instance)
-- wait for each other and see each other's slots. Entries older than the app's window are
-- dropped whenever the row is written. Every claim rewrites its users' rows: room left on
-- each page lets the new version stay there (a HOT update, no index entry to add).
create table user_sends (
    user_id bigint primary key,
    recent  timestamptz[] not null
) with (fillfactor = 50);
-- The slot a delivery or message holds in its user's `recent` (null: none), given back
-- when its credit is given back or WeChat did not deliver it.
alter table deliveries add column slot_at timestamptz;
alter table messages add column slot_at timestamptz;

-- How many of a user's `recent` sends fall after `since`.
create function sends_since(recent timestamptz[], since timestamptz) returns integer
language sql immutable parallel safe
return (select count(*)::integer from unnest(recent) as t where t > since);

-- `recent` with one occurrence of each of `gone` removed (slots given back).
create function forget_sends(recent timestamptz[], gone timestamptz[]) returns timestamptz[]
language sql immutable parallel safe
return (
    select coalesce(array_agg(r.t order by r.t), '{}')
    from (select t, row_number() over (partition by t) as n from unnest(recent) as t) r
    where r.n > (select count(*) from unnest(gone) as g where g = r.t));

-- The one claim of credits, for campaign deliveries, triggered messages and test sends.
-- Each claim (p_keys[i], the caller's handle) is for user p_users[i] (null: unknown, no
-- credit), of kind p_kinds[i]: 'template' takes the user's best usable formId by
-- p_picks[i] ('freshest' or 'expiring_first'), 'subscribe' one grant of template
-- p_templates[i]. Claims must not repeat a user's template claim, nor a (user, template)
-- subscribe claim: both would find the same credit.
--
-- When the app has a frequency cap, every claim that found a credit takes a slot in its
-- user's window (user_sends); with p_capped, a user whose window is full gets no slot, and
-- the claim ends `capped`: the credit is not spent. Credits are locked before windows, and
-- windows in user order, everywhere, so concurrent claims cannot deadlock on them.
--
-- Returns one row per claim: the formId spent, whether a grant was spent, whether the cap
-- held it back, and the slot taken (its time in `recent`).
--
-- PL/pgSQL with a generic plan, kept for the session: the statement is planned once, not
-- on every call (planning it took about as long as running it for a batch of 256). Its
-- plan does not depend on the values: every claim reaches each user's few rows through
-- their keys.
create function claim_credits(
    p_appid text, p_keys bigint[], p_users bigint[], p_kinds text[], p_templates text[],
    p_picks text[], p_capped boolean)
returns table (key bigint, formid_id bigint, form_id text, granted boolean, capped boolean,
               slot_at timestamptz)
language plpgsql volatile
set plan_cache_mode = force_generic_plan
as $$
#variable_conflict use_column
declare
    v_cap_max integer;
    v_cap_per interval;
begin
select a.cap_max, make_interval(secs => a.cap_per_secs) into v_cap_max, v_cap_per
from apps a where a.appid = p_appid;

if v_cap_max is null then
    -- No cap: each credit found is spent in the statement that finds it.
    return query
    with claim as (
        select * from unnest(p_keys, p_users, p_kinds, p_templates, p_picks)
                      as c(key, user_id, kind, template_id, pick)
    ),
    formid as (
        -- Two lookups, of which each claim runs one: a plain order by lets the freshest
        -- walk the claim index (user_id, created_at desc) and stop at the first usable one.
        select c.key, coalesce(fresh.id, soon.id) as id,
               coalesce(fresh.form_id, soon.form_id) as form_id
        from claim c
        left join lateral (
            select f.id, f.form_id from formids f
            where c.kind = 'template' and c.pick <> 'expiring_first' and f.user_id = c.user_id
              and f.uses_left > 0 and not f.invalid
              -- not one that may expire before WeChat sees it
              and f.expires_at > now() + interval '1 minute'
            order by f.created_at desc
            limit 1
            for update skip locked
        ) fresh on true
        left join lateral (
            select f.id, f.form_id from formids f
            where c.kind = 'template' and c.pick = 'expiring_first' and f.user_id = c.user_id
              and f.uses_left > 0 and not f.invalid
              and f.expires_at > now() + interval '1 minute'
            order by f.expires_at, f.created_at desc
            limit 1
            for update skip locked
        ) soon on true
        where fresh.id is not null or soon.id is not null
    ),
    consumed as (
        update formids f set uses_left = f.uses_left - 1, last_used_at = now()
        from formid fo where f.id = fo.id
    ),
    granted as (
        update subscription_grants g set remaining = g.remaining - 1, updated_at = now()
        from claim c
        where c.kind = 'subscribe' and g.user_id = c.user_id
          and g.template_id = c.template_id and g.remaining > 0
        returning c.key
    )
    select c.key, fo.id, fo.form_id, gr.key is not null, false, null::timestamptz
    from claim c
    left join formid fo on fo.key = c.key
    left join granted gr on gr.key = c.key;
    return;
end if;

-- A cap: credits are found and locked first, then the users' windows (taking the slots),
-- and only the credits of claims that got a slot are spent.
return query
with claim as (
    select * from unnest(p_keys, p_users, p_kinds, p_templates, p_picks)
                  as c(key, user_id, kind, template_id, pick)
),
formid as (
    -- The same lookup as above.
    select c.key, coalesce(fresh.id, soon.id) as id,
           coalesce(fresh.form_id, soon.form_id) as form_id
    from claim c
    left join lateral (
        select f.id, f.form_id from formids f
        where c.kind = 'template' and c.pick <> 'expiring_first' and f.user_id = c.user_id
          and f.uses_left > 0 and not f.invalid
          -- not one that may expire before WeChat sees it
          and f.expires_at > now() + interval '1 minute'
        order by f.created_at desc
        limit 1
        for update skip locked
    ) fresh on true
    left join lateral (
        select f.id, f.form_id from formids f
        where c.kind = 'template' and c.pick = 'expiring_first' and f.user_id = c.user_id
          and f.uses_left > 0 and not f.invalid
          and f.expires_at > now() + interval '1 minute'
        order by f.expires_at, f.created_at desc
        limit 1
        for update skip locked
    ) soon on true
    where fresh.id is not null or soon.id is not null
),
grant_held as (
    select c.key
    from claim c join subscription_grants g
         on g.user_id = c.user_id and g.template_id = c.template_id
    where c.kind = 'subscribe' and g.remaining > 0
    order by g.user_id, g.template_id
    for update of g
),
found as (
    select c.key, c.user_id from claim c
    where c.key in (select key from formid) or c.key in (select key from grant_held)
),
slot as (
    insert into user_sends as s (user_id, recent)
    select f.user_id, array_fill(now(), array[count(*)::integer])
    from found f
    group by f.user_id
    order by f.user_id
    on conflict (user_id) do update set
        recent = array(select t from unnest(s.recent) as t where t > now() - v_cap_per)
                 || excluded.recent
    where not p_capped
       or sends_since(s.recent, now() - v_cap_per) + cardinality(excluded.recent) <= v_cap_max
    returning s.user_id
),
cleared as (
    select f.key from found f where f.user_id in (select user_id from slot)
),
consumed as (
    update formids f set uses_left = f.uses_left - 1, last_used_at = now()
    from formid fo
    where f.id = fo.id and fo.key in (select key from cleared)
),
spent as (
    update subscription_grants g set remaining = g.remaining - 1, updated_at = now()
    from claim c
    where c.key in (select key from grant_held) and c.key in (select key from cleared)
      and g.user_id = c.user_id and g.template_id = c.template_id
)
select c.key,
       case when cl.key is not null then fo.id end,
       case when cl.key is not null then fo.form_id end,
       cl.key is not null and c.kind = 'subscribe',
       f.key is not null and cl.key is null,
       case when cl.key is not null then now() end
from claim c
left join found f on f.key = c.key
left join cleared cl on cl.key = c.key
left join formid fo on fo.key = c.key;
end
$$;
