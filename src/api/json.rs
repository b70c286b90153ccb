//! Reading JSON the way its schema describes it. JSON Schema's `integer` is any number
//! with no fractional part, so `200.0` is an integer there; serde's integers refuse it.

use serde::{Deserialize, Deserializer};

/// An optional whole number that may be written as `12` or `12.0`.
pub fn optional_whole_i32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n
        .as_i64()
        .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        .and_then(|i| i32::try_from(i).ok());
    whole
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a whole number in range")))
}

/// A whole number that may be written as `12` or `12.0`.
pub fn whole_i32<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    optional_whole_i32(d)?.ok_or_else(|| serde::de::Error::custom("a whole number is required"))
}

/// A JSON request body that must be an object. serde reads a struct from a JSON array too
/// (its fields in order), so `[[]]` would pass as `{"items": []}`; every formpush body is an
/// object, and anything else is refused like any other invalid body (`422 invalid_body`).
/// Malformed JSON, a wrong content type and the size limit stay with `web::Json`'s
/// configuration (`error::json_config`).
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned> actix_web::FromRequest for Body<T> {
    type Error = actix_web::Error;
    type Future = futures::future::LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(
        req: &actix_web::HttpRequest,
        payload: &mut actix_web::dev::Payload,
    ) -> Self::Future {
        let json = actix_web::web::Json::<serde_json::Value>::from_request(req, payload);
        Box::pin(async move {
            let value = json.await?.into_inner();
            if !value.is_object() {
                return Err(crate::error::ApiError::invalid(
                    "invalid_body",
                    "the body must be a JSON object",
                )
                .into());
            }
            serde_json::from_value(value).map(Body).map_err(|e| {
                crate::error::ApiError::invalid(
                    "invalid_body",
                    format!("the body is not valid: {e}"),
                )
                .into()
            })
        })
    }
}

impl<T> Body<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "super::optional_whole_i32")]
        n: Option<i32>,
    }

    fn parse(text: &str) -> Result<Option<i32>, serde_json::Error> {
        serde_json::from_str::<Body>(text).map(|b| b.n)
    }

    #[test]
    fn whole_numbers_parse_however_they_are_written() {
        assert_eq!(parse(r#"{"n": 12559}"#).unwrap(), Some(12559));
        assert_eq!(parse(r#"{"n": 12559.0}"#).unwrap(), Some(12559));
        assert_eq!(parse(r#"{"n": null}"#).unwrap(), None);
        assert_eq!(parse("{}").unwrap(), None);
        assert!(parse(r#"{"n": 1.5}"#).is_err());
        assert!(parse(r#"{"n": 1e12}"#).is_err());
        assert!(parse(r#"{"n": "7"}"#).is_err());
    }
}
