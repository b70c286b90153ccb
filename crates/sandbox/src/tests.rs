//! End-to-end tests of the sandbox over HTTP, one per documented rule.

use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use serde_json::{json, Value};

use super::*;

const APP: &str = "wx1111111111111111";
const SECRET: &str = "secret-1";
const USER: &str = "o-user-1";
const OTHER: &str = "o-user-2";

struct Env {
    sb: Sandbox,
    server: SandboxServer,
    http: reqwest::Client,
}

impl Env {
    async fn start(config: SandboxConfig) -> Env {
        let sb = Sandbox::new(config);
        sb.add_app(APP, SECRET);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = sb.serve(listener).expect("serve");
        Env {
            sb,
            server,
            http: reqwest::Client::new(),
        }
    }

    async fn default() -> Env {
        Env::start(SandboxConfig::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url)
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json")
    }

    async fn post(&self, path: &str, body: &Value) -> Value {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json")
    }

    async fn token(&self) -> String {
        let v = self
            .get(&format!(
                "/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={SECRET}"
            ))
            .await;
        v["access_token"].as_str().expect("token").to_string()
    }

    async fn stable(&self, force: bool) -> Value {
        self.post(
            "/cgi-bin/stable_token",
            &json!({"grant_type": "client_credential", "appid": APP, "secret": SECRET, "force_refresh": force}),
        )
        .await
    }

    async fn template(&self, token: &str, body: &Value) -> Value {
        self.post(
            &format!("/cgi-bin/message/wxopen/template/send?access_token={token}"),
            body,
        )
        .await
    }

