-- claim_credits (20261130000018) planned for the batch it is given: its generic plan took
-- `unnest` of the claim arrays for 10 rows, and the joins between its steps, sized for 10,
-- turned quadratic at a sender's batch of 256 when the app has a frequency cap. The claims
-- now come through a function that says 256; with a cap, every credit found is one set,
-- joined by user to the slots taken, and the window is counted inline (a call of
-- sends_since per user cost more than the count).

-- The claims `claim_credits` is given, as rows, estimated at a sender's batch.
create function credit_claims(
    p_keys bigint[], p_users bigint[], p_kinds text[], p_templates text[], p_picks text[])
returns table (key bigint, user_id bigint, kind text, template_id text, pick text)
language sql volatile rows 256
as $$
select * from unnest(p_keys, p_users, p_kinds, p_templates, p_picks)
$$;

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
create or replace function claim_credits(
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
        select * from credit_claims(p_keys, p_users, p_kinds, p_templates, p_picks)
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
    select * from credit_claims(p_keys, p_users, p_kinds, p_templates, p_picks)
),
formid as (
    -- The same lookup as above.
    select c.key, c.user_id, coalesce(fresh.id, soon.id) as id,
           coalesce(fresh.form_id, soon.form_id) as form_id
    from claim c
    left join lateral (
        select f.id, f.form_id from formids f
        where c.kind = 'template' and c.pick <> 'expiring_first' and f.user_id = c.user_id
          and f.uses_left > 0 and not f.invalid
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
    select c.key, c.user_id, c.template_id
    from claim c join subscription_grants g
         on g.user_id = c.user_id and g.template_id = c.template_id
    where c.kind = 'subscribe' and g.remaining > 0
    order by g.user_id, g.template_id
    for update of g
),
-- Every credit found, one row per claim that found one.
found as (
    select key, user_id, id as formid_id, form_id, null::text as template_id from formid
    union all
    select key, user_id, null, null, template_id from grant_held
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
       -- sends_since, written out: called once per user, the function cost more than
       -- the count
       or (select count(*) from unnest(s.recent) as t where t > now() - v_cap_per)
          + cardinality(excluded.recent) <= v_cap_max
    returning s.user_id
),
consumed as (
    update formids f set uses_left = f.uses_left - 1, last_used_at = now()
    from found fd
    where f.id = fd.formid_id and fd.user_id in (select user_id from slot)
),
spent as (
    update subscription_grants g set remaining = g.remaining - 1, updated_at = now()
    from found fd
    where fd.template_id is not null and g.user_id = fd.user_id
      and g.template_id = fd.template_id and fd.user_id in (select user_id from slot)
)
select c.key,
       case when sl.user_id is not null then fd.formid_id end,
       case when sl.user_id is not null then fd.form_id end,
       fd.template_id is not null and sl.user_id is not null,
       fd.key is not null and sl.user_id is null,
       case when fd.key is not null and sl.user_id is not null then now() end
from claim c
left join found fd on fd.key = c.key
left join slot sl on sl.user_id = c.user_id;
end
$$;
