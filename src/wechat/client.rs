//! A typed client for the WeChat server APIs formpush calls. One `reqwest::Client` (one
//! connection pool) per process; every call has a timeout. URLs carry secrets and tokens,
//! so errors never include them.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::errcode::{classify, ErrorClass};

#[derive(Debug, Clone, thiserror::Error)]
pub enum WeChatError {
    #[error("WeChat answered errcode {errcode}: {errmsg}")]
    Api { errcode: i64, errmsg: String },
    #[error("WeChat answered HTTP {status}")]
    Http { status: u16 },
    #[error("WeChat did not answer within the timeout")]
    Timeout,
    /// The request never reached WeChat (connect failure): safe to retry.
    #[error("could not reach WeChat: {0}")]
    Unreachable(String),
    /// Sent, but the answer was unreadable.
    #[error("unreadable answer from WeChat: {0}")]
    Decode(String),
}

impl WeChatError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Api { errcode, .. } => classify(*errcode),
            Self::Http { status } if *status >= 500 => ErrorClass::Transient,
            Self::Http { .. } => ErrorClass::Unknown,
            Self::Timeout | Self::Unreachable(_) => ErrorClass::Transient,
            Self::Decode(_) => ErrorClass::Unknown,
        }
    }

    /// True when WeChat may have acted on the request although we saw no success.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::Timeout | Self::Decode(_) => true,
            Self::Http { status } => *status >= 500,
            Self::Api { .. } | Self::Unreachable(_) => false,
        }
    }

    pub fn errcode(&self) -> Option<i64> {
        match self {
            Self::Api { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// The code recorded on a delivery: WeChat's errcode, or a word for transport failures.
    pub fn code_for_record(&self) -> String {
        match self {
            Self::Api { errcode, .. } => errcode.to_string(),
            Self::Http { status } => format!("http_{status}"),
            Self::Timeout => "timeout".into(),
            Self::Unreachable(_) => "unreachable".into(),
            Self::Decode(_) => "bad_answer".into(),
        }
    }

    fn from_reqwest(e: reqwest::Error) -> Self {
        let e = e.without_url();
        if e.is_timeout() {
            Self::Timeout
        } else if e.is_connect() {
            Self::Unreachable(e.to_string())
        } else if e.is_decode() {
            Self::Decode(e.to_string())
        } else {
            // The request may have been written before the failure.
            Self::Timeout
        }
    }
}

#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub access_token: SecretString,
    pub expires_in: i64,
}

#[derive(Debug, Clone)]
pub struct LoginSession {
    pub openid: String,
    pub unionid: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TemplateMessage<'a> {
    pub touser: &'a str,
    pub template_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<&'a str>,
    pub form_id: &'a str,
    pub data: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emphasis_keyword: Option<&'a str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscribeMessage<'a> {
    pub touser: &'a str,
    pub template_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub miniprogram_state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<&'a str>,
    pub data: &'a Map<String, Value>,
}

/// One entry of `gettemplate`'s `data`, as WeChat gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WxTemplate {
    #[serde(rename = "priTmplId")]
    pub template_id: String,
    #[serde(default)]
    pub title: String,
    /// `会议时间:{{date2.DATA}}\n...`: one keyword per `{{key.DATA}}`, its label before it.
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub example: String,
    /// 2: one-time, 3: long-term.
    #[serde(rename = "type", default)]
    pub kind: i32,
    #[serde(rename = "keywordEnumValueList", default)]
    pub keyword_enum_values: Vec<WxKeywordEnumValues>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WxKeywordEnumValues {
    /// `enum_string2.DATA`
    #[serde(rename = "keywordCode")]
    pub keyword_code: String,
    #[serde(rename = "enumValueList", default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReceipt {
    pub msg_id: Option<String>,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Clone)]
pub struct WeChatClient {
    http: reqwest::Client,
    base: String,
}

impl WeChatClient {
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// Reads an answer and records the call's latency under `api`.
    async fn read(
        api: &str,
        started: std::time::Instant,
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<Answer, WeChatError> {
        let answer = Self::read_answer(resp).await;
        crate::metrics::metrics()
            .wechat_latency
            .with_label_values(&[api])
            .observe(started.elapsed().as_secs_f64());
        answer
    }

    async fn read_answer(
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<Answer, WeChatError> {
        let resp = resp.map_err(WeChatError::from_reqwest)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(WeChatError::Http {
                status: status.as_u16(),
            });
        }
        let answer: Answer = resp.json().await.map_err(WeChatError::from_reqwest)?;
        if answer.errcode != 0 {
            return Err(WeChatError::Api {
                errcode: answer.errcode,
                errmsg: answer.errmsg,
            });
        }
        Ok(answer)
    }

    fn token_from(answer: Answer) -> Result<IssuedToken, WeChatError> {
        let token = answer.rest.get("access_token").and_then(Value::as_str);
        let expires_in = answer.rest.get("expires_in").and_then(Value::as_i64);
        match (token, expires_in) {
            (Some(t), Some(e)) if !t.is_empty() && e > 0 => Ok(IssuedToken {
                access_token: t.to_string().into(),
                expires_in: e,
            }),
            _ => Err(WeChatError::Decode(
                "token answer without access_token/expires_in".into(),
            )),
        }
    }

    /// `GET /cgi-bin/token`: each call replaces the app's previous token.
    pub async fn classic_token(
        &self,
        appid: &str,
        secret: &SecretString,
    ) -> Result<IssuedToken, WeChatError> {
        let started = std::time::Instant::now();
        let resp = self
            .http
            .get(format!("{}/cgi-bin/token", self.base))
            .query(&[
                ("grant_type", "client_credential"),
                ("appid", appid),
                ("secret", secret.expose_secret()),
            ])
            .send()
            .await;
        Self::token_from(Self::read("token", started, resp).await?)
    }

    /// `POST /cgi-bin/stable_token`: the same token while valid, unless `force_refresh`.
    pub async fn stable_token(
        &self,
        appid: &str,
        secret: &SecretString,
        force_refresh: bool,
    ) -> Result<IssuedToken, WeChatError> {
        let started = std::time::Instant::now();
        let resp = self
            .http
            .post(format!("{}/cgi-bin/stable_token", self.base))
            .json(&serde_json::json!({
                "grant_type": "client_credential",
                "appid": appid,
                "secret": secret.expose_secret(),
                "force_refresh": force_refresh,
            }))
            .send()
            .await;
        Self::token_from(Self::read("stable_token", started, resp).await?)
    }

    /// `GET /sns/jscode2session`. The session_key is dropped here: formpush never needs it.
    pub async fn jscode2session(
        &self,
        appid: &str,
        secret: &SecretString,
        code: &str,
    ) -> Result<LoginSession, WeChatError> {
        let started = std::time::Instant::now();
        let resp = self
            .http
            .get(format!("{}/sns/jscode2session", self.base))
            .query(&[
                ("appid", appid),
                ("secret", secret.expose_secret()),
                ("js_code", code),
                ("grant_type", "authorization_code"),
            ])
            .send()
            .await;
        let answer = Self::read("jscode2session", started, resp).await?;
        let openid = answer
            .rest
            .get("openid")
            .and_then(Value::as_str)
            .filter(|o| !o.is_empty())
            .ok_or_else(|| WeChatError::Decode("jscode2session answer without openid".into()))?;
        Ok(LoginSession {
            openid: openid.to_string(),
            unionid: answer
                .rest
                .get("unionid")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// `GET /wxaapi/newtmpl/gettemplate`: the subscribe templates added to the account.
    pub async fn get_templates(&self, access_token: &str) -> Result<Vec<WxTemplate>, WeChatError> {
        let started = std::time::Instant::now();
        let resp = self
            .http
            .get(format!("{}/wxaapi/newtmpl/gettemplate", self.base))
            .query(&[("access_token", access_token)])
            .send()
            .await;
        let mut answer = Self::read("gettemplate", started, resp).await?;
        let data = answer.rest.remove("data").unwrap_or(Value::Array(vec![]));
        serde_json::from_value(data)
            .map_err(|e| WeChatError::Decode(format!("gettemplate data: {e}")))
    }

    pub async fn send_template(
        &self,
        access_token: &str,
        message: &TemplateMessage<'_>,
    ) -> Result<SendReceipt, WeChatError> {
        self.send(
            "cgi-bin/message/wxopen/template/send",
            access_token,
            message,
        )
        .await
    }

    pub async fn send_subscribe(
        &self,
        access_token: &str,
        message: &SubscribeMessage<'_>,
    ) -> Result<SendReceipt, WeChatError> {
        self.send("cgi-bin/message/subscribe/send", access_token, message)
            .await
    }

    async fn send(
        &self,
        path: &str,
        access_token: &str,
        body: &impl Serialize,
    ) -> Result<SendReceipt, WeChatError> {
        let started = std::time::Instant::now();
        let resp = self
            .http
            .post(format!("{}/{path}", self.base))
            .query(&[("access_token", access_token)])
            .json(body)
            .send()
            .await;
        let api = path.rsplit('/').nth(1).unwrap_or(path);
        let answer = Self::read(api, started, resp).await?;
        let msg_id = answer.rest.get("msgid").map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        Ok(SendReceipt { msg_id })
    }
}