    async fn subscribe(&self, token: &str, body: &Value) -> Value {
        self.post(
            &format!("/cgi-bin/message/subscribe/send?access_token={token}"),
            body,
        )
        .await
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

fn errcode(v: &Value) -> i64 {
    v["errcode"].as_i64().unwrap_or(0)
}

fn tmsg(touser: &str, form_id: &str) -> Value {
    json!({"touser": touser, "template_id": "TPL", "page": "pages/index/index",
           "form_id": form_id, "data": {"keyword1": {"value": "339208499"}}})
}

fn smsg(touser: &str, template: &str) -> Value {
    json!({"touser": touser, "template_id": template, "page": "pages/index/index",
           "miniprogram_state": "formal", "lang": "zh_CN",
           "data": {"thing1": {"value": "Your order shipped"}, "time2": {"value": "2026-11-24 10:00"}}})
}

#[tokio::test]
async fn token_errors_and_counting() {
    let env = Env::default().await;
    let bad = |q: &str| format!("/cgi-bin/token?{q}");
    let v = env
        .get(&bad("grant_type=client_credential&appid=wxnope&secret=x"))
        .await;
    assert_eq!(errcode(&v), 40013);
    let v = env
        .get(&bad(&format!(
            "grant_type=client_credential&appid={APP}&secret=wrong"
        )))
        .await;
    assert_eq!(errcode(&v), 40125);
    let v = env
        .get(&bad(&format!(
            "grant_type=password&appid={APP}&secret={SECRET}"
        )))
        .await;
    assert_eq!(errcode(&v), 40002);
    assert!(v["errmsg"].as_str().unwrap_or("").contains("rid:"));
    let v = env
        .get(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={SECRET}"
        ))
        .await;
    assert_eq!(v["expires_in"], 7200);
    assert!(v.get("errcode").is_none());
    env.stable(false).await;
    // Two failed classic calls naming the app, one good, one stable.
    assert_eq!(env.sb.token_calls(APP), 4);
    env.stop().await;
}

#[tokio::test]
async fn token_replacement_grace_then_invalid_and_expiry() {
    let env = Env::default().await;
    env.sb.add_user(APP, USER);
    let first = env.token().await;
    let second = env.token().await;
    assert_ne!(first, second);
    // Both work: the old one is in its 5-minute grace (43101 = token accepted).
    assert_eq!(
        errcode(&env.subscribe(&first, &smsg(USER, "T")).await),
        43101
    );
    assert_eq!(
        errcode(&env.subscribe(&second, &smsg(USER, "T")).await),
        43101
    );
    env.sb.advance_clock(Duration::from_secs(301));
    assert_eq!(
        errcode(&env.subscribe(&first, &smsg(USER, "T")).await),
        40001
    );
    assert_eq!(
        errcode(&env.subscribe(&second, &smsg(USER, "T")).await),
        43101
    );
    // Past the lifetime: 42001.
    env.sb.advance_clock(Duration::from_secs(7200));
    assert_eq!(
        errcode(&env.subscribe(&second, &smsg(USER, "T")).await),
        42001
    );
    // expire_tokens does the same at once.
    let third = env.token().await;
    env.sb.expire_tokens(APP);
    assert_eq!(
        errcode(&env.subscribe(&third, &smsg(USER, "T")).await),
        42001
    );
    // Never issued 40001, absurd 40014, absent 41001.
    let never = "A".repeat(96);
    assert_eq!(
        errcode(&env.subscribe(&never, &smsg(USER, "T")).await),
        40001
    );
    assert_eq!(errcode(&env.subscribe("", &smsg(USER, "T")).await), 40014);
    let v = env
        .post("/cgi-bin/message/subscribe/send", &smsg(USER, "T"))
        .await;
    assert_eq!(errcode(&v), 41001);
    env.stop().await;
}

#[tokio::test]
async fn stable_token_is_the_same_until_forced() {
    let env = Env::default().await;
    env.sb.add_user(APP, USER);
    let a = env.stable(false).await;
    let b = env.stable(false).await;
    assert_eq!(a["access_token"], b["access_token"]);
    assert!(b["expires_in"].as_i64().unwrap_or(0) > 7000);
    // The classic token is independent.
    let classic = env.token().await;
    let c = env.stable(false).await;
    assert_eq!(a["access_token"], c["access_token"]);
    assert_ne!(c["access_token"].as_str(), Some(classic.as_str()));
    let forced = env.stable(true).await;
    assert_ne!(forced["access_token"], a["access_token"]);
    let old = a["access_token"].as_str().unwrap_or_default();
    assert_eq!(errcode(&env.subscribe(old, &smsg(USER, "T")).await), 40001);
    let new = forced["access_token"].as_str().unwrap_or_default();
    assert_eq!(errcode(&env.subscribe(new, &smsg(USER, "T")).await), 43101);
    // Renewed in its last 5 minutes; the previous one stays valid until it expires.
    env.sb.advance_clock(Duration::from_secs(7200 - 200));
    let renewed = env.stable(false).await;
    assert_ne!(renewed["access_token"], forced["access_token"]);
    assert_eq!(errcode(&env.subscribe(new, &smsg(USER, "T")).await), 43101);
    let v = env
        .post(
            "/cgi-bin/stable_token",
            &json!({"grant_type": "client_credential", "appid": APP, "secret": "x"}),
        )
        .await;
    assert_eq!(errcode(&v), 40125);
    assert_eq!(env.sb.token_calls(APP), 7);
    env.stop().await;
}

#[tokio::test]
async fn login_code_single_use_and_short_lived() {
    let env = Env::default().await;
    let code = env.sb.login_code(APP, USER);
    let path = |code: &str| {
        format!("/sns/jscode2session?appid={APP}&secret={SECRET}&js_code={code}&grant_type=authorization_code")
    };
    let v = env.get(&path(&code)).await;
    assert_eq!(v["openid"], USER);
    assert!(v["session_key"].as_str().is_some_and(|k| k.len() == 24));
    assert_eq!(errcode(&env.get(&path(&code)).await), 40163);
    assert_eq!(errcode(&env.get(&path("nosuchcode")).await), 40029);
    let late = env.sb.login_code(APP, USER);
    env.sb.advance_clock(Duration::from_secs(301));
    assert_eq!(errcode(&env.get(&path(&late)).await), 40029);
    // A code of another app is unknown here.
    env.sb.add_app("wx2222222222222222", "s2");
    let foreign = env.sb.login_code("wx2222222222222222", USER);
    assert_eq!(errcode(&env.get(&path(&foreign)).await), 40029);
    let wrong = format!(
        "/sns/jscode2session?appid={APP}&secret=bad&js_code=x&grant_type=authorization_code"
    );
    assert_eq!(errcode(&env.get(&wrong).await), 40125);
    env.stop().await;
}

#[tokio::test]
async fn form_id_is_owned_single_use_and_recorded() {
    let env = Env::default().await;
    env.sb.add_user(APP, OTHER);
    let token = env.token().await;
    let fid = env.sb.form_id(APP, USER);
    assert_eq!(
        errcode(&env.template(&token, &tmsg(OTHER, &fid)).await),
        41028
    );
    let v = env.template(&token, &tmsg(USER, &fid)).await;
    assert_eq!(v, json!({"errcode": 0, "errmsg": "ok"}));
    assert_eq!(
        errcode(&env.template(&token, &tmsg(USER, &fid)).await),
        41029
    );
    assert_eq!(
        errcode(&env.template(&token, &tmsg(USER, "1234567890123")).await),
        41028
    );
    let sent = env.sb.messages_to(APP, USER);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].kind, MessageKind::Template);
    assert_eq!(sent[0].form_id.as_deref(), Some(fid.as_str()));
    assert_eq!(sent[0].data["keyword1"]["value"], "339208499");
    assert_eq!(sent[0].page.as_deref(), Some("pages/index/index"));
    assert_eq!(env.sb.send_attempts(), 4);
    env.stop().await;
}

