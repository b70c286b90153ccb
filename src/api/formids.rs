//! formId collection: the client endpoint (hot: every form submit of every user) and the
//! admin bulk import. Both answer `{accepted, duplicates, rejected}` and store each call
//! in one multi-row statement.

use std::collections::HashSet;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::{self, AppAccess, NeedImport};
use super::state::AppState;
use crate::domain::formid::{Credit, RejectReason};
use crate::error::{ApiError, ErrorBody};
use crate::store::{self, credits::NewCredit};

pub const MAX_CLIENT_FORMIDS: usize = 100;
pub const MAX_IMPORT_ITEMS: usize = 10_000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientBody {
    #[serde(default)]
    form_id: Option<String>,
    #[serde(default)]
    #[schema(max_items = 100)]
    form_ids: Option<Vec<String>>,
    #[serde(default)]
    prepay_id: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    #[schema(max_items = 10_000)]
    items: Vec<ImportItem>,
}

/// One imported credit and its owner: a formId or a prepay_id, never both.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ImportItem {
    FormId(ImportedFormId),
    PrepayId(ImportedPrepayId),
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportedFormId {
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\u0000]*$")]
    openid: String,
    /// Android's 13-digit timestamp or iOS's 32 characters; anything else is stored as
    /// nothing and listed in `rejected`
    form_id: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportedPrepayId {
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\u0000]*$")]
    openid: String,
    /// a payment's prepay_id: three sends
    prepay_id: String,
}

impl ImportItem {
    fn openid(&self) -> &str {
        match self {
            Self::FormId(i) => &i.openid,
            Self::PrepayId(i) => &i.openid,
        }
    }
}

#[derive(Serialize, Debug, PartialEq, Eq, utoipa::ToSchema)]
pub struct Rejected {
    pub form_id: String,
    pub reason: RejectReason,
}

#[derive(Serialize, Debug, Default, PartialEq, Eq, utoipa::ToSchema)]
pub struct IngestAnswer {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: Vec<Rejected>,
}

/// One raw credit as posted, with its owner.
struct Posted {
    user_id: i64,
    raw: String,
    prepay: bool,
}

/// How one call's credits get stored.
#[derive(Clone, Copy)]
enum Path {
    /// Client calls: coalesced with other concurrent calls into one insert.
    Coalesced,
    /// Imports: already a big batch, inserted on their own.
    Direct,
}

/// Parses, drops repeats within the call, stores, and counts.
async fn ingest(
    state: &AppState,
    appid: &str,
    posted: Vec<Posted>,
    now: DateTime<Utc>,
    path: Path,
) -> Result<IngestAnswer, ApiError> {
    let mut answer = IngestAnswer::default();
    let mut seen = HashSet::with_capacity(posted.len());
    let mut credits = Vec::with_capacity(posted.len());
    for p in posted {
        let parsed = if p.prepay {
            Credit::parse_prepay_id(&p.raw, now)
        } else {
            Credit::parse_form_id(&p.raw, now)
        };
        match parsed {
            Err(reason) => answer.rejected.push(Rejected {
                form_id: p.raw,
                reason,
            }),
            Ok(credit) if !seen.insert((p.user_id, credit.value.clone())) => answer.duplicates += 1,
            Ok(credit) => credits.push((p.user_id, credit)),
        }
    }
    let valid = credits.len();
    let inserted = match path {
        Path::Coalesced => state
            .credit_writer
            .insert(appid, credits)
            .await
            .map_err(|e| storage_error(&e))?
            .len(),
        Path::Direct => {
            let rows: Vec<NewCredit> = credits
                .iter()
                .map(|(user_id, credit)| NewCredit {
                    appid,
                    user_id: *user_id,
                    credit,
                })
                .collect();
            store::credits::insert(&state.pool, &rows)
                .await
                .map_err(|e| storage_error(&e))?
                .len()
        }
    };
    answer.accepted = inserted;
    answer.duplicates += valid - inserted;
    let m = crate::metrics::metrics();
    m.formids_ingested
        .with_label_values(&[appid])
        .inc_by(answer.accepted as u64);
    m.formids_rejected
        .with_label_values(&[appid, "duplicate"])
        .inc_by(answer.duplicates as u64);
    for r in &answer.rejected {
        m.formids_rejected
            .with_label_values(&[appid, r.reason.as_str()])
            .inc();
    }
    Ok(answer)
}

fn storage_error(e: &sqlx::Error) -> ApiError {
    if crate::error::database_unavailable(e) {
        return ApiError::database_down();
    }
    ApiError::Internal(anyhow::anyhow!("storing formIds: {e}"))
}

