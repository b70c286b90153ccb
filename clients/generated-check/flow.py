"""A real flow through a client generated from formpush's /openapi.json.

Run by scripts/generated-client, which starts formpush and the sandbox, generates the
package `formpush_client` from the running service's /openapi.json with
openapi-python-client, type-checks this file against it with mypy (mypy.ini), then runs
it. Everything formpush is called through the generated, typed API; the sandbox's control
endpoints (login codes, formIds, grants, received messages: the fake WeChat's side, not
formpush's API) through plain httpx.

The flow: register an app (and check the admin token is required), three users log in
through the sandbox, two post formIds and one reports a subscribe grant, a template
campaign to the three and a subscribe campaign (with per-user vars) to two run at once on
the service's own scheduler, both complete, their deliveries (paged, and filtered by
status) show `sent` for the users who held a credit and `no_formid` / `no_quota` for the
others, the runs and the campaign list agree, the pool stats count the spent formIds, and
the sandbox received exactly the messages the deliveries claim, rendered per user.

Environment: FORMPUSH_URL, SANDBOX_URL, FORMPUSH_ADMIN_TOKEN, FLOW_APPID, FLOW_SECRET,
FLOW_DEADLINE_SECS (how long the campaigns may take to complete, default 60).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TypeVar
from uuid import UUID

import httpx

from formpush_client import AuthenticatedClient, Client
from formpush_client.api.admin import get_app, get_pool_stats, list_apps, register_app
from formpush_client.api.campaigns import (
    create_campaign,
    get_campaign,
    list_campaign_deliveries,
    list_campaign_runs,
    list_campaigns,
)
from formpush_client.api.client import collect_form_ids, create_session, report_subscriptions
from formpush_client.api.operations import check_liveness, check_readiness
from formpush_client.models import (
    AppList,
    AppView,
    AudienceType,
    AudienceUser,
    AudienceUserVars,
    CampaignKind,
    CampaignList,
    CampaignRequest,
    CampaignRequestData,
    CampaignStatus,
    CampaignView,
    ClientBody,
    DataEntry,
    DeliveryPage,
    DeliveryView,
    ErrorBody,
    IngestAnswer,
    LoginBody,
    PoolStats,
    PutApp,
    PutAppAnswer,
    Granted,
    RunList,
    RunStatus,
    SessionView,
    ShownDeliveryStatus,
    SubscriptionBody,
    SubscriptionBodyResults,
    TokenApi,
    Totals,
)

# The oneOf variants of Audience and ScheduleSpec, named by their schema titles.
from formpush_client.models import (
    AudienceOpenids,
    AudienceOpenidsType,
    AudienceUsers,
    AudienceUsersType,
    ScheduleNow,
    ScheduleNowType,
)
from formpush_client.types import UNSET, Response, Unset

T = TypeVar("T")

TEMPLATE_ID = "TPL_GENERATED_CHECK"
SUBSCRIBE_TEMPLATE_ID = "TPL_GENERATED_SUB"
# alice and bob post formIds, carol none: the template campaign reaches alice and bob.
# alice reports a grant, bob none: the subscribe campaign reaches alice only.
USERS = ("alice", "bob", "carol")
FORMIDS_PER_USER = 2


class FlowError(Exception):
    pass


def log(message: str) -> None:
    print(f"generated-client: {message}", file=sys.stderr, flush=True)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise FlowError(message)


def expect(what: str, response: Response[T | ErrorBody], status: HTTPStatus, kind: type[T]) -> T:
    """The parsed body of an answer that must have this status and this generated type."""
    body = response.content.decode(errors="replace")[:500]
    check(response.status_code == status,
          f"{what}: expected {status.value}, got {response.status_code.value}: {body}")
    parsed = response.parsed
    check(isinstance(parsed, kind), f"{what}: parsed as {type(parsed).__name__}, not {kind.__name__}: {body}")
    assert isinstance(parsed, kind)
    return parsed


def expect_error(what: str, response: Response[T], status: HTTPStatus, code: str) -> ErrorBody:
    """The ErrorBody of a refusal that must have this status and this error code."""
    body = response.content.decode(errors="replace")[:500]
    check(response.status_code == status,
          f"{what}: expected {status.value}, got {response.status_code.value}: {body}")
    error = response.parsed
    check(isinstance(error, ErrorBody), f"{what}: parsed as {type(error).__name__}, not ErrorBody: {body}")
    assert isinstance(error, ErrorBody)
    check(error.error == code, f"{what}: error {error.error!r}, expected {code!r}: {error.message}")
    return error


def present(value: T | None | Unset) -> T:
    """A field the API must have filled in."""
    check(value is not None and not isinstance(value, Unset), "a field is missing or null")
    assert value is not None and not isinstance(value, Unset)
    return value


class Sandbox:
    """The fake WeChat's control endpoints (plain HTTP: they are not formpush's API)."""

    def __init__(self, base_url: str, appid: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10)
        self.appid = appid

    def post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        answer = self.http.post(path, json={"appid": self.appid, **body})
        check(answer.status_code == 200, f"sandbox {path}: {answer.status_code} {answer.text}")
        parsed: dict[str, object] = answer.json()
        return parsed

    def login_code(self, openid: str) -> str:
        code = self.post("/sandbox/login_codes", {"openid": openid})["code"]
        assert isinstance(code, str)
        return code

    def form_ids(self, openid: str, count: int) -> list[str]:
        ids = self.post("/sandbox/formids", {"openid": openid, "count": count})["form_ids"]
        assert isinstance(ids, list) and all(isinstance(i, str) for i in ids)
        return [str(i) for i in ids]

    def grant(self, openid: str, template_id: str) -> None:
        self.post("/sandbox/subscriptions", {"openid": openid, "template_id": template_id})

    def messages(self) -> list[dict[str, object]]:
        answer = self.http.get("/sandbox/messages", params={"appid": self.appid, "limit": 1000})
        check(answer.status_code == 200, f"sandbox messages: {answer.status_code} {answer.text}")
        messages: list[dict[str, object]] = answer.json()["messages"]
        return messages


def wait_until(what: str, deadline: float, probe: Callable[[], T | None]) -> T:
    while True:
        value = probe()
        if value is not None:
            return value
        check(time.monotonic() < deadline, f"timed out waiting for {what}")
        time.sleep(0.25)


def all_deliveries(admin: AuthenticatedClient, campaign_id: UUID) -> list[DeliveryView]:
    """Every delivery of a campaign, one per page, following the `next` cursors."""
    items: list[DeliveryView] = []
    after: str | Unset = UNSET
    for _ in range(20):
        page = expect("list_campaign_deliveries (a page of 1)",
                      list_campaign_deliveries.sync_detailed(campaign_id, client=admin, limit=1, after=after),
                      HTTPStatus.OK, DeliveryPage)
        check(len(page.items) <= 1, f"a page of limit 1 has {len(page.items)} items")
        items.extend(page.items)
        if page.next_ is None or isinstance(page.next_, Unset):
            return items
        after = page.next_
    raise FlowError("deliveries: more pages than deliveries")


def main() -> None:
    base_url = os.environ["FORMPUSH_URL"]
    appid = os.environ["FLOW_APPID"]
    secret = os.environ["FLOW_SECRET"]
    deadline_secs = float(os.environ.get("FLOW_DEADLINE_SECS", "60"))
    sandbox = Sandbox(os.environ["SANDBOX_URL"], appid)
    public = Client(base_url=base_url, timeout=httpx.Timeout(10), raise_on_unexpected_status=True)
    admin = AuthenticatedClient(base_url=base_url, token=os.environ["FORMPUSH_ADMIN_TOKEN"],
                                timeout=httpx.Timeout(10), raise_on_unexpected_status=True)
    wrong_admin = AuthenticatedClient(base_url=base_url, token="not-the-admin-token",
                                      timeout=httpx.Timeout(10), raise_on_unexpected_status=True)

    # 1. Health, and the admin token is required.
    live = check_liveness.sync_detailed(client=public)
    check(live.status_code == HTTPStatus.OK, f"check_liveness: {live.status_code}")
    ready = check_readiness.sync_detailed(client=public)
    check(ready.status_code == HTTPStatus.OK, f"check_readiness: {ready.status_code} {ready.content!r}")
    expect_error("register_app with a wrong admin token",
                 register_app.sync_detailed(appid, client=wrong_admin, body=PutApp(secret=secret)),
                 HTTPStatus.UNAUTHORIZED, "invalid_admin_token")

    # 2. Register the app (201), update it (200), read it back.
    created = expect("register_app (new)", register_app.sync_detailed(appid, client=admin, body=PutApp(secret=secret)),
                     HTTPStatus.CREATED, PutAppAnswer)
    check(created.appid == appid and not created.has_token and not created.has_encoding_aes_key,
          f"register_app: {created.to_dict()}")
    check(created.token_api == TokenApi.STABLE, f"register_app: token_api {created.token_api}")
    updated = expect("register_app (update)",
                     register_app.sync_detailed(appid, client=admin, body=PutApp(secret=secret, send_rate_per_sec=50)),
                     HTTPStatus.OK, PutAppAnswer)
    check(updated.send_rate_per_sec == 50, f"register_app: send_rate_per_sec {updated.send_rate_per_sec}")
    shown = expect("get_app", get_app.sync_detailed(appid, client=admin), HTTPStatus.OK, AppView)
    check(shown.appid == appid and shown.send_rate_per_sec == 50 and shown.created_at == created.created_at,
          f"get_app: {shown.to_dict()}")
    apps = expect("list_apps", list_apps.sync_detailed(client=admin), HTTPStatus.OK, AppList)
    check(appid in [a.appid for a in apps.items], "list_apps: the app is missing")
    log(f"app {appid} registered")

    # 3. Users log in through the sandbox; alice and bob post formIds, alice reports a grant.
    sessions: dict[str, AuthenticatedClient] = {}
    form_ids: dict[str, list[str]] = {}
    for openid in USERS:
        session = expect(f"create_session ({openid})",
                         create_session.sync_detailed(appid, client=public, body=LoginBody(code=sandbox.login_code(openid))),
                         HTTPStatus.OK, SessionView)
        check(session.openid == openid, f"create_session: openid {session.openid!r}, expected {openid!r}")
        check(session.expires_at.timestamp() > time.time() + 86400, f"create_session: expires_at {session.expires_at}")
        sessions[openid] = AuthenticatedClient(base_url=base_url, token=session.token,
                                               timeout=httpx.Timeout(10), raise_on_unexpected_status=True)
    expect_error("create_session with a code WeChat refuses",
                 create_session.sync_detailed(appid, client=public, body=LoginBody(code="not-a-real-code")),
                 HTTPStatus.UNAUTHORIZED, "invalid_code")
    for openid in ("alice", "bob"):
        ids = sandbox.form_ids(openid, FORMIDS_PER_USER)
        form_ids[openid] = ids
        answer = expect(f"collect_form_ids ({openid})",
                        collect_form_ids.sync_detailed(appid, client=sessions[openid], body=ClientBody(form_ids=ids)),
                        HTTPStatus.OK, IngestAnswer)
        check(answer.accepted == len(ids) and answer.duplicates == 0 and not answer.rejected,
              f"collect_form_ids: {answer.to_dict()}")
        again = expect(f"collect_form_ids again ({openid})",
                       collect_form_ids.sync_detailed(appid, client=sessions[openid], body=ClientBody(form_id=ids[0])),
                       HTTPStatus.OK, IngestAnswer)
        check(again.accepted == 0 and again.duplicates == 1, f"collect_form_ids (a duplicate): {again.to_dict()}")
    expect_error("collect_form_ids with the admin token instead of a session",
                 collect_form_ids.sync_detailed(appid, client=admin, body=ClientBody(form_ids=["1" * 13])),
                 HTTPStatus.UNAUTHORIZED, "invalid_session")
    sandbox.grant("alice", SUBSCRIBE_TEMPLATE_ID)
    granted = expect("report_subscriptions (alice)",
                     report_subscriptions.sync_detailed(
                         appid, client=sessions["alice"],
                         body=SubscriptionBody(results=SubscriptionBodyResults.from_dict({SUBSCRIBE_TEMPLATE_ID: "accept"}))),
                     HTTPStatus.OK, Granted)
    check(granted.granted == 1, f"report_subscriptions: {granted.to_dict()}")
    before = expect("get_pool_stats (before)", get_pool_stats.sync_detailed(appid, client=admin), HTTPStatus.OK, PoolStats)
    check(before.users == len(USERS) and before.valid_formids == 2 * FORMIDS_PER_USER
          and before.users_with_valid_formid == 2 and before.consumed == 0 and before.subscription_grants == 1,
          f"get_pool_stats (before): {before.to_dict()}")
    log(f"{len(USERS)} users logged in, {2 * FORMIDS_PER_USER} formIds and 1 grant collected")

    # 4. Two campaigns that run at once; a third for an unknown app is refused.
    template_request = CampaignRequest(
        appid=appid, name="generated client: template", kind=CampaignKind.TEMPLATE, template_id=TEMPLATE_ID,
        data=CampaignRequestData.from_dict({"keyword1": {"value": "hi {{openid}}"}}),
        audience=AudienceOpenids(type_=AudienceOpenidsType.OPENIDS, openids=list(USERS)),
        schedule=ScheduleNow(type_=ScheduleNowType.NOW), page="pages/index?from=generated",
    )
    check(isinstance(template_request.data["keyword1"], DataEntry), "CampaignRequestData does not hold DataEntry values")
    subscribe_data = CampaignRequestData()
    subscribe_data["thing1"] = DataEntry(value="Hi {{nickname}}")
    subscribe_request = CampaignRequest(
        appid=appid, name="generated client: subscribe", kind=CampaignKind.SUBSCRIBE, template_id=SUBSCRIBE_TEMPLATE_ID,
        data=subscribe_data,
        audience=AudienceUsers(type_=AudienceUsersType.USERS, users=[
            AudienceUser(openid="alice", vars_=AudienceUserVars.from_dict({"nickname": "Alice"})),
            AudienceUser(openid="bob", vars_=AudienceUserVars.from_dict({"nickname": "Bob"})),
        ]),
        schedule=ScheduleNow(type_=ScheduleNowType.NOW), miniprogram_state="formal", lang="en_US",
    )
    campaigns: dict[CampaignKind, CampaignView] = {}
    for request in (template_request, subscribe_request):
        campaign = expect(f"create_campaign ({request.kind})", create_campaign.sync_detailed(client=admin, body=request),
                          HTTPStatus.CREATED, CampaignView)
        check(campaign.appid == appid and campaign.kind == request.kind and campaign.name == request.name
              and campaign.template_id == request.template_id, f"create_campaign: {campaign.to_dict()}")
        check(campaign.status in (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.COMPLETED),
              f"create_campaign: status {campaign.status}")
        campaigns[request.kind] = campaign
    check(campaigns[CampaignKind.TEMPLATE].audience.type_ == AudienceType.OPENIDS
          and campaigns[CampaignKind.SUBSCRIBE].audience.type_ == AudienceType.USERS, "create_campaign: audience types")
    unknown = CampaignRequest(
        appid="wxnosuchapp", name="refused", kind=CampaignKind.TEMPLATE, template_id=TEMPLATE_ID,
        data=CampaignRequestData.from_dict({"keyword1": {"value": "x"}}),
        audience=AudienceOpenids(type_=AudienceOpenidsType.OPENIDS, openids=["alice"]),
        schedule=ScheduleNow(type_=ScheduleNowType.NOW),
    )
    expect_error("create_campaign for an unknown app", create_campaign.sync_detailed(client=admin, body=unknown),
                 HTTPStatus.NOT_FOUND, "app_not_found")
    log("campaigns created: " + ", ".join(f"{kind} {c.id}" for kind, c in campaigns.items()))

    # 5. The service's own scheduler runs them; poll until both are completed.
    deadline = time.monotonic() + deadline_secs

    def completed(campaign_id: UUID) -> Callable[[], CampaignView | None]:
        def probe() -> CampaignView | None:
            view = expect("get_campaign", get_campaign.sync_detailed(campaign_id, client=admin),
                          HTTPStatus.OK, CampaignView)
            check(view.status not in (CampaignStatus.FAILED, CampaignStatus.CANCELLED, CampaignStatus.PAUSED),
                  f"campaign {campaign_id} is {view.status}: {view.to_dict()}")
            return view if view.status == CampaignStatus.COMPLETED else None
        return probe

    started = time.monotonic()
    done = {kind: wait_until(f"campaign {c.id} to complete", deadline, completed(c.id)) for kind, c in campaigns.items()}
    log(f"both campaigns completed after {time.monotonic() - started:.1f}s")

    def totals_are(totals: Totals, targeted: int, sent: int, no_formid: int, no_quota: int) -> bool:
        return (totals.targeted, totals.sent, totals.no_formid, totals.no_quota, totals.failed, totals.pending) \
            == (targeted, sent, no_formid, no_quota, 0, 0)

    check(totals_are(done[CampaignKind.TEMPLATE].totals, 3, 2, 1, 0),
          f"template campaign totals: {done[CampaignKind.TEMPLATE].totals.to_dict()}")
    check(totals_are(done[CampaignKind.SUBSCRIBE].totals, 2, 1, 0, 1),
          f"subscribe campaign totals: {done[CampaignKind.SUBSCRIBE].totals.to_dict()}")

    # 6. Deliveries: paged one at a time, and filtered by status.
    template_deliveries = {d.openid: d for d in all_deliveries(admin, campaigns[CampaignKind.TEMPLATE].id)}
    check(sorted(template_deliveries) == sorted(USERS), f"template deliveries: {sorted(template_deliveries)}")
    for openid in ("alice", "bob"):
        d = template_deliveries[openid]
        check(d.status == ShownDeliveryStatus.SENT, f"template delivery to {openid}: {d.to_dict()}")
        check(present(d.form_id) in form_ids[openid], f"template delivery to {openid} used {d.form_id!r}")
        check(d.errcode == 0 and d.attempts >= 1, f"template delivery to {openid}: {d.to_dict()}")
    check(template_deliveries["carol"].status == ShownDeliveryStatus.NO_FORMID,
          f"template delivery to carol: {template_deliveries['carol'].to_dict()}")
    sent_only = expect("list_campaign_deliveries (status=sent)",
                       list_campaign_deliveries.sync_detailed(campaigns[CampaignKind.TEMPLATE].id, client=admin,
                                                              status=ShownDeliveryStatus.SENT),
                       HTTPStatus.OK, DeliveryPage)
    check(sorted(d.openid for d in sent_only.items) == ["alice", "bob"]
          and all(d.status == ShownDeliveryStatus.SENT for d in sent_only.items),
          f"deliveries with status=sent: {[d.to_dict() for d in sent_only.items]}")
    subscribe_deliveries = {d.openid: d for d in all_deliveries(admin, campaigns[CampaignKind.SUBSCRIBE].id)}
    check(sorted(subscribe_deliveries) == ["alice", "bob"], f"subscribe deliveries: {sorted(subscribe_deliveries)}")
    alice_sub = subscribe_deliveries["alice"]
    check(alice_sub.status == ShownDeliveryStatus.SENT and alice_sub.errcode == 0 and bool(present(alice_sub.msg_id)),
          f"subscribe delivery to alice: {alice_sub.to_dict()}")
    check(subscribe_deliveries["bob"].status == ShownDeliveryStatus.NO_QUOTA,
          f"subscribe delivery to bob: {subscribe_deliveries['bob'].to_dict()}")

    # 7. Runs, the campaign list and the pool agree.
    for kind, campaign in campaigns.items():
        runs = expect("list_campaign_runs", list_campaign_runs.sync_detailed(campaign.id, client=admin),
                      HTTPStatus.OK, RunList)
        check(len(runs.items) == 1 and runs.items[0].status == RunStatus.COMPLETED
              and runs.items[0].totals == done[kind].totals and not isinstance(runs.items[0].finished_at, Unset)
              and runs.items[0].finished_at is not None, f"{kind} runs: {[r.to_dict() for r in runs.items]}")
        check({d.run_id for d in (template_deliveries if kind == CampaignKind.TEMPLATE else subscribe_deliveries).values()}
              == {runs.items[0].id}, f"{kind} deliveries are not all of the one run")
    listed = expect("list_campaigns", list_campaigns.sync_detailed(client=admin, appid=appid), HTTPStatus.OK, CampaignList)
    check({c.id for c in listed.items} == {c.id for c in campaigns.values()},
          f"list_campaigns: {[str(c.id) for c in listed.items]}")
    check(all(c.status == CampaignStatus.COMPLETED for c in listed.items), "list_campaigns: not all completed")
    after = expect("get_pool_stats (after)", get_pool_stats.sync_detailed(appid, client=admin), HTTPStatus.OK, PoolStats)
    check(after.valid_formids == 2 * FORMIDS_PER_USER - 2 and after.consumed == 2 and after.subscription_grants == 0,
          f"get_pool_stats (after): {after.to_dict()}")

    # 8. The sandbox received exactly these messages, rendered per user.
    messages = sandbox.messages()
    template_messages = {str(m["touser"]): m for m in messages if m["kind"] == "template"}
    subscribe_messages = {str(m["touser"]): m for m in messages if m["kind"] == "subscribe"}
    check(len(messages) == 3 and sorted(template_messages) == ["alice", "bob"] and sorted(subscribe_messages) == ["alice"],
          f"sandbox messages: {messages}")
    for openid, m in template_messages.items():
        check(m["template_id"] == TEMPLATE_ID and m["form_id"] == template_deliveries[openid].form_id
              and m["data"] == {"keyword1": {"value": f"hi {openid}"}} and m["page"] == "pages/index?from=generated",
              f"template message to {openid}: {m}")
    m = subscribe_messages["alice"]
    check(m["template_id"] == SUBSCRIBE_TEMPLATE_ID and m["data"] == {"thing1": {"value": "Hi Alice"}}
          and str(m["msgid"]) == alice_sub.msg_id and m["lang"] == "en_US", f"subscribe message to alice: {m}")
    log("deliveries sent, the sandbox received 3 messages matching them")


if __name__ == "__main__":
    try:
        main()
    except FlowError as e:
        log(f"FAILED: {e}")
        sys.exit(1)
    log("flow passed")