#[tokio::test]
async fn form_id_expires_after_seven_days() {
    let env = Env::default().await;
    let token = env.token().await;
    let old = env
        .sb
        .form_id_created_at(APP, USER, Utc::now() - chrono::Duration::days(8));
    let young = env
        .sb
        .form_id_created_at(APP, USER, Utc::now() - chrono::Duration::days(6));
    assert_eq!(old.len(), 13);
    assert_eq!(
        errcode(&env.template(&token, &tmsg(USER, &old)).await),
        41028
    );
    assert_eq!(errcode(&env.template(&token, &tmsg(USER, &young)).await), 0);
    // Aging by the sandbox clock works too.
    let fid = env.sb.ios_form_id(APP, USER);
    env.sb.advance_clock(Duration::from_secs(7 * 86400 + 60));
    let token = env.token().await;
    assert_eq!(
        errcode(&env.template(&token, &tmsg(USER, &fid)).await),
        41028
    );
    env.stop().await;
}

#[tokio::test]
async fn prepay_id_has_three_uses() {
    let env = Env::default().await;
    let token = env.token().await;
    let pid = env.sb.prepay_id(APP, USER);
    assert!(pid.starts_with("wx") && pid.len() == 30);
    for _ in 0..3 {
        assert_eq!(errcode(&env.template(&token, &tmsg(USER, &pid)).await), 0);
    }
    assert_eq!(
        errcode(&env.template(&token, &tmsg(USER, &pid)).await),
        41029
    );
    env.stop().await;
}

#[tokio::test]
async fn template_checks_user_template_page_and_json() {
    let env = Env::default().await;
    let token = env.token().await;
    let fid = env.sb.form_id(APP, USER);
    assert_eq!(
        errcode(&env.template(&token, &tmsg("o-stranger", &fid)).await),
        40003
    );
    env.sb.set_templates(APP, &["TPL"]);
    env.sb.set_pages(APP, &["pages/index/index"]);
    let mut body = tmsg(USER, &fid);
    body["template_id"] = json!("OTHER");
    assert_eq!(errcode(&env.template(&token, &body).await), 40037);
    let mut body = tmsg(USER, &fid);
    body["page"] = json!("pages/nope");
    assert_eq!(errcode(&env.template(&token, &body).await), 41030);
    let mut body = tmsg(USER, &fid);
    body["data"] = json!("not an object");
    assert_eq!(errcode(&env.template(&token, &body).await), 47001);
    let v: Value = env
        .http
        .post(env.url(&format!(
            "/cgi-bin/message/wxopen/template/send?access_token={token}"
        )))
        .body("{not json")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(errcode(&v), 47001);
    // None of the failures spent the formId; an absent page and a query are fine.
    let mut body = tmsg(USER, &fid);
    body.as_object_mut().map(|o| o.remove("page"));
    assert_eq!(errcode(&env.template(&token, &body).await), 0);
    let fid = env.sb.form_id(APP, USER);
    let mut body = tmsg(USER, &fid);
    body["page"] = json!("/pages/index/index?from=push");
    assert_eq!(errcode(&env.template(&token, &body).await), 0);
    env.stop().await;
}

