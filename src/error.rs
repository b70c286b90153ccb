//! The one HTTP error type: every non-2xx answer is `{"error": code, "message": text}`.

use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 405, with the methods the path does serve in `Allow`.
    #[error("this path serves {allow} only")]
    MethodNotAllowed { allow: &'static str },
    #[error("{message}")]
    PayloadTooLarge { message: String },
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{message}")]
    TooManyRequests { message: String },
    #[error("{message}")]
    BadGateway { code: &'static str, message: String },
    #[error("{message}")]
    Unavailable { message: String },
    /// Anything unexpected; the cause is logged, never shown.
    #[error("internal error")]
    Internal(anyhow::Error),
}

/// Every non-2xx answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// snake_case code, e.g. `invalid_cron`
    #[schema(example = "invalid_cron")]
    pub error: &'a str,
    /// text for a person
    pub message: String,
}

impl ApiError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unauthorized {
            code,
            message: message.into(),
        }
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }
    pub fn unknown_app(appid: &str) -> Self {
        Self::not_found("app_not_found", format!("no app {appid:?} is registered"))
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Unauthorized { code, .. }
            | Self::Forbidden { code, .. }
            | Self::NotFound { code, .. }
            | Self::Conflict { code, .. }
            | Self::Invalid { code, .. }
            | Self::BadGateway { code, .. } => code,
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::Unavailable { .. } => "not_ready",
            Self::Internal(_) => "internal",
        }
    }
}

/// How long a client should wait before retrying when the database is unavailable: a
/// Postgres restart or fail-over takes seconds.
pub const RETRY_AFTER_SECS: u64 = 2;

/// Whether a database error means the database is not there right now (restarting,
/// unreachable, out of connections) rather than a bug: the request can be retried as is.
pub fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Class 08: connection exception. 57P01-03: admin / crash shutdown, cannot
            // connect now (starting up). 53300: too many connections.
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

impl ApiError {
    /// 503 with `Retry-After`: the database is restarting or unreachable.
    pub fn database_down() -> Self {
        Self::Unavailable {
            message: "the database is unavailable; retry shortly".into(),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    /// Unexpected, unless a database outage is somewhere in its chain of causes.
    fn from(e: anyhow::Error) -> Self {
        let outage = e.chain().any(|cause| {
            cause
                .downcast_ref::<sqlx::Error>()
                .is_some_and(database_unavailable)
        });
        if outage {
            Self::database_down()
        } else {
            Self::Internal(e)
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if database_unavailable(&e) {
            return Self::database_down();
        }
        match &e {
            // Text Postgres cannot store (NUL in text, \u0000 in jsonb) that no check refused
            // before SQL: the request's fault, not the server's.
            sqlx::Error::Database(db)
                if matches!(
                    db.code().as_deref(),
                    Some(UNSTORABLE_TEXT | UNSTORABLE_JSON)
                ) =>
            {
                Self::bad_request(
                    "invalid_text",
                    "text must not contain NUL (\\u0000) characters",
                )
            }
            _ => Self::Internal(e.into()),
        }
    }
}

/// SQLSTATE character_not_in_repertoire: NUL in a text value.
const UNSTORABLE_TEXT: &str = "22021";
/// SQLSTATE untranslatable_character: `\u0000` in a jsonb value.
const UNSTORABLE_JSON: &str = "22P05";

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(cause) = self {
            tracing::error!(error = ?cause, "request failed");
        }
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::Unavailable { .. } => {
                response.insert_header((
                    actix_web::http::header::RETRY_AFTER,
                    RETRY_AFTER_SECS.to_string(),
                ));
            }
            Self::MethodNotAllowed { allow } => {
                response.insert_header((actix_web::http::header::ALLOW, *allow));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
        })
    }
}

/// Maps actix's own extractor failures (bad JSON, wrong content type, too large, bad
/// path/query) onto the contract's JSON errors.
pub fn json_config() -> actix_web::web::JsonConfig {
    actix_web::web::JsonConfig::default()
        .limit(BODY_LIMIT)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError as E;
            let api = match &err {
                E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::PayloadTooLarge {
                    message: format!("the body is larger than {BODY_LIMIT} bytes"),
                },
                E::ContentType => ApiError::bad_request(
                    "unsupported_content_type",
                    "the body must be JSON with Content-Type: application/json",
                ),
                E::Deserialize(e) if e.is_data() => {
                    ApiError::invalid("invalid_body", format!("the body is not valid: {e}"))
                }
                other => ApiError::bad_request("malformed_json", other.to_string()),
            };
            api.into()
        })
}

pub fn query_config() -> actix_web::web::QueryConfig {
    actix_web::web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::bad_request("bad_query", format!("the query string is not valid: {err}")).into()
    })
}

pub fn path_config() -> actix_web::web::PathConfig {
    actix_web::web::PathConfig::default().error_handler(|err, _req| {
        ApiError::bad_request("bad_path", format!("the path is not valid: {err}")).into()
    })
}

/// Request bodies larger than this are refused with 413 (1 MiB, `docs/api.md`).
pub const BODY_LIMIT: usize = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn answer(e: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = e.error_response();
        let retry_after = response
            .headers()
            .get(actix_web::http::header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let status = response.status();
        let body = response.into_body().try_into_bytes().unwrap();
        (status, retry_after, serde_json::from_slice(&body).unwrap())
    }

    #[test]
    fn a_database_that_is_down_is_503_with_retry_after() {
        let refused = || {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            ))
        };
        for e in [
            ApiError::from(sqlx::Error::PoolTimedOut),
            ApiError::from(refused()),
            // As it arrives through a store function returning anyhow::Result.
            ApiError::from(anyhow::Error::new(refused()).context("starting due runs")),
        ] {
            let (status, retry_after, body) = answer(e);
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(retry_after.as_deref(), Some("2"));
            assert_eq!(body["error"], "not_ready");
        }
    }

    #[test]
    fn other_failures_stay_internal_and_say_nothing_of_their_cause() {
        let (status, retry_after, body) = answer(ApiError::from(sqlx::Error::RowNotFound));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(retry_after, None);
        assert_eq!(body["error"], "internal");
        assert_eq!(body["message"], "internal error");
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods() {
        let response = ApiError::MethodNotAllowed { allow: "GET, PUT" }.error_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers().get("allow").unwrap(), "GET, PUT");
    }
}