/// `POST /v1/apps/{appid}/formids` with a session token.
#[utoipa::path(post, path = "/v1/apps/{appid}/formids", operation_id = "collectFormIds", tag = "client", security(("session" = [])),
    request_body = ClientBody,
    responses((status = 200, body = IngestAnswer), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody),
              (status = 413, description = "body over 1 MiB or over 100 formIds", body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn collect(
    req: HttpRequest,
    state: web::Data<AppState>,
    appid: web::Path<String>,
    body: crate::api::json::Body<ClientBody>,
) -> Result<HttpResponse, ApiError> {
    let session = auth::client_session(&req, &state, &appid)?;
    let body = body.into_inner();
    let mut posted = Vec::new();
    let user_id = session.user_id;
    if let Some(raw) = body.form_id {
        posted.push(Posted {
            user_id,
            raw,
            prepay: false,
        });
    }
    if let Some(list) = body.form_ids {
        if list.len() > MAX_CLIENT_FORMIDS {
            return Err(ApiError::PayloadTooLarge {
                message: format!(
                    "at most {MAX_CLIENT_FORMIDS} form_ids per call, got {}",
                    list.len()
                ),
            });
        }
        posted.extend(list.into_iter().map(|raw| Posted {
            user_id,
            raw,
            prepay: false,
        }));
    }
    if let Some(raw) = body.prepay_id {
        posted.push(Posted {
            user_id,
            raw,
            prepay: true,
        });
    }
    if posted.is_empty() {
        return Err(ApiError::invalid(
            "missing_form_id",
            "send form_id, form_ids or prepay_id",
        ));
    }
    if posted.len() > MAX_CLIENT_FORMIDS {
        return Err(ApiError::PayloadTooLarge {
            message: format!("at most {MAX_CLIENT_FORMIDS} credits per call"),
        });
    }
    let answer = ingest(&state, &appid, posted, Utc::now(), Path::Coalesced).await?;
    Ok(HttpResponse::Ok().json(answer))
}

/// `POST /v1/apps/{appid}/formids:import`, by the admin or with an API key of the app
/// holding `import`; unknown openids become users.
#[utoipa::path(post, path = "/v1/apps/{appid}/formids:import", operation_id = "importFormIds", tag = "admin", security(("admin" = []), ("api_key" = ["import"])),
    request_body = ImportBody,
    responses((status = 200, body = IngestAnswer), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody),
              (status = 403, description = "an API key of another app or without the import scope", body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 413, description = "body over 1 MiB or over 10,000 items", body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn import(
    _: AppAccess<NeedImport>,
    state: web::Data<AppState>,
    appid: web::Path<String>,
    body: crate::api::json::Body<ImportBody>,
) -> Result<HttpResponse, ApiError> {
    let items = body.into_inner().items;
    if items.len() > MAX_IMPORT_ITEMS {
        return Err(ApiError::PayloadTooLarge {
            message: format!(
                "at most {MAX_IMPORT_ITEMS} items per import, got {}",
                items.len()
            ),
        });
    }
    for (i, item) in items.iter().enumerate() {
        let openid = item.openid();
        if openid.is_empty() || openid.len() > 128 || openid.contains('\0') {
            return Err(ApiError::invalid(
                "invalid_openid",
                format!("items[{i}].openid must be 1 to 128 characters, none of them NUL"),
            ));
        }
    }
    if !store::apps::exists(&state.pool, &appid).await? {
        return Err(ApiError::unknown_app(&appid));
    }
    let mut openids: Vec<String> = items.iter().map(|i| i.openid().to_string()).collect();
    openids.sort_unstable();
    openids.dedup();
    let ids: std::collections::HashMap<String, i64> =
        store::users::upsert_many(&state.pool, &appid, &openids)
            .await?
            .into_iter()
            .collect();
    let mut posted = Vec::with_capacity(items.len());
    for item in items {
        let user_id = *ids
            .get(item.openid())
            .ok_or_else(|| anyhow::anyhow!("user {} vanished during import", item.openid()))?;
        let (raw, prepay) = match item {
            ImportItem::FormId(i) => (i.form_id, false),
            ImportItem::PrepayId(i) => (i.prepay_id, true),
        };
        posted.push(Posted {
            user_id,
            raw,
            prepay,
        });
    }
    let answer = ingest(&state, &appid, posted, Utc::now(), Path::Direct).await?;
    Ok(HttpResponse::Ok().json(answer))
}