#[tokio::test]
async fn android_form_ids_are_unique_timestamps() {
    let sb = Sandbox::new(SandboxConfig::default());
    let mut ids: Vec<String> = (0..1000).map(|_| sb.form_id(APP, USER)).collect();
    assert!(ids
        .iter()
        .all(|i| i.len() == 13 && i.bytes().all(|b| b.is_ascii_digit())));
    let now_ms = Utc::now().timestamp_millis();
    let first: i64 = ids[0].parse().unwrap_or(0);
    assert!((now_ms - first).abs() < 5_000);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1000);
    let at = Utc::now() - chrono::Duration::days(1);
    let a = sb.form_id_created_at(APP, USER, at);
    let b = sb.form_id_created_at(APP, OTHER, at);
    assert_eq!(
        b.parse::<i64>().unwrap_or(0),
        a.parse::<i64>().unwrap_or(0) + 1
    );
    let ios = sb.ios_form_id(APP, USER);
    assert!(
        ios.len() == 32
            && ios
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
}

#[tokio::test]
async fn daily_quota_and_reset() {
    let env = Env::default().await;
    let token = env.token().await;
    env.sb.set_daily_quota(APP, 2);
    for expected in [0, 0, 45009] {
        let fid = env.sb.form_id(APP, USER);
        assert_eq!(
            errcode(&env.template(&token, &tmsg(USER, &fid)).await),
            expected
        );
    }
    env.sb.reset_daily_counts();
    let fid = env.sb.form_id(APP, USER);
    assert_eq!(errcode(&env.template(&token, &tmsg(USER, &fid)).await), 0);
    // The day turns at 00:00 Asia/Shanghai: a day later the quota is fresh.
    let fid = env.sb.form_id(APP, USER);
    assert_eq!(errcode(&env.template(&token, &tmsg(USER, &fid)).await), 0);
    let fid = env.sb.form_id(APP, USER);
    assert_eq!(
        errcode(&env.template(&token, &tmsg(USER, &fid)).await),
        45009
    );
    env.sb.advance_clock(Duration::from_secs(86400));
    let token = env.token().await;
    assert_eq!(errcode(&env.template(&token, &tmsg(USER, &fid)).await), 0);
    env.stop().await;
}

#[tokio::test]
async fn disabled_template_api_answers_45103() {
    let env = Env::default().await;
    let token = env.token().await;
    let fid = env.sb.form_id(APP, USER);
    env.sb.disable_template_api(APP);
    assert_eq!(
        errcode(&env.template(&token, &tmsg(USER, &fid)).await),
        45103
    );
    assert_eq!(errcode(&env.template(&token, &json!({})).await), 45103);
    env.sb.enable_template_api(APP);
    assert_eq!(errcode(&env.template(&token, &tmsg(USER, &fid)).await), 0);
    env.stop().await;
}

#[tokio::test]
async fn subscribe_needs_and_spends_grants() {
    let env = Env::default().await;
    let token = env.token().await;
    env.sb.add_user(APP, USER);
    assert_eq!(
        errcode(&env.subscribe(&token, &smsg(USER, "T1")).await),
        43101
    );
    env.sb.grant_subscription(APP, USER, "T1", 2);
    let v = env.subscribe(&token, &smsg(USER, "T1")).await;
    assert_eq!(errcode(&v), 0);
    assert!(v["msgid"].as_u64().is_some());
    assert_eq!(env.sb.subscription_grants(APP, USER, "T1"), 1);
    assert_eq!(errcode(&env.subscribe(&token, &smsg(USER, "T1")).await), 0);
    assert_eq!(
        errcode(&env.subscribe(&token, &smsg(USER, "T1")).await),
        43101
    );
    assert_eq!(env.sb.subscription_grants(APP, USER, "T1"), 0);
    let sent = env.sb.messages_to(APP, USER);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].kind, MessageKind::Subscribe);
    assert_eq!(sent[0].lang.as_deref(), Some("zh_CN"));
    assert_ne!(sent[0].msgid, sent[1].msgid);
    assert_eq!(
        errcode(&env.subscribe(&token, &smsg("o-stranger", "T1")).await),
        40003
    );
    env.stop().await;
}

#[tokio::test]
async fn subscribe_checks_values_state_lang_and_whitelists() {
    let env = Env::default().await;
    let token = env.token().await;
    env.sb.grant_subscription(APP, USER, "T1", 1);
    let with = |key: &str, value: Value| {
        let mut b = smsg(USER, "T1");
        b[key] = value;
        b
    };
    let cases = [
        with("data", json!({"thing1": {"value": "x".repeat(21)}})),
        with("data", json!({"number1": {"value": "12a"}})),
        with("data", json!({"phrase1": {"value": "abcdef"}})),
        with("data", json!({"thing1": {"value": 5}})),
        with("miniprogram_state", json!("production")),
        with("lang", json!("fr_FR")),
    ];
    for body in &cases {
        assert_eq!(errcode(&env.subscribe(&token, body).await), 47003, "{body}");
    }
    env.sb.set_templates(APP, &["T1"]);
    env.sb.set_pages(APP, &["pages/index/index"]);
    assert_eq!(
        errcode(&env.subscribe(&token, &smsg(USER, "T9")).await),
        40037
    );
    assert_eq!(
        errcode(&env.subscribe(&token, &with("page", json!("pages/x"))).await),
        41030
    );
    // None of that spent the grant.
    assert_eq!(env.sb.subscription_grants(APP, USER, "T1"), 1);
    let ok = with(
        "data",
        json!({"number1": {"value": "12.5"}, "phrase2": {"value": "已发货"}, "thing3": {"value": "x".repeat(20)}}),
    );
    assert_eq!(errcode(&env.subscribe(&token, &ok).await), 0);
    env.stop().await;
}

#[tokio::test]
async fn templates_are_listed_and_their_keywords_checked_on_send() {
    let env = Env::default().await;
    let token = env.token().await;
    let added = env
        .post(
            "/sandbox/templates",
            &json!({"appid": APP, "title": "洗衣机故障提醒", "type": 2,
                    "content": "完成时间:{{time1.DATA}}\n所在位置:{{enum_string2.DATA}}\n",
                    "example": "完成时间:15:01\n所在位置:客厅\n",
                    "enum_values": {"enum_string2": ["客厅", "卧室"]}}),
        )
        .await;
    let id = added["template_id"]
        .as_str()
        .expect("generated id")
        .to_string();
    assert_eq!(id.len(), 43);
    let listed = env
        .get(&format!("/wxaapi/newtmpl/gettemplate?access_token={token}"))
        .await;
    assert_eq!(errcode(&listed), 0);
    assert_eq!(listed["data"][0]["priTmplId"], id.as_str());
    assert_eq!(listed["data"][0]["type"], 2);
    assert_eq!(
        listed["data"][0]["keywordEnumValueList"][0],
        json!({"keywordCode": "enum_string2.DATA", "enumValueList": ["客厅", "卧室"]})
    );
    assert_eq!(
        errcode(
            &env.get("/wxaapi/newtmpl/gettemplate?access_token=short")
                .await
        ),
        40014
    );

    env.sb.grant_subscription(APP, USER, &id, 1);
    let send = |data: Value| {
        let mut b = smsg(USER, &id);
        b["data"] = data;
        b
    };
    let refused = [
        // a keyword left out
        send(json!({"time1": {"value": "15:01"}})),
        // a value off the enum list
        send(json!({"time1": {"value": "15:01"}, "enum_string2": {"value": "厨房"}})),
        // a time that is none
        send(json!({"time1": {"value": "soon"}, "enum_string2": {"value": "客厅"}})),
    ];
    for body in &refused {
        let answer = env.subscribe(&token, body).await;
        assert_eq!(errcode(&answer), 47003, "{body} → {answer}");
    }
    // Templates other than the account's do not exist once it has some.
    assert_eq!(
        errcode(&env.subscribe(&token, &smsg(USER, "T-other")).await),
        40037
    );
    assert_eq!(env.sb.subscription_grants(APP, USER, &id), 1);
    let good =
        send(json!({"time1": {"value": "2026-11-24 15:01"}, "enum_string2": {"value": "卧室"}}));
    assert_eq!(errcode(&env.subscribe(&token, &good).await), 0);

    let removed = env
        .http
        .delete(env.url("/sandbox/templates"))
        .json(&json!({"appid": APP, "template_id": id}))
        .send()
        .await
        .expect("send");
    assert!(removed.status().is_success());
    let listed = env
        .get(&format!("/wxaapi/newtmpl/gettemplate?access_token={token}"))
        .await;
    assert_eq!(listed["data"], json!([]));
    env.stop().await;
}

#[tokio::test]
async fn errcode_and_http_faults_are_not_applied() {
    let env = Env::default().await;
    let token = env.token().await;
    let fid = env.sb.form_id(APP, USER);
    env.sb.fail_next(Api::TemplateSend, Fault::Errcode(-1), 2);
    env.sb
        .fail_next(Api::TemplateSend, Fault::HttpStatus(503), 1);
    assert_eq!(errcode(&env.template(&token, &tmsg(USER, &fid)).await), -1);
    assert_eq!(errcode(&env.template(&token, &tmsg(USER, &fid)).await), -1);
    let resp = env
        .http
        .post(env.url(&format!(
            "/cgi-bin/message/wxopen/template/send?access_token={token}"
        )))
        .json(&tmsg(USER, &fid))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 503);
    assert!(env.sb.messages().is_empty());
    assert_eq!(errcode(&env.template(&token, &tmsg(USER, &fid)).await), 0);
    assert_eq!(env.sb.send_attempts(), 4);
    let outcomes = env.sb.send_outcomes(MessageKind::Template);
    assert_eq!(outcomes.get("-1"), Some(&2));
    assert_eq!(outcomes.get("http_503"), Some(&1));
    assert_eq!(outcomes.get("ok"), Some(&1));
    // Faults on the token and login APIs.
    env.sb.fail_next(Api::Token, Fault::Errcode(-1), 1);
    let v = env
        .get(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={SECRET}"
        ))
        .await;
    assert_eq!(errcode(&v), -1);
    env.sb
        .fail_next(Api::JsCode2Session, Fault::Errcode(40226), 1);
    let code = env.sb.login_code(APP, USER);
    let path = format!("/sns/jscode2session?appid={APP}&secret={SECRET}&js_code={code}&grant_type=authorization_code");
    assert_eq!(errcode(&env.get(&path).await), 40226);
    assert_eq!(env.get(&path).await["openid"], USER);
    env.stop().await;
}

#[tokio::test]
async fn delay_fault_delivers_although_the_client_times_out() {
    let env = Env::default().await;
    let token = env.token().await;
    let fid = env.sb.form_id(APP, USER);
    env.sb.fail_next(
        Api::TemplateSend,
        Fault::Delay(Duration::from_millis(1500)),
        1,
    );
    let res = env
        .http
        .post(env.url(&format!(
            "/cgi-bin/message/wxopen/template/send?access_token={token}"
        )))
        .timeout(Duration::from_millis(300))
        .json(&tmsg(USER, &fid))
        .send()
        .await;
    assert!(res.is_err_and(|e| e.is_timeout()));
    assert_eq!(env.sb.messages_to(APP, USER).len(), 1);
    // The retry with the same formId learns that it was used.
    assert_eq!(
        errcode(&env.template(&token, &tmsg(USER, &fid)).await),
        41029
    );
    env.stop().await;
}

#[tokio::test]
async fn drop_after_apply_breaks_the_answer() {
    let env = Env::default().await;
    let token = env.token().await;
    env.sb.grant_subscription(APP, USER, "T1", 1);
    env.sb
        .fail_next(Api::SubscribeSend, Fault::DropAfterApply, 1);
    let res = env
        .http
        .post(env.url(&format!(
            "/cgi-bin/message/subscribe/send?access_token={token}"
        )))
        .json(&smsg(USER, "T1"))
        .send()
        .await;
    let failed = match res {
        Err(_) => true,
        Ok(resp) => resp.json::<Value>().await.is_err(),
    };
    assert!(failed);
    assert_eq!(env.sb.messages_to(APP, USER).len(), 1);
    assert_eq!(env.sb.subscription_grants(APP, USER, "T1"), 0);
    env.stop().await;
}

#[tokio::test]
async fn latency_is_added_to_sends() {
    let env = Env::start(SandboxConfig {
        latency: Duration::from_millis(200),
        ..SandboxConfig::default()
    })
    .await;
    let token = env.token().await;
    let fid = env.sb.form_id(APP, USER);
    let started = Instant::now();
    assert_eq!(errcode(&env.template(&token, &tmsg(USER, &fid)).await), 0);
    assert!(started.elapsed() >= Duration::from_millis(200));
    env.stop().await;
}

#[tokio::test]
async fn short_token_ttl_expires() {
    let env = Env::start(SandboxConfig {
        token_ttl: Duration::from_secs(60),
        ..SandboxConfig::default()
    })
    .await;
    env.sb.add_user(APP, USER);
    let v = env
        .get(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={SECRET}"
        ))
        .await;
    assert_eq!(v["expires_in"], 60);
    let token = v["access_token"].as_str().unwrap_or_default().to_string();
    let s1 = env.stable(false).await;
    assert_eq!(env.stable(false).await["access_token"], s1["access_token"]);
    env.sb.advance_clock(Duration::from_secs(61));
    assert_eq!(
        errcode(&env.subscribe(&token, &smsg(USER, "T")).await),
        42001
    );
    env.stop().await;
}

#[tokio::test]
async fn control_endpoints_drive_a_whole_flow() {
    let env = Env::default().await;
    let app = "wx3333333333333333";
    let v = env
        .post(
            "/sandbox/apps",
            &json!({"appid": app, "secret": "s3", "templates": ["TPL", "T1"]}),
        )
        .await;
    assert_eq!(errcode(&v), 0);
    let code = env
        .post(
            "/sandbox/login_codes",
            &json!({"appid": app, "openid": USER}),
        )
        .await;
    let code = code["code"].as_str().unwrap_or_default().to_string();
    let v = env
        .get(&format!("/sns/jscode2session?appid={app}&secret=s3&js_code={code}&grant_type=authorization_code"))
        .await;
    assert_eq!(v["openid"], USER);
    let ids = env
        .post(
            "/sandbox/formids",
            &json!({"appid": app, "openid": USER, "count": 3, "platform": "ios"}),
        )
        .await;
    let ids = ids["form_ids"].as_array().cloned().unwrap_or_default();
    assert_eq!(ids.len(), 3);
    let v = env
        .post(
            "/sandbox/subscriptions",
            &json!({"appid": app, "openid": USER, "template_id": "T1", "count": 2}),
        )
        .await;
    assert_eq!(v["grants"], 2);
    let token = env
        .get(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid={app}&secret=s3"
        ))
        .await;
    let token = token["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let fid = ids[0].as_str().unwrap_or_default();
    assert_eq!(errcode(&env.template(&token, &tmsg(USER, fid)).await), 0);
    assert_eq!(errcode(&env.subscribe(&token, &smsg(USER, "T1")).await), 0);
    let v = env
        .post(
            "/sandbox/faults",
            &json!({"api": "subscribe_send", "errcode": -1, "times": 1}),
        )
        .await;
    assert_eq!(errcode(&v), 0);
    assert_eq!(errcode(&env.subscribe(&token, &smsg(USER, "T1")).await), -1);
    let msgs = env
        .get(&format!("/sandbox/messages?appid={app}&limit=1"))
        .await;
    assert_eq!(msgs["total"], 2);
    assert_eq!(msgs["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(msgs["messages"][0]["kind"], "subscribe");
    let stats = env.get("/sandbox/stats").await;
    assert_eq!(stats["apps"][app]["token_calls"], 1);
    assert_eq!(stats["send_attempts"], 3);
    assert_eq!(stats["outcomes"]["subscribe"]["-1"], 1);
    assert_eq!(stats["outcomes"]["template"]["ok"], 1);
    // Unknown apps and bad bodies are refused with a JSON error.
    let resp = env
        .http
        .post(env.url("/sandbox/formids"))
        .json(&json!({"appid": "wxnope", "openid": USER}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 404);
    let resp = env
        .http
        .post(env.url("/sandbox/apps"))
        .body("nope")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);
    let v = env.get("/nope").await;
    assert_eq!(errcode(&v), 40066);
    env.stop().await;
}

#[tokio::test]
async fn concurrent_sends_spend_each_form_id_once() {
    let env = Env::default().await;
    let token = env.token().await;
    let users: Vec<String> = (0..200).map(|i| format!("o-{i}")).collect();
    let fids: Vec<String> = users.iter().map(|u| env.sb.form_id(APP, u)).collect();
    let mut tasks = Vec::new();
    // Every formId is sent twice at once: exactly one of each pair succeeds.
    for _ in 0..2 {
        for (u, f) in users.iter().zip(&fids) {
            let http = env.http.clone();
            let url = env.url(&format!(
                "/cgi-bin/message/wxopen/template/send?access_token={token}"
            ));
            let body = tmsg(u, f);
            tasks.push(tokio::spawn(async move {
                let v: Value = http
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                v["errcode"].as_i64()
            }));
        }
    }
    let mut ok = 0;
    let mut used = 0;
    for t in tasks {
        match t.await.ok().flatten() {
            Some(0) => ok += 1,
            Some(41029) => used += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ok, used), (200, 200));
    assert_eq!(env.sb.messages().len(), 200);
    env.stop().await;
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: SandboxArgs,
}

#[test]
fn cli_defaults_and_apps() {
    let cli = Cli::try_parse_from(["x"]).expect("parse");
    assert_eq!(cli.args.bind, "127.0.0.1:9090");
    assert_eq!(cli.args.apps.len(), 1);
    assert_eq!(cli.args.apps[0].appid, "wx0000000000000001");
    assert_eq!(cli.args.apps[0].secret, "sandbox-secret");
    assert_eq!(cli.args.config(), SandboxConfig::default());
    let cli = Cli::try_parse_from([
        "x",
        "--app",
        "wxa:sa",
        "--app",
        "wxb:sb",
        "--latency-ms",
        "50",
        "--token-ttl-secs",
        "60",
    ])
    .expect("parse");
    assert_eq!(cli.args.apps.len(), 2);
    assert_eq!(cli.args.apps[1].secret, "sb");
    assert_eq!(cli.args.config().latency, Duration::from_millis(50));
    assert!(Cli::try_parse_from(["x", "--app", "nosecret"]).is_err());
}

#[tokio::test]
async fn token_api_daily_limits() {
    let env = Env::default().await;
    // Classic token: 2,000 a day (checked without HTTP to keep the test fast).
    let req = state::TokenRequest {
        grant_type: Some("client_credential"),
        appid: Some(APP),
        secret: Some(SECRET),
        force_refresh: false,
    };
    for _ in 0..state::TOKEN_DAILY_LIMIT {
        assert!(env.sb.issue_token(&req).is_ok());
    }
    let v = env
        .get(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={SECRET}"
        ))
        .await;
    assert_eq!(errcode(&v), 45009);
    // Only the grace-period tokens are kept, not all 2,000.
    assert!(lock(&env.sb.inner.state).tokens.len() < 10);
    // Stable token force_refresh: 20 a day.
    for _ in 0..state::STABLE_FORCE_DAILY_LIMIT {
        assert!(env.stable(true).await["access_token"].is_string());
    }
    assert_eq!(errcode(&env.stable(true).await), 45009);
    assert!(env.stable(false).await["access_token"].is_string());
    env.sb.reset_daily_counts();
    assert!(env.stable(true).await["access_token"].is_string());
    env.stop().await;
}

#[tokio::test]
async fn only_the_previous_token_gets_grace() {
    let env = Env::default().await;
    env.sb.add_user(APP, USER);
    let first = env.token().await;
    let second = env.token().await;
    let third = env.token().await;
    assert_eq!(
        errcode(&env.subscribe(&first, &smsg(USER, "T")).await),
        40001
    );
    assert_eq!(
        errcode(&env.subscribe(&second, &smsg(USER, "T")).await),
        43101
    );
    assert_eq!(
        errcode(&env.subscribe(&third, &smsg(USER, "T")).await),
        43101
    );
    env.stop().await;
}

#[tokio::test]
async fn webhook_calls_are_kept_with_their_headers_and_raw_body() {
    let env = Env::default().await;
    let body = r#"{"id":"e1","type":"message.sent","data":{"status":"sent"}}"#;
    let resp = env
        .http
        .post(env.url("/sandbox/webhooks"))
        .header("content-type", "application/json")
        .header("X-Formpush-Timestamp", "1700000000")
        .header("X-Formpush-Signature", "sha256=abc")
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let kept = env.get("/sandbox/webhooks").await;
    assert_eq!(kept["total"], 1);
    assert_eq!(kept["webhooks"][0]["body"], body, "byte for byte");
    assert_eq!(kept["webhooks"][0]["timestamp"], "1700000000");
    assert_eq!(kept["webhooks"][0]["signature"], "sha256=abc");
    assert_eq!(env.sb.webhooks().len(), 1);
    env.stop().await;
}
